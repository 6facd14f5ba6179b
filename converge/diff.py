"""Comparing structured state, for providers whose resources are more than one value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from converge.plan import Change


def describe_difference(before: Any, after: Any) -> str:
    """One line per changed field, `~ maxretry: 5 -> 3`, as DeepDiff finds them."""
    # deepdiff costs ~0.3 s to import; a plan of scalar state never needs it.
    from deepdiff import DeepDiff

    lines = []
    # threshold_to_diff_deeper=0: always name the fields, even when few are shared.
    for report_type, levels in DeepDiff(before, after, view="tree", threshold_to_diff_deeper=0).items():
        for level in levels:
            path = ".".join(str(part) for part in level.path(output_format="list")) or "(value)"
            if "added" in report_type:
                lines.append(f"+ {path}: {level.t2!r}")
            elif "removed" in report_type:
                lines.append(f"- {path}: {level.t1!r}")
            else:
                lines.append(f"~ {path}: {level.t1!r} -> {level.t2!r}")
    return "\n".join(sorted(lines, key=lambda line: line[2:]))


def keyed_changes(
    provider: str, live: Mapping[str, Any], desired: Mapping[str, Any], *, remove_undeclared: bool
) -> list[Change]:
    """Changes turning `live` into `desired`, resources keyed by name, in the desired order.

    Resources present live but not desired are removed only when `remove_undeclared`.
    """
    changes = []
    for name, wanted in desired.items():
        if name not in live:
            changes.append(Change(provider, name, "add", None, wanted))
        elif live[name] != wanted:
            detail = describe_difference(live[name], wanted) if isinstance(wanted, Mapping | list) else None
            changes.append(Change(provider, name, "update", live[name], wanted, detail=detail))
    if remove_undeclared:
        changes += [Change(provider, name, "remove", value, None) for name, value in live.items() if name not in desired]
    return changes
