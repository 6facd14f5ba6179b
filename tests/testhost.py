"""Disposable test hosts made of Linux namespaces.

A test host is a process in its own network, mount and UTS namespaces. Inside it /etc, /var/lib,
/var/log, /run and /root are overlays whose writable layer is a directory of the test, so the
host can be changed for real (and what it changed can be listed) while the machine's own files
stay untouched. `net.*` sysctls belong to the network namespace; the global sysctl trees
(kernel, fs, vm, ...) are shadowed by private copies bind-mounted over /proc/sys, so a write
there lands in the copy and never reaches the machine's kernel.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

OVERLAID = ("etc", "var/lib", "var/log", "run", "root")
# Global (not per-namespace) sysctl trees: a test host must never write the real ones.
SHADOWED_SYSCTL = ("abi", "debug", "dev", "fs", "kernel", "user", "vm")

SETUP = r"""
set -eu
state="$1"; hostname "$2"
for dir in $OVERLAID; do
    layer="$state/overlay/$(echo "$dir" | tr / _)"
    mkdir -p "$layer/upper" "$layer/work"
    mount -t overlay overlay -o "lowerdir=/$dir,upperdir=$layer/upper,workdir=$layer/work" "/$dir"
done
# The copies live on a tmpfs: its directories list "." and ".." first, as /proc/sys does. procps'
# `sysctl -a` skips a directory's first two entries unread, so on ext4 (hash order) it would skip
# real keys and recurse into ".." forever (abi/../abi/...).
mkdir -p "$state/sysctl"; mount -t tmpfs converge-sysctl "$state/sysctl"
for tree in $SHADOWED; do
    [ -d "/proc/sys/$tree" ] || continue
    mkdir -p "$state/sysctl/$tree"
    cp -r "/proc/sys/$tree/." "$state/sysctl/$tree/" 2>/dev/null || true
    mount --bind "$state/sysctl/$tree" "/proc/sys/$tree"
done
if [ -n "${NET_COPY:-}" ]; then
    mkdir -p "$state/sysctl/net"; cp -r "$NET_COPY/." "$state/sysctl/net/"
    mount --bind "$state/sysctl/net" /proc/sys/net
fi
ip link set lo up
echo ready
exec sleep infinity
"""


class TestHost:
    """One disposable host; `run` executes a command inside it."""

    __test__ = False  # not a pytest test class

    def __init__(self, state_dir: Path, name: str = "testhost", *, shadow_net_sysctls: bool = False) -> None:
        """`shadow_net_sysctls`: replace /proc/sys/net too, by a copy of the machine's own (root
        namespace) tree, for baselines naming keys a new network namespace lacks, such as
        net.core.bpf_jit_harden (initial namespace only); writes then land in the copy."""
        self.state_dir = state_dir
        self.name = name
        state_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OVERLAID": " ".join(OVERLAID), "SHADOWED": " ".join(SHADOWED_SYSCTL)}
        if shadow_net_sysctls:
            net_copy = state_dir / "sysctl-net"
            subprocess.run(["cp", "-r", "/proc/sys/net/.", str(net_copy)], capture_output=True, check=False)
            env["NET_COPY"] = str(net_copy)
        self._holder = subprocess.Popen(
            ["unshare", "--mount", "--net", "--uts", "--propagation", "private",
             "sh", "-c", SETUP, "testhost-setup", str(state_dir), name],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
        )
        assert self._holder.stdout is not None
        if self._holder.stdout.readline().strip() != "ready":
            self._holder.kill()
            raise RuntimeError(f"test host {name} failed to start (exit {self._holder.wait()})")

    @property
    def pid(self) -> int:
        return self._holder.pid

    def run(self, argv: list[str], *, check: bool = True, input: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "-n", "-u", "--", *argv],
            capture_output=True, text=True, input=input, env=env, check=False,
        )
        if check and completed.returncode != 0:
            raise AssertionError(f"{argv} failed in {self.name} ({completed.returncode}): {completed.stderr}")
        return completed

    @staticmethod
    def converge_argv(*args: str) -> list[str]:
        """The converge CLI, run by the interpreter running the tests."""
        return [sys.executable, "-m", "converge", *args]

    def converge(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the converge CLI inside the host."""
        return self.run(self.converge_argv(*args), check=False, env=env)

    def read(self, path: str) -> str | None:
        completed = self.run(["cat", path], check=False)
        return completed.stdout if completed.returncode == 0 else None

    def write(self, path: str, content: str) -> None:
        self.run(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "write", path], input=content)

    def sysctl(self, key: str) -> str:
        text = self.read("/proc/sys/" + key.replace(".", "/"))
        assert text is not None, key
        return " ".join(text.split())

    def set_sysctl(self, key: str, value: str) -> None:
        self.write("/proc/sys/" + key.replace(".", "/"), value + "\n")

    def changed_files(self) -> list[str]:
        """Paths the host has written under its overlaid directories, as seen inside it; converge's
        apply lock (/run/converge, runtime state every apply takes) is not a change of the host."""
        changed = []
        for directory in OVERLAID:
            upper = self.state_dir / "overlay" / directory.replace("/", "_") / "upper"
            changed += [f"/{directory}/{path.relative_to(upper)}" for path in upper.rglob("*") if not path.is_dir()]
        return sorted(path for path in changed if not path.startswith("/run/converge/"))

    def processes(self) -> list[int]:
        """Every process living in this host's mount namespace (daemons a test started too)."""
        return processes_sharing_mounts_with(self.pid)

    def close(self) -> None:
        """Kill everything started inside the host; its namespaces and mounts go with them."""
        kill_all(self.processes())
        self._holder.wait()


def processes_sharing_mounts_with(pid: int) -> list[int]:
    """The processes in `pid`'s mount namespace: a test host's, however they were started."""
    try:
        namespace = os.readlink(f"/proc/{pid}/ns/mnt")
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


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
