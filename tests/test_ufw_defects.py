"""ufw defects found on other people's rule sets (issue 16, defects 8 and 18), on real ufw in test hosts."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from tests.testhost import TestHost


def _tuples(host: TestHost, path: str) -> list[str]:
    return [line.removeprefix("### tuple ### ") for line in (host.read(path) or "").splitlines() if line.startswith("### tuple")]


def _plan(host: TestHost, baseline: Path) -> tuple[int, dict[str, Any]]:
    result = host.converge("plan", str(baseline), "--json")
    assert result.returncode in (0, 2), result.stdout + result.stderr
    (report,) = json.loads(result.stdout)["hosts"]
    return result.returncode, report


def test_a_tuple_ufw_skips_is_warned_with_file_and_line_and_plan_and_capture_go_on(test_host: TestHost,
                                                                                 tmp_path: Path) -> None:
    for argv in (["allow", "22/tcp"], ["allow", "80/tcp"], ["--force", "enable"]):
        test_host.run(["ufw", *argv])
    text = test_host.read("/etc/ufw/user.rules") or ""
    test_host.write("/etc/ufw/user.rules", text.replace("### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in",
                                                        "### tuple ### allow tcp 80 0.0.0.0/0 in"))
    line = next(number for number, row in enumerate((test_host.read("/etc/ufw/user.rules") or "").splitlines(), 1)
                if row == "### tuple ### allow tcp 80 0.0.0.0/0 in")
    # ufw's own verdict: it skips the tuple and goes on.
    status = test_host.run(["ufw", "show", "added"])
    assert "WARN: Skipping malformed tuple (bad length): allow tcp 80 0.0.0.0/0 in" in status.stderr
    assert "ufw allow 22/tcp" in status.stdout

    captured = tmp_path / "captured.toml"
    result = test_host.converge("capture", "-H", "local", "--only", "ufw", "-o", str(captured))
    assert result.returncode == 0, result.stderr
    warning = (f"/etc/ufw/user.rules line {line}: unexpected ufw rule tuple (bad length): "
               "'### tuple ### allow tcp 80 0.0.0.0/0 in'; ufw skips this tuple, and so does converge")
    assert f"local: ufw: {warning}" in result.stderr.splitlines()
    rules = tomllib.loads(captured.read_text())["ufw"]["rules"]
    assert {"action": "allow", "port": 22, "proto": "tcp"} in rules
    assert test_host.converge("validate", str(captured)).returncode == 0
    code, report = _plan(test_host, captured)
    assert f"ufw: {warning}" in report["warnings"]
    # The IPv6 half of 80 is still there (the IPv4 one was skipped): the capture left it out.
    assert (code, report["changes"]) == (0, [])


def test_a_declared_rule_in_ipv4_only_is_completed_in_ipv6_in_place(test_host: TestHost, tmp_path: Path) -> None:
    for argv in (["allow", "22/tcp"], ["allow", "80/tcp"], ["allow", "443/tcp"], ["limit", "2222/tcp"],
                 ["--force", "enable"]):
        test_host.run(["ufw", *argv])
    # Its IPv6 half gone (a rule set built while IPV6=no, a hand edit): IPv4 22 80 443 2222, IPv6 80 443.
    test_host.run(["ufw", "delete", "allow", "proto", "tcp", "from", "::/0", "to", "::/0", "port", "22"])
    test_host.run(["ufw", "delete", "limit", "proto", "tcp", "from", "::/0", "to", "::/0", "port", "2222"])
    assert [t.split()[2] for t in _tuples(test_host, "/etc/ufw/user6.rules")] == ["80", "443"]

    # Capture says which rule it left out, with its action.
    captured = tmp_path / "captured.toml"
    result = test_host.converge("capture", "-H", "local", "--only", "ufw", "-o", str(captured))
    assert result.returncode == 0, result.stderr
    assert ("local: ufw: rule limit in proto tcp from any to any port 2222: it is in the IPv4 rules only; "
            "not captured") in result.stderr.splitlines()

    baseline = tmp_path / "ufw.toml"
    baseline.write_text('[ufw]\n[[ufw.rules]]\naction = "allow"\nport = 22\nproto = "tcp"\n'
                        '[[ufw.rules]]\naction = "allow"\nport = 80\nproto = "tcp"\n')
    code, report = _plan(test_host, baseline)
    assert code == 2
    (change,) = report["changes"]
    assert (change["action"], change["resource"], change["before"], change["after"]) == (
        "update", "rule:in proto tcp from any to any port 22", "allow", "allow")
    assert change["notes"] == ["missing from the IPv6 rules (/etc/ufw/user6.rules): added there in place"]
    assert (change["ipv4"], change["ipv6"]) == ({"before": "allow", "after": "allow"}, {"before": None, "after": "allow"})

    apply = test_host.converge("apply", str(baseline), "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "ufw delete" not in apply.stdout  # completed, not deleted and appended behind 443
    assert [t.split()[2] for t in _tuples(test_host, "/etc/ufw/user.rules")] == ["22", "80", "443", "2222"]
    assert [t.split()[2] for t in _tuples(test_host, "/etc/ufw/user6.rules")] == ["22", "80", "443"]
    assert test_host.run(["ip6tables", "-S", "ufw6-user-input"]).stdout.splitlines()[1:4] == [
        "-A ufw6-user-input -p tcp -m tcp --dport 22 -j ACCEPT", "-A ufw6-user-input -p tcp -m tcp --dport 80 -j ACCEPT",
        "-A ufw6-user-input -p tcp -m tcp --dport 443 -j ACCEPT"]
    code, report = _plan(test_host, baseline)
    assert (code, report["changes"]) == (0, [])
