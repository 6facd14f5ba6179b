"""fail2ban: validation of the baseline table, and the pure parsers on output captured from the
real fail2ban-client 1.0.2 (tests/data/fail2ban)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from converge.provider import CommandResult, ParseError
from converge.providers.fail2ban.parse import (
    displayed,
    expected_live_value,
    fail2ban_errors,
    parse_jail_file,
    parse_jail_list,
    parse_live_option,
)
from converge.providers.fail2ban.provider import live_reads, overriding_files, render_jail_file
from converge.providers.fail2ban.spec import JAIL_FILE, Fail2banSpec, time_to_seconds

DATA = Path(__file__).parent / "data" / "fail2ban"
EXPECT = re.compile(r"# expect: line=(?P<line>\d+) key=(?P<key>\S+) message=(?P<message>.+)")


def _data(name: str) -> str:
    return (DATA / name).read_text()


def test_jail_lists_from_status() -> None:
    assert parse_jail_list(_data("status-two-jails.txt")) == ["recidive", "sshd"]
    assert parse_jail_list(_data("status-no-jails.txt")) == []
    with pytest.raises(ParseError, match="fail2ban-client status: no jail list"):
        parse_jail_list(_data("status-not-running.txt"))


def test_live_option_values() -> None:
    assert parse_live_option("ignoreip", _data("get-sshd-ignoreip.txt")) == {"127.0.0.0/8", "192.0.2.7", "::1"}
    assert parse_live_option("ignoreip", _data("get-sshd-ignoreip-none.txt")) == frozenset()
    assert parse_live_option("logpath", _data("get-sshd-logpath.txt")) == {"/var/log/auth.log", "/var/log/web.log"}
    assert parse_live_option("bantime", _data("get-sshd-bantime.txt")) == "3600"
    assert parse_live_option("maxretry", _data("get-sshd-maxretry.txt")) == "3"
    assert parse_live_option("ignoreself", _data("get-sshd-ignoreself.txt")) == "True"
    assert parse_live_option("usedns", _data("get-sshd-usedns.txt")) == "warn"


def _result(name: str, returncode: int = 255) -> CommandResult:
    return CommandResult(("fail2ban-client", "-t"), returncode, "", _data(name))


def test_fail2ban_error_messages_are_its_own() -> None:
    missing_log = "Failed during configuration: Have not found any log file for sshd jail"
    assert fail2ban_errors(_result("test-missing-log.txt")) == missing_log
    assert fail2ban_errors(_result("test-missing-filter.txt")) == (
        "Found no accessible config files for 'filter.d/nosuchfilter' under /etc/fail2ban; "
        "Unable to read the filter 'nosuchfilter'; Errors in jail 'sshd'"
    )
    assert "Unable to read the filter 'nosuch'" in fail2ban_errors(_result("reload-missing-filter.txt"))
    assert fail2ban_errors(_result("start-bad-logtarget.txt")) == "Failed to change log target"
    assert fail2ban_errors(_result("get-nosuch-maxretry.txt")) == "nosuch"


@pytest.mark.parametrize(("text", "seconds"), [("600", 600), ("10m", 600), ("1h 30m", 5400), ("1d", 86400), ("2w", 1209600),
                                               ("-1", -1), ("90 seconds", 90), ("1 hour", 3600),
                                               ("1d12h", 129600)])
def test_times_in_seconds_as_fail2ban_counts_them(text: str, seconds: int) -> None:
    assert time_to_seconds(text) == seconds


SPEC = {
    "defaults": {"bantime": "1h", "findtime": 600, "ignoreip": ["127.0.0.1/8", "::1"]},
    "jails": {
        "sshd": {"enabled": True, "port": "ssh,2222", "maxretry": 3, "logpath": ["/var/log/auth.log", "/var/log/x*.log"],
                 "action": ['iptables-multiport[name=ssh, port="http,https"]', "%(action_mwl)s"], "bantime.increment": True},
        "nginx-http-auth": {"enabled": False, "filter": "nginx-http-auth[mode=normal]", "bantime": -1},
    },
}


def test_rendered_file_reads_back_as_the_baseline() -> None:
    spec = Fail2banSpec.model_validate(SPEC)
    text = render_jail_file(spec.sections())
    assert text.startswith("# Managed by converge")
    assert parse_jail_file(text) == spec.sections()
    assert spec.sections()["sshd"]["logpath"] == "/var/log/auth.log\n/var/log/x*.log"
    assert spec.sections()["DEFAULT"] == {"findtime": "600", "bantime": "1h", "ignoreip": "127.0.0.1/8 ::1"}
    assert "bantime.increment = true\n" in text
    assert spec.sections()["nginx-http-auth"]["bantime"] == "-1"


def test_a_broken_file_is_reported_as_unreadable() -> None:
    with pytest.raises(ParseError, match=r"converge\.local: File contains no section headers.*'maxretry = 3'"):
        parse_jail_file("maxretry = 3\n", JAIL_FILE)


@pytest.mark.parametrize(("options", "message"), [
    ({"maxretry": 0}, "greater than or equal to 1"),
    ({"maxretry": True}, "valid integer"),
    ({"port": 70000}, "out of range"),
    ({"port": "ssh 22"}, "not a port"),
    ({"filter": "../../etc/passwd"}, "not a filter name"),
    ({"logpath": "/var/log/$(reboot)"}, "absolute log file paths"),
    ({"action": "iptables[name=a;b]"}, "action parameter name=a;b is refused: a parameter value is one word without spaces"),
    ({"action": "iptables[name=ssh, actionban=reboot]"}, "action parameter 'actionban' is not allowed"),
    ({"action": "iptables[name ssh]"}, "action parameter 'name ssh' is not allowed"),
    # Security review (issue 23, finding 3): fail2ban substitutes parameters unescaped into root shell commands.
    ({"action": 'iptables-multiport[iptables="/usr/bin/flock /run/x /usr/bin/id"]'},
     "action parameter 'iptables' is not allowed"),
    ({"action": 'iptables-multiport[name="a b"]'}, "a parameter value is one word without spaces or /"),
    ({"action": "iptables-multiport[blocktype=/usr/bin/id]"}, "a parameter value is one word without spaces or /"),
    ({"bantime": "1 month"}, "not a time"),
    ({"findtime": -1}, "1 to 1000000000"),
    ({"destemail": "root@localhost\nsender = x"}, "not an e-mail address"),
    ({"journalmatch": "_SYSTEMD_UNIT=sshd.service; reboot"}, "journal matches"),
    ({"bantime.multipliers": "1 2 4"}, "array of whole numbers"),
])
def test_bad_values_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        Fail2banSpec.model_validate({"jails": {"sshd": options}})


def _bad_baselines() -> list[Path]:
    return sorted((DATA / "bad").glob("*.toml"))


@pytest.mark.parametrize("baseline", _bad_baselines(), ids=lambda path: path.stem)
def test_converge_validate_names_the_line_and_key(baseline: Path) -> None:
    expect = EXPECT.match(baseline.read_text().splitlines()[0])
    assert expect, f"{baseline.name} lacks its '# expect:' line"
    result = subprocess.run([sys.executable, "-m", "converge", "validate", str(baseline)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"error: {baseline}:{expect['line']}: {expect['key']}: "), result.stderr
    assert expect["message"] in first
    assert "Traceback" not in result.stderr


def test_the_managed_file_is_a_jail_d_local_file() -> None:
    # Read after jail.conf, jail.d/*.conf and jail.local: the baseline wins over the stock files.
    assert JAIL_FILE == "/etc/fail2ban/jail.d/converge.local"


def test_only_options_of_the_jail_itself_are_compared_live() -> None:
    # jail.conf's [recidive] sets bantime = 1w, which rightly beats [DEFAULT]: not a drift.
    spec = Fail2banSpec.model_validate({"defaults": {"bantime": "1h", "maxretry": 5},
                                        "jails": {"recidive": {"enabled": True, "maxretry": 2}}})
    assert live_reads(spec) == [("recidive", "maxretry")]


def test_files_read_after_ours_that_set_our_options_are_found() -> None:
    spec = Fail2banSpec.model_validate({"defaults": {"bantime": "1h"}, "jails": {"sshd": {"maxretry": 3, "port": "ssh"}}})
    later = {
        "/etc/fail2ban/jail.d/zz-local.local": "[sshd]\nmaxretry = 10\nport = ssh\nfindtime = 1m\n[DEFAULT]\nbantime = 5m\n",
        "/etc/fail2ban/jail.d/zz-other.local": "[nginx]\nmaxretry = 1\n",
        "/etc/fail2ban/jail.d/zz-broken.local": "no section\n",
    }
    assert overriding_files(spec, later) == [
        ("/etc/fail2ban/jail.d/zz-local.local", "DEFAULT", ["bantime"]),
        ("/etc/fail2ban/jail.d/zz-local.local", "sshd", ["port", "maxretry"]),
    ]


def test_baseline_values_are_compared_with_what_the_server_prints() -> None:
    # The section the captures were made with: bantime = 1h, ignoreip = 127.0.0.1/8 ::1 192.0.2.7, two log files.
    assert expected_live_value("ignoreip", "127.0.0.1/8 ::1 192.0.2.7", None) == parse_live_option(
        "ignoreip", _data("get-sshd-ignoreip.txt"))
    assert expected_live_value("bantime", "1h", None) == parse_live_option("bantime", _data("get-sshd-bantime.txt"))
    assert expected_live_value("findtime", "10m", None) == parse_live_option("findtime", _data("get-sshd-findtime.txt"))
    assert expected_live_value("ignoreself", "true", None) == parse_live_option("ignoreself", _data("get-sshd-ignoreself.txt"))
    assert expected_live_value("logpath", "/var/log/auth.log\n/var/log/web.log", "auto") == parse_live_option(
        "logpath", _data("get-sshd-logpath.txt"))
    # What fail2ban resolves itself cannot be predicted: not compared.
    assert expected_live_value("logpath", "/var/log/*.log", "auto") is None
    assert expected_live_value("logpath", "/var/log/auth.log", "systemd") is None
    assert expected_live_value("ignoreip", "127.0.0.1 gateway.example", None) is None


def test_plans_show_values_typed_as_the_baseline_writes_them() -> None:
    assert displayed({"enabled": "true", "maxretry": "3", "bantime": "-1", "port": "ssh"}) == {
        "enabled": True, "maxretry": 3, "bantime": -1, "port": "ssh"}
    assert displayed(None) is None


def test_recorded_plans_carry_values_not_prose() -> None:
    """SPEC section 4: before/after (and every side) are values or null; words go in notes."""
    from tests.cases import CASES, planned

    prose = {"differs", "present", "absent", "edited", "stopped", "running", "as permanent", "managed content"}
    cases = sorted(path.parent for path in (CASES / "fail2ban").glob("*/reads.json"))
    assert len(cases) >= 3
    for case in cases:
        for change in planned(case)["changes"]:
            live = change.get("live", {})
            values = [change["before"], change["after"], *live.values()]
            assert all(not (isinstance(value, str) and value in prose) for value in values), (case, change)
            assert all(value is None or isinstance(value, dict | bool | str) for value in values), (case, change)
