"""Comparing structured state, for providers whose resources are more than one value."""

from __future__ import annotations

from typing import Any


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
