"""Pure parsers of sshd's files and of `sshd -T`, `ssh -Q`, `systemctl show`, /etc/passwd and /etc/group."""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass

from converge.provider import ParseError

SSH_DIR = "/etc/ssh"
SSHD_CONFIG = f"{SSH_DIR}/sshd_config"
DROP_IN_DIR = f"{SSH_DIR}/sshd_config.d"
DROP_IN_GLOB = f"{DROP_IN_DIR}/*.conf"
# The Include line converge adds, and the forms of it that count as present.
INCLUDE_LINE = f"Include {DROP_IN_GLOB}"
_INCLUDES_DROP_INS = {DROP_IN_GLOB, "sshd_config.d/*.conf"}


@dataclass(frozen=True)
class Directive:
    """One keyword line of a configuration file (keyword lower-case, as sshd compares it)."""

    file: str
    line: int
    keyword: str
    value: str
    # The Match criteria the line is under (None: it applies to every connection).
    match: str | None


_KEYWORD_LINE = re.compile(r"([A-Za-z0-9]+)(?:\s*=\s*|\s+|$)(.*)")
_EFFECTIVE_KEYWORD = re.compile(r"[a-z0-9]+")


def _words(path: str, number: int, text: str) -> tuple[str, str] | None:
    line = text.strip()
    if not line or line.startswith("#"):
        return None
    found = _KEYWORD_LINE.match(line)
    if not found:
        raise ParseError(path, f"line {number}: not a `Keyword value` line", text)
    return found[1].lower(), found[2].strip()


def directives(path: str, text: str) -> list[Directive]:
    """The keyword lines of one file, in order (sshd_config(5): `Keyword value`, `#` comments,
    `Match` until the end of the file)."""
    found = []
    match: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        words = _words(path, number, raw)
        if words is None:
            continue
        keyword, value = words
        if keyword == "match":
            match = None if value.lower() == "all" else value
            continue
        found.append(Directive(path, number, keyword, value, match))
    return found


def includes_drop_ins_first(text: str) -> bool:
    """Whether sshd_config includes sshd_config.d/*.conf before any setting of its own."""
    for directive in directives(SSHD_CONFIG, text):
        if directive.keyword != "include":
            return False
        if _INCLUDES_DROP_INS & set(directive.value.split()):
            return True
    return False


def with_include(text: str) -> str:
    """sshd_config with converge's Include line at the top, everything else kept."""
    return f"# Added by converge: drop-ins in {DROP_IN_DIR} are read first.\n{INCLUDE_LINE}\n\n{text}"


def configuration(sshd_config: str, drop_ins: dict[str, str]) -> list[Directive]:
    """Every keyword line in the order sshd reads them: sshd_config, with sshd_config.d/*.conf (sorted)
    expanded where it is included (other includes are not followed)."""
    ordered = []
    for directive in directives(SSHD_CONFIG, sshd_config):
        if directive.keyword == "include" and _INCLUDES_DROP_INS & set(directive.value.split()):
            for path in sorted(drop_ins):
                ordered += directives(path, drop_ins[path])
        else:
            ordered.append(directive)
    return ordered


def effective(text: str, where: str) -> dict[str, list[str]]:
    """`sshd -T`: keyword (lower-case) -> its value lines, in order (lists print one item a line)."""
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        keyword, _, value = line.partition(" ")
        if not _EFFECTIVE_KEYWORD.fullmatch(keyword):
            raise ParseError(where, "not a `keyword value` line", line)
        values.setdefault(keyword, []).append(value.strip())
    if "port" not in values:
        raise ParseError(where, "no port line: not sshd -T output")
    return values


def algorithm_names(text: str) -> set[str]:
    """`ssh -Q cipher` and friends: one name a line."""
    return {line.strip() for line in text.splitlines() if line.strip()}


def systemd_unit(text: str) -> str | None:
    """The active unit of `systemctl show --property=Id,ActiveState ssh.service sshd.service`
    (blocks separated by blank lines; sshd.service is an alias of ssh.service on Debian)."""
    for block in text.split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if fields.get("ActiveState") in ("active", "reloading") and fields.get("Id"):
            return fields["Id"]
    return None


def pid(text: str | None) -> int | None:
    """The pid in a pidfile."""
    words = (text or "").split()
    return int(words[0]) if words and words[0].isdigit() else None


def groups_of(user: str, passwd: str, group: str) -> set[str]:
    """The names of `user`'s groups: its primary group (passwd) and those listing it (group)."""
    gids = {fields[3] for fields in (line.split(":") for line in passwd.splitlines()) if len(fields) > 3 and fields[0] == user}
    names = set()
    for line in group.splitlines():
        fields = line.split(":")
        if len(fields) > 3 and (fields[2] in gids or user in fields[3].split(",")):
            names.add(fields[0])
    return names


def matches(patterns: list[str], name: str, client: str | None = None) -> bool:
    """sshd's pattern lists (`*`, `?`, `!` negation; `user@host` for users): a negated match wins."""
    found = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!")
        user_part, _, host_part = pattern.partition("@")
        hit = fnmatch.fnmatchcase(name, user_part) and (not host_part or client is None or fnmatch.fnmatchcase(client, host_part))
        if hit and negated:
            return False
        found = found or hit
    return found


def listen_ports(lines: list[str]) -> set[int]:
    """The ports of `sshd -T`'s listenaddress lines ("0.0.0.0:22", "[::]:2222")."""
    return {int(line.rsplit(":", 1)[1].split()[0]) for line in lines if ":" in line}


def quoted_words(value: str) -> list[str]:
    """A value's words as sshd splits them (quotes allowed)."""
    try:
        return shlex.split(value)
    except ValueError:
        return value.split()
