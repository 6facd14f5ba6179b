"""The live state ufw keeps, and the rule plan: which rules are deleted, updated, completed in the
other family, and appended, so that the declared rules end in their declared order (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from converge.providers.ufw.parse import ANY, PortRange, UfwRule
from converge.providers.ufw.spec import UfwSpec


@dataclass(frozen=True)
class UfwLive:
    settings: dict[str, Any]
    # Whether the rules are loaded (`ufw status`) and whether ufw.conf starts them at boot.
    active: bool
    enabled_at_boot: bool
    ipv6: bool
    rules: dict[int, list[UfwRule]]
    # Application profile -> the ports it opens (for the lockout check).
    apps: dict[str, list[PortRange]] = field(default_factory=dict)
    # The text of each file in WRITTEN as read (None: missing), for the undo of a failed apply.
    files: dict[str, str | None] = field(default_factory=dict)
    # A warning per tuple ufw skips as malformed (file and line).
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Completion:
    """A declared rule found in one family only, added to the other in place: before the rule at
    `index` of that family's live list (its length: after the last)."""

    rule: UfwRule
    family: int
    index: int


@dataclass
class RulePlan:
    """What apply does to the rules, in order: delete, complete the missing family in place,
    update in place, then append."""

    deletions: list[UfwRule] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)
    updates: list[UfwRule] = field(default_factory=list)
    appends: list[UfwRule] = field(default_factory=list)
    moved: set[tuple[object, ...]] = field(default_factory=set)

    def final_rules(self, live: list[UfwRule], family_rules: set[tuple[object, ...]], family: int = 4) -> list[UfwRule]:
        """The rules of one family after apply, in order."""
        gone = {rule.identity() for rule in self.deletions}
        updated = {rule.identity(): rule for rule in self.updates}
        inserted: dict[int, list[UfwRule]] = {}
        for completion in self.completions:
            if completion.family == family:
                inserted.setdefault(completion.index, []).append(completion.rule)
        kept: list[UfwRule] = []
        for index, rule in enumerate(live):
            kept += inserted.get(index, [])
            if rule.identity() not in gone:
                kept.append(updated.get(rule.identity(), rule))
        kept += inserted.get(len(live), [])
        return kept + [rule for rule in self.appends if rule.identity() in family_rules]


def _completion_index(rule: UfwRule, other: list[UfwRule], rules: list[UfwRule], after: float) -> int:
    """Where in `rules` (one family) a rule found in `other` (the other family) belongs: before the
    first rule that follows it in `other` and is in `rules` after position `after`, else last."""
    identities = [candidate.identity() for candidate in other]
    here = {candidate.identity(): index for index, candidate in enumerate(rules)}
    start = identities.index(rule.identity()) + 1
    for identity in identities[start:]:
        if here.get(identity, -1) > after:
            return here[identity]
    return len(rules)


def plan_rules(spec: UfwSpec, live: UfwLive) -> RulePlan:
    """Compare declared rules with ufw's tuples, family by family, keeping the declared order:
    declared rules already in place in the declared order stay (one found in a family only is
    added to the other in place); from the first one missing or out of order on, the rest are
    deleted and appended again in order."""
    plan = RulePlan()
    wanted = [(rule_spec.rule(), rule_spec.families(live.ipv6)) for rule_spec in spec.rules if rule_spec.ensure == "present"]
    positions = {family: {rule.identity(): (index, rule) for index, rule in reversed(list(enumerate(rules)))}
                 for family, rules in live.rules.items()}
    last: dict[int, float] = dict.fromkeys(live.rules, -1)
    tail_started = False
    for rule, families in wanted:
        found = {family: hit for family in families if (hit := positions[family].get(rule.identity())) is not None}
        in_order = bool(found) and all(hit[0] > last[family] for family, hit in found.items())
        if not tail_started and in_order:
            for family, hit in found.items():
                last[family] = hit[0]
            for family in families:
                if family not in found:
                    other = live.rules[next(iter(found))]
                    index = _completion_index(rule, other, live.rules[family], last[family])
                    plan.completions.append(Completion(rule, family, index))
                    last[family] = index - 0.5  # the next declared rule must come after it
            if any(hit[1].verdict() != rule.verdict() for hit in found.values()):
                plan.updates.append(rule)
            continue
        tail_started = True
        if found:
            plan.deletions.append(next(iter(found.values()))[1])
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


# An address of one family meaning "any": a rule written with it reaches that family only.
FAMILY_ANY = {4: "0.0.0.0/0", 6: "::/0"}


def completion_argvs(live: UfwLive, plan: RulePlan) -> list[list[str]]:
    """The `ufw insert` commands that add each completed rule to its missing family only (its
    `any` addresses written as that family's), at its place once the deletions are done. ufw
    numbers IPv4 rules first, then IPv6; a place after the last rule is a plain add."""
    gone = {rule.identity() for rule in plan.deletions}
    counts = {family: sum(rule.identity() not in gone for rule in rules) for family, rules in live.rules.items()}
    argvs = []
    for completion in plan.completions:
        rule, family = completion.rule, completion.family
        before = sum(r.identity() not in gone for r in live.rules[family][:completion.index])
        before += sum(c.family == family for c in plan.completions[:plan.completions.index(completion)])
        only_here = replace(rule, source=FAMILY_ANY[family] if rule.source == ANY else rule.source,
                            to=FAMILY_ANY[family] if rule.to == ANY else rule.to)
        if before < counts[family]:
            argvs.append(only_here.argv(position=before + 1 + (counts[4] if family == 6 else 0)))
        else:
            argvs.append(only_here.argv())
        counts[family] += 1
    return argvs


def final_rules(spec: UfwSpec, live: UfwLive, plan: RulePlan, family: int) -> list[UfwRule]:
    """The rules of `family` once `plan` is applied."""
    family_ids = {rule_spec.rule().identity() for rule_spec in spec.rules
                  if rule_spec.ensure == "present" and family in rule_spec.families(live.ipv6)}
    return plan.final_rules(live.rules.get(family, []), family_ids, family)


