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
        if not _is_assignment(line):
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        key = key.removeprefix("-").strip()
        if "/" in key and ("." not in key or key.index("/") < key.index(".")):
            key = key.replace("/", ".")
        values[key] = normalize(value)
    return values


def _is_assignment(line: str) -> bool:
    return bool(line) and line[0] not in "#;" and "=" in line


def unassigned_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of each line that is no assignment, comment or blank: sysctl -p says
    `invalid syntax` and systemd-sysctl `not an assignment`, and both skip it."""
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)
            if line.strip() and line.strip()[0] not in "#;" and not _is_assignment(line.strip())]


def is_pattern(key: str) -> bool:
    """A sysctl.d line naming keys by glob (`net.ipv4.conf.*.rp_filter`)."""
    return any(char in key for char in "*?[")


def read_only_mounts(mountinfo: str) -> dict[str, bool]:
    """Mount point -> mounted read-only, from /proc/self/mountinfo (proc(5): the mount point is
    field 5, its per-mount options field 6; octal escapes such as \\040 for spaces)."""
    mounts: dict[str, bool] = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), fields[4])
        mounts[point] = "ro" in fields[5].split(",")
    return mounts


def read_only_at(mounts: dict[str, bool], path: str) -> str | None:
    """The mount point holding `path` when it is mounted read-only (the deepest one wins), or None."""
    holders = [point for point in mounts if path == point or path.startswith(point.rstrip("/") + "/")]
    if not holders:
        return None
    deepest = max(holders, key=len)
    return deepest if mounts[deepest] else None


def container_signals(output: str) -> list[str]:
    """What says the host is a container, from CONTAINER_PROBE's output: its network namespace is
    not PID 1's, or a container manager's mark (`container=` in PID 1's environment, as
    systemd-nspawn, LXC and podman set; /run/.containerenv; /.dockerenv)."""
    lines = output.splitlines()
    signals = []
    links = [line for line in lines if line.startswith("net:[")]
    if len(links) == 2 and links[0] != links[1]:
        signals.append("its network namespace is not the one of PID 1")
    signals += [f"PID 1 runs with {line}" for line in lines if line.startswith("container=")]
    signals += [f"{line} exists" for line in lines if line in ("/run/.containerenv", "/.dockerenv")]
    return signals
