"""Security review (issue 23, finding 3): fail2ban action parameters are root shell commands.

fail2ban substitutes an action's parameters unescaped into the commands it runs with a shell as
root. This test shows it with a real fail2ban in a test host (the jail file written by hand, not by
converge: the action's `iptables` parameter replaces the iptables command, and the first ban runs
it), then that converge refuses the same value in a baseline, with file, line and key.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testhost import TestHost

ATTACK = 'iptables-multiport[iptables="/usr/bin/flock /run/converge-pwned /usr/bin/id"]'
FAILED_LOGIN = "{stamp} testhost sshd[4242]: Failed password for root from 192.0.2.10 port 50022 ssh2\n"


@pytest.fixture
def host(test_host: TestHost) -> Iterator[TestHost]:
    test_host.run(["rm", "-rf", "/run/systemd/system"])  # this host's own fail2ban-server, never the machine's
    yield test_host


def test_a_command_in_an_action_parameter_runs_as_root_and_converge_refuses_it(host: TestHost, tmp_path: Path) -> None:
    host.write("/var/log/auth.log", "")
    host.write("/etc/fail2ban/jail.d/hand-written.local",
               f"[sshd]\nenabled = true\nmaxretry = 2\naction = {ATTACK}\n")
    host.run(["fail2ban-client", "-x", "start"])
    try:
        stamp = time.strftime("%b %e %H:%M:%S")
        host.run(["sh", "-c", 'cat >> "$1"', "append", "/var/log/auth.log"],
                 input="".join(FAILED_LOGIN.format(stamp=stamp) for _ in range(3)))
        # fail2ban reads the log on its own schedule: poll, bounded, for the command to have run.
        deadline = time.monotonic() + 20
        while host.read("/run/converge-pwned") is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert host.read("/run/converge-pwned") is not None, "fail2ban did not run the parameter as a command"
    finally:
        host.run(["fail2ban-client", "stop"], check=False)

    baseline = tmp_path / "baseline.toml"
    baseline.write_text(f"[fail2ban.jails.sshd]\nenabled = true\naction = '{ATTACK}'\n")
    validate = host.converge("validate", str(baseline))
    assert validate.returncode == 1
    first = validate.stderr.splitlines()[0]
    assert first.startswith(f"error: {baseline}:3: fail2ban.jails.sshd.action: action parameter 'iptables' is not allowed")
    assert "fail2ban puts parameters unescaped into root shell commands" in first
    plan = host.converge("plan", str(baseline))
    assert plan.returncode == 1
    assert host.read("/etc/fail2ban/jail.d/converge.local") is None
