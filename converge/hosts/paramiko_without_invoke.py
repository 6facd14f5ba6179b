"""Imported before paramiko, wherever converge imports it: paramiko then loads without `invoke`.

paramiko imports invoke (~55 ms, asyncio included) only to evaluate `Match exec` in ssh_config,
and copes without it. A plan is a short-lived process: skip it; `SSHHost._ssh_config` loads it
for a config that needs it. The first import of paramiko decides, so every module of converge
that imports paramiko takes it from here (`from converge.hosts.paramiko_without_invoke import paramiko`).
"""

from __future__ import annotations

import sys

_invoke_loaded = "invoke" in sys.modules
if not _invoke_loaded:
    sys.modules["invoke"] = None  # type: ignore[assignment]  # makes `import invoke` fail fast
import paramiko  # noqa: E402 - imported here, with invoke held off
import paramiko.config  # noqa: E402

if not _invoke_loaded:
    del sys.modules["invoke"]

__all__ = ["paramiko"]
