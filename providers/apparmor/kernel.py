"""The kernel seam: everything that needs a kernel with AppArmor is here, and nothing else is.

What is loaded is read from the kernel's profiles file; loading and unloading are operations
that feed the profile text to apparmor_parser on standard input, so the kernel gets exactly the
text the plan shows (and an undo can put back the text the plan read, whatever the files hold).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from converge.provider import Facts, Run
from converge.providers.apparmor.parse import PARSER_ERROR, parse_loaded_profiles, profile_names
from converge.providers.apparmor.spec import PROFILE_DIR

# One line per loaded profile; absent when the kernel has no AppArmor (not built in, disabled
# at boot, or securityfs not mounted).
KERNEL_PROFILES = "/sys/kernel/security/apparmor/profiles"
PARSER = "apparmor_parser"
_SEARCH = ("--base", PROFILE_DIR, "-I", PROFILE_DIR)


@dataclass(frozen=True)
class KernelState:
    """The profiles the kernel has loaded (name -> mode), or None when it has no AppArmor."""

    loaded: dict[str, str] | None

    @property
    def enabled(self) -> bool:
        return self.loaded is not None

    def modes_of(self, text: str) -> dict[str, str | None]:
        """The loaded mode of each top-level profile the text defines (None: not loaded)."""
        loaded = self.loaded or {}
        return {name: loaded.get(name) for name in profile_names(text)}

    @classmethod
    def from_facts(cls, facts: Facts) -> KernelState:
        text = facts.file(KERNEL_PROFILES)
        return cls(None if text is None else parse_loaded_profiles(text, KERNEL_PROFILES))


def load_argv(*, force_complain: bool = False) -> tuple[str, ...]:
    """Load or replace the profiles of the text on stdin, as aa-enforce/aa-complain do; `-C`
    forces complain mode, as the boot scripts do for a profile linked in force-complain/."""
    return (PARSER, *_SEARCH, "-r", *(("-C",) if force_complain else ()))


def unload_argv() -> tuple[str, ...]:
    """Remove the profiles of the text on stdin from the kernel, as aa-disable does."""
    return (PARSER, *_SEARCH, "-R")


def load(name: str, text: str, mode: str, *, force_complain: bool, before: str | None, was_loaded: bool,
         before_forced: bool) -> Run:
    """Load `text`; undone by loading the text read before (`before`, in complain mode if it was
    forced so) if the kernel had it, else by unloading what was loaded."""
    undo = _load(before, force_complain=before_forced) if was_loaded and before is not None else _unload(text)
    return replace(_load(text, force_complain=force_complain), says=f"loaded {name} into the kernel ({mode})", undo=(undo,))


def unload(name: str, text: str, *, forced: bool) -> Run:
    """Unload the profiles `text` defines; undone by loading them again (in complain mode if they
    were forced so)."""
    return replace(_unload(text), says=f"unloaded {name} from the kernel", undo=(_load(text, force_complain=forced),))


def _load(text: str, *, force_complain: bool = False) -> Run:
    return Run(load_argv(force_complain=force_complain), input=text, fails_on=PARSER_ERROR)


def _unload(text: str) -> Run:
    return Run(unload_argv(), input=text, fails_on=PARSER_ERROR)
