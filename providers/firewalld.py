"""firewalld: the default zone and, per zone, services, ports, rich rules, sources, interfaces
and target, in the permanent configuration and (with the daemon running) at runtime.

The permanent configuration is read with `firewall-offline-cmd --list-all-zones`, which reads
firewalld's files whether or not the daemon runs; the runtime with `firewall-cmd`. With the daemon
running, changes go to the permanent configuration (`firewall-cmd --permanent`), are checked with
`--check-config` and made live with `--reload`; a zone whose runtime differs from its permanent
configuration is drift that a reload removes. Without the daemon, `firewall-offline-cmd` edits the
files. Each kind of change of a zone is one call (the tools refuse to mix kinds in one call).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, TypeAdapter, ValidationError

from converge.diff import describe_difference
from converge.errors import ConvergeError, ProviderError
from converge.hosts import Host
from converge.plan import Change
from converge.provider import Captured, Provider
from converge.providers.firewalld_zones import (
    LIST_FIELDS,
    PortRange,
    Zone,
    canonical_rich_rule,
    network_contains,
    parse_port,
    parse_rich_rule,
    parse_services,
    parse_zones,
    rich_rule_matches_source,
    unmanaged_settings,
)
from converge.reads import CommandResult, Facts, Read, ReadFile, ReadGlob, RunCommand, Which

CONFIG_DIR = "/etc/firewalld"
SERVICE_GLOBS = ("/usr/lib/firewalld/services/*.xml", f"{CONFIG_DIR}/services/*.xml")
STATE = ("firewall-cmd", "--state")
PERMANENT_ZONES = ("firewall-offline-cmd", "--list-all-zones")
PERMANENT_DEFAULT = ("firewall-offline-cmd", "--get-default-zone")
RUNTIME_ZONES = ("firewall-cmd", "--list-all-zones")
RUNTIME_DEFAULT = ("firewall-cmd", "--get-default-zone")
# firewalld keeps its own zones here and copies one to CONFIG_DIR/zones when it is first changed.
STOCK_ZONES = "/usr/lib/firewalld/zones/*.xml"
CHANGED_ZONES = f"{CONFIG_DIR}/zones/*.xml"

# firewalld limits zone names to 17 characters (nftables chain names are built from them).
_ZONE = re.compile(r"[A-Za-z0-9_-]{1,17}")
_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
_PORT = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?/(tcp|udp|sctp|dccp)")
_INTERFACE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
# Rich rules reach firewall-cmd as one argv element; no shell ever sees them, but nothing else
# than firewalld's own syntax needs to pass either.
_RICH_RULE = re.compile(r'rule( [a-z-]+(="?[A-Za-z0-9_.:/,-]*"?)?)+')


def _pattern(regex: re.Pattern[str], what: str) -> BeforeValidator:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not regex.fullmatch(value):
            raise ValueError(f"not {what}: {value!r}")
        return value
    return BeforeValidator(check)


def _check_port(value: str) -> str:
    match = _PORT.fullmatch(value)
    assert match is not None  # the pattern validator ran first
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


ZoneName = Annotated[str, _pattern(_ZONE, "a zone name (letters, digits, _ -, at most 17)")]
ServiceName = Annotated[str, _pattern(_SERVICE, "a service name (letters, digits, _ . + -)")]
PortSpec = Annotated[str, _pattern(_PORT, 'a port such as "8443/tcp" or "7000-7010/udp"'), AfterValidator(_check_port)]
RichRuleText = Annotated[str, _pattern(_RICH_RULE, 'a rich rule in firewalld syntax: rule family="ipv4" ... accept'),
                         AfterValidator(canonical_rich_rule)]
Source = Annotated[str, BeforeValidator(_check_source)]
InterfaceName = Annotated[str, _pattern(_INTERFACE, "an interface name (letters, digits, _ . -, at most 15)")]
ZoneTarget = Literal["default", "ACCEPT", "DROP", "REJECT"]


class ZoneSpec(BaseModel):
    """`[firewalld.zones.NAME]`; a list left out is left alone (unless `exclusive`, see below)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    services: list[ServiceName] | None = None
    ports: list[PortSpec] | None = None
    rich_rules: list[RichRuleText] | None = None
    sources: list[Source] | None = None
    interfaces: list[InterfaceName] | None = None
    target: ZoneTarget | None = None
    # Services, ports and rich rules not listed are removed (a list left out counts as empty);
    # sources and interfaces only when their list is given, since other tools bind interfaces.
    exclusive: bool = False

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


class FirewalldSpec(BaseModel):
    """`[firewalld]`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    default_zone: ZoneName | None = None
    zones: dict[ZoneName, ZoneSpec] = {}


@dataclass(frozen=True)
class FirewalldLive:
    running: bool
    default_zone: str
    permanent: dict[str, Zone]
    runtime_default_zone: str | None
    runtime: dict[str, Zone] | None
    services: dict[str, list[PortRange]]


def _output(facts: Facts, argv: tuple[str, ...]) -> str:
    result: CommandResult = facts.command(*argv)
    if not result.ok:
        raise ProviderError(result.failure())
    return result.stdout


class FirewalldProvider(Provider[FirewalldSpec, FirewalldLive]):
    name = "firewalld"
    summary = "firewalld: default zone; zone services, ports, rich rules, sources, interfaces, target"
    spec_model = FirewalldSpec
    # Two managers would fight over one ruleset.
    conflicts = ("ufw",)

    def presence_reads(self) -> Sequence[Read]:
        return [Which("firewall-offline-cmd"), ReadFile(f"{CONFIG_DIR}/firewalld.conf")]

    def reads(self, spec: FirewalldSpec) -> Sequence[Read]:
        return [*self.presence_reads(), Which("firewall-cmd"), RunCommand(STATE),
                RunCommand(PERMANENT_ZONES), RunCommand(PERMANENT_DEFAULT),
                RunCommand(RUNTIME_ZONES), RunCommand(RUNTIME_DEFAULT), *(ReadGlob(pattern) for pattern in SERVICE_GLOBS)]

    def absent(self, facts: Facts) -> str | None:
        if not facts.which("firewall-offline-cmd") or facts.file(f"{CONFIG_DIR}/firewalld.conf") is None:
            return "firewalld is not installed"
        return None

    def live(self, spec: FirewalldSpec, facts: Facts) -> FirewalldLive:
        running = facts.which("firewall-cmd") is not None and facts.command(*STATE).ok
        permanent = parse_zones(_output(facts, PERMANENT_ZONES))
        services: dict[str, list[PortRange]] = {}
        for pattern in SERVICE_GLOBS:
            services |= parse_services(facts.glob(pattern))
        unknown_zones = sorted({*spec.zones, *([spec.default_zone] if spec.default_zone else [])} - set(permanent))
        if unknown_zones:
            raise ProviderError(f"no such zone: {', '.join(unknown_zones)} (zones: {', '.join(sorted(permanent))})")
        unknown = sorted({s for zone in spec.zones.values() for s in zone.services or () if s not in services})
        if unknown:
            raise ProviderError(f"no such service: {', '.join(unknown)} (see `firewall-cmd --get-services`)")
        return FirewalldLive(
            running, _output(facts, PERMANENT_DEFAULT).strip(), permanent,
            _output(facts, RUNTIME_DEFAULT).strip() if running else None,
            parse_zones(_output(facts, RUNTIME_ZONES)) if running else None, services,
        )

    def diff(self, spec: FirewalldSpec, live: FirewalldLive) -> list[Change]:
        changes = []
        if spec.default_zone and spec.default_zone != live.default_zone:
            changes.append(Change(self.name, "default_zone", "update", live.default_zone, spec.default_zone))
        elif spec.default_zone and live.running and live.runtime_default_zone != live.default_zone:
            changes.append(Change(self.name, "default_zone (runtime)", "update", live.runtime_default_zone,
                                  spec.default_zone, ("runtime differs from the permanent configuration",)))
        for zone_name, zone_spec in spec.zones.items():
            current = live.permanent[zone_name]
            wanted = zone_spec.desired(current)
            if wanted.target != current.target:
                changes.append(Change(self.name, f"{zone_name} target", "update", current.target, wanted.target))
            for field in LIST_FIELDS:
                kind = field.removesuffix("s").replace("_", " ")
                before, after = set(getattr(current, field)), set(getattr(wanted, field))
                resource = f"{zone_name} {kind}"
                changes += [Change(self.name, f"{resource} {item}", "add", None, item) for item in sorted(after - before)]
                changes += [Change(self.name, f"{resource} {item}", "remove", item, None) for item in sorted(before - after)]
            runtime = (live.runtime or {}).get(zone_name)
            if live.running and runtime is not None and runtime != current:
                changes.append(Change(
                    self.name, f"{zone_name} (runtime)", "update", "differs", "as permanent",
                    ("runtime differs from the permanent configuration; a reload makes it match",),
                    detail=describe_difference(current.as_dict(), runtime.as_dict()).replace("root.", ""),
                ))
        return changes

    def apply(self, host: Host, spec: FirewalldSpec, live: FirewalldLive, changes: Sequence[Change]) -> list[str]:
        tool = ["firewall-cmd", "--permanent"] if live.running else ["firewall-offline-cmd"]
        calls: list[list[str]] = []
        for zone_name, zone_spec in spec.zones.items():
            current = live.permanent[zone_name]
            calls += zone_calls(tool, zone_name, current, zone_spec.desired(current), offline=not live.running)
        saved = {path: host.read_file(path) for path in self._touched_files(spec)}
        done: list[str] = []
        try:
            for argv in calls:
                _run(host, argv, done)
            if calls:
                _run(host, [tool[0], "--check-config"], done)
            if spec.default_zone and spec.default_zone != live.default_zone:
                _run(host, [tool[0], f"--set-default-zone={spec.default_zone}"], done)
        except ConvergeError:
            # Put the permanent configuration back as it was; the runtime was not touched.
            for path, text in saved.items():
                if text is None:
                    host.remove_file(path)
                else:
                    host.write_file(path, text)
            if live.running:
                host.run(["firewall-cmd", "--reload"], check=False)
            raise
        if live.running:
            _run(host, ["firewall-cmd", "--reload"], done)
        return done

    @staticmethod
    def _touched_files(spec: FirewalldSpec) -> list[str]:
        return [f"{CONFIG_DIR}/firewalld.conf", *(f"{CONFIG_DIR}/zones/{zone}.xml" for zone in spec.zones)]

    can_capture = True

    def capture_reads(self) -> Sequence[Read]:
        return [Which("firewall-cmd"), RunCommand(STATE), RunCommand(PERMANENT_ZONES), RunCommand(PERMANENT_DEFAULT),
                RunCommand(RUNTIME_ZONES), RunCommand(RUNTIME_DEFAULT), ReadGlob(STOCK_ZONES), ReadGlob(CHANGED_ZONES)]

    def capture(self, facts: Facts) -> Captured:
        """The default zone, and every zone changed from firewalld's own (those with a file in
        /etc/firewalld/zones) in full, as exclusive zones. Left out, with a note: what differs at
        runtime from the permanent configuration (a plan would report it as drift), settings
        converge does not manage, and items a baseline's patterns refuse."""
        running = facts.which("firewall-cmd") is not None and facts.command(*STATE).ok
        permanent_output = _output(facts, PERMANENT_ZONES)
        permanent = parse_zones(permanent_output)
        runtime = parse_zones(_output(facts, RUNTIME_ZONES)) if running else {}
        default = _output(facts, PERMANENT_DEFAULT).strip()
        runtime_default = _output(facts, RUNTIME_DEFAULT).strip() if running else default
        stock, changed = ({_zone_name(path) for path in facts.glob(pattern)} for pattern in (STOCK_ZONES, CHANGED_ZONES))
        unmanaged = unmanaged_settings(permanent_output)
        table: dict[str, Any] = {}
        notes: list[str] = []
        if runtime_default != default:
            notes.append(f"default zone: runtime {runtime_default} differs from the permanent {default}; not captured")
        else:
            table["default_zone"] = default
        zones: dict[str, dict[str, Any]] = {}
        for name, zone in sorted(permanent.items()):
            # As in diff(): a zone not loaded at runtime yet (created, no reload since) is no drift.
            if runtime.get(name, zone) != zone:
                notes.append(f"zone {name}: runtime differs from the permanent configuration (a reload would undo it); "
                             "not captured")
            elif name in changed and not _accepted(_ZONE_NAME, name):
                notes.append(f"zone {name}: not a zone name a baseline accepts; not captured")
            elif name in changed:
                zones[name], left_out = _captured_zone(zone)
                notes += [f"zone {name}: {reason}" for reason in left_out]
                if unmanaged.get(name):
                    notes.append(f"zone {name}: {', '.join(unmanaged[name])} set, not managed by converge; not captured")
                if name not in stock:
                    notes.append(f"zone {name}: created on this host; converge cannot create zones, so a host "
                                 "planned with this baseline must already have it")
        if zones:
            table["zones"] = zones
        return Captured(table, notes)

    def admits(self, spec: FirewalldSpec, live: FirewalldLive, source: str, port: int, proto: str = "tcp") -> bool:
        """Whether firewalld, once `spec` is applied, admits a new inbound connection from
        `source` to local `port`/`proto`.

        The zone is the one whose sources hold the address (firewalld picks source zones first);
        otherwise it could be the default zone or any zone bound to an interface, and all of them
        must admit it (the interface is not known). In a zone: a matching drop/reject rich rule
        refuses; a matching accept rich rule, a service or a port admits; else the target decides
        (only ACCEPT admits). Conservative: a deny rich rule that also depends on something else
        (destination, source port, ...) counts as matching, such an accept rule does not.
        """
        zones = {name: spec.zones[name].desired(zone) if name in spec.zones else zone for name, zone in live.permanent.items()}
        by_source = [name for name, zone in zones.items() if any(network_contains(net, source) for net in zone.sources)]
        if by_source:
            candidates = by_source
        else:
            default = spec.default_zone or live.default_zone
            candidates = sorted({default, *(name for name, zone in zones.items() if zone.interfaces)})
        return all(_zone_admits(zones[name], live.services, source, port, proto) for name in candidates)

    def state_paths(self) -> list[str]:
        """firewalld's whole persistent configuration lives under /etc/firewalld."""
        return [CONFIG_DIR]

    def reactivate_argv(self) -> list[list[str]]:
        """Make restored files live: a reload re-reads the permanent configuration (a daemon
        that is not running reads it when it starts, so there is nothing to do then)."""
        return [["firewall-cmd", "--reload"]]


def zone_calls(tool: list[str], zone: str, current: Zone, wanted: Zone, *, offline: bool) -> list[list[str]]:
    """The calls that turn `current` into `wanted`: one per kind of change, all items of that
    kind in it; additions before removals, so a zone never admits less than both ends."""
    calls = []
    options = {"services": "service", "ports": "port", "rich_rules": "rich-rule", "sources": "source", "interfaces": "interface"}
    for field, option in options.items():
        added = sorted(set(getattr(wanted, field)) - set(getattr(current, field)))
        if added:
            calls.append([*tool, f"--zone={zone}", *(f"--add-{option}={item}" for item in added)])
    for field, option in options.items():
        removed = sorted(set(getattr(current, field)) - set(getattr(wanted, field)))
        # firewall-offline-cmd takes --remove-service as a lokkit option that cannot be combined
        # with --zone ("Can't use lokkit options with other options").
        remove = "--remove-service-from-zone" if offline and field == "services" else f"--remove-{option}"
        if removed:
            calls.append([*tool, f"--zone={zone}", *(f"{remove}={item}" for item in removed)])
    if wanted.target != current.target:
        calls.append([*tool, f"--zone={zone}", f"--set-target={wanted.target}"])
    return calls


# Each listed item of a zone must pass the same pattern as in a baseline, unchanged (a value the
# pattern rewrites would never compare equal to the live one).
_ITEM_TYPES: dict[str, TypeAdapter[str]] = {
    "services": TypeAdapter(ServiceName), "ports": TypeAdapter(PortSpec), "rich_rules": TypeAdapter(RichRuleText),
    "sources": TypeAdapter(Source), "interfaces": TypeAdapter(InterfaceName),
}
_ZONE_NAME: TypeAdapter[str] = TypeAdapter(ZoneName)
_TARGET: TypeAdapter[str] = TypeAdapter(ZoneTarget)


def _accepted(adapter: TypeAdapter[str], value: str) -> bool:
    try:
        return bool(adapter.validate_python(value) == value)
    except ValidationError:
        return False


def _zone_name(path: str) -> str:
    return os.path.basename(path).removesuffix(".xml")


def _captured_zone(zone: Zone) -> tuple[dict[str, Any], list[str]]:
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
        if kept or field in ("services", "ports", "rich_rules"):
            table[field] = kept
    table["exclusive"] = not items_left_out
    return table, left_out


def _zone_admits(zone: Zone, services: dict[str, list[PortRange]], source: str, port: int, proto: str) -> bool:
    rules = [parse_rich_rule(text) for text in zone.rich_rules]
    accepting = False
    for rule in rules:
        if rule.action is None or not rich_rule_matches_source(rule, source):
            continue
        ranges = services.get(rule.service, []) if rule.service else ([rule.port] if rule.port else None)
        hits = ranges is None or any(r.admits(port, proto) for r in ranges)
        if not hits:
            continue
        if rule.action in ("reject", "drop"):
            return False
        accepting = accepting or rule.certain
    if accepting:
        return True
    if any(r.admits(port, proto) for service in zone.services for r in services.get(service, [])):
        return True
    if any(parse_port(text).admits(port, proto) for text in zone.ports):
        return True
    return zone.target == "ACCEPT"


def _run(host: Host, argv: list[str], done: list[str]) -> None:
    result = host.run(argv, check=False)
    # firewall-cmd reports an invalid item among several as a warning and exits 0.
    warnings = [line for line in result.stderr.splitlines() if line.startswith(("Warning: INVALID", "INVALID"))]
    if not result.ok or warnings:
        reason = warnings[0] if warnings else result.failure()
        raise ProviderError(f"`{' '.join(argv)}` failed: {reason}; the previous configuration was restored")
    done.append(" ".join(argv))
