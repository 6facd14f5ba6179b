"""`converge capture` of firewalld: a running daemon set up with firewall-cmd inside a test host,
captured, validated and planned against the same host."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from converge.providers.firewalld.capture import _captured_zone
from converge.providers.firewalld.parse import Zone, parse_zones, unmanaged_settings
from tests.test_firewalld_host import start_firewalld
from tests.testhost import TestHost

DATA = Path(__file__).parent / "data" / "firewalld"
RICH = 'rule family="ipv4" source address="192.0.2.0/24" service name="ssh" accept'
# A log prefix with a space: firewalld accepts and prints it, and so does a baseline (issue 16, defect 13).
LOGGING = 'rule family="ipv4" source address="203.0.113.0/24" log prefix="ssh probe" level="info" accept'


def test_unmanaged_settings_of_stock_zones_are_external_masquerade_only() -> None:
    # firewalld 1.3's own zones, as `firewall-offline-cmd --list-all-zones` printed them here.
    assert unmanaged_settings(parse_zones((DATA / "permanent-zones.txt").read_text())) == {"external": ["masquerade"]}


def test_a_zone_with_an_ipset_source_is_captured_without_it_and_not_exclusive() -> None:
    # An ipset source is valid for firewalld but not for a baseline; exclusive would remove it.
    table, left_out = _captured_zone(Zone("REJECT", services=("ssh",), sources=("10.0.0.0/8", "ipset:blocked")))
    assert table == {"target": "REJECT", "services": ["ssh"], "ports": [], "rich_rules": [], "sources": ["10.0.0.0/8"],
                     "exclusive": False}
    assert left_out == ["sources 'ipset:blocked' does not pass the baseline's pattern; not captured "
                        "(the zone is captured as not exclusive)"]


def _firewall_cmd(host: TestHost, *calls: list[str]) -> None:
    for args in calls:
        host.run(["firewall-cmd", *args])


def test_capture_of_a_running_firewalld_round_trips(test_host: TestHost, tmp_path: Path) -> None:
    start_firewalld(test_host)
    _firewall_cmd(
        test_host,
        # One call per kind of change: firewall-cmd refuses to mix them.
        ["--permanent", "--zone=public", "--add-service=https"],
        ["--permanent", "--zone=public", "--remove-service=dhcpv6-client"],
        ["--permanent", "--zone=public", "--add-port=8443/tcp"],
        ["--permanent", "--zone=public", f"--add-rich-rule={RICH}"],
        ["--permanent", "--zone=public", "--add-source=198.51.100.0/24"],
        ["--permanent", "--zone=work", "--set-target=DROP"],
        ["--permanent", "--zone=dmz", "--add-masquerade"],
        ["--permanent", "--zone=internal", f"--add-rich-rule={LOGGING}"],
        ["--permanent", "--new-zone=backoffice"],
        ["--permanent", "--zone=backoffice", "--add-service=postgresql"],
        ["--set-default-zone=home"],
        ["--reload"],
        ["--zone=work", "--add-service=imap"],  # runtime only: drift a reload would undo
        ["--permanent", "--new-zone=staging"],  # not loaded at runtime until a reload: no drift
    )
    captured = tmp_path / "captured.toml"

    result = test_host.converge("capture", "-H", "local", "--only", "firewalld", "-o", str(captured))
    assert result.returncode == 0, result.stderr
    document = tomllib.loads(captured.read_text())
    assert document["firewalld"] == {
        "default_zone": "home",
        "zones": {
            "backoffice": {"target": "default", "services": ["postgresql"], "ports": [], "rich_rules": [], "exclusive": True},
            "dmz": {"target": "default", "services": ["ssh"], "ports": [], "rich_rules": [], "exclusive": True},
            "internal": {"target": "default", "services": ["dhcpv6-client", "mdns", "samba-client", "ssh"],
                         "ports": [], "rich_rules": [LOGGING], "exclusive": True},
            "public": {"target": "default", "services": ["https", "ssh"], "ports": ["8443/tcp"], "rich_rules": [RICH],
                       "sources": ["198.51.100.0/24"], "exclusive": True},
            "staging": {"target": "default", "services": [], "ports": [], "rich_rules": [], "exclusive": True},
        },
    }
    prefix = "local: firewalld: "
    notes = [line.removeprefix(prefix) for line in result.stderr.splitlines() if line.startswith(prefix)]
    assert notes == [
        "zone backoffice: created on this host; converge cannot create zones, so a host planned with this baseline "
        "must already have it",
        "zone dmz: masquerade set, not managed by converge; not captured",
        "zone staging: created on this host; converge cannot create zones, so a host planned with this baseline "
        "must already have it",
        "zone work: runtime differs from the permanent configuration (a reload would undo it); not captured",
        "forward (forwarding between a zone's interfaces and sources) is not managed by converge; not captured: "
        "backoffice no, dmz yes, internal yes, public yes, staging no",
    ]

    validate = test_host.converge("validate", str(captured))
    assert validate.returncode == 0, validate.stdout + validate.stderr
    plan = test_host.converge("plan", str(captured))
    assert plan.returncode == 0, plan.stdout + plan.stderr

    # The captured zones are exclusive: what is added later is planned for removal.
    _firewall_cmd(test_host, ["--permanent", "--zone=public", "--add-service=imap"], ["--reload"])
    plan = test_host.converge("plan", str(captured), "--json")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    changes = json.loads(plan.stdout)["hosts"][0]["changes"]
    assert [(c["action"], c["resource"]) for c in changes] == [("remove", "service:public imap")]
