"""`lockout` against real connections: what each provider predicts before apply is what the
applied firewall does to new TCP connections from a second test host over a veth pair."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_firewalld_host import start_firewalld
from tests.testhost import TestHost

# Documentation ranges (RFC 5737), only ever on the veth pair between two test hosts.
SERVER, CLIENT_A, CLIENT_B = "192.0.2.1", "192.0.2.2", "198.51.100.2"
PORTS = (22, 80, 8080, 8443)

LISTEN = """
import selectors, socket, sys
selector = selectors.DefaultSelector()
for port in map(int, sys.argv[1:]):
    server = socket.create_server(("0.0.0.0", port))
    server.setblocking(False)
    selector.register(server, selectors.EVENT_READ)
while True:
    for key, _ in selector.select():
        connection, _ = key.fileobj.accept()
        connection.close()
"""

CONNECT = """
import socket, sys
source, target, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    socket.create_connection((target, port), timeout=1, source_address=(source, 0)).close()
except OSError:
    sys.exit(1)
"""

# Runs inside the server host: load the baseline, gather the provider's reads, ask `lockout`
# whether a connection like converge's from each source to each port would be refused.
PREDICT = """
import json, sys
from pathlib import Path
from converge.baseline import load_baseline
from converge.hosts.local import LocalHost
from converge.provider import Connection
from converge.registry import Registry
baseline_path, name, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
registry = Registry()
provider = registry.get(name)
spec = load_baseline(Path(baseline_path), registry).tables[name].spec
live = provider.live(spec, LocalHost().gather([*provider.presence_reads(), *provider.reads(spec)]))
connections = [Connection(source, port, "root", "publickey") for source, port in cases]
print(json.dumps([provider.lockout(spec, live, connection) is None for connection in connections]))
"""


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[TestHost, TestHost]]:
    server, client = TestHost(tmp_path / "server", "server"), TestHost(tmp_path / "client", "client")
    try:
        server.run(["ip", "link", "add", "fw0", "type", "veth", "peer", "name", "fw1", "netns", str(client.pid)])
        for host, device, addresses in ((server, "fw0", (SERVER, "198.51.100.1")), (client, "fw1", (CLIENT_A, CLIENT_B))):
            for address in addresses:
                host.run(["ip", "addr", "add", f"{address}/24", "dev", device])
            host.run(["ip", "link", "set", device, "up"])
        server.run(["sh", "-c", 'python3 -c "$0" "$@" >/dev/null 2>&1 &', LISTEN, *map(str, PORTS)])
        for _ in range(100):
            listening = server.run(["ss", "-Hltn"]).stdout
            if all(f":{port} " in listening for port in PORTS):
                break
            time.sleep(0.05)
        yield server, client
    finally:
        client.close()
        server.close()


def _connects(client: TestHost, source: str, port: int) -> bool:
    return client.run(["python3", "-c", CONNECT, source, SERVER, str(port)], check=False).returncode == 0


def _all_open(hosts: tuple[TestHost, TestHost]) -> None:
    """Before any firewall: every port answers from both sources, so a refusal later is the firewall's."""
    assert all(_connects(hosts[1], source, port) for source in (CLIENT_A, CLIENT_B) for port in PORTS)


def _check(hosts: tuple[TestHost, TestHost], tmp_path: Path, name: str, baseline: str,
           cases: list[tuple[str, int, bool]]) -> None:
    server, client = hosts
    path = tmp_path / f"{name}.toml"
    path.write_text(baseline)
    predicted = server.run([sys.executable, "-c", PREDICT, str(path), name,
                            json.dumps([(source, port) for source, port, _ in cases])])
    assert json.loads(predicted.stdout) == [expected for _, _, expected in cases]
    apply = server.converge("apply", str(path), "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert [_connects(client, source, port) for source, port, _ in cases] == [expected for _, _, expected in cases]


def test_ufw_admits_what_the_applied_rules_let_through(hosts: tuple[TestHost, TestHost], tmp_path: Path) -> None:
    _all_open(hosts)
    baseline = """
[ufw]
enabled = true
default_incoming = "deny"
[[ufw.rules]]
action = "deny"
from = "198.51.100.0/24"
port = "80"
proto = "tcp"
[[ufw.rules]]
action = "allow"
port = "80"
proto = "tcp"
[[ufw.rules]]
action = "limit"
port = "22"
proto = "tcp"
[[ufw.rules]]
action = "allow"
from = "192.0.2.0/24"
port = "8443"
proto = "tcp"
"""
    _check(hosts, tmp_path, "ufw", baseline, [
        (CLIENT_A, 80, True), (CLIENT_B, 80, False), (CLIENT_B, 22, True), (CLIENT_B, 8443, False),
        (CLIENT_A, 8443, True), (CLIENT_A, 8080, False),
    ])


def test_firewalld_admits_what_the_applied_zones_let_through(hosts: tuple[TestHost, TestHost], tmp_path: Path) -> None:
    _all_open(hosts)
    start_firewalld(hosts[0])
    baseline = """
[firewalld]
default_zone = "public"
[firewalld.zones.public]
services = ["ssh"]
ports = ["8443/tcp"]
rich_rules = ['rule family="ipv4" source address="192.0.2.2" port port="80" protocol="tcp" accept']
exclusive = true
[firewalld.zones.internal]
sources = ["198.51.100.0/24"]
services = ["http"]
exclusive = true
"""
    _check(hosts, tmp_path, "firewalld", baseline, [
        (CLIENT_A, 22, True), (CLIENT_A, 8443, True), (CLIENT_A, 80, True), (CLIENT_A, 8080, False),
        (CLIENT_B, 22, False), (CLIENT_B, 80, True),
    ])
