"""The VM tier: real AppArmor and SELinux kernels under qemu, and converge reaching them over SSH.

Each guest is booted once per session (tests/vm/fixtures.py) and shared: a test leaves the MAC
state it changed as it found it. Work is batched into one guest script per step, since every
SSH session into a TCG guest costs real time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from converge.providers.sysctl import DROP_IN, parse_sysctl_conf
from tests.vm.fixtures import apparmor_vm, selinux_vm
from tests.vm.machine import VirtualMachine

pytestmark = pytest.mark.vm
__all__ = ["apparmor_vm", "selinux_vm"]  # fixtures, used by name

PROBE_PROFILE = """\
abi <abi/3.0>,
include <tunables/global>

profile converge-vm-probe {
  include <abstractions/base>
  /usr/bin/cat mr,
  /etc/hostname r,
  deny /etc/shadow r,
}
"""


def _fields(output: str) -> dict[str, str]:
    """`name=value` lines printed by a guest script."""
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def _sessions(vm: VirtualMachine) -> int:
    """SSH sessions the guest's sshd has started so far, counting the one that asks."""
    return int(vm.run("grep -c 'Starting session:' /var/log/sshd.log").stdout)


def test_apparmor_kernel_loads_a_profile_and_enforces_it(apparmor_vm: VirtualMachine) -> None:
    script = f"""
cat > /etc/apparmor.d/converge-vm-probe <<'PROFILE'
{PROBE_PROFILE}PROFILE
echo "lsm=$(cat /sys/kernel/security/lsm)"
apparmor_parser -r /etc/apparmor.d/converge-vm-probe
echo "loaded=$(grep '^converge-vm-probe ' /sys/kernel/security/apparmor/profiles)"
aa-exec -p converge-vm-probe -- cat /etc/hostname >/dev/null 2>&1; echo "confined_allowed=$?"
echo "confined_denied=$(aa-exec -p converge-vm-probe -- cat /etc/shadow 2>&1 >/dev/null)"
cat /etc/shadow >/dev/null; echo "unconfined=$?"
apparmor_parser -r -C /etc/apparmor.d/converge-vm-probe
echo "complain=$(grep '^converge-vm-probe ' /sys/kernel/security/apparmor/profiles)"
aa-exec -p converge-vm-probe -- cat /etc/shadow >/dev/null 2>&1; echo "complain_denied_read=$?"
aa-exec -p converge-vm-probe -- cat /etc/hosts >/dev/null 2>&1; echo "complain_unlisted_read=$?"
echo "allowed_logged=$(dmesg | grep 'apparmor="ALLOWED"' | grep 'profile="converge-vm-probe"' | grep -c 'name="/etc/hosts"')"
"""
    try:
        seen = _fields(apparmor_vm.run(script).stdout)
    finally:
        apparmor_vm.run("apparmor_parser -R /etc/apparmor.d/converge-vm-probe; rm /etc/apparmor.d/converge-vm-probe")
    assert "apparmor" in seen["lsm"].split(",") and "selinux" not in seen["lsm"]
    assert seen["loaded"] == "converge-vm-probe (enforce)"
    assert seen["confined_allowed"] == "0"
    assert seen["confined_denied"] == "cat: /etc/shadow: Permission denied"
    assert seen["unconfined"] == "0"
    assert seen["complain"] == "converge-vm-probe (complain)"
    # Complain mode allows and logs what the profile does not cover; an explicit `deny` rule
    # stays enforced even in complain mode.
    assert seen["complain_unlisted_read"] == "0"
    assert seen["allowed_logged"] == "1"
    assert seen["complain_denied_read"] == "1"
    profiles = apparmor_vm.run("cat /sys/kernel/security/apparmor/profiles").stdout
    assert "converge-vm-probe" not in profiles


def test_selinux_kernel_switches_to_enforcing_and_changes_a_runtime_boolean(selinux_vm: VirtualMachine) -> None:
    script = """
echo "lsm=$(cat /sys/kernel/security/lsm)"
echo "booted=$(getenforce)"
setenforce 1
echo "switched=$(getenforce) $(cat /sys/fs/selinux/enforce)"
echo "before=$(cat /sys/fs/selinux/booleans/allow_execheap)"
setsebool allow_execheap on
echo "after=$(cat /sys/fs/selinux/booleans/allow_execheap) $(getsebool allow_execheap)"
"""
    try:
        seen = _fields(selinux_vm.run(script).stdout)
        # A new session while enforcing: sshd must still let converge in (see tests/vm/guest-boot.sh).
        in_enforcing = selinux_vm.run("id -Z; getenforce").stdout.split()
    finally:
        selinux_vm.run("setsebool allow_execheap off; setenforce 0")
    assert "selinux" in seen["lsm"].split(",") and "apparmor" not in seen["lsm"]
    assert seen["booted"] == "Permissive"
    assert seen["switched"] == "Enforcing 1"
    assert seen["before"] == "0 0"
    assert seen["after"] == "1 1 allow_execheap --> on"
    assert in_enforcing == ["unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023", "Enforcing"]
    assert selinux_vm.run("getenforce; cat /sys/fs/selinux/booleans/allow_execheap").stdout.split() == ["Permissive", "0", "0"]


@pytest.mark.parametrize("machine", ["apparmor_vm", "selinux_vm"])
def test_converge_plans_applies_and_verifies_real_kernel_sysctls_over_ssh(
    machine: str, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    """On the SELinux guest in enforcing mode: converge's sessions, atomic writes and backups all pass the policy."""
    vm: VirtualMachine = request.getfixturevalue(machine)
    enforcing = machine == "selinux_vm"
    wanted = {"kernel.kptr_restrict": "2", "kernel.yama.ptrace_scope": "2", "net.ipv4.conf.all.log_martians": "1"}
    baseline = tmp_path / "kernel.toml"
    baseline.write_text("[sysctl]\n" + "".join(f"{key} = {value}\n" for key, value in wanted.items()))
    read_back = f"sysctl -n {' '.join(wanted)}; echo ---; cat {DROP_IN} 2>/dev/null; true"
    booted_values = vm.run(read_back + ("; setenforce 1" if enforcing else "")).stdout.split("---")[0].split()
    assert booted_values != list(wanted.values()), "the guest kernel already has the baseline's values"
    try:
        sessions_before = _sessions(vm)
        plan = vm.converge("plan", str(baseline), "--json")
        assert plan.returncode == 2, plan.stdout + plan.stderr
        (host,) = json.loads(plan.stdout)["hosts"]
        assert sorted(change["resource"] for change in host["changes"]) == sorted(wanted), host
        # The plan read everything in one SSH session (the other one is this count's own).
        assert _sessions(vm) - sessions_before == 2

        # Through the ~/.ssh/config alias this time: HostName, Port, User and IdentityFile from the file.
        apply = vm.converge("apply", "--yes", str(baseline), host=vm.alias)
        assert apply.returncode == 0, apply.stdout + apply.stderr
        assert ": converged" in apply.stdout

        live, drop_in, mode = vm.run(read_back + "; echo ---; getenforce").stdout.split("---")
        assert live.split() == list(wanted.values())
        assert parse_sysctl_conf(drop_in) == wanted
        assert mode.strip() == ("Enforcing" if enforcing else "Disabled")

        again = vm.converge("plan", str(baseline))
        assert again.returncode == 0, again.stdout + again.stderr
        assert "in sync" in again.stdout
        second_apply = vm.converge("apply", "--yes", str(baseline))
        assert second_apply.returncode == 0, second_apply.stdout + second_apply.stderr
        assert "0 to add, 0 to change, 0 to remove" in second_apply.stdout
    finally:
        if enforcing:
            vm.run("setenforce 0")
