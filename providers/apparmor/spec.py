"""The `[apparmor]` table: profile file names, modes and texts, checked when the baseline loads.

A `source` file is read here, once: the validated value of `source` is its path carrying the text
read from it, so the plan compiles and writes exactly the text that was checked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError, model_validator

from converge.provider import StrictModel, matching
from converge.providers.apparmor.parse import flags_mode

PROFILE_DIR = "/etc/apparmor.d"
MAX_PROFILE_BYTES = 1024 * 1024

Mode = Literal["enforce", "complain", "disabled"]

_NAME = re.compile(r"(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,254}")
# Directories of /etc/apparmor.d and names the parser skips when it loads the directory.
_RESERVED = {"abi", "abstractions", "apache2.d", "cache", "cache.d", "disable", "force-complain", "local", "lxc", "tunables"}
_SKIPPED_SUFFIXES = (".rpmnew", ".rpmsave", ".orig", ".rej", "~", ".dpkg-new", ".dpkg-old", ".dpkg-dist", ".dpkg-bak",
                     ".dpkg-remove", ".pacsave", ".pacnew")


def _loadable(name: str) -> str:
    if name in _RESERVED:
        raise ValueError(f"{name!r} is a directory of {PROFILE_DIR}, not a profile")
    skipped = [suffix for suffix in _SKIPPED_SUFFIXES if name.endswith(suffix)]
    if skipped:
        raise ValueError(f"apparmor_parser skips files named *{skipped[0]} when it loads {PROFILE_DIR}")
    return name


ProfileName = Annotated[
    str,
    matching(_NAME, "a profile file name: letters, digits and _ . @ + - only, no '/', no '..', not starting with '.' "
                    "(e.g. usr.sbin.nginx)"),
    AfterValidator(_loadable),
]


def _check_text(text: str, where: str) -> str:
    if len(text.encode("utf-8", "surrogateescape")) > MAX_PROFILE_BYTES:
        raise ValueError(f"{where} is larger than {MAX_PROFILE_BYTES} bytes")
    if "\x00" in text:
        raise ValueError(f"{where} contains a NUL character")
    if flags_mode(text) is None:
        raise ValueError(f"{where} defines no profile (no `profile NAME {{` or `/path {{` line)")
    return text


class SourceFile(str):
    """A `source` path (a plain string, as written), with the profile text read from it."""

    text: str

    def __new__(cls, path: str, text: str) -> SourceFile:
        made = super().__new__(cls, path)
        made.text = text
        return made

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]  # copy and pickle keep the text
        return str(self), self.text


def _read_source(source: str) -> SourceFile:
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {source}: {error}") from None
    return SourceFile(source, _check_text(text, source))


def _profile_content(content: str) -> str:
    return _check_text(content, "the text")


class ProfileSpec(StrictModel):
    """`[apparmor.profiles.NAME]`: the file /etc/apparmor.d/NAME."""

    ensure: Literal["present", "absent"] = Field(
        "present", description='"absent" removes the profile file, its disable/ and force-complain/ links, '
                               "and unloads it")
    mode: Mode | None = Field(
        None, description="enforce | complain (the `complain` flag, as aa-complain writes it) | disabled (a disable/ "
                          "link, as aa-disable makes); required unless ensure = \"absent\"")
    source: Annotated[str, AfterValidator(_read_source)] | None = Field(
        None, description="a profile file relative to the baseline, installed as /etc/apparmor.d/NAME; without source "
                          "or content only the mode of the host's file is managed")
    content: Annotated[str, AfterValidator(_profile_content)] | None = Field(
        None, description="the profile text inline, instead of source")

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
        return self

    @property
    def text(self) -> str | None:
        """The profile text the baseline gives (None: manage the mode of the host's file)."""
        if isinstance(self.source, SourceFile):
            return self.source.text
        return self.content


class AppArmorSpec(StrictModel):
    """`[apparmor]`."""

    profiles: dict[ProfileName, ProfileSpec] = Field(
        default_factory=dict, description="profile files of /etc/apparmor.d, by file name (e.g. usr.sbin.nginx)")


_NAME_CHECK: TypeAdapter[str] = TypeAdapter(ProfileName)


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a `[apparmor.profiles]` key, or None (capture leaves such files out)."""
    try:
        _NAME_CHECK.validate_python(name)
    except ValidationError as error:
        return validation_message(error)
    return None


def validation_message(error: ValidationError) -> str:
    """A pydantic error as one line, without pydantic's prefixes."""
    return "; ".join(str(detail["msg"]).removeprefix("Value error, ") for detail in error.errors())
