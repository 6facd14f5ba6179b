"""converge capture and converge diff against real hosts."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.sshnet import SSHNetwork
from tests.testhost import TestHost


def test_capture_then_plan_against_the_same_host_is_in_sync(test_host: TestHost, tmp_path: Path) -> None:
    test_host.run(["mkdir", "-p", "/run/sshd"])  # as on a host running sshd (/run is private here)
    test_host.write("/etc/sysctl.d/60-site.conf", "net.ipv4.conf.all.log_martians = 1\nnet.ipv4.tcp_rmem = 4096 65536 4194304\n")
    test_host.write("/etc/sysctl.d/70-drifted.conf", "net.ipv4.conf.all.accept_redirects = 0\n")
    test_host.set_sysctl("net.ipv4.conf.all.log_martians", "1")
    test_host.set_sysctl("net.ipv4.tcp_rmem", "4096\t65536\t4194304")
    test_host.set_sysctl("net.ipv4.conf.all.accept_redirects", "1")  # runtime differs from its file
    captured = tmp_path / "captured.toml"

    result = test_host.converge("capture", "-H", "local", "-o", str(captured))
    assert result.returncode == 0, result.stderr
    assert "net.ipv4.conf.all.accept_redirects: runtime 1 differs from the boot configuration (0); not captured" in result.stderr
    document = tomllib.loads(captured.read_text())
    assert document["baseline"]["name"] == "captured-local"
    assert document["sysctl"]["net.ipv4.conf.all.log_martians"] == 1
    assert document["sysctl"]["net.ipv4.tcp_rmem"] == "4096 65536 4194304"
    assert "net.ipv4.conf.all.accept_redirects" not in document["sysctl"]

    plan = test_host.converge("plan", str(captured))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    # /run holds the locks tools take even to read (`ufw status` creates /run/ufw.lock): not state.
    # needrestart -b opens rpm's sqlite database where rpm is installed, which creates its -shm and
    # -wal files even for a read.
    written = [path for path in test_host.changed_files() if not path.startswith(("/run/", "/root/.rpmdb/"))]
    assert written == ["/etc/sysctl.d/60-site.conf", "/etc/sysctl.d/70-drifted.conf"]


def test_diff_two_hosts_and_a_captured_file_against_a_host(network: SSHNetwork, tmp_path: Path) -> None:
    web1, web2 = network.add_host("web1"), network.add_host("web2")
    for host, value in ((web1, "1"), (web2, "0")):
        host.write("/etc/sysctl.d/60-site.conf", f"net.ipv4.conf.all.log_martians = {value}\nnet.ipv4.ip_forward = 0\n")
        host.set_sysctl("net.ipv4.conf.all.log_martians", value)
    first, second = f"root@{web1.address}", f"root@{web2.address}"

    differ = network.converge("diff", first, second, "--only", "sysctl")
    assert differ.returncode == 2, differ.stdout + differ.stderr
    assert "  ~ net.ipv4.conf.all.log_martians: '1' -> '0'" in differ.stdout.splitlines()
    assert "ip_forward" not in differ.stdout

    captured = tmp_path / "web1.toml"
    assert network.converge("capture", "-H", first, "-o", str(captured)).returncode == 0
    assert network.converge("diff", str(captured), first).returncode == 0
    assert network.converge("diff", str(captured), second).returncode == 2
