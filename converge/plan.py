"""The plan: uniform change records, per-host results, and their text and JSON renderings."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import click

Action = Literal["add", "update", "remove"]

SYMBOLS: dict[str, tuple[str, str]] = {"add": ("+", "green"), "update": ("~", "yellow"), "remove": ("-", "red")}


@dataclass(frozen=True)
class Side:
    """One side of a change that acts on several (the runtime value and the persisted one)."""

    before: Any
    after: Any


@dataclass(frozen=True)
class Change:
    """One difference between a baseline and a host.

    `kind` and `name` are its stable key (`boolean`, `httpd_can_network_connect_db`); `resource`,
    shown to people, is derived from them: the name alone when the kind is the provider's own
    name (a sysctl key), else `kind:name`. `before` and `after` are values or None (absent on that
    side), never prose: words go in `notes`. A change acting on several sides of a resource lists
    each in `sides`, so a script sees every side that changes.
    """

    provider: str
    kind: str
    name: str
    action: Action
    before: Any = None
    after: Any = None
    notes: tuple[str, ...] = ()
    sides: Mapping[str, Side] = field(default_factory=dict)
    # A longer, multi-line description shown under the change (a unified diff, a field list).
    detail: str | None = None
    # Provider-specific fields, added to the JSON record as they are (SPEC welcomes extras).
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def resource(self) -> str:
        return self.name if self.kind == self.provider else f"{self.kind}:{self.name}"

    def as_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "provider": self.provider, "resource": self.resource, "kind": self.kind, "name": self.name,
            "action": self.action, "before": self.before, "after": self.after,
        }
        for side, values in self.sides.items():
            record[side] = {"before": values.before, "after": values.after}
        if self.notes:
            record["notes"] = list(self.notes)
        if self.detail:
            record["detail"] = self.detail
        record.update(self.extra)
        return record

    def record(self) -> dict[str, Any]:
        """Every field, for a saved plan (`from_record` reads it back)."""
        return {
            "provider": self.provider, "kind": self.kind, "name": self.name, "action": self.action,
            "before": self.before, "after": self.after, "notes": list(self.notes),
            "sides": {side: [values.before, values.after] for side, values in self.sides.items()},
            "detail": self.detail, "extra": dict(self.extra),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Change:
        if record.get("action") not in SYMBOLS:
            raise ValueError(f"not a change action: {record.get('action')!r}")
        return cls(
            str(record["provider"]), str(record["kind"]), str(record["name"]), record["action"],
            record.get("before"), record.get("after"), tuple(str(note) for note in record.get("notes", ())),
            {str(side): Side(*values) for side, values in record.get("sides", {}).items()},
            record.get("detail"), dict(record.get("extra", {})),
        )


@dataclass(frozen=True)
class Skipped:
    provider: str
    reason: str


@dataclass(frozen=True)
class NotApplicable:
    """A declared resource this host cannot have: left alone, with the reason."""

    provider: str
    resource: str
    reason: str


@dataclass
class HostPlan:
    """What converge found on one host: its changes, or why it could not plan it."""

    host: str
    target: str
    changes: list[Change] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    not_applicable: list[NotApplicable] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # The providers the baseline declares for this host (reports list each), and the baseline's
    # name and SHA-256 over its files.
    providers: list[str] = field(default_factory=list)
    baseline: tuple[str, str] | None = None
    # What apply will run, provider by provider, in apply order: (provider, operation as JSON).
    operations: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Filled by apply: what was done, and whether a re-read found the host converged.
    applied: list[str] = field(default_factory=list)
    converged: bool | None = None

    @property
    def status(self) -> str:
        return "error" if self.errors else "ok"

    def as_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "host": self.host, "target": self.target, "status": self.status,
            "error": "; ".join(self.errors) if self.errors else None,
            "changes": [change.as_json() for change in self.changes],
            "skipped": [{"provider": s.provider, "reason": s.reason} for s in self.skipped],
        }
        if self.not_applicable:
            record["not_applicable"] = [{"provider": n.provider, "resource": n.resource, "reason": n.reason}
                                        for n in self.not_applicable]
        if self.warnings:
            record["warnings"] = self.warnings
        if self.operations:
            record["operations"] = [{"provider": provider, **operation} for provider, operation in self.operations]
        if self.converged is not None:
            record["applied"] = self.applied
            record["converged"] = self.converged
        return record


def summary(plans: Sequence[HostPlan]) -> dict[str, int]:
    counts = Counter(change.action for plan in plans for change in plan.changes)
    return {"add": counts["add"], "update": counts["update"], "remove": counts["remove"]}


def plan_exit_code(plans: Sequence[HostPlan]) -> int:
    """SPEC section 3: 1 if any host errored, else 2 if any has changes, else 0."""
    if any(plan.errors for plan in plans):
        return 1
    return 2 if any(plan.changes for plan in plans) else 0


def render_json(plans: Sequence[HostPlan]) -> str:
    document = {"hosts": [plan.as_json() for plan in plans], "summary": summary(plans)}
    return json.dumps(document, indent=2, default=str)


# Text from a host (names, paths, command output) must not drive the operator's terminal:
# C0 and C1 control characters but newline and tab are shown escaped.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` with terminal control characters (escape sequences, OSC 52, ...) made visible."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match[0]):02x}", text)


def _value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return json.dumps(value) if (not value or value != value.strip() or " " in value) else value
    return json.dumps(value, default=str)


def _shown(change: Change) -> str:
    if change.action == "add":
        return _value(change.after)
    if change.action == "remove":
        return _value(change.before)
    if change.before == change.after:
        # The whole is right on one side only (runtime, not persisted): show the sides that change.
        moving = [f"{side} {_value(v.before)} -> {_value(v.after)}" for side, v in change.sides.items() if v.before != v.after]
        return ", ".join(moving) if moving else _value(change.after)
    return f"{_value(change.before)} -> {_value(change.after)}"


def _change_lines(change: Change, width: int, color: bool) -> list[str]:
    symbol, colour = SYMBOLS[change.action]
    head = click.style(symbol, fg=colour, bold=True) if color else symbol
    line = f"    {head} {printable(change.resource).ljust(width)}  {printable(_shown(change))}"
    if change.notes:
        note = "(" + printable("; ".join(change.notes)) + ")"
        line += "  " + (click.style(note, dim=True) if color else note)
    lines = [line]
    if change.detail:
        lines += ["        " + printable(detail_line) for detail_line in change.detail.splitlines()]
    return lines


def render_text(plans: Sequence[HostPlan], *, color: bool) -> str:
    """A compact `terraform plan`-like view: one section per host, one line per change."""
    lines: list[str] = []
    for plan in plans:
        title = f"{plan.host} ({plan.target})" if plan.host != plan.target else plan.host
        lines.append(click.style(title, bold=True) if color else title)
        by_provider: dict[str, list[Change]] = {}
        for change in plan.changes:
            by_provider.setdefault(change.provider, []).append(change)
        width = max((len(printable(change.resource)) for change in plan.changes), default=0)
        for provider, changes in by_provider.items():
            lines.append(f"  {provider}")
            for change in changes:
                lines += _change_lines(change, width, color)
        for skipped in plan.skipped:
            lines.append(f"  {skipped.provider}: skipped: {printable(skipped.reason)}")
        for item in plan.not_applicable:
            lines.append(f"  {item.provider}: {printable(item.resource)}: {printable(item.reason)}")
        for warning in plan.warnings:
            text = f"  warning: {printable(warning)}"
            lines.append(click.style(text, fg="yellow") if color else text)
        for error in plan.errors:
            text = f"  error: {printable(error)}"
            lines.append(click.style(text, fg="red", bold=True) if color else text)
        if not plan.changes and not plan.errors:
            lines.append("  in sync")
        lines.append("")
    counts = summary(plans)
    lines.append(
        f"Plan: {counts['add']} to add, {counts['update']} to change, {counts['remove']} to remove"
        + (f" on {len(plans)} hosts." if len(plans) > 1 else ".")
    )
    return "\n".join(lines)
