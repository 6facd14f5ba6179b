"""The fail2ban provider over real SSH: converge in a controller, fail2ban-server in the target."""

from __future__ import annotations

import json
from pathlib import Path

from converge.providers.fail2ban.parse import parse_jail_file, parse_jail_list
from converge.providers.fail2ban.spec import JAIL_FILE
from tests.sshnet import SSHNetwork

BASELINE = """\
[fail2ban]
start_server = true

[fail2ban.jails.sshd]
enabled = true
port = "ssh"
maxretry = {maxretry}
"""


def test_jails_converge_over_ssh_with_every_read_in_one_session(network: SSHNetwork, tmp_path: Path) -> None:
    host = network.add_host()
    host.run(["rm", "-rf", "/run/systemd/system"])  # no systemd of its own: see test_fail2ban_host
    host.write("/var/log/auth.log", "")
    target = ("-H", f"ssh://root@{host.address}")
    baseline = tmp_path / "baseline.toml"
    baseline.write_text(BASELINE.format(maxretry=3))

    plan = network.converge("plan", str(baseline), "--json", *target)
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert {c["resource"] for c in json.loads(plan.stdout)["hosts"][0]["changes"]} == {"jail:sshd", "server:fail2ban-server"}
    assert host.sessions() == 1  # status, -t and every `get` gathered in one exec channel

    apply = network.converge("apply", "--yes", str(baseline), *target)
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert parse_jail_list(host.run(["fail2ban-client", "status"]).stdout) == ["sshd"]
    assert host.run(["fail2ban-client", "get", "sshd", "maxretry"]).stdout.strip() == "3"

    baseline.write_text(BASELINE.format(maxretry=4) + '\n[fail2ban.jails.web]\nenabled = true\nfilter = "no-such-filter"\n')
    refused = network.converge("apply", "--yes", str(baseline), *target)
    assert refused.returncode == 1
    assert "Unable to read the filter 'no-such-filter'" in refused.stdout
    assert parse_jail_file(host.read(JAIL_FILE) or "")["sshd"]["maxretry"] == "3"
    assert host.run(["fail2ban-client", "get", "sshd", "maxretry"]).stdout.strip() == "3"

    baseline.write_text(BASELINE.format(maxretry=4))
    apply = network.converge("apply", "--yes", str(baseline), *target)
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert host.run(["fail2ban-client", "get", "sshd", "maxretry"]).stdout.strip() == "4"
    again = network.converge("plan", str(baseline), *target)
    assert again.returncode == 0 and "in sync" in again.stdout, again.stdout
