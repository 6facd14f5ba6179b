"""The kernel seam: everything that needs SELinux loaded in the running kernel, and nothing else.

SELinux's runtime lives in selinuxfs. Its `enforce` file holds 1 or 0, and each file under
`booleans/` holds "<current> <pending>" (the kernel's sel_read_bool). Without the mount, SELinux
is disabled in the running kernel: only the persistent state can change until a reboot. Runtime
booleans need no writer here: `setsebool -P` sets runtime and persistent values together.

Relabelling is the other kernel part: `restorecon` labels by the loaded policy and does nothing when
the kernel has no SELinux (an image, a container, a test host), while `setfiles`, the same labelling
code given the policy's `file_contexts` (and the `.local` beside it), writes `security.selinux`
whatever the kernel has. So files are checked and fixed with restorecon where the kernel has
SELinux, and with setfiles where it has not.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from converge.provider import Operation, ParseError, Read, ReadFile, Run, RunCommand

SELINUXFS = "/sys/fs/selinux"
ENFORCE = f"{SELINUXFS}/enforce"
Mode = Literal["enforcing", "permissive", "disabled"]


@dataclass(frozen=True)
class KernelState:
    mode: Mode
    booleans: dict[str, bool]


def boolean_path(name: str) -> str:
    return f"{SELINUXFS}/booleans/{name}"


def kernel_reads(booleans: Iterable[str]) -> list[Read]:
    """The runtime mode and the declared booleans only: a policy has about 300, and every file a
    remote read returns costs processes on the host (measured: 30 s of a plan in the TCG guest)."""
    return [ReadFile(ENFORCE), *(ReadFile(boolean_path(name)) for name in booleans)]


def parse_kernel_state(enforce: str | None, boolean_files: Mapping[str, str]) -> KernelState:
    """The state from selinuxfs's files (`enforce` None: not mounted, SELinux is off)."""
    if enforce is None:
        return KernelState("disabled", {})
    if enforce.strip() not in ("0", "1"):
        raise ParseError(ENFORCE, "not 0 or 1", enforce)
    booleans = {}
    for path, text in boolean_files.items():
        if not text.split() or text.split()[0] not in ("0", "1"):
            raise ParseError(path, "not `<current> <pending>`", text)
        booleans[os.path.basename(path)] = text.split()[0] == "1"
    return KernelState("enforcing" if enforce.strip() == "1" else "permissive", booleans)


def runtime_mode_operations(kernel: KernelState, mode: Mode) -> list[Operation]:
    """`setenforce` to `mode`, undone by `setenforce` back; nothing when the kernel has no SELinux
    (or `mode` is disabled, which only a reboot can do): the config then says it for the next boot."""
    if "disabled" in (kernel.mode, mode) or kernel.mode == mode:
        return []
    back = Run(("setenforce", "1" if kernel.mode == "enforcing" else "0"))
    return [Run(("setenforce", "1" if mode == "enforcing" else "0"), says=f"runtime mode set to {mode} (setenforce)",
                undo=(back,))]


def _file_contexts(policy: str) -> str:
    return f"/etc/selinux/{policy}/contexts/files/file_contexts"


def relabel_check(policy: str | None, roots: Iterable[str]) -> RunCommand:
    """What a relabel of `roots` would change (`Would relabel PATH from OLD to NEW` lines), changing
    nothing: `restorecon -n` with an SELinux kernel, else `setfiles -n` with the policy's file
    contexts (`policy`, else the config's SELINUXTYPE, else libselinux's default)."""
    script = (f'if [ -e {ENFORCE} ]; then shift; exec restorecon -n -R -v -i "$@"; fi; '
              'policy=${1:-$(sed -n "s/^SELINUXTYPE=//p" /etc/selinux/config | tail -n 1)}; shift; '
              'exec setfiles -n -v -i "/etc/selinux/${policy:-targeted}/contexts/files/file_contexts" "$@"')
    return RunCommand(("sh", "-c", script, "relabel-check", policy or "", *roots))


def relabel_argv(kernel: KernelState, policy: str, roots: Iterable[str]) -> tuple[str, ...]:
    """The relabel itself, by the same tool relabel_check asked."""
    if kernel.mode != "disabled":
        return ("restorecon", "-R", "-v", "-i", *roots)
    return ("setfiles", "-v", "-i", _file_contexts(policy), *roots)
