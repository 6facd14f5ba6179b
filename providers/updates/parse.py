"""Pure parsers of what apt, dpkg, systemd, needrestart and dnf print; they raise only ParseError."""

from __future__ import annotations

import configparser
import json
import re
from dataclasses import dataclass

from converge.provider import ParseError

_CONFIG_LINE = re.compile(r'(?P<key>[^\s"]+?)(?P<item>::)? "(?P<value>.*)";')


def parse_apt_config(text: str, where: str = "apt-config dump") -> dict[str, str | list[str]]:
    """`apt-config dump`: scalars by key, lists (`Key:: "item";` lines) as lists in order."""
    values: dict[str, str | list[str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _CONFIG_LINE.fullmatch(line.strip())
        if not match:
            raise ParseError(where, "not a configuration line", line)
        key, value = match["key"], match["value"]
        if match["item"]:
            current = values.get(key)
            values[key] = [*(current if isinstance(current, list) else []), value]
        else:
            values.setdefault(key, value)
    return values


def config_list(values: dict[str, str | list[str]], key: str) -> list[str]:
    found = values.get(key)
    return list(found) if isinstance(found, list) else []


def config_scalar(values: dict[str, str | list[str]], key: str) -> str | None:
    found = values.get(key)
    return found if isinstance(found, str) else None


def apt_boolean(value: str | None, default: bool) -> bool:
    """How apt's FindB reads a value."""
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "yes", "true", "with", "on", "enable")


def parse_dpkg_query(text: str) -> dict[str, tuple[str, str]]:
    """`dpkg-query -W -f '${Package} ${db:Status-Abbrev} ${Version}\\n'`: name -> (status, version)."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            found[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return found


def installed(packages: dict[str, tuple[str, str]], name: str) -> bool:
    status = packages.get(name, ("", ""))[0]
    return status.startswith("ii") or status.startswith("hi")


@dataclass(frozen=True)
class Pending:
    """One update the package manager would install, from the origin allowing it."""

    package: str
    installed: str
    candidate: str
    origin: str


def parse_pending(text: str, where: str) -> list[Pending]:
    """The JSON list the pending-updates probe prints."""
    try:
        records = json.loads(text)
        return [Pending(str(r["package"]), str(r["installed"]), str(r["candidate"]), str(r["origin"])) for r in records]
    except (ValueError, TypeError, KeyError) as error:
        raise ParseError(where, f"not the probe's JSON ({error})", text[:120]) from None


def parse_needrestart(text: str) -> tuple[list[str], str | None]:
    """`needrestart -b`: the services still running deleted libraries, and the kernel status
    (NEEDRESTART-KSTA: 0 unknown, 1 current, 2 ABI-compatible upgrade pending, 3 version upgrade pending)."""
    services, kernel = [], None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "NEEDRESTART-SVC":
            services.append(value.strip())
        elif key == "NEEDRESTART-KSTA":
            kernel = value.strip()
    return services, kernel


def parse_index(text: str, where: str) -> tuple[int | None, bool]:
    """`find … -printf '%T@ fresh|stale NAME'` over the index's Release files: the newest mtime
    (seconds), and whether any is younger than the age the find was asked about."""
    newest, fresh = None, False
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 2 or parts[1] not in ("fresh", "stale"):
            raise ParseError(where, "not an index file line", line)
        try:
            mtime = int(float(parts[0]))
        except ValueError:
            raise ParseError(where, "not a modification time", line) from None
        newest = mtime if newest is None else max(newest, mtime)
        fresh = fresh or parts[1] == "fresh"
    return newest, fresh


def parse_lock_holders(text: str) -> dict[str, int]:
    """The lock probe's `PATH PID` lines: the lock files someone holds (pid -1: an open file
    description lock, owner unknown)."""
    holders = {}
    for line in text.splitlines():
        path, _, pid = line.rpartition(" ")
        if path and re.fullmatch(r"-?[0-9]+", pid):
            holders[path] = int(pid)
    return holders


def _version_key(version: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.findall(r"[0-9]+|[A-Za-z]+", version)]


def newest_kernel(images: list[str], prefix: str = "vmlinuz-") -> str | None:
    """The newest kernel release among `/boot` image names (`vmlinuz-6.1.0-18-amd64`)."""
    releases = [name[len(prefix):] for name in images if name.startswith(prefix) and not name.endswith(".old")]
    return max(releases, key=_version_key) if releases else None


def parse_automatic_conf(text: str, where: str) -> dict[str, str]:
    """dnf-automatic's INI file: `section.key` -> value."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=where)
    except configparser.Error as error:
        raise ParseError(where, str(error).splitlines()[0]) from None
    return {f"{section}.{key}": value for section in parser.sections() for key, value in parser.items(section)}


_UPDATEINFO = re.compile(r"(?P<advisory>\S+)\s+(?P<severity>\S+)\s+(?P<nevra>\S+)")
_NEVRA = re.compile(r"(?P<name>.+)-(?:(?P<epoch>[0-9]+):)?(?P<version>[^-]+)-(?P<release>[^-]+)\.(?P<arch>[^.]+)")


def parse_updateinfo(text: str, where: str) -> list[tuple[str, str, str, str]]:
    """`dnf -q updateinfo list --security`: (name.arch, version-release, advisory, severity) per line."""
    found = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(("Last metadata", "Updating")):
            continue
        match = _UPDATEINFO.fullmatch(line.strip())
        nevra = _NEVRA.fullmatch(match["nevra"]) if match else None
        if not match or not nevra:
            raise ParseError(where, "not an advisory line", line)
        epoch = f"{nevra['epoch']}:" if nevra["epoch"] and nevra["epoch"] != "0" else ""
        found.append((f"{nevra['name']}.{nevra['arch']}", f"{epoch}{nevra['version']}-{nevra['release']}",
                      match["advisory"], match["severity"]))
    return found


def parse_rpm_installed(text: str) -> dict[str, str]:
    """`rpm -qa --qf '%{NAME}.%{ARCH} %{EPOCHNUM}:%{VERSION}-%{RELEASE}\\n'`: name.arch -> [epoch:]version-release."""
    found = {}
    for line in text.splitlines():
        name, _, evr = line.partition(" ")
        if evr:
            found[name] = evr[2:] if evr.startswith("0:") else evr
    return found
