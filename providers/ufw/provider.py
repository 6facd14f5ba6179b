"""The provider: reads, live state, the plan (changes and the exact `ufw` commands), and the
connection guard."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

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
    shell_assignments,
)
from converge.providers.ufw.parse import (
    ANY,
    UfwRule,
    parse_app_profiles,
    parse_status_active,
    port_ranges,
    read_user_rules,
)
from converge.providers.ufw.rules import RulePlan, UfwLive, completion_argvs, final_rules, plan_rules
from converge.providers.ufw.spec import UfwSpec

UFW_CONF = "/etc/ufw/ufw.conf"
UFW_DEFAULTS = "/etc/default/ufw"
USER_RULES = {4: "/etc/ufw/user.rules", 6: "/etc/ufw/user6.rules"}
APP_PROFILES = "/etc/ufw/applications.d/*"
# The boot script honours ENABLED in ufw.conf: force-stop flushes, start loads only if enabled.
UFW_INIT = "/lib/ufw/ufw-init"
STATUS_ARGV = ("ufw", "status")
# The files the `ufw` commands of a plan write (ufw.conf: enable, disable, logging; the defaults
# file: default; the user rules: rules), restored as read at plan time when a command fails.
WRITTEN = (UFW_CONF, UFW_DEFAULTS, *USER_RULES.values())
# ufw exits 0 when asked to delete a rule it does not have (the host changed since the plan).
NOT_DELETED = r"^Could not delete non-existent rule.*"

POLICY_OF = {"DROP": "deny", "ACCEPT": "allow", "REJECT": "reject"}
POLICY_KEYS = {"incoming": "DEFAULT_INPUT_POLICY", "outgoing": "DEFAULT_OUTPUT_POLICY", "routed": "DEFAULT_FORWARD_POLICY"}
MOVED = "deleted and appended again to keep the declared order"


class UfwProvider(Provider[UfwSpec, UfwLive]):
    name = "ufw"
    summary = "ufw: enabled state, logging, default policies and ordered rules (IPv4 and IPv6)"
    spec_model = UfwSpec
    # Two managers would fight over one ruleset.
    conflicts = ("firewalld",)

    # --- reads -------------------------------------------------------------------------------

    def presence_reads(self) -> Sequence[Read]:
        return [Which("ufw"), ReadFile(UFW_CONF)]

    def reads(self, spec: UfwSpec) -> Sequence[Read]:
        return [ReadFile(UFW_DEFAULTS), *(ReadFile(path) for path in USER_RULES.values()), ReadGlob(APP_PROFILES),
                RunCommand(STATUS_ARGV)]

    # --- absent ------------------------------------------------------------------------------

    def absent(self, facts: Facts) -> str | None:
        return None if facts.which("ufw") and facts.file(UFW_CONF) is not None else "ufw is not installed"

    # --- live --------------------------------------------------------------------------------

    def live(self, spec: UfwSpec, facts: Facts) -> UfwLive:
        status = output_or_raise(facts, STATUS_ARGV)
        conf, defaults = shell_assignments(facts.file(UFW_CONF)), shell_assignments(facts.file(UFW_DEFAULTS))
        active, at_boot = parse_status_active(status), conf.get("ENABLED", "no").lower() == "yes"
        settings: dict[str, Any] = {"enabled": active and at_boot, "logging": conf.get("LOGLEVEL", "off")}
        for direction, key in POLICY_KEYS.items():
            settings[f"default_{direction}"] = POLICY_OF.get(defaults.get(key, ""), defaults.get(key))
        ipv6 = defaults.get("IPV6", "yes").lower() == "yes"
        rules: dict[int, list[UfwRule]] = {}
        skipped: list[str] = []
        for family, path in USER_RULES.items():
            rules[family], skipped_here = read_user_rules(facts.file(path), path)
            # ufw reads user6.rules only with IPV6=yes: what it would skip there does not matter otherwise.
            skipped += skipped_here if family == 4 or ipv6 else []
        apps = parse_app_profiles(facts.glob(APP_PROFILES))
        unknown = sorted({rule.app for rule in spec.rules if rule.app and rule.app not in apps})
        if unknown:
            raise ProviderError(f"no such application profile in /etc/ufw/applications.d: {', '.join(unknown)}")
        files = {path: facts.file(path) for path in WRITTEN}
        return UfwLive(settings, active, at_boot, ipv6, rules, apps, files, skipped)

    # --- diff: changes and operations --------------------------------------------------------

    def diff(self, spec: UfwSpec, live: UfwLive) -> ProviderPlan:
        rules = plan_rules(spec, live)
        changes = self._setting_changes(spec, live) + self._rule_changes(spec, live, rules)
        return ProviderPlan(changes, self._operations(spec, live, rules) if changes else [])

    def _setting_changes(self, spec: UfwSpec, live: UfwLive) -> list[Change]:
        changes = []
        for key, wanted in spec.settings().items():
            if key == "enabled":
                changes += self._enabled_change(wanted, live)
            elif live.settings.get(key) != wanted:
                changes.append(Change(self.name, self.name, key, "update", live.settings.get(key), wanted))
        return changes

    def _enabled_change(self, wanted: bool, live: UfwLive) -> list[Change]:
        # Loaded now (runtime) and ENABLED in ufw.conf (persisted) are two sides of one setting.
        if live.active == live.enabled_at_boot == wanted:
            return []
        notes: tuple[str, ...] = ()
        if live.active != live.enabled_at_boot:
            notes = ("ufw.conf enables it but its rules are not loaded",) if live.enabled_at_boot else \
                    ("its rules are loaded but ufw.conf does not enable them at boot",)
        sides = {"runtime": Side(live.active, wanted), "persisted": Side(live.enabled_at_boot, wanted)}
        return [Change(self.name, self.name, "enabled", "update", live.settings["enabled"], wanted, notes, sides)]

    def _rule_changes(self, spec: UfwSpec, live: UfwLive, plan: RulePlan) -> list[Change]:
        changes = [Change(self.name, "rule", rule.describe(), "remove", rule.verdict(), None)
                   for rule in plan.deletions if rule.identity() not in plan.moved]
        completed = set()
        for completion in plan.completions:
            rule, family = completion.rule, completion.family
            completed.add(rule.identity())
            before = _live_rule(live, rule)
            verdict_before = before.verdict() if before else None
            sides = {f"ipv{other}": Side(verdict_before, rule.verdict()) for other in sorted(live.rules) if other != family}
            sides[f"ipv{family}"] = Side(None, rule.verdict())
            changes.append(Change(self.name, "rule", rule.describe(), "update", verdict_before, rule.verdict(),
                                  (f"missing from the IPv{family} rules ({USER_RULES[family]}): added there in place",),
                                  sides))
        for rule in plan.updates:
            if rule.identity() in completed:
                continue  # said by its completion change
            before = _live_rule(live, rule)
            changes.append(Change(self.name, "rule", rule.describe(), "update", before.verdict() if before else None,
                                  rule.verdict()))
        after = {family: final_rules(spec, live, plan, family) for family in live.rules}
        for rule in plan.appends:
            if rule.identity() not in plan.moved:
                changes.append(Change(self.name, "rule", rule.describe(), "add", None, rule.verdict()))
                continue
            # What changes is the rule's place (1-based, per family): show it as the sides that move.
            sides = {f"ipv{family}_position": Side(_position(live.rules[family], rule), _position(after[family], rule))
                     for family in sorted(live.rules) if _position(after[family], rule) is not None}
            before = _live_rule(live, rule)
            changes.append(Change(self.name, "rule", rule.describe(), "update", before.verdict() if before else None,
                                  rule.verdict(), (MOVED,), sides))
        return changes

    def _operations(self, spec: UfwSpec, live: UfwLive, plan: RulePlan) -> list[Operation]:
        """The `ufw` commands, in order: disable, defaults, logging, rule deletions, rules added or
        updated in place, and `--force enable` last, so the rules that admit this session are in
        place first. ufw checks each command before it writes its files or touches the kernel."""
        wanted = spec.settings()
        operations: list[Operation] = []
        if wanted.get("enabled") is False and (live.active or live.enabled_at_boot):
            operations.append(Run(("ufw", "disable")))
        for direction in POLICY_KEYS:
            key = f"default_{direction}"
            if key in wanted and live.settings.get(key) != wanted[key]:
                operations.append(Run(("ufw", "default", wanted[key], direction)))
        if "logging" in wanted and live.settings["logging"] != wanted["logging"]:
            operations.append(Run(("ufw", "logging", wanted["logging"])))
        operations += [Run(tuple(rule.argv(delete=True)), fails_on=NOT_DELETED) for rule in plan.deletions]
        operations += [Run(tuple(argv)) for argv in completion_argvs(live, plan)]
        operations += [Run(tuple(rule.argv())) for rule in [*plan.updates, *plan.appends]]
        if wanted.get("enabled") and not (live.active and live.enabled_at_boot):
            operations.append(Run(("ufw", "--force", "enable")))
        if not operations:
            return []
        # Undo, on the first command (so it runs once, last): ufw's files as read for this plan,
        # then the kernel's rules made to match them, as at boot (the watchdog does the same).
        undo = (*(restore(path, live.files.get(path), 0o640 if path in USER_RULES.values() else 0o644) for path in WRITTEN),
                *(Run(tuple(argv)) for argv in self.reactivate_argv()))
        operations[0] = replace(operations[0], undo=undo)
        return operations

    # --- warnings ----------------------------------------------------------------------------

    def warnings(self, spec: UfwSpec, live: UfwLive) -> list[str]:
        """Tuples ufw skips as malformed: neither ufw nor converge acts on them."""
        return [f"ufw: {skipped}" for skipped in live.skipped]

    # --- guard (ConnectionGuard) -------------------------------------------------------------

    def lockout(self, spec: UfwSpec, live: UfwLive, connection: Connection) -> str | None:
        """Why ufw, once `spec` is applied, would refuse a new connection like `connection`, or None
        (the engine says which connection that cuts)."""
        admitted, why = verdict(spec, live, connection.client, connection.port, "tcp")
        return None if admitted else why

    def state_paths(self) -> list[str]:
        """Everything that holds ufw's persistent state: its directory and the defaults file."""
        return ["/etc/ufw", UFW_DEFAULTS]

    def reactivate_argv(self) -> list[list[str]]:
        """Make restored files live, honouring the restored ENABLED: flush ufw's chains
        unconditionally, then load them again only if ufw.conf says ENABLED=yes (as at boot)."""
        return [[UFW_INIT, "force-stop"], [UFW_INIT, "start"]]

    # --- capture (Capturing) -----------------------------------------------------------------

    def capture_reads(self) -> Sequence[Read]:
        return self.reads(UfwSpec())

    def capture_more_reads(self, facts: Facts) -> Sequence[Read]:
        return ()

    def capture(self, facts: Facts) -> Captured:
        from converge.providers.ufw.capture import captured  # capture.py builds on this module


        return captured(self.live(UfwSpec(), facts))


def verdict(spec: UfwSpec, live: UfwLive, source: str, port: int, proto: str = "tcp") -> tuple[bool, str]:
    """Whether ufw, once `spec` is applied, admits a new inbound connection from `source` to
    local `port`/`proto`, and what decides it.

    Walks the rules of the source's family in their final order, as ufw's user-input chain does;
    the first rule that matches decides (`limit` admits: it only refuses the 7th connection in
    30 s), else the default incoming policy. Conservative where the local side is unknown: a
    deny/reject rule bound to a destination address, an interface or a source port counts as
    matching, an allow rule bound to one does not.
    """
    settings = {**live.settings, **spec.settings()}
    if not settings.get("enabled"):
        return True, "ufw is disabled"
    address = ipaddress.ip_address(source)
    for rule in final_rules(spec, live, plan_rules(spec, live), address.version):
        if rule.route or rule.direction != "in":
            continue
        if rule.source != ANY and address not in ipaddress.ip_network(rule.source):
            continue
        ranges = live.apps.get(rule.app, []) if rule.app else port_ranges(rule.port, rule.proto)
        if not any(r.admits(port, proto) for r in ranges):
            continue
        uncertain = rule.to != ANY or rule.interface_in or rule.source_port != ANY or rule.source_app
        allowing = rule.action in ("allow", "limit")
        if uncertain and allowing:
            continue
        return allowing, f"ufw's first rule matching {proto} port {port} from {source} would be `{rule.action} {rule.describe()}`"
    policy = settings.get("default_incoming")
    return policy == "allow", (f"no ufw rule would admit {proto} port {port} from {source} and the default incoming "
                               f"policy would be {policy}")


def admits(spec: UfwSpec, live: UfwLive, source: str, port: int, proto: str = "tcp") -> bool:
    """Whether ufw, once `spec` is applied, admits a new inbound connection (see `verdict`)."""
    return verdict(spec, live, source, port, proto)[0]


def _live_rule(live: UfwLive, rule: UfwRule) -> UfwRule | None:
    for rules in live.rules.values():
        for candidate in rules:
            if candidate.identity() == rule.identity():
                return candidate
    return None


def _position(rules: list[UfwRule], rule: UfwRule) -> int | None:
    return next((index + 1 for index, candidate in enumerate(rules) if candidate.identity() == rule.identity()), None)
