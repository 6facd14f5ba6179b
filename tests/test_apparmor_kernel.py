"""The kernel seam of the apparmor provider (KernelState, load_argv, unload_argv).

This machine's kernel has no AppArmor, so the kernel is stood in for, in two documented ways:
- in a test host, a tmpfs mounted over /sys/kernel/security (inside the host's own mount
  namespace) holds an `apparmor/profiles` file in the kernel's format: plan then reads "loaded"
  profiles through the real read path, and a real `apparmor_parser -r` fails to load (the stand-in
  has no `.replace` interface), which exercises the restore path;
- a recording host answers `apparmor_parser -r`/`-R` with success (or refuses one), to check that
  apply runs exactly the plan's operations, in order, and what a refusal undoes.
What neither shows (profiles truly loaded, their live modes, confinement) needs the VM tier.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from converge.provider import CommandResult, Facts, Host, Operation, ProviderError, Read, ReadFile, Remove, Run, Which, Write
from converge.providers.apparmor import AppArmorProvider
from converge.providers.apparmor.kernel import KERNEL_PROFILES, PARSER, load_argv, unload_argv
from converge.providers.apparmor.provider import COMPILE_ARGV, DISABLE_DIR
from converge.providers.apparmor.spec import AppArmorSpec
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
    assert ping["file"] == {"before": "complain", "after": "complain"}
    assert ping["kernel"] == {"before": "enforce", "after": "complain"}
    assert ping["notes"] == [f"load into the kernel ({PARSER} -r; now ping: enforce)"]
    dnsmasq = changes["usr.sbin.dnsmasq"]
    assert dnsmasq["notes"] == [f"link {DISABLE_DIR}/usr.sbin.dnsmasq", f"unload from the kernel ({PARSER} -R)"]
    assert (dnsmasq["file"], dnsmasq["kernel"]) == ({"before": "complain", "after": "disabled"},
                                                    {"before": "complain", "after": None})
    # man is enforce on disk but not loaded at all.
    man = changes["usr.bin.man"]
    assert man["notes"] == [
        f"load into the kernel ({PARSER} -r; now /usr/bin/man: not loaded, man_groff: not loaded, man_filter: not loaded)"
    ]
    assert man["kernel"] == {"before": None, "after": "enforce"}


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
    plan = json.loads(test_host.converge("plan", str(baseline), "--json").stdout)["hosts"][0]
    # Compile, write, then load: the load's failure undoes the write.
    assert [(op.get("op"), op.get("path") or op["argv"][-1]) for op in plan["operations"]] == [
        ("run", "-I/etc/apparmor.d"[2:]), ("write", PING), ("run", "-r")]
    assert plan["operations"][1]["undo"] == [{"op": "write", "path": PING, "content": shipped}]
    apply = test_host.converge("apply", str(baseline), "--yes")
    assert apply.returncode == 1
    # The parser finds the stand-in mount, but no `.replace` interface in it.
    # (Undoing the load fails too here: the stand-in can load nothing. The file is restored all the same.)
    assert f"apparmor: apply failed: `{' '.join(load_argv())}` failed: apparmor_parser: Unable to replace \"ping\".  " \
           "Profile doesn't exist; undoing it failed too" in apply.stdout
    assert test_host.read(PING) == shipped  # the previous file restored
    assert [path for path in test_host.changed_files() if not path.startswith("/var/lib/converge/")] == [PING]


class RecordingHost(Host):
    """A stand-in host whose kernel accepts every load (but `refuse`): it logs every command it
    runs (with its stdin), every file it writes and every file it removes, in order."""

    def __init__(self, refuse: tuple[str, ...] | None = None) -> None:
        super().__init__("recording", "recording")
        self.log: list[tuple[str, ...]] = []
        self.files: dict[str, str | None] = {}
        self.refuse = refuse

    def gather(self, reads: Iterable[Read]) -> Facts:
        raise NotImplementedError

    def lock(self, holder: str, wait: float = 0.0) -> None:
        return None  # a stand-in host: no other apply can hold it

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True) -> CommandResult:
        self.log.append(("run", *argv, f"< {input}" if input is not None else ""))
        refused = tuple(argv) == self.refuse and len([entry for entry in self.log if entry[1:-1] == self.refuse]) == 1
        return CommandResult(tuple(argv), 1 if refused else 0, "", "refused" if refused else "")

    def read_file(self, path: str) -> str | None:
        return self.files.get(path)

    def write_file(self, path: str, content: str, *, mode: int = 0o644) -> str | None:
        self.log.append(("write", path, content))
        self.files[path] = content
        return None

    def remove_file(self, path: str) -> str | None:
        self.log.append(("remove", path))
        self.files[path] = None
        return None


def _logged(operation: Operation) -> tuple[str, ...]:
    """An operation as RecordingHost logs carrying it out."""
    match operation:
        case Run(argv, input=text):
            return ("run", *argv, f"< {text}" if text is not None else "")
        case Write(path, content):
            return ("write", path, content)
        case Remove(path):
            return ("remove", path)


def _facts(spec: AppArmorSpec, loaded: str | None, files: dict[str, str]) -> Facts:
    answers: dict[Read, object] = {Which(PARSER): "/usr/sbin/apparmor_parser", ReadFile(KERNEL_PROFILES): loaded}
    for read in AppArmorProvider().reads(spec):
        if isinstance(read, ReadFile) and read.path != KERNEL_PROFILES:
            answers[read] = files.get(read.path)
    return Facts(answers)


DNSMASQ, MAN, GONE = "/etc/apparmor.d/usr.sbin.dnsmasq", "/etc/apparmor.d/usr.bin.man", "/etc/apparmor.d/usr.sbin.gone"
GONE_TEXT = "profile gone /usr/sbin/gone {\n}\n"


def _three_profiles() -> tuple[AppArmorSpec, Facts]:
    spec = AppArmorSpec.model_validate({"profiles": {
        "usr.sbin.dnsmasq": {"mode": "disabled"}, "usr.bin.man": {"mode": "complain"}, "usr.sbin.gone": {"ensure": "absent"},
    }})
    facts = _facts(spec, "dnsmasq (complain)\n/usr/bin/man (enforce)\ngone (enforce)\n", {
        DNSMASQ: (DATA / "usr.sbin.dnsmasq").read_text(), MAN: (DATA / "usr.bin.man").read_text(), GONE: GONE_TEXT,
    })
    return spec, facts


def test_apply_runs_exactly_the_plans_operations_loading_and_unloading_through_the_seam() -> None:
    provider = AppArmorProvider()
    spec, facts = _three_profiles()
    live = provider.live(spec, facts)
    plan = provider.diff(spec, live)
    assert provider.warnings(spec, live) == []
    dnsmasq, man = (DATA / "usr.sbin.dnsmasq").read_text(), (DATA / "usr.bin.man").read_text()
    complain_man = plan.operations[1]
    assert isinstance(complain_man, Write) and "flags=(complain)" in complain_man.content
    assert [_logged(op) for op in plan.operations] == [
        ("run", *COMPILE_ARGV, f"< {complain_man.content}"),  # man's flags change: compiled before anything is written
        ("write", MAN, complain_man.content),
        ("run", "mkdir", "-p", DISABLE_DIR, ""),
        ("run", "ln", "-sf", DNSMASQ, f"{DISABLE_DIR}/usr.sbin.dnsmasq", ""),
        ("remove", GONE),
        ("run", *unload_argv(), f"< {dnsmasq}"),
        ("run", *load_argv(), f"< {complain_man.content}"),
        ("run", *unload_argv(), f"< {GONE_TEXT}"),  # from the text the plan read: its file is gone by now
    ]
    assert complain_man.undo == (Write(MAN, man),)

    host = RecordingHost()
    done = provider.apply(host, plan)
    assert host.log == [_logged(op) for op in plan.operations]
    assert done[-3:] == ["unloaded usr.sbin.dnsmasq from the kernel", "loaded usr.bin.man into the kernel (complain)",
                         "unloaded usr.sbin.gone from the kernel"]


def test_a_refused_load_undoes_every_step_before_it_in_reverse() -> None:
    provider = AppArmorProvider()
    spec, facts = _three_profiles()
    plan = provider.diff(spec, provider.live(spec, facts))
    host = RecordingHost(refuse=load_argv())
    with pytest.raises(ProviderError, match="failed: apparmor_parser: refused; what was done before it was undone"):
        provider.apply(host, plan)
    dnsmasq, man = (DATA / "usr.sbin.dnsmasq").read_text(), (DATA / "usr.bin.man").read_text()
    undone = host.log[len(plan.operations) - 1:]
    assert undone == [
        ("run", *load_argv(), f"< {man}"),  # the refused load: man as the kernel had it (it was loaded)
        ("run", *load_argv(), f"< {dnsmasq}"),  # dnsmasq's unload undone
        ("write", GONE, GONE_TEXT),  # gone's file back
        ("remove", f"{DISABLE_DIR}/usr.sbin.dnsmasq"),
        ("write", MAN, man),  # the previous file restored
    ]
    assert host.files[MAN] == man and host.files[GONE] == GONE_TEXT


def test_without_the_kernel_nothing_is_loaded_and_the_plan_says_so() -> None:
    provider = AppArmorProvider()
    spec = AppArmorSpec.model_validate({"profiles": {"usr.bin.man": {"mode": "complain"}}})
    facts = _facts(spec, None, {MAN: (DATA / "usr.bin.man").read_text()})
    live = provider.live(spec, facts)
    plan = provider.diff(spec, live)
    [change] = plan.changes
    assert change.notes[-1] == "kernel load pending: no AppArmor in this host's kernel"
    assert change.sides == {}  # the kernel side is not known, nor changed
    assert "profiles are managed on disk only" in provider.warnings(spec, live)[0]
    host = RecordingHost()
    provider.apply(host, plan)
    assert [entry[:2] for entry in host.log] == [("run", PARSER), ("write", MAN)]  # compile check and file only
    assert "-r" not in host.log[0]


def test_a_force_complain_link_is_loaded_in_complain_mode() -> None:
    provider = AppArmorProvider()
    spec = AppArmorSpec.model_validate({"profiles": {"usr.bin.man": {"mode": "complain"}}})
    man = (DATA / "usr.bin.man").read_text()
    answers = {**_facts(spec, "/usr/bin/man (enforce)\n", {MAN: man})._answers,
               ReadFile("/etc/apparmor.d/force-complain/usr.bin.man"): man}
    plan = provider.diff(spec, provider.live(spec, Facts(answers)))
    # The text keeps its enforce flags (the link makes it complain, as at boot): load it with -C.
    assert [_logged(op) for op in plan.operations] == [("run", *load_argv(force_complain=True), f"< {man}")]
    assert load_argv(force_complain=True)[-1] == "-C"


def test_absent_without_the_tools() -> None:
    facts = Facts({Which(PARSER): None})
    assert AppArmorProvider().absent(facts) == f"AppArmor's tools are not installed ({PARSER} not found)"
