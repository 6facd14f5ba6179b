"""The plan: uniform change records, per-host results, and their text and JSON renderings."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import click

Action = Literal["add", "update", "remove"]

SYMBOLS: dict[str, tuple[str, str]] = {"add": ("+", "green"), "update": ("~", "yellow"), "remove": ("-", "red")}


@dataclass(frozen=True)
class Change:
    """One difference between a baseline and a host, and what applying it will do."""

    provider: str
    resource: str
    action: Action
    before: Any
    after: Any
    notes: tuple[str, ...] = ()
    # Provider-specific fields, added to the JSON record as they are (SPEC welcomes extras).
    extra: dict[str, Any] = field(default_factory=dict)
    # A longer, multi-line description shown under the change (a unified diff, a field list).
    detail: str | None = None

    def as_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "provider": self.provider, "resource": self.resource, "action": self.action,
            "before": self.before, "after": self.after,
        }
        if self.notes:
            record["notes"] = list(self.notes)
        if self.detail:
            record["detail"] = self.detail
        record.update(self.extra)
        return record


@dataclass(frozen=True)
class Skipped:
    provider: str
    reason: str


@dataclass
class HostPlan:
    """What converge found on one host: its changes, or why it could not plan it."""

    host: str
    target: str
    changes: list[Change] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
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
        if self.warnings:
            record["warnings"] = self.warnings
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


def _value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return json.dumps(value) if (not value or value != value.strip() or " " in value) else value
    return json.dumps(value, default=str)


def _change_lines(change: Change, width: int, color: bool) -> list[str]:
    symbol, colour = SYMBOLS[change.action]
    head = click.style(symbol, fg=colour, bold=True) if color else symbol
    resource = change.resource.ljust(width)
    if change.action == "add":
        value = _value(change.after)
    elif change.action == "remove":
        value = _value(change.before)
    elif change.before == change.after:
        value = _value(change.after)
    else:
        value = f"{_value(change.before)} -> {_value(change.after)}"
    line = f"    {head} {resource}  {value}"
    if change.notes:
        note = "(" + "; ".join(change.notes) + ")"
        line += "  " + (click.style(note, dim=True) if color else note)
    lines = [line]
    if change.detail:
        lines += ["        " + detail_line for detail_line in change.detail.splitlines()]
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
        width = max((len(change.resource) for change in plan.changes), default=0)
        for provider, changes in by_provider.items():
            lines.append(f"  {provider}")
            for change in changes:
                lines += _change_lines(change, width, color)
        for skipped in plan.skipped:
            lines.append(f"  {skipped.provider}: skipped: {skipped.reason}")
        for warning in plan.warnings:
            text = f"  warning: {warning}"
            lines.append(click.style(text, fg="yellow") if color else text)
        for error in plan.errors:
            text = f"  error: {error}"
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
