"""The sysctl provider end to end, through the CLI, inside real namespace test hosts."""

from __future__ import annotations

import json
import os
import sys
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


def _changed(host: TestHost) -> list[str]:
    """Files the host changed, but converge's apply lock (/run/converge), which every apply takes."""
    return [path for path in host.changed_files() if not path.startswith("/run/converge/")]


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
    assert _changed(test_host) == [DROP_IN]

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
    assert _changed(test_host) == []


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
    assert _changed(test_host) == []


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
    assert _changed(test_host) == []


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


def test_exec_hooks_from_writable_places_are_refused_with_file_line_and_key(test_host: TestHost, tmp_path: Path) -> None:
    # Security review (issue 23, finding 14): a root execution hook from a path any user can write.
    baseline = _baseline(tmp_path, '[sysctl]\nkernel.kptr_restrict = 2\nkernel.core_pattern = "|/tmp/x %p"\n'
                                   'kernel.modprobe = "/tmp/m"\n')
    validate = test_host.converge("validate", baseline)
    assert validate.returncode == 1
    lines = validate.stderr.strip().splitlines()
    hook = "kernel.core_pattern makes the kernel run /tmp/x as root, from /tmp"
    assert f"{baseline}:3: sysctl.\"kernel.core_pattern\": {hook}" in lines[0]
    assert f"{baseline}:4: sysctl.\"kernel.modprobe\": kernel.modprobe makes the kernel run /tmp/m as root, from /tmp" in lines[1]
    # Opting in does not make a world-writable place acceptable; it does admit another root-owned one.
    opted = _baseline(tmp_path, '[sysctl]\nallow_exec_hooks = true\nkernel.modprobe = "/tmp/m"\n')
    assert test_host.converge("validate", opted).returncode == 1
    elsewhere = _baseline(tmp_path, '[sysctl]\nkernel.modprobe = "/opt/site/modprobe"\n')
    refused = test_host.converge("validate", elsewhere)
    assert refused.returncode == 1 and "set allow_exec_hooks = true in [sysctl]" in refused.stderr
    allowed = _baseline(tmp_path, '[sysctl]\nallow_exec_hooks = true\nkernel.modprobe = "/opt/site/modprobe"\n')
    assert test_host.converge("validate", allowed).returncode == 0
    stock = _baseline(tmp_path, '[sysctl]\nkernel.core_pattern = "|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h"\n')
    assert test_host.converge("validate", stock).returncode == 0
    assert _changed(test_host) == []


def test_a_value_the_kernel_ignores_with_exit_0_fails_with_its_words(test_host: TestHost, tmp_path: Path) -> None:
    # Issue 16, defect 3: in a non-initial network namespace net.core.rmem_max is the initial
    # namespace's; `sysctl -w` says "Invalid argument" and exits 0.
    current = int(test_host.sysctl("net.core.rmem_max"))
    probe = test_host.run(["sysctl", "-w", f"net.core.rmem_max={current + 1}"], check=False)
    assert probe.returncode == 0 and "Invalid argument" in probe.stderr  # the kernel's behaviour this test relies on
    baseline = _baseline(tmp_path, f"[sysctl]\nnet.ipv4.conf.all.accept_redirects = 0\nnet.core.rmem_max = {current + 1}\n")
    apply = test_host.converge("apply", baseline, "--yes")
    assert apply.returncode == 1
    assert 'sysctl: setting key "net.core.rmem_max": Invalid argument' in apply.stdout
    assert "did not converge" not in apply.stdout
    assert test_host.sysctl("net.ipv4.conf.all.accept_redirects") == "1"  # accepted, then put back
    assert _changed(test_host) == []  # nothing persisted


def test_the_read_back_check_names_a_value_the_kernel_kept(test_host: TestHost) -> None:
    from converge.providers.sysctl.provider import READ_BACK

    test_host.set_sysctl("net.ipv4.conf.all.accept_redirects", "1")
    test_host.set_sysctl("net.ipv4.tcp_rmem", "4096 87380 6291456")
    ok = test_host.run(["sh", "-c", READ_BACK, "check", "net.ipv4.tcp_rmem", "4096 87380 6291456",
                        "net.ipv4.conf.all.accept_redirects", "1"], check=False)
    assert (ok.returncode, ok.stderr) == (0, "")
    kept = test_host.run(["sh", "-c", READ_BACK, "check", "net.ipv4.conf.all.accept_redirects", "0",
                          "kernel.no_such_knob", "1"], check=False)
    assert kept.returncode == 1
    assert kept.stderr.splitlines() == [
        "the kernel kept net.ipv4.conf.all.accept_redirects = 1, not 0",
        'sysctl: cannot stat /proc/sys/kernel/no_such_knob: No such file or directory',
    ]


def test_apply_performs_exactly_the_planned_operations(test_host: TestHost, tmp_path: Path) -> None:
    old = "kernel.kptr_restrict = 1\nnet.ipv4.ip_forward = 1\n"
    test_host.write(DROP_IN, old)
    _drift(test_host)
    baseline = _baseline(tmp_path)
    recorder = Path(__file__).parent / "data" / "sysctl" / "record_apply.py"
    result = test_host.run([sys.executable, str(recorder), baseline, "sysctl"],
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    record = json.loads(result.stdout)
    assert record["error"] is None
    planned = [{"op": op["op"], **({"argv": op["argv"], "input": op.get("input")} if op["op"] == "run"
                                   else {"path": op["path"], **({"content": op["content"]} if "content" in op else {})})}
               for op in record["planned"]]
    assert [op["op"] for op in planned] == ["run", "run", "write"]
    assert planned[0]["argv"][:2] == ["sysctl", "-w"] and planned[1]["argv"][:2] == ["sh", "-c"]
    assert record["done"] == planned
    assert parse_sysctl_conf(test_host.read(DROP_IN) or "") == WANTED
