"""A test host whose whole root is disposable: packages can be installed and removed for real.

In a private mount namespace (and its own network and UTS namespaces), a tmpfs holds the writable
layer of an overlay whose lower layer is the machine's `/`; `proc`, `/dev` and `/sys` (rbind) and a
tmpfs `/run` are mounted in it, and the host's processes run chrooted there. Whatever dpkg, apt or
converge write (`/usr`, `/var/lib/dpkg`, `/etc/apt`) lands in the tmpfs, gone when the host is
closed; the machine's own packages are never touched. The worktree under test is bind-mounted at
its own path, so converge runs from it and a recorded case lands in it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

WORKTREE = Path(__file__).resolve().parent.parent

SETUP = r"""
set -eu
scratch="$1"; worktree="$2"; hostname "$3"
mount -t tmpfs converge-rootfs "$scratch"
mkdir -p "$scratch/up" "$scratch/work" "$scratch/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$scratch/up,workdir=$scratch/work" "$scratch/root"
root="$scratch/root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
mount -t tmpfs tmpfs "$root/run"
mount --bind "$worktree" "$root$worktree"
ip link set lo up
# `ready` from inside the chroot: a command entering the host before it would run outside it.
exec chroot "$root" sh -c 'echo ready; exec sleep infinity'
"""

ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root"}


class RootHost:
    """One host with a disposable root; `run` executes a command inside its chroot."""

    __test__ = False

    def __init__(self, state_dir: Path, name: str = "roothost") -> None:
        scratch = state_dir / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._holder = subprocess.Popen(
            ["unshare", "--mount", "--net", "--uts", "--propagation", "private",
             "sh", "-c", SETUP, "rootfs-setup", str(scratch), str(WORKTREE), name],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )
        assert self._holder.stdout is not None
        if self._holder.stdout.readline().strip() != "ready":
            self._holder.kill()
            raise RuntimeError(f"root host {name} failed to start (exit {self._holder.wait()})")

    def run(self, argv: list[str], *, check: bool = True, input: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            ["nsenter", "-t", str(self._holder.pid), "-m", "-n", "-u", "-r", "-w", "--", *argv],
            capture_output=True, text=True, input=input, env={**ENV, **(env or {})}, check=False,
        )
        if check and completed.returncode != 0:
            raise AssertionError(f"{argv} failed in {self.name} ({completed.returncode}): {completed.stderr}{completed.stdout}")
        return completed

    def sh(self, script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["sh", "-c", script, "sh", *args], check=check)

    def converge(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run([sys.executable, "-m", "converge", *args], check=False)

    def read(self, path: str) -> str | None:
        completed = self.run(["cat", path], check=False)
        return completed.stdout if completed.returncode == 0 else None

    def write(self, path: str, content: str) -> None:
        self.run(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "write", path], input=content)

    def popen(self, argv: list[str]) -> subprocess.Popen[str]:
        """A long-running process inside the host (a lock holder); kill it with `close`."""
        return subprocess.Popen(["nsenter", "-t", str(self._holder.pid), "-m", "-n", "-u", "-r", "-w", "--", *argv],
                                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=ENV)

    def processes(self) -> list[int]:
        try:
            namespace = os.readlink(f"/proc/{self._holder.pid}/ns/mnt")
        except OSError:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/ns/mnt") == namespace:
                        found.append(int(entry))
                except OSError:
                    continue
        return found

    def close(self) -> None:
        """Kill everything started inside the host; its mounts (and the tmpfs root) go with them."""
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        self._holder.wait()
