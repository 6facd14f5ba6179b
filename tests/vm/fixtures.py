"""Session fixtures of the VM tier: `apparmor_vm` and `selinux_vm`, each booted once per session.

A test module uses them by importing them (`from tests.vm.fixtures import apparmor_vm`). pytest
may then hold one fixture definition per importing module, so the machines themselves live in
a registry here: every definition shares the one guest of its kind, booted on first use and
powered off at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.vm.image import build_image
from tests.vm.machine import MAC, VirtualMachine

_running: dict[MAC, VirtualMachine] = {}


def _boot_once(mac: MAC, factory: pytest.TempPathFactory) -> VirtualMachine:
    if mac not in _running:
        _running[mac] = VirtualMachine(build_image(), mac, factory.mktemp(f"vm-{mac.name.lower()}"))
    return _running[mac]


def _shutdown(mac: MAC) -> None:
    machine = _running.pop(mac, None)
    if machine is not None:
        machine.close()


@pytest.fixture(scope="session")
def apparmor_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualMachine]:
    """A guest booted with `apparmor=1 security=apparmor`; securityfs mounted, no profile loaded."""
    yield _boot_once(MAC.APPARMOR, tmp_path_factory)
    _shutdown(MAC.APPARMOR)


@pytest.fixture(scope="session")
def selinux_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualMachine]:
    """A guest booted with SELinux, Debian's selinux-policy-default loaded, permissive."""
    yield _boot_once(MAC.SELINUX, tmp_path_factory)
    _shutdown(MAC.SELINUX)
