"""The kernel seam: everything about the running kernel's modules, and the only code that acts on them.

What is loaded comes from /proc/modules. Whether this host may load and unload modules at all is
decided from four reads, all of which must agree; otherwise the runtime part of the provider is
not applicable here (a note in the plan, never an error), and only the modprobe.d drop-in is managed:

- /proc/modules exists: the kernel has module support (a kernel built without it has none);
- /proc/sys/kernel/modules_disabled is 0: once set to 1, nothing loads or unloads until a reboot;
- CAP_SYS_MODULE is in this process's effective capabilities (/proc/self/status `CapEff`):
  containers drop it, and init_module/delete_module refuse without it;
- this process shares the network namespace of PID 1 and the initial user namespace: a container,
  or a sandbox sharing the machine's kernel (converge's own namespace test hosts), never unloads
  what belongs to the machine underneath it.

Unloading is `modprobe -r NAME`, planned only when the module's refcount is 0 once the modules
using it that are also being unloaded are gone (never `-f`). The initramfs is read by
INITRAMFS_SCRIPT, a fixed script (no baseline data in it) that finds the running kernel's image.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from converge.provider import Facts, ProviderError, Read, ReadFile, Run, RunCommand
from converge.providers.kmod.parse import Initramfs, LoadedModule, parse_initramfs_listing, parse_proc_modules

PROC_MODULES = "/proc/modules"
MODULES_DISABLED = "/proc/sys/kernel/modules_disabled"
STATUS = "/proc/self/status"
UID_MAP = "/proc/self/uid_map"
NAMESPACES = RunCommand(("readlink", "/proc/self/ns/net", "/proc/1/ns/net"))
CAP_SYS_MODULE = 16
INITIAL_UID_MAP = ["0", "0", "4294967295"]

INITRAMFS_SCRIPT = r"""
kernel=$(uname -r)
for image in "/boot/initrd.img-$kernel" "/boot/initramfs-$kernel.img"; do
    [ -f "$image" ] || continue
    echo "kernel $kernel"
    echo "image $image"
    case "$image" in
        */initrd.img-*) tool=update-initramfs; lister=lsinitramfs ;;
        *) tool=dracut; lister=lsinitrd ;;
    esac
    command -v "$tool" >/dev/null && echo "tool $tool"
    echo "built $(stat -c %Y "$image")"
    [ -f "$1" ] && echo "drop-in $(stat -c %Y "$1")"
    command -v "$lister" >/dev/null || exit 0
    echo listing
    exec "$lister" "$image"
done
"""


def initramfs_read(drop_in: str) -> RunCommand:
    return RunCommand(("sh", "-c", INITRAMFS_SCRIPT, "kmod-initramfs", drop_in))


def kernel_reads(drop_in: str, *, initramfs: bool) -> list[Read]:
    reads: list[Read] = [ReadFile(PROC_MODULES), ReadFile(MODULES_DISABLED), ReadFile(STATUS), ReadFile(UID_MAP),
                         NAMESPACES]
    return [*reads, initramfs_read(drop_in)] if initramfs else reads


@dataclass(frozen=True)
class KernelState:
    # None when the runtime is not applicable here; `why_not` then says why.
    loaded: dict[str, LoadedModule] | None
    why_not: str | None
    initramfs: Initramfs | None


def _why_not(facts: Facts) -> str | None:
    if facts.file(PROC_MODULES) is None:
        return f"the kernel has no module support (no {PROC_MODULES})"
    if (facts.file(MODULES_DISABLED) or "0").strip() != "0":
        return "module loading is locked until a reboot (kernel.modules_disabled = 1)"
    status = facts.file(STATUS) or ""
    capabilities = re.search(r"^CapEff:\s*([0-9a-f]+)$", status, re.MULTILINE)
    if not capabilities or not int(capabilities[1], 16) >> CAP_SYS_MODULE & 1:
        return "no CAP_SYS_MODULE here (a container)"
    if (facts.file(UID_MAP) or "").split() != INITIAL_UID_MAP:
        return "not the initial user namespace (a container)"
    namespaces = facts.command(*NAMESPACES.argv)
    own, _, init = namespaces.stdout.partition("\n")
    if not namespaces.ok or not own or own.strip() != init.strip():
        return "not the initial network namespace (a container or a sandbox sharing the machine's kernel)"
    return None


def kernel_state(facts: Facts, drop_in: str, *, initramfs: bool) -> KernelState:
    why_not = _why_not(facts)
    loaded = None if why_not else parse_proc_modules(facts.file(PROC_MODULES) or "")
    image = None
    if initramfs:
        listing = facts.command(*initramfs_read(drop_in).argv)
        if not listing.ok:
            raise ProviderError(f"listing the initramfs failed: {listing.failure()}")
        image = parse_initramfs_listing(listing.stdout)
    return KernelState(loaded, why_not, image)


def unloadable(loaded: dict[str, LoadedModule], wanted_out: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """Which of `wanted_out` (normalised, loaded) can be unloaded, in a safe order (users first), and
    why each of the others stays loaded until a reboot."""
    pending = [name for name in wanted_out if name in loaded]
    order: list[str] = []
    progress = True
    while progress:
        progress = False
        for name in pending:
            module = loaded[name]
            others = [user for user in module.users if user not in order]
            if module.refcount is not None and module.state == "Live" and not others \
                    and module.refcount - len(module.users) == 0:
                order.append(name)
                pending.remove(name)
                progress = True
                break
    reasons = {}
    for name in pending:
        module = loaded[name]
        if module.refcount is None:
            reasons[name] = "the kernel cannot unload modules"
        elif module.state != "Live":
            reasons[name] = f"it is {module.state.lower()}"
        elif module.users:
            reasons[name] = f"used by {', '.join(module.users)}"
        else:
            reasons[name] = f"in use (refcount {module.refcount})"
    return order, reasons


def unload_operation(name: str) -> Run:
    """`modprobe -r`, never forced; undone by loading it again (before the drop-in is written)."""
    return Run(("modprobe", "-r", name), says=f"unloaded {name} (modprobe -r)", undo=(Run(("modprobe", name)),))


def initramfs_operation(image: Initramfs) -> Run:
    if image.tool == "dracut":
        return Run(("dracut", "-f", "--kver", image.kernel), says=f"rebuilt {image.image} (dracut -f)")
    return Run(("update-initramfs", "-u", "-k", image.kernel), says=f"rebuilt {image.image} (update-initramfs -u)")
