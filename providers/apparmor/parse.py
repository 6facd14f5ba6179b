"""Pure parsers: profile text (headers, names, mode flags), the kernel's list of loaded profiles,
apparmor_parser's messages and dpkg's conffile record. They raise only `ParseError`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from converge.provider import ParseError

# Flags that select a profile mode; aa-complain and aa-enforce remove the ones that conflict.
MODE_FLAGS = frozenset({"complain", "enforce", "kill", "unconfined", "prompt"})
FlagsMode = Literal["enforce", "complain", "mixed"]

# ---- profile text ---------------------------------------------------------------------------
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


def flags_mode(text: str) -> FlagsMode | None:
    """complain when every header has the complain flag, enforce when none has a mode flag,
    mixed otherwise (then aa-complain or aa-enforce would rewrite some headers); None when the
    text has no profile header at all."""
    headers = profile_headers(text)
    if not headers:
        return None
    if all("complain" in header.flags for header in headers):
        return "complain"
    if not any(MODE_FLAGS & set(header.flags) for header in headers):
        return "enforce"
    return "mixed"


def with_mode_flags(text: str, mode: str) -> str:
    """The text with every header's flags set as aa-complain (complain) or aa-enforce (enforce)
    sets them; any other mode (disabled) leaves the flags alone, as aa-disable does. Untouched
    lines stay as they are."""
    if mode not in ("enforce", "complain"):
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
        assert match is not None  # profile_headers matched this very line
        rebuilt = match["lead"] + match["head"] + (match["xattrs"] or "")
        rebuilt += f" flags=({', '.join(sorted(flags))})" if flags else ""
        rebuilt += " {" + (f" {match['comment']}" if match["comment"] else "")
        lines[header.line] = rebuilt + ending
    return "".join(lines)


# ---- tools' output --------------------------------------------------------------------------
# One line per loaded profile, `[:namespace://]name (mode)` (security/apparmor/apparmorfs.c).
_LOADED_LINE = re.compile(r"(?P<name>.+) \((?P<mode>[a-z]+)\)")


def parse_loaded_profiles(text: str, where: str) -> dict[str, str]:
    """Profile name -> kernel mode (enforce, complain, kill, unconfined, user) of the kernel's
    profiles file (`where`)."""
    loaded = {}
    for line in text.splitlines():
        match = _LOADED_LINE.fullmatch(line.rstrip())
        if match:
            loaded[match["name"]] = match["mode"]
        elif line.strip():
            raise ParseError(where, "unexpected line", line)
    return loaded


# apparmor_parser's own line for a profile it refuses to compile ("AppArmor parser error at line 6:
# ...") or the kernel refuses ('apparmor_parser: Unable to replace "ping".'), without the cache notice
# it prints on every run without a kernel: the operations' `fails_on`, so an error says just that.
PARSER_ERROR = r"^(?:AppArmor parser error|apparmor_parser: Unable to ).*$"


# ` PATH MD5 [obsolete] [remove-on-upgrade]`; MD5 is `newconffile` while a package is unpacked.
_CONFFILE_LINE = re.compile(r" (?P<path>/.*?) (?P<md5>[0-9a-f]{32}|newconffile)(?: (?:obsolete|remove-on-upgrade))*")


def parse_conffiles(text: str, where: str) -> dict[str, str]:
    """Conffile path -> MD5 of the text its package ships, from `dpkg-query -W -f='${Conffiles}\\n'`."""
    shipped = {}
    for line in text.splitlines():
        match = _CONFFILE_LINE.fullmatch(line.rstrip())
        if match:
            shipped[match["path"]] = match["md5"]
        elif line.strip():
            raise ParseError(where, "unexpected conffile line", line)
    return shipped
