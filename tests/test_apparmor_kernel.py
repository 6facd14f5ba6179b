"""The kernel seam of the apparmor provider (KernelState, load_argv, unload_argv).

This machine's kernel has no AppArmor, so the kernel is stood in for, in two documented ways:
- in a test host, a tmpfs mounted over /sys/kernel/security (inside the host's own mount
  namespace) holds an `apparmor/profiles` file in the kernel's format: plan then reads "loaded"
  profiles through the real read path, and a real `apparmor_parser -r` fails to load (the stand-in
  has no `.replace` interface), which exercises the restore path;
- a recording host answers `apparmor_parser -r`/`-R` with success, to check which profiles apply
  loads and unloads, in which order.
What neither shows (profiles truly loaded, their live modes, confinement) needs the VM tier.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from converge.hosts import Host
from converge.providers.apparmor import (
    DISABLE_DIR,
    KERNEL_PROFILES,
    PARSER,
    AppArmorProvider,
    AppArmorSpec,
    load_argv,
    unload_argv,
)
from converge.reads import CommandResult, Facts, Read, ReadFile, Which
from tests.testhost import TestHost

DATA = Path(__file__).parent / "data" / "apparmor"
PING = "/etc/apparmor.d/bin.ping"


def _stand_in_kernel(host: TestHost, loaded: str) -> None:
    host.run(["mount", "-t", "tmpfs", "stand-in-securityfs", "/sys/kernel/security"])
    host.write(KERNEL_PROFILES, loaded)


def _plan(host: TestHost, tmp_path: Path, toml: str) -> tuple[int, dict[str, dict], list[str]]:
    baseline = tmp_path / "baseline.toml"
    baseline.write_text(toml)
    plan = host.converge("plan", str(baseline), "--json")
    record = json.loads(plan.stdout)["hosts"][0]
    return plan.returncode, {change["resource"]: change for change in record["changes"]}, record.get("warnings", [])


def test_plan_compares_the_loaded_modes_with_the_baseline(test_host: TestHost, tmp_path: Path) -> None:
    _stand_in_kernel(test_host, "ping (enforce)\ndnsmasq (complain)\ndnsmasq//libvirt_leaseshelper (complain)\n")
    code, changes, warnings = _plan(test_host, tmp_path, '[apparmor.profiles."bin.ping"]\nmode = "complain"\n'
                                                         '[apparmor.profiles."usr.sbin.dnsmasq"]\nmode = "disabled"\n'
                                                         '[apparmor.profiles."usr.bin.man"]\nmode = "enforce"\n')
    assert code == 2
    assert warnings == []  # the kernel has AppArmor: nothing is pending
    # On disk ping is complain already; the kernel runs it in enforce mode: reload.
    ping = changes["bin.ping"]
    assert (ping["before"], ping["after"], ping.get("detail")) == ("complain", "complain", None)
    assert ping["notes"] == [f"load into the kernel ({PARSER} -r; now ping: enforce)"]
    dnsmasq_notes = [f"link {DISABLE_DIR}/usr.sbin.dnsmasq", f"unload from the kernel ({PARSER} -R)"]
    assert changes["usr.sbin.dnsmasq"]["notes"] == dnsmasq_notes
    # man is enforce on disk but not loaded at all.
    assert changes["usr.bin.man"]["notes"] == [
        f"load into the kernel ({PARSER} -r; now /usr/bin/man: not loaded, man_groff: not loaded, man_filter: not loaded)"
    ]


def test_in_sync_when_disk_and_kernel_agree(test_host: TestHost, tmp_path: Path) -> None:
    _stand_in_kernel(test_host, "ping (complain)\n/usr/bin/man (enforce)\nman_groff (enforce)\nman_filter (enforce)\n")
    code, changes, warnings = _plan(test_host, tmp_path, '[apparmor.profiles."bin.ping"]\nmode = "complain"\n'
                                                         '[apparmor.profiles."usr.bin.man"]\nmode = "enforce"\n')
    assert (code, changes, warnings) == (0, {}, [])


def test_a_load_the_kernel_refuses_puts_the_previous_file_back(test_host: TestHost, tmp_path: Path) -> None:
    _stand_in_kernel(test_host, "ping (complain)\n")
    shipped = test_host.read(PING)
    baseline = tmp_path / "baseline.toml"
    baseline.write_text('[apparmor.profiles."bin.ping"]\nmode = "enforce"\n')
    apply = test_host.converge("apply", str(baseline), "--yes")
    assert apply.returncode == 1
    # The parser finds the stand-in mount, but no `.replace` interface in it.
    assert 'bin.ping: the kernel refused it: apparmor_parser: Unable to replace "ping".' in apply.stdout
    assert "previous file restored" in apply.stdout
    assert test_host.read(PING) == shipped


class RecordingHost(Host):
    """A stand-in host whose kernel accepts every load: it records commands and file writes."""

    def __init__(self) -> None:
        super().__init__("recording", "recording")
        self.commands: list[tuple[str, ...]] = []
        self.files: dict[str, str | None] = {}

    def gather(self, reads: Iterable[Read]) -> Facts:
        raise NotImplementedError

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True) -> CommandResult:
        self.commands.append(tuple(argv))
        return CommandResult(tuple(argv), 0, "", "")

    def read_file(self, path: str) -> str | None:
        return self.files.get(path)

    def write_file(self, path: str, content: str, *, mode: int = 0o644) -> str | None:
        self.files[path] = content
        return None

    def remove_file(self, path: str) -> str | None:
        self.files[path] = None
        return None


def _facts(spec: AppArmorSpec, loaded: str | None, files: dict[str, str]) -> Facts:
    answers: dict[Read, object] = {Which(PARSER): "/usr/sbin/apparmor_parser", ReadFile(KERNEL_PROFILES): loaded}
    for read in AppArmorProvider().reads(spec):
        if isinstance(read, ReadFile) and read.path != KERNEL_PROFILES:
            answers[read] = files.get(read.path)
    return Facts(answers)


def test_apply_loads_and_unloads_through_the_seam() -> None:
    provider = AppArmorProvider()
    dnsmasq = (DATA / "usr.sbin.dnsmasq").read_text()
    man = (DATA / "usr.bin.man").read_text()
    spec = AppArmorSpec.model_validate({"profiles": {
        "usr.sbin.dnsmasq": {"mode": "disabled"}, "usr.bin.man": {"mode": "complain"}, "usr.sbin.gone": {"ensure": "absent"},
    }})
    facts = _facts(spec, "dnsmasq (complain)\n/usr/bin/man (enforce)\ngone (enforce)\n", {
        "/etc/apparmor.d/usr.sbin.dnsmasq": dnsmasq, "/etc/apparmor.d/usr.bin.man": man,
        "/etc/apparmor.d/usr.sbin.gone": "profile gone /usr/sbin/gone {\n}\n",
    })
    live = provider.live(spec, facts)
    changes = provider.diff(spec, live)
    assert provider.warnings(spec, live) == []
    host = RecordingHost()
    provider.apply(host, spec, live, changes)

    compile_check = (PARSER, "-Q", "-K", "--base", "/etc/apparmor.d", "-I", "/etc/apparmor.d")
    assert host.commands == [
        compile_check,  # man's flags change: compiled before anything is written
        ("mkdir", "-p", DISABLE_DIR), ("ln", "-sf", "/etc/apparmor.d/usr.sbin.dnsmasq", f"{DISABLE_DIR}/usr.sbin.dnsmasq"),
        tuple(unload_argv("/etc/apparmor.d/usr.sbin.dnsmasq")),
        tuple(load_argv("/etc/apparmor.d/usr.bin.man")),
        tuple(unload_argv("/etc/apparmor.d/usr.sbin.gone")),  # unloaded before its file goes
    ]
    assert host.files["/etc/apparmor.d/usr.sbin.gone"] is None
    assert "flags=(complain)" in (host.files["/etc/apparmor.d/usr.bin.man"] or "")


def test_without_the_kernel_nothing_is_loaded_and_the_plan_says_so() -> None:
    provider = AppArmorProvider()
    spec = AppArmorSpec.model_validate({"profiles": {"usr.bin.man": {"mode": "complain"}}})
    facts = _facts(spec, None, {"/etc/apparmor.d/usr.bin.man": (DATA / "usr.bin.man").read_text()})
    live = provider.live(spec, facts)
    [change] = provider.diff(spec, live)
    assert change.notes[-1] == "kernel load pending: no AppArmor in this host's kernel"
    assert "profiles are managed on disk only" in provider.warnings(spec, live)[0]
    host = RecordingHost()
    provider.apply(host, spec, live, [change])
    assert [argv[0] for argv in host.commands] == [PARSER]  # the compile check only
    assert "-r" not in host.commands[0]


def test_absent_without_the_tools() -> None:
    facts = Facts({Which(PARSER): None})
    assert AppArmorProvider().absent(facts) == f"AppArmor's tools are not installed ({PARSER} not found)"
