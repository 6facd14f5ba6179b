"""suggest over a fleet, over SSH, with plan's connection options: hosts read at once, a host whose key
is not known refused (as plan refuses it) until --trust-new-host-keys, each host's result its own.
The hosts' kernel has no SELinux and logged no AVC record: each reads its denial source and has
nothing to propose (the analysis of real records is test_suggest_selinux's and test_suggest_loop's)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.sshnet import SSHNetwork

STOCK_CONFIG = Path(__file__).parent / "data" / "selinux" / "config"
BASELINE = '[selinux]\npolicy = "default"\n'


def test_suggest_reads_every_host_with_plans_ssh_options(network: SSHNetwork) -> None:
    known = [network.add_host(), network.add_host()]
    unknown = network.add_host(known=False)
    for host in (*known, unknown):
        host.write("/etc/selinux/config", STOCK_CONFIG.read_text())
    network.controller.write("/root/web.toml", BASELINE)
    targets = [arg for host in (*known, unknown) for arg in ("-H", f"root@{host.address}")]

    first = network.converge("suggest", "/root/web.toml", "--json", "--forks", "3", *targets)
    assert first.returncode == 1, first.stdout + first.stderr
    hosts = json.loads(first.stdout)["hosts"]
    assert [h["status"] for h in hosts] == ["ok", "ok", "error"]
    assert "unknown host key" in hosts[2]["error"] and "--trust-new-host-keys" in hosts[2]["error"]
    assert all(h["suggestions"] == [] and h["skipped"] == [] for h in hosts[:2])

    second = network.converge("suggest", "/root/web.toml", "--json", "--trust-new-host-keys", *targets)
    assert second.returncode == 0, second.stdout + second.stderr
    assert [h["status"] for h in json.loads(second.stdout)["hosts"]] == ["ok", "ok", "ok"]
