"""The kernel seam: everything that needs SELinux loaded in the running kernel, and nothing else.

SELinux's runtime lives in selinuxfs. Its `enforce` file holds 1 or 0, and each file under
`booleans/` holds "<current> <pending>" (the kernel's sel_read_bool). Without the mount, SELinux
is disabled in the running kernel: only the persistent state can change until a reboot. Runtime
booleans need no writer here: `setsebool -P` sets runtime and persistent values together.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from converge.hosts import Host
from converge.reads import Read, ReadFile

SELINUXFS = "/sys/fs/selinux"

@dataclass(frozen=True)
class KernelState:
    mode: Literal["enforcing", "permissive", "disabled"]
    booleans: dict[str, bool]


def boolean_path(name: str) -> str:
    return f"{SELINUXFS}/booleans/{name}"


def kernel_reads(booleans: Iterable[str]) -> list[Read]:
    """The runtime mode and the declared booleans only: a policy has about 300, and every file a
    remote read returns costs processes on the host (measured: 30 s of a plan in the TCG guest)."""
    return [ReadFile(f"{SELINUXFS}/enforce"), *(ReadFile(boolean_path(name)) for name in booleans)]


def parse_kernel_state(enforce: str | None, boolean_files: Mapping[str, str]) -> KernelState:
    if enforce is None:
        return KernelState("disabled", {})
    booleans = {os.path.basename(path): text.split()[0] == "1" for path, text in boolean_files.items() if text.split()}
    return KernelState("enforcing" if enforce.strip() == "1" else "permissive", booleans)


def set_runtime_mode(host: Host, mode: str) -> str:
    """setenforce, which fails (and so does apply) when the kernel cannot take it."""
    host.run(["setenforce", "1" if mode == "enforcing" else "0"])
    return f"runtime mode set to {mode} (setenforce)"
