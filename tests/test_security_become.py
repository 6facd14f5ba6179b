"""Issue 23, finding 7: the sudo password goes only to hosts of the run that really need it.

A host that fakes sudo ("a password is required") collected the password before: a ProxyJump
bastion (which converge had `--become` on), and a managed host asking although the first host
with the same user did not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sshnet import SSHD_CONFIG, SSHNetwork, SSHTestHost
from tests.test_ssh import _run_on_a_terminal

PASSWORD = "s3cret-Pass"
BASELINE = "[sysctl]\nnet.ipv4.conf.all.log_martians = 1\n"
FAKE_SUDO = """\
#!/bin/sh
for argument; do [ "$argument" = -n ] && { echo "sudo: a password is required" >&2; exit 1; }; done
cat > /run/capture/stdin
"""


@pytest.fixture
def baseline(tmp_path: Path) -> str:
    path = tmp_path / "baseline.toml"
    path.write_text(BASELINE)
    return str(path)


def _with_fake_sudo(network: SSHNetwork, host: SSHTestHost) -> None:
    """deploy's sessions find a sudo that says it needs a password and keeps whatever it is sent."""
    host.add_user("deploy", network.public_key)
    host.write("/etc/fakebin/sudo", FAKE_SUDO)
    host.run(["chmod", "0755", "/etc/fakebin/sudo"])
    host.run(["install", "-d", "-m", "1777", "/run/capture"])
    host.write(SSHD_CONFIG, (host.read(SSHD_CONFIG) or "") + "SetEnv PATH=/etc/fakebin:/usr/bin:/bin\n")
    host.stop_sshd()
    host.start_sshd()


def _with_real_sudo(network: SSHNetwork, host: SSHTestHost, sudoers: str) -> None:
    host.add_user("deploy", network.public_key, sudoers=sudoers)
    host.run(["chpasswd"], input=f"deploy:{PASSWORD}\n")
    host.write("/etc/hosts", f"127.0.0.1 localhost {host.name}\n")


def _on_a_terminal(network: SSHNetwork, *args: str) -> tuple[int, str]:
    argv = ["nsenter", "-t", str(network.controller.pid), "-m", "-n", "-u", "--", *network.controller.converge_argv(*args)]
    return _run_on_a_terminal(argv, "sudo password for deploy", PASSWORD)


def test_a_jump_host_never_runs_sudo(network: SSHNetwork, baseline: str) -> None:
    bastion, web = network.add_host("bastion"), network.add_host("web")
    _with_fake_sudo(network, bastion)
    _with_real_sudo(network, web, "deploy ALL=(ALL) ALL\n")
    network.controller.write("/root/.ssh/config", (
        f"Host bastion\n  HostName {bastion.address}\n  User deploy\n"
        f"Host web1\n  HostName {web.address}\n  User deploy\n  ProxyJump bastion\n"
    ))
    status, output = _on_a_terminal(network, "apply", "--yes", "--become", baseline, "-H", "web1")
    assert bastion.read("/run/capture/stdin") is None, "the bastion was sent the sudo password"
    assert status == 0, output
    assert "on bastion" not in output
    assert web.sysctl("net.ipv4.conf.all.log_martians") == "1"


def test_a_host_wanting_a_password_the_first_host_did_not_want_gets_none(network: SSHNetwork, baseline: str) -> None:
    honest, faker = network.add_host(), network.add_host()
    _with_real_sudo(network, honest, "deploy ALL=(ALL) NOPASSWD: ALL\n")
    _with_fake_sudo(network, faker)
    status, output = _on_a_terminal(
        network, "plan", "--forks", "1", "--become", baseline, "-H", f"deploy@{honest.address}", "-H", f"deploy@{faker.address}")
    assert faker.read("/run/capture/stdin") is None, "the faking host was sent the sudo password"
    assert status == 1
    assert "sudo password for" not in output  # never even asked
    assert f"sudo asks deploy's password here but not on {honest.address}" in output, output
