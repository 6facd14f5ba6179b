"""A qemu guest running Debian's kernel over this machine's root, with an sshd on a 127.0.0.1 port.

The guest boots under TCG (KVM guests hang on these machines), mounts the machine's root read-only
over 9p under a tmpfs overlay (the kernel package's modules over a second 9p share as its
/lib/modules/VERSION), and starts sshd with keys generated for the session. converge
reaches it like any remote host through a private HOME whose ~/.ssh holds the key, a config for
the VM's alias and a known_hosts entry for its host key.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import paramiko

from tests.vm.image import Image

GUEST_BOOT = Path(__file__).with_name("guest-boot.sh")
READY = "converge-vm: sshd started"
BOOT_TIMEOUT = 240.0  # seconds; boots take 15-30 s under TCG, longer on a busy CI runner
SSHD_CONFIG = """\
HostKey /etc/ssh/converge-vm/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
UseDNS no
LogLevel VERBOSE
PidFile /run/sshd.pid
Subsystem sftp internal-sftp
"""


class MAC(Enum):
    """The kernel arguments that make each LSM the active one."""

    APPARMOR = "apparmor=1 security=apparmor"
    SELINUX = "security=selinux selinux=1 enforcing=0"


@dataclass(frozen=True)
class GuestResult:
    returncode: int
    stdout: str
    stderr: str


class VirtualMachine:
    """One booted guest. `run` executes a shell script over the session's SSH connection."""

    def __init__(self, image: Image, mac: MAC, state_dir: Path) -> None:
        self.mac = mac
        self.state_dir = state_dir
        self.alias = f"converge-vm-{mac.name.lower()}"
        self.home = state_dir / "home"  # HOME for converge: ~/.ssh is the VM's alone
        self.share = state_dir / "share"  # read-only in the guest at /converge-vm
        self.console_log = state_dir / "console.log"
        self.port = 0
        self._client: paramiko.SSHClient | None = None
        self._prepare_share()
        self._qemu = self._launch(image)
        try:
            self._wait_until_ready()
            self._client = self._connect()
        except BaseException:
            self.close()
            raise

    @property
    def key(self) -> Path:
        return self.home / ".ssh/id_ed25519"

    @property
    def target(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"

    def _prepare_share(self) -> None:
        ssh_dir = self.home / ".ssh"
        ssh_dir.mkdir(parents=True, mode=0o700)
        self.share.mkdir(mode=0o700)
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
        subprocess.run([*keygen, "-C", "converge-vm-client", "-f", str(self.key)], check=True)
        subprocess.run([*keygen, "-C", self.alias, "-f", str(self.share / "ssh_host_ed25519_key")], check=True)
        shutil.copy(self.key.with_suffix(".pub"), self.share / "authorized_keys")
        (self.share / "sshd_config").write_text(SSHD_CONFIG)
        shutil.copy(GUEST_BOOT, self.share / "boot.sh")

    def _write_client_config(self) -> None:
        host_key = (self.share / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        ssh_dir = self.home / ".ssh"
        (ssh_dir / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {' '.join(host_key)}\n")
        (ssh_dir / "config").write_text(
            f"Host {self.alias}\n    HostName 127.0.0.1\n    Port {self.port}\n    User root\n"
            f"    IdentityFile {self.key}\n"
        )

    def _launch(self, image: Image) -> subprocess.Popen[bytes]:
        # hostfwd needs a fixed port: take one the kernel says is free right now.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._write_client_config()
        argv = [
            # A test run killed outright must not leave a guest spinning on a shared machine.
            "setpriv", "--pdeathsig", "TERM", "--",
            "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "1",
            "-nodefaults", "-display", "none", "-no-reboot", "-serial", f"file:{self.console_log}",
            "-kernel", str(image.kernel), "-initrd", str(image.initramfs),
            "-append", f"console=ttyS0 panic=-1 loglevel=4 {self.mac.value}",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={self.share},mount_tag=session,security_model=none,readonly=on",
            "-virtfs", f"local,path={image.modules},mount_tag=modules,security_model=none,readonly=on",
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
            "-device", "virtio-net-pci,netdev=net0",
        ]
        with (self.state_dir / "qemu.log").open("wb") as qemu_log:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=qemu_log)

    def console(self) -> str:
        return self.console_log.read_text(errors="replace") if self.console_log.exists() else ""

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while READY not in self.console():
            if self._qemu.poll() is not None:
                raise RuntimeError(f"{self.alias}: qemu exited ({self._qemu.returncode}) during boot: "
                                   f"{(self.state_dir / 'qemu.log').read_text()}\n{self.console()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.alias}: no sshd after {BOOT_TIMEOUT:g} s:\n{self.console()[-3000:]}")
            time.sleep(0.2)

    def _connect(self) -> paramiko.SSHClient:
        # qemu accepts on the forwarded port before the guest's sshd is reachable, and resets such
        # connections: retry those, never a refused key or authentication.
        deadline = time.monotonic() + 60
        while True:
            client = paramiko.SSHClient()
            client.load_host_keys(str(self.home / ".ssh/known_hosts"))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                client.connect("127.0.0.1", port=self.port, username="root", key_filename=str(self.key),
                               look_for_keys=False, allow_agent=False, timeout=30, banner_timeout=30, auth_timeout=30)
                return client
            except (paramiko.SSHException, ConnectionError, EOFError) as error:
                client.close()
                if isinstance(error, paramiko.AuthenticationException | paramiko.BadHostKeyException):
                    raise
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.alias}: sshd unreachable: {error}\n{self.console()[-3000:]}") from error
                time.sleep(0.5)

    def run(self, script: str, *, check: bool = True) -> GuestResult:
        """Run a POSIX sh script in the guest in one SSH session: batch what you can, sessions are slow."""
        assert self._client is not None
        stdin, stdout, stderr = self._client.exec_command("sh -s", timeout=300)
        stdin.write(script.encode())
        stdin.channel.shutdown_write()
        result = GuestResult(stdout.channel.recv_exit_status(), stdout.read().decode(), stderr.read().decode())
        if check and result.returncode != 0:
            raise AssertionError(f"{self.alias}: script failed ({result.returncode}):\n{script}\n{result.stderr}")
        return result

    def converge(self, *args: str, host: str | None = None) -> subprocess.CompletedProcess[str]:
        """converge on this machine, reaching the VM over SSH (`-H` defaults to the VM's ssh:// target)."""
        environment = {**os.environ, "HOME": str(self.home), "NO_COLOR": "1"}
        target = ["-H", host or self.target] if args and args[0] in ("plan", "apply", "suggest") else []
        return subprocess.run([sys.executable, "-m", "converge", *args, *target],
                              capture_output=True, text=True, env=environment, check=False)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._qemu.poll() is None:
            # The guest keeps nothing: its writes live in its tmpfs. Power it off from outside.
            self._qemu.terminate()
            try:
                self._qemu.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._qemu.kill()
                self._qemu.wait()
