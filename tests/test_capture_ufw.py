"""converge capture for ufw: a real ufw state in a test host, captured, validated and planned."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from converge.providers.ufw import UfwProvider
from converge.providers.ufw.capture import interleave_families
from converge.providers.ufw.parse import parse_user_rules
from converge.providers.ufw.provider import UFW_CONF, UFW_DEFAULTS
from converge.reads import CommandResult, Facts, ReadFile, ReadGlob, RunCommand
from tests.testhost import TestHost

UFW_DATA = Path(__file__).parent / "data" / "ufw"

# The state an admin builds by hand: both families, an application profile, an outbound rule,
# comments, a per-rule log option, and settings away from Debian's stock ones.
SETUP = (
    ["default", "reject", "incoming"], ["default", "allow", "outgoing"], ["logging", "medium"],
    ["limit", "22/tcp", "comment", "ssh"],
    ["allow", "from", "192.0.2.0/24", "to", "any", "port", "80,443", "proto", "tcp", "comment", "web"],
    ["deny", "out", "to", "203.0.113.5", "port", "25", "proto", "tcp"],
    ["allow", "from", "2001:db8::/32", "to", "any", "app", "OpenSSH"],
    ["allow", "in", "log", "8080/tcp"],
    ["--force", "enable"],
)


def _capture(host: TestHost, path: Path) -> tuple[dict[str, Any], list[str]]:
    result = host.converge("capture", "-H", "local", "--only", "ufw", "-o", str(path))
    assert result.returncode == 0, result.stderr
    return tomllib.loads(path.read_text())["ufw"], result.stderr.splitlines()


def _plan_changes(host: TestHost, path: Path) -> tuple[int, list[tuple[str, str]]]:
    plan = host.converge("plan", str(path), "--json")
    assert plan.returncode in (0, 2), plan.stdout + plan.stderr
    (report,) = json.loads(plan.stdout)["hosts"]
    return plan.returncode, [(change["action"], change["resource"]) for change in report["changes"]]


def test_capture_round_trips_and_leaves_out_only_what_the_format_cannot_say(test_host: TestHost, tmp_path: Path) -> None:
    for argv in SETUP:
        test_host.run(["ufw", *argv])
    captured = tmp_path / "captured.toml"

    ufw, notes = _capture(test_host, captured)
    assert {key: value for key, value in ufw.items() if key != "rules"} == {
        "enabled": True, "logging": "medium", "default_incoming": "reject", "default_outgoing": "allow",
        "default_routed": "deny", "exclusive": True,
    }
    # IPv4-only rules keep their place before the IPv6-only one, as in ufw's two files.
    assert ufw["rules"] == [
        {"action": "limit", "port": 22, "proto": "tcp", "comment": "ssh"},
        {"action": "allow", "port": "80,443", "proto": "tcp", "from": "192.0.2.0/24", "comment": "web"},
        {"action": "deny", "port": 25, "proto": "tcp", "to": "203.0.113.5", "direction": "out"},
        {"action": "allow", "app": "OpenSSH", "from": "2001:db8::/32"},
        {"action": "allow", "port": 8080, "proto": "tcp"},
    ]
    assert notes[:-1] == ["local: ufw: rule allow in proto tcp from any to any port 8080: "
                          "captured without its `log` option (not in the baseline format)"]
    validate = test_host.converge("validate", str(captured))
    assert validate.returncode == 0, validate.stderr
    rules_before = test_host.read("/etc/ufw/user.rules"), test_host.read("/etc/ufw/user6.rules")
    assert _plan_changes(test_host, captured) == (0, [])

    # The captured file is exclusive: a rule added by hand afterwards is drift the plan removes.
    test_host.run(["ufw", "allow", "3306/tcp"])
    assert _plan_changes(test_host, captured) == (2, [("remove", "rule:in proto tcp from any to any port 3306")])
    test_host.run(["ufw", "delete", "allow", "3306/tcp"])
    assert (test_host.read("/etc/ufw/user.rules"), test_host.read("/etc/ufw/user6.rules")) == rules_before

    # A forwarding rule has no `[[ufw.rules]]` form: left out, said, and `exclusive` turned off
    # so that planning the capture does not remove it.
    test_host.run(["ufw", "route", "allow", "in", "on", "lo", "out", "on", "lo"])
    ufw, notes = _capture(test_host, captured)
    assert ufw["exclusive"] is False
    assert len(ufw["rules"]) == 5
    assert "local: ufw: rule route allow in on lo out on lo from any to any: route (forwarding) rules are not in the " \
           "baseline format; not captured" in notes
    assert "local: ufw: exclusive: left false, so that a plan does not remove the rules not captured" in notes
    assert test_host.converge("validate", str(captured)).returncode == 0
    assert _plan_changes(test_host, captured) == (0, [])
    assert "ALLOW FWD" in test_host.run(["ufw", "status"]).stdout  # still there: capture and plan changed nothing

    # Rules flushed from the kernel while ufw.conf still enables them: which of the two the
    # admin means is unknowable, so `enabled` is left out rather than guessed.
    test_host.run(["/lib/ufw/ufw-init", "force-stop"])
    ufw, notes = _capture(test_host, captured)
    assert "enabled" not in ufw and len(ufw["rules"]) == 5
    assert "local: ufw: enabled: ufw.conf says ENABLED=yes but the rules are not loaded; not captured" in notes
    assert _plan_changes(test_host, captured) == (0, [])


def test_rules_placed_differently_in_the_two_families_are_set_apart() -> None:
    # Tuple lines as ufw 0.36 writes them; the IPv6 file hand-edited so 22 and 80 swapped places.
    ipv4 = parse_user_rules("### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n"
                            "### tuple ### deny any any 0.0.0.0/0 any 192.0.2.9 in\n"
                            "### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in\n")
    ipv6 = parse_user_rules("### tuple ### allow any any ::/0 any 2001:db8::/32 in\n"
                            "### tuple ### allow tcp 80 ::/0 any ::/0 in\n"
                            "### tuple ### allow tcp 22 ::/0 any ::/0 in\n")
    order, apart = interleave_families(ipv4, ipv6)
    assert [rule.describe() for rule in apart] == ["in proto tcp from any to any port 22"]
    assert [rule.describe() for rule in order] == ["in from 2001:db8::/32 to any", "in from 192.0.2.9 to any",
                                                   "in proto tcp from any to any port 80"]


def test_rules_missing_from_the_ipv6_file_are_left_out_and_exclusive_stays_off() -> None:
    # Real files of a ufw whose rules for any address were added while IPV6=no, now IPV6=yes.
    status = (UFW_DATA / "status-active.txt").read_text()
    facts = Facts({
        ReadFile(UFW_CONF): (UFW_DATA / "ufw.conf").read_text(),
        ReadFile(UFW_DEFAULTS): (UFW_DATA / "default-ufw").read_text(),
        ReadFile("/etc/ufw/user.rules"): (UFW_DATA / "user.rules").read_text(),
        ReadFile("/etc/ufw/user6.rules"): None,
        ReadGlob("/etc/ufw/applications.d/*"): {"openssh-server": (UFW_DATA / "openssh-server").read_text()},
        RunCommand(("ufw", "status")): CommandResult(("ufw", "status"), 0, status, ""),
    })
    captured = UfwProvider().capture(facts)
    assert captured.table["exclusive"] is False
    assert captured.table["enabled"] is True and captured.table["logging"] == "medium"
    # Only rules for one IPv4 address or network can be declared without reaching IPv6 too.
    assert [rule.get("from") or rule.get("to") for rule in captured.table["rules"]] == [
        "192.0.2.0/24", "203.0.113.5", "192.0.2.1", "192.0.2.0/24", "10.1.2.3"]
    assert "rule allow in proto tcp from any to any port 22: it is in the IPv4 rules only; not captured" in captured.notes
    assert "rule route allow in on lo out on lo from any to any: route (forwarding) rules are not in the baseline format; " \
           "not captured" in captured.notes
