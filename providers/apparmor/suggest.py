"""AppArmor proposals from ALLOWED/DENIED records, for the profiles the baseline manages from `source`.

The verdicts come from AppArmor's own Python library in a helper process on Debian's python3
(`aa_helper.py`: libapparmor's record parser, the rule objects and their coverage, match_includes,
the severity database, logprof.conf's exec qualifiers), run on the controller against a copy of the
host's /etc/apparmor.d with the baseline's profile texts in it. converge's own part: reading the
records (converge.auditlog) and putting them in the one form Debian 12's libapparmor parses, what it
refuses to propose, and the proposed lines as a diff of the baseline's profile file.
"""

from __future__ import annotations

import difflib
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from converge.auditlog import AuditRecord, parse_records
from converge.provider import Facts, ProviderError, Read, ReadGlob, RunCommand
from converge.providers.apparmor.parse import Header, profile_headers
from converge.providers.apparmor.spec import PROFILE_DIR, AppArmorSpec, SourceFile
from converge.suggest import Suggestion
from converge.suggest import run_helper as run_system_helper

HELPER = Path(__file__).with_name("aa_helper.py")
PACKAGES = "python3-apparmor python3-libapparmor apparmor-utils apparmor"
# Every source a host may keep the records in, each section named by a `# ` line: auditd's own
# files, read directly (Debian 12's ausearch, auditd 3.0.9, skips AppArmor's AVC records as
# "Malformed event skipped, rc=9" and the APPARMOR_* types as unparsed, so it would hide them all);
# the kernel log through journald (printk form, with the serial), else journald's audit transport
# (no serial to drop duplicates by), else dmesg (a host without a journal). Never fails: no records
# is an answer. Records are picked by `apparmor="` (quoted): the kernel's own command line
# (`apparmor=1 security=apparmor`) is in the same logs.
DENIALS = RunCommand(("sh", "-c",
    "logs=$(ls -r /var/log/audit/audit.log.[0-9]* 2>/dev/null) ;"
    " if [ -r /var/log/audit/audit.log ]; then echo '# /var/log/audit/audit.log';"
    " for log in $logs /var/log/audit/audit.log; do grep -a 'apparmor=\"' \"$log\"; done; fi;"
    " kernel=''; audit='';"
    " if command -v journalctl >/dev/null 2>&1; then"
    " kernel=$(journalctl -k -o cat --no-pager -q 2>/dev/null | grep 'apparmor=\"');"
    " [ -n \"$kernel\" ] || audit=$(journalctl _TRANSPORT=audit -o short --no-pager -q 2>/dev/null | grep 'apparmor=\"'); fi;"
    " if [ -n \"$kernel\" ]; then echo '# journalctl -k (may be rate-limited)'; printf '%s\\n' \"$kernel\";"
    " elif [ -n \"$audit\" ]; then echo '# journalctl _TRANSPORT=audit (no serials)'; printf '%s\\n' \"$audit\";"
    " else echo '# dmesg (may be rate-limited)'; dmesg 2>/dev/null | grep 'apparmor=\"'; fi; exit 0"))
# What the library reads besides the profiles: abstractions, tunables and abi (two levels deep, as
# Debian ships them), local/ includes, and the top-level profiles (the targets of px).
POLICY_GLOBS = tuple(f"{PROFILE_DIR}/{pattern}" for pattern in (
    "*", "abstractions/*", "abstractions/*/*", "tunables/*", "tunables/*/*", "abi/*", "local/*"))

# Never proposed: what a confined service reading or writing them would turn into a way out.
SENSITIVE_PATHS = ("/etc/{,g}shadow{,-}", "/etc/sudoers", "/etc/sudoers.d/**", "/etc/security/opasswd",
                   "/etc/ssh/ssh_host_*", "/root/**", "/home/*/.ssh/**", "/etc/apparmor{,.d}/**",
                   "/sys/kernel/security/**", "/proc/kcore", "/proc/sysrq-trigger", "/dev/mem", "/dev/kmem",
                   "/dev/port", "/boot/**", "/etc/ld.so.preload")
# Never an exec rule for: programs anyone may have written there.
SENSITIVE_EXEC_PATHS = ("/tmp/**", "/var/tmp/**", "/dev/shm/**", "/run/user/**", "/home/**")
SENSITIVE_CAPABILITIES = ("sys_admin", "sys_module", "sys_rawio", "sys_ptrace", "mac_admin", "mac_override",
                          "dac_override", "dac_read_search", "bpf")
HIGH_SEVERITY = 7
MODES = {"PERMITTING": "ALLOWED (complain)", "REJECTING": "DENIED (enforce, or an explicit deny)"}
_CLASS = re.compile(r"\s+class=\"[^\"]*\"")
_TAIL = re.compile(r"\s+$")


def suggest_reads() -> list[Read]:
    return [DENIALS, *(ReadGlob(pattern) for pattern in POLICY_GLOBS)]


# ---- records ------------------------------------------------------------------------------------
def has_serial(record: AuditRecord) -> bool:
    """Whether the record's audit stamp names its event (journald keeps none; some kernels print
    audit(0.000:0) for every record)."""
    return record.event is not None and int(record.event.rpartition(":")[2]) != 0


def apparmor_records(records: Sequence[AuditRecord], since: float | None) -> list[AuditRecord]:
    """The AppArmor records of a log, each once (ausearch and the kernel log may both hold one; the
    audit serial says so), from `since` on (records without a time are kept)."""
    seen: set[tuple[str | None, str]] = set()
    out = []
    for record in records:
        if "apparmor" not in record.fields:
            continue
        if since is not None and record.time is not None and record.time < since:
            continue
        if has_serial(record):
            key = (record.node, str(record.event))
            if key in seen:
                continue
            seen.add(key)
        out.append(record)
    return out


def host_records(text: str, since: float | None) -> tuple[list[AuditRecord], list[str]]:
    """The records of the DENIALS read, each once, with the source each came from (its section)."""
    sections: list[tuple[str, list[str]]] = [("unnamed source", [])]
    for line in text.split("\n"):  # never splitlines: auditd's ENRICHED lines hold \x1d
        if line.startswith("# "):
            sections.append((line[2:], []))
        else:
            sections[-1][1].append(line)
    tagged = [(record, name) for name, lines in sections
              for record in parse_records("\n".join(lines), f"the host's AppArmor records ({name})")]
    kept = {id(record) for record in apparmor_records([record for record, _ in tagged], since)}
    chosen = [(record, name) for record, name in tagged if id(record) in kept]
    return [record for record, _ in chosen], [name for _, name in chosen]


def libapparmor_line(record: AuditRecord) -> str:
    """The record in the one form Debian 12's libapparmor (3.0.8) parses: `type=AVC
    msg=audit(SEC.MSEC:SERIAL): apparmor=...`, without `class=` (it refuses any line with
    `class="file"`), without the ENRICHED tail, and with a zero stamp where journald kept none
    (it refuses the `audit[PID]: AVC` form, and a printk line without its `kernel:` prefix)."""
    text = record.line.partition("\x1d")[0]
    body = text[text.index("apparmor="):]
    stamp = record.event or "0.000:0"
    return f"type=AVC msg=audit({stamp}): {_TAIL.sub('', _CLASS.sub('', body))}"


def last_loads(records: Sequence[AuditRecord]) -> dict[str, float]:
    """When each profile was last loaded or replaced (`apparmor="STATUS"` records)."""
    loads: dict[str, float] = {}
    for record in records:
        if record.get("apparmor") == "STATUS" and record.get("operation") in ("profile_load", "profile_replace") \
                and record.time is not None:
            name = record.get("name")
            loads[name] = max(loads.get(name, 0.0), record.time)
    return loads


# ---- the helper -----------------------------------------------------------------------------------
def run_helper(request: dict[str, Any]) -> dict[str, Any]:
    return run_system_helper(HELPER, request, what="the AppArmor helper", packages=PACKAGES)


def policy_copy(directory: Path, host_files: Mapping[str, str], profiles: Mapping[str, str]) -> None:
    """The host's /etc/apparmor.d (as read) under `directory`, with the baseline's profile texts."""
    for path, text in host_files.items():
        relative = PurePosixPath(path).relative_to(PROFILE_DIR)
        if ".." in relative.parts:
            continue
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8", errors="surrogateescape")
    for name, text in profiles.items():
        (directory / name).write_text(text, encoding="utf-8")


# ---- proposals ----------------------------------------------------------------------------------
@dataclass
class Managed:
    """A profile file the baseline manages from `source`."""

    name: str
    source: str
    text: str
    mode: str
    rules: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (profile, hat) -> lines to add
    # The sensitive lines, (profile, hat) -> lines: only in the withheld proposals' amended file.
    sensitive_rules: dict[tuple[str, str], list[str]] = field(default_factory=dict)


def managed_profiles(spec: AppArmorSpec) -> dict[str, Managed]:
    found = {}
    for name, profile in spec.profiles.items():
        if isinstance(profile.source, SourceFile) and profile.mode is not None:
            found[name] = Managed(name, str(profile.source), profile.source.text, profile.mode)
    return found


def _evidence(group: dict[str, Any], records: Sequence[AuditRecord], sources: Sequence[str]) -> dict[str, Any]:
    chosen = [records[i] for i in group["records"]]
    times = [r.time for r in chosen if r.time is not None]
    return {
        "count": len(chosen), "events": sorted({r.event for r in chosen if has_serial(r)}),
        "sources": sorted({sources[i] for i in group["records"]}) if sources else [],
        "profile": group["profile"] if group["hat"] == group["profile"] else f"{group['profile']}//{group['hat']}",
        "comm": sorted({r.fields["comm"] for r in chosen if r.get("comm")}),
        "operation": sorted({r.fields["operation"] for r in chosen if r.get("operation")}),
        "paths": sorted({r.fields["name"] for r in chosen if r.get("name", "").startswith("/")}),
        "apparmor": sorted({r.fields["apparmor"] for r in chosen}),
        "first": min(times, default=None), "last": max(times, default=None),
        "records": [r.line.partition("\x1d")[0] for r in chosen[:5]],
        "rule": group["rule"], "severity": group["severity"],
    }


def _severity_note(severity: Any) -> list[str]:
    if severity is None:
        return []
    flag = f" (high: {HIGH_SEVERITY} or more, review it)" if isinstance(severity, int) and severity >= HIGH_SEVERITY else ""
    if not isinstance(severity, int):
        return [f"severity {severity}: apparmor.severity has no rank for it"]
    return [f"severity {severity} of 10 (apparmor.severity){flag}"]


def classify(group: dict[str, Any], records: Sequence[AuditRecord], managed: Managed,
             loads: Mapping[str, float], sources: Sequence[str] = ()) -> list[Suggestion]:
    """The group's suggestions: its intended part, its stale part, and its proposal or refusal."""
    evidence = _evidence(group, records, sources)
    where = evidence["profile"]
    out = []
    base = [f"records: {', '.join(MODES.get(mode, mode) for mode in group['aamodes'])}"]
    last_load = loads.get(group["profile"])
    if last_load is not None and evidence["last"] is not None and evidence["last"] < last_load:
        base.append("every record is older than the profile's last load: it may be fixed already")
    if group["intended"]:
        out.append(Suggestion("apparmor", "intended", f"{where}: {group['intended']}", {}, evidence,
                              (*base, "denied by the profile's own deny rule (or an included one): intended, "
                               "not proposed")))
    if group["allowed"] and not group["missing"]:
        out.append(Suggestion("apparmor", "stale", f"{where}: {group['allowed']}", {}, evidence,
                              (*base, f"already allowed by {managed.source} (or a file it includes)")))
    missing = group["missing"]
    exec_info = group.get("exec")
    if exec_info and not missing and not group["allowed"] and not group["intended"]:
        out.append(Suggestion("apparmor", "refused", f"{where}: {group['rule']}", {}, evidence,
                              (*base, f"logprof.conf allows only '{exec_info['choices']}' for this program: ux or "
                               "a child profile, never proposed; write the exec rule yourself")))
    if not missing:
        return out
    notes = [*base, *_severity_note(group["severity"])]
    if group["sensitive"]:
        if group.get("never"):
            out.append(Suggestion("apparmor", "refused", f"{where}: {missing}", {}, evidence,
                                  (*notes, f"{group['sensitive']}: a program anyone may have written there, never "
                                   "proposed, not even with --allow-sensitive")))
            return out
        managed.sensitive_rules.setdefault((group["profile"], group["hat"]), []).append(
            f"{missing}  # SENSITIVE ({group['sensitive']}): offered only because of --allow-sensitive")
        withheld = Suggestion("apparmor", "profile-rule", f"{where}: {missing}", {}, evidence, tuple(notes))
        out.append(Suggestion("apparmor", "refused", f"{where}: {missing}", {}, evidence,
                              (*notes, f"{group['sensitive']}: never proposed without --allow-sensitive"),
                              sensitive=group["sensitive"], withheld=withheld))
        return out
    if group["includes"]:
        notes.append("alternative, not chosen: " + ", ".join(f"include <{name}>" for name in group["includes"])
                     + " (allows more than the records need)")
    if group["globs"]:
        notes.append("broader alternatives, not chosen: " + ", ".join(group["globs"]))
    if exec_info:
        if exec_info["mode"] == "Px":
            notes.append(f"exec: Px, aa-logprof's default when the target has a profile (the host's "
                         f"{PROFILE_DIR}/{exec_info['target_profile']})")
        else:
            notes.append(f"exec: ix, aa-logprof's default (logprof.conf allows '{exec_info['choices']}'); ux is never proposed")
    if group["allowed"]:
        notes.append(f"partly allowed already: {group['allowed']}")
    managed.rules.setdefault((group["profile"], group["hat"]), []).append(missing)
    out.append(Suggestion("apparmor", "profile-rule", f"{where}: {missing}", {}, evidence, tuple(notes)))
    return out


def _block_end(lines: Sequence[str], start: int) -> int:
    """The line of the `}` closing the block opened at `start` (AppArmor blocks are line-based)."""
    depth = 0
    for index in range(start, len(lines)):
        line = lines[index].strip()
        if line.startswith("#") and not line.startswith("#include"):
            continue
        if re.sub(r"\s+#.*$", "", line).endswith("{"):
            depth += 1
        elif re.fullmatch(r"\}\s*(#.*)?", line):
            depth -= 1
            if depth == 0:
                return index
    raise ProviderError(f"the profile block opened at line {start + 1} is never closed")


def amended_text(text: str, rules: Mapping[tuple[str, str], Sequence[str]], where: str) -> str:
    """The profile text with the proposed rules added at the end of their profile's block, or of
    the child profile or hat block inside it (rules are keyed by profile and hat)."""
    lines = text.split("\n")
    insertions: list[tuple[int, list[str]]] = []
    headers = profile_headers(text)
    for (profile, hat), added in rules.items():
        parent = next((h for h in headers if h.depth == 0 and h.name == profile), None)
        if parent is None:
            raise ProviderError(f"{where}: no profile named {profile!r} in the text")
        header: Header | None = parent
        if hat != profile:
            end = _block_end(lines, parent.line)
            header = next((h for h in headers if h.depth == 1 and h.name == hat and parent.line < h.line < end), None)
        if header is None:
            raise ProviderError(f"{where}: no child profile or hat {hat!r} in profile {profile!r}")
        close = _block_end(lines, header.line)
        indent = re.match(r"\s*", lines[header.line]).group(0) + "  "  # type: ignore[union-attr]
        block = [f"{indent}# proposed by converge suggest from the host's records: review before applying"]
        block += [f"{indent}{rule}" for rule in dict.fromkeys(added)]
        insertions.append((close, block))
    for close, block in sorted(insertions, reverse=True):
        lines[close:close] = block
    return "\n".join(lines)


def source_label(source: str) -> str:
    """The source file as git names it: relative to its repository's top (or its directory)."""
    from converge.baseline import allowed_root

    path = Path(source)
    return path.resolve().relative_to(allowed_root(path)).as_posix()


def profile_files(managed: Managed, *, sensitive: bool = False) -> tuple[dict[str, str], dict[str, Any]]:
    """The files --write puts next to the baseline, and the overlay's entry for the profile; with
    `sensitive`, the amended file holds the sensitive lines too (the withheld proposals' file)."""
    rules = merged_rules([managed.rules, managed.sensitive_rules] if sensitive else [managed.rules])
    return _files_for(managed.name, managed.source, managed.text, managed.mode, rules)


def merged_rules(sets: Sequence[Mapping[tuple[str, str], Sequence[str]]]) -> dict[tuple[str, str], list[str]]:
    """The union of rule sets, block by block, each line once, in first-seen order."""
    merged: dict[tuple[str, str], list[str]] = {}
    for rules in sets:
        for block, lines in rules.items():
            have = merged.setdefault(block, [])
            have += [line for line in lines if line not in have]
    return merged


def _files_for(name: str, source: str, text: str, mode: str,
               rules: Mapping[tuple[str, str], Sequence[str]]) -> tuple[dict[str, str], dict[str, Any]]:
    after = amended_text(text, rules, source)
    label = source_label(source)
    diff = "".join(difflib.unified_diff(text.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile=f"a/{label}", tofile=f"b/{label}"))
    relative = f"apparmor/{name}"
    files = {relative: after, f"{relative}.diff": diff}
    return files, {"profiles": {name: {"mode": mode, "source": relative}}}


@dataclass(frozen=True)
class ProfileLines:
    """What one host's amended profile is made of, for merging several hosts' proposals
    (`Suggestion.merge`): the baseline's source and the lines proposed, by block."""

    name: str
    source: str
    text: str
    mode: str
    rules: tuple[tuple[tuple[str, str], tuple[str, ...]], ...]

    def __call__(self, proposals: Sequence[tuple[str, Suggestion]]) -> tuple[dict[str, str], list[str]]:
        """One amended profile for every host's proposal of this file: the union of their lines (each
        once, first seen first) on the baseline's source, each line marked with the hosts it came from
        when more than one host proposed for it; the diff against the source."""
        hosts_of: dict[tuple[tuple[str, str], str], list[str]] = {}
        sets = []
        for host, proposal in proposals:
            lines = proposal.merge
            if not isinstance(lines, ProfileLines) or (lines.name, lines.source) != (self.name, self.source):
                raise ProviderError(f"apparmor/{self.name}: proposals of another file cannot be merged into it")
            sets.append(dict(lines.rules))
            for block, added in lines.rules:
                for line in added:
                    theirs = hosts_of.setdefault((block, line), [])
                    if host not in theirs:
                        theirs.append(host)
        union = merged_rules(sets)
        several = len({host for host, _ in proposals}) > 1
        marked = {block: [f"{line}  # from {', '.join(hosts_of[block, line])}" if several else line for line in lines]
                  for block, lines in union.items()}
        files, _ = _files_for(self.name, self.source, self.text, self.mode, marked)
        notes = [f"apparmor/{self.name}: {line} from {', '.join(hosts_of[block, line])}"
                 for block, lines in union.items() for line in lines] if several else []
        return files, notes


def profile_lines(managed: Managed, *, sensitive: bool = False) -> ProfileLines:
    rules = merged_rules([managed.rules, managed.sensitive_rules] if sensitive else [managed.rules])
    return ProfileLines(managed.name, managed.source, managed.text, managed.mode,
                        tuple((block, tuple(lines)) for block, lines in rules.items()))


def analyse(records: Sequence[AuditRecord], managed: Mapping[str, Managed], host_files: Mapping[str, str],
            sources: Sequence[str] = ()) -> list[Suggestion]:
    """Every suggestion for the records of the managed profiles."""
    if not records or not managed:
        return []
    with tempfile.TemporaryDirectory(prefix="converge-suggest-aa-") as work:
        policy_copy(Path(work), host_files, {m.name: m.text for m in managed.values()})
        answer = run_helper({"profile_dir": work, "records": [libapparmor_line(r) for r in records],
                             "profiles": sorted(managed),
                             "sensitive_paths": list(SENSITIVE_PATHS), "sensitive_exec_paths": list(SENSITIVE_EXEC_PATHS),
                             "sensitive_capabilities": list(SENSITIVE_CAPABILITIES)})
    loads = last_loads(records)
    unread = [f"AppArmor's library could not read {len(answer['skipped'])} of the host's files, left out: "
              + "; ".join(answer["skipped"][:3])] if answer.get("skipped") else []
    out: list[tuple[Managed | None, Suggestion]] = []
    for group in answer["groups"]:
        owner = managed.get(group.get("file") or "")
        if owner is None or group["unknown_profile"]:
            continue  # a profile the baseline does not manage from source: not this baseline's to fix
        out += [(owner, replace(each, notes=(*each.notes, *unread)))
                for each in classify(group, records, owner, loads, sources)]
    out = _withheld_last(out)
    out += [(None, each) for each in not_analysed(records, answer["records"], managed, sources)]
    found = []
    for owner, each in out:
        if owner is not None and each.kind == "profile-rule":
            each = _with_files(each, *profile_files(owner), profile_lines(owner))
        elif owner is not None and each.withheld is not None:
            full = _with_files(each.withheld, *profile_files(owner, sensitive=True), profile_lines(owner, sensitive=True))
            each = replace(each, withheld=full)
        found.append(each)
    return found


def _withheld_last(out: list[tuple[Managed | None, Suggestion]]) -> list[tuple[Managed | None, Suggestion]]:
    """Each refusal with a withheld proposal after the last suggestion of its profile file, so that,
    offered, its amended file (with the sensitive lines) comes after the others'."""
    ordered = [pair for pair in out if pair[1].withheld is None]
    for pair in [pair for pair in out if pair[1].withheld is not None]:
        last = max((i for i, (owner, _) in enumerate(ordered) if owner is pair[0]), default=len(ordered) - 1)
        ordered.insert(last + 1, pair)
    return ordered


def not_analysed(records: Sequence[AuditRecord], events: Sequence[dict[str, Any]], managed: Mapping[str, Managed],
                 sources: Sequence[str]) -> list[Suggestion]:
    """Records of a managed profile the library turns into no rule (a record libapparmor cannot
    parse; mount, unix, pivot_root and other rules its 3.0 log parser does not know; a
    disconnected path): said, never dropped silently, never proposed."""
    names = {name for each in managed.values() for name in names_of(each)}
    groups: dict[tuple[str, str], list[int]] = {}
    for index, (record, event) in enumerate(zip(records, events, strict=True)):
        if record.get("apparmor") not in ("ALLOWED", "DENIED") or record.get("profile").split("//")[0] not in names:
            continue
        if event["parsed"] and event.get("rules"):
            continue
        reason = record.get("operation") if event["parsed"] else "unparsed"
        groups.setdefault((record.get("profile"), reason), []).append(index)
    out = []
    for (profile, operation), indexes in groups.items():
        group = {"records": indexes, "profile": profile, "hat": profile, "rule": None, "severity": None}
        info = sorted({records[i].get("info") for i in indexes if records[i].get("info")})
        why = ("libapparmor cannot parse these records" if operation == "unparsed" else
               f"AppArmor's library turns no rule out of {operation!r} records"
               + (f" ({'; '.join(info)})" if info else ""))
        notes = [f"{why}: not analysed and never proposed; write the rule by hand"]
        if any("disconnected path" in each for each in info):
            notes.append("a disconnected path (the library ignores such records): the profile may need "
                         "flags=(attach_disconnected)")
        out.append(Suggestion("apparmor", "refused", f"{profile}: {operation} (not analysed)", {},
                              _evidence(group, records, sources), tuple(notes)))
    return out


def names_of(managed: Managed) -> set[str]:
    return {header.name for header in profile_headers(managed.text) if header.depth == 0}


def _with_files(suggestion: Suggestion, files: dict[str, str], table: dict[str, Any], lines: ProfileLines) -> Suggestion:
    return replace(suggestion, table=table, files=files, merge=lines,
                   notes=(*suggestion.notes, f"written as {' and '.join(sorted(files))}; the .diff applies to the "
                          "baseline's own source with `git apply` from the repository's top"))


def suggest(spec: AppArmorSpec, facts: Facts, since: float | None) -> list[Suggestion]:
    """Every proposal for the host's AppArmor records since `since`."""
    records, sources = host_records(facts.command(*DENIALS.argv).stdout, since)
    host_files: dict[str, str] = {}
    for pattern in POLICY_GLOBS:
        host_files.update(facts.glob(pattern))
    return analyse(records, managed_profiles(spec), host_files, sources)
