"""ufw: enabled state, logging, default policies and rules, read from ufw's own files.

State is read from /etc/ufw/ufw.conf, /etc/default/ufw, /etc/ufw/user.rules and user6.rules (the
rule tuples ufw itself keeps) plus `ufw status` for whether the rules are loaded in the kernel;
every change goes through the `ufw` command, which checks each rule before it writes or loads it.

Rule order is kept by appending: declared rules already in place in the declared order stay where
they are; from the first declared rule that is missing or out of order on, the rest are deleted
and appended again in order. A rule that only differs in action or comment is updated in place.

Capture writes the whole state (it is small) and every rule the baseline format can name, each
checked to plan in sync; `exclusive` is set only when no rule had to be left out.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from converge.errors import ProviderError
from converge.hosts import Host
from converge.plan import Change
from converge.provider import Captured, Provider
from converge.providers.ufw_rules import (
    ANY,
    PortRange,
    UfwRule,
    address_family,
    interleave_families,
    normalize_address,
    parse_app_profiles,
    parse_assignments,
    parse_status_active,
    parse_user_rules,
    port_ranges,
    rule_entry,
    uncapturable,
)
from converge.reads import Facts, Read, ReadFile, ReadGlob, RunCommand, Which

UFW_CONF = "/etc/ufw/ufw.conf"
UFW_DEFAULTS = "/etc/default/ufw"
USER_RULES = {4: "/etc/ufw/user.rules", 6: "/etc/ufw/user6.rules"}
APP_PROFILES = "/etc/ufw/applications.d/*"
# The boot script honours ENABLED in ufw.conf: force-stop flushes, start loads only if enabled.
UFW_INIT = "/lib/ufw/ufw-init"
STATUS_ARGV = ("ufw", "status")

POLICY_OF = {"DROP": "deny", "ACCEPT": "allow", "REJECT": "reject"}
POLICY_KEYS = {"incoming": "DEFAULT_INPUT_POLICY", "outgoing": "DEFAULT_OUTPUT_POLICY", "routed": "DEFAULT_FORWARD_POLICY"}

_INTERFACE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_APP = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._+-]{0,63}")
_COMMENT = re.compile(r"[A-Za-z0-9 _.,:;/()@+=-]{0,100}")
_PORT_ITEM = re.compile(r"([0-9]{1,5})(?::([0-9]{1,5}))?")
MAX_MULTIPORT = 15  # iptables multiport takes 15 ports, a range counting as two


def _check_port(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("a port is a number, a range \"6000:6007\" or a list \"80,443\" (as a string)")
    items, canonical, slots = str(value).split(","), [], 0
    for item in items:
        match = _PORT_ITEM.fullmatch(item.strip())
        if not match:
            raise ValueError(f"not a port: {item.strip()!r}; use numbers, \"low:high\" ranges, commas between; "
                             "for a service name use `app`")
        low, high = int(match[1]), int(match[2] or match[1])
        if not 1 <= low <= 65535 or not 1 <= high <= 65535:
            raise ValueError(f"port out of range 1-65535: {item.strip()!r}")
        if match[2] and low >= high:
            raise ValueError(f"range {item.strip()!r} must go from low to high")
        canonical.append(f"{low}:{high}" if match[2] else str(low))
        slots += 2 if match[2] else 1
    if slots > MAX_MULTIPORT:
        raise ValueError(f"at most {MAX_MULTIPORT} ports in one rule (a range counts as two)")
    return ",".join(canonical)


def _check_address(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("an address is a string: \"any\", an IPv4/IPv6 address or a network in CIDR form")
    if value == ANY:
        return ANY
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ValueError(f"not \"any\", an address or a network (host bits must be zero): {value!r}") from None
    return normalize_address(value)


def _pattern(regex: re.Pattern[str], what: str) -> BeforeValidator:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not regex.fullmatch(value):
            raise ValueError(f"not {what}: {value!r}")
        return value
    return BeforeValidator(check)


Port = Annotated[str, BeforeValidator(_check_port)]
Address = Annotated[str, BeforeValidator(_check_address)]
InterfaceName = Annotated[str, _pattern(_INTERFACE, "an interface name (letters, digits, _ . -, at most 15)")]
AppName = Annotated[str, _pattern(_APP, "an application profile name (letters, digits, spaces, . _ + -)")]
Comment = Annotated[str, _pattern(_COMMENT, "a comment of at most 100 letters, digits, spaces and _ . , : ; / ( ) @ + = -")]
Policy = Literal["allow", "deny", "reject"]


class UfwRuleSpec(BaseModel):
    """`[[ufw.rules]]`: one rule in ufw's own terms."""

    model_config = ConfigDict(extra="forbid", strict=True)

    action: Literal["allow", "deny", "reject", "limit"]
    port: Port | None = None
    app: AppName | None = None
    proto: Literal["tcp", "udp", "any"] = "any"
    source: Address = Field(ANY, alias="from")
    to: Address = ANY
    direction: Literal["in", "out"] = "in"
    interface: InterfaceName | None = None
    comment: Comment = ""
    ensure: Literal["present", "absent"] = "present"

    @model_validator(mode="after")
    def _consistent(self) -> UfwRuleSpec:
        if self.app and (self.port or self.proto != "any"):
            raise ValueError("`app` takes its ports and protocol from the profile: drop `port`/`proto`")
        if self.port and ("," in self.port or ":" in self.port) and self.proto == "any":
            raise ValueError("a port list or range needs proto = \"tcp\" or \"udp\"")
        families = {address_family(self.source), address_family(self.to)} - {None}
        if len(families) > 1:
            raise ValueError("`from` and `to` must be of one address family")
        return self

    def rule(self) -> UfwRule:
        interface = self.interface or ""
        return UfwRule(
            action=self.action, direction=self.direction,
            interface_in=interface if self.direction == "in" else "",
            interface_out=interface if self.direction == "out" else "",
            proto=self.proto, to=self.to, port=self.port or ANY, app=self.app or "",
            source=self.source, comment=self.comment,
        )

    def families(self, ipv6: bool) -> tuple[int, ...]:
        """ufw adds a rule for a specific address only in its family, otherwise in both."""
        family = address_family(self.source) or address_family(self.to)
        return (family,) if family else ((4, 6) if ipv6 else (4,))


class UfwSpec(BaseModel):
    """`[ufw]`; every setting is optional and left alone when absent."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool | None = None
    logging: Literal["off", "low", "medium", "high", "full"] | None = None
    default_incoming: Policy | None = None
    default_outgoing: Policy | None = None
    # "disabled" is what `ufw status` shows while the kernel does not forward: ufw's policy is deny.
    default_routed: Literal["allow", "deny", "reject", "disabled"] | None = None
    exclusive: bool = False
    rules: list[UfwRuleSpec] = []

    @model_validator(mode="after")
    def _one_entry_per_rule(self) -> UfwSpec:
        # ufw knows a rule by everything but its action and comment: two entries for one rule
        # would overwrite each other on every apply.
        first: dict[tuple[object, ...], int] = {}
        for index, rule_spec in enumerate(self.rules):
            identity = rule_spec.rule().identity()
            if identity in first:
                raise ValueError(f"rules[{index}] is the same rule as rules[{first[identity]}] "
                                 "(they differ only in action, comment or ensure)")
            first[identity] = index
        return self

    def settings(self) -> dict[str, Any]:
        routed = "deny" if self.default_routed == "disabled" else self.default_routed
        wanted = {"enabled": self.enabled, "logging": self.logging, "default_incoming": self.default_incoming,
                  "default_outgoing": self.default_outgoing, "default_routed": routed}
        return {key: value for key, value in wanted.items() if value is not None}


@dataclass(frozen=True)
class UfwLive:
    settings: dict[str, Any]
    # Whether the rules are loaded (`ufw status`) and whether ufw.conf starts them at boot.
    active: bool
    enabled_at_boot: bool
    ipv6: bool
    rules: dict[int, list[UfwRule]]
    # Application profile -> the ports it opens (for `admits`).
    apps: dict[str, list[PortRange]] = field(default_factory=dict)


@dataclass
class RulePlan:
    """What apply does to the rules, in order: delete, then update in place, then append."""

    deletions: list[UfwRule] = field(default_factory=list)
    updates: list[UfwRule] = field(default_factory=list)
    appends: list[UfwRule] = field(default_factory=list)
    moved: set[tuple[object, ...]] = field(default_factory=set)

    def final_rules(self, live: list[UfwRule], family_rules: set[tuple[object, ...]]) -> list[UfwRule]:
        """The rules of one family after apply, in order (for `admits`)."""
        gone = {rule.identity() for rule in self.deletions}
        updated = {rule.identity(): rule for rule in self.updates}
        kept = [updated.get(rule.identity(), rule) for rule in live if rule.identity() not in gone]
        return kept + [rule for rule in self.appends if rule.identity() in family_rules]


def plan_rules(spec: UfwSpec, live: UfwLive) -> RulePlan:
    """Compare declared rules with ufw's tuples, family by family, keeping the declared order."""
    plan = RulePlan()
    wanted = [(rule_spec.rule(), rule_spec.families(live.ipv6)) for rule_spec in spec.rules if rule_spec.ensure == "present"]
    positions = {family: {rule.identity(): (index, rule) for index, rule in reversed(list(enumerate(rules)))}
                 for family, rules in live.rules.items()}
    last = dict.fromkeys(live.rules, -1)
    tail_started = False
    for rule, families in wanted:
        found = [positions[family].get(rule.identity()) for family in families]
        in_order = all(hit is not None and hit[0] > last[family] for hit, family in zip(found, families, strict=True))
        if not tail_started and in_order:
            for hit, family in zip(found, families, strict=True):
                assert hit is not None
                last[family] = hit[0]
            if any(hit and hit[1].verdict() != rule.verdict() for hit in found):
                plan.updates.append(rule)
            continue
        tail_started = True
        if any(found):
            plan.deletions.append(next(hit[1] for hit in found if hit))
            plan.moved.add(rule.identity())
        plan.appends.append(rule)
    wanted_ids = {rule.identity() for rule, _ in wanted}
    absent_ids = {rule_spec.rule().identity() for rule_spec in spec.rules if rule_spec.ensure == "absent"}
    seen: set[tuple[object, ...]] = set()
    for rules in live.rules.values():
        for rule in rules:
            identity = rule.identity()
            undeclared = spec.exclusive and identity not in wanted_ids
            if identity not in seen and (identity in absent_ids or undeclared):
                plan.deletions.append(rule)
            seen.add(identity)
    return plan


class UfwProvider(Provider[UfwSpec, UfwLive]):
    name = "ufw"
    summary = "ufw: enabled state, logging, default policies and ordered rules (IPv4 and IPv6)"
    spec_model = UfwSpec
    # Two managers would fight over one ruleset.
    conflicts = ("firewalld",)

    def presence_reads(self) -> Sequence[Read]:
        return [Which("ufw"), ReadFile(UFW_CONF)]

    def reads(self, spec: UfwSpec) -> Sequence[Read]:
        return [*self.presence_reads(), ReadFile(UFW_DEFAULTS), *(ReadFile(path) for path in USER_RULES.values()),
                ReadGlob(APP_PROFILES), RunCommand(STATUS_ARGV)]

    def absent(self, facts: Facts) -> str | None:
        return None if facts.which("ufw") and facts.file(UFW_CONF) is not None else "ufw is not installed"

    def live(self, spec: UfwSpec, facts: Facts) -> UfwLive:
        status = facts.command(*STATUS_ARGV)
        if not status.ok:
            raise ProviderError(status.failure())
        conf, defaults = parse_assignments(facts.file(UFW_CONF)), parse_assignments(facts.file(UFW_DEFAULTS))
        active, at_boot = parse_status_active(status.stdout), conf.get("ENABLED", "no").lower() == "yes"
        settings: dict[str, Any] = {"enabled": active and at_boot, "logging": conf.get("LOGLEVEL", "off")}
        for direction, key in POLICY_KEYS.items():
            settings[f"default_{direction}"] = POLICY_OF.get(defaults.get(key, ""), defaults.get(key))
        try:
            rules = {family: parse_user_rules(facts.file(path)) for family, path in USER_RULES.items()}
        except ValueError as error:
            raise ProviderError(str(error)) from None
        apps = parse_app_profiles(facts.glob(APP_PROFILES))
        unknown = sorted({rule.app for rule in spec.rules if rule.app and rule.app not in apps})
        if unknown:
            raise ProviderError(f"no such application profile in /etc/ufw/applications.d: {', '.join(unknown)}")
        return UfwLive(settings, active, at_boot, defaults.get("IPV6", "yes").lower() == "yes", rules, apps)

    def diff(self, spec: UfwSpec, live: UfwLive) -> list[Change]:
        changes = []
        for key, wanted in spec.settings().items():
            if live.settings.get(key) != wanted:
                notes = ("ufw.conf enables it but its rules are not loaded",) if key == "enabled" and live.enabled_at_boot else ()
                changes.append(Change(self.name, key, "update", live.settings.get(key), wanted, notes))
        plan = plan_rules(spec, live)
        for rule in plan.deletions:
            if rule.identity() not in plan.moved:
                changes.append(Change(self.name, f"rule {rule.describe()}", "remove", rule.verdict(), None))
        for rule in plan.updates:
            before = _live_rule(live, rule)
            changes.append(Change(self.name, f"rule {rule.describe()}", "update", before.verdict() if before else None,
                                  rule.verdict()))
        for rule in plan.appends:
            moved = rule.identity() in plan.moved
            changes.append(Change(self.name, f"rule {rule.describe()}", "update" if moved else "add",
                                  rule.verdict() if moved else None, rule.verdict(),
                                  ("deleted and appended again to keep the declared order",) if moved else ()))
        return changes

    def apply(self, host: Host, spec: UfwSpec, live: UfwLive, changes: Sequence[Change]) -> list[str]:
        done: list[str] = []
        wanted = spec.settings()
        turn_on = "enabled" in wanted and wanted["enabled"] and not live.settings["enabled"]
        if wanted.get("enabled") is False and (live.active or live.enabled_at_boot):
            _ufw(host, ["ufw", "disable"], done)
        for direction in POLICY_KEYS:
            key = f"default_{direction}"
            if key in wanted and live.settings.get(key) != wanted[key]:
                _ufw(host, ["ufw", "default", wanted[key], direction], done)
        if "logging" in wanted and live.settings["logging"] != wanted["logging"]:
            _ufw(host, ["ufw", "logging", wanted["logging"]], done)
        plan = plan_rules(spec, live)
        for rule in plan.deletions:
            _ufw(host, rule.argv(delete=True), done)
        for rule in [*plan.updates, *plan.appends]:
            _ufw(host, rule.argv(), done)
        if turn_on:  # last, so the rules that admit this session are in place first
            _ufw(host, ["ufw", "--force", "enable"], done)
        return done

    def admits(self, spec: UfwSpec, live: UfwLive, source: str, port: int, proto: str = "tcp") -> bool:
        """Whether ufw, once `spec` is applied, admits a new inbound connection from `source` to
        local `port`/`proto`.

        Walks the rules of the source's family in their final order, as ufw's user-input chain
        does; the first rule that matches decides (`limit` admits: it only refuses the 7th
        connection in 30 s), else the default incoming policy. Conservative where the local side
        is unknown: a deny/reject rule bound to a destination address, an interface or a source
        port counts as matching, an allow rule bound to one does not.
        """
        settings = {**live.settings, **spec.settings()}
        if not settings.get("enabled"):
            return True
        family = ipaddress.ip_address(source).version
        plan = plan_rules(spec, live)
        family_ids = {rule_spec.rule().identity() for rule_spec in spec.rules if family in rule_spec.families(live.ipv6)}
        for rule in plan.final_rules(live.rules.get(family, []), family_ids):
            if rule.route or rule.direction != "in":
                continue
            if rule.source != ANY and ipaddress.ip_address(source) not in ipaddress.ip_network(rule.source):
                continue
            ranges = live.apps.get(rule.app, []) if rule.app else port_ranges(rule.port, rule.proto)
            if not any(r.admits(port, proto) for r in ranges):
                continue
            uncertain = rule.to != ANY or rule.interface_in or rule.source_port != ANY or rule.source_app
            allowing = rule.action in ("allow", "limit")
            if uncertain and allowing:
                continue
            return allowing
        return settings.get("default_incoming") == "allow"

    can_capture = True

    def capture_reads(self) -> Sequence[Read]:
        return [ReadFile(UFW_DEFAULTS), *(ReadFile(path) for path in USER_RULES.values()), ReadGlob(APP_PROFILES),
                RunCommand(STATUS_ARGV)]

    def capture(self, facts: Facts) -> Captured:
        """The whole ufw state (it is small): settings, then every rule the format can express;
        `exclusive` only when every rule was captured, so a plan never removes one left out."""
        live = self.live(UfwSpec(), facts)
        table: dict[str, Any] = {}
        notes: list[str] = []
        if live.active == live.enabled_at_boot:
            table["enabled"] = live.active
        else:
            notes.append(f"enabled: ufw.conf says ENABLED={'yes' if live.enabled_at_boot else 'no'} but the rules are "
                         f"{'' if live.active else 'not '}loaded; not captured")
        for key in ("logging", "default_incoming", "default_outgoing", "default_routed"):
            value = live.settings[key]
            try:
                UfwSpec.model_validate({key: value})
            except ValidationError:
                notes.append(f"{key}: {value!r} is not a value of the baseline format; not captured")
                continue
            if value is None:  # its line is missing from /etc/default/ufw; ufw's built-in default applies
                notes.append(f"{key}: not set in {UFW_DEFAULTS}; not captured")
                continue
            table[key] = value
        rules, left_out, remarks = _captured_rules(live)
        notes += left_out + remarks
        table["exclusive"] = not left_out
        if left_out:
            notes.append("exclusive: left false, so that a plan does not remove the rules not captured")
        if rules:
            table["rules"] = rules
        return Captured(table, notes)

    def state_paths(self) -> list[str]:
        """Everything that holds ufw's persistent state: its directory and the defaults file."""
        return ["/etc/ufw", UFW_DEFAULTS]

    def reactivate_argv(self) -> list[list[str]]:
        """Make restored files live, honouring the restored ENABLED: flush ufw's chains
        unconditionally, then load them again only if ufw.conf says ENABLED=yes (as at boot)."""
        return [[UFW_INIT, "force-stop"], [UFW_INIT, "start"]]


def _captured_rules(live: UfwLive) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """`[[ufw.rules]]` entries that plan in sync against `live`, a note per rule left out, and
    remarks on rules captured with less than ufw records.

    Each entry is checked by the baseline's own model, must name the very same ufw rule and must
    not reach a family it is missing from (a rule for any address made while IPv6 was off lives
    in user.rules only, but an entry for it would be added to user6.rules too).
    """
    order, apart = interleave_families(live.rules.get(4, []), live.rules.get(6, []))
    left_out = [f"rule {rule.describe()}: its place or action differs between IPv4 and IPv6; not captured"
                for rule in apart]
    found = {family: {rule.identity() for rule in rules} for family, rules in live.rules.items()}
    entries: list[dict[str, Any]] = []
    remarks: list[str] = []
    for rule in order:
        entry = rule_entry(rule)
        families = {family for family, identities in found.items() if rule.identity() in identities}
        reason = _why_not_captured(rule, entry, families, live)
        if reason:
            left_out.append(f"rule {rule.describe()}: {reason}; not captured")
            continue
        if rule.log:
            # Kept: ufw knows the rule without its log option, so the plan is in sync and
            # `exclusive` stays safe; only the logging of matches is lost.
            remarks.append(f"rule {rule.describe()}: captured without its `{rule.log}` option (not in the baseline format)")
        entries.append(entry)
    return entries, left_out, remarks


def _why_not_captured(rule: UfwRule, entry: dict[str, Any], families: set[int], live: UfwLive) -> str | None:
    """Why `entry` would not plan in sync for `rule` (found in `families`), or None when it would."""
    reason = uncapturable(rule)
    if reason:
        return reason
    if rule.app and rule.app not in live.apps:
        return f"no application profile {rule.app!r} in /etc/ufw/applications.d"
    try:
        rule_spec = UfwRuleSpec.model_validate(entry)
    except ValidationError as error:
        return "; ".join(problem["msg"] for problem in error.errors())
    if rule_spec.rule().identity() != rule.identity():
        return "the baseline format cannot name this exact rule"
    if not set(rule_spec.families(live.ipv6)) <= families:  # a plan would add it to the missing family
        return f"it is in the {'/'.join(f'IPv{family}' for family in sorted(families))} rules only"
    return None


def _live_rule(live: UfwLive, rule: UfwRule) -> UfwRule | None:
    for rules in live.rules.values():
        for candidate in rules:
            if candidate.identity() == rule.identity():
                return candidate
    return None


def _ufw(host: Host, argv: list[str], done: list[str]) -> None:
    # ufw checks each rule and writes its files before touching the kernel: a refused command
    # leaves the rules as they were. Steps already done stay done and are listed in the error.
    result = host.run(argv, check=False)
    if not result.ok:
        so_far = f" (already done: {'; '.join(done)})" if done else ""
        raise ProviderError(f"`{' '.join(argv)}` failed: {result.failure()}{so_far}")
    done.append(" ".join(argv))
