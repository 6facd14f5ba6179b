"""The sysctl provider end to end, through the CLI, inside real namespace test hosts."""

from __future__ import annotations

import json
from pathlib import Path

from converge.providers.sysctl import DROP_IN, parse_sysctl_conf
from tests.testhost import TestHost

BASELINE = """
[baseline]
name = "kernel-test"

[sysctl]
kernel.kptr_restrict = 2                      # shadowed copy starts at the machine's value
kernel.dmesg_restrict = 1
net.ipv4.conf.all.accept_redirects = 0        # a new network namespace starts at 1
net.ipv4.tcp_syncookies = 1                   # already 1: only persistence is missing
"net.ipv4.conf.default.rp_filter" = 1
net.ipv4.tcp_rmem = "4096   87380\t6291456"   # whitespace is normalised
"""

WANTED = {
    "kernel.kptr_restrict": "2",
    "kernel.dmesg_restrict": "1",
    "net.ipv4.conf.all.accept_redirects": "0",
    "net.ipv4.tcp_syncookies": "1",
    "net.ipv4.conf.default.rp_filter": "1",
    "net.ipv4.tcp_rmem": "4096 87380 6291456",
}


def _baseline(tmp_path: Path, text: str = BASELINE) -> str:
    path = tmp_path / "baseline.toml"
    path.write_text(text)
    return str(path)


def _drift(host: TestHost) -> None:
    host.set_sysctl("kernel.kptr_restrict", "0")
    host.set_sysctl("kernel.dmesg_restrict", "0")
    host.set_sysctl("net.ipv4.conf.all.accept_redirects", "1")
    host.set_sysctl("net.ipv4.tcp_syncookies", "1")


def test_plan_apply_converges_and_is_idempotent(test_host: TestHost, tmp_path: Path) -> None:
    baseline = _baseline(tmp_path)
    _drift(test_host)

    plan = test_host.converge("plan", baseline, "--json")
    assert plan.returncode == 2, plan.stderr
    changes = {change["resource"]: change for change in json.loads(plan.stdout)["hosts"][0]["changes"]}
    assert set(changes) == set(WANTED)
    assert changes["kernel.kptr_restrict"]["before"] == 0
    assert changes["kernel.kptr_restrict"]["after"] == 2
    assert changes["net.ipv4.tcp_syncookies"]["before"] == changes["net.ipv4.tcp_syncookies"]["after"] == 1
    assert "not persisted" in changes["net.ipv4.tcp_syncookies"]["notes"][0]
    # Right at runtime, not persisted: the persisted side says what changes.
    assert changes["net.ipv4.tcp_syncookies"]["runtime"] == {"before": 1, "after": 1}
    assert changes["net.ipv4.tcp_syncookies"]["persisted"] == {"before": None, "after": 1}

    apply = test_host.converge("apply", baseline, "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "local: converged" in apply.stdout
    for key, value in WANTED.items():
        assert test_host.sysctl(key) == value
    drop_in = test_host.read(DROP_IN)
    assert drop_in is not None and drop_in.startswith("# Managed by converge")
    assert parse_sysctl_conf(drop_in) == WANTED
    assert test_host.changed_files() == [DROP_IN]

    again = test_host.converge("plan", baseline)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "in sync" in again.stdout
    stat_before = test_host.run(["stat", "-c", "%i %Y", DROP_IN]).stdout
    second = test_host.converge("apply", baseline, "--yes")
    assert second.returncode == 0
    assert "wrote" not in second.stdout and "set " not in second.stdout
    assert test_host.run(["stat", "-c", "%i %Y", DROP_IN]).stdout == stat_before


def test_rewrite_backs_up_the_previous_drop_in_and_removes_undeclared_keys(test_host: TestHost, tmp_path: Path) -> None:
    old = "kernel.kptr_restrict = 1\nnet.ipv4.ip_forward = 1\n"
    test_host.write(DROP_IN, old)
    test_host.run(["chmod", "0600", DROP_IN])
    test_host.set_sysctl("net.ipv4.ip_forward", "1")
    baseline = _baseline(tmp_path, "[sysctl]\nkernel.kptr_restrict = 2\n")

    plan = test_host.converge("plan", baseline, "--json")
    changes = json.loads(plan.stdout)["hosts"][0]["changes"]
    removed = [change for change in changes if change["action"] == "remove"]
    assert [(c["resource"], c["before"], c["after"]) for c in removed] == [("net.ipv4.ip_forward", 1, None)]

    apply = test_host.converge("apply", baseline, "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert parse_sysctl_conf(test_host.read(DROP_IN) or "") == {"kernel.kptr_restrict": "2"}
    assert test_host.run(["stat", "-c", "%a", DROP_IN]).stdout.strip() == "600"  # mode kept
    assert test_host.sysctl("net.ipv4.ip_forward") == "1"  # runtime left as it was
    backups = [path for path in test_host.changed_files() if path.startswith("/var/lib/converge/backups/")]
    assert len(backups) == 1 and backups[0].endswith(DROP_IN)
    assert test_host.read(backups[0]) == old


def test_unknown_key_is_an_error_naming_it_and_changes_nothing(test_host: TestHost, tmp_path: Path) -> None:
    baseline = _baseline(tmp_path, "[sysctl]\nkernel.kptr_restrict = 2\nkernel.no_such_knob = 1\n")
    before = test_host.sysctl("kernel.kptr_restrict")
    plan = test_host.converge("plan", baseline)
    assert plan.returncode == 1
    assert "kernel.no_such_knob" in plan.stdout
    apply = test_host.converge("apply", baseline, "--yes")
    assert apply.returncode == 1
    assert "kernel.no_such_knob" in apply.stdout
    assert test_host.sysctl("kernel.kptr_restrict") == before
    assert test_host.changed_files() == []


def test_value_the_kernel_refuses_rolls_back_and_persists_nothing(test_host: TestHost, tmp_path: Path) -> None:
    # The kernel answers EINVAL when the low end of the range is above the high end.
    text = '[sysctl]\nnet.ipv4.conf.all.accept_redirects = 0\nnet.ipv4.ip_local_port_range = "60000 1000"\n'
    baseline = _baseline(tmp_path, text)
    range_before = test_host.sysctl("net.ipv4.ip_local_port_range")
    apply = test_host.converge("apply", baseline, "--yes")
    assert apply.returncode == 1
    assert "Invalid argument" in apply.stdout
    assert test_host.sysctl("net.ipv4.conf.all.accept_redirects") == "1"  # accepted, then rolled back
    assert test_host.sysctl("net.ipv4.ip_local_port_range") == range_before
    assert test_host.changed_files() == []


def test_a_file_read_after_the_drop_in_is_reported(test_host: TestHost, tmp_path: Path) -> None:
    test_host.write("/etc/sysctl.conf", "# local\nkernel.kptr_restrict = 1\n")
    baseline = _baseline(tmp_path, "[sysctl]\nkernel.kptr_restrict = 2\n")
    plan = test_host.converge("plan", baseline, "--json")
    warnings = json.loads(plan.stdout)["hosts"][0]["warnings"]
    assert warnings == [
        f"kernel.kptr_restrict: /etc/sysctl.conf sets 1 and is applied after {DROP_IN} at boot, so 2 will not survive a reboot"
    ]


def test_apply_without_a_terminal_needs_yes(test_host: TestHost, tmp_path: Path) -> None:
    baseline = _baseline(tmp_path)
    _drift(test_host)
    apply = test_host.converge("apply", baseline)
    assert apply.returncode == 1
    assert "--yes" in apply.stderr
    assert test_host.sysctl("kernel.kptr_restrict") == "0"
    assert test_host.changed_files() == []


def test_what_earlier_files_persist_is_not_repeated_in_the_drop_in(test_host: TestHost, tmp_path: Path) -> None:
    test_host.write("/etc/sysctl.d/10-site.conf", "kernel.dmesg_restrict = 1\nkernel.kptr_restrict = 1\n")
    test_host.set_sysctl("kernel.dmesg_restrict", "1")
    test_host.set_sysctl("kernel.kptr_restrict", "1")
    baseline = _baseline(tmp_path, "[sysctl]\nkernel.dmesg_restrict = 1\nkernel.kptr_restrict = 2\n")
    plan = test_host.converge("plan", baseline, "--json")
    changes = json.loads(plan.stdout)["hosts"][0]["changes"]
    assert [(c["resource"], c["before"], c["after"], c["persisted"]) for c in changes] == [
        ("kernel.kptr_restrict", 1, 2, {"before": 1, "after": 2})]
    assert test_host.converge("apply", baseline, "--yes").returncode == 0
    assert parse_sysctl_conf(test_host.read(DROP_IN) or "") == {"kernel.kptr_restrict": "2"}
    assert test_host.converge("plan", baseline).returncode == 0
