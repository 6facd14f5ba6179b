"""One apply per host: two admins converging one host at once cannot interleave. The lock is held
from the read a plan comes from until verification, refused at once with the holder named (or
waited for with --lock-timeout), and never outlives its holder (SIGKILL, a dropped connection)."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sshnet import SSHNetwork
from tests.testhost import TestHost

# Two baselines disagreeing on one sysctl and on the jails of one fail2ban-server.
FIRST = """\
[sysctl]
net.ipv4.conf.all.log_martians = 1

[fail2ban]
start_server = true

[fail2ban.jails.sshd]
enabled = true
port = "ssh"
maxretry = 3
"""
SECOND = FIRST.replace("log_martians = 1", "log_martians = 0").replace("maxretry = 3", "maxretry = 7")


@pytest.fixture
def host(test_host: TestHost) -> Iterator[TestHost]:
    test_host.run(["rm", "-rf", "/run/systemd/system"])  # this host's own fail2ban-server, never a unit
    test_host.write("/var/log/auth.log", "")
    yield test_host


def _baselines(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "first.toml").write_text(FIRST)
    (tmp_path / "second.toml").write_text(SECOND)
    return str(tmp_path / "first.toml"), str(tmp_path / "second.toml")


def _servers(host: TestHost) -> int:
    count = 0
    for pid in host.processes():
        try:
            count += "fail2ban-server" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
    return count


def _start(host: TestHost, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["nsenter", "-t", str(host.pid), "-m", "-n", "-u", "--", *host.converge_argv(*args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_concurrent_apply_is_refused_naming_the_holder(host: TestHost, tmp_path: Path) -> None:
    first, second = _baselines(tmp_path)
    runs = [_start(host, "apply", first, "--yes")]
    time.sleep(0.3)
    runs.append(_start(host, "apply", second, "--yes"))
    results = [(run.wait(120), *run.communicate()) for run in runs]
    codes = [code for code, _, _ in results]
    assert sorted(codes) == [0, 1], results
    winner = [first, second][codes.index(0)]
    _, out, err = results[codes.index(1)]
    assert "another converge apply holds this host's lock" in out + err
    assert " pid " in out + err and " since " in out + err
    plan = host.converge("plan", winner)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert _servers(host) == 1


def test_lock_timeout_waits_and_both_converge_in_order(host: TestHost, tmp_path: Path) -> None:
    first, second = _baselines(tmp_path)
    runs = [_start(host, "apply", first, "--yes")]
    time.sleep(0.3)
    runs.append(_start(host, "apply", second, "--yes", "--lock-timeout", "120"))
    results = [(run.wait(240), *run.communicate()) for run in runs]
    assert [code for code, _, _ in results] == [0, 0], results
    assert host.converge("plan", second).returncode == 0
    assert host.sysctl("net.ipv4.conf.all.log_martians") == "0"
    assert _servers(host) == 1


def _killed_while_holding(argv: list[str]) -> None:
    """Start an apply on a pty, so it holds the lock while it asks for confirmation; SIGKILL it there."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, start_new_session=True)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    while b"Apply these changes?" not in seen:
        assert time.monotonic() < deadline, seen.decode(errors="replace")
        try:
            seen += os.read(leader, 4096)
        except OSError:
            break
    assert b"Apply these changes?" in seen, seen.decode(errors="replace")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    os.close(leader)


def test_a_killed_apply_leaves_no_lock_locally(host: TestHost, tmp_path: Path) -> None:
    first, _ = _baselines(tmp_path)
    argv = ["nsenter", "-t", str(host.pid), "-m", "-n", "-u", "--", *host.converge_argv("apply", first)]
    _killed_while_holding(argv)
    applied = host.converge("apply", first, "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr


def test_a_killed_apply_leaves_no_lock_over_ssh(network: SSHNetwork, tmp_path: Path) -> None:
    remote = network.add_host()
    target = f"root@{remote.address}"
    baseline = tmp_path / "kernel.toml"
    baseline.write_text("[sysctl]\nnet.ipv4.conf.all.log_martians = 1\n")
    controller = network.controller
    argv = ["nsenter", "-t", str(controller.pid), "-m", "-n", "-u", "--",
            *controller.converge_argv("apply", str(baseline), "-H", target)]
    _killed_while_holding(argv)
    # The lock's session dies with the connection: at once, or once sshd notices (TCP closed by the kernel).
    deadline = time.monotonic() + 30
    while True:
        applied = network.converge("apply", str(baseline), "-H", target, "--yes")
        if applied.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert remote.sysctl("net.ipv4.conf.all.log_martians") == "1"


def test_a_concurrent_apply_over_ssh_is_refused(network: SSHNetwork, tmp_path: Path) -> None:
    remote = network.add_host()
    target = f"root@{remote.address}"
    baseline = tmp_path / "kernel.toml"
    baseline.write_text("[sysctl]\nnet.ipv4.conf.all.log_martians = 1\n")
    controller = network.controller
    leader, follower = pty.openpty()
    holder = subprocess.Popen(
        ["nsenter", "-t", str(controller.pid), "-m", "-n", "-u", "--",
         *controller.converge_argv("apply", str(baseline), "-H", target)],
        stdin=follower, stdout=follower, stderr=follower, start_new_session=True)
    os.close(follower)
    try:
        seen = b""
        while b"Apply these changes?" not in seen:
            seen += os.read(leader, 4096)
        refused = network.converge("apply", str(baseline), "-H", target, "--yes")
        assert refused.returncode == 1
        assert "another converge apply holds this host's lock (root@controller pid " in refused.stdout
        assert remote.sysctl("net.ipv4.conf.all.log_martians") == "0"
        assert network.converge("plan", str(baseline), "-H", target).returncode == 2  # plan takes no lock
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        os.close(leader)
