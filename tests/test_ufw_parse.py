"""ufw's files, parsed by pure functions: tuples captured from real ufw 0.36 in a test host."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from converge.provider import Connection, ParseError, shell_assignments
from converge.providers.ufw import UfwProvider
from converge.providers.ufw.parse import (
    UfwRule,
    parse_app_profiles,
    parse_status_active,
    parse_tuple,
    parse_user_rules,
    port_ranges,
    read_user_rules,
)
from converge.providers.ufw.provider import admits
from converge.providers.ufw.rules import UfwLive, plan_rules
from converge.providers.ufw.spec import UfwSpec

DATA = Path(__file__).parent / "data" / "ufw"


def _text(name: str) -> str:
    return (DATA / name).read_text()


def test_tuples_of_every_kind_parse_to_the_rules_ufw_shows() -> None:
    rules = parse_user_rules(_text("user.rules"))
    assert len(rules) == 15
    assert rules[0] == UfwRule("allow", proto="tcp", port="22", comment="new")
    assert rules[1] == UfwRule("allow", proto="tcp", port="80,443", source="192.0.2.0/24", comment="web")
    assert rules[3] == UfwRule("deny", direction="out", proto="tcp", port="25", to="203.0.113.5")
    assert rules[4] == UfwRule("allow", proto="tcp", port="22", app="OpenSSH")
    assert rules[5] == UfwRule("allow", interface_in="lo")
    assert rules[7] == UfwRule("allow", proto="tcp", source="10.0.0.1", source_port="22", source_app="OpenSSH")
    assert rules[8] == UfwRule("allow", route=True, interface_in="lo", interface_out="lo")
    assert rules[9].source == "192.0.2.1"  # ufw drops /32
    assert rules[11] == UfwRule("allow", interface_in="lo", proto="udp", port="5", to="10.1.2.3")
    assert rules[13] == UfwRule("allow", log="log", proto="tcp", port="25")
    assert rules[14] == UfwRule("allow", direction="out", interface_out="lo", log="log-all", proto="udp", port="99")


def test_ipv6_tuples_app_names_with_spaces_and_utf8_comments() -> None:
    rules = parse_user_rules(_text("user6.rules"))
    assert rules[0].source == "any" and rules[0].to == "any"  # ::/0
    assert rules[3] == UfwRule("reject", source="2001:db8::/32")
    assert rules[-1].app == "WWW Full"
    assert rules[-1].comment == "web, v6 only"
    assert parse_tuple("### tuple ### deny any any 0.0.0.0/0 any 0.0.0.0/0 in comment=c3a9").comment == "é"


def test_a_malformed_tuple_is_skipped_as_ufw_does_with_a_warning_naming_file_and_line() -> None:
    bad_length = r"^/etc/ufw/user.rules: unexpected ufw rule tuple \(bad length\): '### tuple ### allow tcp 22'"
    with pytest.raises(ParseError, match=bad_length):
        parse_tuple("### tuple ### allow tcp 22", "/etc/ufw/user.rules")
    text = ("# a comment\n### tuple ### allow tcp 22\n### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in\n"
            "### tuple ### allow tcp 81 0.0.0.0/0 any 0.0.0.0/0 eth_0\n"
            "### tuple ### allow tcp 82 0.0.0.0/0 any 0.0.0.0/0\n")  # ufw's old 6-field format: direction in
    rules, skipped = read_user_rules(text, "/etc/ufw/user.rules")
    assert [(rule.port, rule.direction) for rule in rules] == [("80", "in"), ("82", "in")]
    assert skipped == [
        "/etc/ufw/user.rules line 2: unexpected ufw rule tuple (bad length): '### tuple ### allow tcp 22'; "
        "ufw skips this tuple, and so does converge",
        "/etc/ufw/user.rules line 4: unexpected ufw rule tuple (interface): "
        "'### tuple ### allow tcp 81 0.0.0.0/0 any 0.0.0.0/0 eth_0'; ufw skips this tuple, and so does converge",
    ]
    assert parse_user_rules(_text("user.rules.empty")) == []
    assert parse_user_rules(None) == []


def test_selector_round_trips_to_ufw_syntax() -> None:
    rules = parse_user_rules(_text("user.rules"))
    assert rules[1].argv() == ["ufw", "allow", "in", "proto", "tcp", "from", "192.0.2.0/24", "to", "any", "port", "80,443",
                               "comment", "web"]
    assert rules[8].argv(delete=True) == ["ufw", "route", "delete", "allow", "in", "on", "lo", "out", "on", "lo",
                                          "from", "any", "to", "any"]
    route = parse_tuple("### tuple ### route:deny any 53 0.0.0.0/0 any 0.0.0.0/0 in")  # as ufw 0.36 writes it
    assert route.argv(delete=True) == ["ufw", "route", "delete", "deny", "from", "any", "to", "any", "port", "53"]
    assert route.describe() == "route from any to any port 53"
    outbound = parse_tuple("### tuple ### route:allow any 80 0.0.0.0/0 any 0.0.0.0/0 out_lo")
    assert outbound.argv(delete=True) == ["ufw", "route", "delete", "allow", "out", "on", "lo", "from", "any", "to", "any",
                                          "port", "80"]
    assert rules[14].argv() == ["ufw", "allow", "out", "on", "lo", "log-all", "proto", "udp", "from", "any", "to", "any",
                                "port", "99"]


def test_config_files_and_status() -> None:
    conf = shell_assignments(_text("ufw.conf"))
    assert conf["ENABLED"] == "yes" and conf["LOGLEVEL"] == "medium"
    defaults = shell_assignments(_text("default-ufw"))
    assert defaults["DEFAULT_INPUT_POLICY"] == "DROP" and defaults["IPV6"] == "yes"
    assert parse_status_active(_text("status-active.txt"))
    assert not parse_status_active(_text("status-inactive.txt"))


def test_application_profiles() -> None:
    apps = parse_app_profiles({"a": _text("openssh-server"), "b": _text("ufw-webserver")})
    assert [(r.proto, r.low, r.high) for r in apps["OpenSSH"]] == [("tcp", 22, 22)]
    assert [(r.proto, r.low) for r in apps["WWW Full"]] == [("tcp", 80), ("tcp", 443)]
    assert [(r.low, r.high) for r in port_ranges("6000:6007", "udp")] == [(6000, 6007)]


def _live(enabled: bool = True, rules4: list[UfwRule] | None = None, rules6: list[UfwRule] | None = None) -> UfwLive:
    settings = {"enabled": enabled, "logging": "low", "default_incoming": "deny", "default_outgoing": "allow",
                "default_routed": "deny"}
    apps = parse_app_profiles({"a": _text("openssh-server")})
    return UfwLive(settings, enabled, enabled, True, {4: rules4 or [], 6: rules6 or []}, apps)


def _spec(**table: object) -> UfwSpec:
    return UfwSpec.model_validate(table)


def test_declared_order_is_kept_by_appending_from_the_first_misplaced_rule() -> None:
    ssh, web, dns = (UfwRule("allow", proto="tcp", port="22"), UfwRule("allow", proto="tcp", port="80"),
                     UfwRule("allow", proto="udp", port="53"))
    live = _live(rules4=[web, ssh], rules6=[web, ssh])
    spec = _spec(rules=[{"action": "allow", "port": "22", "proto": "tcp"}, {"action": "allow", "port": 80, "proto": "tcp"},
                        {"action": "allow", "port": "53", "proto": "udp"}])
    plan = plan_rules(spec, live)
    assert plan.deletions == [web]  # ssh stays first; web moves after it; dns is new
    assert plan.appends == [web, dns]
    assert plan.final_rules(live.rules[4], {r.identity() for r in (ssh, web, dns)}) == [ssh, web, dns]


def test_action_or_comment_change_updates_in_place_and_exclusive_removes_the_rest() -> None:
    ssh, extra = UfwRule("allow", proto="tcp", port="22"), UfwRule("deny", source="198.51.100.7")
    live = _live(rules4=[ssh, extra], rules6=[ssh])
    spec = _spec(exclusive=True, rules=[{"action": "limit", "port": "22", "proto": "tcp", "comment": "ssh"}])
    changes = UfwProvider().diff(spec, live).changes
    assert [(c.action, c.resource, c.before, c.after) for c in changes] == [
        ("remove", "rule:in from 198.51.100.7 to any", "deny", None),
        ("update", "rule:in proto tcp from any to any port 22", "allow", "limit # ssh"),
    ]


def test_absent_rules_are_removed_and_a_family_specific_rule_is_looked_up_in_its_family_only() -> None:
    v6 = UfwRule("allow", source="2001:db8::/32", proto="tcp", port="443")
    live = _live(rules6=[v6, UfwRule("allow", proto="tcp", port="8080")])
    spec = _spec(rules=[{"action": "allow", "from": "2001:db8::/32", "port": "443", "proto": "tcp"},
                        {"action": "allow", "port": 8080, "proto": "tcp", "ensure": "absent"}])
    changes = UfwProvider().diff(spec, live).changes
    assert [(c.action, c.resource) for c in changes] == [("remove", "rule:in proto tcp from any to any port 8080")]


@pytest.mark.parametrize(("source", "port", "expected"), [
    ("192.0.2.10", 22, True),       # limit admits
    ("198.51.100.7", 22, False),    # the deny above it wins
    ("192.0.2.10", 80, True),       # allowed from 192.0.2.0/24
    ("203.0.113.9", 80, False),     # not from there: default deny
    ("2001:db8::5", 22, True),      # the app rule in the IPv6 family
    ("192.0.2.10", 8080, False),    # an allow bound to a local address is not counted
    ("192.0.2.10", 25, False),      # a deny bound to an interface is counted
])
def test_admits_walks_the_final_rules_first_match_wins(source: str, port: int, expected: bool) -> None:
    spec = _spec(enabled=True, default_incoming="deny", rules=[
        {"action": "deny", "from": "198.51.100.7"},
        {"action": "limit", "port": "22", "proto": "tcp"},
        {"action": "allow", "from": "192.0.2.0/24", "port": "80", "proto": "tcp"},
        {"action": "allow", "app": "OpenSSH"},
        {"action": "allow", "to": "192.0.2.1", "port": "8080", "proto": "tcp"},
        {"action": "deny", "interface": "lo", "port": "25", "proto": "tcp"},
        {"action": "allow", "port": "25", "proto": "tcp"},
    ])
    assert admits(spec, _live(enabled=False), source, port) is expected


def test_admits_everything_when_disabled_and_follows_the_default_policy() -> None:
    assert admits(_spec(enabled=False), _live(), "192.0.2.1", 22)
    assert not admits(_spec(), _live(), "192.0.2.1", 22)
    assert admits(_spec(default_incoming="allow"), _live(), "192.0.2.1", 22)
    # A live rule that the spec does not touch still counts (not exclusive).
    live = _live(rules4=[UfwRule("allow", proto="tcp", port="22")])
    assert admits(_spec(), live, "192.0.2.1", 22)
    assert not admits(_spec(exclusive=True), live, "192.0.2.1", 22)


def test_two_entries_for_one_rule_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"rules\[1\] is the same rule as rules\[0\]"):
        _spec(rules=[{"action": "allow", "port": "22", "proto": "tcp"}, {"action": "deny", "port": 22, "proto": "tcp"}])


@pytest.mark.parametrize(("rule", "message"), [
    ({"action": "allow", "port": "22; rm -rf /"}, "not a port"),
    ({"action": "allow", "port": "70000"}, "out of range"),
    ({"action": "allow", "port": "6007:6000", "proto": "tcp"}, "from low to high"),
    ({"action": "allow", "port": "6000:6007"}, "needs proto"),
    ({"action": "allow", "app": "OpenSSH", "port": "22"}, "takes its ports"),
    ({"action": "allow", "from": "192.0.2.5/24"}, "host bits"),
    ({"action": "allow", "from": "192.0.2.0/24", "to": "2001:db8::1"}, "one address family"),
    ({"action": "allow", "comment": "it's"}, "not a comment"),
    ({"action": "permit"}, "Input should be"),
    ({"action": "allow", "interface": "eth0/1"}, "interface"),
])
def test_bad_rules_are_refused_at_load_time(rule: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _spec(rules=[rule])


def test_the_plan_lists_every_ufw_command_in_order_and_undoes_by_restoring_the_files_read() -> None:
    ssh, web, old = (UfwRule("allow", proto="tcp", port="22"), UfwRule("allow", proto="tcp", port="80"),
                     UfwRule("deny", source="198.51.100.7"))
    live = _live(enabled=False, rules4=[web, ssh, old], rules6=[web, ssh])
    live.files.update({"/etc/ufw/ufw.conf": "ENABLED=no\n", "/etc/default/ufw": "IPV6=yes\n",
                       "/etc/ufw/user.rules": "v4\n", "/etc/ufw/user6.rules": None})
    spec = _spec(enabled=True, logging="medium", default_incoming="reject", exclusive=True,
                 rules=[{"action": "allow", "port": "22", "proto": "tcp"}, {"action": "allow", "port": 80, "proto": "tcp"}])
    plan = UfwProvider().diff(spec, live)
    assert [" ".join(op.argv) for op in plan.operations] == [  # type: ignore[union-attr]
        "ufw default reject incoming",
        "ufw logging medium",
        "ufw delete allow in proto tcp from any to any port 80",
        "ufw delete deny in from 198.51.100.7 to any",
        "ufw allow in proto tcp from any to any port 80",
        "ufw --force enable",
    ]
    assert [op.fails_on is not None for op in plan.operations] == [False, False, True, True, False, False]  # type: ignore[union-attr]
    undo = plan.operations[0].undo
    assert [getattr(step, "path", None) or " ".join(step.argv) for step in undo] == [  # type: ignore[union-attr]
        "/etc/ufw/ufw.conf", "/etc/default/ufw", "/etc/ufw/user.rules", "/etc/ufw/user6.rules",
        "/lib/ufw/ufw-init force-stop", "/lib/ufw/ufw-init start"]
    assert [type(step).__name__ for step in undo[:4]] == ["Write", "Write", "Write", "Remove"]
    assert undo[0].content == "ENABLED=no\n"  # type: ignore[union-attr]
    assert all(not op.undo for op in plan.operations[1:])
    moved = next(c for c in plan.changes if c.name == "in proto tcp from any to any port 80")
    assert (moved.action, moved.before, moved.after, moved.notes) == (
        "update", "allow", "allow", ("deleted and appended again to keep the declared order",))
    assert {side: (v.before, v.after) for side, v in moved.sides.items()} == {"ipv4_position": (1, 2), "ipv6_position": (1, 2)}
    enabled = next(c for c in plan.changes if c.name == "enabled")
    assert (enabled.resource, enabled.before, enabled.after) == ("enabled", False, True)
    assert {side: (v.before, v.after) for side, v in enabled.sides.items()} == {"runtime": (False, True),
                                                                               "persisted": (False, True)}


def test_rules_loaded_but_not_enabled_at_boot_is_a_change_of_the_persisted_side() -> None:
    live = UfwLive({**_live().settings, "enabled": False}, True, False, True, {4: [], 6: []})
    plan = UfwProvider().diff(_spec(enabled=True), live)
    [change] = plan.changes
    assert {side: (v.before, v.after) for side, v in change.sides.items()} == {"runtime": (True, True),
                                                                              "persisted": (False, True)}
    assert [op.argv for op in plan.operations] == [("ufw", "--force", "enable")]  # type: ignore[union-attr]
    assert UfwProvider().diff(_spec(enabled=False), live).operations[0].argv == ("ufw", "disable")  # type: ignore[union-attr]


def test_in_sync_plans_no_operations() -> None:
    live = _live(rules4=[UfwRule("allow", proto="tcp", port="22")], rules6=[UfwRule("allow", proto="tcp", port="22")])
    plan = UfwProvider().diff(_spec(enabled=True, logging="low", rules=[{"action": "allow", "port": 22, "proto": "tcp"}]), live)
    assert (plan.changes, plan.operations) == ([], [])


def test_lockout_names_the_connection_and_what_refuses_it() -> None:
    spec = _spec(enabled=True, default_incoming="deny", rules=[{"action": "deny", "from": "198.51.100.0/24", "port": 22,
                                                                "proto": "tcp"}, {"action": "allow", "port": 22, "proto": "tcp"}])
    provider = UfwProvider()
    assert provider.lockout(spec, _live(), Connection("192.0.2.1", 22, "root", "publickey")) is None
    assert provider.lockout(spec, _live(), Connection("198.51.100.9", 22, "root", "publickey")) == (
        "ufw's first rule matching tcp port 22 from 198.51.100.9 would be "
        "`deny in proto tcp from 198.51.100.0/24 to any port 22`")
    assert provider.lockout(spec, _live(), Connection("192.0.2.1", 2222, "root", "publickey")) == (
        "no ufw rule would admit tcp port 2222 from 192.0.2.1 and the default incoming policy would be deny")
