"""Capture: the modules the host's modprobe.d keeps out, as a `[kmod]` table, built on live."""

from __future__ import annotations

from typing import TYPE_CHECKING

from converge.provider import Captured

if TYPE_CHECKING:
    from converge.providers.kmod.provider import KmodLive


def captured(live: KmodLive) -> Captured:
    """Every module the whole modprobe.d configuration disables or blacklists (spelled as converge's
    drop-in spells it, else as modprobe normalises it), so planning the table here is in sync."""
    config = live.everything
    disabled: list[str] = []
    blacklisted: list[str] = []
    notes = []
    loaded = live.kernel.loaded or {}
    for module in sorted(set(config.install) | set(config.blacklist)):
        name = live.ours_spelled.get(module, module)
        if config.disabled(module):
            if module in loaded:
                notes.append(f"{name}: disabled on disk but loaded now; not captured")
                continue
            disabled.append(name)
        elif module in config.blacklist:
            blacklisted.append(name)
    table: dict[str, list[str]] = {}
    if disabled:
        table["disabled"] = disabled
    if blacklisted:
        table["blacklisted"] = blacklisted
    return Captured(table, notes)
