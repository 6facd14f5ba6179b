"""The fail2ban provider end to end: a real fail2ban-server inside a namespace test host (private
/etc, /run/fail2ban, /var/log and firewall), driven through the converge CLI."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from converge.providers.fail2ban.parse import parse_jail_file, parse_jail_list, parse_live_option
from converge.providers.fail2ban.spec import JAIL_FILE
from tests.testhost import TestHost

# A failed-login line as sshd writes it to auth.log, from a documentation address.
ATTACKER = "192.0.2.10"
FAILED_LOGIN = "{stamp} testhost sshd[4242]: Failed password for root from {ip} port 50022 ssh2\n"


@pytest.fixture
def host(test_host: TestHost) -> Iterator[TestHost]:
    # The test host has no systemd of its own: make it look like what it is, so a server converge
    # starts is this host's fail2ban-server and never a unit of the machine running the tests.
    test_host.run(["rm", "-rf", "/run/systemd/system"])
    yield test_host


def _baseline(tmp_path: Path, text: str, name: str = "baseline.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _jails(host: TestHost) -> list[str]:
    return parse_jail_list(host.run(["fail2ban-client", "status"]).stdout)


def _get(host: TestHost, jail: str, option: str) -> str:
    return host.run(["fail2ban-client", "get", jail, option]).stdout.strip()


def _apply(host: TestHost, baseline: str) -> str:
    result = host.converge("apply", baseline, "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "local: converged" in result.stdout
    return result.stdout


def _assert_in_sync(host: TestHost, baseline: str) -> None:
    plan = host.converge("plan", baseline)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "in sync" in plan.stdout


SSHD = """
[fail2ban]
start_server = true

[fail2ban.defaults]
bantime = "1h"
findtime = "10m"

[fail2ban.jails.sshd]
enabled = true
port = "ssh"
maxretry = {maxretry}
"""
EXTRA = """
[fail2ban.jails.ssh-extra]
enabled = {enabled}
filter = "sshd"
logpath = "/var/log/extra.log"
maxretry = 7
ignoreip = ["127.0.0.1/8", "::1", "192.0.2.7"]   # compared live as fail2ban prints them
"""


def test_jails_added_changed_disabled_removed_match_live_each_time(host: TestHost, tmp_path: Path) -> None:
    host.write("/var/log/auth.log", "")
    host.write("/var/log/extra.log", "")

    # Start: the server is stopped; converge writes the file and starts it.
    start = _baseline(tmp_path, SSHD.format(maxretry=3))
    plan = host.converge("plan", start, "--json")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    changes = {change["resource"]: change for change in json.loads(plan.stdout)["hosts"][0]["changes"]}
    assert changes["jail:sshd"]["action"] == "add"
    assert changes["jail:sshd"]["after"] == {"enabled": True, "port": "ssh", "maxretry": 3}
    server = changes["server:fail2ban-server"]
    assert (server["kind"], server["name"], server["before"], server["after"]) == ("server", "fail2ban-server", False, True)
    assert "started fail2ban-server" in _apply(host, start)
    assert _jails(host) == ["sshd"]
    assert (_get(host, "sshd", "maxretry"), _get(host, "sshd", "bantime"), _get(host, "sshd", "findtime")) == ("3", "3600", "600")
    assert parse_jail_file(host.read(JAIL_FILE) or "")["sshd"] == {"enabled": "true", "port": "ssh", "maxretry": "3"}

    # Idempotence: nothing to do, and a second apply does not touch the file or the server.
    _assert_in_sync(host, start)
    file_stat = host.run(["stat", "-c", "%i %Y", JAIL_FILE]).stdout
    second = host.converge("apply", start, "--yes")
    assert second.returncode == 0 and "wrote" not in second.stdout and "reloaded" not in second.stdout
    assert host.run(["stat", "-c", "%i %Y", JAIL_FILE]).stdout == file_stat

    # Add a jail.
    added = _baseline(tmp_path, SSHD.format(maxretry=3) + EXTRA.format(enabled="true"))
    [change] = json.loads(host.converge("plan", added, "--json").stdout)["hosts"][0]["changes"]
    assert (change["resource"], change["action"], "notes" in change) == ("jail:ssh-extra", "add", False)
    assert "reloaded fail2ban-server" in _apply(host, added)
    assert _jails(host) == ["ssh-extra", "sshd"]
    assert _get(host, "ssh-extra", "maxretry") == "7"
    assert _get(host, "ssh-extra", "logpath").splitlines()[1:] == ["`- /var/log/extra.log"]
    ignored = parse_live_option("ignoreip", host.run(["fail2ban-client", "get", "ssh-extra", "ignoreip"]).stdout)
    assert ignored == {"127.0.0.0/8", "192.0.2.7", "::1"}  # fail2ban keeps them in a set: any order
    _assert_in_sync(host, added)

    # Change maxretry.
    changed = _baseline(tmp_path, SSHD.format(maxretry=4) + EXTRA.format(enabled="true"))
    plan = host.converge("plan", changed)
    assert plan.returncode == 2 and "~ maxretry: 3 -> 4" in plan.stdout, plan.stdout
    _apply(host, changed)
    assert _get(host, "sshd", "maxretry") == "4"
    _assert_in_sync(host, changed)

    # Disable a jail: it stays in the file, disabled, and stops running.
    disabled = _baseline(tmp_path, SSHD.format(maxretry=4) + EXTRA.format(enabled="false"))
    _apply(host, disabled)
    assert _jails(host) == ["sshd"]
    assert parse_jail_file(host.read(JAIL_FILE) or "")["ssh-extra"]["enabled"] == "false"
    _assert_in_sync(host, disabled)

    # Remove it from the baseline: it leaves the file.
    removed = _baseline(tmp_path, SSHD.format(maxretry=4))
    plan = host.converge("plan", removed, "--json")
    changes = json.loads(plan.stdout)["hosts"][0]["changes"]
    assert [(c["resource"], c["action"]) for c in changes] == [("jail:ssh-extra", "remove")]
    _apply(host, removed)
    assert "ssh-extra" not in parse_jail_file(host.read(JAIL_FILE) or "")
    assert _jails(host) == ["sshd"]
    assert _get(host, "sshd", "maxretry") == "4"
    _assert_in_sync(host, removed)


def test_live_drift_is_planned_and_a_reload_repairs_it(host: TestHost, tmp_path: Path) -> None:
    host.write("/var/log/auth.log", "")
    baseline = _baseline(tmp_path, SSHD.format(maxretry=3))
    _apply(host, baseline)
    host.run(["fail2ban-client", "set", "sshd", "maxretry", "9"])  # changed at runtime, not in the file

    plan = host.converge("plan", baseline, "--json")
    assert plan.returncode == 2
    [change] = json.loads(plan.stdout)["hosts"][0]["changes"]
    live = {"before": {"maxretry": 9}, "after": {"maxretry": 3}}  # what the server runs, what reload gives it
    assert (change["resource"], change["action"], change["live"]) == ("jail:sshd", "update", live)
    assert change["notes"] == ["live maxretry is 9, not 3: reload applies it"]
    assert "reloaded fail2ban-server" in _apply(host, baseline)
    assert _get(host, "sshd", "maxretry") == "3"
    _assert_in_sync(host, baseline)


def test_a_jail_with_a_missing_filter_is_refused_and_the_server_keeps_its_jails(host: TestHost, tmp_path: Path) -> None:
    host.write("/var/log/auth.log", "")
    good = _baseline(tmp_path, SSHD.format(maxretry=3))
    _apply(host, good)
    file_before = host.read(JAIL_FILE)
    broken = good.replace("baseline", "broken")
    Path(broken).write_text(SSHD.format(maxretry=2) + '\n[fail2ban.jails.web]\nenabled = true\nfilter = "no-such-filter"\n'
                            'logpath = "/var/log/auth.log"\n')

    apply = host.converge("apply", broken, "--yes")
    assert apply.returncode == 1
    assert ("fail2ban-client -t refused the new configuration: Found no accessible config files for "
            "'filter.d/no-such-filter' under /etc/fail2ban; Unable to read the filter 'no-such-filter'") in apply.stdout
    assert "nothing was changed" in apply.stdout
    assert host.read(JAIL_FILE) == file_before
    assert _jails(host) == ["sshd"]
    assert _get(host, "sshd", "maxretry") == "3"
    assert not [path for path in host.changed_files() if "converge-fail2ban" in path]  # staged copy removed
    _assert_in_sync(host, good)


def test_debian_sshd_jail_without_auth_log_is_explained_and_can_be_declared_away(host: TestHost, tmp_path: Path) -> None:
    # Debian's jail.d/defaults-debian.conf enables sshd on /var/log/auth.log, absent on this host.
    assert host.read("/etc/fail2ban/jail.d/defaults-debian.conf") is not None
    assert host.read("/var/log/auth.log") is None
    host.write("/var/log/extra.log", "")
    only_extra = _baseline(tmp_path, "[fail2ban]\nstart_server = true\n" + EXTRA.format(enabled="true"))

    plan = host.converge("plan", only_extra, "--json")
    warnings = json.loads(plan.stdout)["hosts"][0]["warnings"]
    assert any("Have not found any log file for sshd jail" in warning and "defaults-debian.conf" in warning
               for warning in warnings), warnings
    apply = host.converge("apply", only_extra, "--yes")
    assert apply.returncode == 1
    assert "Have not found any log file for sshd jail; nothing was changed" in apply.stdout
    assert host.read(JAIL_FILE) is None
    assert host.run(["fail2ban-client", "ping"], check=False).returncode != 0  # not started

    # Declaring Debian's jail in the baseline (here: disabled) makes the configuration valid.
    declared = _baseline(tmp_path, Path(only_extra).read_text() + "\n[fail2ban.jails.sshd]\nenabled = false\n", "declared.toml")
    _apply(host, declared)
    assert _jails(host) == ["ssh-extra"]
    _assert_in_sync(host, declared)


def _banned(host: TestHost, jail: str) -> list[str]:
    status = host.run(["fail2ban-client", "status", jail]).stdout
    line = next(line for line in status.splitlines() if "Banned IP list:" in line)
    return line.split("Banned IP list:", 1)[1].split()


def test_failed_logins_in_the_jail_log_get_the_address_banned(host: TestHost, tmp_path: Path) -> None:
    host.write("/var/log/auth.log", "")
    baseline = _baseline(tmp_path, SSHD.format(maxretry=2))
    _apply(host, baseline)
    assert _banned(host, "sshd") == []

    stamp = time.strftime("%b %e %H:%M:%S")
    lines = "".join(FAILED_LOGIN.format(stamp=stamp, ip=ATTACKER) for _ in range(3))
    host.run(["sh", "-c", 'cat >> "$1"', "append", "/var/log/auth.log"], input=lines)

    # fail2ban reads the log on its own schedule: poll, bounded, for the ban to appear.
    deadline = time.monotonic() + 20
    while _banned(host, "sshd") != [ATTACKER] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _banned(host, "sshd") == [ATTACKER]
    rules = host.run(["iptables", "-S", "f2b-sshd"]).stdout
    assert f"-A f2b-sshd -s {ATTACKER}/32 -j REJECT" in rules


def test_a_server_that_fails_to_start_leaves_the_previous_file_and_no_server(host: TestHost, tmp_path: Path) -> None:
    host.write("/var/log/auth.log", "")
    previous = "[sshd]\nenabled = true\nmaxretry = 6\n"
    host.write(JAIL_FILE, previous)
    # A mistake outside converge's file that `-t` does not see: the server fails while starting.
    host.write("/etc/fail2ban/fail2ban.local", "[Definition]\nlogtarget = /var/log/no-such-directory/fail2ban.log\n")
    baseline = _baseline(tmp_path, SSHD.format(maxretry=3))

    apply = host.converge("apply", baseline, "--yes")
    assert apply.returncode == 1
    assert "`fail2ban-client -x start` failed: " in apply.stdout and "Failed to change log target" in apply.stdout
    assert "what was done before it was undone" in apply.stdout  # the previous file, and no server
    assert host.read(JAIL_FILE) == previous
    assert host.run(["fail2ban-client", "ping"], check=False).returncode != 0


def test_hand_edits_are_rewritten_and_a_later_file_that_wins_is_named(host: TestHost, tmp_path: Path) -> None:
    host.write("/var/log/auth.log", "")
    baseline = _baseline(tmp_path, SSHD.format(maxretry=3))
    _apply(host, baseline)

    # A comment added by hand changes no option: the file is still rewritten to what converge manages.
    host.write(JAIL_FILE, (host.read(JAIL_FILE) or "") + "# tuned by hand\n")
    plan = host.converge("plan", baseline, "--json")
    [change] = json.loads(plan.stdout)["hosts"][0]["changes"]
    assert (change["resource"], change["notes"]) == (f"file:{JAIL_FILE}", ["differs in layout or comments: rewrite it"])
    # Values, not prose: the file as it is and as it will be.
    assert change["before"].endswith("# tuned by hand\n")
    assert change["after"] == change["before"].removesuffix("# tuned by hand\n")
    _apply(host, baseline)
    assert "# tuned by hand" not in (host.read(JAIL_FILE) or "")
    _assert_in_sync(host, baseline)

    # A jail.d/*.local file read after converge.local sets maxretry again: fail2ban obeys it.
    host.write("/etc/fail2ban/jail.d/zz-admin.local", "[sshd]\nmaxretry = 10\n")
    host.run(["fail2ban-client", "reload"])
    plan = host.converge("plan", baseline, "--json")
    record = json.loads(plan.stdout)["hosts"][0]
    assert record["warnings"] == [
        f"/etc/fail2ban/jail.d/zz-admin.local is read after {JAIL_FILE} and sets maxretry in [sshd]: its values win"
    ]
    assert record["changes"][0]["live"] == {"before": {"maxretry": 10}, "after": {"maxretry": 3}}
    apply = host.converge("apply", baseline, "--yes")
    assert apply.returncode == 1
    assert "did not converge; still differing: fail2ban jail:sshd" in apply.stdout


def test_a_baseline_without_jails_removes_the_file_once_fail2ban_accepts_that(host: TestHost, tmp_path: Path) -> None:
    host.write("/var/log/auth.log", "")
    _apply(host, _baseline(tmp_path, SSHD.format(maxretry=3)))
    empty = _baseline(tmp_path, "[fail2ban]\nstart_server = true\n", "empty.toml")

    plan = host.converge("plan", empty, "--json")
    changes = json.loads(plan.stdout)["hosts"][0]["changes"]
    assert sorted((c["resource"], c["action"]) for c in changes) == [("jail:DEFAULT", "remove"), ("jail:sshd", "remove")]
    assert f"removed {JAIL_FILE}" in _apply(host, empty)
    assert host.read(JAIL_FILE) is None
    assert _get(host, "sshd", "maxretry") == "5"  # Debian's sshd jail, with jail.conf's defaults again
    _assert_in_sync(host, empty)


def test_apply_performs_exactly_the_planned_operations(host: TestHost, tmp_path: Path) -> None:
    host.write("/var/log/auth.log", "")
    _apply(host, _baseline(tmp_path, SSHD.format(maxretry=3)))
    previous = host.read(JAIL_FILE)
    changed = _baseline(tmp_path, SSHD.format(maxretry=4), "changed.toml")
    recorder = Path(__file__).parent / "data" / "sysctl" / "record_apply.py"  # the shared recording host
    result = host.run([sys.executable, str(recorder), changed, "fail2ban"],
                      env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    record = json.loads(result.stdout)
    assert record["error"] is None
    planned = record["planned"]
    assert [op["op"] for op in planned] == ["run", "write", "run"]
    staged, write, reload = planned
    # The staged test gets the new file on stdin; the write's undo puts the previous file back and reloads.
    assert staged["argv"][:2] == ["sh", "-c"] and staged["input"] == write["content"]
    assert write["undo"] == [{"op": "write", "path": JAIL_FILE, "content": previous},
                             {"op": "run", "argv": ["fail2ban-client", "reload"]}]
    assert reload["argv"] == ["fail2ban-client", "reload"]
    assert record["done"] == [
        {"op": "run", "argv": staged["argv"], "input": staged["input"]},
        {"op": "write", "path": JAIL_FILE, "content": write["content"]},
        {"op": "run", "argv": reload["argv"], "input": None},
    ]
    assert _get(host, "sshd", "maxretry") == "4"
    assert not [path for path in host.changed_files() if "converge-fail2ban" in path]  # staged copy removed
