"""firewalld's output, parsed by pure functions: captured from real firewalld 1.3 in a test host."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from converge.providers.firewalld import FirewalldLive, FirewalldProvider, FirewalldSpec, zone_calls
from converge.providers.firewalld_zones import (
    Zone,
    canonical_rich_rule,
    parse_rich_rule,
    parse_services,
    parse_zones,
)

DATA = Path(__file__).parent / "data" / "firewalld"


def _text(name: str) -> str:
    return (DATA / name).read_text()


def _services() -> dict[str, list]:
    return parse_services({str(DATA / name): _text(name) for name in ("ssh.xml", "dns.xml", "https.xml")})


def test_zones_of_list_all_zones() -> None:
    zones = parse_zones(_text("permanent-zones.txt"))
    assert set(zones) == {"block", "dmz", "drop", "external", "home", "internal", "public", "trusted", "work"}
    assert zones["block"].target == "REJECT"  # printed as %%REJECT%%
    assert zones["public"] == Zone(
        target="ACCEPT", services=("dhcpv6-client", "https", "imap", "ssh"), ports=(),
        rich_rules=('rule family="ipv4" source address="192.0.2.0/24" service name="ssh" accept',
                    'rule family="ipv6" source address="2001:db8::/32" port port="80" protocol="tcp" reject'),
        sources=("198.51.100.0/24", "2001:db8:1::/48"), interfaces=("lo", "veth0"),
    )


def test_runtime_output_differs_where_the_runtime_drifted_and_rich_rule_order_does_not_matter() -> None:
    permanent, runtime = parse_zones(_text("permanent-zones.txt")), parse_zones(_text("runtime-zones.txt"))
    assert runtime["block"].sources == ("203.0.113.0/24",) and permanent["block"].sources == ()
    assert runtime["public"].rich_rules == permanent["public"].rich_rules  # printed in another order
    assert runtime["work"] == permanent["work"]


def test_rich_rules_compare_in_canonical_form() -> None:
    assert canonical_rich_rule("rule  family=ipv4 source address=192.0.2.0/24 service name=\"ssh\"   accept") == \
        'rule family="ipv4" source address="192.0.2.0/24" service name="ssh" accept'
    rule = parse_rich_rule('rule family="ipv6" source not address="2001:db8::/32" port port="80-90" protocol="tcp" reject')
    assert (rule.family, rule.source, rule.source_inverted, rule.action, rule.certain) == ("ipv6", "2001:db8::/32", True,
                                                                                          "reject", True)
    assert rule.port is not None and (rule.port.proto, rule.port.low, rule.port.high) == ("tcp", 80, 90)
    assert not parse_rich_rule('rule family="ipv4" destination address="192.0.2.1" accept').certain


def test_service_definitions() -> None:
    services = _services()
    assert [(p.proto, p.low) for p in services["ssh"]] == [("tcp", 22)]
    assert sorted((p.proto, p.low) for p in services["dns"]) == [("tcp", 53), ("udp", 53)]


def _live(running: bool = False) -> FirewalldLive:
    zones = parse_zones(_text("permanent-zones.txt"))
    return FirewalldLive(running, "public", zones, "public" if running else None, zones if running else None, _services())


def test_exclusive_zone_diff_and_one_call_per_kind() -> None:
    spec = FirewalldSpec.model_validate({"zones": {"public": {
        "services": ["ssh", "dns"], "ports": ["8443/tcp"], "target": "default", "exclusive": True,
    }}})
    live = _live()
    changes = FirewalldProvider().diff(spec, live)
    assert sorted((c.action, c.resource) for c in changes) == sorted([
        ("update", "public target"), ("add", "public service dns"), ("remove", "public service dhcpv6-client"),
        ("remove", "public service https"), ("remove", "public service imap"), ("add", "public port 8443/tcp"),
        ("remove", f"public rich rule {live.permanent['public'].rich_rules[0]}"),
        ("remove", f"public rich rule {live.permanent['public'].rich_rules[1]}"),
    ])  # sources and interfaces were not declared: left alone
    calls = zone_calls(["firewall-offline-cmd"], "public", live.permanent["public"],
                       spec.zones["public"].desired(live.permanent["public"]), offline=True)
    assert calls == [
        ["firewall-offline-cmd", "--zone=public", "--add-service=dns"],
        ["firewall-offline-cmd", "--zone=public", "--add-port=8443/tcp"],
        ["firewall-offline-cmd", "--zone=public", "--remove-service-from-zone=dhcpv6-client",
         "--remove-service-from-zone=https", "--remove-service-from-zone=imap"],
        ["firewall-offline-cmd", "--zone=public", *(f"--remove-rich-rule={r}" for r in live.permanent["public"].rich_rules)],
        ["firewall-offline-cmd", "--zone=public", "--set-target=default"],
    ]


def test_runtime_drift_is_a_change() -> None:
    live = _live(running=True)
    runtime = parse_zones(_text("runtime-zones.txt"))
    drifted = FirewalldLive(True, "public", live.permanent, "public", runtime, live.services)
    spec = FirewalldSpec.model_validate({"zones": {"block": {}, "public": {}}})
    [change] = FirewalldProvider().diff(spec, drifted)
    assert change.resource == "block (runtime)"
    assert "203.0.113.0/24" in (change.detail or "")
    assert FirewalldProvider().diff(spec, live) == []


@pytest.mark.parametrize(("source", "port", "expected"), [
    ("192.0.2.7", 22, True),          # default zone work: ssh
    ("192.0.2.7", 443, False),        # work has no https
    ("198.51.100.9", 443, True),      # source bound to public: https
    ("198.51.100.9", 80, False),      # public: nothing for 80, target default
    ("203.0.113.4", 22, False),       # source bound to block: target REJECT
    ("2001:db8::5", 443, True),       # bound to public too
    ("2001:db8::5", 80, False),       # a reject rich rule wins over an accept one
    ("2001:db8::5", 8080, True),      # an accept rich rule
])
def test_admits_picks_the_zone_by_source_then_default(source: str, port: int, expected: bool) -> None:
    rich = ['rule family="ipv6" source address="2001:db8::/32" port port="80" protocol="tcp" accept',
            'rule family="ipv6" source address="2001:db8::/32" port port="80" protocol="tcp" reject',
            'rule family="ipv6" source address="2001:db8::/32" port port="8080" protocol="tcp" accept']
    spec = FirewalldSpec.model_validate({"default_zone": "work", "zones": {
        "public": {"services": ["https"], "sources": ["198.51.100.0/24", "2001:db8::/32"], "interfaces": [],
                   "target": "default", "exclusive": True, "rich_rules": rich},
        "block": {"sources": ["203.0.113.0/24"]},
        "work": {"services": ["ssh"], "exclusive": True, "target": "default"},
    }})
    live = _live()
    assert FirewalldProvider().admits(spec, live, source, port) is expected


def test_admits_needs_every_zone_an_interface_could_be_in() -> None:
    live = _live()
    spec = FirewalldSpec.model_validate({"default_zone": "public", "zones": {
        "public": {"services": ["ssh"], "interfaces": [], "sources": [], "exclusive": True},
        "drop": {"interfaces": ["eth1"]},
    }})
    assert not FirewalldProvider().admits(spec, live, "192.0.2.7", 22)  # the connection may arrive on eth1
    spec.zones["drop"].interfaces = []
    assert FirewalldProvider().admits(spec, live, "192.0.2.7", 22)


def test_ports_and_sources_are_written_as_firewalld_prints_them() -> None:
    zone = FirewalldSpec.model_validate({"zones": {"public": {
        "ports": ["08443/tcp", "07000-7010/udp"], "sources": ["192.0.2.7", "2001:DB8::/32", "198.51.100.0/24"],
    }}}).zones["public"]
    assert zone.ports == ["8443/tcp", "7000-7010/udp"]
    assert zone.sources == ["192.0.2.7", "2001:db8::/32", "198.51.100.0/24"]


@pytest.mark.parametrize(("zone", "message"), [
    ({"services": ["ssh; reboot"]}, "not a service name"),
    ({"ports": ["8443"]}, "not a port"),
    ({"ports": ["99999/tcp"]}, "out of range"),
    ({"rich_rules": ["rule family='ipv4' accept"]}, "not a rich rule"),
    ({"sources": ["192.0.2.1/24"]}, "host bits zero"),
    ({"interfaces": ["a-very-long-interface-name"]}, "not an interface name"),
    ({"target": "accept"}, "Input should be"),
])
def test_bad_zone_values_are_refused_at_load_time(zone: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FirewalldSpec.model_validate({"zones": {"public": zone}})
