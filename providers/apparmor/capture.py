"""`converge capture`: the profiles of /etc/apparmor.d as a baseline table, built on `live`.

Each profile file becomes the entry that keeps it as it is: the mode alone when the text is its
package's (dpkg's conffile MD5, perhaps but for the mode flags aa-complain/aa-enforce rewrite),
mode and content when it is the admin's own or edited. Profiles exactly as shipped, and what the
table cannot hold as it is (mixed mode flags, local/ overrides, kernel-only profiles, a loaded
mode that differs from the files), are left out with a note. Each entry is checked with the
provider's own diff, so planning the capture is in sync.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

from converge.provider import Captured, Facts, ProviderError, Read, ReadFile, ReadGlob, RunCommand, Which
from converge.providers.apparmor.kernel import KERNEL_PROFILES
from converge.providers.apparmor.parse import parse_conffiles, profile_names, with_mode_flags
from converge.providers.apparmor.spec import PROFILE_DIR, AppArmorSpec, name_problem, validation_message

if TYPE_CHECKING:  # the provider calls in here; this module only needs its types
    from converge.providers.apparmor.provider import AppArmorProvider, ProfileOnDisk

LOCAL_DIR = f"{PROFILE_DIR}/local"
DPKG_QUERY = "dpkg-query"
# Every installed package's conffiles (the stock profiles among them), as shipped.
CONFFILES_ARGV = (DPKG_QUERY, "-W", "-f=${Conffiles}\n")
TextOrigin = Literal["shipped", "shipped but for mode flags", "own", "unknown"]
_NOT_TOLD = "modes are captured and profile texts are not"


def capture_reads() -> Sequence[Read]:
    return [Which(DPKG_QUERY), ReadFile(KERNEL_PROFILES), ReadGlob(f"{PROFILE_DIR}/*"), ReadGlob(f"{LOCAL_DIR}/*")]




def _names(facts: Facts) -> list[str]:
    return sorted(Path(path).name for path in facts.glob(f"{PROFILE_DIR}/*"))


def capture_more_reads(provider: AppArmorProvider, facts: Facts) -> Sequence[Read]:
    # Each file as `live` reads it; telling stock profiles from the admin's own needs dpkg's record.
    reads = provider.profile_reads([name for name in _names(facts) if name_problem(name) is None])
    return [*reads, RunCommand(CONFFILES_ARGV)] if facts.which(DPKG_QUERY) else reads


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8", errors="surrogateescape"), usedforsecurity=False).hexdigest()


def text_origin(text: str, shipped_md5: str | None) -> TextOrigin:
    """Whether a profile's text is its package's, perhaps with the mode flags aa-complain or
    aa-enforce rewrite (so a mode alone keeps it), or the admin's own (not packaged, or edited)."""
    if shipped_md5 is None:
        return "own"
    if _md5(text) == shipped_md5:
        return "shipped"
    if any(_md5(with_mode_flags(text, mode)) == shipped_md5 for mode in ("enforce", "complain")):
        return "shipped but for mode flags"
    return "own"


def captured_entry(on_disk: ProfileOnDisk, origin: TextOrigin) -> dict[str, str]:
    """The `[apparmor.profiles.NAME]` entry that keeps a profile file as it is: its mode, and its
    text unless that is its package's. Raises ValueError when no entry can keep it as it is."""
    assert on_disk.text is not None
    mode = on_disk.mode
    if mode == "mixed":
        raise ValueError("its headers mix mode flags (complain on some only, or kill/unconfined): "
                         "any baseline mode would rewrite them")
    if mode is None:
        raise ValueError("no profile header converge can read")
    if origin != "own":
        return {"mode": mode}
    try:
        on_disk.text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("its text is not UTF-8, which a TOML baseline cannot hold") from None
    return {"mode": mode, "content": on_disk.text}


def as_shipped(on_disk: ProfileOnDisk, origin: TextOrigin) -> bool:
    """Exactly as its package ships it: the same text, and no link setting another mode."""
    return origin == "shipped" and not (on_disk.disable_link or on_disk.force_complain_link)


def has_rules(text: str) -> bool:
    """Whether a local/ override holds anything but comments (`#include` is a rule, not a comment)."""
    lines = (line.strip() for line in text.splitlines())
    return any(line and (not line.startswith("#") or line.startswith("#include")) for line in lines)


def _shipped(facts: Facts, notes: list[str]) -> dict[str, str] | None:
    """MD5 of each packaged file as shipped; None when that cannot be known here."""
    if not facts.which(DPKG_QUERY):
        notes.append(f"no {DPKG_QUERY} on this host: stock profiles cannot be told from the admin's own, so {_NOT_TOLD}")
        return None
    result = facts.command(*CONFFILES_ARGV)
    if not result.ok:
        notes.append(f"{result.failure()}: {_NOT_TOLD}")
        return None
    try:
        return parse_conffiles(result.stdout, DPKG_QUERY)
    except ProviderError as error:
        notes.append(f"{error}: {_NOT_TOLD}")
        return None


_INCLUDE = re.compile(r'^\s*#?include\s+(?:if\s+exists\s+)?[<"]([^>"]+)[>"]', re.MULTILINE)


def own_includes(text: str, shipped: dict[str, str]) -> list[str]:
    """The files under /etc/apparmor.d a profile includes that no package ships (dpkg has no record of
    them): the admin's own abstractions and tunables. local/ overrides are noted apart."""
    found = []
    for target in _INCLUDE.findall(text):
        path = target if target.startswith("/") else f"{PROFILE_DIR}/{target}"
        if target.startswith("local/") or not path.startswith(f"{PROFILE_DIR}/"):
            continue
        if path not in shipped and not any(known.startswith(f"{path.rstrip('/')}/") for known in shipped):
            found.append(target)
    return sorted(set(found))


def _problem(error: ValueError) -> str:
    return validation_message(error) if isinstance(error, ValidationError) else str(error)


def capture(provider: AppArmorProvider, facts: Facts) -> Captured:
    notes: list[str] = []
    shipped = _shipped(facts, notes)
    names = _names(facts)
    problems = {name: problem for name in names if (problem := name_problem(name)) is not None}
    live = provider.live_of([name for name in names if name not in problems], facts)
    profiles: dict[str, dict[str, str]] = {}
    stock, in_files = [], set()
    for name in names:
        on_disk = live.profiles.get(name)
        if on_disk is None or on_disk.text is None:
            notes.append(f"{name}: {problems.get(name, 'gone while it was read')}; not captured")
            continue
        in_files.update(profile_names(on_disk.text))
        origin: TextOrigin = "unknown" if shipped is None else text_origin(on_disk.text, shipped.get(f"{PROFILE_DIR}/{name}"))
        try:
            entry = captured_entry(on_disk, origin)
            spec = AppArmorSpec.model_validate({"profiles": {name: entry}})
        except ValueError as error:
            notes.append(f"{name}: {_problem(error)}; not captured")
            continue
        # The round trip, checked here: planning the entry against this same state changes nothing.
        changes = provider.diff(spec, replace(live, profiles={name: on_disk})).changes
        if changes:
            notes.append(f"{name}: the kernel does not match its files ({'; '.join(changes[0].notes)}); not captured")
        elif as_shipped(on_disk, origin):
            stock.append(name)
        else:
            profiles[name] = entry
            own = own_includes(on_disk.text, shipped) if shipped is not None else []
            if own:
                notes.append(f"{name}: includes {', '.join(own)}, which no package ships (this host's own, in "
                             f"{PROFILE_DIR}): captured, but it fails to compile on a host without them")
    if stock:
        notes.append(f"{len(stock)} profile(s) exactly as their packages ship them (text and mode) "
                     f"not captured: {', '.join(stock)}")
    overrides = [Path(path).name for path, text in facts.glob(f"{LOCAL_DIR}/*").items() if has_rules(text)]
    if overrides:
        notes.append(f"{LOCAL_DIR}/ overrides with rules, which the apparmor table does not manage, "
                     f"not captured: {', '.join(overrides)}")
    elsewhere = [name for name in (live.kernel.loaded or {}) if "//" not in name and name not in in_files]
    if elsewhere:
        notes.append(f"{len(elsewhere)} profile(s) loaded in the kernel from no file in {PROFILE_DIR} "
                     f"(snaps, container runtimes) not captured: {', '.join(sorted(elsewhere))}")
    return Captured({"profiles": profiles}, notes)
