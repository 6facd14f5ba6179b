"""The updates provider's recorded cases, planned as tests/test_cases.py plans them.

Until tests/cases.py's RecordedHost implements `Host.lock` (abstract on main since the on-host
apply lock), tests/test_cases.py cannot instantiate it; this module plans the same case
directories through a subclass that does. CONVERGE_WRITE_CASES=1 writes expected.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from converge.baseline import load_baseline
from converge.engine import plan_host
from converge.registry import Registry
from tests.cases import CASES, RecordedHost, load_answers

CASE_DIRS = sorted(path for path in (CASES / "updates").iterdir() if (path / "reads.json").exists())


class _LockableRecordedHost(RecordedHost):
    def lock(self, holder: str, wait: float = 0.0) -> None:
        return None


def planned(case: Path) -> dict[str, Any]:
    baseline = load_baseline(case / "baseline.toml", Registry())
    record = plan_host(_LockableRecordedHost(load_answers(case)), baseline, Registry()).plan.as_json()
    return {key: record.get(key, []) for key in ("changes", "operations", "warnings", "skipped")} | {"error": record["error"]}


def _prose_free(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | list | dict) or value not in ("present", "differs", "edited")


@pytest.mark.parametrize("case", CASE_DIRS, ids=[path.name for path in CASE_DIRS])
def test_updates_case_plans_as_expected(case: Path) -> None:
    plan = planned(case)
    expected = case / "expected.json"
    if os.environ.get("CONVERGE_WRITE_CASES"):
        expected.write_text(json.dumps(plan, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    assert plan == json.loads(expected.read_text(encoding="utf-8"))
    assert all(_prose_free(change["before"]) and _prose_free(change["after"]) for change in plan["changes"])
