"""`[selinux] permissive_domains` (issue 15) on Debian's policy store in a test host: the local
permissive domains are the declared ones, set in the same `semanage import` as ports and file contexts."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.test_selinux_edges import STOCK_CONFIG
from tests.testhost import TestHost


def _customised(host: TestHost) -> list[str]:
    listing = host.run(["semanage", "permissive", "-l"]).stdout  # prints nothing when there are none
    return listing.split("Customized Permissive Types", 1)[1].split() if listing.strip() else []


def test_permissive_domains_are_the_declared_ones(test_host: TestHost, tmp_path: Path) -> None:
    test_host.write("/etc/selinux/config", STOCK_CONFIG)
    test_host.run(["semanage", "permissive", "-a", "sshd_t"])  # left permissive by hand, not declared
    baseline = tmp_path / "permissive.toml"
    baseline.write_text('[selinux]\npermissive_domains = ["httpd_t"]\n')
    plan = test_host.converge("plan", str(baseline), "--json")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    host_plan = json.loads(plan.stdout)["hosts"][0]
    assert [(c["resource"], c["action"], c["before"], c["after"]) for c in host_plan["changes"]] == [
        ("permissive:httpd_t", "add", None, "permissive"), ("permissive:sshd_t", "remove", "permissive", None)]
    [operation] = host_plan["operations"]
    assert (operation["argv"], operation["input"]) == (["semanage", "import"],
                                                       "permissive -a httpd_t\npermissive -d sshd_t\n")

    apply = test_host.converge("apply", str(baseline), "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "1 permissive domain(s)" not in apply.stdout and "2 permissive domain(s) in one transaction" in apply.stdout
    assert _customised(test_host) == ["httpd_t"]
    assert test_host.converge("plan", str(baseline)).returncode == 0

    baseline.write_text("[selinux]\npermissive_domains = []\n")
    assert test_host.converge("apply", str(baseline), "--yes").returncode == 0
    assert _customised(test_host) == []


def test_an_unknown_domain_is_refused_by_semanage_with_its_reason_and_nothing_changes(
        test_host: TestHost, tmp_path: Path) -> None:
    test_host.write("/etc/selinux/config", STOCK_CONFIG)
    before = test_host.run(["semanage", "export"]).stdout
    baseline = tmp_path / "unknown.toml"
    baseline.write_text('[selinux]\npermissive_domains = ["no_such_t"]\n'
                        '[[selinux.ports]]\ntype = "http_port_t"\nprotocol = "tcp"\nport = 8085\n')
    apply = test_host.converge("apply", str(baseline), "--yes")
    assert apply.returncode == 1
    assert re.search(r"Failed to resolve typepermissive statement at \S+/permissive_no_such_t/cil:1", apply.stdout), apply.stdout
    assert "undoing it failed" not in apply.stdout
    assert test_host.run(["semanage", "export"]).stdout == before
