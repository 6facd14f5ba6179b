"""The ufw provider end to end: real ufw, its rules loaded in each test host's own namespace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from converge.providers.ufw import UfwProvider
from tests.testhost import TestHost

BAD = Path(__file__).parent / "data" / "ufw" / "bad"

BASELINE = """
[ufw]
enabled = true
logging = "medium"
default_incoming = "deny"
default_outgoing = "allow"
default_routed = "disabled"
exclusive = true

[[ufw.rules]]
action = "limit"
port = "22"
proto = "tcp"
comment = "ssh"

[[ufw.rules]]
action = "allow"
port = "80,443"
proto = "tcp"
from = "192.0.2.0/24"
comment = "web"

[[ufw.rules]]
action = "allow"
app = "OpenSSH"
from = "2001:db8::/32"

[[ufw.rules]]
action = "deny"
direction = "out"
to = "203.0.113.5"
port = 25
proto = "tcp"

[[ufw.rules]]
action = "reject"
port = "6000:6007"
proto = "udp"
interface = "lo"
"""


def _baseline(tmp_path: Path, text: str = BASELINE) -> str:
    path = tmp_path / "ufw.toml"
    path.write_text(text)
    return str(path)


def _changes(result: object) -> list[dict[str, object]]:
    return json.loads(result.stdout)["hosts"][0]["changes"]  # type: ignore[attr-defined]


def _ruleset(host: TestHost) -> tuple[str, str]:
    return host.run(["iptables", "-S"]).stdout, host.run(["ip6tables", "-S"]).stdout


def test_plan_apply_converges_loads_the_rules_and_is_idempotent(test_host: TestHost, tmp_path: Path) -> None:
    baseline = _baseline(tmp_path)
    assert "-N ufw-user-input" not in _ruleset(test_host)[0]

    plan = test_host.converge("plan", baseline, "--json")
    assert plan.returncode == 2, plan.stderr
    changes = _changes(plan)
    assert [(c["action"], c["resource"]) for c in changes][:2] == [("update", "enabled"), ("update", "logging")]
    assert [c["after"] for c in changes if c["action"] == "add"] == ["limit # ssh", "allow # web", "allow", "deny", "reject"]

    apply = test_host.converge("apply", baseline, "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "local: converged" in apply.stdout
    assert apply.stdout.rstrip().splitlines()[-2].endswith("ufw --force enable")  # enabled only once the rules are in

    ipv4, ipv6 = _ruleset(test_host)
    assert "-P INPUT DROP" in ipv4
    assert "-A ufw-user-input -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -m recent --update --seconds 30 " \
           "--hitcount 6 --name DEFAULT --mask 255.255.255.255 --rsource -j ufw-user-limit" in ipv4
    assert "-A ufw-user-input -s 192.0.2.0/24 -p tcp -m multiport --dports 80,443 -j ACCEPT" in ipv4
    assert "-A ufw-user-output -d 203.0.113.5/32 -p tcp -m tcp --dport 25 -j DROP" in ipv4
    assert "-A ufw-user-input -i lo -p udp -m multiport --dports 6000:6007 -j REJECT --reject-with icmp-port-unreachable" in ipv4
    assert "2001:db8" not in ipv4
    assert "-A ufw6-user-input -s 2001:db8::/32 -p tcp -m tcp --dport 22" in ipv6
    assert "80,443" not in ipv6  # an IPv4 source: no IPv6 rule
    status = test_host.run(["ufw", "status", "verbose"]).stdout
    assert "Status: active" in status and "Logging: on (medium)" in status
    assert "Default: deny (incoming), allow (outgoing), disabled (routed)" in status

    again = test_host.converge("plan", baseline)
    assert again.returncode == 0, again.stdout + again.stderr
    files = {path: test_host.read(path) for path in ("/etc/ufw/user.rules", "/etc/ufw/user6.rules", "/etc/ufw/ufw.conf")}
    second = test_host.converge("apply", baseline, "--yes")
    assert second.returncode == 0
    assert "ufw:" not in second.stdout  # nothing was run
    assert {path: test_host.read(path) for path in files} == files
    assert _ruleset(test_host) == (ipv4, ipv6)


def test_exclusive_removes_every_kind_of_undeclared_rule_and_keeps_declared_order(test_host: TestHost, tmp_path: Path) -> None:
    for rule in (["allow", "80/tcp"], ["allow", "22/tcp"], ["route", "allow", "in", "on", "lo", "out", "on", "lo"],
                 ["allow", "in", "log", "25/tcp"], ["allow", "from", "10.0.0.1", "app", "OpenSSH"],
                 ["reject", "from", "2001:db8::/32"], ["allow", "out", "on", "lo", "to", "any", "port", "99", "proto", "udp"]):
        test_host.run(["ufw", *rule])
    test_host.run(["ufw", "--force", "enable"])
    baseline = _baseline(tmp_path, '[ufw]\nexclusive = true\n[[ufw.rules]]\naction = "allow"\nport = "22"\nproto = "tcp"\n'
                                   '[[ufw.rules]]\naction = "allow"\nport = "80"\nproto = "tcp"\n')
    plan = test_host.converge("plan", baseline, "--json")
    actions = sorted((c["action"], c["resource"]) for c in _changes(plan))
    assert actions == sorted([
        ("update", "rule:in proto tcp from any to any port 80"),  # moved after 22
        ("remove", "rule:route in on lo out on lo from any to any"),
        ("remove", "rule:in proto tcp from any to any port 25"),
        ("remove", "rule:in from 10.0.0.1 app OpenSSH to any"),
        ("remove", "rule:in from 2001:db8::/32 to any"),
        ("remove", "rule:out on lo proto udp from any to any port 99"),
    ])
    apply = test_host.converge("apply", baseline, "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    for path in ("/etc/ufw/user.rules", "/etc/ufw/user6.rules"):
        tuples = [line for line in (test_host.read(path) or "").splitlines() if line.startswith("### tuple")]
        assert [t.split()[5] for t in tuples] == ["22", "80"]
    user_input = test_host.run(["iptables", "-S", "ufw-user-input"]).stdout.splitlines()[1:]
    assert user_input == ["-A ufw-user-input -p tcp -m tcp --dport 22 -j ACCEPT",
                          "-A ufw-user-input -p tcp -m tcp --dport 80 -j ACCEPT"]
    assert test_host.run(["iptables", "-S", "ufw-user-forward"]).stdout.splitlines()[1:] == []
    assert test_host.converge("plan", baseline).returncode == 0


def test_absent_rule_and_disable(test_host: TestHost, tmp_path: Path) -> None:
    test_host.run(["ufw", "allow", "8080/tcp"])
    test_host.run(["ufw", "allow", "22/tcp"])
    test_host.run(["ufw", "--force", "enable"])
    baseline = _baseline(tmp_path, '[ufw]\nenabled = false\n[[ufw.rules]]\naction = "allow"\nport = 8080\nproto = "tcp"\n'
                                   'ensure = "absent"\n')
    apply = test_host.converge("apply", baseline, "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert test_host.run(["ufw", "status"]).stdout.strip() == "Status: inactive"
    assert "ENABLED=no" in (test_host.read("/etc/ufw/ufw.conf") or "")
    assert "-N ufw-user-input" not in test_host.run(["iptables", "-S"]).stdout
    rules = test_host.read("/etc/ufw/user.rules") or ""
    assert "### tuple ### allow tcp 22 " in rules and " 8080 " not in rules
    assert test_host.converge("plan", baseline).returncode == 0


def test_enabled_in_ufw_conf_but_not_loaded_is_drift(test_host: TestHost, tmp_path: Path) -> None:
    test_host.run(["sed", "-i", "s/^ENABLED=.*/ENABLED=yes/", "/etc/ufw/ufw.conf"])
    baseline = _baseline(tmp_path, "[ufw]\nenabled = true\n")
    plan = test_host.converge("plan", baseline, "--json")
    [change] = _changes(plan)
    assert (change["resource"], change["before"], change["after"]) == ("enabled", False, True)
    assert change["notes"] == ["ufw.conf enables it but its rules are not loaded"]
    assert test_host.converge("apply", baseline, "--yes").returncode == 0
    assert "-N ufw-user-input" in test_host.run(["iptables", "-S"]).stdout


def test_unknown_app_profile_is_an_error_and_changes_nothing(test_host: TestHost, tmp_path: Path) -> None:
    baseline = _baseline(tmp_path, '[ufw]\nenabled = true\n[[ufw.rules]]\naction = "allow"\napp = "NoSuchApp"\n')
    apply = test_host.converge("apply", baseline, "--yes")
    assert apply.returncode == 1
    assert "no such application profile in /etc/ufw/applications.d: NoSuchApp" in apply.stdout
    assert test_host.changed_files() == ["/run/ufw.lock"]  # the lock `ufw status` takes


def test_state_paths_and_reactivate_restore_a_snapshot(test_host: TestHost, tmp_path: Path) -> None:
    """What the engine's rollback will do: copy state_paths, apply, put the copy back, reactivate."""
    provider = UfwProvider()
    test_host.run(["ufw", "allow", "22/tcp"])
    test_host.run(["ufw", "--force", "enable"])
    before = test_host.run(["iptables", "-S"]).stdout
    for path in provider.state_paths():
        test_host.run(["cp", "-a", path, f"/root/snapshot{path.replace('/', '_')}"])
    assert test_host.converge("apply", _baseline(tmp_path, '[ufw]\nexclusive = true\ndefault_incoming = "reject"\n'),
                              "--yes").returncode == 0
    assert test_host.run(["iptables", "-S"]).stdout != before
    for path in provider.state_paths():
        test_host.run(["rm", "-rf", path])
        test_host.run(["cp", "-a", f"/root/snapshot{path.replace('/', '_')}", path])
    for argv in provider.reactivate_argv():
        test_host.run(argv)
    assert test_host.run(["iptables", "-S"]).stdout == before


@pytest.mark.parametrize("case", sorted(BAD.glob("*.toml")), ids=lambda path: path.stem)
def test_bad_baselines_are_refused_naming_line_and_key(test_host: TestHost, case: Path) -> None:
    expect = case.read_text().splitlines()[0].removeprefix("# expect: ")
    result = test_host.converge("validate", str(case))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {case}:{expect}"), result.stderr


def test_exclusive_removes_a_route_rule_without_an_interface(test_host: TestHost, tmp_path: Path) -> None:
    """Issue 16, defect 2: ufw refuses `ufw route delete deny in ...` ("Invalid interface clause for
    route rule") when the route rule names no interface; without `in` it works."""
    test_host.run(["ufw", "route", "deny", "from", "any", "to", "any", "port", "53"])
    test_host.run(["ufw", "allow", "22/tcp"])
    baseline = _baseline(tmp_path, '[ufw]\nexclusive = true\n[[ufw.rules]]\naction = "allow"\nport = 22\nproto = "tcp"\n')
    plan = test_host.converge("plan", baseline, "--json")
    assert [(c["action"], c["resource"]) for c in _changes(plan)] == [("remove", "rule:route from any to any port 53")]
    apply = test_host.converge("apply", baseline, "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "ufw route delete deny from any to any port 53" in apply.stdout
    assert "route:" not in (test_host.read("/etc/ufw/user.rules") or "")
    assert test_host.converge("plan", baseline).returncode == 0
