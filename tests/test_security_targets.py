"""Issue 23, finding 1: a target string must never become a shell command on the controller.

paramiko substitutes the host name unquoted into the operator's `Match exec` commands (as OpenSSH
did before CVE-2023-51385), so every host and user name converge hands it is checked first: from
`-H`, from an inventory, from what ssh_config resolves an alias to, and from ProxyJump hops.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.sshnet import SSHNetwork

BASELINE = "[sysctl]\nnet.ipv4.conf.all.log_martians = 1\n"
# Each payload, run by a shell, leaves a marker file in the controller's $HOME (/root).
HOSTILE = "root@web1;cd;id>PWNED-h;"


@pytest.fixture
def baseline(tmp_path: Path) -> str:
    path = tmp_path / "baseline.toml"
    path.write_text(BASELINE)
    return str(path)


def _config(network: SSHNetwork, address: str) -> None:
    # A common idiom: Match exec probing the host; it logs every host name it was run with.
    network.controller.write("/root/.ssh/config", (
        'Match exec "echo %h >> /root/match-exec.log"\n'
        f"Host web1\n  HostName {address}\n  User root\n"
        "Host badname\n  HostName bad$name\n"
        "Host web3\n  HostName web3\n  ProxyJump root@web1;cd;id>PWNED-jump;\n"
    ))


def _converge(network: SSHNetwork, *args: str) -> tuple[int, str]:
    result = network.controller.converge(*args, env={**os.environ, "HOME": "/root"})
    return result.returncode, result.stdout + result.stderr


def _markers(network: SSHNetwork) -> list[str]:
    listing = network.controller.run(["ls", "/root"]).stdout.split()
    return [name for name in listing if name.startswith("PWNED")]


def test_hostile_targets_are_refused_before_match_exec_runs(network: SSHNetwork, baseline: str, tmp_path: Path) -> None:
    web = network.add_host("web1")
    _config(network, web.address)

    status, output = _converge(network, "plan", baseline, "-H", "web1")
    assert status == 2, output  # the alias works and Match exec really runs
    assert "web1" in (network.controller.read("/root/match-exec.log") or "").split()

    status, output = _converge(network, "plan", baseline, "-H", HOSTILE)
    assert status == 1
    assert "host name 'web1;cd;id>PWNED-h;' refused" in output, output
    assert len(output.strip().splitlines()) == 1, output
    assert _markers(network) == []

    inventory = tmp_path / "hosts.toml"
    inventory.write_text(f'[hosts.web1]\ntarget = "root@web1"\n[hosts.web2]\ntarget = "{HOSTILE}"\n')
    status, output = _converge(network, "plan", baseline, "-i", str(inventory))
    assert status == 1
    assert output.startswith(f"error: {inventory}:4: hosts.web2.target: ")
    assert "refused" in output

    status, output = _converge(network, "plan", baseline, "-H", "root@web1$(id>PWNED-u)")
    assert status == 1 and "refused" in output
    status, output = _converge(network, "plan", baseline, "-H", "r;id>PWNED-user;@web1")
    assert status == 1 and "user name 'r;id>PWNED-user;' refused" in output, output

    # What ssh_config resolves an alias to, and its ProxyJump hops, are checked the same way.
    status, output = _converge(network, "plan", "--json", baseline, "-H", "badname", "-H", "web3")
    assert status == 1
    assert "ssh_config HostName: host name 'bad$name' refused" in output, output
    assert "host name 'web1;cd;id>PWNED-jump;' refused" in output, output

    assert _markers(network) == []
    logged = (network.controller.read("/root/match-exec.log") or "").split()
    assert all(name.replace(".", "").replace("-", "").isalnum() for name in logged), logged
    assert web.sessions() == 1  # only the legitimate plan reached the host


def test_ipv6_targets_in_brackets_still_parse() -> None:
    from converge.errors import HostError
    from converge.hosts.ssh import SSHTarget

    assert SSHTarget.parse("ssh://root@[2001:db8::1]:2222") == SSHTarget("2001:db8::1", "root", 2222)
    assert SSHTarget.parse("deploy$@web-1.example.org") == SSHTarget("web-1.example.org", "deploy$", None)
    for bad in ("[web1]", "ssh://[2001:db8::1%eth0;id]", "-oProxyCommand=x", "root@-web", "web1\n", "we b1"):
        with pytest.raises(HostError, match=r"refused|brackets"):
            SSHTarget.parse(bad)
