"""The apparmor plan as JSON, on the recorded cases (tests/cases/apparmor): before, after and each
side are modes or null, never prose; the profile text is in `detail`; a change with a kernel
operation names both sides, the file's and the kernel's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cases import CASES, planned

APPARMOR = sorted(path.parent for path in (CASES / "apparmor").glob("*/reads.json"))
MODES = {"enforce", "complain", "disabled", "mixed", None}


def _is_mode(value: Any) -> bool:
    # A file whose profiles run in different modes in the kernel: each profile's mode.
    return value in MODES if not isinstance(value, dict) else all(mode in MODES for mode in value.values())


def test_every_case_is_recorded() -> None:
    assert {case.name for case in APPARMOR} >= {"in-sync", "drift", "removal", "pending-without-kernel"}


@pytest.mark.parametrize("case", APPARMOR, ids=lambda case: case.name)
def test_before_after_and_sides_are_modes(case: Path) -> None:
    plan = planned(case)
    for change in plan["changes"]:
        assert _is_mode(change["before"]) and _is_mode(change["after"]), change
        for side in ("file", "kernel"):
            if side in change:
                assert _is_mode(change[side]["before"]) and _is_mode(change[side]["after"]), change
        assert ("file" in change) == ("kernel" in change)
        if change.get("detail"):
            assert change["detail"].startswith(("--- /etc/apparmor.d/", "--- /dev/null"))


def test_kernel_sides_only_where_the_kernel_is_loaded_or_unloaded() -> None:
    drift = {change["name"]: change for change in planned(CASES / "apparmor" / "drift")["changes"]}
    assert drift["usr.sbin.dnsmasq"]["kernel"] == {"before": "complain", "after": None}
    assert drift["usr.sbin.nginx"]["kernel"] == {"before": None, "after": "enforce"}
    pending = planned(CASES / "apparmor" / "pending-without-kernel")
    assert all("kernel" not in change for change in pending["changes"])
    assert not any(op.get("argv", [""])[-1] in ("-r", "-R") for op in pending["operations"])
