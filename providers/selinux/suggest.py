"""SELinux proposals from AVC denials, narrowest first, decided by the host's own policy.

The verdicts come from the field's tools in a helper process on Debian's python3
(`sepolicy_helper.py`: audit2why, setools, selabel_lookup, sepolgen), run on the controller
against the policy file and file_contexts read from the host. converge's own part is only the
order (stale, relabel, label, boolean, module) and what it refuses to propose.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from converge.auditlog import AuditRecord, event_exe, group_events, parse_records, record_path
from converge.provider import Facts, ProviderError, Read, ReadFile, ReadGlob, RunCommand
from converge.suggest import SYSTEM_PYTHON, Suggestion
from converge.suggest import run_helper as run_system_helper

HELPER = Path(__file__).with_name("sepolicy_helper.py")
PACKAGES = "python3-selinux python3-setools python3-sepolgen"
# One read whatever the host has: ausearch --raw (audit.log with SYSCALL/PATH) where auditd logs,
# else the kernel log from a running journald, else dmesg; the first line names the source. Never
# fails (no records is an answer).
DENIALS = RunCommand(("sh", "-c",
    "if command -v ausearch >/dev/null 2>&1 && [ -s /var/log/audit/audit.log ]; then echo '# ausearch --raw';"
    " ausearch -m AVC,USER_AVC,SELINUX_ERR,MAC_POLICY_LOAD --raw 2>/dev/null;"
    # journalctl without a running journald (its socket) reads an empty journal: dmesg then
    " elif command -v journalctl >/dev/null 2>&1 && [ -S /run/systemd/journal/socket ]; then"
    " echo '# journalctl -k (no PATH records; may be rate-limited)';"
    " journalctl -k -o cat --no-pager -q 2>/dev/null;"
    " else echo '# dmesg (no PATH records; may be rate-limited)'; dmesg 2>/dev/null; fi; exit 0"))
RUNTIME_POLICY = "/sys/fs/selinux/policy"
GENERIC = frozenset({"var_t", "default_t", "etc_t", "usr_t", "port_t", "unreserved_port_t", "reserved_port_t",
                     "hi_reserved_port_t", "var_lib_t", "var_run_t", "tmp_t"})
SENSITIVE_CAPABILITIES = frozenset({"sys_admin", "sys_module", "sys_rawio", "mac_admin", "mac_override",
                                    "dac_override", "dac_read_search"})
SENSITIVE_TARGETS = frozenset({"shadow_t", "security_t", "kernel_t", "unlabeled_t", "unconfined_t"})
SENSITIVE_PERMS = frozenset({"execmem", "execstack", "execheap", "execmod", "relabelfrom", "relabelto"})
SYSTEM_TYPES = frozenset({"etc_t", "bin_t", "lib_t", "usr_t"})
WRITES = frozenset({"write", "append", "create", "unlink", "rename", "setattr", "add_name", "remove_name"})


CONTEXTS_GLOB = "/etc/selinux/*/contexts/files/file_contexts"
LOCAL_GLOB = CONTEXTS_GLOB + ".local"


def policy_files(policy: str) -> tuple[str, str]:
    contexts = f"/etc/selinux/{policy}/contexts/files"
    return f"{contexts}/file_contexts", f"{contexts}/file_contexts.local"


def suggest_reads() -> list[Read]:
    """The denials (ausearch, else the kernel log), the loaded policy and every policy's file contexts."""
    return [DENIALS, ReadFile(RUNTIME_POLICY), ReadGlob(CONTEXTS_GLOB), ReadGlob(LOCAL_GLOB)]


@dataclass
class Group:
    """Denials of one (source type, target type, class), permissions merged, with their evidence."""

    scontext: str
    tcontext: str
    tclass: str
    perms: set[str] = field(default_factory=set)
    records: list[tuple[AuditRecord, list[AuditRecord]]] = field(default_factory=list)

    @property
    def source(self) -> str:
        return self.scontext.split(":")[2]

    @property
    def target(self) -> str:
        return self.tcontext.split(":")[2]

    def split(self, chosen: Any) -> tuple[Group, Group]:
        """The records `chosen(record, event)` picks, and the others, as two groups of the same access."""
        picked, others = Group(self.scontext, self.tcontext, self.tclass), Group(self.scontext, self.tcontext, self.tclass)
        for record, event in self.records:
            into = picked if chosen(record, event) else others
            into.records.append((record, event))
            into.perms.update(record.perms)
        return picked, others

    def evidence(self) -> dict[str, Any]:
        times = [r.time for r, _ in self.records if r.time is not None]
        paths = sorted({p for r, e in self.records if (p := record_path(r, e))})
        ports = sorted({r.fields[k] for r, _ in self.records for k in ("src", "dest") if k in r.fields})
        return {"count": len(self.records), "events": sorted({r.event for r, _ in self.records if r.event}),
                "comm": sorted({r.fields["comm"] for r, _ in self.records if "comm" in r.fields}),
                "exe": sorted({x for _, e in self.records if (x := event_exe(e))}), "paths": paths, "ports": ports,
                "first": min(times, default=None), "last": max(times, default=None),
                "permissive": sorted({r.fields["permissive"] for r, _ in self.records if "permissive" in r.fields}),
                "access": f"{self.source} {self.target}:{self.tclass} {{ {' '.join(sorted(self.perms))} }}"}


def denial_groups(records: Sequence[AuditRecord], since: float | None) -> tuple[list[Group], float | None]:
    groups: dict[tuple[str, ...], Group] = {}
    last_load = None
    for event in group_events(records):
        for record in event:
            if record.type == "MAC_POLICY_LOAD" and record.time is not None:
                last_load = max(last_load or 0.0, record.time)
            if record.verdict != "denied" or "scontext" not in record.fields:
                continue
            if since is not None and record.time is not None and record.time < since:
                continue
            # one group per port: a bind on 8443 and a connect to 7003 are different fixes
            port = record.get("src") or record.get("dest")
            key = (record.fields["scontext"], record.fields["tcontext"], record.fields["tclass"], port)
            group = groups.setdefault(key, Group(*key[:3]))
            group.perms.update(record.perms)
            group.records.append((record, event))
    return list(groups.values()), last_load


def sensitive(group: Group) -> str | None:
    """Why converge never proposes this access without --allow-sensitive, or None."""
    if group.tclass in ("capability", "cap_userns") and group.perms & SENSITIVE_CAPABILITIES:
        return "capability " + " ".join(sorted(group.perms & SENSITIVE_CAPABILITIES))
    if group.target in SENSITIVE_TARGETS:
        return f"sensitive target {group.target}"
    if group.perms & SENSITIVE_PERMS:
        return "permission " + " ".join(sorted(group.perms & SENSITIVE_PERMS))
    if group.target in SYSTEM_TYPES and group.perms & WRITES:
        return f"write to the system type {group.target}"
    return None


def run_helper(request: dict[str, Any]) -> dict[str, Any]:
    return run_system_helper(HELPER, request, what="the SELinux policy helper", packages=PACKAGES)


def pattern_directory(path: str, labels: dict[str, str], known: Sequence[str], generic: str) -> str:
    """Where an fcontext entry for `path` starts: the first directory below the standard ones (those
    the policy's file contexts name) that has the generic label, so one entry covers the
    application's own tree; the file itself when it sits directly in a standard directory."""
    parts = path.rstrip("/").split("/")
    for depth in range(2, len(parts)):
        directory = "/".join(parts[:depth])
        if directory not in known and labels.get(directory) == generic:
            return directory
    return path


# Types for a program's working files, not for the data a denial is usually about.
SCRATCH_WORDS = ("tmp", "tmpfs", "lock", "log", "keytab", "cache", "script", "htaccess", "modules", "config", "runtime")
# Labels of the system's own programs and libraries.
SYSTEM_WORDS = ("lib", "shlib", "textrel", "ld", "locale", "bin", "usr", "etc")
WRITE_PERMS = WRITES | {"lock"}


def rank_file_types(candidates: Sequence[str], group: Group, sibling: str | None, executables: Sequence[str],
                    uses: dict[str, int]) -> list[str]:
    """The policy's candidate labels, likeliest first: what the policy gives the domain's own
    directory in the same standard place; then types named for the same kind of place as the
    generic label (var_lib_t -> *_var_lib_t); then content types (rw ones only for writes); the
    domain's scratch types and programs' labels last; within each, the type the policy's file
    contexts use most. Every one is already allowed unconditionally."""
    place = group.target.removesuffix("_t")
    writes = bool(group.perms & WRITE_PERMS)

    def rank(name: str) -> int:
        words = name.removesuffix("_t").split("_")
        if name == sibling:
            return 0
        if place in name and place not in ("default", "var"):
            return 1
        if "content" in words and (("rw" in words) == writes):
            return 2
        if name in executables or any(word in words for word in SYSTEM_WORDS):
            return 5
        if any(word in words for word in SCRATCH_WORDS) and place not in words:
            return 4
        return 3
    return sorted(candidates, key=lambda name: (rank(name), -uses.get(name, 0)))


def fc_escape(path: str) -> str:
    """A literal path as a file_contexts regular expression (semanage fcontext takes regexes)."""
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", path)


def extent(breadth: Sequence[int]) -> str:
    """What a boolean enables, as the helper measured it: type pairs, rules, domains, target types."""
    pairs, rules, domains, targets = breadth
    return f"{rules} rules, {domains} domains, {targets} target types: {pairs} type pairs"


def _port_entry(group: Group, port_type: str) -> dict[str, Any]:
    protocol = group.tclass.removesuffix("_socket")
    ports = group.evidence()["ports"]
    return {"ports": [{"type": port_type, "protocol": protocol, "port": port} for port in ports]}


def maker(group: Group, notes: tuple[str, ...]) -> Any:
    """A constructor of this group's suggestions, with its evidence and the notes every one carries."""
    evidence = group.evidence()

    def make(kind: str, table: dict[str, Any], *more: str, res: str = evidence["access"]) -> Suggestion:
        return Suggestion("selinux", kind, res, table, evidence, (*notes, *more))
    return make


EXEC_PERMS = frozenset({"execmem", "execstack", "execheap", "execmod"})


def analyse(groups: Sequence[Group], answers: Sequence[dict[str, Any]], pinned: dict[str, bool],
            last_load: float | None) -> tuple[list[Suggestion], list[Group], list[tuple[Group, str]]]:
    """Each group's proposal, narrowest kind first; also the groups left for a module, and the
    sensitive groups no label or boolean fixes (refused, with a module of their own withheld)."""
    out: list[Suggestion] = []
    leftover: list[Group] = []
    sensitive_left: list[tuple[Group, str]] = []
    for group, answer in zip(groups, answers, strict=True):
        notes = ("contexts had no MLS level; analysed at s0",) if answer["mls_added"] else ()

        make = maker(group, notes)
        evidence = group.evidence()
        verdict = answer["verdict"]
        if verdict in ("ALLOW", "DONTAUDIT"):
            older = last_load is not None and (evidence["last"] or 0) < last_load
            out.append(make("stale", {}, f"audit2why: {verdict.lower()}ed by the host's current policy"
                            + ("; older than the last policy load" if older else "")))
            continue
        relabelled_ports = {port: label for port, label in answer["port_labels"].items()
                            if label != group.target and answer["port_allowed"].get(port)}
        if relabelled_ports and set(relabelled_ports) == set(evidence["ports"]):
            labels = ", ".join(f"{port} is {label}" for port, label in sorted(relabelled_ports.items()))
            out.append(make("stale", {}, f"the policy labels the port(s) differently now ({labels}), which is allowed: "
                            f"the records predate the label"))
            continue
        if verdict.startswith("BAD"):
            out.append(make("refused", {}, f"audit2why: {verdict} (a type or class this host's policy does not know): "
                            "not analysed"))
            continue
        relabel = {p: e.split(":")[2] for p, e in answer["expected"].items()
                   if e.split(":")[2] != group.target and answer["expected_allowed"].get(p)}
        if relabel:
            # each file restorecon fixes is drift of its own; the group's other files go on down the chain
            fixed, rest = group.split(lambda record, event, relabel=relabel: record_path(record, event) in relabel
                                      or record_path(record, event) is None)
            for path in sorted(relabel):
                theirs, fixed = fixed.split(lambda record, event, path=path: record_path(record, event) in (path, None))
                out.append(maker(theirs, notes)("relabel", {}, f"{path} is {group.target}, the policy's file contexts say "
                                         f"{relabel[path]}, which is allowed: restorecon (host drift, not a baseline "
                                         "change)", res=path))
            if not rest.records:
                continue
            group, make = rest, maker(rest, notes)
        proposal = _label_or_boolean(group, answer, pinned, make)
        reason = sensitive(group)
        if reason is None or (proposal is not None and proposal.kind == "boolean" and group.perms & EXEC_PERMS):
            # an exec* permission a boolean grants (httpd_execmem) is the policy's own narrow switch
            if proposal is not None:
                out.append(proposal)
            elif verdict == "TERULE":
                leftover.append(group)
            else:
                out.append(make("refused", {}, f"audit2why: {verdict}: a constraint or role rule, explained only, "
                                "never generated"))
            continue
        refusal = f"{reason}: never proposed without --allow-sensitive"
        if proposal is not None and proposal.kind != "refused":
            out.append(replace(make("refused", {}, refusal), sensitive=reason, withheld=proposal))
        elif proposal is None and verdict == "TERULE":
            sensitive_left.append((group, reason))
        else:
            out.append(replace(make("refused", {}, refusal, *(proposal.notes if proposal else ())), sensitive=reason))
    return out, leftover, sensitive_left


def _label_or_boolean(group: Group, answer: dict[str, Any], pinned: dict[str, bool],
                      make: Any) -> Suggestion | None:
    """A port or fcontext label, else a boolean (or the conflict with a pinned one), else None."""
    evidence = group.evidence()
    booleans = sorted(answer["booleans"], key=lambda b: tuple(answer["breadth"].get(b[0], [0, 0, 0, 0])))
    candidates = [c for c in answer["candidates"] if c not in GENERIC and c not in SENSITIVE_TARGETS]
    if group.tclass.endswith("_socket"):  # a port label names a service: only the domain's own family
        stem = group.source.removesuffix("_t")[:4]
        candidates = [c for c in candidates if c.startswith(stem)]
    if group.target in GENERIC and candidates and evidence["ports"] and group.tclass.endswith("_socket"):
        more = [f"{group.source} may use unconditionally: {', '.join(candidates[:5])}"]
        if booleans:
            more.append(f"not proposed: boolean {booleans[0][0]} ({extent(answer['breadth'][booleans[0][0]])})")
        suggestion: Suggestion = make("port", _port_entry(group, candidates[0]), *more)
        return suggestion
    if group.target in GENERIC and candidates and evidence["paths"]:
        path = evidence["paths"][0]
        candidates = rank_file_types(candidates, group, answer["siblings"].get(path), answer["executables"],
                                     answer["uses"])
        directory = pattern_directory(path, answer["labels"], answer["known"], group.target)
        pattern = f"{fc_escape(directory)}(/.*)?" if directory != path else fc_escape(path)
        where = (f"pattern at {directory}, the first directory of {path} below the policy's own that is "
                 f"{group.target}: confirm it covers only this application" if directory != path else
                 f"{path} sits in a directory the policy labels itself: the file alone")
        suggestion = make("fcontext", {"fcontexts": [{"path": pattern, "type": candidates[0]}]},
                          f"{group.source} may use unconditionally: {', '.join(candidates[:5])}", where,
                          res=f"fcontext:{pattern}")
        return suggestion
    if booleans:
        name, value = booleans[0]
        want = bool(value)
        if name in pinned and pinned[name] != want:
            suggestion = make("refused", {}, f"boolean {name} allows it, but the baseline pins {name} = "
                              f"{str(pinned[name]).lower()}")
            return suggestion
        ranked = ", ".join(f"{b} ({extent(answer['breadth'][b])})" for b, _ in booleans)
        suggestion = make("boolean", {"booleans": {name: want}}, f"booleans that allow it, narrowest first: {ranked}",
                          res=f"boolean:{name}")
        return suggestion
    return None


def module_name(domain: str, suffix: str = "") -> str:
    """One module per domain, whichever hosts its denials came from: `converge_httpd`."""
    safe = "".join(c if c.isalnum() else "_" for c in domain.removesuffix("_t"))
    return f"converge_{safe}{'_' + suffix if suffix else ''}"


def suggest(policy: str, pinned: dict[str, bool], facts: Facts, since: float | None, host: str) -> list[Suggestion]:
    """Every proposal for the host's denials since `since`."""
    text = facts.command(*DENIALS.argv).stdout
    source = text.split("\n", 1)[0].removeprefix("# ") or "no denial source"
    groups, last_load = denial_groups(parse_records(text, source), since)
    if not groups:
        return []
    binary = facts.file(RUNTIME_POLICY)
    if binary is None:
        raise ProviderError(f"no {RUNTIME_POLICY}: suggest reads the loaded policy (is SELinux enabled?)")
    stock, local = policy_files(policy)
    with tempfile.TemporaryDirectory(prefix="converge-suggest-") as work:
        policy_file = Path(work) / "policy"
        policy_file.write_bytes(binary.encode("utf-8", "surrogateescape"))
        contexts = Path(work) / "file_contexts"
        contexts.write_text(facts.glob(CONTEXTS_GLOB).get(stock, ""), encoding="utf-8", errors="surrogateescape")
        Path(work, "file_contexts.local").write_text(facts.glob(LOCAL_GLOB).get(local, ""), encoding="utf-8",
                                                     errors="surrogateescape")
        return analyse_with_helper(groups, policy_file=str(policy_file), contexts=str(contexts), pinned=pinned, host=host,
                                   last_load=last_load, source=source)


def analyse_with_helper(groups: Sequence[Group], *, policy_file: str, contexts: str | None, pinned: dict[str, bool],
                        host: str, last_load: float | None, source: str) -> list[Suggestion]:
    request = {"policy": policy_file, "file_contexts": contexts, "modules": [], "groups": [
        {"scontext": g.scontext, "tcontext": g.tcontext, "tclass": g.tclass, "perms": sorted(g.perms),
         "paths": g.evidence()["paths"], "ports": g.evidence()["ports"], "generic": g.target in GENERIC} for g in groups]}
    answer = run_helper(request)
    out, leftover, sensitive_left = analyse(groups, answer["groups"], pinned, last_load)
    wanted: list[tuple[str, list[Group], str | None]] = []
    by_domain: dict[str, list[Group]] = {}
    for group in leftover:
        by_domain.setdefault(group.source, []).append(group)
    wanted += [(module_name(domain), theirs, None) for domain, theirs in sorted(by_domain.items())]
    # a sensitive grant is a module of its own, so it is reviewed and removed on its own
    wanted += [(module_name(g.source, f"{g.target.removesuffix('_t')}_{g.tclass}"), [g], reason)
               for g, reason in sensitive_left]
    if not wanted:
        return out
    texts = run_helper({**request, "groups": [], "modules": [
        {"name": name, "rules": [[g.source, g.target, g.tclass, sorted(g.perms)] for g in theirs]}
        for name, theirs, _ in wanted]})["modules"]
    for (name, theirs, reason), te in zip(wanted, texts, strict=True):
        header = f"# Generated by converge suggest{' on ' + host if host else ''} from {source}; review before applying.\n"
        header += "".join(f"#   {g.evidence()['access']} ({len(g.records)} record(s))\n" for g in theirs)
        relative = f"selinux/{name}.te"
        evidence = {"count": sum(len(g.records) for g in theirs), "groups": [g.evidence() for g in theirs]}
        module = Suggestion("selinux", "module", f"module:{name}", {"modules": [{"name": name, "source": relative}]},
                            evidence, ("no relabel, label or boolean allows these: exactly the observed types and "
                                       "permissions",), {relative: header + te}, merge=merge_modules)
        if reason is None:
            out.append(module)
        else:
            (group,) = theirs
            out.append(Suggestion("selinux", "refused", group.evidence()["access"], {}, group.evidence(),
                                  (f"{reason}: never proposed without --allow-sensitive",), sensitive=reason,
                                  withheld=module))
    return out


_ALLOW = re.compile(r"^allow (\S+) (\S+):(\S+) (?:\{ ([^}]*) \}|(\S+));$", re.MULTILINE)


def merge_modules(proposals: Sequence[tuple[str, Suggestion]]) -> tuple[dict[str, str], list[str]]:
    """One module for every host's proposal of the same module (`Suggestion.merge`): the union of
    their allow rules (permissions of one source, target and class merged), written again by
    sepolgen, each access said with the hosts it came from."""
    ((relative, _),) = proposals[0][1].files.items()
    name = PurePosixPath(relative).stem
    hosts_of: dict[tuple[str, str, str], dict[str, list[str]]] = {}
    for host, proposal in proposals:
        for source, target, tclass, many, single in _ALLOW.findall(proposal.files[relative]):
            for perm in (many or single).split():
                hosts_of.setdefault((source, target, tclass), {}).setdefault(perm, [])
                if host not in hosts_of[source, target, tclass][perm]:
                    hosts_of[source, target, tclass][perm].append(host)
    rules = [[*access, sorted(perms)] for access, perms in hosts_of.items()]
    script = ("import json, sys; sys.path.insert(0, sys.argv[1]); import sepolicy_helper\n"
              "print(sepolicy_helper._module(sys.argv[2], json.loads(sys.argv[3])), end='')\n")
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-I", "-c", script, str(HELPER.parent), name, json.dumps(rules)],
                              capture_output=True, text=True, check=False, timeout=120)
    except OSError as error:
        raise ProviderError(f"merging {relative} needs {SYSTEM_PYTHON} with {PACKAGES}: {error}") from None
    if done.returncode != 0:
        raise ProviderError(f"merging {relative}: sepolgen failed ({done.stderr.strip().split(chr(10))[-1]})")
    hosts = list(dict.fromkeys(host for host, _ in proposals))
    said = [f"{relative}: allow {s} {t}:{c} {perm} from {', '.join(theirs)}"
            for (s, t, c), perms in hosts_of.items() for perm, theirs in perms.items()]
    header = f"# Generated by converge suggest from the records of {', '.join(hosts)}; review before applying.\n"
    header += "".join(f"#   {line.split(': ', 1)[1]}\n" for line in said)
    return {relative: header + done.stdout}, said
