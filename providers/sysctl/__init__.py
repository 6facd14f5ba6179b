"""sysctl: kernel parameters at runtime (/proc/sys) and persisted in a drop-in converge owns.

A key is in sync when its runtime value is the desired one and the boot-time configuration
persists it: converge's drop-in, or a file read before it (what the distribution already sets
is not repeated). Values are set with `sysctl -w` and read back, so a value the kernel refuses or
ignores is rolled back at runtime and never written to the drop-in.
"""

from converge.providers.sysctl.parse import parse_sysctl_conf
from converge.providers.sysctl.provider import DROP_IN, SysctlProvider
from converge.providers.sysctl.spec import SysctlSpec

__all__ = ["DROP_IN", "SysctlProvider", "SysctlSpec", "parse_sysctl_conf"]
