"""firewalld's output, parsed by pure functions: captured from real firewalld 1.3 in a test host."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from converge.provider import Connection
from converge.providers.firewalld import FirewalldProvider
from converge.providers.firewalld.parse import (
    Zone,
    canonical_rich_rule,
    parse_rich_rule,
    parse_services,
    parse_zones,
    unmanaged_settings,
)
from converge.providers.firewalld.provider import FirewalldLive, admits, zone_calls
from converge.providers.firewalld.spec import FirewalldSpec

DATA = Path(__file__).parent / "data" / "firewalld"


def _text(name: str) -> str:
    return (DATA / name).read_text()


def _services() -> dict[str, list]:
    return parse_services({str(DATA / name): _text(name) for name in ("ssh.xml", "dns.xml", "https.xml")})


def test_zones_of_list_all_zones() -> None:
    zones = parse_zones(_text("permanent-zones.txt"))
    assert set(zones) == {"block", "dmz", "drop", "external", "home", "internal", "public", "trusted", "work"}
    assert zones["block"].target == "REJECT"  # printed as %%REJECT%%
    assert dict(zones["public"].unmanaged) == {"icmp-block-inversion": "no", "protocols": "", "forward": "yes",
                                               "masquerade": "no", "forward-ports": "", "source-ports": "", "icmp-blocks": ""}
    assert replace(zones["public"], unmanaged=()) == Zone(
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
    files = {"/etc/firewalld/firewalld.conf": "DefaultZone=public\n"}  # no zone changed from the stock ones yet
    return FirewalldLive(running, "public", zones, "public" if running else None, zones if running else None, _services(),
                         files)


def test_exclusive_zone_diff_and_one_call_per_kind() -> None:
    spec = FirewalldSpec.model_validate({"zones": {"public": {
        "services": ["ssh", "dns"], "ports": ["8443/tcp"], "target": "default", "exclusive": True,
    }}})
    live = _live()
    plan = FirewalldProvider().diff(spec, live)
    assert sorted((c.action, c.resource) for c in plan.changes) == sorted([
        ("update", "target:public"), ("add", "service:public dns"), ("remove", "service:public dhcpv6-client"),
        ("remove", "service:public https"), ("remove", "service:public imap"), ("add", "port:public 8443/tcp"),
        ("remove", f"rich_rule:public {live.permanent['public'].rich_rules[0]}"),
        ("remove", f"rich_rule:public {live.permanent['public'].rich_rules[1]}"),
    ])  # sources and interfaces were not declared: left alone
    assert all(c.extra == {"zone": "public"} and not c.sides for c in plan.changes)  # offline: no runtime side
    calls = [
        ("firewall-offline-cmd", "--zone=public", "--add-service=dns"),
        ("firewall-offline-cmd", "--zone=public", "--add-port=8443/tcp"),
        ("firewall-offline-cmd", "--zone=public", "--remove-service-from-zone=dhcpv6-client",
         "--remove-service-from-zone=https", "--remove-service-from-zone=imap"),
        ("firewall-offline-cmd", "--zone=public", *(f"--remove-rich-rule={r}" for r in live.permanent["public"].rich_rules)),
        ("firewall-offline-cmd", "--zone=public", "--set-target=default"),
    ]
    assert zone_calls(["firewall-offline-cmd"], "public", live.permanent["public"],
                      spec.zones["public"].desired(live.permanent["public"]), offline=True) == calls
    # The plan's operations: those calls, then the check; offline, nothing to reload.
    assert [op.argv for op in plan.operations] == [*calls, ("firewall-offline-cmd", "--check-config")]  # type: ignore[union-attr]
    assert all(op.fails_on for op in plan.operations)  # type: ignore[union-attr]
    # Undone by putting back firewalld.conf and the zone file as read (public.xml was not there yet).
    assert [(type(step).__name__, step.path) for step in plan.operations[0].undo] == [  # type: ignore[union-attr]
        ("Write", "/etc/firewalld/firewalld.conf"), ("Remove", "/etc/firewalld/zones/public.xml")]


def test_runtime_drift_is_a_change() -> None:
    live = _live(running=True)
    runtime = parse_zones(_text("runtime-zones.txt"))
    drifted = FirewalldLive(True, "public", live.permanent, "public", runtime, live.services, live.files)
    spec = FirewalldSpec.model_validate({"zones": {"block": {}, "public": {}}})
    plan = FirewalldProvider().diff(spec, drifted)
    [change] = plan.changes
    assert (change.resource, change.action, change.before, change.after) == (
        "source:block 203.0.113.0/24", "remove", "203.0.113.0/24", None)
    assert change.notes == ("runtime differs from the permanent configuration; a reload makes it match",)
    assert {side: (v.before, v.after) for side, v in change.sides.items()} == {
        "permanent": (None, None), "runtime": ("203.0.113.0/24", None)}
    assert [op.argv for op in plan.operations] == [("firewall-cmd", "--reload")]  # type: ignore[union-attr]
    undo = plan.operations[0].undo  # firewalld.conf put back, then reloaded
    assert [getattr(step, "path", None) or step.argv for step in undo] == [  # type: ignore[union-attr]
        "/etc/firewalld/firewalld.conf", ("firewall-cmd", "--reload")]
    assert FirewalldProvider().diff(spec, live).changes == []


def test_with_the_daemon_running_a_change_shows_its_permanent_and_runtime_sides() -> None:
    live = _live(running=True)
    spec = FirewalldSpec.model_validate({"default_zone": "work", "zones": {"public": {"services": ["dns"]}}})
    plan = FirewalldProvider().diff(spec, live)
    assert [(c.resource, c.before, c.after, {k: (v.before, v.after) for k, v in c.sides.items()}) for c in plan.changes] == [
        ("default_zone", "public", "work", {"permanent": ("public", "work"), "runtime": ("public", "work")}),
        ("service:public dns", None, "dns", {"permanent": (None, "dns"), "runtime": (None, "dns")}),
    ]
    assert [op.argv for op in plan.operations] == [  # type: ignore[union-attr]
        ("firewall-cmd", "--permanent", "--zone=public", "--add-service=dns"), ("firewall-cmd", "--check-config"),
        ("firewall-cmd", "--set-default-zone=work"), ("firewall-cmd", "--reload")]
    assert [op.fails_on is not None for op in plan.operations] == [True, True, True, False]  # type: ignore[union-attr]


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
    assert admits(spec, live, source, port) is expected
    reason = FirewalldProvider().lockout(spec, live, Connection(source, port, "root", "publickey"))
    assert (reason is None) is expected


def test_admits_needs_every_zone_an_interface_could_be_in() -> None:
    live = _live()
    spec = FirewalldSpec.model_validate({"default_zone": "public", "zones": {
        "public": {"services": ["ssh"], "interfaces": [], "sources": [], "exclusive": True},
        "drop": {"interfaces": ["eth1"]},
    }})
    assert not admits(spec, live, "192.0.2.7", 22)  # the connection may arrive on eth1
    spec.zones["drop"].interfaces = []
    assert admits(spec, live, "192.0.2.7", 22)


def test_lockout_names_the_zones_that_refuse() -> None:
    spec = FirewalldSpec.model_validate({"zones": {"public": {"services": ["https"], "target": "default",
                                                                     "exclusive": True}}})
    assert FirewalldProvider().lockout(spec, _live(), Connection("192.0.2.7", 22, "root", "publickey")) == (
        "firewalld's zone public would not admit tcp port 22 from 192.0.2.7")


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


def test_forward_ports_and_other_unmanaged_settings_are_not_rich_rules() -> None:
    """Issue 16, defect 1: `--list-all-zones` prints forward ports tab-indented under `forward-ports:`,
    as it does rich rules. Output of firewalld 1.3.3's firewall-offline-cmd in a test host after
    --add-forward-port (twice), --add-masquerade, --add-source-port, --add-icmp-block, --add-protocol."""
    zones = parse_zones(_text("forward-zones.txt"))
    assert zones["public"].rich_rules == ('rule family="ipv4" source address="192.0.2.0/24" service name="ssh" accept',)
    assert dict(zones["public"].unmanaged)["forward-ports"] == (
        "port=7496:proto=tcp:toport=7496:toaddr=192.168.56.1 port=2222:proto=tcp:toport=22:toaddr=")
    assert unmanaged_settings(zones)["public"] == ["protocols", "masquerade", "forward-ports", "source-ports", "icmp-blocks"]
    live = FirewalldLive(False, "public", zones, None, None, _services(), {"/etc/firewalld/firewalld.conf": ""},
                         unmanaged_settings(zones))
    spec = FirewalldSpec.model_validate({"zones": {"public": {"services": ["ssh"], "exclusive": True}}})
    plan = FirewalldProvider().diff(spec, live)
    assert [(c.action, c.resource) for c in plan.changes] == [
        ("remove", "service:public dhcpv6-client"),
        ("remove", 'rich_rule:public rule family="ipv4" source address="192.0.2.0/24" service name="ssh" accept'),
    ]
    assert FirewalldProvider().warnings(spec, live) == [
        "firewalld: zone public: protocols, masquerade, forward-ports, source-ports, icmp-blocks set, not managed by "
        "converge (left as they are)"]
