"""The firewalld provider end to end: firewall-offline-cmd without the daemon, and a real
firewalld daemon (on a private system D-Bus) inside test hosts, its nftables rules in the host's
own namespace."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from converge.providers.firewalld import FirewalldProvider
from tests.testhost import TestHost

BAD = Path(__file__).parent / "data" / "firewalld" / "bad"
RICH = 'rule family="ipv4" source address="192.0.2.0/24" service name="ssh" accept'

BASELINE = """
[firewalld]
default_zone = "public"

[firewalld.zones.public]
services = ["ssh", "https"]
ports = ["8443/tcp", "7000-7010/udp"]
rich_rules = ['rule family=ipv4 source address=192.0.2.0/24 service name=ssh accept']
sources = ["198.51.100.0/24"]
interfaces = ["lo"]
target = "default"
exclusive = true

[firewalld.zones.work]
target = "DROP"
"""


def _baseline(tmp_path: Path, text: str = BASELINE) -> str:
    path = tmp_path / "firewalld.toml"
    path.write_text(text)
    return str(path)


def start_firewalld(host: TestHost) -> None:
    """The daemon on a system bus of the host's own; polled until it answers (~1 s here)."""
    host.run(["mkdir", "-p", "/run/dbus"])
    host.run(["dbus-daemon", "--system", "--fork"])
    host.run(["firewalld"])
    for _ in range(150):
        if host.run(["firewall-cmd", "--state"], check=False).returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError("firewalld did not start: " + host.run(["firewall-cmd", "--state"], check=False).stderr)


def _zone(host: TestHost, zone: str, *, runtime: bool) -> dict[str, str]:
    tool = ["firewall-cmd"] if runtime else ["firewall-offline-cmd"]
    lines = host.run([*tool, f"--zone={zone}", "--list-all"]).stdout.splitlines()[1:]
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines) if value or key}


def _check_converged_zone(zone: dict[str, str]) -> None:
    assert zone["services"] == "https ssh"
    assert zone["ports"] == "7000-7010/udp 8443/tcp"
    assert zone["sources"] == "198.51.100.0/24"
    assert zone["interfaces"] == "lo"
    assert zone["target"] == "default"


def _plan_apply_plan_apply(host: TestHost, baseline: str) -> str:
    plan = host.converge("plan", baseline, "--json")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    resources = {(c["action"], c["resource"]) for c in json.loads(plan.stdout)["hosts"][0]["changes"]}
    assert {("add", "service:public https"), ("remove", "service:public dhcpv6-client"), ("add", "port:public 8443/tcp"),
            ("add", f"rich_rule:public {RICH}"), ("add", "interface:public lo"), ("update", "target:work")} <= resources
    apply = host.converge("apply", baseline, "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "local: converged" in apply.stdout
    again = host.converge("plan", baseline)
    assert again.returncode == 0, again.stdout + again.stderr
    files = host.run(["sh", "-c", "cat /etc/firewalld/zones/*.xml /etc/firewalld/firewalld.conf"]).stdout
    second = host.converge("apply", baseline, "--yes")
    assert second.returncode == 0 and "firewalld:" not in second.stdout
    assert host.run(["sh", "-c", "cat /etc/firewalld/zones/*.xml /etc/firewalld/firewalld.conf"]).stdout == files
    return apply.stdout


def test_offline_converges_with_firewall_offline_cmd(test_host: TestHost, tmp_path: Path) -> None:
    applied = _plan_apply_plan_apply(test_host, _baseline(tmp_path))
    # One call per kind of change; removing a service needs the lokkit-free option offline.
    assert "firewall-offline-cmd --zone=public --add-port=7000-7010/udp --add-port=8443/tcp" in applied
    assert "firewall-offline-cmd --zone=public --remove-service-from-zone=dhcpv6-client" in applied
    _check_converged_zone(_zone(test_host, "public", runtime=False))
    zone_file = test_host.read("/etc/firewalld/zones/public.xml") or ""
    assert '<rule family="ipv4">\n    <source address="192.0.2.0/24"/>' in zone_file
    assert 'target="DROP"' in (test_host.read("/etc/firewalld/zones/work.xml") or "")


def test_daemon_converges_permanent_and_runtime(test_host: TestHost, tmp_path: Path) -> None:
    start_firewalld(test_host)
    applied = _plan_apply_plan_apply(test_host, _baseline(tmp_path))
    assert "firewall-cmd --permanent --zone=public --remove-service=dhcpv6-client" in applied
    assert applied.rstrip().splitlines()[-2].endswith("firewall-cmd --reload")
    _check_converged_zone(_zone(test_host, "public", runtime=True))
    _check_converged_zone(_zone(test_host, "public", runtime=False))
    ruleset = test_host.run(["nft", "list", "ruleset"]).stdout
    assert "tcp dport 8443 accept" in ruleset
    assert "udp dport 7000-7010 accept" in ruleset
    assert 'ip saddr 198.51.100.0/24 goto filter_IN_public' in ruleset


def test_runtime_drift_is_planned_and_a_reload_removes_it(test_host: TestHost, tmp_path: Path) -> None:
    start_firewalld(test_host)
    baseline = _baseline(tmp_path)
    assert test_host.converge("apply", baseline, "--yes").returncode == 0
    test_host.run(["firewall-cmd", "--zone=public", "--add-service=imap"])  # runtime only
    plan = test_host.converge("plan", baseline, "--json")
    assert plan.returncode == 2
    [change] = json.loads(plan.stdout)["hosts"][0]["changes"]
    assert (change["resource"], change["action"], change["before"], change["after"]) == (
        "service:public imap", "remove", "imap", None)
    assert (change["runtime"], change["permanent"]) == ({"before": "imap", "after": None}, {"before": None, "after": None})
    apply = test_host.converge("apply", baseline, "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "imap" not in _zone(test_host, "public", runtime=True)["services"]
    assert test_host.converge("plan", baseline).returncode == 0


def test_a_change_firewalld_refuses_leaves_the_previous_configuration(test_host: TestHost, tmp_path: Path) -> None:
    start_firewalld(test_host)
    before = _zone(test_host, "public", runtime=False), _zone(test_host, "public", runtime=True)
    ruleset = test_host.run(["nft", "list", "ruleset"]).stdout
    # Passes converge's pattern (only firewalld knows its grammar), refused by firewalld.
    text = '[firewalld.zones.public]\nservices = ["https"]\nrich_rules = [\'rule family="ipv4" bogus accept\']\n'
    apply = test_host.converge("apply", _baseline(tmp_path, text), "--yes")
    assert apply.returncode == 1
    assert "INVALID_RULE" in apply.stdout and "what was done before it was undone" in apply.stdout
    assert (_zone(test_host, "public", runtime=False), _zone(test_host, "public", runtime=True)) == before
    assert test_host.run(["nft", "list", "ruleset"]).stdout == ruleset


def test_unknown_service_or_zone_is_an_error_naming_it(test_host: TestHost, tmp_path: Path) -> None:
    plan = test_host.converge("plan", _baseline(tmp_path, '[firewalld.zones.public]\nservices = ["ssh", "nosuchsvc"]\n'))
    assert plan.returncode == 1 and "no such service: nosuchsvc" in plan.stdout
    plan = test_host.converge("plan", _baseline(tmp_path, "[firewalld.zones.nosuchzone]\ntarget = \"DROP\"\n"))
    assert plan.returncode == 1 and "no such zone: nosuchzone" in plan.stdout
    assert test_host.changed_files() == []


def test_state_paths_and_reactivate_restore_a_snapshot(test_host: TestHost, tmp_path: Path) -> None:
    provider = FirewalldProvider()
    start_firewalld(test_host)
    before = test_host.run(["nft", "list", "ruleset"]).stdout
    for path in provider.state_paths():
        test_host.run(["cp", "-a", path, "/root/snapshot"])
    assert test_host.converge("apply", _baseline(tmp_path), "--yes").returncode == 0
    assert test_host.run(["nft", "list", "ruleset"]).stdout != before
    for path in provider.state_paths():
        test_host.run(["rm", "-rf", path])
        test_host.run(["cp", "-a", "/root/snapshot", path])
    for argv in provider.reactivate_argv():
        test_host.run(argv)
    assert test_host.run(["nft", "list", "ruleset"]).stdout == before


@pytest.mark.parametrize("case", sorted(BAD.glob("*.toml")), ids=lambda path: path.stem)
def test_bad_baselines_are_refused_naming_line_and_key(test_host: TestHost, case: Path) -> None:
    expect = case.read_text().splitlines()[0].removeprefix("# expect: ")
    result = test_host.converge("validate", str(case))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {case}:{expect}"), result.stderr


def test_an_exclusive_zone_with_a_forward_port_converges_and_keeps_it(test_host: TestHost, tmp_path: Path) -> None:
    """Issue 16, defect 1: forward ports were read as rich rules, so an exclusive zone planned
    `--remove-rich-rule=port=...`, which firewalld refuses: every apply failed and rolled back."""
    start_firewalld(test_host)
    forward = "port=7496:proto=tcp:toport=7496:toaddr=192.168.56.1"
    for option in (f"--add-forward-port={forward}", "--add-masquerade"):
        test_host.run(["firewall-cmd", "--permanent", "--zone=public", option])
    test_host.run(["firewall-cmd", "--reload"])
    baseline = _baseline(tmp_path, '[firewalld.zones.public]\nservices = ["ssh", "https"]\nexclusive = true\n')
    plan = test_host.converge("plan", baseline, "--json")
    report = json.loads(plan.stdout)["hosts"][0]
    assert [(c["action"], c["resource"]) for c in report["changes"]] == [
        ("remove", "service:public dhcpv6-client"), ("add", "service:public https")]
    assert report["warnings"] == ["firewalld: zone public: masquerade, forward-ports set, not managed by converge "
                                  "(left as they are)"]
    apply = test_host.converge("apply", baseline, "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert forward in test_host.run(["firewall-cmd", "--zone=public", "--list-forward-ports"]).stdout
    assert test_host.converge("plan", baseline).returncode == 0
