"""The shipped baselines/common/kmod.toml, applied in a test host: every module it disables is then
refused by the real modprobe the way CIS audits it (`modprobe -n -v NAME` runs `install /bin/false`)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from tests.testhost import TestHost

KMOD = Path(__file__).parent.parent / "baselines" / "common" / "kmod.toml"


def test_the_shipped_kmod_baseline_converges_and_modprobe_refuses_each_module(test_host: TestHost) -> None:
    disabled = tomllib.loads(KMOD.read_text())["kmod"]["disabled"]
    assert {"cramfs", "usb-storage", "dccp", "sctp", "rds", "tipc"} <= set(disabled)
    apply = test_host.converge("apply", str(KMOD), "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    plan = test_host.converge("plan", str(KMOD), "--json")
    assert plan.returncode == 0 and json.loads(plan.stdout)["hosts"][0]["changes"] == []
    shown = test_host.run(["modprobe", "--showconfig"]).stdout
    for name in disabled:
        assert test_host.run(["modprobe", "-n", "-v", name]).stdout.strip() == "install /bin/false", name
        assert f"blacklist {name.replace('-', '_')}" in shown, name
