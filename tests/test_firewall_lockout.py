"""Lockout protection and commit-confirm rollback with the real ufw and firewalld providers, over
real SSH: a baseline that drops converge's own SSH connection is refused and changes nothing;
with --allow-lockout it is applied, the new connection fails, and the host rolls back by itself."""

from __future__ import annotations

import time
from pathlib import Path

from tests.sshnet import SSHNetwork, SSHTestHost
from tests.test_firewalld_host import start_firewalld

UFW_WITHOUT_SSH = '[ufw]\nenabled = true\nexclusive = true\ndefault_incoming = "deny"\n' \
                  '[[ufw.rules]]\naction = "allow"\nport = "80"\nproto = "tcp"\n'
UFW_WITH_SSH = '[ufw]\nenabled = true\ndefault_incoming = "deny"\n' \
               '[[ufw.rules]]\naction = "limit"\nport = "22"\nproto = "tcp"\nfrom = "198.18.0.0/16"\n'
FIREWALLD_WITHOUT_SSH = '[firewalld.zones.public]\nservices = ["https"]\nexclusive = true\n'


def _baseline(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return str(path)


def _ufw_state(host: SSHTestHost) -> tuple[str, str, str]:
    return host.run(["ufw", "status"]).stdout, host.read("/etc/ufw/user.rules") or "", host.run(["iptables", "-S"]).stdout


def test_ufw_refuses_a_lockout_then_rolls_it_back(network: SSHNetwork, tmp_path: Path) -> None:
    host = network.add_host()
    target = f"root@{host.address}"
    without_ssh = _baseline(tmp_path, "without-ssh", UFW_WITHOUT_SSH)

    refused = network.converge("apply", without_ssh, "-H", target, "--yes")
    assert refused.returncode == 1
    assert "would cut converge's own SSH connection from 198.18.0.1 to port 22" in refused.stdout
    assert host.run(["ufw", "status"]).stdout.strip() == "Status: inactive"

    with_ssh = _baseline(tmp_path, "with-ssh", UFW_WITH_SSH)
    applied = network.converge("apply", with_ssh, "-H", target, "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "confirmed over a new connection" in applied.stdout
    before = _ufw_state(host)

    locked_out = network.converge("apply", without_ssh, "-H", target, "--yes", "--allow-lockout", "--confirm-timeout", "10")
    assert locked_out.returncode == 1
    assert "rolled back: the host is reachable again" in locked_out.stdout
    assert _ufw_state(host) == before
    assert network.converge("plan", with_ssh, "-H", target).returncode == 0


def test_firewalld_refuses_a_lockout_then_rolls_it_back(network: SSHNetwork, tmp_path: Path) -> None:
    host = network.add_host()
    start_firewalld(host)
    target = f"root@{host.address}"
    without_ssh = _baseline(tmp_path, "without-ssh", FIREWALLD_WITHOUT_SSH)
    services = ["firewall-cmd", "--zone=public", "--list-services"]
    before = host.run(services).stdout, host.run([*services[:1], "--permanent", *services[1:]]).stdout

    refused = network.converge("apply", without_ssh, "-H", target, "--yes")
    assert refused.returncode == 1
    assert "would cut converge's own SSH connection" in refused.stdout

    locked_out = network.converge("apply", without_ssh, "-H", target, "--yes", "--allow-lockout", "--confirm-timeout", "10")
    assert locked_out.returncode == 1
    assert "firewall-cmd --reload" in locked_out.stdout  # it was applied for real
    assert "rolled back: the host is reachable again" in locked_out.stdout
    assert (host.run(services).stdout, host.run([*services[:1], "--permanent", *services[1:]]).stdout) == before
    assert "ssh" in before[0].split()


def test_a_slow_provider_after_the_firewall_is_not_on_the_watchdogs_clock(network: SSHNetwork, tmp_path: Path) -> None:
    """Security finding 4: the watchdog is confirmed right after the firewall provider. A provider
    applied after it that takes longer than --confirm-timeout (here sysctl, made to take 6 s) must
    neither trigger the restore nor be cut short by it."""
    host = network.add_host()
    target = f"root@{host.address}"
    real = tmp_path / "sysctl.real"
    real.write_bytes(Path("/usr/sbin/sysctl").read_bytes())
    real.chmod(0o755)
    slow = tmp_path / "sysctl-slow"
    # Slow only for converge's own `sysctl -w` (ufw runs sysctl itself when it starts).
    slow.write_text(f'#!/bin/sh\n[ "$1" = -w ] && sleep 6\nexec {real} "$@"\n')
    slow.chmod(0o755)
    host.run(["mount", "--bind", str(slow), "/usr/sbin/sysctl"])  # inside the host's mount namespace only
    baseline = _baseline(tmp_path, "slow", UFW_WITH_SSH + "\n[sysctl]\nnet.ipv4.conf.all.log_martians = 1\n")

    applied = network.converge("apply", baseline, "-H", target, "--yes", "--confirm-timeout", "5")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "ufw: confirmed over a new connection; the watchdog is disarmed" in applied.stdout
    assert "rolled back" not in applied.stdout
    assert host.run(["ufw", "status"]).stdout.startswith("Status: active")
    assert host.sysctl("net.ipv4.conf.all.log_martians") == "1"
    time.sleep(1)  # past the watchdog's deadline: it must be gone for good
    assert host.run(["ufw", "status"]).stdout.startswith("Status: active")
