"""Questions to one host's SELinux policy, answered by the field's own libraries.

Run as a separate process with Debian's python3 (`/usr/bin/python3 -I sepolicy_helper.py`): the
libraries are Debian packages only (python3-selinux, python3-setools, python3-sepolgen), and
sepolgen is GPL-2. It imports nothing of converge. JSON in on stdin, JSON out on stdout:

in:  {"policy": FILE, "file_contexts": FILE | null,
      "groups": [{"scontext", "tcontext", "tclass", "perms": [...], "paths": [...], "ports": [...], "generic": bool}],
      "modules": [{"name": NAME, "rules": [[source, target, tclass, [perms]]]}]}
out: {"groups": [{"verdict", "booleans": [[name, value]], "mls_added", "expected": {path: type},
                  "expected_allowed": {path: bool}, "labels": {dir: type}, "known": [dir],
                  "siblings": {path: type}, "port_labels": {port: type}, "port_allowed": {port: bool},
                  "candidates": [type], "executables": [type], "uses": {type: file-context entries},
                  "breadth": {boolean: [type pairs, rules, domains, target types]}}],
      "modules": [TE text, one per module asked]}
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

VERDICTS = ("ALLOW", "DONTAUDIT", "TERULE", "BOOLEAN", "CONSTRAINT", "RBAC", "BOUNDS",
            "BADSCON", "BADTCON", "BADTCLASS", "BADPERM", "BADCOMPUTE", "NOPOLICY", "UNKNOWN")


def _verdict(audit2why: Any, scontext: str, tcontext: str, tclass: str, perms: list[str]) -> tuple[str, list[Any]]:
    code, data = audit2why.analyze(scontext, tcontext, tclass, perms)
    names = {getattr(audit2why, name): name for name in VERDICTS if hasattr(audit2why, name)}
    return names.get(code, str(code)), [list(item) for item in data] if isinstance(data, list) else []


def _with_level(context: str, mls: bool) -> tuple[str, bool]:
    if mls and context.count(":") == 2:
        return context + ":s0", True
    return context, False


def _type(context: str) -> str:
    return context.split(":")[2]


def _candidates(setools: Any, policy: Any, domain: str, tclass: str, perms: set[str], *,
                kind: str) -> tuple[list[str], list[str]]:
    """Types `domain` may use for exactly these perms unconditionally, of the target's kind
    (port_type or file_type): the labels that would make the access legal without a new rule;
    and which of them label programs (exec_type)."""
    granted: dict[str, set[str]] = {}
    types: dict[str, Any] = {}
    direct: set[str] = set()
    for rule in setools.TERuleQuery(policy, ruletype=["allow"], source=domain, tclass=[tclass], perms=perms).results():
        try:
            _ = rule.conditional
            continue
        except setools.exception.RuleNotConditional:
            pass
        target = rule.target
        expanded = list(target.expand()) if isinstance(target, setools.policyrep.TypeAttribute) else [target]
        rule_perms = {str(p) for p in rule.perms}
        for each in expanded:
            name = str(each)
            granted.setdefault(name, set()).update(rule_perms)
            types[name] = each
            if each is target:
                direct.add(name)
    found, executables = [], []
    for name, allowed in granted.items():
        if not perms <= allowed:
            continue
        attributes = {str(a) for a in types[name].attributes()}
        if kind == "file_type" and "non_security_file_type" not in attributes:  # never a security file's label
            continue
        if kind in attributes:
            found.append(name)
            if "exec_type" in attributes:
                executables.append(name)
    def shared(name: str) -> int:  # how much of the domain's name the type shares: its own family first
        return next((i for i, (a, b) in enumerate(zip(name, domain, strict=False)) if a != b), min(len(name), len(domain)))

    # then types named in a rule over those reached through an attribute; then the fewest extra
    # permissions granted on them; then the shortest name
    return sorted(found, key=lambda n: (-shared(n), n not in direct, len(granted[n] - perms), len(n), n)), executables


_META = set(".^$*+?()[]{}|")


def _context_entries(files: list[str]) -> Iterator[list[str]]:
    """The entries of file_contexts files (regex, [file type], context), comments dropped; a file
    that cannot be read (no .local) has none."""
    for name in files:
        try:
            lines = open(name, encoding="utf-8", errors="replace").read().split("\n")  # noqa: SIM115
        except OSError:
            continue
        for line in lines:
            if spec := line.split("#", 1)[0].split():
                yield spec


def _type_uses(files: list[str]) -> dict[str, int]:
    """How many file-context entries give each type: the policy's usual labels for data."""
    uses: dict[str, int] = {}
    for spec in _context_entries(files):
        if len(spec) >= 2 and spec[-1].count(":") >= 2:
            uses[_type(spec[-1])] = uses.get(_type(spec[-1]), 0) + 1
    return uses


def _known_directories(files: list[str]) -> set[str]:
    """Directories the policy's file contexts name literally (`/var/lib(/.*)?`, `/srv/.*`) and
    their parents: the standard ones, under which an application's own directory starts."""
    known: set[str] = set()
    for spec in _context_entries(files):
        if not spec[0].startswith("/"):
            continue
        regex, literal, index = spec[0], [], 0
        while index < len(regex) and regex[index] not in _META:
            if regex[index] == "\\" and index + 1 < len(regex):
                index += 1
            literal.append(regex[index])
            index += 1
        text = "".join(literal)
        rest = regex[index:]
        directory = text.rstrip("/") if (not rest or rest[0] in "(/" or text.endswith("/")) else text.rsplit("/", 1)[0]
        while directory:
            known.add(directory)
            directory = directory.rsplit("/", 1)[0]
    return known


def _port_label(policy: Any, protocol: str, port: int) -> str | None:
    for portcon in policy.portcons():
        if str(portcon.protocol) == protocol and portcon.ports.low <= port <= portcon.ports.high:
            return str(portcon.context.type_)
    return None


def _breadth(setools: Any, policy: Any, booleans: set[str]) -> dict[str, list[int]]:
    """For each boolean: how many allow rules its conditionals hold, over how many source types and
    target types, and how many (source, target) type pairs they open, attributes expanded (one pass
    over the conditional rules of them all). The pairs rank: a rule on `port_type` opens every port."""
    if not booleans:
        return {}
    rules: dict[str, int] = dict.fromkeys(booleans, 0)
    pairs: dict[str, set[tuple[str, str]]] = {name: set() for name in booleans}

    def expand(item: Any) -> set[str]:
        members = item.expand() if isinstance(item, setools.policyrep.TypeAttribute) else [item]
        return {str(each) for each in members}

    for rule in setools.TERuleQuery(policy, ruletype=["allow"], boolean=sorted(booleans)).results():
        sources, targets = expand(rule.source), expand(rule.target)
        opened = {(source, target) for source in sources for target in targets}
        for boolean in {str(b) for b in rule.conditional.booleans} & booleans:
            rules[boolean] += 1
            pairs[boolean] |= opened
    return {name: [len(pairs[name]), rules[name], len({s for s, _ in pairs[name]}), len({t for _, t in pairs[name]})]
            for name in booleans}


def _module(name: str, rules: list[list[Any]]) -> str:
    import io

    from sepolgen import access, output, policygen  # type: ignore[import-not-found]

    vectors = access.AccessVectorSet()
    for source, target, tclass, perms in rules:
        vectors.add(source, target, tclass, access.refpolicy.IdSet(perms))
    generator = policygen.PolicyGenerator()
    generator.set_gen_refpol(None)  # plain allow rules, never refpolicy interfaces
    generator.set_gen_requires(True)
    generator.set_module_name(name)
    generator.add_access(vectors)
    text = io.StringIO()
    output.ModuleWriter().write(generator.get_module(), text)
    return text.getvalue()


def _path_facts(result: dict[str, Any], paths: list[str], lookup: Any, audit2why: Any, *, scontext: str,
                known: set[str]) -> None:
    """Each file's label by the policy's file contexts and whether that one is allowed; the labels and
    standard directories on its way; what the policy labels the domain's own directory beside it."""
    tclass, perms = result["tclass"], result["perms"]
    for path in paths:
        expected = lookup(path)
        if expected is None:
            continue
        result["expected"][path] = expected
        allowed, _ = _verdict(audit2why, scontext, expected, tclass, perms)
        result["expected_allowed"][path] = allowed == "ALLOW"
        parts = path.rstrip("/").split("/")
        for depth in range(2, len(parts)):
            directory = "/".join(parts[:depth])
            found = lookup(directory)
            if found:
                result["labels"][directory] = _type(found)
            if directory in known:
                result["known"].append(directory)
        # (/var/lib/shorewall for /var/lib/shorewall6-lite/...): the type for the domain's data there
        standard = max(result["known"], key=len, default=None)
        if standard:
            sibling = lookup(f"{standard}/{_type(scontext).removesuffix('_t')}")
            if sibling:
                result["siblings"][path] = _type(sibling)


def _port_facts(result: dict[str, Any], ports: list[str], policy: Any, audit2why: Any, *, scontext: str, mls: bool) -> None:
    """What the policy labels each port now (its first portcon covering it, as the kernel looks it up)
    and whether that label is allowed: a port labelled since the records were made is fixed."""
    tclass, perms = result["tclass"], result["perms"]
    protocol = {"tcp_socket": "tcp", "udp_socket": "udp", "sctp_socket": "sctp", "dccp_socket": "dccp"}.get(tclass)
    for port in ports:
        label = _port_label(policy, protocol, int(port)) if protocol and str(port).isdigit() else None
        if label:
            result["port_labels"][str(port)] = label
            allowed, _ = _verdict(audit2why, scontext, f"system_u:object_r:{label}" + (":s0" if mls else ""), tclass, perms)
            result["port_allowed"][str(port)] = allowed == "ALLOW"


def answer(request: dict[str, Any]) -> dict[str, Any]:
    import selinux  # type: ignore[import-not-found]
    import setools  # type: ignore[import-not-found]
    from selinux import audit2why

    audit2why.init(request["policy"])  # without it sepolgen/audit2why call everything a missing rule
    policy = setools.SELinuxPolicy(request["policy"])
    mls = bool(policy.mls)
    labels = None
    if request.get("file_contexts"):
        option = selinux.selinux_opt()
        option.type, option.value = selinux.SELABEL_OPT_PATH, request["file_contexts"]
        labels = selinux.selabel_open(selinux.SELABEL_CTX_FILE, option, 1)

    def lookup(path: str) -> str | None:
        if labels is None:
            return None
        try:
            return str(selinux.selabel_lookup(labels, path, 0)[1])
        except OSError:
            return None

    contexts = request.get("file_contexts")
    known = _known_directories([contexts, contexts + ".local"]) if contexts else set()
    uses = _type_uses([contexts, contexts + ".local"]) if contexts else {}
    results = []
    for group in request["groups"]:
        scontext, added_s = _with_level(group["scontext"], mls)
        tcontext, added_t = _with_level(group["tcontext"], mls)
        tclass, perms = group["tclass"], list(group["perms"])
        verdict, booleans = _verdict(audit2why, scontext, tcontext, tclass, perms)
        result: dict[str, Any] = {"verdict": verdict, "booleans": booleans, "mls_added": added_s or added_t,
                                  "tclass": tclass, "perms": perms, "expected": {}, "expected_allowed": {},
                                  "labels": {}, "known": [], "siblings": {}, "port_labels": {}, "port_allowed": {},
                                  "candidates": [], "executables": [], "uses": {}, "breadth": {}}
        _path_facts(result, group.get("paths", []), lookup, audit2why, scontext=scontext, known=known)
        _port_facts(result, group.get("ports", []), policy, audit2why, scontext=scontext, mls=mls)
        if group.get("generic"):
            kind = "port_type" if tclass.endswith("_socket") and any(p.startswith("name_") for p in perms) else "file_type"
            result["candidates"], result["executables"] = _candidates(setools, policy, _type(scontext), tclass,
                                                                      set(perms), kind=kind)
            result["uses"] = {c: uses.get(c, 0) for c in result["candidates"]}
        results.append(result)
    breadth = _breadth(setools, policy, {name for result in results for name, _ in result["booleans"]})
    for result in results:
        result["breadth"] = {name: breadth[name] for name, _ in result["booleans"]}
    audit2why.finish()
    return {"groups": results, "modules": [_module(m["name"], m["rules"]) for m in request.get("modules", [])]}


if __name__ == "__main__":
    json.dump(answer(json.load(sys.stdin)), sys.stdout)
