"""The AppArmor provider against a real AppArmor kernel: converge over SSH into the `apparmor_vm` guest.

The baseline is the shipped `baselines/apparmor/nginx.toml` profile, and the seed's promise is
checked as the kernel keeps it: a compromised nginx cannot read /etc/shadow. The guest has no
nginx, so a copy of `cat` installed as `/usr/sbin/nginx` stands in for it: the profile attaches
by that path when it is executed, so what the copy may read is what nginx may read.

Each test applies one mode from whatever state the guest is in (so the plan always has a change),
then checks the kernel's profile list and what the confined program can do, and that a plan
after the apply is in sync. Each SSH session into the TCG guest costs up to a second: the
guest-side checks of a step are one script.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.fixtures import apparmor_vm
from tests.vm.machine import VirtualMachine

pytestmark = pytest.mark.vm
__all__ = ["apparmor_vm"]  # a fixture, used by name

SHIPPED_PROFILE = Path(__file__).resolve().parent.parent / "baselines" / "apparmor" / "profiles" / "usr.sbin.nginx"
PROFILE_FILE = "usr.sbin.nginx"
KERNEL_NAME = "nginx"  # the `profile nginx /usr/sbin/nginx` the file defines
# A file the profile neither allows nor denies: refused in enforce mode, allowed and logged in complain mode.
UNCOVERED = "/srv/converge-uncovered.txt"

# One guest script reads everything a step asserts on, as `name=value` lines.
PROBE = f"""
echo "loaded=$(grep '^{KERNEL_NAME} ' /sys/kernel/security/apparmor/profiles)"
/usr/sbin/nginx /var/www/index.html >/dev/null 2>&1; echo "web_root=$?"
error=$(/usr/sbin/nginx /etc/shadow 2>&1 >/dev/null); echo "shadow=$? $error"
error=$(/usr/sbin/nginx {UNCOVERED} 2>&1 >/dev/null); echo "uncovered=$? $error"
cat /etc/shadow >/dev/null; echo "unconfined_shadow=$?"
echo "allowed_logged=$(dmesg | grep 'apparmor="ALLOWED"' | grep 'profile="{KERNEL_NAME}"' | grep -c 'name="{UNCOVERED}"')"
echo "disable_link=$(readlink /etc/apparmor.d/disable/{PROFILE_FILE})"
echo "header=$(grep '^profile {KERNEL_NAME} ' /etc/apparmor.d/{PROFILE_FILE})"
"""


def _fields(output: str) -> dict[str, str]:
    """`name=value` lines printed by a guest script."""
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def nginx_stand_in(apparmor_vm: VirtualMachine) -> Iterator[VirtualMachine]:
    """`cat` installed as /usr/sbin/nginx, a web root and an uncovered file; all removed, profile unloaded, after."""
    apparmor_vm.run(f"""
set -e
cp /usr/bin/cat /usr/sbin/nginx
mkdir -p /var/www /srv
echo served > /var/www/index.html
echo uncovered > {UNCOVERED}
dmesg --clear
""")
    yield apparmor_vm
    # Leave the guest as the other VM tests expect it: no profile loaded, nothing of ours on disk.
    apparmor_vm.run(f"""
apparmor_parser -R /etc/apparmor.d/{PROFILE_FILE} 2>/dev/null
rm -f /etc/apparmor.d/{PROFILE_FILE} /etc/apparmor.d/disable/{PROFILE_FILE} /usr/sbin/nginx {UNCOVERED}
rm -rf /var/www
""", check=False)
    assert KERNEL_NAME + " " not in apparmor_vm.run("cat /sys/kernel/security/apparmor/profiles").stdout


def _baseline(directory: Path, mode: str) -> Path:
    """The shipped nginx baseline, in `mode`, with its profile beside it as in git."""
    (directory / "profiles").mkdir(exist_ok=True)
    (directory / "profiles" / PROFILE_FILE).write_bytes(SHIPPED_PROFILE.read_bytes())
    baseline = directory / f"nginx-{mode}.toml"
    baseline.write_text(f'[apparmor.profiles."{PROFILE_FILE}"]\nmode = "{mode}"\nsource = "profiles/{PROFILE_FILE}"\n')
    return baseline


def _converge_mode(vm: VirtualMachine, directory: Path, mode: str) -> dict[str, str]:
    """plan (exit 2, the one profile changing to `mode`), apply (exit 0), then the guest's view and a plan in sync."""
    baseline = _baseline(directory, mode)
    plan = vm.converge("plan", str(baseline), "--json")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    (host,) = json.loads(plan.stdout)["hosts"]
    assert [(change["resource"], change["after"]) for change in host["changes"]] == [(PROFILE_FILE, mode)], host

    apply = vm.converge("apply", "--yes", str(baseline))
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert ": converged" in apply.stdout, apply.stdout
    seen = _fields(vm.run(PROBE, check=False).stdout)

    again = vm.converge("plan", str(baseline))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "in sync" in again.stdout
    return seen


def test_enforce_mode_loads_nginx_enforced_and_denies_it_shadow(nginx_stand_in: VirtualMachine, tmp_path: Path) -> None:
    seen = _converge_mode(nginx_stand_in, tmp_path, "enforce")
    assert seen["loaded"] == f"{KERNEL_NAME} (enforce)"
    assert seen["header"] == f"profile {KERNEL_NAME} /usr/sbin/nginx flags=(attach_disconnected) {{"
    assert seen["web_root"] == "0"
    assert seen["shadow"] == "1 /usr/sbin/nginx: /etc/shadow: Permission denied"
    assert seen["uncovered"] == f"1 /usr/sbin/nginx: {UNCOVERED}: Permission denied"
    assert seen["unconfined_shadow"] == "0"  # the denial is the profile's, not the file's mode
    assert seen["disable_link"] == ""

    second_apply = nginx_stand_in.converge("apply", "--yes", str(tmp_path / "nginx-enforce.toml"))
    assert second_apply.returncode == 0, second_apply.stdout + second_apply.stderr
    assert "0 to add, 0 to change, 0 to remove" in second_apply.stdout


def test_complain_mode_allows_and_logs_the_uncovered_but_still_denies_shadow(
    nginx_stand_in: VirtualMachine, tmp_path: Path,
) -> None:
    seen = _converge_mode(nginx_stand_in, tmp_path, "complain")
    assert seen["loaded"] == f"{KERNEL_NAME} (complain)"
    assert seen["header"] == f"profile {KERNEL_NAME} /usr/sbin/nginx flags=(attach_disconnected, complain) {{"
    assert seen["web_root"] == "0"
    assert seen["uncovered"] == "0 "
    assert int(seen["allowed_logged"]) >= 1
    # An explicit `deny` rule is enforced in complain mode too: the seed's promise holds while learning.
    assert seen["shadow"] == "1 /usr/sbin/nginx: /etc/shadow: Permission denied"


def test_disabled_mode_unloads_nginx(nginx_stand_in: VirtualMachine, tmp_path: Path) -> None:
    seen = _converge_mode(nginx_stand_in, tmp_path, "disabled")
    assert seen["loaded"] == ""
    assert seen["disable_link"] == f"/etc/apparmor.d/{PROFILE_FILE}"
    # Unloaded, nothing confines the program any more.
    assert seen["shadow"] == "0 "
    assert seen["uncovered"] == "0 "
