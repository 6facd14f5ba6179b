"""The kmod provider in real namespace test hosts, and apply running exactly the planned operations.

The test hosts share this machine's kernel, so nothing here may ever load or unload a module: the
kernel seam declares the runtime not applicable outside the initial network namespace (and this
machine's kernel has no module support at all), and the unloading path is exercised with a host that
records what it is asked to run. Truly unloading a loaded module (refcount, `modprobe -r`, the module
gone from /proc/modules) and `update-initramfs -u` are for the VM tier.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from converge.hosts import Host
from converge.operations import Remove, Run, Write, execute
from converge.provider import CommandResult, Facts, Read, ReadFile, ReadGlob, RunCommand
from converge.providers.kmod import KmodProvider
from converge.providers.kmod.kernel import MODULES_DISABLED, NAMESPACES, PROC_MODULES, STATUS, UID_MAP, initramfs_read
from converge.providers.kmod.provider import DROP_IN, modinfo_read
from converge.providers.kmod.spec import KmodSpec
from tests.testhost import TestHost

BASELINE = """
[baseline]
name = "kmod-test"

[kmod]
disabled = ["dccp", "usb-storage", "cramfs"]
blacklisted = ["pcspkr"]
"""


def _plan(host: TestHost, baseline: Path) -> tuple[int, dict]:
    plan = host.converge("plan", str(baseline), "--json")
    return plan.returncode, json.loads(plan.stdout)["hosts"][0]


def test_plan_apply_plan_in_a_test_host(test_host: TestHost, tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.toml"
    baseline.write_text(BASELINE)
    # What the distribution (here: an admin's earlier file) already does is not repeated.
    test_host.write("/etc/modprobe.d/cramfs.conf", "install cramfs /bin/true\nblacklist cramfs\n")
    code, record = _plan(test_host, baseline)
    assert code == 2, record
    changes = {change["resource"]: change for change in record["changes"]}
    assert set(changes) == {"dccp", "usb-storage", "pcspkr"}
    assert (changes["dccp"]["before"], changes["dccp"]["after"]) == (None, "disabled")
    assert "runtime not applicable: the kernel has no module support (no /proc/modules)" in changes["dccp"]["notes"]
    assert [op["op"] for op in record["operations"]] == ["write"]

    apply = test_host.converge("apply", str(baseline), "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert test_host.read(DROP_IN) == (
        "# Managed by converge: rewritten on every apply, local edits are lost.\n# Change the baseline instead.\n"
        "install dccp /bin/false\nblacklist dccp\ninstall usb-storage /bin/false\nblacklist usb-storage\nblacklist pcspkr\n")
    assert [path for path in test_host.changed_files() if not path.startswith(("/run/converge/", "/var/lib/converge/"))] == [
        DROP_IN, "/etc/modprobe.d/cramfs.conf"]
    # The real modprobe, inside the host, now refuses them the way the CIS audit checks it.
    shown = test_host.run(["modprobe", "--showconfig"]).stdout
    assert "install usb_storage /bin/false" in shown and "blacklist dccp" in shown
    assert test_host.run(["modprobe", "-n", "-v", "usb-storage"]).stdout.strip() == "install /bin/false"

    again, record = _plan(test_host, baseline)
    assert again == 0 and record["changes"] == [], record

    # Removal: a module dropped from the baseline is dropped from the drop-in.
    baseline.write_text(BASELINE.replace('"dccp", ', ""))
    code, record = _plan(test_host, baseline)
    assert code == 2
    assert [(c["resource"], c["action"], c["before"], c["after"]) for c in record["changes"]] == [
        ("dccp", "remove", "disabled", None)]
    assert test_host.converge("apply", str(baseline), "--yes").returncode == 0
    assert "dccp" not in (test_host.read(DROP_IN) or "")


class RecordingHost(Host):
    """Answers reads from a table and records every change it is asked for; it runs nothing."""

    def __init__(self, answers: dict[Read, object]) -> None:
        super().__init__("recording", "recording")
        self.answers = answers
        self.done: list[tuple[str, ...]] = []

    def gather(self, reads: Iterable[Read]) -> Facts:
        return Facts({read: self.answers[read] for read in reads})

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True) -> CommandResult:
        self.done.append(("run", *argv))
        return CommandResult(tuple(argv), 0, "", "")

    def lock(self, holder: str, wait: float = 0.0) -> None:
        raise AssertionError("not an engine run")

    def read_file(self, path: str) -> str | None:
        raise AssertionError("apply reads nothing")

    def write_file(self, path: str, content: str, *, mode: int = 0o644) -> str | None:
        self.done.append(("write", path, content))
        return None

    def remove_file(self, path: str) -> str | None:
        self.done.append(("remove", path))
        return None


def _answers(spec: KmodSpec, proc_modules: str) -> dict[Read, object]:
    provider = KmodProvider()
    answers: dict[Read, object] = {}
    for read in provider.reads(spec):
        if isinstance(read, ReadGlob):
            answers[read] = {}
        elif read == NAMESPACES:
            answers[read] = CommandResult(read.argv, 0, "net:[4026531840]\nnet:[4026531840]\n", "")
        elif read == initramfs_read(DROP_IN):
            assert isinstance(read, RunCommand)
            answers[read] = CommandResult(read.argv, 0, (
                "kernel 6.1.0-18-amd64\nimage /boot/initrd.img-6.1.0-18-amd64\ntool update-initramfs\nbuilt 100\n"
                "listing\nusr/lib/modules/6.1.0-18-amd64/kernel/drivers/usb/storage/usb-storage.ko\n"), "")
        elif isinstance(read, RunCommand):
            answers[read] = CommandResult(read.argv, 0, f"/lib/modules/6.1.0-18-amd64/{read.argv[-1]}.ko\n", "")
    answers |= {ReadFile(PROC_MODULES): proc_modules, ReadFile(MODULES_DISABLED): "0\n",
                ReadFile(STATUS): "Name:\tpython3\nCapEff:\t000001ffffffffff\n", ReadFile(UID_MAP): "0 0 4294967295\n"}
    return answers


def test_apply_runs_exactly_the_planned_operations_unloading_only_what_nothing_uses() -> None:
    spec = KmodSpec.model_validate({"disabled": ["dccp", "sctp", "usb-storage"], "update_initramfs": True})
    host = RecordingHost(_answers(spec, "sctp 434176 0 - Live 0x0\ndccp 106496 1 - Live 0x0\n"))
    provider = KmodProvider()
    facts = host.gather(provider.reads(spec))
    live = provider.live(spec, facts)
    plan = provider.diff(spec, live)
    assert plan.operations[0] == Run(("modprobe", "-r", "sctp"), says="unloaded sctp (modprobe -r)",
                                     undo=(Run(("modprobe", "sctp")),))
    assert isinstance(plan.operations[1], Write) and plan.operations[1].path == DROP_IN
    assert plan.operations[1].undo == (Remove(DROP_IN),)
    assert plan.operations[2] == Run(("update-initramfs", "-u", "-k", "6.1.0-18-amd64"),
                                     says="rebuilt /boot/initrd.img-6.1.0-18-amd64 (update-initramfs -u)")
    assert len(plan.operations) == 3
    changes = {change.resource: change for change in plan.changes}
    assert changes["sctp"].sides["runtime"].after == "unloaded"
    assert changes["dccp"].sides["runtime"].after == "loaded"  # refcount 1: never forced
    assert "in use" in changes["dccp"].notes[-1]
    assert changes["initramfs:/boot/initrd.img-6.1.0-18-amd64"].before == ["usb_storage"]
    assert any("dccp is loaded and stays loaded until a reboot" in w for w in provider.warnings(spec, live))
    execute(host, plan.operations)
    expected: list[tuple[str, ...]] = []
    for op in plan.operations:
        expected.append(("run", *op.argv) if isinstance(op, Run) else ("write", op.path, op.content)
                        if isinstance(op, Write) else ("remove", op.path))
    assert host.done == expected
    # Saved to JSON and read back, the plan runs the same commands (nothing in apply re-reads).
    assert json.loads(json.dumps(plan.changes[0].as_json()))["after"] == "disabled"


def test_in_a_sandbox_sharing_the_kernel_nothing_is_unloaded() -> None:
    spec = KmodSpec.model_validate({"disabled": ["sctp"]})
    answers = _answers(spec, "sctp 434176 0 - Live 0x0\n")
    answers[NAMESPACES] = CommandResult(NAMESPACES.argv, 0, "net:[4026532500]\nnet:[4026531840]\n", "")
    provider = KmodProvider()
    live = provider.live(spec, RecordingHost(answers).gather(provider.reads(spec)))
    plan = provider.diff(spec, live)
    assert [type(op) for op in plan.operations] == [Write]
    assert plan.changes[0].notes[-1].startswith("runtime not applicable: not the initial network namespace")
    assert modinfo_read("sctp") in answers


def test_capture_round_trips_in_a_test_host(test_host: TestHost, tmp_path: Path) -> None:
    test_host.write("/etc/modprobe.d/cis.conf", "install cramfs /bin/false\nblacklist cramfs\nblacklist pcspkr\n"
                                                "install udf /bin/true\n")  # no blacklist: not captured as disabled
    captured = test_host.converge("capture", "-H", "local", "--only", "kmod", "-o", str(tmp_path / "captured.toml"))
    assert captured.returncode == 0, captured.stdout + captured.stderr
    text = (tmp_path / "captured.toml").read_text()
    assert 'disabled = [\n    "cramfs",\n]' in text or 'disabled = ["cramfs"]' in text, text
    assert "pcspkr" in text and "udf" not in text
    code, record = _plan(test_host, tmp_path / "captured.toml")
    assert code == 0 and record["changes"] == [], record
