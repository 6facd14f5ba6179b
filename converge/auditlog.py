"""Audit records as the kernel and auditd write them, parsed without any MAC library.

One parser for every place a host keeps them: auditd's `audit.log` (raw, with a `node=` prefix, or
ENRICHED with a `\\x1d`-separated tail of interpreted fields), `ausearch --raw`, the kernel's printk
form (`audit: type=1400 audit(SEC.MSEC:SERIAL): ...`, from dmesg or `journalctl -k`, with or without
a syslog or uptime prefix) and journald's audit transport (`audit[PID]: AVC avc: ...`, which has no
serial). SELinux (`avc:`) and AppArmor (`apparmor=`) records come out alike; what they mean is for
the providers' `suggest` modules. The only error raised is `ParseError`.

Traps this parser avoids: lines are split on "\\n" only (`str.splitlines` also splits at the ENRICHED
separator \\x1d), and `ausearch -i` output (interpreted, with dates in the header) is refused, since
its values are no longer the kernel's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from converge.toolkit import ParseError

# Numeric record types as printk and journald show them, by auditd's names.
TYPE_NAMES = {
    "1107": "USER_AVC", "1300": "SYSCALL", "1302": "PATH", "1307": "CWD", "1327": "PROCTITLE",
    "1400": "AVC", "1401": "SELINUX_ERR", "1403": "MAC_POLICY_LOAD", "1404": "MAC_STATUS",
}
# Fields the kernel logs as untrusted strings: quoted, or hex when they hold odd bytes.
UNTRUSTED = frozenset({"comm", "exe", "name", "path", "proctitle", "cwd", "profile", "target", "peer", "info"})

_HEADER = re.compile(r"(?:node=(?P<node>\S+) )?type=(?P<type>[A-Z_0-9]+) (?:msg=)?audit\((?P<stamp>[^)]*)\) ?:\s?(?P<body>.*)")
_STAMP = re.compile(r"(?P<sec>\d+)\.(?P<msec>\d+):(?P<serial>\d+)")
_JOURNAL = re.compile(r"\baudit(?:\[\d+\])?: (?P<type>[A-Z][A-Z_]+) (?P<body>.*)")
_FIELD = re.compile(r"""([A-Za-z_][\w-]*)=("[^"]*"|'[^']*'|\S*)""")
_AVC = re.compile(r"avc:\s+(?P<verdict>denied|granted)\s+\{(?P<perms>[^}]*)\}\s+for\s*(?P<rest>.*)")
_HEX = re.compile(r"(?:[0-9A-F]{2})+")


@dataclass(frozen=True)
class AuditRecord:
    """One record: its type (auditd's name), its fields, and the event it belongs to."""

    type: str
    fields: Mapping[str, str]
    # "SEC.MSEC:SERIAL": records of one event share it; None where the source has no serial (journald).
    event: str | None = None
    time: float | None = None
    node: str | None = None
    # SELinux AVC/USER_AVC only: "denied" or "granted", and the permissions between the braces.
    verdict: str | None = None
    perms: tuple[str, ...] = ()
    # Interpreted fields auditd appended after \x1d (ENRICHED), by their upper-case names.
    enriched: Mapping[str, str] = field(default_factory=dict)
    line: str = ""

    def get(self, key: str, default: str = "") -> str:
        return self.fields.get(key, default)


def _value(key: str, raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    if key in UNTRUSTED and _HEX.fullmatch(raw):
        return bytes.fromhex(raw).decode("utf-8", "replace").replace("\0", " ").strip()
    return raw


def parse_fields(text: str) -> dict[str, str]:
    """`key=value` pairs, values unquoted and hex-decoded where the kernel encoded them."""
    return {key: _value(key, raw) for key, raw in _FIELD.findall(text)}


def _body(kind: str, body: str, where: str, line: str) -> tuple[dict[str, str], str | None, tuple[str, ...]]:
    if kind == "USER_AVC":
        fields = parse_fields(body)
        inner = fields.get("msg", "")
        avc = _AVC.search(inner)
        if avc:
            fields = {**fields, **parse_fields(avc["rest"])}
            return fields, avc["verdict"], tuple(avc["perms"].split())
        return fields, None, ()
    avc = _AVC.search(body)
    if avc:
        perms = tuple(avc["perms"].split())
        if not perms:
            raise ParseError(where, "an AVC without permissions", line)
        return parse_fields(avc["rest"]), avc["verdict"], perms
    if kind == "AVC" and "apparmor=" not in body:
        raise ParseError(where, "an AVC record that is neither SELinux (avc:) nor AppArmor (apparmor=)", line)
    return parse_fields(body), None, ()


def parse_record(line: str, where: str) -> AuditRecord | None:
    """One line as a record; None when the line holds no audit record (other log lines)."""
    line = line.rstrip("\r")
    text, _, tail = line.partition("\x1d")
    header = _HEADER.search(text)
    if header:
        stamp = _STAMP.fullmatch(header["stamp"])
        if not stamp:
            raise ParseError(where, "interpreted audit output (ausearch -i); read it with --raw", line)
        kind = TYPE_NAMES.get(header["type"], header["type"])
        event, time = f"{stamp['sec']}.{stamp['msec']}:{stamp['serial']}", float(f"{stamp['sec']}.{stamp['msec']}")
        node, body = header["node"], header["body"]
    else:
        journal = _JOURNAL.search(text)
        if not journal:
            if "avc:" in text or "apparmor=" in text:
                raise ParseError(where, "an audit record in no known form", line)
            return None
        kind, body, event, time, node = journal["type"], journal["body"], None, None, None
    fields, verdict, perms = _body(kind, body, where, line)
    return AuditRecord(kind, fields, event, time, node, verdict, perms, parse_fields(tail), line)


def parse_records(text: str, where: str) -> list[AuditRecord]:
    """Every audit record of a log, in order. Lines are split on "\\n" only (never splitlines)."""
    records = []
    for line in text.split("\n"):
        record = parse_record(line, where)
        if record is not None:
            records.append(record)
    return records


def group_events(records: Sequence[AuditRecord]) -> list[list[AuditRecord]]:
    """Records by event, in first-seen order; a record without a serial is an event of its own."""
    events: dict[object, list[AuditRecord]] = {}
    for index, record in enumerate(records):
        key: object = (record.node, record.event) if record.event else index
        events.setdefault(key, []).append(record)
    return list(events.values())


def record_path(record: AuditRecord, event: Sequence[AuditRecord]) -> str | None:
    """The full path of an AVC's object: its own `path=`, else a sibling record of the same inode
    (a PATH record's `name=`, or another AVC's `path=`) — sepolgen reads neither."""
    if record.get("path", "").startswith("/"):
        return record.fields["path"]
    inode = record.get("ino")
    for other in event:
        if other.type == "PATH" and inode and other.get("inode") == inode and other.get("name", "").startswith("/"):
            return other.fields["name"]
        if other.type in ("AVC", "USER_AVC") and inode and other.get("ino") == inode and other.get("path", "").startswith("/"):
            return other.fields["path"]
    return None


def event_exe(event: Sequence[AuditRecord]) -> str | None:
    for other in event:
        if other.type == "SYSCALL" and other.get("exe"):
            return other.fields["exe"]
    return None
