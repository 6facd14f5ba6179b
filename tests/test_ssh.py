"""converge over real SSH: test hosts running OpenSSH sshd, converge running in a controller."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from converge.providers.sysctl import DROP_IN, parse_sysctl_conf
from tests.sshnet import SSHNetwork, SSHTestHost

BASELINE = """\
[sysctl]
net.ipv4.conf.all.accept_redirects = 0
net.ipv4.conf.all.log_martians = 1
kernel.kptr_restrict = 2
"""
WANTED = {"net.ipv4.conf.all.accept_redirects": "0", "net.ipv4.conf.all.log_martians": "1", "kernel.kptr_restrict": "2"}


@pytest.fixture
def baseline(tmp_path: Path) -> str:
    path = tmp_path / "baseline.toml"
    path.write_text(BASELINE)
    return str(path)


def _targets(hosts: list[SSHTestHost]) -> list[str]:
    return [argument for host in hosts for argument in ("-H", f"ssh://root@{host.address}")]


def _assert_converged(host: SSHTestHost) -> None:
    assert {key: host.sysctl(key) for key in WANTED} == WANTED
    assert parse_sysctl_conf(host.read(DROP_IN) or "") == WANTED


def test_plan_apply_plan_on_five_hosts_in_parallel_with_one_session_per_plan(network: SSHNetwork, baseline: str) -> None:
    hosts = [network.add_host() for _ in range(5)]

    plan = network.converge("plan", baseline, "--json", *_targets(hosts))
    assert plan.returncode == 2, plan.stderr
    document = json.loads(plan.stdout)
    assert [entry["host"] for entry in document["hosts"]] == [host.address for host in hosts]
    assert all(len(entry["changes"]) == 3 for entry in document["hosts"])
    # One exec channel gathers every read of a plan (the budget is 2).
    assert [host.sessions() for host in hosts] == [1] * 5

    apply = network.converge("apply", "--yes", baseline, *_targets(hosts))
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert apply.stdout.count(": converged") == 5
    for host in hosts:
        _assert_converged(host)

    again = network.converge("plan", baseline, *_targets(hosts))
    assert again.returncode == 0, again.stdout
    assert again.stdout.count("in sync") == 5


def test_unknown_host_key_is_refused_until_trusted_explicitly(network: SSHNetwork, baseline: str) -> None:
    host = network.add_host(known=False)
    refused = network.converge("plan", baseline, "-H", f"root@{host.address}")
    assert refused.returncode == 1
    assert "unknown host key ssh-ed25519" in refused.stdout and "--trust-new-host-keys" in refused.stdout
    assert host.sessions() == 0

    trusted = network.converge("plan", baseline, "-H", f"root@{host.address}", "--trust-new-host-keys")
    assert trusted.returncode == 2, trusted.stdout
    known_hosts = network.controller.read("/root/.ssh/known_hosts") or ""
    assert host.host_key.split()[1] in known_hosts
    assert network.converge("plan", baseline, "-H", f"root@{host.address}").returncode == 2  # recorded


def test_changed_host_key_is_refused_loudly(network: SSHNetwork, baseline: str) -> None:
    host = network.add_host(known=False)
    impostor = network.add_host(known=False)
    network.trust(host, impostor.host_key)  # known_hosts holds another key for this address
    result = network.converge("plan", baseline, "-H", f"root@{host.address}", "--trust-new-host-keys")
    assert result.returncode == 1
    assert "HOST KEY CHANGED" in result.stdout
    assert host.sessions() == 0


def test_an_unreachable_host_is_reported_while_the_others_converge(network: SSHNetwork, baseline: str) -> None:
    hosts = [network.add_host() for _ in range(2)]
    unreachable = "root@198.18.0.250"  # on the bridge's subnet, but nobody answers there
    apply = network.converge("apply", "--yes", "--json", "--timeout", "1", baseline, *_targets(hosts), "-H", unreachable)
    assert apply.returncode == 1
    results = {entry["target"]: entry for entry in json.loads(apply.stdout)["hosts"]}
    assert results[unreachable]["status"] == "error"
    assert "198.18.0.250" in results[unreachable]["error"]
    for host in hosts:
        assert results[f"ssh://root@{host.address}"]["converged"] is True
        _assert_converged(host)


def test_refused_connection_is_one_clear_error(network: SSHNetwork, baseline: str) -> None:
    host = network.add_host()
    host.stop_sshd()
    plan = network.converge("plan", baseline, "--json", "-H", f"root@{host.address}")
    assert plan.returncode == 1
    assert json.loads(plan.stdout)["hosts"][0]["error"] == f"root@{host.address}:22: connection refused"


def test_non_root_user_with_sudo_become(network: SSHNetwork, baseline: str) -> None:
    host = network.add_host()
    host.add_user("deploy", network.public_key, sudoers="deploy ALL=(ALL) NOPASSWD: ALL\n")
    host.write("/etc/hosts", f"127.0.0.1 localhost {host.name}\n")  # sudo resolves its own host name

    without = network.converge("apply", "--yes", baseline, "-H", f"deploy@{host.address}")
    assert without.returncode == 1
    assert "Permission denied" in without.stdout or "permission denied" in without.stdout.lower()
    assert host.read(DROP_IN) is None

    become = network.converge("apply", "--yes", "--become", baseline, "-H", f"deploy@{host.address}")
    assert become.returncode == 0, become.stdout + become.stderr
    _assert_converged(host)
    assert host.run(["stat", "-c", "%U:%G %a", DROP_IN]).stdout.strip() == "root:root 644"


def test_sudo_without_rights_is_refused_clearly(network: SSHNetwork, baseline: str) -> None:
    host = network.add_host()
    host.add_user("guest", network.public_key)
    host.write("/etc/hosts", f"127.0.0.1 localhost {host.name}\n")
    plan = network.converge("plan", "--json", "--become", baseline, "-H", f"guest@{host.address}")
    assert plan.returncode == 1
    assert "sudo refused" in json.loads(plan.stdout)["hosts"][0]["error"]


def test_ssh_config_alias_and_proxy_jump(network: SSHNetwork, baseline: str) -> None:
    bastion, web = network.add_host("bastion"), network.add_host("web")
    network.controller.write("/root/.ssh/config", (
        f"Host bastion\n  HostName {bastion.address}\n  User root\n"
        f"Host web1\n  HostName {web.address}\n  User root\n  ProxyJump bastion\n"
    ))
    apply = network.converge("apply", "--yes", baseline, "-H", "web1")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "web1: converged" in apply.stdout
    _assert_converged(web)
    # The target saw its connections come from the bastion, not from the controller.
    assert set(web.connections_from()) == {bastion.address}


def test_proxy_jump_chain_from_an_included_file(network: SSHNetwork, baseline: str) -> None:
    """`ProxyJump a,b` goes through every hop in order (as `ssh -J a,b`), and `Include` is read as
    OpenSSH reads it (paramiko's parser ignores it): issue 16's ProxyJump and Include findings."""
    first, second, web = network.add_host("hop1"), network.add_host("hop2"), network.add_host("web")
    network.controller.write("/root/.ssh/config", "Include config.d/*.conf\n")
    network.controller.write("/root/.ssh/config.d/lab.conf", (
        f"Host hop1\n  HostName {first.address}\n  User root\n"
        f"Host hop2\n  HostName {second.address}\n  User root\n"
        f"Host web1\n  HostName {web.address}\n  User root\n  ProxyJump hop1,hop2\n"
    ))
    apply = network.converge("apply", "--yes", baseline, "-H", "web1")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    _assert_converged(web)
    assert set(web.connections_from()) == {second.address}
    assert set(second.connections_from()) == {first.address}
    assert set(first.connections_from()) == {"198.18.0.1"}


def test_inventory_groups_and_limit(network: SSHNetwork, baseline: str, tmp_path: Path) -> None:
    web1, web2, db1 = (network.add_host(name) for name in ("web1", "web2", "db1"))
    (tmp_path / "other.toml").write_text("[sysctl]\nnet.ipv4.conf.all.log_martians = 1\n")
    inventory = tmp_path / "hosts.toml"
    inventory.write_text(
        f'[hosts.web1]\ntarget = "root@{web1.address}"\n'
        f'[hosts.web2]\ntarget = "root@{web2.address}"\n'
        f'[hosts.db1]\ntarget = "root@{db1.address}"\nbaseline = "other.toml"\n'
        f'[groups.web]\nhosts = ["web1", "web2"]\nbaseline = "{baseline}"\n'
    )
    limited = network.converge("plan", "--json", "-i", str(inventory), "--limit", "web")
    assert limited.returncode == 2, limited.stderr
    assert [entry["host"] for entry in json.loads(limited.stdout)["hosts"]] == ["web1", "web2"]
    everyone = json.loads(network.converge("plan", "--json", "-i", str(inventory)).stdout)["hosts"]
    assert {entry["host"]: len(entry["changes"]) for entry in everyone} == {"web1": 3, "web2": 3, "db1": 1}
    nobody = network.converge("plan", "-i", str(inventory), "--limit", "mail*")
    assert nobody.returncode == 1 and "matches no host" in nobody.stderr


def test_bad_inventory_names_file_line_and_key(network: SSHNetwork, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.toml"
    inventory.write_text('[hosts.web1]\ntarget = "root@web1"\n[groups.web]\nhosts = ["web1", "web9"]\n')
    result = network.converge("plan", "-i", str(inventory))
    assert result.returncode == 1
    assert result.stderr.startswith(f'error: {inventory}:4: groups.web.hosts[1]: no host "web9"'.replace('"', "'"))


def test_connection_dropped_mid_apply_leaves_files_whole_and_a_rerun_converges(network: SSHNetwork, baseline: str) -> None:
    host = network.add_host()
    old = "# before\nkernel.kptr_restrict = 1\n"
    host.write(DROP_IN, old)
    # A slow sysctl keeps the apply busy on the host while its connection is cut.
    host.write("/usr/local/sbin/sysctl", "#!/bin/sh\ntouch /run/sysctl-called\nsleep 3\nexec /usr/sbin/sysctl \"$@\"\n")
    host.run(["chmod", "0755", "/usr/local/sbin/sysctl"])
    apply = subprocess.Popen(
        ["nsenter", "-t", str(network.controller.pid), "-m", "-n", "-u", "--",
         *network.controller.converge_argv("apply", "--yes", baseline, "-H", f"root@{host.address}")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 10
    while host.read("/run/sysctl-called") is None:
        assert time.monotonic() < deadline, "the apply never reached the host"
        time.sleep(0.05)
    host.stop_sshd()  # kills the listener and every session: the connection drops mid-apply
    stdout, _ = apply.communicate(timeout=30)
    assert apply.returncode == 1
    assert "connection lost" in stdout
    assert host.read(DROP_IN) == old  # the old file, whole
    assert not [path for path in host.changed_files() if path.endswith(".converge")]  # no temporary left

    host.run(["rm", "/usr/local/sbin/sysctl"])
    host.start_sshd()
    rerun = network.converge("apply", "--yes", baseline, "-H", f"root@{host.address}")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    _assert_converged(host)


def _run_on_a_terminal(argv: list[str], answer_after: str, answer: str, timeout: float = 60) -> tuple[int, str]:
    """Run argv with a pseudo-terminal as its stdin/stdout; type `answer` once `answer_after` shows."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: exec, never return into pytest
        os.execvp(argv[0], argv)
    output, answered = b"", False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([terminal], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        if not answered and answer_after.encode() in output:
            os.write(terminal, answer.encode() + b"\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_become_asks_the_sudo_password_once_on_a_terminal(network: SSHNetwork, baseline: str) -> None:
    hosts = [network.add_host() for _ in range(2)]
    for host in hosts:
        host.add_user("deploy", network.public_key, sudoers="deploy ALL=(ALL) ALL\n")
        host.run(["chpasswd"], input="deploy:s3cret-Pass\n")
        host.write("/etc/hosts", f"127.0.0.1 localhost {host.name}\n")
    argv = ["nsenter", "-t", str(network.controller.pid), "-m", "-n", "-u", "--", *network.controller.converge_argv(
        "apply", "--yes", "--become", baseline, *(f"-Hdeploy@{host.address}" for host in hosts))]
    status, output = _run_on_a_terminal(argv, "sudo password for deploy", "s3cret-Pass")
    assert status == 0, output
    assert output.count("sudo password for deploy") == 1  # asked once for both hosts
    assert "s3cret-Pass" not in output  # never echoed
    for host in hosts:
        _assert_converged(host)
