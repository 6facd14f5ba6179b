"""Capture: the whole ufw state (it is small) as a `[ufw]` table, built on `live()`.

Every rule the baseline format can name is captured, each checked to plan in sync; `exclusive`
is set only when no rule had to be left out, so a plan never removes a rule capture dropped.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from converge.provider import Captured
from converge.providers.ufw.parse import ANY, UfwRule
from converge.providers.ufw.provider import UFW_DEFAULTS
from converge.providers.ufw.rules import UfwLive
from converge.providers.ufw.spec import UfwRuleSpec, UfwSpec

SETTINGS = ("logging", "default_incoming", "default_outgoing", "default_routed")


def captured(live: UfwLive) -> Captured:
    """The settings, then every rule the format can express."""
    table: dict[str, Any] = {}
    notes: list[str] = [*live.skipped]
    if live.active == live.enabled_at_boot:
        table["enabled"] = live.active
    else:
        notes.append(f"enabled: ufw.conf says ENABLED={'yes' if live.enabled_at_boot else 'no'} but the rules are "
                     f"{'' if live.active else 'not '}loaded; not captured")
    for key in SETTINGS:
        value = live.settings[key]
        if value is None:  # its line is missing from /etc/default/ufw; ufw's built-in default applies
            notes.append(f"{key}: not set in {UFW_DEFAULTS}; not captured")
            continue
        try:
            UfwSpec.model_validate({key: value})
        except ValidationError:
            notes.append(f"{key}: {value!r} is not a value of the baseline format; not captured")
            continue
        table[key] = value
    rules, left_out, remarks = _captured_rules(live)
    notes += left_out + remarks
    table["exclusive"] = not left_out
    if left_out:
        notes.append("exclusive: left false, so that a plan does not remove the rules not captured")
    if rules:
        table["rules"] = rules
    # In use when ufw.conf enables it at boot or its chains are loaded now.
    return Captured(table, notes, active=live.active or live.enabled_at_boot)


def _captured_rules(live: UfwLive) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """`[[ufw.rules]]` entries that plan in sync against `live`, a note per rule left out, and
    remarks on rules captured with less than ufw records.

    Each entry is checked by the baseline's own model, must name the very same ufw rule and must
    not reach a family it is missing from (a rule for any address made while IPv6 was off lives
    in user.rules only, but an entry for it would be added to user6.rules too).
    """
    order, apart = interleave_families(live.rules.get(4, []), live.rules.get(6, []))
    left_out = [f"rule {rule.named()}: its place or action differs between IPv4 and IPv6; not captured"
                for rule in apart]
    found = {family: {rule.identity() for rule in rules} for family, rules in live.rules.items()}
    entries: list[dict[str, Any]] = []
    remarks: list[str] = []
    for rule in order:
        entry = rule_entry(rule)
        families = {family for family, identities in found.items() if rule.identity() in identities}
        reason = _why_not_captured(rule, entry, families, live)
        if reason:
            left_out.append(f"rule {rule.named()}: {reason}; not captured")
            continue
        if rule.log:
            # Kept: ufw knows the rule without its log option, so the plan is in sync and
            # `exclusive` stays safe; only the logging of matches is lost.
            remarks.append(f"rule {rule.named()}: captured without its `{rule.log}` option (not in the baseline format)")
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


def uncapturable(rule: UfwRule) -> str | None:
    """Why a rule cannot be written as a `[[ufw.rules]]` entry, or None when it can."""
    if rule.route:
        return "route (forwarding) rules are not in the baseline format"
    if rule.source_port != ANY or rule.source_app:
        return "a source port or source application is not in the baseline format"
    if rule.proto not in ("tcp", "udp", ANY):
        return f"protocol {rule.proto} is not in the baseline format (tcp, udp or any)"
    if rule.interface_out if rule.direction == "in" else rule.interface_in:
        return "an interface on the other side of the rule's direction is not in the baseline format"
    return None


def rule_entry(rule: UfwRule) -> dict[str, str | int]:
    """A rule as a `[[ufw.rules]]` entry, leaving out what is the default (for a readable file)."""
    entry: dict[str, str | int] = {"action": rule.action}
    if rule.app:
        entry["app"] = rule.app  # its ports and protocol come from the profile
    else:
        if rule.port != ANY:
            entry["port"] = int(rule.port) if rule.port.isdigit() else rule.port
        if rule.proto != ANY:
            entry["proto"] = rule.proto
    if rule.source != ANY:
        entry["from"] = rule.source
    if rule.to != ANY:
        entry["to"] = rule.to
    if rule.direction != "in":
        entry["direction"] = rule.direction
    if rule.interface_in or rule.interface_out:
        entry["interface"] = rule.interface_in or rule.interface_out
    if rule.comment:
        entry["comment"] = rule.comment
    return entry


def interleave_families(ipv4: list[UfwRule], ipv6: list[UfwRule]) -> tuple[list[UfwRule], list[UfwRule]]:
    """One rule list whose order agrees with both families' files, and the rules that cannot be
    placed in it.

    ufw adds a rule for any address to both files and a rule for one family's address to that
    file only, so both orders usually agree. A rule found in both whose position (after `ufw
    insert`) or action/comment differs between them has no single place; it is returned apart.
    """
    shared = {rule.identity() for rule in ipv4} & {rule.identity() for rule in ipv6}
    order: list[UfwRule] = []
    apart: list[UfwRule] = []
    handled: set[tuple[object, ...]] = set()
    first = second = 0
    while first < len(ipv4) or second < len(ipv6):
        head4 = ipv4[first] if first < len(ipv4) else None
        head6 = ipv6[second] if second < len(ipv6) else None
        if head4 and (head4.identity() in handled or head4.identity() not in shared):
            if head4.identity() not in handled:
                order.append(head4)
            first += 1
        elif head6 and (head6.identity() in handled or head6.identity() not in shared):
            if head6.identity() not in handled:
                order.append(head6)
            second += 1
        elif head4 and head6 and head4.identity() == head6.identity() and head4.verdict() == head6.verdict():
            order.append(head4)
            handled.add(head4.identity())
            first, second = first + 1, second + 1
        else:
            # Two different shared rules at the heads (or one rule with two verdicts): the
            # IPv4 one is set apart, and its IPv6 twin is skipped when reached.
            assert head4 is not None
            apart.append(head4)
            handled.add(head4.identity())
            first += 1
    return order, apart
