"""The `[kmod]` table: which kernel modules are kept out, and whether the initramfs is rebuilt."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, model_validator

from converge.provider import StrictModel, matching

# A module name as modprobe takes it (MODULE_NAME_LEN is 56 with the terminating NUL).
_MODULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,54}")

ModuleName = Annotated[str, matching(_MODULE, "a kernel module name such as usb-storage or dccp")]


def normalise(name: str) -> str:
    """The name as modprobe and /proc/modules compare it: `-` and `_` are the same character."""
    return name.replace("-", "_")


class KmodSpec(StrictModel):
    disabled: list[ModuleName] = Field(
        default_factory=list,
        description="Modules that never load: converge's modprobe.d drop-in says `install NAME /bin/false` "
                    "(loading by name runs /bin/false) and `blacklist NAME` (no loading by alias); one loaded now "
                    "is unloaded when nothing uses it.",
    )
    blacklisted: list[ModuleName] = Field(
        default_factory=list,
        description="Modules not loaded automatically by alias (`blacklist NAME`), still loadable by name.",
    )
    update_initramfs: bool = Field(
        False,
        description="Rebuild the running kernel's initramfs (update-initramfs -u or dracut -f) when it holds a "
                    "disabled module and its copy of modprobe.d is older than converge's drop-in.",
    )

    @model_validator(mode="after")
    def _each_module_once(self) -> KmodSpec:
        seen: dict[str, str] = {}
        for where in ("disabled", "blacklisted"):
            for name in getattr(self, where):
                key = normalise(name)
                if key in seen:
                    raise ValueError(f"{name} is listed twice (in {seen[key]} and {where}; - and _ are the same to modprobe)")
                seen[key] = where
        return self
