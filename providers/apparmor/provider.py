"""The apparmor provider: reads -> live -> diff (changes and the operations that make them)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from converge.provider import (
    Captured,
    Change,
    Facts,
    Operation,
    Provider,
    ProviderError,
    ProviderPlan,
    Read,
    ReadFile,
    Remove,
    Run,
    Side,
    Which,
    Write,
    restore,
)
from converge.providers.apparmor import capture as capturing
from converge.providers.apparmor import kernel
from converge.providers.apparmor.kernel import KERNEL_PROFILES, PARSER, KernelState
from converge.providers.apparmor.parse import PARSER_ERROR, flags_mode, profile_headers, with_mode_flags
from converge.providers.apparmor.spec import PROFILE_DIR, AppArmorSpec, ProfileSpec
from converge.suggest import Suggestion

# ---- constants and reads --------------------------------------------------------------------
DISABLE_DIR = f"{PROFILE_DIR}/disable"
FORCE_COMPLAIN_DIR = f"{PROFILE_DIR}/force-complain"
# Compile a text on stdin against the host's own includes, loading nothing: every text is
# checked before anything is written.
COMPILE_ARGV = (PARSER, "-Q", "-K", "--base", PROFILE_DIR, "-I", PROFILE_DIR)


def profile_path(name: str) -> str:
    return f"{PROFILE_DIR}/{name}"


def profile_reads(names: Iterable[str]) -> list[Read]:
    # A link's read gives its target's text: present (not None) means the link is there.
    return [ReadFile(f"{directory}/{name}") for name in names for directory in (PROFILE_DIR, DISABLE_DIR, FORCE_COMPLAIN_DIR)]


# ---- live -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProfileOnDisk:
    text: str | None
    disable_link: bool
    force_complain_link: bool

    @property
    def mode(self) -> str | None:
        """The mode as AppArmor's tools and boot scripts read it: enforce, complain, disabled, or
        mixed (headers with different mode flags); None without a profile in the file."""
        if self.text is None:
            return None
        if self.disable_link:
            return "disabled"
        if self.force_complain_link:
            return "complain"
        return flags_mode(self.text)

    @property
    def forced_complain(self) -> bool:
        """Complain by the force-complain/ link only: its text has to be loaded with `-C`."""
        return self.force_complain_link and self.text is not None and flags_mode(self.text) != "complain"

    @property
    def exists(self) -> bool:
        return self.text is not None or self.disable_link or self.force_complain_link


@dataclass(frozen=True)
class AppArmorLive:
    profiles: dict[str, ProfileOnDisk]
    kernel: KernelState


def profiles_on_disk(names: Iterable[str], facts: Facts) -> dict[str, ProfileOnDisk]:
    return {
        name: ProfileOnDisk(facts.file(profile_path(name)), facts.file(f"{DISABLE_DIR}/{name}") is not None,
                            facts.file(f"{FORCE_COMPLAIN_DIR}/{name}") is not None)
        for name in names
    }


# ---- diff: what one declared profile must become --------------------------------------------
@dataclass(frozen=True)
class WantedProfile:
    """What one declared profile must look like on disk and in the kernel."""

    text: str
    mode: str  # the baseline's: enforce, complain or disabled
    disable_link: bool
    drop_force_complain: bool
    kernel_mode: str | None  # for each top-level profile of the file; None: not loaded
    force_complain: bool  # complain by the force-complain/ link, not by the text's flags


def wanted_profile(name: str, spec: ProfileSpec, on_disk: ProfileOnDisk) -> WantedProfile:
    base = spec.text if spec.text is not None else on_disk.text
    if base is None:
        raise ProviderError(f"{name}: no {profile_path(name)} on this host; give source or content to install it")
    if not profile_headers(base):
        raise ProviderError(f"{name}: {profile_path(name)} has no profile header converge can read; give source or content")
    assert spec.mode is not None  # the spec requires it unless ensure = "absent"
    # A force-complain/ link already makes it complain (the boot scripts force the mode): either
    # form satisfies complain, and converge writes the flag, as aa-complain does, only when neither is there.
    forced = spec.mode == "complain" and on_disk.force_complain_link
    text = base if forced else with_mode_flags(base, spec.mode)
    kernel_mode = None if spec.mode == "disabled" else spec.mode
    return WantedProfile(text, spec.mode, spec.mode == "disabled", spec.mode == "enforce", kernel_mode,
                         forced and flags_mode(text) != "complain")


def unified_diff(path: str, before: str | None, after: str) -> str:
    lines = difflib.unified_diff(
        (before or "").splitlines(), after.splitlines(),
        fromfile=path if before is not None else "/dev/null", tofile=f"{path} (baseline)", lineterm="",
    )
    return "\n".join(lines)


def loaded_mode(modes: dict[str, str | None]) -> str | dict[str, str | None] | None:
    """The kernel side of a change: the one mode all of a file's profiles run in, None when none
    is loaded, else each profile's mode."""
    values = set(modes.values())
    if len(values) == 1:
        return next(iter(values))
    return dict(modes)


@dataclass
class _Steps:
    """A plan's operations by phase: compile every text, write files, set links, then the kernel."""

    compile: list[Operation]
    files: list[Operation]
    links: list[Operation]  # and the files of removed profiles, each after its links
    kernel: list[Operation]

    def all(self) -> list[Operation]:
        return [*self.compile, *self.files, *self.links, *self.kernel]


def _link(name: str, directory: str, steps: _Steps) -> None:
    link, mkdir = f"{directory}/{name}", Run(("mkdir", "-p", directory), says=f"ensured {directory}")
    steps.links += [mkdir] if mkdir not in steps.links else []
    steps.links.append(Run(("ln", "-sf", profile_path(name), link), says=f"linked {link}", undo=(Remove(link),)))


def _unlink(name: str, directory: str, steps: _Steps) -> None:
    link = f"{directory}/{name}"
    steps.links.append(Remove(link, undo=(Run(("ln", "-sf", profile_path(name), link)),)))


def _link_notes(name: str, wanted: WantedProfile, on_disk: ProfileOnDisk, steps: _Steps) -> list[str]:
    """The disable/ and force-complain/ links the mode needs: aa-disable's link, and no
    force-complain/ link in enforce mode."""
    notes = []
    if wanted.disable_link and not on_disk.disable_link:
        notes.append(f"link {DISABLE_DIR}/{name}")
        _link(name, DISABLE_DIR, steps)
    if not wanted.disable_link and on_disk.disable_link:
        notes.append(f"unlink {DISABLE_DIR}/{name}")
        _unlink(name, DISABLE_DIR, steps)
    if wanted.drop_force_complain and on_disk.force_complain_link:
        notes.append(f"unlink {FORCE_COMPLAIN_DIR}/{name}")
        _unlink(name, FORCE_COMPLAIN_DIR, steps)
    return notes


def _kernel_notes(modes: dict[str, str | None], wanted: str | None, reload: bool) -> list[str]:
    if wanted is None:
        return [f"unload from the kernel ({PARSER} -R)"] if any(modes.values()) else []
    if reload or any(mode != wanted for mode in modes.values()):
        shown = ", ".join(f"{profile}: {mode or 'not loaded'}" for profile, mode in modes.items())
        return [f"load into the kernel ({PARSER} -r; now {shown})"]
    return []


PENDING = "kernel load pending: no AppArmor in this host's kernel"


class AppArmorProvider(Provider[AppArmorSpec, AppArmorLive]):
    name = "apparmor"
    summary = "AppArmor profiles in /etc/apparmor.d: content, enforce/complain/disabled mode, kernel load"
    spec_model = AppArmorSpec

    def presence_reads(self) -> Sequence[Read]:
        return [Which(PARSER)]

    def reads(self, spec: AppArmorSpec) -> Sequence[Read]:
        return [ReadFile(KERNEL_PROFILES), *profile_reads(spec.profiles)]

    # ---- absent -----------------------------------------------------------------------------
    def absent(self, facts: Facts) -> str | None:
        return None if facts.which(PARSER) else f"AppArmor's tools are not installed ({PARSER} not found)"

    # ---- live -------------------------------------------------------------------------------
    def live(self, spec: AppArmorSpec, facts: Facts) -> AppArmorLive:
        return self.live_of(spec.profiles, facts)

    def live_of(self, names: Iterable[str], facts: Facts) -> AppArmorLive:
        """The live state of the profile files `names` (capture asks for every file there is)."""
        return AppArmorLive(profiles_on_disk(names, facts), KernelState.from_facts(facts))

    # ---- diff -------------------------------------------------------------------------------
    def diff(self, spec: AppArmorSpec, live: AppArmorLive) -> ProviderPlan:
        plan, steps = ProviderPlan(), _Steps([], [], [], [])
        for name, profile in spec.profiles.items():
            on_disk = live.profiles[name]
            if profile.ensure == "absent":
                change = self._remove(name, on_disk, live.kernel, steps)
            else:
                change = self._converge(name, wanted_profile(name, profile, on_disk), on_disk, live.kernel, steps)
            if change is not None:
                plan.changes.append(change)
        plan.operations = steps.all()
        return plan

    def _converge(self, name: str, wanted: WantedProfile, on_disk: ProfileOnDisk, kernel_state: KernelState,
                  steps: _Steps) -> Change | None:
        path, notes = profile_path(name), []
        rewrite = on_disk.text != wanted.text
        if rewrite:
            steps.compile.append(Run(COMPILE_ARGV, input=wanted.text, says=f"compiled {name} ({PARSER} -Q -K)",
                                     fails_on=PARSER_ERROR, about=name, check=True))
            steps.files.append(Write(path, wanted.text, undo=(restore(path, on_disk.text),)))
            if on_disk.text is not None:
                notes.append("profile text changes")
            if on_disk.text is not None and on_disk.mode is None:
                notes.append(f"{path} defines no profile converge can read")
        notes += _link_notes(name, wanted, on_disk, steps)
        disk_changes = bool(notes) or rewrite
        sides: dict[str, Side] = {}
        if kernel_state.enabled:
            modes = kernel_state.modes_of(wanted.text)
            kernel_notes = _kernel_notes(modes, wanted.kernel_mode, rewrite)
            if kernel_notes:
                steps.kernel.append(self._kernel_step(name, wanted, on_disk, modes))
                sides = {"file": Side(on_disk.mode, wanted.mode), "kernel": Side(loaded_mode(modes), wanted.kernel_mode)}
            notes += kernel_notes
        elif disk_changes:
            notes.append(PENDING)
        if not notes and not rewrite:
            return None
        return Change(self.name, self.name, name, "add" if on_disk.text is None else "update", on_disk.mode,
                      wanted.mode, tuple(notes), sides,
                      unified_diff(path, on_disk.text, wanted.text) if rewrite else None, {"path": path})

    @staticmethod
    def _kernel_step(name: str, wanted: WantedProfile, on_disk: ProfileOnDisk, modes: dict[str, str | None]) -> Run:
        if wanted.kernel_mode is None:
            return kernel.unload(name, wanted.text, forced=on_disk.forced_complain)
        return kernel.load(name, wanted.text, wanted.kernel_mode, force_complain=wanted.force_complain,
                           before=on_disk.text, was_loaded=any(modes.values()), before_forced=on_disk.forced_complain)

    def _remove(self, name: str, on_disk: ProfileOnDisk, kernel_state: KernelState, steps: _Steps) -> Change | None:
        if not on_disk.exists:
            return None
        path = profile_path(name)
        notes = [f"remove {path} and its disable/ and force-complain/ links"]
        # Links first, while the file they point to still exists (a removal backs up the target).
        if on_disk.disable_link:
            _unlink(name, DISABLE_DIR, steps)
        if on_disk.force_complain_link:
            _unlink(name, FORCE_COMPLAIN_DIR, steps)
        if on_disk.text is not None:
            steps.links.append(Remove(path, undo=(restore(path, on_disk.text),)))
        sides: dict[str, Side] = {}
        if on_disk.text is not None and kernel_state.enabled:
            modes = kernel_state.modes_of(on_disk.text)
            if any(modes.values()):
                notes.append(f"unload from the kernel ({PARSER} -R)")
                steps.kernel.append(kernel.unload(name, on_disk.text, forced=on_disk.forced_complain))
                sides = {"file": Side(on_disk.mode, None), "kernel": Side(loaded_mode(modes), None)}
        return Change(self.name, self.name, name, "remove", on_disk.mode, None, tuple(notes), sides, None, {"path": path})

    # ---- warnings ---------------------------------------------------------------------------
    def warnings(self, spec: AppArmorSpec, live: AppArmorLive) -> list[str]:
        if live.kernel.enabled or not spec.profiles:
            return []
        return [f"apparmor: no AppArmor in this host's kernel (no {KERNEL_PROFILES}): profiles are managed on disk only"]

    # ---- capture (capture.py) ---------------------------------------------------------------
    def capture_reads(self) -> Sequence[Read]:
        return capturing.capture_reads()

    def capture_more_reads(self, facts: Facts) -> Sequence[Read]:
        return capturing.capture_more_reads(self, facts)

    def capture(self, facts: Facts) -> Captured:
        return capturing.capture(self, facts)

    @staticmethod
    def profile_reads(names: Iterable[str]) -> list[Read]:
        return profile_reads(names)

    # ---- suggest (converge.suggest.Suggesting): proposals from ALLOWED/DENIED records, suggest.py
    def suggest_reads(self, spec: AppArmorSpec) -> Sequence[Read]:
        from converge.providers.apparmor import suggest

        return suggest.suggest_reads()

    def suggest(self, spec: AppArmorSpec, facts: Facts, since: float | None) -> list[Suggestion]:
        from converge.providers.apparmor import suggest

        return suggest.suggest(spec, facts, since)
