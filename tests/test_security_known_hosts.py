"""Issue 23, finding 5: converge knows every host key OpenSSH knows, and records new ones without
losing anyone's lines.

Before: only the first UserKnownHostsFile was read (a key OpenSSH calls changed was "new"),
GlobalKnownHostsFile never, any marker line broke every connection, parallel trusts lost entries
and rewriting the file dropped its comments.
"""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from converge.hosts.known_hosts import patterns_match
from tests.sshnet import SSHNetwork

BASELINE = "[sysctl]\nnet.ipv4.conf.all.log_martians = 1\n"


@pytest.fixture
def baseline(tmp_path: Path) -> str:
    path = tmp_path / "baseline.toml"
    path.write_text(BASELINE)
    return str(path)


def test_a_key_known_in_the_second_user_file_is_changed_not_new(network: SSHNetwork, baseline: str) -> None:
    host, impostor = network.add_host(known=False), network.add_host(known=False)
    network.controller.write("/root/.ssh/config", "Host *\n  UserKnownHostsFile ~/.ssh/kh1 ~/.ssh/kh2\n")
    network.controller.write("/root/.ssh/kh2", f"# rotated by ops\n{host.address} {impostor.host_key}\n")
    result = network.converge("plan", baseline, "-H", f"root@{host.address}", "--trust-new-host-keys")
    assert result.returncode == 1
    assert "HOST KEY CHANGED" in result.stdout, result.stdout
    assert host.sessions() == 0
    assert network.controller.read("/root/.ssh/kh1") is None  # nothing recorded


def test_the_global_file_with_hashed_names_is_read(network: SSHNetwork, baseline: str) -> None:
    host, impostor = network.add_host(known=False), network.add_host(known=False)
    hashed = paramiko.HostKeys.hash_host(host.address)
    network.controller.write("/etc/ssh/ssh_known_hosts", f"{hashed} {host.host_key}\n")
    assert network.converge("plan", baseline, "-H", f"root@{host.address}").returncode == 2

    network.controller.write("/etc/ssh/ssh_known_hosts", f"{hashed} {impostor.host_key}\n")
    result = network.converge("plan", baseline, "-H", f"root@{host.address}", "--trust-new-host-keys")
    assert result.returncode == 1 and "HOST KEY CHANGED" in result.stdout, result.stdout


def test_marker_lines_load_and_a_revoked_key_is_refused(network: SSHNetwork, baseline: str) -> None:
    host, other = network.add_host(known=False), network.add_host(known=False)
    network.controller.write("/root/.ssh/known_hosts", (
        f"@cert-authority *.example.org {other.host_key}\n"
        f"{host.address} {host.host_key}\n"
    ))
    plan = network.converge("plan", baseline, "-H", f"root@{host.address}")
    assert plan.returncode == 2, plan.stdout

    revoked = network.converge("plan", baseline, "-H", f"root@{other.address}", "--trust-new-host-keys")
    assert revoked.returncode == 2, revoked.stdout  # not revoked yet: trusted and recorded
    known = network.controller.read("/root/.ssh/known_hosts") or ""
    network.controller.write("/root/.ssh/known_hosts", known + f"@revoked * {other.host_key}\n")
    result = network.converge("plan", baseline, "-H", f"root@{other.address}", "--trust-new-host-keys")
    assert result.returncode == 1
    assert "is REVOKED in known_hosts" in result.stdout, result.stdout


def test_parallel_trusts_append_every_key_and_keep_comments(network: SSHNetwork, baseline: str) -> None:
    hosts = [network.add_host(known=False) for _ in range(9)]
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    before = f"# managed by hand: keep this comment\n198.18.9.9 {key}"
    network.controller.write("/root/.ssh/known_hosts", before)  # no final newline, as editors leave it
    targets = [argument for host in hosts for argument in ("-H", f"root@{host.address}")]
    trusted = network.converge("plan", "--json", baseline, *targets, "--trust-new-host-keys")
    assert trusted.returncode == 2, trusted.stdout
    known = network.controller.read("/root/.ssh/known_hosts") or ""
    assert known.startswith(before + "\n")
    assert sorted(known.splitlines()[2:]) == sorted(f"{host.address} {host.host_key}" for host in hosts)
    assert network.converge("plan", baseline, *targets).returncode == 2  # all nine recorded


def test_host_patterns_follow_openssh() -> None:
    assert patterns_match("[198.18.0.2]:2222", "[198.18.0.2]:2222")
    assert not patterns_match("198.18.0.2", "[198.18.0.2]:2222")
    assert not patterns_match("[198.18.0.2]:2222", "2")  # brackets are literal, not a character class
    assert patterns_match("web?.example.org,db1", "web1.example.org")
    assert not patterns_match("*.example.org,!web1.example.org", "web1.example.org")
    assert patterns_match(paramiko.HostKeys.hash_host("[web1]:2222"), "[web1]:2222")
    assert not patterns_match(paramiko.HostKeys.hash_host("web1"), "web2")
