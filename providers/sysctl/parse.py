"""Pure readers of sysctl.d(5) files and of the values /proc/sys prints."""

from __future__ import annotations

import re

_INTEGER = re.compile(r"[+-]?[0-9]+")


def normalize(value: str) -> str:
    """Whitespace folded to single spaces and integers in canonical form, as compared."""
    return " ".join(str(int(token)) if _INTEGER.fullmatch(token) else token for token in value.split())


def displayed(value: str | None) -> int | str | None:
    """Integers as JSON numbers, as users write them in the baseline."""
    return int(value) if value is not None and _INTEGER.fullmatch(value) else value


def parse_sysctl_conf(text: str) -> dict[str, str]:
    """Assignments of a sysctl.d file (sysctl.d(5)), key (or glob pattern) -> normalized value:
    `key = value`, `#`/`;` comments, a leading `-` to ignore failures, `/` accepted as separator
    when it comes first. A line that is no assignment is skipped, as systemd-sysctl does."""
    values: dict[str, str] = {}
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        key = key.removeprefix("-").strip()
        if "/" in key and ("." not in key or key.index("/") < key.index(".")):
            key = key.replace("/", ".")
        values[key] = normalize(value)
    return values


def is_pattern(key: str) -> bool:
    """A sysctl.d line naming keys by glob (`net.ipv4.conf.*.rp_filter`)."""
    return any(char in key for char in "*?[")
