"""The provider: reads, live state, the plan (changes and the exact firewall-cmd or
firewall-offline-cmd calls), and the connection guard."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from xml.etree import ElementTree

from converge.provider import (
    Captured,
    Change,
    Connection,
    Facts,
    Operation,
    Provider,
    ProviderError,
    ProviderPlan,
    Read,
    ReadFile,
    ReadGlob,
    Run,
    RunCommand,
    Side,
    Which,
    output_or_raise,
    restore,
)
from converge.providers.firewalld.parse import (
    LIST_FIELDS,
    PortRange,
    Zone,
    network_contains,
    parse_port,
    parse_rich_rule,
    parse_services,
    parse_zones,
    rich_rule_matches_source,
    unmanaged_settings,
)
from converge.providers.firewalld.spec import FirewalldSpec

CONFIG_DIR = "/etc/firewalld"
CONFIG = f"{CONFIG_DIR}/firewalld.conf"
SERVICE_GLOBS = ("/usr/lib/firewalld/services/*.xml", f"{CONFIG_DIR}/services/*.xml")
# Policies (traffic between zones, firewalld 0.9+) the admin defined; not managed, but captured as a note.
OWN_POLICIES = f"{CONFIG_DIR}/policies/*.xml"
STATE = ("firewall-cmd", "--state")
PERMANENT_ZONES = ("firewall-offline-cmd", "--list-all-zones")
PERMANENT_DEFAULT = ("firewall-offline-cmd", "--get-default-zone")
RUNTIME_ZONES = ("firewall-cmd", "--list-all-zones")
RUNTIME_DEFAULT = ("firewall-cmd", "--get-default-zone")
# The permanent configuration checked as firewalld checks it at start (works with or without the daemon).
CHECK_CONFIG = ("firewall-offline-cmd", "--check-config")
# `systemctl enable firewalld` makes this link (WantedBy=multi-user.target); a read of it is the unit's text.
ENABLED_LINK = "/etc/systemd/system/multi-user.target.wants/firewalld.service"
# firewalld keeps its own zones here and copies one to CONFIG_DIR/zones when it is first changed;
# the copies are read so that a failed apply can put them back as they were.
STOCK_ZONES = "/usr/lib/firewalld/zones/*.xml"
CHANGED_ZONES = f"{CONFIG_DIR}/zones/*.xml"
# firewall-cmd reports an invalid item among several as a warning and exits 0.
INVALID = r"^(?:Warning: )?INVALID\S*.*"
OPTIONS = {"services": "service", "ports": "port", "rich_rules": "rich-rule", "sources": "source", "interfaces": "interface"}
DRIFT = "runtime differs from the permanent configuration; a reload makes it match"


def unreadable_file(files: Mapping[str, str | None], message: str) -> str | None:
    """`path:line` of the file firewalld's message is about: the first that is not XML, else the
    first line holding a value the message quotes (firewalld says `INVALID_PORT: '!!x!!'`)."""
    texts = {path: text for path, text in sorted(files.items()) if text is not None}
    for path, text in texts.items():
        try:
            ElementTree.fromstring(text)
        except ElementTree.ParseError as error:
            return f"{path}:{error.position[0]}"
    for quoted in re.findall(r"'([^']+)'", message):
        for path, text in texts.items():
            for number, line in enumerate(text.splitlines(), 1):
                if quoted in line:
                    return f"{path}:{number}"
    return None


def zone_file(zone: str) -> str:
    return f"{CONFIG_DIR}/zones/{zone}.xml"


@dataclass(frozen=True)
class FirewalldLive:
    running: bool
    default_zone: str
    permanent: dict[str, Zone]
    runtime_default_zone: str | None
    runtime: dict[str, Zone] | None
    services: dict[str, list[PortRange]]
    # The files a failed apply restores, as read: firewalld.conf and /etc/firewalld/zones/*.xml.
    files: dict[str, str | None] = field(default_factory=dict)
    # Per zone, the settings set that converge does not manage (masquerade, forward-ports, ...).
    unmanaged: dict[str, list[str]] = field(default_factory=dict)
    # Services defined in CONFIG_DIR/services (the admin's own, or stock ones redefined).
    own_services: frozenset[str] = frozenset()
    # Why the permanent configuration fails `--check-config` (None: it passes).
    config_error: str | None = None
    # Policies defined in CONFIG_DIR/policies.
    own_policies: frozenset[str] = frozenset()


class FirewalldProvider(Provider[FirewalldSpec, FirewalldLive]):
    name = "firewalld"
    summary = "firewalld: default zone; zone services, ports, rich rules, sources, interfaces, target"
    spec_model = FirewalldSpec
    # Two managers would fight over one ruleset.
    conflicts = ("ufw",)

    # --- reads -------------------------------------------------------------------------------

    def presence_reads(self) -> Sequence[Read]:
        return [Which("firewall-offline-cmd"), ReadFile(CONFIG)]

    def reads(self, spec: FirewalldSpec) -> Sequence[Read]:
        return [Which("firewall-cmd"), RunCommand(STATE), RunCommand(PERMANENT_ZONES), RunCommand(PERMANENT_DEFAULT),
                RunCommand(RUNTIME_ZONES), RunCommand(RUNTIME_DEFAULT), *(ReadGlob(pattern) for pattern in SERVICE_GLOBS),
                ReadGlob(CHANGED_ZONES), ReadGlob(OWN_POLICIES), RunCommand(CHECK_CONFIG)]

    # --- absent ------------------------------------------------------------------------------

    def absent(self, facts: Facts) -> str | None:
        if not facts.which("firewall-offline-cmd") or facts.file(CONFIG) is None:
            return "firewalld is not installed"
        return None

    # --- live --------------------------------------------------------------------------------

    def live(self, spec: FirewalldSpec, facts: Facts) -> FirewalldLive:
        running = facts.which("firewall-cmd") is not None and facts.command(*STATE).ok
        listed = facts.command(*PERMANENT_ZONES)
        if not listed.ok:
            # firewalld names the problem, not the file: find the file and line it means.
            defined = {**facts.glob(CHANGED_ZONES), **facts.glob(SERVICE_GLOBS[1]), **facts.glob(OWN_POLICIES)}
            where = unreadable_file(defined, listed.stderr + listed.stdout)
            if where:
                raise ProviderError(f"{where}: firewalld cannot load it: {listed.failure()}")
        permanent_output = output_or_raise(facts, PERMANENT_ZONES)
        permanent = parse_zones(permanent_output, " ".join(PERMANENT_ZONES))
        services: dict[str, list[PortRange]] = {}
        for pattern in SERVICE_GLOBS:
            services |= parse_services(facts.glob(pattern))
        unknown_zones = sorted({*spec.zones, *([spec.default_zone] if spec.default_zone else [])} - set(permanent))
        if unknown_zones:
            raise ProviderError(f"no such zone: {', '.join(unknown_zones)} (zones: {', '.join(sorted(permanent))})")
        unknown = sorted({s for zone in spec.zones.values() for s in zone.services or () if s not in services})
        if unknown:
            raise ProviderError(f"no such service: {', '.join(unknown)} (see `firewall-cmd --get-services`)")
        changed = facts.glob(CHANGED_ZONES)
        files: dict[str, str | None] = {CONFIG: facts.file(CONFIG)}
        files |= {zone_file(name): changed.get(zone_file(name)) for name in permanent}
        own = frozenset(os.path.basename(path).removesuffix(".xml") for path in facts.glob(SERVICE_GLOBS[1]))
        check = facts.command(*CHECK_CONFIG)
        return FirewalldLive(
            running, output_or_raise(facts, PERMANENT_DEFAULT).strip(), permanent,
            output_or_raise(facts, RUNTIME_DEFAULT).strip() if running else None,
            parse_zones(output_or_raise(facts, RUNTIME_ZONES), " ".join(RUNTIME_ZONES)) if running else None,
            services, files, unmanaged_settings(permanent), own,
            None if check.ok else (check.stdout.strip() or check.stderr.strip() or f"exit {check.returncode}"),
            frozenset(os.path.basename(path).removesuffix(".xml") for path in facts.glob(OWN_POLICIES)),
        )

    # --- diff: changes and operations --------------------------------------------------------

    def diff(self, spec: FirewalldSpec, live: FirewalldLive) -> ProviderPlan:
        changes = self._default_zone_changes(spec, live)
        for zone_name, zone_spec in spec.zones.items():
            changes += self._zone_changes(zone_name, live.permanent[zone_name], zone_spec.desired(live.permanent[zone_name]),
                                          live)
        return ProviderPlan(changes, self._operations(spec, live) if changes else [])

    def _sides(self, live: FirewalldLive, permanent: Any, runtime: Any, after: Any) -> dict[str, Side]:
        # With the daemon running, every change reaches the runtime too (by the final reload).
        return {"permanent": Side(permanent, after), "runtime": Side(runtime, after)} if live.running else {}

    def _default_zone_changes(self, spec: FirewalldSpec, live: FirewalldLive) -> list[Change]:
        wanted = spec.default_zone
        runtime = live.runtime_default_zone if live.running else wanted
        if wanted is None or (live.default_zone == wanted and runtime == wanted):
            return []
        notes = (DRIFT,) if live.default_zone == wanted else ()
        return [Change(self.name, self.name, "default_zone", "update", live.default_zone, wanted, notes,
                       self._sides(live, live.default_zone, live.runtime_default_zone, wanted))]

    def _zone_changes(self, zone: str, current: Zone, wanted: Zone, live: FirewalldLive) -> list[Change]:
        """Each target and item that differs from `wanted` in the permanent configuration or (daemon
        running) at runtime: the reload that ends apply brings the runtime to the new permanent
        state, so what differs only at runtime (drift) is a change too, of its runtime side."""
        # A zone not loaded at runtime yet (created, no reload since) is no drift.
        runtime = (live.runtime or {}).get(zone, current) if live.running else current
        extra = {"zone": zone}
        changes = []
        if current.target != wanted.target or runtime.target != wanted.target:
            notes = (DRIFT,) if current.target == wanted.target else ()
            changes.append(Change(self.name, "target", zone, "update", current.target, wanted.target, notes,
                                  self._sides(live, current.target, runtime.target, wanted.target), extra=extra))
        for name in LIST_FIELDS:
            permanent, at_runtime, after = (set(getattr(state, name)) for state in (current, runtime, wanted))
            for item in sorted(permanent | at_runtime | after):
                if (item in permanent) == (item in after) and (item in at_runtime) == (item in after):
                    continue
                before = item if item in permanent or item in at_runtime else None
                value = item if item in after else None
                action: Literal["add", "update", "remove"] = "add" if before is None else "remove" if value is None else "update"
                notes = (DRIFT,) if (item in permanent) == (item in after) else ()
                sides = self._sides(live, item if item in permanent else None, item if item in at_runtime else None, value)
                changes.append(Change(self.name, name.removesuffix("s"), f"{zone} {item}", action, before, value, notes,
                                      sides, extra=extra))
        return changes

    def _operations(self, spec: FirewalldSpec, live: FirewalldLive) -> list[Operation]:
        """The calls, in order: one per kind of change of each zone, `--check-config`, the default
        zone, and (daemon running) `--reload` to make the permanent configuration live. Undone, if
        any fails, by restoring firewalld.conf and the zone files as read, and reloading."""
        tool = ("firewall-cmd", "--permanent") if live.running else ("firewall-offline-cmd",)
        touched = [CONFIG]
        calls: list[tuple[str, ...]] = []
        for zone_name, zone_spec in spec.zones.items():
            current = live.permanent[zone_name]
            zone_argvs = zone_calls(tool, zone_name, current, zone_spec.desired(current), offline=not live.running)
            calls += zone_argvs
            touched += [zone_file(zone_name)] if zone_argvs else []
        operations: list[Operation] = [Run(argv, fails_on=INVALID) for argv in calls]
        if calls:
            operations.append(Run((tool[0], "--check-config"), fails_on=INVALID))
        if spec.default_zone and spec.default_zone != live.default_zone:
            operations.append(Run((tool[0], f"--set-default-zone={spec.default_zone}"), fails_on=INVALID))
        reload = [Run(tuple(argv)) for argv in self.reactivate_argv()] if live.running else []
        operations += reload
        if not operations:
            return []
        undo = (*(restore(path, live.files.get(path)) for path in touched), *reload)
        operations[0] = replace(operations[0], undo=undo)
        return operations

    # --- warnings ----------------------------------------------------------------------------

    def warnings(self, spec: FirewalldSpec, live: FirewalldLive) -> list[str]:
        """Settings of a declared zone that a baseline cannot express (forward ports, masquerade, ...):
        never changed, not even by `exclusive`; said so the admin knows the zone does more."""
        warnings = [f"firewalld: zone {zone}: {', '.join(live.unmanaged[zone])} set, not managed by converge (left as "
                    "they are)" for zone in spec.zones if live.unmanaged.get(zone)]
        if live.config_error:
            warnings.append(f"firewalld: the current configuration fails `{' '.join(CHECK_CONFIG)}`: {live.config_error}")
        return warnings

    # --- guard (ConnectionGuard) -------------------------------------------------------------

    def lockout(self, spec: FirewalldSpec, live: FirewalldLive, connection: Connection) -> str | None:
        """Why firewalld, once `spec` is applied, would refuse a new connection like `connection`, or
        None (the engine says which connection that cuts)."""
        refusing = refusing_zones(spec, live, connection.client, connection.port, "tcp")
        if not refusing:
            return None
        zones = ("firewalld's zone " if len(refusing) == 1 else "firewalld's zones ") + ", ".join(refusing)
        return f"{zones} would not admit tcp port {connection.port} from {connection.client}"

    def state_paths(self) -> list[str]:
        """firewalld's whole persistent configuration lives under /etc/firewalld."""
        return [CONFIG_DIR]

    def reactivate_argv(self) -> list[list[str]]:
        """Make restored files live: a reload re-reads the permanent configuration (a daemon
        that is not running reads it when it starts, so there is nothing to do then)."""
        return [["firewall-cmd", "--reload"]]

    # --- capture (Capturing) -----------------------------------------------------------------

    def capture_reads(self) -> Sequence[Read]:
        return [*self.reads(FirewalldSpec()), ReadGlob(STOCK_ZONES), ReadFile(ENABLED_LINK)]

    def capture_more_reads(self, facts: Facts) -> Sequence[Read]:
        return ()

    def capture(self, facts: Facts) -> Captured:
        from converge.providers.firewalld.capture import captured  # capture.py builds on this module

        stock = {os.path.basename(path).removesuffix(".xml") for path in facts.glob(STOCK_ZONES)}
        return captured(self.live(FirewalldSpec(), facts), stock, enabled_at_boot=facts.file(ENABLED_LINK) is not None)


def zone_calls(tool: Sequence[str], zone: str, current: Zone, wanted: Zone, *, offline: bool) -> list[tuple[str, ...]]:
    """The calls that turn `current` into `wanted`: one per kind of change (the tools refuse to
    mix kinds in one call), all items of that kind in it; additions before removals, so a zone
    never admits less than both ends."""
    calls = []
    for name, option in OPTIONS.items():
        added = sorted(set(getattr(wanted, name)) - set(getattr(current, name)))
        if added:
            calls.append((*tool, f"--zone={zone}", *(f"--add-{option}={item}" for item in added)))
    for name, option in OPTIONS.items():
        removed = sorted(set(getattr(current, name)) - set(getattr(wanted, name)))
        # firewall-offline-cmd takes --remove-service as a lokkit option that cannot be combined
        # with --zone ("Can't use lokkit options with other options").
        remove = "--remove-service-from-zone" if offline and name == "services" else f"--remove-{option}"
        if removed:
            calls.append((*tool, f"--zone={zone}", *(f"{remove}={item}" for item in removed)))
    if wanted.target != current.target:
        calls.append((*tool, f"--zone={zone}", f"--set-target={wanted.target}"))
    return calls


def refusing_zones(spec: FirewalldSpec, live: FirewalldLive, source: str, port: int, proto: str = "tcp") -> list[str]:
    """The zones that, once `spec` is applied, would refuse a new inbound connection from
    `source` to local `port`/`proto` (empty: it is admitted).

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
    return [name for name in candidates if not _zone_admits(zones[name], live.services, source, port, proto)]


def admits(spec: FirewalldSpec, live: FirewalldLive, source: str, port: int, proto: str = "tcp") -> bool:
    """Whether firewalld, once `spec` is applied, admits a new inbound connection (see `refusing_zones`)."""
    return not refusing_zones(spec, live, source, port, proto)


def _zone_admits(zone: Zone, services: dict[str, list[PortRange]], source: str, port: int, proto: str) -> bool:
    accepting = False
    for rule in (parse_rich_rule(text) for text in zone.rich_rules):
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
