"""The apparmor provider end to end, through the CLI, in namespace test hosts with Debian's real
apparmor and apparmor-profiles packages. This kernel has no AppArmor: these tests verify the
on-disk state (profile files, flags, disable/ and force-complain/ links) and the real compile
check; the kernel part is covered by tests/test_apparmor_kernel.py through the seam."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from converge.providers.apparmor.parse import flags_mode
from converge.providers.apparmor.provider import COMPILE_ARGV
from tests.testhost import TestHost

REPO = Path(__file__).parent.parent
NGINX_BASELINE = REPO / "baselines" / "apparmor" / "nginx.toml"
NGINX_PROFILE = REPO / "baselines" / "apparmor" / "profiles" / "usr.sbin.nginx"
NGINX_PATH = "/etc/apparmor.d/usr.sbin.nginx"
DATA = Path(__file__).parent / "data" / "apparmor"


def _baseline(tmp_path: Path, text: str, name: str = "baseline.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _changes(host: TestHost, baseline: str) -> tuple[int, dict[str, dict[str, Any]]]:
    plan = host.converge("plan", baseline, "--json")
    assert plan.returncode in (0, 2), plan.stdout + plan.stderr
    return plan.returncode, {change["resource"]: change for change in json.loads(plan.stdout)["hosts"][0]["changes"]}


def _apply(host: TestHost, baseline: str) -> str:
    apply = host.converge("apply", baseline, "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "local: converged" in apply.stdout
    return apply.stdout


def _assert_idempotent(host: TestHost, baseline: str, watched: list[str]) -> None:
    again = host.converge("plan", baseline)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "in sync" in again.stdout
    stats = [host.run(["stat", "-c", "%i %Y", path]).stdout for path in watched]
    second = _apply(host, baseline)
    assert "apparmor:" not in second.replace("warning: apparmor:", "")  # nothing was done
    assert [host.run(["stat", "-c", "%i %Y", path]).stdout for path in watched] == stats


def test_nginx_example_converges_in_complain_then_in_enforce_mode(test_host: TestHost, tmp_path: Path) -> None:
    code, changes = _changes(test_host, str(NGINX_BASELINE))
    assert code == 2
    added = changes["usr.sbin.nginx"]
    assert (added["action"], added["before"], added["after"]) == ("add", None, "complain")
    assert "+profile nginx /usr/sbin/nginx flags=(attach_disconnected, complain) {" in added["detail"]
    assert any("kernel load pending" in note for note in added["notes"])

    _apply(test_host, str(NGINX_BASELINE))
    installed = test_host.read(NGINX_PATH)
    assert installed is not None and flags_mode(installed) == "complain"
    assert "deny /etc/shadow rwklx," in installed
    assert test_host.run(["stat", "-c", "%a %U", NGINX_PATH]).stdout.split() == ["644", "root"]
    assert test_host.changed_files() == [NGINX_PATH]
    _assert_idempotent(test_host, str(NGINX_BASELINE), [NGINX_PATH])

    # An overlay beside the shipped baseline (extends stays inside the baseline's directory).
    shutil.copytree(NGINX_BASELINE.parent, tmp_path / "apparmor")
    enforce = _baseline(tmp_path, f'[baseline]\nextends = ["apparmor/{NGINX_BASELINE.name}"]\n'
                                  '[apparmor.profiles."usr.sbin.nginx"]\nmode = "enforce"\n')
    code, changes = _changes(test_host, enforce)
    assert code == 2
    assert (changes["usr.sbin.nginx"]["before"], changes["usr.sbin.nginx"]["after"]) == ("complain", "enforce")
    _apply(test_host, enforce)
    assert test_host.read(NGINX_PATH) == NGINX_PROFILE.read_text()  # enforce: the file exactly as in git
    _assert_idempotent(test_host, enforce, [NGINX_PATH])


def test_changed_content_is_shown_as_a_diff_and_replaced_with_a_backup(test_host: TestHost, tmp_path: Path) -> None:
    old = NGINX_PROFILE.read_text().replace("  deny /etc/gshadow rwklx,\n", "")
    test_host.write(NGINX_PATH, old)
    baseline = _baseline(tmp_path, f'[apparmor.profiles."usr.sbin.nginx"]\nmode = "enforce"\nsource = "{NGINX_PROFILE.name}"\n')
    (tmp_path / NGINX_PROFILE.name).write_text(NGINX_PROFILE.read_text())

    code, changes = _changes(test_host, baseline)
    assert code == 2
    change = changes["usr.sbin.nginx"]
    assert (change["action"], change["before"], change["after"]) == ("update", "enforce", "enforce")
    diff_lines = [line for line in change["detail"].splitlines() if line[:1] in "+-" and line[:3] not in ("---", "+++")]
    assert diff_lines == ["+  deny /etc/gshadow rwklx,"]

    _apply(test_host, baseline)
    assert test_host.read(NGINX_PATH) == NGINX_PROFILE.read_text()
    backups = [path for path in test_host.changed_files() if path.startswith("/var/lib/converge/backups/")]
    assert len(backups) == 1 and test_host.read(backups[0]) == old
    _assert_idempotent(test_host, baseline, [NGINX_PATH])


def test_a_profile_that_does_not_compile_is_refused_and_nothing_changes(test_host: TestHost, tmp_path: Path) -> None:
    (tmp_path / "broken").write_text((DATA / "missing-include.profile").read_text())
    (tmp_path / "malformed").write_text((DATA / "malformed.profile").read_text())
    both = _baseline(tmp_path, '[apparmor.profiles."usr.sbin.nginx"]\nmode = "complain"\nsource = "malformed"\n'
                               '[apparmor.profiles."usr.bin.broken"]\nmode = "enforce"\nsource = "broken"\n'
                               '[apparmor.profiles."bin.ping"]\nmode = "disabled"\n')
    plan = json.loads(test_host.converge("plan", both, "--json").stdout)["hosts"][0]
    # Every text is compiled (on stdin) before anything is written or linked.
    assert [op.get("argv", [op["op"]])[:3] for op in plan["operations"]][:3] == [list(COMPILE_ARGV[:3])] * 2 + [["write"]]
    assert [op["input"] for op in plan["operations"][:2]] == [op["content"] for op in plan["operations"][2:4]]
    compile_failed = f"`{' '.join(COMPILE_ARGV)}` failed: AppArmor parser error at line"
    apply = test_host.converge("apply", both, "--yes")
    assert apply.returncode == 1
    # Every profile is compiled before apply stops: both refusals are reported, each named.
    assert (f"apparmor: apply failed: usr.sbin.nginx: {compile_failed} 6: syntax error, unexpected TOK_ID, expecting "
            f"TOK_MODE; usr.bin.broken: {compile_failed} 5: Could not open 'abstractions/no-such-abstraction'\n") in apply.stdout
    assert test_host.changed_files() == []  # not even bin.ping's disable link


def test_mode_only_management_of_profiles_shipped_by_apparmor_profiles(test_host: TestHost, tmp_path: Path) -> None:
    shipped = {name: test_host.read(f"/etc/apparmor.d/{name}") for name in ("bin.ping", "usr.sbin.dnsmasq", "usr.bin.man")}
    assert all(flags_mode(text or "") == "complain" for name, text in shipped.items() if name != "usr.bin.man")
    baseline = _baseline(tmp_path, '[apparmor.profiles."bin.ping"]\nmode = "enforce"\n'
                                   '[apparmor.profiles."usr.sbin.dnsmasq"]\nmode = "disabled"\n'
                                   '[apparmor.profiles."usr.bin.man"]\nmode = "complain"\n')
    code, changes = _changes(test_host, baseline)
    assert code == 2
    assert {name: (c["before"], c["after"]) for name, c in changes.items()} == {
        "bin.ping": ("complain", "enforce"), "usr.sbin.dnsmasq": ("complain", "disabled"), "usr.bin.man": ("enforce", "complain"),
    }
    assert "link /etc/apparmor.d/disable/usr.sbin.dnsmasq" in changes["usr.sbin.dnsmasq"]["notes"]
    assert "detail" not in changes["usr.sbin.dnsmasq"]  # aa-disable leaves the profile text alone

    _apply(test_host, baseline)
    assert flags_mode(test_host.read("/etc/apparmor.d/bin.ping") or "") == "enforce"
    assert flags_mode(test_host.read("/etc/apparmor.d/usr.bin.man") or "") == "complain"
    assert test_host.read("/etc/apparmor.d/usr.sbin.dnsmasq") == shipped["usr.sbin.dnsmasq"]
    link = test_host.run(["readlink", "/etc/apparmor.d/disable/usr.sbin.dnsmasq"]).stdout.strip()
    assert link == "/etc/apparmor.d/usr.sbin.dnsmasq"
    _assert_idempotent(test_host, baseline, ["/etc/apparmor.d/bin.ping", "/etc/apparmor.d/usr.bin.man"])

    # Enabling it again removes the link; the profile's own complain flag is its mode.
    back = _baseline(tmp_path, '[apparmor.profiles."usr.sbin.dnsmasq"]\nmode = "complain"\n', "back.toml")
    _apply(test_host, back)
    assert test_host.run(["test", "-e", "/etc/apparmor.d/disable/usr.sbin.dnsmasq"], check=False).returncode == 1
    assert test_host.read("/etc/apparmor.d/usr.sbin.dnsmasq") == shipped["usr.sbin.dnsmasq"]


def test_our_mode_edits_are_those_of_aa_complain_and_aa_enforce(test_host: TestHost, tmp_path: Path) -> None:
    """Run the real tools on shipped profiles, then plan the same mode: converge sees no change."""
    for name in ("usr.sbin.dnsmasq", "usr.bin.man", "php-fpm"):
        path = f"/etc/apparmor.d/{name}"
        for tool, mode in (("aa-enforce", "enforce"), ("aa-complain", "complain")):
            # The tools exit 1 for the kernel part they cannot do here, after editing the file.
            test_host.run([tool, path], check=False)
            baseline = _baseline(tmp_path, f'[apparmor.profiles."{name}"]\nmode = "{mode}"\n')
            plan = test_host.converge("plan", baseline)
            assert plan.returncode == 0, f"{tool} {name}:\n{plan.stdout}"
    test_host.run(["aa-disable", "/etc/apparmor.d/bin.ping"], check=False)
    plan = test_host.converge("plan", _baseline(tmp_path, '[apparmor.profiles."bin.ping"]\nmode = "disabled"\n'))
    assert plan.returncode == 0, plan.stdout


def test_a_force_complain_link_reads_as_complain_and_enforce_removes_it(test_host: TestHost, tmp_path: Path) -> None:
    test_host.run(["ln", "-s", "/etc/apparmor.d/usr.bin.man", "/etc/apparmor.d/force-complain/usr.bin.man"])
    complain = _baseline(tmp_path, '[apparmor.profiles."usr.bin.man"]\nmode = "complain"\n')
    assert test_host.converge("plan", complain).returncode == 0
    enforce = _baseline(tmp_path, '[apparmor.profiles."usr.bin.man"]\nmode = "enforce"\n', "enforce.toml")
    code, changes = _changes(test_host, enforce)
    assert code == 2 and changes["usr.bin.man"]["before"] == "complain"
    assert changes["usr.bin.man"]["notes"][0] == "unlink /etc/apparmor.d/force-complain/usr.bin.man"
    _apply(test_host, enforce)
    assert test_host.run(["test", "-L", "/etc/apparmor.d/force-complain/usr.bin.man"], check=False).returncode == 1


def test_ensure_absent_removes_the_profile_and_its_links(test_host: TestHost, tmp_path: Path) -> None:
    install = _baseline(tmp_path, '[apparmor.profiles."usr.sbin.nginx"]\nmode = "disabled"\nsource = "usr.sbin.nginx"\n')
    (tmp_path / NGINX_PROFILE.name).write_text(NGINX_PROFILE.read_text())
    _apply(test_host, install)
    assert test_host.run(["test", "-L", "/etc/apparmor.d/disable/usr.sbin.nginx"], check=False).returncode == 0

    absent = _baseline(tmp_path, '[apparmor.profiles."usr.sbin.nginx"]\nensure = "absent"\n', "absent.toml")
    code, changes = _changes(test_host, absent)
    assert code == 2
    assert (changes["usr.sbin.nginx"]["action"], changes["usr.sbin.nginx"]["before"]) == ("remove", "disabled")
    _apply(test_host, absent)
    assert test_host.read(NGINX_PATH) is None
    assert test_host.run(["test", "-L", "/etc/apparmor.d/disable/usr.sbin.nginx"], check=False).returncode == 1
    backups = [path for path in test_host.changed_files() if path.endswith(NGINX_PATH)]
    assert len(backups) == 1 and test_host.read(backups[0]) == NGINX_PROFILE.read_text()
    assert test_host.converge("plan", absent).returncode == 0


def test_mode_only_for_a_profile_the_host_lacks_is_an_error(test_host: TestHost, tmp_path: Path) -> None:
    baseline = _baseline(tmp_path, '[apparmor.profiles."usr.sbin.nginx"]\nmode = "enforce"\n')
    plan = test_host.converge("plan", baseline)
    assert plan.returncode == 1
    assert "apparmor: usr.sbin.nginx: no /etc/apparmor.d/usr.sbin.nginx on this host; give source or content" in plan.stdout
    assert test_host.converge("apply", baseline, "--yes").returncode == 1
    assert test_host.changed_files() == []


def test_mode_only_for_a_file_without_a_readable_header_is_an_error(test_host: TestHost, tmp_path: Path) -> None:
    test_host.write("/etc/apparmor.d/usr.bin.odd", "# a file with no profile header\n")
    baseline = _baseline(tmp_path, '[apparmor.profiles."usr.bin.odd"]\nmode = "complain"\n')
    plan = test_host.converge("plan", baseline)
    assert plan.returncode == 1
    assert "usr.bin.odd: /etc/apparmor.d/usr.bin.odd has no profile header converge can read" in plan.stdout


def test_apply_on_a_real_host_does_exactly_the_planned_operations_in_order(test_host: TestHost, tmp_path: Path) -> None:
    (tmp_path / NGINX_PROFILE.name).write_text(NGINX_PROFILE.read_text())
    baseline = _baseline(tmp_path, '[apparmor.profiles."usr.sbin.dnsmasq"]\nmode = "disabled"\n'
                                   '[apparmor.profiles."usr.bin.man"]\nmode = "complain"\n'
                                   '[apparmor.profiles."usr.sbin.nginx"]\nmode = "complain"\nsource = "usr.sbin.nginx"\n')
    plan = json.loads(test_host.converge("plan", baseline, "--json").stdout)["hosts"][0]
    operations = plan["operations"]
    apply = test_host.converge("apply", baseline, "--json", "--yes")
    record = json.loads(apply.stdout)["hosts"][0]
    assert record["converged"] is True, apply.stdout
    assert record["operations"] == operations  # the plan apply showed is the plan made before it
    applied = [line.removeprefix("apparmor: ") for line in record["applied"]]
    assert len(applied) == len(operations)
    for line, operation in zip(applied, operations, strict=True):
        assert line.startswith(operation.get("says") or f"wrote {operation['path']}"), (line, operation)
    written = {op["path"]: op["content"] for op in operations if op["op"] == "write"}
    assert sorted(written) == ["/etc/apparmor.d/usr.bin.man", NGINX_PATH]
    assert all(test_host.read(path) == content for path, content in written.items())
    link = test_host.run(["readlink", "/etc/apparmor.d/disable/usr.sbin.dnsmasq"]).stdout.strip()
    assert link == "/etc/apparmor.d/usr.sbin.dnsmasq"
    backups = [path for path in test_host.changed_files() if path.startswith("/var/lib/converge/backups/")]
    assert [path.endswith("/etc/apparmor.d/usr.bin.man") for path in backups] == [True]
