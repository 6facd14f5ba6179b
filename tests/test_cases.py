"""Every provider's plan on recorded real answers: reads -> changes -> operations (tests/cases.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cases import CASES, planned

ALL_CASES = sorted(path.parent for path in CASES.glob("*/*/reads.json"))


@pytest.mark.parametrize("case", ALL_CASES, ids=[f"{case.parent.name}/{case.name}" for case in ALL_CASES])
def test_case_plans_as_expected(case: Path) -> None:
    result = planned(case)
    expected_file = case / "expected.json"
    if os.environ.get("CONVERGE_WRITE_CASES"):
        expected_file.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    assert result == json.loads(expected_file.read_text(encoding="utf-8"))


def test_plans_carry_values_not_prose() -> None:
    """SPEC section 4: before/after are values or null; words go in notes."""
    prose = {"differs", "present", "absent", "edited", "stopped", "running", "as permanent", "managed content"}
    for case in ALL_CASES:
        for change in planned(case)["changes"]:
            for side in ("before", "after"):
                value = change[side]
                assert not (isinstance(value, str) and value in prose), f"{case}: {change['resource']} {side} is prose: {value!r}"


def test_saved_operations_are_the_planned_ones() -> None:
    """A saved plan holds operations as JSON: every recorded case's operations read back equal."""
    from converge.operations import from_json, to_json

    for case in ALL_CASES:
        for record in planned(case)["operations"]:
            operation = {key: value for key, value in record.items() if key != "provider"}
            assert to_json(from_json(operation)) == operation, f"{case}: {operation}"
