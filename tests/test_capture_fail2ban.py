"""converge capture for fail2ban: converge's jail file back into a baseline, against a real server."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from converge.providers.fail2ban.capture import captured_table
from converge.providers.fail2ban.parse import parse_jail_file
from converge.providers.fail2ban.provider import render_jail_file
from converge.providers.fail2ban.spec import JAIL_FILE, Fail2banSpec
from tests.test_fail2ban_host import _apply, _baseline, _get, _jails
from tests.testhost import TestHost

MANAGED = """
[fail2ban]
start_server = true

[fail2ban.defaults]
bantime = "1h"
findtime = 600
"bantime.increment" = true
"bantime.multipliers" = [1, 2, 4, 8]
ignoreip = ["127.0.0.1/8", "::1"]

[fail2ban.jails.sshd]
enabled = true
port = "ssh"
maxretry = 3

[fail2ban.jails.ssh-extra]
enabled = true
filter = "sshd[mode=aggressive]"
port = 2222
logpath = ["/var/log/extra.log", "/var/log/extra-2.log"]
banaction = "iptables-multiport"
maxretry = 7
"""


@pytest.fixture
def host(test_host: TestHost) -> Iterator[TestHost]:
    # As in test_fail2ban_host: no systemd here, so the server converge starts is this host's own.
    test_host.run(["rm", "-rf", "/run/systemd/system"])
    yield test_host


def _capture(host: TestHost, path: Path) -> tuple[dict[str, Any], list[str]]:
    result = host.converge("capture", "-H", "local", "--only", "fail2ban", "-o", str(path))
    assert result.returncode == 0, result.stderr
    prefix = "local: fail2ban: "
    notes = [line.removeprefix(prefix) for line in result.stderr.splitlines() if line.startswith(prefix)]
    return tomllib.loads(path.read_text()), notes


def test_capture_round_trips_converges_file_and_notes_what_it_leaves_out(host: TestHost, tmp_path: Path) -> None:
    for log in ("auth.log", "extra.log", "extra-2.log"):
        host.write(f"/var/log/{log}", "")
    _apply(host, _baseline(tmp_path, MANAGED))
    assert _jails(host) == ["ssh-extra", "sshd"]
    captured = tmp_path / "captured.toml"

    document, notes = _capture(host, captured)
    # Debian's jail.d/defaults-debian.conf enables sshd: recorded (compared, never written), issue 16 defect 12.
    assert document["fail2ban"] == tomllib.loads(MANAGED)["fail2ban"] | {"enabled_elsewhere": ["sshd"]}
    assert notes == ["/etc/fail2ban/jail.d/defaults-debian.conf declares [sshd]: not captured, converge manages only "
                     "/etc/fail2ban/jail.d/converge.local; that file keeps applying as it is"]
    validate = host.converge("validate", str(captured))
    assert validate.returncode == 0, validate.stdout + validate.stderr
    plan = host.converge("plan", str(captured))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "in sync" in plan.stdout

    # A value changed at runtime and an option converge does not manage: both named, neither captured.
    host.run(["fail2ban-client", "set", "sshd", "maxretry", "9"])
    edited = (host.read(JAIL_FILE) or "").replace("maxretry = 7\n", "maxretry = 7\nlogtimezone = UTC\n")
    host.write(JAIL_FILE, edited)
    document, notes = _capture(host, captured)
    assert document["fail2ban"]["jails"]["sshd"]["maxretry"] == 3
    assert "logtimezone" not in document["fail2ban"]["jails"]["ssh-extra"]
    assert ("[ssh-extra] logtimezone = 'UTC' in /etc/fail2ban/jail.d/converge.local: not captured: "
            "converge does not manage this option") in notes
    assert "plan will still update jail:sshd: live maxretry is 9, not 3: reload applies it" in notes
    assert "plan will still update jail:ssh-extra: - logtimezone: 'UTC'" in notes
    assert _get(host, "sshd", "maxretry") == "9"  # capture changed nothing
    assert host.converge("validate", str(captured)).returncode == 0


def test_every_option_kind_reads_back_as_the_same_file() -> None:
    text = render_jail_file({
        "DEFAULT": {"bantime": "-1", "findtime": "1h 30m", "bantime.increment": "true", "bantime.multipliers": "1 2 4",
                    "bantime.maxtime": "1w", "ignoreip": "127.0.0.1/8 ::1 ops.example.org", "ignoreself": "false",
                    "destemail": "root@example.org", "usedns": "no"},
        "web": {"enabled": "false", "port": "http,https,8000:8080", "protocol": "tcp",
                "logpath": "/var/log/a.log\n/var/log/b*.log",
                "action": "%(action_)s\niptables-multiport[name=web, port=\"http,https\"]", "maxretry": "5",
                "backend": "systemd", "journalmatch": "_SYSTEMD_UNIT=nginx.service + _COMM=nginx", "chain": "INPUT",
                "filter": "nginx-http-auth[mode=fallback]", "bantime.rndtime": "30"},
    })
    sections = parse_jail_file(text)
    table, notes = captured_table(sections, server_running=False)
    assert notes == []
    assert table["defaults"]["bantime"] == -1 and table["jails"]["web"]["logpath"] == ["/var/log/a.log", "/var/log/b*.log"]
    assert table["defaults"]["bantime.multipliers"] == [1, 2, 4] and table["jails"]["web"]["enabled"] is False
    # Every value says the same text again (the option order of a file converge wrote is the model's own).
    assert Fail2banSpec.model_validate(table).sections() == sections
