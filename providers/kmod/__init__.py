"""kmod: kernel modules kept out of the kernel, the way the hardening benchmarks check it.

`disabled` modules get `install NAME /bin/false` and `blacklist NAME` in a modprobe.d drop-in
converge owns (read first, so its `install` wins); `blacklisted` ones only `blacklist NAME`. Plan
reads every modprobe.d file in modprobe's order, /proc/modules and the running kernel's initramfs:
a disabled module loaded now is unloaded (`modprobe -r`, only when nothing uses it), and an
initramfs that holds a disabled module with an older modprobe.d is rebuilt when the baseline says
`update_initramfs = true`. Everything touching the running kernel goes through `kernel.py`, which
declares the runtime not applicable in containers and sandboxes sharing another system's kernel.
"""

from converge.providers.kmod.provider import KmodProvider

__all__ = ["KmodProvider"]
