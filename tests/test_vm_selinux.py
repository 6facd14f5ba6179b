"""The SELinux provider against a running SELinux kernel: converge over SSH into the `selinux_vm` guest.

The namespace tests prove the persistent side (config, policy store) against the real tools; only
a running SELinux kernel can show that what the provider claims at runtime (`setenforce`, the
runtime half of `setsebool -P`) is true in the kernel. Here the kernel is asked directly:
`getenforce`, `getsebool` and selinuxfs (`/sys/fs/selinux/enforce`, `booleans/NAME` holding
"<current> <pending>"), and the store's own `booleans.local` for the persistent values.

`setsebool -P` rebuilds the policy (about 15 s in the guest, longer on a loaded machine), so
each test changes its booleans in one apply, and restores them in one command.
The guest boots permissive with SELINUX=permissive; each test leaves it so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.vm.fixtures import selinux_vm
from tests.vm.machine import VirtualMachine

pytestmark = pytest.mark.vm
__all__ = ["selinux_vm"]  # a fixture, used by name

# Off in Debian's selinux-policy-default (`semanage boolean -l`), and unused by the guest's sshd.
SWITCHED_ON = ("httpd_can_network_connect_db", "httpd_can_sendmail")
RUNTIME_DRIFT = "httpd_enable_homedirs"
STORE_BOOLEANS = "/var/lib/selinux/default/active/booleans.local"
BOOLEANS = (*SWITCHED_ON, RUNTIME_DRIFT)

# Everything a test asserts on in the guest, in one session, as `name=value` lines.
PROBE = "\n".join([
    'echo "getenforce=$(getenforce)"',
    'echo "enforce=$(cat /sys/fs/selinux/enforce)"',
    'echo "config=$(grep ^SELINUX= /etc/selinux/config)"',
    'echo "config_sum=$(sha256sum < /etc/selinux/config)"',
    *(f'echo "kernel_{name}=$(cat /sys/fs/selinux/booleans/{name})"' for name in BOOLEANS),
    *(f'echo "getsebool_{name}=$(getsebool {name})"' for name in BOOLEANS),
    *(f'echo "store_{name}=$(grep ^{name}= {STORE_BOOLEANS} 2>/dev/null)"' for name in BOOLEANS),
])


def _fields(output: str) -> dict[str, str]:
    """`name=value` lines printed by a guest script (the first `=` splits)."""
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def _changes(vm: VirtualMachine, baseline: Path) -> dict[str, dict[str, Any]]:
    """The plan's changes by resource; the plan must exit 2."""
    plan = vm.converge("plan", str(baseline), "--json")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    (host,) = json.loads(plan.stdout)["hosts"]
    return {change["resource"]: change for change in host["changes"]}


def _apply_then_in_sync(vm: VirtualMachine, baseline: Path) -> str:
    """apply (exit 0, verified by the engine's re-read), then a plan that exits 0; the apply's output."""
    apply = vm.converge("apply", "--yes", str(baseline))
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert ": converged" in apply.stdout, apply.stdout
    again = vm.converge("plan", str(baseline))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "in sync" in again.stdout
    return apply.stdout


@pytest.fixture
def guest(selinux_vm: VirtualMachine) -> Iterator[VirtualMachine]:
    """The guest as booted (permissive, booleans off); put back so after the test, whatever it did."""
    booted = _fields(selinux_vm.run(PROBE).stdout)
    assert booted["getenforce"] == "Permissive" and booted["config"] == "SELINUX=permissive", booted
    assert all(booted[f"kernel_{name}"] == "0 0" for name in BOOLEANS), booted
    selinux_vm.run("cp -p /etc/selinux/config /tmp/selinux-config.booted")
    yield selinux_vm
    restore = " ".join(f"{name}=0" for name in BOOLEANS)
    # setsebool -P only when a boolean moved: it rebuilds the policy, the slowest step of the tier.
    selinux_vm.run(f"""
for name in {' '.join(BOOLEANS)}; do
  if [ "$(cat /sys/fs/selinux/booleans/$name)" != "0 0" ] || grep -q "^$name=1" {STORE_BOOLEANS} 2>/dev/null; then
    setsebool -P {restore}; break
  fi
done
setenforce 0
cp -p /tmp/selinux-config.booted /etc/selinux/config
""")


def test_enforcing_and_booleans_are_set_in_the_kernel_and_persistently(guest: VirtualMachine, tmp_path: Path) -> None:
    baseline = tmp_path / "enforcing.toml"
    baseline.write_text('[selinux]\nmode = "enforcing"\n\n[selinux.booleans]\n'
                        + "".join(f"{name} = true\n" for name in SWITCHED_ON))

    changes = _changes(guest, baseline)
    assert sorted(changes) == sorted(["mode", *(f"boolean:{name}" for name in SWITCHED_ON)])
    assert (changes["mode"]["before"], changes["mode"]["after"]) == ("permissive", "enforcing")
    assert changes["mode"]["runtime"] == {"before": "permissive", "after": "enforcing"}
    assert "runtime too (setenforce)" in changes["mode"]["notes"]
    for name in SWITCHED_ON:
        assert (changes[f"boolean:{name}"]["before"], changes[f"boolean:{name}"]["after"]) == (False, True)

    applied = _apply_then_in_sync(guest, baseline)
    assert "runtime mode set to enforcing (setenforce)" in applied
    assert "set 2 boolean(s) persistently (setsebool -P)" in applied
    seen = _fields(guest.run(PROBE).stdout)
    # What apply claimed at runtime is what the kernel does.
    assert (seen["getenforce"], seen["enforce"]) == ("Enforcing", "1")
    assert seen["config"] == "SELINUX=enforcing"
    for name in SWITCHED_ON:
        assert seen[f"kernel_{name}"] == "1 1"
        assert seen[f"getsebool_{name}"] == f"{name} --> on"
        assert seen[f"store_{name}"] == f"{name}=1"  # persistent: in the policy store
    assert seen[f"kernel_{RUNTIME_DRIFT}"] == "0 0"  # not in the baseline, not touched

    second_apply = guest.converge("apply", "--yes", str(baseline))
    assert second_apply.returncode == 0, second_apply.stdout + second_apply.stderr
    assert "0 to add, 0 to change, 0 to remove" in second_apply.stdout


def test_runtime_only_drift_is_planned_and_put_back_in_the_kernel(guest: VirtualMachine, tmp_path: Path) -> None:
    """The config and store already say what the baseline wants; only the running kernel differs."""
    baseline = tmp_path / "permissive.toml"
    baseline.write_text(f'[selinux]\nmode = "permissive"\n\n[selinux.booleans]\n{RUNTIME_DRIFT} = false\n')
    booted = _fields(guest.run(f"setenforce 1; setsebool {RUNTIME_DRIFT} on; {PROBE}").stdout)
    assert (booted["getenforce"], booted[f"kernel_{RUNTIME_DRIFT}"]) == ("Enforcing", "1 1")

    changes = _changes(guest, baseline)
    assert sorted(changes) == ["boolean:" + RUNTIME_DRIFT, "mode"]
    assert (changes["mode"]["before"], changes["mode"]["after"]) == ("permissive", "permissive")
    assert changes["mode"]["runtime"] == {"before": "enforcing", "after": "permissive"}
    assert changes["mode"]["notes"] == ["runtime only (setenforce)"]
    drift = changes["boolean:" + RUNTIME_DRIFT]
    assert (drift["before"], drift["after"]) == (False, False)
    assert drift["runtime"] == {"before": True, "after": False}
    assert drift["notes"] == ["persistent already; runtime differs"]

    applied = _apply_then_in_sync(guest, baseline)
    assert "runtime mode set to permissive (setenforce)" in applied
    seen = _fields(guest.run(PROBE).stdout)
    assert (seen["getenforce"], seen["enforce"]) == ("Permissive", "0")
    assert seen[f"kernel_{RUNTIME_DRIFT}"] == "0 0"
    assert seen[f"getsebool_{RUNTIME_DRIFT}"] == f"{RUNTIME_DRIFT} --> off"
    # The config already said permissive: a runtime-only change leaves it byte for byte.
    assert (seen["config"], seen["config_sum"]) == ("SELINUX=permissive", booted["config_sum"])
