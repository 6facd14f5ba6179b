"""The provider: reads, live state, the diff (changes and operations) and warnings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from converge.plan import Action
from converge.provider import (
    Captured,
    Change,
    Facts,
    Operation,
    Provider,
    ProviderPlan,
    Read,
    ReadGlob,
    Remove,
    RunCommand,
    Side,
    Which,
    Write,
    restore,
)
from converge.providers.kmod.kernel import (
    KernelState,
    initramfs_operation,
    kernel_reads,
    kernel_state,
    unload_operation,
    unloadable,
)
from converge.providers.kmod.parse import CONFIG_DIRECTORIES, ModprobeConfig, config_files, resolve
from converge.providers.kmod.spec import KmodSpec, normalise

# Read first of /etc/modprobe.d (files are read in name order, and "00-" sorts before the names
# distributions and hardening packages use: aliases.conf, systemd.conf, 30_security-misc.conf, ...):
# modprobe runs the FIRST `install` command it reads for a module, so ours must come first to win.
DROP_IN = "/etc/modprobe.d/00-converge.conf"
DROP_IN_HEADER = (
    "# Managed by converge: rewritten on every apply, local edits are lost.\n"
    "# Change the baseline instead.\n"
)
NO_OP = "/bin/false"

Disposition = Literal["disabled", "blacklisted"]


def _glob(directory: str) -> ReadGlob:
    return ReadGlob(f"{directory}/*")


def modinfo_read(name: str) -> RunCommand:
    return RunCommand(("modinfo", "-F", "filename", name))


def render_drop_in(modules: dict[str, Disposition]) -> str:
    lines = []
    for name, disposition in modules.items():
        if disposition == "disabled":
            lines.append(f"install {name} {NO_OP}")
        lines.append(f"blacklist {name}")
    return DROP_IN_HEADER + "".join(f"{line}\n" for line in lines)


def disposition(config: ModprobeConfig, module: str) -> Disposition | None:
    if config.disabled(module):
        return "disabled"
    return "blacklisted" if module in config.blacklist else None


def _spelled(spec: KmodSpec) -> dict[str, tuple[str, Disposition]]:
    """normalised name -> (the baseline's spelling, wanted disposition)."""
    wanted: dict[str, tuple[str, Disposition]] = {normalise(name): (name, "disabled") for name in spec.disabled}
    return wanted | {normalise(name): (name, "blacklisted") for name in spec.blacklisted}


@dataclass(frozen=True)
class KmodLive:
    drop_in: str | None
    ours: ModprobeConfig  # what converge's drop-in says
    others: ModprobeConfig  # what every other file modprobe reads says
    everything: ModprobeConfig  # all of it, as modprobe resolves it
    ours_spelled: dict[str, str]  # normalised -> the drop-in's spelling
    modinfo: dict[str, str | None]  # normalised -> the module's file ("(builtin)"), None when modinfo fails
    kernel: KernelState


def live_config(facts: Facts) -> tuple[str | None, list[tuple[str, str]]]:
    files = config_files({directory: facts.glob(f"{directory}/*") for directory in CONFIG_DIRECTORIES})
    drop_in = next((text for path, text in files if path == DROP_IN), None)
    return drop_in, files


class KmodProvider(Provider[KmodSpec, KmodLive]):
    name = "kmod"
    summary = "kernel modules kept out: a modprobe.d drop-in, unloading, the initramfs"
    spec_model = KmodSpec

    def presence_reads(self) -> Sequence[Read]:
        return [Which("modprobe")]

    def reads(self, spec: KmodSpec) -> Sequence[Read]:
        return [*(_glob(directory) for directory in CONFIG_DIRECTORIES),
                *kernel_reads(DROP_IN, initramfs=bool(spec.disabled)),
                *(modinfo_read(name) for name in [*spec.disabled, *spec.blacklisted])]

    def absent(self, facts: Facts) -> str | None:
        return None if facts.which("modprobe") else "kmod is not installed (no modprobe)"

    def live(self, spec: KmodSpec, facts: Facts) -> KmodLive:
        drop_in, files = live_config(facts)
        ours = resolve([(DROP_IN, drop_in)] if drop_in is not None else [])
        spelled = {}
        for line in (drop_in or "").splitlines():
            words = line.split()
            if words[:1] == ["blacklist"] and len(words) > 1:
                spelled[normalise(words[1])] = words[1]
        modinfo = {}
        for name in [*spec.disabled, *spec.blacklisted]:
            result = facts.command(*modinfo_read(name).argv)
            modinfo[normalise(name)] = result.stdout.strip().splitlines()[0] if result.ok and result.stdout.strip() else None
        return KmodLive(drop_in, ours, resolve([f for f in files if f[0] != DROP_IN]), resolve(files), spelled, modinfo,
                        kernel_state(facts, DROP_IN, initramfs=bool(spec.disabled)))

    # The diff: the drop-in's content, then each module's change, then the operations.

    def drop_in_content(self, spec: KmodSpec, live: KmodLive) -> dict[str, Disposition]:
        """What the drop-in must hold: every module it holds already, and every module no other file
        keeps out as asked (what the distribution already says is not repeated)."""
        content: dict[str, Disposition] = {}
        for module, (name, wanted) in _spelled(spec).items():
            elsewhere = disposition(live.others, module)
            if module in live.ours_spelled or elsewhere not in (wanted, "disabled"):
                content[name] = wanted
        return content

    def diff(self, spec: KmodSpec, live: KmodLive) -> ProviderPlan:
        content = self.drop_in_content(spec, live)
        text = render_drop_in(content) if content else None
        writes = text != live.drop_in
        wanted = {normalise(name): value for name, value in content.items()}
        loaded = live.kernel.loaded
        disabled = [normalise(name) for name in spec.disabled]
        order, _ = unloadable(loaded, disabled) if loaded is not None else ([], {})
        changes: list[Change] = []
        for module, (name, after) in _spelled(spec).items():
            before = disposition(live.everything, module)
            # The drop-in changes for this module: another disposition, or another spelling of its name.
            persisted_moves = module in wanted and (wanted[module] != disposition(live.ours, module)
                                                    or live.ours_spelled.get(module) != name)
            notes: list[str] = []
            sides: dict[str, Side] = {}
            if persisted_moves:
                notes.append(f"write {DROP_IN}")
            if after == "disabled" and loaded is not None and module in loaded:
                sides["persisted"] = Side(disposition(live.ours, module), wanted.get(module))
                sides["runtime"] = Side("loaded", "unloaded" if module in order else "loaded")
                notes.append("loaded now: modprobe -r" if module in order
                             else "loaded now and in use: stays loaded until a reboot")
            if not persisted_moves and module not in order:
                continue
            if after == "disabled" and loaded is None:
                notes.append(f"runtime not applicable: {live.kernel.why_not}")
            action: Action = "add" if before is None else "update"
            changes.append(Change(self.name, self.name, name, action, before, after, tuple(notes), sides))
        for module, name in live.ours_spelled.items():
            if module not in _spelled(spec):
                changes.append(Change(self.name, self.name, name, "remove", disposition(live.ours, module),
                                      disposition(live.others, module),
                                      (f"drop from {DROP_IN}; a loaded module stays loaded",)))
        operations: list[Operation] = [unload_operation(module) for module in order]
        if writes:
            undo = (restore(DROP_IN, live.drop_in),)
            operations.append(Write(DROP_IN, text, undo=undo) if text is not None else Remove(DROP_IN, undo=undo))
        image = live.kernel.initramfs
        if spec.update_initramfs and image is not None and self._initramfs_stale(spec, live, writes):
            changes.append(Change(self.name, "initramfs", image.image, "update", self._held(spec, live), [],
                                  (f"holds disabled modules and an older modprobe.d: {initramfs_operation(image).argv[0]}",)))
            operations.append(initramfs_operation(image))
        return ProviderPlan(changes, operations)

    def _held(self, spec: KmodSpec, live: KmodLive) -> list[str]:
        image = live.kernel.initramfs
        return sorted(normalise(name) for name in spec.disabled if image and normalise(name) in image.modules)

    def _initramfs_stale(self, spec: KmodSpec, live: KmodLive, writes: bool) -> bool:
        if live.kernel.initramfs is None or not self._held(spec, live):
            return False
        return writes or (live.drop_in is not None and not live.kernel.initramfs.newer_than_drop_in)

    def warnings(self, spec: KmodSpec, live: KmodLive) -> list[str]:
        found = []
        unknown = [name for name in [*spec.disabled, *spec.blacklisted] if live.modinfo.get(normalise(name)) is None]
        if unknown:
            found.append(f"not modules of the running kernel (modinfo finds none of: {', '.join(unknown)}): "
                         "nothing to keep out here; the drop-in still names them for other kernels")
        for name in [*spec.disabled, *spec.blacklisted]:
            module = normalise(name)
            if live.modinfo.get(module) == "(builtin)":
                found.append(f"{name} is built into the running kernel: modprobe.d cannot keep it out")
            install = live.everything.install.get(module)
            # modprobe runs the first install command it reads: one read before the drop-in wins.
            if name in spec.disabled and install and install[0] != DROP_IN and disposition(live.everything, module) != "disabled":
                found.append(f"{name}: {install[0]} is read before {DROP_IN} and its `install {name} {install[1]}` wins")
            if name in spec.blacklisted and disposition(live.others, module) == "disabled":
                found.append(f"{name}: another modprobe.d file disables it (more than blacklisted); "
                             "converge leaves that file alone")
        if live.kernel.loaded is not None:
            _, reasons = unloadable(live.kernel.loaded, [normalise(name) for name in spec.disabled])
            found += [f"{module} is loaded and stays loaded until a reboot: {why}" for module, why in reasons.items()]
        image = live.kernel.initramfs
        if not spec.update_initramfs and image is not None and self._initramfs_stale(spec, live, self.diff_writes(spec, live)):
            found.append(f"{image.image} holds {', '.join(self._held(spec, live))} with an older modprobe.d: they can load "
                         f"from it at boot; run {' '.join(initramfs_operation(image).argv)} (or set update_initramfs = true)")
        return found

    def diff_writes(self, spec: KmodSpec, live: KmodLive) -> bool:
        content = self.drop_in_content(spec, live)
        return (render_drop_in(content) if content else None) != live.drop_in

    # Capture.

    def capture_reads(self) -> Sequence[Read]:
        return [*(_glob(directory) for directory in CONFIG_DIRECTORIES), *kernel_reads(DROP_IN, initramfs=False)]

    def capture_more_reads(self, facts: Facts) -> Sequence[Read]:
        return ()

    def capture(self, facts: Facts) -> Captured:
        from converge.providers.kmod.capture import captured

        return captured(self.live(KmodSpec.model_validate({}), facts))
