"""Issue 23, finding 2: the sudo password must never reach what sudo runs.

With `Defaults timestamp_type=global` sudo stops asking after the first success; a password
sent ahead of every command's input then became the first line of a root `sh -s`. sudo's own
I/O log records what each command really received (stdin, output, argv, environment): the
password must be in none of it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from converge.providers.sysctl import DROP_IN, parse_sysctl_conf
from tests.sshnet import SSHNetwork
from tests.test_ssh import _run_on_a_terminal

PASSWORD = "x;id>/root/pw-ran-as-root;#"
BASELINE = "[sysctl]\nnet.ipv4.conf.all.log_martians = 1\nkernel.kptr_restrict = 2\n"
SUDOERS = """\
Defaults timestamp_type=global
Defaults log_input, log_output, !compress_io, iolog_dir=/var/log/sudo-io
deploy ALL=(ALL) ALL
"""


@pytest.fixture
def baseline(tmp_path: Path) -> str:
    path = tmp_path / "baseline.toml"
    path.write_text(BASELINE)
    return str(path)


def test_the_password_never_reaches_a_command_with_a_global_sudo_timestamp(network: SSHNetwork, baseline: str) -> None:
    host = network.add_host()
    host.add_user("deploy", network.public_key, sudoers=SUDOERS)
    host.run(["chpasswd"], input=f"deploy:{PASSWORD}\n")
    host.write("/etc/hosts", f"127.0.0.1 localhost {host.name}\n")
    argv = ["nsenter", "-t", str(network.controller.pid), "-m", "-n", "-u", "--", *network.controller.converge_argv(
        "apply", "--yes", "--become", baseline, f"-Hdeploy@{host.address}")]

    status, output = _run_on_a_terminal(argv, "sudo password for deploy", PASSWORD)

    assert host.read("/root/pw-ran-as-root") is None, "the password ran as a root command"
    assert status == 0, output
    assert PASSWORD not in output  # never echoed
    # gather (sh -s), write_file (content on stdin) and run all went through sudo and worked.
    assert parse_sysctl_conf(host.read(DROP_IN) or "") == {"net.ipv4.conf.all.log_martians": "1", "kernel.kptr_restrict": "2"}
    assert host.sysctl("kernel.kptr_restrict") == "2"
    logged = host.run(["grep", "-rlF", "--", PASSWORD, "/var/log/sudo-io"], check=False)
    assert host.run(["find", "/var/log/sudo-io", "-name", "stdin"]).stdout.count("stdin") >= 3
    assert logged.returncode == 1 and logged.stdout == "", f"the password reached a command: {logged.stdout}"
    assert PASSWORD not in (host.read("/var/log/sshd.log") or "")


def test_a_policy_that_skips_the_password_for_sh_runs_nothing(network: SSHNetwork, baseline: str) -> None:
    """sudo -k asks every time unless the policy needs no password for that very command: then
    the guard converge runs first finds the password line instead of its token and stops."""
    host = network.add_host()
    host.add_user("deploy", network.public_key, sudoers="deploy ALL=(ALL) ALL\ndeploy ALL=(ALL) NOPASSWD: /usr/bin/sh, /bin/sh\n")
    host.run(["chpasswd"], input=f"deploy:{PASSWORD}\n")
    host.write("/etc/hosts", f"127.0.0.1 localhost {host.name}\n")
    argv = ["nsenter", "-t", str(network.controller.pid), "-m", "-n", "-u", "--", *network.controller.converge_argv(
        "plan", "--become", baseline, f"-Hdeploy@{host.address}")]

    status, output = _run_on_a_terminal(argv, "sudo password for deploy", PASSWORD)

    assert host.read("/root/pw-ran-as-root") is None
    assert status == 1
    assert "sudo did not read the password it was given; nothing was run" in output, output
    assert PASSWORD not in output
