"""firewalld defects found on other people's zones (issue 16, defects 13-15), and which firewall is in use
(defect 10), on the real tools in test hosts."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from converge.providers.firewalld.spec import ZoneSpec
from tests.test_firewalld_host import start_firewalld
from tests.testhost import TestHost

LOGGED = 'rule family="ipv4" service name="ssh" log prefix="ssh-in " level="info" accept'
MYAPP = '<?xml version="1.0" encoding="utf-8"?>\n<service><short>myapp</short><port protocol="tcp" port="9000"/></service>\n'
ENABLED_LINK = "/etc/systemd/system/multi-user.target.wants/firewalld.service"


def _capture(host: TestHost, path: Path, *only: str) -> tuple[dict[str, Any], list[str]]:
    result = host.converge("capture", "-H", "local", *(arg for name in only for arg in ("--only", name)), "-o", str(path))
    assert result.returncode == 0, result.stderr
    return tomllib.loads(path.read_text()), result.stderr.splitlines()


def _plan(host: TestHost, path: Path) -> tuple[int, dict[str, Any]]:
    result = host.converge("plan", str(path), "--json")
    assert result.returncode in (0, 2), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout)["hosts"][0]


def test_a_log_prefix_with_a_space_is_accepted_as_firewalld_accepts_and_prints_it(test_host: TestHost,
                                                                                  tmp_path: Path) -> None:
    assert ZoneSpec.model_validate({"rich_rules": [LOGGED]}).rich_rules == [LOGGED]
    test_host.run(["firewall-offline-cmd", "--zone=public", f"--add-rich-rule={LOGGED}"])
    assert f"\t{LOGGED}" in test_host.run(["firewall-offline-cmd", "--zone=public", "--list-all"]).stdout
    captured = tmp_path / "captured.toml"
    document, _ = _capture(test_host, captured, "firewalld")
    assert document["firewalld"]["zones"]["public"]["rich_rules"] == [LOGGED]
    assert document["firewalld"]["zones"]["public"]["exclusive"] is True
    assert test_host.converge("validate", str(captured)).returncode == 0
    code, report = _plan(test_host, captured)
    assert (code, report["changes"]) == (0, [])
    # Declared on another zone, it is added as written.
    baseline = tmp_path / "work.toml"
    baseline.write_text(f"[firewalld.zones.work]\nrich_rules = [{json.dumps(LOGGED)}]\n")
    apply = test_host.converge("apply", str(baseline), "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert f"\t{LOGGED}" in test_host.run(["firewall-offline-cmd", "--zone=work", "--list-all"]).stdout
    assert _plan(test_host, baseline)[0] == 0


def test_a_zone_naming_an_undefined_service_is_captured_without_it_and_plan_warns_of_check_config(
        test_host: TestHost, tmp_path: Path) -> None:
    test_host.write("/etc/firewalld/services/myapp.xml", MYAPP)
    test_host.run(["firewall-offline-cmd", "--zone=work", "--add-service=myapp"])
    test_host.run(["rm", "/etc/firewalld/services/myapp.xml"])
    check = test_host.run(["firewall-offline-cmd", "--check-config"], check=False)
    assert check.returncode != 0 and "'myapp' not among existing services" in check.stderr
    captured = tmp_path / "captured.toml"
    document, notes = _capture(test_host, captured, "firewalld")
    work = document["firewalld"]["zones"]["work"]
    assert "myapp" not in work["services"] and work["exclusive"] is False
    assert ("local: firewalld: zone work: services 'myapp': no such service on this host (no myapp.xml in "
            "/usr/lib/firewalld/services or /etc/firewalld/services); not captured (the zone is captured as not "
            "exclusive)") in notes
    assert test_host.converge("validate", str(captured)).returncode == 0
    code, report = _plan(test_host, captured)
    assert (code, report["changes"]) == (0, [])
    assert ("firewalld: the current configuration fails `firewall-offline-cmd --check-config`: Configuration error: "
            "INVALID_SERVICE: Zone 'work': 'myapp' not among existing services") in report["warnings"]


def test_capture_notes_forward_and_the_custom_services_the_zones_need(test_host: TestHost, tmp_path: Path) -> None:
    test_host.write("/etc/firewalld/services/myapp.xml", MYAPP)
    test_host.run(["firewall-offline-cmd", "--zone=work", "--add-service=myapp"])
    test_host.run(["firewall-offline-cmd", "--zone=dmz", "--remove-forward"])
    captured = tmp_path / "captured.toml"
    document, notes = _capture(test_host, captured, "firewalld")
    assert "myapp" in document["firewalld"]["zones"]["work"]["services"]
    assert ("local: firewalld: forward (forwarding between a zone's interfaces and sources) is not managed by "
            "converge; not captured: dmz no, work yes") in notes
    assert ("local: firewalld: zone work: service myapp is defined on this host (/etc/firewalld/services/myapp.xml), "
            "not captured: a host planned with this baseline must define it too") in notes
    code, report = _plan(test_host, captured)
    assert (code, report["changes"]) == (0, [])


def test_capture_keeps_the_firewall_in_use(test_host: TestHost, tmp_path: Path) -> None:
    # ufw enabled, firewalld neither running nor enabled: ufw.
    test_host.run(["rm", "-f", ENABLED_LINK])
    test_host.run(["ufw", "--force", "enable"])
    document, _ = _capture(test_host, tmp_path / "ufw.toml", "ufw", "firewalld")
    assert "ufw" in document and "firewalld" not in document
    # ufw disabled (ENABLED=no, chains flushed), the firewalld daemon running: firewalld.
    test_host.run(["ufw", "disable"])
    start_firewalld(test_host)
    document, _ = _capture(test_host, tmp_path / "firewalld.toml", "ufw", "firewalld")
    assert "firewalld" in document and "ufw" not in document
