"""apparmor: profiles in /etc/apparmor.d, their modes on disk and, with a kernel, as loaded.

A profile is installed from the baseline (`source` or inline `content`) or, without either,
only its mode is managed. Modes are written the way AppArmor's own tools write them:
`aa-complain` sets `flags=(complain)` on every profile header of the file, `aa-enforce` drops it
(and any `force-complain/` link), `aa-disable` links the file into `disable/`. Both on-disk forms
of complain mode (the flag and the `force-complain/` link) are read as complain.

Every text converge writes is first compiled by `apparmor_parser -Q -K` against the host's own
includes (fed on standard input, so nothing is written before it compiles). What needs an
AppArmor kernel (what is loaded, loading and unloading) goes through `KernelState` and the
`load_argv`/`unload_argv` pair below; on a kernel without AppArmor the on-disk state is managed
and the plan warns that loading is pending.

`converge capture` writes each profile file of /etc/apparmor.d as the entry that keeps it as it
is: the mode alone when the text is its package's (dpkg's conffile MD5, perhaps but for the mode
flags aa-complain/aa-enforce rewrite), mode and content when it is the admin's own or edited.
Profiles exactly as shipped, and what the table cannot hold as it is (mixed mode flags, local/
overrides, kernel-only profiles, a loaded mode that differs from the files), are left out with a
note. Each entry is checked with this provider's own diff, so planning the capture is in sync.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, PrivateAttr, ValidationError, field_validator, model_validator

from converge.errors import ProviderError
from converge.hosts import Host
from converge.plan import Change
from converge.provider import Captured, Provider
from converge.reads import Facts, Read, ReadFile, ReadGlob, RunCommand, Which

PROFILE_DIR = "/etc/apparmor.d"
DISABLE_DIR = f"{PROFILE_DIR}/disable"
FORCE_COMPLAIN_DIR = f"{PROFILE_DIR}/force-complain"
LOCAL_DIR = f"{PROFILE_DIR}/local"
PARSER = "apparmor_parser"
MAX_PROFILE_BYTES = 1024 * 1024

Mode = Literal["enforce", "complain", "disabled"]
# Flags that select a profile mode; aa-complain and aa-enforce remove the ones that conflict.
MODE_FLAGS = frozenset({"complain", "enforce", "kill", "unconfined", "prompt"})

# ---------------------------------------------------------------------------------------------
# The kernel seam: everything that needs a kernel with AppArmor is here, and nothing else is.
# ---------------------------------------------------------------------------------------------
# One line per loaded profile, `[:namespace://]name (mode)` (security/apparmor/apparmorfs.c).
KERNEL_PROFILES = "/sys/kernel/security/apparmor/profiles"
_LOADED_LINE = re.compile(r"(?P<name>.+) \((?P<mode>[a-z]+)\)")


def parse_loaded_profiles(text: str) -> dict[str, str]:
    """Profile name -> kernel mode (enforce, complain, kill, unconfined, user) of the profiles file."""
    loaded = {}
    for line in text.splitlines():
        match = _LOADED_LINE.fullmatch(line.rstrip())
        if match:
            loaded[match["name"]] = match["mode"]
        elif line.strip():
            raise ProviderError(f"{KERNEL_PROFILES}: unexpected line {line!r}")
    return loaded


@dataclass(frozen=True)
class KernelState:
    """The profiles the kernel has loaded, or None when it has no AppArmor (no profiles file:
    AppArmor not built in, disabled at boot, or securityfs not mounted)."""

    loaded: dict[str, str] | None

    @property
    def enabled(self) -> bool:
        return self.loaded is not None

    def modes_of(self, names: Sequence[str]) -> dict[str, str | None]:
        loaded = self.loaded or {}
        return {name: loaded.get(name) for name in names}

    @classmethod
    def from_facts(cls, facts: Facts) -> KernelState:
        text = facts.file(KERNEL_PROFILES)
        return cls(None if text is None else parse_loaded_profiles(text))


def load_argv(path: str) -> list[str]:
    """Load or replace a profile file's profiles in the kernel, as aa-enforce/aa-complain do."""
    return [PARSER, "-I", PROFILE_DIR, "--base", PROFILE_DIR, "-r", path]


def unload_argv(path: str) -> list[str]:
    """Remove a profile file's profiles from the kernel, as aa-disable does."""
    return [PARSER, "-I", PROFILE_DIR, "--base", PROFILE_DIR, "-R", path]


# ---------------------------------------------------------------------------------------------
# Profile text: headers, names and mode flags (pure functions).
# ---------------------------------------------------------------------------------------------
_HEADER = re.compile(
    r"""(?P<lead>\s*)
    (?P<head>
        profile\s+(?:"[^"]+"|[^\s{]+)(?:\s+(?:"[^"]*"|[/@]\S*))?   # profile NAME [ATTACHMENT]
      | hat\s+[^\s{]+ | \^[^\s{]+                                  # hat NAME, ^NAME
      | "/[^"]*" | /\S* | @\{\S+\}\S*                              # a bare attachment
    )
    (?P<xattrs>\s+xattrs\s*=\s*\([^)]*\))?
    (?:\s+(?:flags\s*=\s*)?\((?P<flags>[^)]*)\))?
    \s*\{\s*(?P<comment>\#.*)?""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Header:
    """A line opening a profile, child profile or hat."""

    line: int  # index in text.splitlines()
    depth: int  # 0 for top-level profiles
    name: str
    flags: tuple[str, ...]


def _header_name(head: str) -> str:
    if head.startswith("profile"):
        head = head.split(None, 1)[1]
        head = head[1:].split('"', 1)[0] if head.startswith('"') else head.split()[0]
    elif head.startswith("hat"):
        head = head.split(None, 1)[1]
    return head.removeprefix("^").strip('"')


def _split_flags(flags: str | None) -> tuple[str, ...]:
    return tuple(flag for flag in re.split(r"[\s,]+", flags or "") if flag)


def profile_headers(text: str) -> list[Header]:
    """Every profile and hat header, with its nesting depth. Blocks are line-based in AppArmor
    policy: an opening line ends with `{` and a closing line is `}` (braces inside globs such as
    `/usr/{bin,sbin}/x` never end a line)."""
    headers, depth = [], 0
    for index, raw in enumerate(text.splitlines()):
        line = raw.strip()
        if line.startswith("#") and not line.startswith("#include"):
            continue
        match = _HEADER.fullmatch(raw)
        if match:
            headers.append(Header(index, depth, _header_name(match["head"]), _split_flags(match["flags"])))
            depth += 1
        elif re.sub(r"\s+#.*$", "", line).endswith("{"):
            depth += 1  # conditional blocks
        elif re.fullmatch(r"\}\s*(#.*)?", line):
            depth = max(depth - 1, 0)
    return headers


def profile_names(text: str) -> list[str]:
    """Names of the top-level profiles a file defines, as the kernel lists them."""
    return [header.name for header in profile_headers(text) if header.depth == 0]


def flags_mode(text: str) -> str:
    """complain when every header has the complain flag, enforce when none has a mode flag,
    mixed otherwise (then aa-complain or aa-enforce would rewrite some headers)."""
    headers = profile_headers(text)
    if not headers:
        raise ValueError("no profile found in the text")
    if all("complain" in header.flags for header in headers):
        return "complain"
    if not any(MODE_FLAGS & set(header.flags) for header in headers):
        return "enforce"
    return "mixed"


def with_mode_flags(text: str, mode: Mode) -> str:
    """The text with every header's flags set as aa-complain (complain) or aa-enforce (enforce)
    sets them; disabled leaves the flags alone, as aa-disable does. Untouched lines stay as is."""
    if mode == "disabled":
        return text
    lines = text.splitlines(keepends=True)
    for header in profile_headers(text):
        flags = [flag for flag in header.flags if flag not in MODE_FLAGS]
        if mode == "complain":
            flags.append("complain")
        if sorted(flags) == sorted(header.flags):
            continue
        raw = lines[header.line]
        ending = raw[len(raw.rstrip("\r\n")):]
        match = _HEADER.fullmatch(raw.rstrip("\r\n"))
        assert match is not None
        rebuilt = match["lead"] + match["head"] + (match["xattrs"] or "")
        rebuilt += f" flags=({', '.join(sorted(flags))})" if flags else ""
        rebuilt += " {" + (f" {match['comment']}" if match["comment"] else "")
        lines[header.line] = rebuilt + ending
    return "".join(lines)


def unified_diff(path: str, before: str | None, after: str) -> str:
    lines = difflib.unified_diff(
        (before or "").splitlines(), after.splitlines(),
        fromfile=path if before is not None else "/dev/null", tofile=f"{path} (baseline)", lineterm="",
    )
    return "\n".join(lines)


def parser_message(output: str) -> str:
    """The parser's own error lines, without the cache notice every run prints without a kernel."""
    lines = [line.strip() for line in output.splitlines() if line.strip() and not line.startswith("Cache read/write disabled")]
    return "; ".join(lines) or "apparmor_parser failed without a message"


# ---------------------------------------------------------------------------------------------
# The baseline table.
# ---------------------------------------------------------------------------------------------
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,254}")
# Directories of /etc/apparmor.d and names the parser skips when it loads the directory.
_RESERVED = {"abi", "abstractions", "apache2.d", "cache", "cache.d", "disable", "force-complain", "local", "lxc", "tunables"}
_SKIPPED_SUFFIXES = (".rpmnew", ".rpmsave", ".orig", ".rej", "~", ".dpkg-new", ".dpkg-old", ".dpkg-dist", ".dpkg-bak",
                     ".dpkg-remove", ".pacsave", ".pacnew")


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            "not a profile file name: letters, digits and _ . @ + - only, no '/', no '..', not starting with '.' "
            "(e.g. usr.sbin.nginx)"
        )
    if name in _RESERVED:
        raise ValueError(f"{name!r} is a directory of {PROFILE_DIR}, not a profile")
    skipped = [suffix for suffix in _SKIPPED_SUFFIXES if name.endswith(suffix)]
    if skipped:
        raise ValueError(f"apparmor_parser skips files named *{skipped[0]} when it loads {PROFILE_DIR}")
    return name


def _check_text(text: str, where: str) -> str:
    if len(text.encode()) > MAX_PROFILE_BYTES:
        raise ValueError(f"{where} is larger than {MAX_PROFILE_BYTES} bytes")
    if "\x00" in text:
        raise ValueError(f"{where} contains a NUL character")
    try:
        flags_mode(text)
    except ValueError:
        raise ValueError(f"{where} defines no profile (no `profile NAME {{` or `/path {{` line)") from None
    return text


def _read_source(source: str) -> str:
    try:
        return Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {source}: {error}") from None


ProfileName = Annotated[str, AfterValidator(_check_name)]


class ProfileSpec(BaseModel):
    """`[apparmor.profiles.NAME]`: the file /etc/apparmor.d/NAME."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ensure: Literal["present", "absent"] = "present"
    mode: Mode | None = None
    source: str | None = None
    content: str | None = None
    _text: str | None = PrivateAttr(default=None)

    @field_validator("source")
    @classmethod
    def _readable_profile(cls, source: str | None) -> str | None:
        if source is not None:
            _check_text(_read_source(source), source)
        return source

    @field_validator("content")
    @classmethod
    def _profile_content(cls, content: str | None) -> str | None:
        return None if content is None else _check_text(content, "the text")

    @model_validator(mode="after")
    def _consistent(self) -> ProfileSpec:
        if self.ensure == "absent":
            if self.mode or self.source or self.content is not None:
                raise ValueError('ensure = "absent" removes the profile: give no mode, source or content')
            return self
        if self.mode is None:
            raise ValueError('mode is required: "enforce", "complain" or "disabled"')
        if self.source is not None and self.content is not None:
            raise ValueError("give either source or content, not both")
        self._text = _read_source(self.source) if self.source is not None else self.content
        return self

    @property
    def text(self) -> str | None:
        """The profile text the baseline gives (None: manage the mode of the host's file)."""
        return self._text


class AppArmorSpec(BaseModel):
    """`[apparmor]`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    profiles: dict[ProfileName, ProfileSpec] = {}


# ---------------------------------------------------------------------------------------------
# Live state, desired state, diff.
# ---------------------------------------------------------------------------------------------
def profile_path(name: str) -> str:
    return f"{PROFILE_DIR}/{name}"


@dataclass(frozen=True)
class ProfileOnDisk:
    text: str | None
    disable_link: bool
    force_complain_link: bool

    @property
    def mode(self) -> str | None:
        """The mode as AppArmor's tools and boot scripts read it; None without a profile file."""
        if self.text is None:
            return None
        if self.disable_link:
            return "disabled"
        if self.force_complain_link:
            return "complain"
        try:
            return flags_mode(self.text)
        except ValueError:
            return "no profile"


@dataclass(frozen=True)
class AppArmorLive:
    profiles: dict[str, ProfileOnDisk]
    kernel: KernelState


@dataclass(frozen=True)
class Desired:
    """What one declared profile must look like on disk and in the kernel."""

    text: str
    disable_link: bool
    drop_force_complain: bool
    # Kernel mode wanted for each top-level profile of the file (None: not loaded).
    kernel_mode: str | None


def desired_profile(name: str, spec: ProfileSpec, on_disk: ProfileOnDisk) -> Desired:
    base = spec.text if spec.text is not None else on_disk.text
    if base is None:
        raise ProviderError(f"{name}: no {profile_path(name)} on this host; give source or content to install it")
    if not profile_headers(base):
        raise ProviderError(f"{name}: {profile_path(name)} has no profile header converge can read; give source or content")
    assert spec.mode is not None
    kernel_mode = None if spec.mode == "disabled" else spec.mode
    # A force-complain/ link already makes it complain (the parser forces the mode): either form
    # satisfies complain, and converge writes the flag, as aa-complain does, only when neither is there.
    text = base if spec.mode == "complain" and on_disk.force_complain_link else with_mode_flags(base, spec.mode)
    return Desired(text, spec.mode == "disabled", spec.mode == "enforce", kernel_mode)


def _kernel_notes(text: str, kernel: KernelState, wanted: str | None, rewritten: bool) -> list[str]:
    """What loading must do; apply decides the same way (a rewritten file is always reloaded)."""
    if not kernel.enabled:
        return []
    loaded = kernel.modes_of(profile_names(text))
    if wanted is None:
        return [f"unload from the kernel ({PARSER} -R)"] if any(loaded.values()) else []
    if rewritten or any(mode != wanted for mode in loaded.values()):
        shown = ", ".join(f"{profile}: {mode or 'not loaded'}" for profile, mode in loaded.items())
        return [f"load into the kernel ({PARSER} -r; now {shown})"]
    return []


# ---------------------------------------------------------------------------------------------
# Capture: the profiles of /etc/apparmor.d as a baseline table, without what packages ship as is.
# ---------------------------------------------------------------------------------------------
DPKG_QUERY = "dpkg-query"
# Every installed package's conffiles (the stock profiles among them), as shipped.
CONFFILES_ARGV = (DPKG_QUERY, "-W", "-f=${Conffiles}\n")
# ` PATH MD5 [obsolete] [remove-on-upgrade]`; MD5 is `newconffile` while a package is unpacked.
_CONFFILE_LINE = re.compile(r" (?P<path>/.*?) (?P<md5>[0-9a-f]{32}|newconffile)(?: (?:obsolete|remove-on-upgrade))*")
TextOrigin = Literal["shipped", "shipped but for mode flags", "own", "unknown"]


def parse_conffiles(text: str) -> dict[str, str]:
    """Conffile path -> MD5 of the text its package ships, from `dpkg-query -W -f='${Conffiles}\\n'`."""
    shipped = {}
    for line in text.splitlines():
        match = _CONFFILE_LINE.fullmatch(line.rstrip())
        if match:
            shipped[match["path"]] = match["md5"]
        elif line.strip():
            raise ProviderError(f"{DPKG_QUERY}: unexpected conffile line {line!r}")
    return shipped


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
    if mode == "no profile":
        raise ValueError("no profile header converge can read")
    if origin != "own":
        return {"mode": str(mode)}
    try:
        on_disk.text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("its text is not UTF-8, which a TOML baseline cannot hold") from None
    return {"mode": str(mode), "content": on_disk.text}


def as_shipped(on_disk: ProfileOnDisk, origin: TextOrigin) -> bool:
    """Exactly as its package ships it: the same text, and no link setting another mode."""
    return origin == "shipped" and not (on_disk.disable_link or on_disk.force_complain_link)


def has_rules(text: str) -> bool:
    """Whether a local/ override holds anything but comments (`#include` is a rule, not a comment)."""
    lines = (line.strip() for line in text.splitlines())
    return any(line and (not line.startswith("#") or line.startswith("#include")) for line in lines)


def _validation_message(error: ValueError) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(str(detail["msg"]).removeprefix("Value error, ") for detail in error.errors())
    return str(error)


class AppArmorProvider(Provider[AppArmorSpec, AppArmorLive]):
    name = "apparmor"
    summary = "AppArmor profiles in /etc/apparmor.d: content, enforce/complain/disabled mode, kernel load"
    spec_model = AppArmorSpec

    def reads(self, spec: AppArmorSpec) -> Sequence[Read]:
        reads: list[Read] = [Which(PARSER), ReadFile(KERNEL_PROFILES)]
        for name in spec.profiles:
            # A link's read gives its target's text: present (not None) means the link is there.
            reads += [ReadFile(profile_path(name)), ReadFile(f"{DISABLE_DIR}/{name}"), ReadFile(f"{FORCE_COMPLAIN_DIR}/{name}")]
        return reads

    def absent(self, facts: Facts) -> str | None:
        return None if facts.which(PARSER) else f"AppArmor's tools are not installed ({PARSER} not found)"

    def live(self, spec: AppArmorSpec, facts: Facts) -> AppArmorLive:
        profiles = {
            name: ProfileOnDisk(
                facts.file(profile_path(name)),
                facts.file(f"{DISABLE_DIR}/{name}") is not None,
                facts.file(f"{FORCE_COMPLAIN_DIR}/{name}") is not None,
            )
            for name in spec.profiles
        }
        return AppArmorLive(profiles, KernelState.from_facts(facts))

    def diff(self, spec: AppArmorSpec, live: AppArmorLive) -> list[Change]:
        changes = []
        for name, profile in spec.profiles.items():
            on_disk, path = live.profiles[name], profile_path(name)
            extra = {"path": path}
            if profile.ensure == "absent":
                if on_disk.text is not None or on_disk.disable_link or on_disk.force_complain_link:
                    notes = [f"remove {path} and its disable/ and force-complain/ links"]
                    notes += _kernel_notes(on_disk.text or "", live.kernel, None, False)
                    changes.append(Change(self.name, name, "remove", on_disk.mode, None, tuple(notes), extra))
                continue
            desired = desired_profile(name, profile, on_disk)
            rewrite = on_disk.text != desired.text
            notes = []
            if rewrite and on_disk.text is not None:
                notes.append("profile text changes")
            if desired.disable_link != on_disk.disable_link:
                notes.append(f"{'link' if desired.disable_link else 'unlink'} {DISABLE_DIR}/{name}")
            if desired.drop_force_complain and on_disk.force_complain_link:
                notes.append(f"unlink {FORCE_COMPLAIN_DIR}/{name}")
            disk_changes = bool(notes) or rewrite
            notes += _kernel_notes(desired.text, live.kernel, desired.kernel_mode, rewrite)
            if not notes and not rewrite:
                continue
            if disk_changes and not live.kernel.enabled:
                notes.append("kernel load pending: no AppArmor in this host's kernel")
            detail = unified_diff(path, on_disk.text, desired.text) if rewrite else None
            action = "add" if on_disk.text is None else "update"
            changes.append(Change(self.name, name, action, on_disk.mode, profile.mode, tuple(notes), extra, detail))
        return changes

    def warnings(self, spec: AppArmorSpec, live: AppArmorLive) -> list[str]:
        if live.kernel.enabled or not spec.profiles:
            return []
        return [f"apparmor: no AppArmor in this host's kernel (no {KERNEL_PROFILES}): profiles are managed on disk only"]

    def apply(self, host: Host, spec: AppArmorSpec, live: AppArmorLive, changes: Sequence[Change]) -> list[str]:
        planned = {change.resource: change for change in changes}
        desired = {
            name: desired_profile(name, spec.profiles[name], live.profiles[name])
            for name in planned if spec.profiles[name].ensure == "present"
        }
        # Compile everything first: one profile that does not compile refuses the whole apply.
        refused = []
        for name, wanted in desired.items():
            if wanted.text != live.profiles[name].text:
                check = host.run([PARSER, "-Q", "-K", "--base", PROFILE_DIR, "-I", PROFILE_DIR], input=wanted.text, check=False)
                if not check.ok:
                    refused.append(f"{name}: {parser_message(check.stderr + check.stdout)}")
        if refused:
            raise ProviderError("apparmor_parser refused " + "; ".join(refused) + "; nothing was changed")
        done = []
        for name in planned:
            if name in desired:
                done += self._converge_profile(host, name, desired[name], live.profiles[name], live.kernel)
            else:
                done += self._remove_profile(host, name, live.profiles[name], live.kernel)
        return done

    def _converge_profile(self, host: Host, name: str, wanted: Desired, on_disk: ProfileOnDisk, kernel: KernelState) -> list[str]:
        path, done = profile_path(name), []
        rewritten = wanted.text != on_disk.text
        if rewritten:
            backup = host.write_file(path, wanted.text, mode=0o644)
            done.append(f"wrote {path}" + (f" (previous version in {backup})" if backup else ""))
        if wanted.disable_link and not on_disk.disable_link:
            host.run(["mkdir", "-p", DISABLE_DIR])
            host.run(["ln", "-sf", path, f"{DISABLE_DIR}/{name}"])
            done.append(f"linked {DISABLE_DIR}/{name}")
        if not wanted.disable_link and on_disk.disable_link:
            host.remove_file(f"{DISABLE_DIR}/{name}")
            done.append(f"removed {DISABLE_DIR}/{name}")
        if wanted.drop_force_complain and on_disk.force_complain_link:
            host.remove_file(f"{FORCE_COMPLAIN_DIR}/{name}")
            done.append(f"removed {FORCE_COMPLAIN_DIR}/{name}")
        if not kernel.enabled:
            return done
        loaded = kernel.modes_of(profile_names(wanted.text))
        if wanted.kernel_mode is None:
            if any(loaded.values()):
                host.run(unload_argv(path))
                done.append(f"unloaded {name} from the kernel")
        elif rewritten or any(mode != wanted.kernel_mode for mode in loaded.values()):
            result = host.run(load_argv(path), check=False)
            if not result.ok:
                # Keep the kernel and the disk telling the same story: put the old text back.
                if on_disk.text is None:
                    host.remove_file(path)
                elif rewritten:
                    host.write_file(path, on_disk.text)
                raise ProviderError(f"{name}: the kernel refused it: {parser_message(result.stderr)}; previous file restored")
            done.append(f"loaded {name} into the kernel ({wanted.kernel_mode})")
        return done

    def _remove_profile(self, host: Host, name: str, on_disk: ProfileOnDisk, kernel: KernelState) -> list[str]:
        path, done = profile_path(name), []
        if on_disk.text is not None and kernel.enabled and any(kernel.modes_of(profile_names(on_disk.text)).values()):
            host.run(unload_argv(path))
            done.append(f"unloaded {name} from the kernel")
        # Links first, while the file they point to still exists (remove_file backs up the target).
        links = {f"{DISABLE_DIR}/{name}": on_disk.disable_link, f"{FORCE_COMPLAIN_DIR}/{name}": on_disk.force_complain_link}
        for link, present in links.items():
            if present:
                host.remove_file(link)
                done.append(f"removed {link}")
        if on_disk.text is not None:
            backup = host.remove_file(path)
            done.append(f"removed {path}" + (f" (backed up in {backup})" if backup else ""))
        return done

    # -----------------------------------------------------------------------------------------
    # Capture
    # -----------------------------------------------------------------------------------------
    can_capture = True

    def capture_reads(self) -> Sequence[Read]:
        globs = (ReadGlob(f"{directory}/*") for directory in (PROFILE_DIR, DISABLE_DIR, FORCE_COMPLAIN_DIR, LOCAL_DIR))
        return [Which(PARSER), Which(DPKG_QUERY), ReadFile(KERNEL_PROFILES), *globs]

    def capture_more_reads(self, facts: Facts) -> Sequence[Read]:
        # Telling stock profiles from the admin's own needs the package manager's record.
        return [RunCommand(CONFFILES_ARGV)] if facts.which(DPKG_QUERY) else []

    def _shipped(self, facts: Facts, notes: list[str]) -> dict[str, str] | None:
        """MD5 of each packaged file as shipped; None when that cannot be known here."""
        if not facts.which(DPKG_QUERY):
            notes.append(f"no {DPKG_QUERY} on this host: stock profiles cannot be told from the admin's own, "
                         "so modes are captured and profile texts are not")
            return None
        result = facts.command(*CONFFILES_ARGV)
        if not result.ok:
            notes.append(f"{result.failure()}: modes are captured and profile texts are not")
            return None
        try:
            return parse_conffiles(result.stdout)
        except ProviderError as error:
            notes.append(f"{error}: modes are captured and profile texts are not")
            return None

    def capture(self, facts: Facts) -> Captured:
        notes: list[str] = []
        shipped = self._shipped(facts, notes)
        kernel = KernelState.from_facts(facts)
        disabled, forced = ({Path(path).name for path in facts.glob(f"{d}/*")} for d in (DISABLE_DIR, FORCE_COMPLAIN_DIR))
        profiles: dict[str, dict[str, str]] = {}
        stock, in_files = [], set()
        for path, text in facts.glob(f"{PROFILE_DIR}/*").items():
            name = Path(path).name
            on_disk = ProfileOnDisk(text, name in disabled, name in forced)
            in_files.update(profile_names(text))
            origin: TextOrigin = "unknown" if shipped is None else text_origin(text, shipped.get(path))
            try:
                entry = captured_entry(on_disk, origin)
                spec = AppArmorSpec.model_validate({"profiles": {name: entry}})
            except ValueError as error:
                notes.append(f"{name}: {_validation_message(error)}; not captured")
                continue
            # The round trip, checked here: planning the entry against this same state changes nothing.
            changes = self.diff(spec, AppArmorLive({name: on_disk}, kernel))
            if changes:
                notes.append(f"{name}: the kernel does not match its files ({'; '.join(changes[0].notes)}); not captured")
            elif as_shipped(on_disk, origin):
                stock.append(name)
            else:
                profiles[name] = entry
        if stock:
            notes.append(f"{len(stock)} profile(s) exactly as their packages ship them (text and mode) "
                         f"not captured: {', '.join(stock)}")
        overrides = [Path(path).name for path, text in facts.glob(f"{LOCAL_DIR}/*").items() if has_rules(text)]
        if overrides:
            notes.append(f"{LOCAL_DIR}/ overrides with rules, which the apparmor table does not manage, "
                         f"not captured: {', '.join(overrides)}")
        elsewhere = [name for name in (kernel.loaded or {}) if "//" not in name and name not in in_files]
        if elsewhere:
            notes.append(f"{len(elsewhere)} profile(s) loaded in the kernel from no file in {PROFILE_DIR} "
                         f"(snaps, container runtimes) not captured: {', '.join(sorted(elsewhere))}")
        return Captured({"profiles": profiles}, notes)
