"""Apply runs exactly the plan's operations: real ufw in a test host, every command and file
write recorded as the host carries it out, compared with the operations the plan listed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from tests.testhost import TestHost

# Runs inside the host as `APPLY BASELINE PROVIDER [COMMAND...]`: plan the baseline, optionally run
# COMMAND (a change behind the plan's back), apply the provider's plan through a host that records
# what it does, print both. (tests/test_firewalld_apply.py uses it too.)
# The script imports tests.recording: the repository root on its path, wherever pytest runs from.
RECORDING_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
APPLY = """
import json, subprocess, sys
from pathlib import Path
from converge.baseline import load_baseline
from converge.engine import plan_host
from converge.errors import ConvergeError
from converge.operations import to_json
from converge.registry import Registry
from tests.recording import Recording

host = Recording()
run = plan_host(host, load_baseline(Path(sys.argv[1]), Registry()), Registry())
[chosen] = [p for p in run.provider_plans if p.provider.name == sys.argv[2]]
if len(sys.argv) > 3:
    subprocess.run(sys.argv[3:], check=True, capture_output=True)
host.done = []
try:
    chosen.provider.apply(host, chosen.plan)
    error = None
except ConvergeError as failure:
    error = str(failure)
print(json.dumps({"planned": [to_json(op) for op in chosen.plan.operations], "done": host.done, "error": error}))
"""

BASELINE = """
[ufw]
enabled = true
logging = "medium"
default_incoming = "reject"
exclusive = true
[[ufw.rules]]
action = "limit"
port = 22
proto = "tcp"
comment = "ssh"
[[ufw.rules]]
action = "allow"
port = 80
proto = "tcp"
"""


def _apply(host: TestHost, tmp_path: Path, *sabotage: str) -> dict[str, Any]:
    path = tmp_path / "ufw.toml"
    path.write_text(BASELINE)
    result = host.run([sys.executable, "-c", APPLY, str(path), "ufw", *sabotage], env=RECORDING_ENV)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def as_done(operation: dict[str, Any]) -> dict[str, Any]:
    """What the host sees of an operation: the command, or the file and its content."""
    if operation["op"] == "run":
        return {"op": "run", "argv": operation["argv"], "input": operation.get("input")}
    return {key: operation[key] for key in ("op", "path", "content") if key in operation}


def _state(host: TestHost) -> dict[str, str | None]:
    files = {path: host.read(path) for path in ("/etc/ufw/ufw.conf", "/etc/default/ufw", "/etc/ufw/user.rules",
                                                "/etc/ufw/user6.rules")}
    return {**files, "iptables": host.run(["iptables", "-S"]).stdout, "ip6tables": host.run(["ip6tables", "-S"]).stdout}


def test_apply_runs_exactly_the_planned_commands_in_order(test_host: TestHost, tmp_path: Path) -> None:
    test_host.run(["ufw", "allow", "80/tcp"])
    test_host.run(["ufw", "allow", "3306/tcp"])
    result = _apply(test_host, tmp_path)
    assert result["error"] is None
    assert [" ".join(op["argv"]) for op in result["planned"]] == [
        "ufw default reject incoming", "ufw logging medium",
        "ufw delete allow in proto tcp from any to any port 80", "ufw delete allow in proto tcp from any to any port 3306",
        "ufw limit in proto tcp from any to any port 22 comment ssh", "ufw allow in proto tcp from any to any port 80",
        "ufw --force enable",
    ]
    assert result["done"] == [as_done(op) for op in result["planned"]]
    assert test_host.converge("plan", str(tmp_path / "ufw.toml")).returncode == 0


def test_a_command_failing_mid_list_restores_the_files_the_plan_read_and_reloads(test_host: TestHost, tmp_path: Path) -> None:
    test_host.run(["ufw", "allow", "80/tcp"])
    test_host.run(["ufw", "allow", "3306/tcp"])
    test_host.run(["ufw", "--force", "enable"])
    before = _state(test_host)
    # Deleted by hand after the plan: the plan's `ufw delete` of it finds nothing (ufw exits 0).
    result = _apply(test_host, tmp_path, "ufw", "delete", "allow", "3306/tcp")
    assert "ufw delete allow in proto tcp from any to any port 3306` failed: Could not delete non-existent rule" \
           in result["error"]
    assert "what was done before it was undone" in result["error"]
    planned = [as_done(op) for op in result["planned"]]
    failing = planned.index({"op": "run", "argv": ["ufw", "delete", "allow", "in", "proto", "tcp", "from", "any",
                                                    "to", "any", "port", "3306"], "input": None})
    undo = [as_done(step) for step in result["planned"][0]["undo"]]
    assert result["done"] == planned[:failing + 1] + undo
    assert [step.get("path") or " ".join(step["argv"]) for step in undo] == [
        "/etc/ufw/ufw.conf", "/etc/default/ufw", "/etc/ufw/user.rules", "/etc/ufw/user6.rules",
        "/lib/ufw/ufw-init force-stop", "/lib/ufw/ufw-init start"]
    # As the plan read it: the hand deletion made after the plan is undone too.
    assert _state(test_host) == before
