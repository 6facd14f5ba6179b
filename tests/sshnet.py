"""A network of SSH test hosts: a controller test host, where converge runs, joined by veth pairs
on a bridge to test hosts that each run a real OpenSSH sshd.

Addresses come from 198.18.0.0/15 (RFC 2544, reserved for benchmarking) and exist only inside
these namespaces. The controller's /root/.ssh (keys, config, known_hosts) is its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.testhost import TestHost

PREFIX = "198.18.0"
CONTROLLER_ADDRESS = f"{PREFIX}.1"
SSHD_CONFIG = "/etc/ssh/sshd_config.converge-test"
SSHD_LOG = "/var/log/sshd.log"
SSHD_OPTIONS = """\
ListenAddress {address}
HostKey /etc/ssh/ssh_host_ed25519_key
AuthorizedKeysFile /etc/ssh/authorized_keys/%u
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
LogLevel VERBOSE
PidFile /run/sshd.pid
Subsystem sftp internal-sftp
"""


class SSHTestHost(TestHost):
    """A test host with sshd listening on its own address."""

    address: str
    host_key: str

    def sessions(self) -> int:
        """SSH sessions (exec channels, subsystems) sshd has started so far."""
        return (self.read(SSHD_LOG) or "").count("Starting session:")

    def connections_from(self) -> list[str]:
        log = self.read(SSHD_LOG) or ""
        return [line.split(" from ")[1].split()[0] for line in log.splitlines() if "Connection from " in line]

    def start_sshd(self) -> None:
        self.run(["/usr/sbin/sshd", "-f", SSHD_CONFIG, "-E", SSHD_LOG])
        deadline = time.monotonic() + 10
        while ":22 " not in self.run(["ss", "-Hltn"]).stdout:
            if time.monotonic() > deadline:
                raise AssertionError(f"sshd did not listen in {self.name}: {self.read(SSHD_LOG)}")
            time.sleep(0.02)

    def stop_sshd(self) -> None:
        """Kill this host's sshd and its sessions. Test hosts share the machine's PID namespace,
        so processes are picked by mount namespace, never by name alone (pkill would reach every
        test host's sshd on the machine)."""
        for pid in self.processes():
            try:
                with open(f"/proc/{pid}/comm") as comm:
                    if comm.read().strip() == "sshd":
                        os.kill(pid, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                continue

    def add_user(self, user: str, public_key: str, sudoers: str | None = None) -> None:
        """A login user without a home directory (/home is not private to test hosts)."""
        self.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh", user])
        self.run(["usermod", "-p", "*", user])  # no password, but not a locked account
        self.write(f"/etc/ssh/authorized_keys/{user}", public_key)
        if sudoers:
            self.write(f"/etc/sudoers.d/{user}", sudoers)
            self.run(["chmod", "0440", f"/etc/sudoers.d/{user}"])


class SSHNetwork:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.hosts: list[SSHTestHost] = []
        self.controller = TestHost(workdir / "controller", "controller")
        self.controller.run(["ip", "link", "add", "br0", "type", "bridge"])
        self.controller.run(["ip", "addr", "add", f"{CONTROLLER_ADDRESS}/16", "dev", "br0"])
        self.controller.run(["ip", "link", "set", "br0", "up"])
        self.controller.write("/root/.bashrc", "")
        self.controller.run(["rm", "-rf", "/root/.ssh"])
        self.controller.run(["mkdir", "-m", "0700", "/root/.ssh"])
        self.controller.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/root/.ssh/id_ed25519"])
        self.public_key = self.controller.read("/root/.ssh/id_ed25519.pub") or ""

    def add_host(self, name: str | None = None, *, known: bool = True, shadow_net_sysctls: bool = False) -> SSHTestHost:
        index = len(self.hosts) + 2
        name = name or f"host{index}"
        host = SSHTestHost(self.workdir / name, name, shadow_net_sysctls=shadow_net_sysctls)
        host.address = f"{PREFIX}.{index}"
        link = f"vc{index}"
        subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", str(host.pid)], check=True)
        subprocess.run(["ip", "link", "set", link, "netns", str(self.controller.pid)], check=True)
        self.controller.run(["ip", "link", "set", link, "master", "br0", "up"])
        host.run(["ip", "addr", "add", f"{host.address}/16", "dev", "eth0"])
        host.run(["ip", "link", "set", "eth0", "up"])
        host.write("/root/.bashrc", "")  # the machine's own runs pyenv init: seconds per session
        host.run(["rm", "-f", "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key.pub"])
        host.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/etc/ssh/ssh_host_ed25519_key"])
        host.host_key = " ".join((host.read("/etc/ssh/ssh_host_ed25519_key.pub") or "").split()[:2])
        host.write(SSHD_CONFIG, SSHD_OPTIONS.format(address=host.address))
        host.write("/etc/ssh/authorized_keys/root", self.public_key)
        host.run(["mkdir", "-p", "/run/sshd"])
        host.start_sshd()
        if known:
            self.trust(host)
        self.hosts.append(host)
        return host

    def trust(self, host: SSHTestHost, key: str | None = None) -> None:
        known = self.controller.read("/root/.ssh/known_hosts") or ""
        self.controller.write("/root/.ssh/known_hosts", known + f"{host.address} {key or host.host_key}\n")

    def converge(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.controller.converge(*args)

    def close(self) -> None:
        for host in self.hosts:
            host.close()
        self.controller.close()
