from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sshnet import SSHNetwork
from tests.testhost import TestHost

# Global sysctls and the directories the tests converge: a test that leaked out of its test host
# would change one of these on the machine running the tests.
GUARDED_SYSCTLS = ("kernel/kptr_restrict", "kernel/dmesg_restrict", "fs/protected_symlinks", "vm/swappiness")
GUARDED_DIRECTORIES = (
    "/etc/sysctl.d", "/etc/fail2ban", "/etc/apparmor.d", "/etc/selinux", "/etc/ufw", "/etc/firewalld", "/etc/default",
)


def _machine_state() -> dict[str, str]:
    state = {key: Path("/proc/sys", key).read_text() for key in GUARDED_SYSCTLS}
    for directory in GUARDED_DIRECTORIES:
        for path in sorted(Path(directory).rglob("*")):
            if path.is_file():
                state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@pytest.fixture(scope="session", autouse=True)
def machine_untouched() -> Iterator[None]:
    """Fail the run if anything the tests do escapes their test hosts."""
    assert os.geteuid() == 0, "the tests build namespace test hosts and must run as root"
    before = _machine_state()
    yield
    assert _machine_state() == before, "a test changed the machine running the tests"


@pytest.fixture
def test_host(tmp_path: Path) -> Iterator[TestHost]:
    host = TestHost(tmp_path / "host")
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
def network(tmp_path: Path) -> Iterator[SSHNetwork]:
    """A controller test host and, as the test adds them, SSH test hosts joined to it."""
    net = SSHNetwork(tmp_path / "net")
    try:
        yield net
    finally:
        net.close()

