"""Why an SSH connect failed, never in empty words, and connect attempts (`--connect-attempts N`,
ssh_config ConnectionAttempts, as OpenSSH's): a connect that timed out, was refused, reset or
closed during the handshake is tried again one second later; an authentication failure or a host
key problem never is. Real sshd test hosts (tests/sshnet.py); attempts are counted on the host (the
TCP resets its kernel sent, the connections its sshd logged), never timed."""

from __future__ import annotations

import errno
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from converge.errors import HostError
from converge.hosts.paramiko_without_invoke import paramiko
from converge.hosts.ssh import _connect_error, _lost, _worth_retrying
from tests.sshnet import SSHD_LOG, SSHNetwork, SSHTestHost

BASELINE = "[sysctl]\nkernel.kptr_restrict = 2\n"
WHERE = "root@198.18.0.196:22"

# A peer that answers as an SSH server would, then closes the connection during the key exchange
# (what the benchmark's host did under load): paramiko raises a bare EOFError(). It prints a line
# per connection it took.
CLOSING_PEER = """
import socket, sys
listener = socket.create_server((sys.argv[1], 22))
while True:
    connection, _ = listener.accept()
    print("connection", flush=True)
    connection.sendall(b"SSH-2.0-OpenSSH_9.2 closes-during-kex\\r\\n")
    connection.recv(4096)
    connection.close()
"""


@pytest.fixture
def baseline(tmp_path: Path) -> str:
    path = tmp_path / "baseline.toml"
    path.write_text(BASELINE)
    return str(path)


def _resets_sent(host: SSHTestHost) -> int:
    """TCP resets the host's kernel sent: one per connect refused for want of a listener."""
    lines = [line.split() for line in (host.read("/proc/net/snmp") or "").splitlines() if line.startswith("Tcp:")]
    names, values = lines[0], lines[1]
    return int(values[names.index("OutRsts")])


def _connections_logged(host: SSHTestHost) -> int:
    return (host.read(SSHD_LOG) or "").count("Connection from ")


def _error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    error: str = json.loads(result.stdout)["hosts"][0]["error"]
    return error


# The reason, unit by unit: paramiko raises some failures with no message at all.

def test_an_exception_without_a_message_is_named_never_an_empty_reason() -> None:
    assert str(_connect_error(WHERE, EOFError(), 60)) == (
        f"{WHERE}: connection closed by the host during the SSH handshake (EOFError)")
    assert str(_connect_error(WHERE, paramiko.SSHException(), 60)) == f"{WHERE}: SSHException"
    assert str(_connect_error(WHERE, paramiko.SSHException(""), 60)) == f"{WHERE}: SSHException"
    assert str(_connect_error(WHERE, paramiko.SSHException("Negotiation failed."), 60)) == (
        f"{WHERE}: Negotiation failed. (SSHException)")
    assert str(_connect_error(WHERE, OSError(), 60)) == f"{WHERE}: OSError"
    assert str(_connect_error(WHERE, OSError(errno.EHOSTUNREACH, "No route to host"), 60)) == f"{WHERE}: No route to host"
    assert str(_connect_error(WHERE, paramiko.AuthenticationException(), 60)) == (
        f"{WHERE}: authentication failed (AuthenticationException); check the user, keys and agent")
    assert str(_connect_error(WHERE, TimeoutError(), 60, attempts=3)) == f"{WHERE}: timed out after 60 s (3 attempts)"


def test_a_connection_lost_mid_run_says_why() -> None:
    assert _lost(EOFError()) == "the host closed the connection (EOFError)"
    assert _lost(OSError("Socket is closed")) == "Socket is closed (OSError)"
    assert _lost(paramiko.SSHException()) == "SSHException"


def test_what_paramiko_wraps_in_its_banner_error_is_the_reason() -> None:
    def banner_error(cause: BaseException) -> paramiko.SSHException:
        wrapped = paramiko.SSHException("Error reading SSH protocol banner" + str(cause))
        wrapped.__context__ = cause  # paramiko raises it while handling the cause
        return wrapped

    assert str(_connect_error(WHERE, banner_error(EOFError()), 60)) == (
        f"{WHERE}: connection closed by the host during the SSH handshake (EOFError)")
    assert str(_connect_error(WHERE, banner_error(TimeoutError()), 60)) == (
        f"{WHERE}: timed out after 60 s waiting for the host's SSH banner")
    assert str(_connect_error(WHERE, banner_error(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")), 60)) == (
        f"{WHERE}: Connection reset by peer")
    assert _worth_retrying(banner_error(EOFError())) and _worth_retrying(banner_error(TimeoutError()))
    refused = paramiko.ssh_exception.NoValidConnectionsError(
        {("198.18.0.196", 22): ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")})
    assert str(_connect_error(WHERE, refused, 60, attempts=2)) == f"{WHERE}: connection refused (2 attempts)"


def test_only_failures_a_later_try_may_not_meet_are_retried() -> None:
    retried = [EOFError(), TimeoutError(), ConnectionResetError(errno.ECONNRESET, "reset"),
               ConnectionRefusedError(errno.ECONNREFUSED, "refused"), OSError(errno.EHOSTUNREACH, "No route to host"),
               paramiko.ChannelException(paramiko.common.OPEN_FAILED_CONNECT_FAILED, "Connect failed")]
    key = paramiko.ECDSAKey.generate()
    never = [paramiko.AuthenticationException("Authentication failed."),
             paramiko.AuthenticationException("Authentication timeout."),
             paramiko.BadHostKeyException("web", key, key), HostError("web: unknown host key ssh-ed25519 SHA256:..."),
             socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
             paramiko.SSHException("Negotiation failed."), paramiko.ChannelException(1, "Administratively prohibited")]
    assert [_worth_retrying(error) for error in retried] == [True] * len(retried)
    assert [_worth_retrying(error) for error in never] == [False] * len(never)


# Real hosts.

def test_a_host_whose_sshd_starts_late_is_reached_on_a_later_attempt(network: SSHNetwork, baseline: str) -> None:
    host = network.add_host()
    host.stop_sshd()
    target = f"root@{host.address}"

    resets = _resets_sent(host)
    assert _error(network.converge("plan", "--json", baseline, "-H", target)) == f"{target}:22: connection refused"
    assert _resets_sent(host) == resets + 1  # the default: one attempt
    assert _error(network.converge("plan", "--json", "--connect-attempts", "2", baseline, "-H", target)) == (
        f"{target}:22: connection refused (2 attempts)")
    assert _resets_sent(host) == resets + 3

    resets = _resets_sent(host)
    plan = subprocess.Popen(
        ["nsenter", "-t", str(network.controller.pid), "-m", "-n", "-u", "--",
         *network.controller.converge_argv("plan", "--connect-attempts", "5", baseline, "-H", target)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60  # a guard against a hang, not a measure
    while _resets_sent(host) == resets:
        assert plan.poll() is None and time.monotonic() < deadline, "converge never tried to connect"
        time.sleep(0.02)
    host.start_sshd()  # after the first attempt was refused: a later one is let in
    stdout, stderr = plan.communicate(timeout=120)
    assert plan.returncode == 2, stdout + stderr  # reached and planned: changes pending
    assert _resets_sent(host) > resets
    assert _connections_logged(host) == 1
    assert stderr == ""  # paramiko's own logging stays off the terminal


def test_authentication_failures_and_unknown_host_keys_are_not_retried(network: SSHNetwork, baseline: str) -> None:
    host = network.add_host()
    nobody = network.converge("plan", "--json", "--connect-attempts", "3", baseline, "-H", f"nobody@{host.address}")
    assert "authentication failed" in _error(nobody) and "attempts" not in _error(nobody)
    assert _connections_logged(host) == 1

    stranger = network.add_host(known=False)
    unknown = network.converge("plan", "--json", "--connect-attempts", "3", baseline, "-H", f"root@{stranger.address}")
    assert "unknown host key" in _error(unknown) and "attempts" not in _error(unknown)
    assert _connections_logged(stranger) == 1

    unresolved = network.converge("plan", "--json", "--connect-attempts", "3", baseline, "-H", "root@no-such-host.invalid")
    assert "cannot resolve host name" in _error(unresolved) and "attempts" not in _error(unresolved)


def test_a_host_closing_during_the_key_exchange_is_named_and_retried(network: SSHNetwork, baseline: str) -> None:
    host = network.add_host()
    host.stop_sshd()
    peer = subprocess.Popen(["nsenter", "-t", str(host.pid), "-m", "-n", "-u", "--", sys.executable, "-c", CLOSING_PEER,
                             host.address], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while ":22 " not in host.run(["ss", "-Hltn"]).stdout:
            assert peer.poll() is None and time.monotonic() < deadline, "the peer did not listen"
            time.sleep(0.02)
        result = network.converge("plan", "--json", "--connect-attempts", "2", baseline, "-H", f"root@{host.address}")
        assert _error(result) == (
            f"root@{host.address}:22: connection closed by the host during the SSH handshake (EOFError) (2 attempts)")
        assert result.stderr == ""
    finally:
        peer.kill()
    assert peer.communicate()[0].count("connection") == 2


def test_ssh_config_connection_attempts_is_honoured_and_the_option_wins(network: SSHNetwork, baseline: str) -> None:
    host = network.add_host()
    host.stop_sshd()
    network.controller.write("/root/.ssh/config", f"Host web\n  HostName {host.address}\n  User root\n  ConnectionAttempts 2\n")

    resets = _resets_sent(host)
    assert _error(network.converge("plan", "--json", baseline, "-H", "web")) == (
        f"root@{host.address}:22: connection refused (2 attempts)")
    assert _resets_sent(host) == resets + 2
    assert _error(network.converge("plan", "--json", "--connect-attempts", "1", baseline, "-H", "web")) == (
        f"root@{host.address}:22: connection refused")
    assert _resets_sent(host) == resets + 3


def test_a_connection_attempts_that_is_not_a_positive_number_is_refused_clearly(network: SSHNetwork, baseline: str) -> None:
    host = network.add_host()
    for value in ("0", "three", "-1", "2.5"):
        network.controller.write("/root/.ssh/config", f"Host web\n  HostName {host.address}\n  ConnectionAttempts {value}\n")
        result = network.converge("plan", "--json", baseline, "-H", "web")
        assert _error(result) == (f"web: ssh_config /root/.ssh/config: ConnectionAttempts {value!r} is not a number of "
                                  "attempts (a whole number, 1 or more)")
    assert _connections_logged(host) == 0  # refused before connecting


def test_proxy_jump_hops_get_the_attempts_too(network: SSHNetwork, baseline: str) -> None:
    bastion, web = network.add_host("bastion"), network.add_host("web")
    network.controller.write("/root/.ssh/config", (
        f"Host bastion\n  HostName {bastion.address}\n  User root\n"
        f"Host web1\n  HostName {web.address}\n  User root\n  ProxyJump bastion\n"
    ))
    # The target refuses: each attempt is a fresh connection through a fresh jump connection.
    web.stop_sshd()
    through = network.converge("plan", "--json", "--connect-attempts", "2", baseline, "-H", "web1")
    assert _error(through) == (
        f"root@{web.address}:22: the jump host could not open a connection to it (Connect failed) (2 attempts)")
    assert _connections_logged(bastion) == 2

    # The jump host refuses: it is tried as often, and says so.
    bastion.stop_sshd()
    resets = _resets_sent(bastion)
    hop = network.converge("plan", "--json", "--connect-attempts", "2", baseline, "-H", "web1")
    assert _error(hop) == f"root@{bastion.address}:22: connection refused (2 attempts)"
    assert _resets_sent(bastion) == resets + 2
