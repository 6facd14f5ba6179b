"""The `[firewalld]` table: the default zone and, per zone, what it admits; validated when the
baseline loads, every value in the form firewalld prints it so a plan compares like with like."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, PlainValidator

from converge.provider import ParseError, StrictModel, matching
from converge.providers.firewalld.parse import LIST_FIELDS, Zone, canonical_rich_rule

# firewalld limits zone names to 17 characters (nftables chain names are built from them).
_ZONE = re.compile(r"[A-Za-z0-9_-]{1,17}")
_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
_PORT = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?/(tcp|udp|sctp|dccp)")
_INTERFACE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
# Rich rules reach firewall-cmd as one argv element; no shell ever sees them, but nothing else
# than firewalld's own syntax needs to pass either. A quoted value may hold spaces (a log prefix
# such as "ssh-in ", which firewalld accepts and prints as given).
_RICH_RULE = re.compile(r'rule( [a-z-]+(="[A-Za-z0-9_.:/, -]*"|=[A-Za-z0-9_.:/,-]*)?)+')


def _check_port(value: Any) -> str:
    match = _PORT.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f'not a port such as "8443/tcp" or "7000-7010/udp": {value!r}')
    low, high = int(match[1]), int(match[2] or match[1])
    if not 1 <= low <= high <= 65535 or (match[2] and low == high):
        raise ValueError(f"port out of range 1-65535, or a range not from low to high: {value!r}")
    # As firewalld prints it (no leading zeros), so the plan compares like with like.
    return f"{low}-{high}/{match[3]}" if match[2] else f"{low}/{match[3]}"


def _check_source(value: Any) -> str:
    # firewalld keeps a source as written: a bare address stays bare, a network keeps its prefix.
    try:
        if isinstance(value, str) and "/" in value:
            return str(ipaddress.ip_network(value, strict=True))
        if isinstance(value, str):
            return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    raise ValueError(f"not an address or a network in CIDR form (host bits zero): {value!r}")


def _canonical(text: str) -> str:
    try:
        return canonical_rich_rule(text)
    except ParseError as error:
        raise ValueError(str(error)) from None


ZoneName = Annotated[str, matching(_ZONE, "a zone name (letters, digits, _ -, at most 17)")]
ServiceName = Annotated[str, matching(_SERVICE, "a service name (letters, digits, _ . + -)")]
PortSpec = Annotated[str, PlainValidator(_check_port)]
RichRuleText = Annotated[str, matching(_RICH_RULE, 'a rich rule in firewalld syntax: rule family="ipv4" ... accept'),
                         AfterValidator(_canonical)]
Source = Annotated[str, PlainValidator(_check_source)]
InterfaceName = Annotated[str, matching(_INTERFACE, "an interface name (letters, digits, _ . -, at most 15)")]
ZoneTarget = Literal["default", "ACCEPT", "DROP", "REJECT"]


class ZoneSpec(StrictModel):
    """`[firewalld.zones.NAME]`; a list left out is left alone (unless `exclusive`, see below)."""

    services: list[ServiceName] | None = Field(default=None, description="Services the zone admits (firewalld's names).")
    ports: list[PortSpec] | None = Field(default=None, description='Ports the zone admits: "8443/tcp", "7000-7010/udp".')
    rich_rules: list[RichRuleText] | None = Field(default=None, description="Rich rules, in firewalld's syntax.")
    sources: list[Source] | None = Field(default=None, description="Addresses and networks bound to the zone.")
    interfaces: list[InterfaceName] | None = Field(default=None, description="Interfaces bound to the zone.")
    target: ZoneTarget | None = Field(default=None, description="What happens to what nothing in the zone admits.")
    exclusive: bool = Field(default=False, description=(
        "Remove services, ports and rich rules not listed (a list left out counts as empty); sources and "
        "interfaces only when their list is given, since other tools bind interfaces."))

    def desired(self, live: Zone) -> Zone:
        """The zone as it is once this spec is applied."""
        changed: dict[str, Any] = {}
        for name in LIST_FIELDS:
            declared = getattr(self, name)
            replaces = self.exclusive and (declared is not None or name in ("services", "ports", "rich_rules"))
            if replaces:
                changed[name] = tuple(sorted(set(declared or ())))
            elif declared is not None:
                changed[name] = tuple(sorted(set(getattr(live, name)) | set(declared)))
        if self.target is not None:
            changed["target"] = self.target
        return replace(live, **changed)


class FirewalldSpec(StrictModel):
    """`[firewalld]`."""

    default_zone: ZoneName | None = Field(default=None, description="The zone of interfaces bound to no other zone.")
    zones: dict[ZoneName, ZoneSpec] = Field(default={}, description="Zones by name; each must exist on the host.")
