"""The kmod provider's runtime part against a real kernel: converge over SSH into the `apparmor_vm` guest.

The namespace test hosts share this machine's kernel, so there the runtime part is not applicable
(and must never unload anything). The guest runs Debian's kernel with that package's own modules
as its /lib/modules/VERSION (tests/vm/image.py), so modprobe, /proc/modules and refcounts are the
kernel's. The modules are among those the shipped baselines disable (baselines/common/kmod.toml),
harmless to load in a guest without the hardware: `dccp` and `freevxfs`, which nothing uses, and
`usb-storage`, which `uas` uses. (Not `dccp` held by `dccp_ipv4`: dccp_ipv4 keeps two references
to itself once loaded, so neither can be unloaded again in the session's guest.)
Each test leaves the guest without the drop-in and without these modules loaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from converge.providers.kmod.provider import DROP_IN
from tests.vm.fixtures import apparmor_vm
from tests.vm.machine import VirtualMachine

pytestmark = pytest.mark.vm
__all__ = ["apparmor_vm"]  # a fixture, used by name

# cramfs: disabled by the benchmarks, but Debian's kernel does not build it (modinfo finds none).
BASELINE = '[kmod]\ndisabled = ["dccp", "freevxfs", "cramfs", "usb-storage"]\n'

# Everything a test asserts on in the guest, in one session, as `name=value` lines.
PROBE = "\n".join([
    'echo "loaded=$(cut -d" " -f1 /proc/modules | grep -x -e dccp -e freevxfs -e usb_storage -e uas | sort | tr "\\n" " ")"',
    'echo "dccp_line=$(grep "^dccp " /proc/modules)"',
    'echo "usb_storage_line=$(grep "^usb_storage " /proc/modules)"',
    f'echo "drop_in=$(cat {DROP_IN} 2>/dev/null | grep -v "^#" | tr "\\n" ";")"',
    'echo "showconfig=$(modprobe --showconfig | grep -w dccp | sort | tr "\\n" ";")"',
])


def _fields(output: str) -> dict[str, str]:
    """`name=value` lines printed by a guest script (the first `=` splits)."""
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def _plan(vm: VirtualMachine, baseline: Path) -> tuple[int, dict[str, Any]]:
    plan = vm.converge("plan", str(baseline), "--json")
    assert plan.returncode in (0, 2), plan.stdout + plan.stderr
    (host,) = json.loads(plan.stdout)["hosts"]
    return plan.returncode, host


@pytest.fixture
def guest(apparmor_vm: VirtualMachine) -> Iterator[VirtualMachine]:
    """The guest with its kernel's modules reachable and none of the test's modules loaded."""
    seen = apparmor_vm.run(f"""
echo "release=$(uname -r)"
echo "modinfo=$(modinfo -F filename dccp)"
echo "drop_in=$(ls {DROP_IN} 2>&1 >/dev/null | grep -c 'No such file')"
""").stdout
    fields = _fields(seen)
    assert fields["modinfo"].startswith(f"/lib/modules/{fields['release']}/"), seen
    assert fields["drop_in"] == "1", seen
    yield apparmor_vm
    apparmor_vm.run(f"rm -f {DROP_IN}; modprobe -r dccp freevxfs uas usb_storage 2>/dev/null; true")


def test_a_loaded_disabled_module_is_unloaded_and_then_never_loads(guest: VirtualMachine, tmp_path: Path) -> None:
    baseline = tmp_path / "kmod.toml"
    baseline.write_text(BASELINE)
    booted = _fields(guest.run(f"modprobe dccp && modprobe freevxfs\n{PROBE}").stdout)
    assert booted["loaded"] == "dccp freevxfs "
    assert booted["dccp_line"].split()[2:4] == ["0", "-"], booted  # refcount 0, no users

    code, host = _plan(guest, baseline)
    assert code == 2
    changes = {change["name"]: change for change in host["changes"]}
    assert sorted(changes) == ["cramfs", "dccp", "freevxfs", "usb-storage"]
    for name in ("cramfs", "usb-storage"):  # not loaded: only the drop-in
        assert changes[name]["notes"] == [f"write {DROP_IN}"] and "runtime" not in changes[name]
    assert ("not modules of the running kernel (modinfo finds none of: cramfs): nothing to keep out here; "
            "the drop-in still names them for other kernels") in host["warnings"]
    for change in (changes["dccp"], changes["freevxfs"]):
        assert (change["action"], change["before"], change["after"]) == ("add", None, "disabled")
        assert change["runtime"] == {"before": "loaded", "after": "unloaded"}
        assert change["notes"] == [f"write {DROP_IN}", "loaded now: modprobe -r"]

    apply = guest.converge("apply", "--yes", str(baseline))
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "unloaded dccp (modprobe -r)" in apply.stdout and "unloaded freevxfs (modprobe -r)" in apply.stdout
    again, host = _plan(guest, baseline)
    assert again == 0 and host["changes"] == [], host

    seen = _fields(guest.run(f"{PROBE}\nmodprobe dccp 2>&1; echo \"reload=$?\"\n"
                             "echo \"loaded_after=$(grep -c '^dccp ' /proc/modules)\"").stdout)
    assert seen["loaded"] == ""  # the kernel's own list: both gone
    assert seen["drop_in"] == ("install dccp /bin/false;blacklist dccp;install freevxfs /bin/false;blacklist freevxfs;"
                               "install cramfs /bin/false;blacklist cramfs;install usb-storage /bin/false;blacklist usb-storage;")
    assert "install dccp /bin/false;" in seen["showconfig"] and "blacklist dccp;" in seen["showconfig"]
    # modprobe runs /bin/false instead of loading it: it fails, and the kernel has no dccp.
    assert seen["reload"] == "1" and seen["loaded_after"] == "0"


def test_a_module_in_use_stays_loaded_until_a_reboot(guest: VirtualMachine, tmp_path: Path) -> None:
    baseline = tmp_path / "kmod.toml"
    baseline.write_text(BASELINE)
    booted = _fields(guest.run(f"modprobe uas\n{PROBE}").stdout)
    assert booted["loaded"] == "uas usb_storage "
    assert booted["usb_storage_line"].split()[2:4] == ["1", "uas,"], booted  # held by uas
    held = "usb_storage is loaded and stays loaded until a reboot: used by uas"

    code, host = _plan(guest, baseline)
    assert code == 2
    changes = {change["name"]: change for change in host["changes"]}
    assert changes["usb-storage"]["runtime"] == {"before": "loaded", "after": "loaded"}
    assert changes["usb-storage"]["notes"] == [f"write {DROP_IN}", "loaded now and in use: stays loaded until a reboot"]
    assert held in host["warnings"]

    apply = guest.converge("apply", "--yes", str(baseline))
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "modprobe -r" not in apply.stdout  # never forced, never tried
    again, host = _plan(guest, baseline)
    assert again == 0, host  # the drop-in is what the baseline asks; the module waits for a reboot
    assert held in host["warnings"]
    seen = _fields(guest.run(PROBE).stdout)
    assert seen["loaded"] == "uas usb_storage "
    assert "install usb-storage /bin/false;blacklist usb-storage;" in seen["drop_in"]
