"""known_hosts as OpenSSH reads it, so that converge calls known or changed what ssh would.

Every UserKnownHostsFile and GlobalKnownHostsFile ssh_config names is read (OpenSSH's defaults
otherwise), with hashed names, `[host]:port`, wildcards, negations and the `@revoked` and
`@cert-authority` markers; paramiko's own loader reads one file and fails on any marker line.
A new key is appended as one line under a lock: the user's file is never rewritten.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from converge.hosts.paramiko_without_invoke import paramiko

USER_FILES = "~/.ssh/known_hosts ~/.ssh/known_hosts2"
GLOBAL_FILES = "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"


def key_name(hostname: str, port: int) -> str:
    """How known_hosts names a host: `host`, or `[host]:port` off port 22."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


def files_of(config: paramiko.SSHConfigDict) -> tuple[list[str], list[str]]:
    """(user files, global files) that ssh_config names, `none` meaning no file."""
    def expand(value: str) -> list[str]:
        return [os.path.expanduser(path) for path in value.split() if path.lower() != "none"]

    return (expand(config.get("userknownhostsfile", USER_FILES)),
            expand(config.get("globalknownhostsfile", GLOBAL_FILES)))


def _pattern_matches(pattern: str, name: str) -> bool:
    # OpenSSH patterns know only `*` and `?`: `[host]:port` is literal, not a character class.
    if pattern.startswith("|1|"):
        try:
            salt, digest = (base64.b64decode(part) for part in pattern[3:].split("|"))
        except (ValueError, binascii.Error):
            return False
        return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)
    if "*" not in pattern and "?" not in pattern:  # most lines: one exact name (a fleet's known_hosts is long)
        return pattern.lower() == name.lower()
    expression = re.escape(pattern.lower()).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(expression, name.lower()) is not None


def patterns_match(patterns: str, name: str) -> bool:
    """Whether a comma-separated host pattern list names `name` (a negated match excludes it)."""
    matched = False
    for pattern in patterns.split(","):
        if pattern.startswith("!"):
            if _pattern_matches(pattern[1:], name):
                return False
        elif _pattern_matches(pattern, name):
            matched = True
    return matched


@dataclass
class KnownKeys:
    """What the known_hosts files say about one host name."""

    keys: list[paramiko.PKey] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)  # base64 blobs, which name their type

    def is_revoked(self, key: paramiko.PKey) -> bool:
        return key.get_base64() in self.revoked


def _lines(paths: Iterable[str]) -> Iterator[list[str]]:
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError:
            continue
        for line in text.splitlines():
            fields = line.split()
            if fields and not fields[0].startswith("#"):
                yield fields


def lookup(paths: Iterable[str], name: str) -> KnownKeys:
    """Every key and revocation the files hold for `name` (certificate authorities are skipped:
    converge does not accept host certificates, and they must not stop the others loading)."""
    found = KnownKeys()
    for fields in _lines(paths):
        marker = fields.pop(0) if fields[0].startswith("@") else None
        if len(fields) < 3:
            continue
        patterns, key_type, blob = fields[:3]
        if marker == "@revoked" and patterns_match(patterns, name):
            found.revoked.add(blob)
        elif marker is None and patterns_match(patterns, name):
            try:
                found.keys.append(paramiko.PKey.from_type_string(key_type, base64.b64decode(blob)))
            except (ValueError, binascii.Error, paramiko.SSHException, TypeError):
                continue  # a key type paramiko does not know cannot be the one it negotiates
    return found


def record(path: str, name: str, key: paramiko.PKey, *, hashed: bool) -> None:
    """Append one line for a newly trusted key, under an exclusive lock on the file itself, so
    parallel runs and threads never lose one another's entries; nothing else in it changes."""
    shown = paramiko.HostKeys.hash_host(name) if hashed else name
    line = f"{shown} {key.get_name()} {key.get_base64()}\n"
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as current:
                current.seek(size - 1)
                if current.read(1) != b"\n":
                    line = "\n" + line
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
