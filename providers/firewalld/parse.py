"""firewalld zones as its tools print them, rich rules in canonical form, and service ports.

Pure functions over the text of `--list-all-zones` (the same format from `firewall-cmd` for the
runtime and from `firewall-offline-cmd` for the permanent configuration) and of the service
definitions under /usr/lib/firewalld/services and /etc/firewalld/services. A line they cannot
read raises `ParseError`, naming the command and the line.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from dataclasses import dataclass
from xml.etree import ElementTree

from converge.provider import ParseError

# firewalld prints the REJECT target as %%REJECT%%; the baseline and --set-target say REJECT.
TARGET_ALIASES = {"%%REJECT%%": "REJECT"}
LIST_FIELDS = ("services", "ports", "rich_rules", "sources", "interfaces")


@dataclass(frozen=True)
class Zone:
    """A zone: the parts converge manages (lists sorted: firewalld keeps them as sets), and the
    other settings firewalld prints (masquerade, forward-ports, ...) as (key, value) pairs."""

    target: str
    services: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    rich_rules: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()
    unmanaged: tuple[tuple[str, str], ...] = ()


def canonical_rich_rule(text: str) -> str:
    """A rich rule with every attribute quoted the way firewalld prints it and single spaces,
    so `family=ipv4` and `family="ipv4"` compare equal. Element order is not changed."""
    words = []
    try:
        tokens = shlex.split(text)
    except ValueError:
        raise ParseError("rich rule", "unbalanced quotes", text) from None
    for token in tokens:
        key, equals, value = token.partition("=")
        words.append(f'{key}="{value}"' if equals else token)
    return " ".join(words)


def parse_zones(output: str, where: str = "firewall-cmd --list-all-zones") -> dict[str, Zone]:
    """Zones of `firewall-cmd --list-all-zones`: a name line (`public (active)`), then
    `  key: values` lines; the items of `forward-ports:` and `rich rules:` each on a line of its
    own after the key, tab-indented."""
    zones: dict[str, Zone] = {}
    name: str | None = None
    fields: dict[str, list[str]] = {}
    key = ""
    for line in output.splitlines():
        if not line.strip():
            continue
        if line.startswith("\t"):
            if not key:
                raise ParseError(where, "a tab-indented item under no key", line)
            fields[key].append(line.strip())
        elif line.startswith(" "):
            key, colon, value = line.strip().partition(":")
            if not colon or name is None:
                raise ParseError(where, "expected `key: values` under a zone name", line)
            fields[key] = value.split()
        else:
            if name is not None:
                zones[name] = _zone(fields)
            name, fields, key = line.split()[0], {}, ""
    if name is not None:
        zones[name] = _zone(fields)
    return zones


_MANAGED_KEYS = {"target", "services", "ports", "rich rules", "sources", "interfaces"}


def _zone(fields: dict[str, list[str]]) -> Zone:
    target = " ".join(fields.get("target", ["default"]))
    return Zone(
        target=TARGET_ALIASES.get(target, target),
        services=tuple(sorted(fields.get("services", []))),
        ports=tuple(sorted(fields.get("ports", []))),
        rich_rules=tuple(sorted(canonical_rich_rule(rule) for rule in fields.get("rich rules", []))),
        sources=tuple(sorted(fields.get("sources", []))),
        interfaces=tuple(sorted(fields.get("interfaces", []))),
        unmanaged=tuple((key, " ".join(values)) for key, values in fields.items() if key not in _MANAGED_KEYS),
    )


@dataclass(frozen=True)
class PortRange:
    proto: str
    low: int
    high: int

    def admits(self, port: int, proto: str) -> bool:
        return self.proto == proto and self.low <= port <= self.high


def parse_port(text: str) -> PortRange:
    """`8443/tcp` or `7000-7010/udp` as firewalld writes ports."""
    ports, _, proto = text.partition("/")
    low, _, high = ports.partition("-")
    return PortRange(proto, int(low), int(high or low))


def parse_services(files: dict[str, str]) -> dict[str, list[PortRange]]:
    """Service definitions by name (file name without .xml; later files win, so pass
    /usr/lib first and /etc second) with the ports each opens."""
    services: dict[str, list[PortRange]] = {}
    for path, text in files.items():
        name = os.path.basename(path).removesuffix(".xml")
        try:
            root = ElementTree.fromstring(text)
        except ElementTree.ParseError:
            services[name] = []
            continue
        services[name] = [parse_port(f"{port.get('port')}/{port.get('protocol')}")
                          for port in root.iter("port") if port.get("port") and port.get("protocol")]
    return services


@dataclass(frozen=True)
class RichRule:
    """What `admits` needs of a rich rule; `certain` is False when the rule also depends on
    something a source address and a local port cannot tell (destination, source port, …)."""

    family: str | None
    source: str | None
    source_inverted: bool
    service: str | None
    port: PortRange | None
    action: str | None
    certain: bool


_KNOWN_WORDS = {"rule", "family", "source", "address", "not", "service", "name", "port", "protocol",
                "accept", "reject", "drop", "priority", "log", "prefix", "level", "limit", "value", "type"}


def parse_rich_rule(text: str) -> RichRule:
    tokens = shlex.split(text)
    family = source = service = action = None
    port: PortRange | None = None
    inverted, certain, element = False, True, ""
    for token in tokens:
        key, equals, value = token.partition("=")
        if key not in _KNOWN_WORDS:
            certain = False
        if not equals:
            if key in ("accept", "reject", "drop"):
                action = key
            elif key == "not":
                inverted = True
                continue  # `source not address=…`: still the source element
            element = key
            continue
        if key == "family":
            family = value
        elif key == "address" and element == "source":
            source = value
        elif key == "name" and element == "service":
            service = value
        elif key == "port" and element == "port":
            port = PortRange("", *(int(part) for part in (value.split("-") * 2)[:2]))
        elif key == "protocol" and element == "port" and port:
            port = PortRange(value, port.low, port.high)
    return RichRule(family, source, inverted, service, port, action, certain)


def rich_rule_matches_source(rule: RichRule, source: str) -> bool:
    address = ipaddress.ip_address(source)
    if rule.family and rule.family != f"ipv{address.version}":
        return False
    if rule.source is None:
        return True
    network = ipaddress.ip_network(rule.source, strict=False)
    inside = network.version == address.version and address in network
    return inside != rule.source_inverted


def network_contains(network: str, source: str) -> bool:
    try:
        parsed = ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False  # an ipset or MAC source: not an address range
    address = ipaddress.ip_address(source)
    return parsed.version == address.version and address in parsed


# Settings of a zone converge does not manage, with the value firewalld's own zones mostly have
# (a zone whose value differs has something converge would neither capture nor keep). `forward`
# is left out: yes in firewalld's own zones, no in a zone made with --new-zone.
UNMANAGED_DEFAULTS = {"icmp-block-inversion": "no", "protocols": "", "masquerade": "no", "forward-ports": "",
                      "source-ports": "", "icmp-blocks": ""}


def unmanaged_settings(zones: dict[str, Zone]) -> dict[str, list[str]]:
    """Per zone, the unmanaged settings that are set (in the order firewalld prints them); zones
    with none are left out."""
    found: dict[str, list[str]] = {}
    for name, zone in zones.items():
        keys = [key for key, value in zone.unmanaged if key in UNMANAGED_DEFAULTS and value != UNMANAGED_DEFAULTS[key]]
        if keys:
            found[name] = keys
    return found
