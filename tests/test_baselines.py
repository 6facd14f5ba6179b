"""The shipped baselines converge in one apply on a fresh test host, and a plan after it is clean."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testhost import TestHost

BASELINES = Path(__file__).resolve().parent.parent / "baselines"

# What a real host of each kind has that a fresh Debian test host lacks.
# Every kind runs sshd: it has the privilege separation directory its unit makes (/run is private).
SSHD = "mkdir -p /run/sshd"
PREPARE = {
    # nginx is installed: the nginx-http-auth jail's log exists.
    "ubuntu-web.toml": f"{SSHD} && mkdir -p /var/log/nginx && touch /var/log/nginx/error.log",
    # RHEL's policy is called "targeted"; Debian's reference policy stands in for it.
    "rhel-web.toml": f"{SSHD} && cp -a /etc/selinux/default /etc/selinux/targeted"
                     " && cp -a /var/lib/selinux/default /var/lib/selinux/targeted",
}


@pytest.fixture
def host(tmp_path: Path) -> Iterator[TestHost]:
    # The kernel baseline names net.core.bpf_jit_harden, which only the initial network namespace has.
    test_host = TestHost(tmp_path / "host", shadow_net_sysctls=True)
    yield test_host
    test_host.close()


@pytest.mark.parametrize("name", sorted(PREPARE))
def test_shipped_baseline_converges_in_one_apply(host: TestHost, name: str) -> None:
    host.run(["sh", "-c", PREPARE[name]])
    baseline = str(BASELINES / name)

    plan = host.converge("plan", "--json", baseline)
    assert plan.returncode == 2, plan.stdout + plan.stderr
    planned = json.loads(plan.stdout)["hosts"][0]
    # Every table's subsystem is there: nothing may be skipped silently, and here nothing is.
    assert planned["skipped"] == []
    assert {change["provider"] for change in planned["changes"]} >= {"sysctl", "fail2ban"}

    apply = host.converge("apply", "--yes", baseline)
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "local: converged" in apply.stdout

    again = host.converge("plan", baseline)
    assert again.returncode == 0, again.stdout + again.stderr
