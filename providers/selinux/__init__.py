"""selinux: mode and policy, booleans, file contexts, ports and policy modules.

Persistent state is read from the files the SELinux tools themselves read (the config, the policy
store's `*.local` files, the installed file_contexts) plus three cheap listings (`semanage boolean
-l`, `semanage port -l`, `semodule -l -m`), each asked only when the baseline declares that kind.
Changes go in as few transactions as the tools allow: one `setsebool -P` for every boolean, one
`semanage import` for every file context and port, one `semodule` call for every module.

Everything that needs SELinux in the running kernel (the runtime mode and runtime booleans) goes
through the small kernel seam, `kernel.py`, so a host whose kernel has SELinux disabled is planned
honestly: its persistent state is managed and its runtime is reported, never claimed.
"""

from .provider import SelinuxProvider

__all__ = ["SelinuxProvider"]
