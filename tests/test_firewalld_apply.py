"""Apply runs exactly the plan's operations: a real firewalld daemon in a test host, every call
and file write recorded as the host carries it out, compared with the operations the plan listed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.test_firewalld_host import start_firewalld
from tests.test_ufw_apply import APPLY, RECORDING_ENV, as_done
from tests.testhost import TestHost

BASELINE = """
[firewalld]
default_zone = "work"
[firewalld.zones.public]
services = ["ssh", "https"]
ports = ["8443/tcp"]
exclusive = true
[firewalld.zones.work]
target = "DROP"
"""
ZONE_FILES = ("/etc/firewalld/firewalld.conf", "/etc/firewalld/zones/public.xml", "/etc/firewalld/zones/work.xml")


def _apply(host: TestHost, tmp_path: Path, baseline: str, *sabotage: str) -> dict[str, Any]:
    path = tmp_path / "firewalld.toml"
    path.write_text(baseline)
    result = host.run([sys.executable, "-c", APPLY, str(path), "firewalld", *sabotage], env=RECORDING_ENV)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _state(host: TestHost) -> tuple[dict[str, str | None], str, str]:
    files = {path: host.read(path) for path in ZONE_FILES}
    return files, host.run(["firewall-cmd", "--list-all-zones"]).stdout, host.run(["nft", "list", "ruleset"]).stdout


def test_apply_runs_exactly_the_planned_calls_in_order(test_host: TestHost, tmp_path: Path) -> None:
    start_firewalld(test_host)
    test_host.run(["firewall-cmd", "--zone=public", "--add-service=imap"])  # runtime drift: the reload removes it
    result = _apply(test_host, tmp_path, BASELINE)
    assert result["error"] is None
    assert [" ".join(op["argv"]) for op in result["planned"]] == [
        "firewall-cmd --permanent --zone=public --add-service=https",
        "firewall-cmd --permanent --zone=public --add-port=8443/tcp",
        "firewall-cmd --permanent --zone=public --remove-service=dhcpv6-client",
        "firewall-cmd --permanent --zone=work --set-target=DROP",
        "firewall-cmd --check-config",
        "firewall-cmd --set-default-zone=work",
        "firewall-cmd --reload",
    ]
    assert result["done"] == [as_done(op) for op in result["planned"]]
    assert test_host.converge("plan", str(tmp_path / "firewalld.toml")).returncode == 0


def test_a_call_failing_mid_list_restores_the_files_the_plan_read_and_reloads(test_host: TestHost, tmp_path: Path) -> None:
    start_firewalld(test_host)
    before = _state(test_host)
    # Passes converge's pattern (only firewalld knows its grammar); firewalld refuses it (INVALID_RULE).
    bogus = 'rich_rules = [\'rule family="ipv4" bogus accept\']'
    baseline = BASELINE.replace('ports = ["8443/tcp"]', f'ports = ["8443/tcp"]\n{bogus}')
    result = _apply(test_host, tmp_path, baseline)
    assert "--add-rich-rule=rule family=\"ipv4\" bogus accept` failed: " in result["error"]
    assert "INVALID_RULE" in result["error"] and "what was done before it was undone" in result["error"]
    planned = [as_done(op) for op in result["planned"]]
    failing = next(index for index, op in enumerate(planned) if any("--add-rich-rule" in part for part in op["argv"]))
    assert failing > 0  # something was changed before it
    undo = [as_done(step) for step in result["planned"][0]["undo"]]
    assert result["done"] == planned[:failing + 1] + undo
    assert [step.get("path") or " ".join(step["argv"]) for step in undo] == [*ZONE_FILES, "firewall-cmd --reload"]
    assert _state(test_host) == before
