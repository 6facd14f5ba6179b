"""Capture: the default zone, and every zone changed from firewalld's own (those with a file in
/etc/firewalld/zones) in full, as exclusive zones, built on `live()`.

Left out, with a note: what differs at runtime from the permanent configuration (a plan would
report it as drift), settings converge does not manage, and items a baseline's patterns refuse.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import TypeAdapter, ValidationError

from converge.provider import Captured
from converge.providers.firewalld.parse import LIST_FIELDS, Zone
from converge.providers.firewalld.provider import CHANGED_ZONES, CHECK_CONFIG, CONFIG_DIR, FirewalldLive
from converge.providers.firewalld.spec import InterfaceName, PortSpec, RichRuleText, ServiceName, Source, ZoneName, ZoneTarget

# Each listed item of a zone must pass the same pattern as in a baseline, unchanged (a value the
# pattern rewrites would never compare equal to the live one).
_ITEM_TYPES: dict[str, TypeAdapter[str]] = {
    "services": TypeAdapter(ServiceName), "ports": TypeAdapter(PortSpec), "rich_rules": TypeAdapter(RichRuleText),
    "sources": TypeAdapter(Source), "interfaces": TypeAdapter(InterfaceName),
}
_ZONE_NAME: TypeAdapter[str] = TypeAdapter(ZoneName)
_TARGET: TypeAdapter[str] = TypeAdapter(ZoneTarget)


def captured(live: FirewalldLive, stock: set[str], *, enabled_at_boot: bool = False) -> Captured:
    """`live` as a `[firewalld]` table; `stock` names firewalld's own zones. In use when the daemon
    runs or starts at boot."""
    runtime = live.runtime or {}
    runtime_default = live.runtime_default_zone if live.running else live.default_zone
    changed = {os.path.basename(path).removesuffix(".xml") for path, text in live.files.items()
               if text is not None and os.path.dirname(path) == os.path.dirname(CHANGED_ZONES)}
    table: dict[str, Any] = {}
    notes: list[str] = []
    if live.config_error:
        notes.append(f"the current configuration fails `{' '.join(CHECK_CONFIG)}`: {live.config_error}")
    if runtime_default != live.default_zone:
        notes.append(f"default zone: runtime {runtime_default} differs from the permanent {live.default_zone}; not captured")
    else:
        table["default_zone"] = live.default_zone
    zones: dict[str, dict[str, Any]] = {}
    for name, zone in sorted(live.permanent.items()):
        # As in diff(): a zone not loaded at runtime yet (created, no reload since) is no drift.
        if runtime.get(name, zone) != zone:
            notes.append(f"zone {name}: runtime differs from the permanent configuration (a reload would undo it); "
                         "not captured")
        elif name in changed and not _accepted(_ZONE_NAME, name):
            notes.append(f"zone {name}: not a zone name a baseline accepts; not captured")
        elif name in changed:
            zones[name], left_out = _captured_zone(zone, live)
            notes += [f"zone {name}: {reason}" for reason in left_out]
            if live.unmanaged.get(name):
                notes.append(f"zone {name}: {', '.join(live.unmanaged[name])} set, not managed by converge; not captured")
            if name not in stock:
                notes.append(f"zone {name}: created on this host; converge cannot create zones, so a host "
                             "planned with this baseline must already have it")
    forward = [f"{name} {value}" for name in zones for key, value in live.permanent[name].unmanaged if key == "forward"]
    if forward:
        notes.append(f"forward (forwarding between a zone's interfaces and sources) is not managed by converge; "
                     f"not captured: {', '.join(forward)}")
    own = sorted({(name, service) for name, zone in zones.items() for service in zone.get("services", [])
                  if service in live.own_services})
    for name, service in own:
        notes.append(f"zone {name}: service {service} is defined on this host ({CONFIG_DIR}/services/{service}.xml), "
                     "not captured: a host planned with this baseline must define it too")
    if live.own_policies:
        notes.append(f"policies {', '.join(sorted(live.own_policies))} ({CONFIG_DIR}/policies) are not managed by "
                     "converge; not captured")
    if zones:
        table["zones"] = zones
    return Captured(table, notes, active=live.running or enabled_at_boot)


def _accepted(adapter: TypeAdapter[str], value: str) -> bool:
    try:
        return bool(adapter.validate_python(value) == value)
    except ValidationError:
        return False


def _captured_zone(zone: Zone, live: FirewalldLive | None = None) -> tuple[dict[str, Any], list[str]]:
    """A zone as a `[firewalld.zones.NAME]` table, and why anything was left out. Exclusive, so
    the baseline keeps the zone as it is, unless an item had to be left out (exclusive would
    remove it). Empty sources and interfaces are left out: they are left alone then, since
    interface names are host-specific and other tools bind them."""
    table: dict[str, Any] = {}
    left_out: list[str] = []
    if _accepted(_TARGET, zone.target):
        table["target"] = zone.target
    else:
        left_out.append(f"target {zone.target} is not one a baseline accepts; not captured")
    items_left_out = False
    for field in LIST_FIELDS:
        items = getattr(zone, field)
        kept = [item for item in items if _accepted(_ITEM_TYPES[field], item)]
        for item in items:
            if item not in kept:
                items_left_out = True
                left_out.append(f"{field} {item!r} does not pass the baseline's pattern; not captured "
                                "(the zone is captured as not exclusive)")
            elif field == "services" and live is not None and item not in live.services:
                # A plan refuses a service the host does not define; firewalld's --check-config too.
                kept.remove(item)
                items_left_out = True
                left_out.append(f"services {item!r}: no such service on this host (no {item}.xml in "
                                "/usr/lib/firewalld/services or /etc/firewalld/services); not captured "
                                "(the zone is captured as not exclusive)")
        if kept or field in ("services", "ports", "rich_rules"):
            table[field] = kept
    table["exclusive"] = not items_left_out
    return table, left_out
