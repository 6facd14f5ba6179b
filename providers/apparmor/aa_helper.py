"""Questions to one host's AppArmor policy, answered by AppArmor's own Python library.

Run as a separate process with Debian's python3 (`/usr/bin/python3 -I aa_helper.py`): the library
is a Debian package only (python3-apparmor, python3-libapparmor; GPL-2), and `apparmor.aa` keeps
global state, so one process per host. It imports nothing of converge. JSON in on stdin, JSON out:

in:  {"profile_dir": DIR,            # a copy of the host's /etc/apparmor.d, the baseline's profiles in it
      "records": [LINE, ...],        # one record each, in the form libapparmor parses
      "sensitive_paths": [PATTERN], "sensitive_exec_paths": [PATTERN], "sensitive_capabilities": [NAME]}
out: {"records": [{"parsed": bool, "profile": NAME, "aamode": "PERMITTING"|"REJECTING", "rules": N}],
      "groups": [{"profile", "hat", "type", "rule", "records": [index], "aamodes": [...],
                  "allowed": RULE|null, "intended": RULE|null, "missing": RULE|null,
                  "severity": N|"unknown"|null, "includes": [NAME], "globs": [RULE],
                  "exec": {"choices", "mode", "target_profile"}|null, "sensitive": REASON|null,
                  "never": bool,             # sensitive and never offered (an exec from a world-writable dir)
                  "unknown_profile": bool}]}

Every verdict is the library's: libapparmor parses the record, `ReadLog` and `collapse_log` turn
records into rule objects (`FileRule`, `CapabilityRule`, `NetworkRule`, ...), their `is_covered`
says what the profile and its includes already allow or `deny`, `match_includes` which abstractions
would allow it, `propose_file_rules` the globs, `Severity` the rank, and logprof.conf's
`[qualifiers]` with aa-logprof's default order the exec mode. One gap of the 3.0 library is filled
here: `is_covered` compares paths with their variables unexpanded (`@{etc_ro}/ld.so.cache` does
not cover `/etc/ld.so.cache`), so rules with variables are also checked once per expansion, with
the values `ProfileList.get_all_merged_variables` gives.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
from typing import Any

RULE_TYPES = ("file", "capability", "network", "signal", "ptrace", "dbus", "change_profile")
MAX_EXPANSIONS = 512
_VARIABLE = re.compile(r"@\{(\w+)\}")


def _expansions(path: str, variables: dict[str, set[str]], depth: int = 0) -> list[str]:
    """Every path a rule with variables stands for (the parser collapses the `//` values leave)."""
    match = _VARIABLE.search(path)
    if not match or depth > 8:
        return [re.sub("/{2,}", "/", path)]
    values = sorted(variables.get(match.group(0), set()))
    if not values:
        return [path]  # an undefined variable: left as it is, so coverage stays the library's own
    out: list[str] = []
    for value in values:
        out += _expansions(path[:match.start()] + value + path[match.end():], variables, depth + 1)
        if len(out) > MAX_EXPANSIONS:
            break
    return out


class Policy:
    """The library's view of one profile file in a copy of the host's /etc/apparmor.d."""

    def __init__(self, aa: Any, profile_dir: str) -> None:
        self.aa = aa
        self.profile_dir = profile_dir
        self._expanded: dict[tuple[int, ...], list[Any]] = {}

    def storage(self, profile: str, hat: str) -> Any:
        return self.aa.aa[profile][hat] if self.aa.aa.get(profile) and self.aa.aa[profile].get(hat) else None

    def variables(self, profile: str) -> dict[str, set[str]]:
        filename = self.aa.get_profile_filename_from_profile_name(profile)
        if not filename or not self.aa.active_profiles.files.get(filename):
            return {}
        includes = self.aa.include_list_recursive(self.aa.active_profiles.files[filename])
        merged: dict[str, set[str]] = self.aa.active_profiles.get_all_merged_variables(filename, includes)
        return merged

    def rulesets(self, storage: Any, rule_type: str) -> list[Any]:
        """The profile's own rules of this type and those of every file it includes."""
        sets = [storage[rule_type]] if storage.get(rule_type, False) else []
        for incname in self.aa.include_list_recursive(storage):
            sets.append(self.aa.include[incname][incname][rule_type])
        return sets

    def expanded_rules(self, rulesets: list[Any], variables: dict[str, set[str]]) -> list[Any]:
        """File rules whose path holds variables, once per expansion (see the module's docstring)."""
        cache_key = tuple(id(ruleset) for ruleset in rulesets)
        if cache_key in self._expanded:
            return self._expanded[cache_key]
        from apparmor.aare import AARE  # type: ignore[import-not-found]

        found = []
        for ruleset in rulesets:
            for rule in ruleset.rules:
                if getattr(rule, "all_paths", True) or "@{" not in rule.path.regex:
                    continue
                for path in _expansions(rule.path.regex, variables):
                    if "@{" in path:
                        continue
                    clone = copy.deepcopy(rule)
                    clone.path = AARE(path, True)
                    found.append(clone)
        self._expanded[cache_key] = found
        return found

    def covered(self, storage: Any, rule_type: str, rule: Any, variables: dict[str, set[str]], *, deny: bool) -> bool:
        """Whether the profile (with its includes) allows, or with deny=True denies, all of `rule`."""
        probe = copy.deepcopy(rule)
        probe.deny = deny
        probe.raw_rule = None
        rulesets = self.rulesets(storage, rule_type)
        for ruleset in rulesets:
            if ruleset.is_covered(probe, True):
                return True
        if rule_type != "file":
            return False
        return any(each.is_covered(probe, True) for each in self.expanded_rules(rulesets, variables))


def _file_rule_with(rule: Any, perms: set[str]) -> Any:
    from apparmor.rule.file import FileRule  # type: ignore[import-not-found]

    return FileRule(rule.path.orig_regex or rule.path.regex, perms or None, None, FileRule.ALL, owner=rule.owner,
                    log_event=True)


def _split_file(policy: Policy, storage: Any, rule: Any, variables: dict[str, set[str]]) -> dict[str, Any]:
    """A logged file access split by permission: what the profile allows, denies, and lacks."""
    parts: dict[str, set[str]] = {"allowed": set(), "intended": set(), "missing": set()}
    for perm in sorted(rule.perms):
        single = _file_rule_with(rule, {perm})
        if policy.covered(storage, "file", single, variables, deny=True):
            parts["intended"].add(perm)
        elif policy.covered(storage, "file", single, variables, deny=False):
            parts["allowed"].add(perm)
        else:
            parts["missing"].add(perm)
    return {name: (_file_rule_with(rule, perms) if perms else None) for name, perms in parts.items()}


def _classify(policy: Policy, storage: Any, rule_type: str, rule: Any, variables: dict[str, set[str]]) -> dict[str, Any]:
    if rule_type == "file" and not rule.all_paths and rule.perms:
        return _split_file(policy, storage, rule, variables)
    if policy.covered(storage, rule_type, rule, variables, deny=True):
        return {"allowed": None, "intended": rule, "missing": None}
    if policy.covered(storage, rule_type, rule, variables, deny=False):
        return {"allowed": rule, "intended": None, "missing": None}
    return {"allowed": None, "intended": None, "missing": rule}


def _includes(policy: Policy, storage: Any, rule_type: str, rule: Any, variables: dict[str, set[str]]) -> list[str]:
    """Abstractions that would allow the rule (match_includes, plus the variable expansion)."""
    from apparmor.rule.include import IncludeRule  # type: ignore[import-not-found]

    found = set(policy.aa.match_includes(storage, rule_type, rule))
    for incname, data in policy.aa.include.items():
        relative = incname.replace(policy.profile_dir + "/", "")
        if relative.startswith(("/", "local/", "tunables/")) or data[incname]["logprof_suggest"] == "no":
            continue
        if storage["inc_ie"].is_covered(IncludeRule(relative, False, True)):
            continue
        ruleset = data[incname][rule_type]
        if rule_type == "file" and any(
                each.is_covered(rule, True) for each in policy.expanded_rules([ruleset], variables)):
            found.add(relative)
    return sorted(found)


def _exec_choice(aa: Any, target: str) -> dict[str, Any]:
    """aa-logprof's default for an exec: Px when the target has a profile and `p` is allowed, else
    ix, from logprof.conf's [qualifiers] (default `ipcnu`); `ux` is never taken."""
    choices = aa.cfg["qualifiers"].get(target, "ipcnu")
    target_file = aa.get_profile_filename_from_attachment(target, True)
    has_profile = bool(target_file) and os.path.exists(target_file)
    if "p" in choices and has_profile:
        mode = "Px"  # aa-logprof's px, with its default answer to "sanitise the environment?": yes
    elif "i" in choices:
        mode = "ix"
    else:
        mode = None
    return {"choices": choices, "mode": mode, "target_profile": os.path.basename(target_file) if has_profile else None}


def _exec_rule(target: str, mode: str) -> Any:
    from apparmor.rule.file import FileRule

    file_perms = "mr" if "i" in mode else None  # aa-logprof: "For inherit we need mr"
    return FileRule(target, file_perms, mode, FileRule.ALL, owner=False, log_event=True)


def _severity(aa: Any, sev_db: Any, profile: str, policy: Policy, rule: Any) -> Any:
    sev_db.set_variables(policy.variables(profile))
    value = rule.severity(sev_db)
    return None if value == sev_db.NOT_IMPLEMENTED else value


def _sensitive(rule_type: str, rule: Any, patterns: list[str], capabilities: list[str]) -> str | None:
    """Whether the rule grants a sensitive path (an AppArmor pattern of `patterns` matches the
    logged path the rule names) or capability."""
    if rule_type == "file" and not rule.all_paths:
        from apparmor.aare import AARE

        path = rule.path.orig_regex or rule.path.regex
        hits = [pattern for pattern in patterns if AARE(pattern, True).match(path)]
        return f"sensitive path {path} ({hits[0]})" if hits else None
    if rule_type == "capability":
        names = sorted(set(getattr(rule, "capability", set())) & set(capabilities))
        return "capability " + " ".join(names) if names else None
    return None


def _parse(aa: Any, lines: list[str]) -> tuple[list[dict[str, Any]], list[list[tuple[str, str, str, Any]]]]:
    """Each record through libapparmor and the library's log tree: its event and its rule objects."""
    from apparmor.common import hasher  # type: ignore[import-not-found]
    from apparmor.logparser import ReadLog  # type: ignore[import-not-found]

    events: list[dict[str, Any]] = []
    rules: list[list[tuple[str, str, str, Any]]] = []
    for line in lines:
        reader = ReadLog("", aa.active_profiles, aa.profile_dir)
        event = reader.parse_event(line)
        if not event:
            events.append({"parsed": False})
            rules.append([])
            continue
        events.append({"parsed": True, "profile": event.get("profile"), "aamode": event.get("aamode"),
                       "operation": event.get("operation"), "name": event.get("name")})
        found: list[tuple[str, str, str, Any]] = []
        if event.get("operation") == "exec" and event.get("profile"):
            from apparmor.common import split_name

            profile, hat = split_name(event["profile"])
            if event.get("name") and aa.active_profiles.filename_from_profile_name(profile):
                found.append((profile, hat, "exec", event["name"]))
        else:
            reader.parse_event_for_tree(event)
            saved, aa.aa = aa.aa, hasher()  # no profile known: collapse_log keeps every rule
            try:
                log = aa.collapse_log(reader.hashlog)
            finally:
                aa.aa = saved
            for aamode in log:
                for profile in log[aamode]:
                    for hat in log[aamode][profile]:
                        for rule_type in RULE_TYPES:
                            found += [(profile, hat, rule_type, rule) for rule in log[aamode][profile][hat][rule_type].rules]
        events[-1]["rules"] = len(found)
        rules.append(found)
    return events, rules


def _group_key(profile: str, hat: str, rule_type: str, rule: Any) -> tuple[str, ...]:
    if rule_type == "exec":
        return profile, hat, "exec", rule
    if rule_type == "file" and not rule.all_paths:
        return profile, hat, "file", rule.path.regex, str(rule.owner)
    return profile, hat, rule_type, rule.get_clean()


def _load(aa: Any, profile_dir: str, ours: set[str]) -> list[str]:
    """loadincludes and read_profiles, file by file: a host file the 3.0 parser cannot read (newer
    syntax) is skipped and named; one of the baseline's own profiles is an error."""
    from apparmor.common import AppArmorException, is_skippable_file

    skipped = []
    for directory, _, files in sorted(os.walk(profile_dir)):
        if directory == profile_dir or aa.is_skippable_dir(directory):
            continue
        for name in sorted(files):
            if is_skippable_file(name):
                continue
            path = os.path.join(directory, name)
            try:
                aa.load_include(path)
            except (AppArmorException, OSError) as error:
                skipped.append(f"{os.path.relpath(path, profile_dir)}: {error}")
    for name in sorted(os.listdir(profile_dir)):
        path = os.path.join(profile_dir, name)
        if not os.path.isfile(path) or is_skippable_file(name):
            continue
        try:
            aa.read_profile(path, True)
        except AppArmorException as error:
            if name in ours:
                raise
            skipped.append(f"{name}: {error}")
    return skipped


def answer(request: dict[str, Any]) -> dict[str, Any]:  # noqa: PLR0915 - one pass over the groups
    from apparmor import aa  # type: ignore[import-not-found]
    from apparmor.severity import Severity  # type: ignore[import-not-found]

    profile_dir = os.path.abspath(request["profile_dir"])
    aa.init_aa(profiledir=profile_dir)
    skipped = _load(aa, profile_dir, set(request.get("profiles", [])))
    policy = Policy(aa, profile_dir)
    sev_db = Severity(os.path.join(aa.CONFDIR, "severity.db"), "unknown")
    events, per_record = _parse(aa, request["records"])

    grouped: dict[tuple[str, ...], dict[str, Any]] = {}
    for index, found in enumerate(per_record):
        for profile, hat, rule_type, rule in found:
            key = _group_key(profile, hat, rule_type, rule)
            group = grouped.setdefault(key, {"profile": profile, "hat": hat, "type": rule_type, "rules": [],
                                             "records": []})
            group["rules"].append(rule)
            if index not in group["records"]:
                group["records"].append(index)

    out = []
    for group in grouped.values():
        profile, hat, rule_type = group["profile"], group["hat"], group["type"]
        aamodes = sorted({events[i]["aamode"] for i in group["records"]})
        result: dict[str, Any] = {"profile": profile, "hat": hat, "type": rule_type, "records": group["records"],
                                  "aamodes": aamodes, "allowed": None, "intended": None, "missing": None,
                                  "severity": None, "includes": [], "globs": [], "exec": None, "sensitive": None,
                                  "never": False, "unknown_profile": False, "rule": None}
        filename = aa.get_profile_filename_from_profile_name(profile)
        result["file"] = os.path.basename(filename) if filename else None
        storage = policy.storage(profile, hat)
        if storage is None:
            result["unknown_profile"] = True
            out.append(result)
            continue
        variables = policy.variables(profile)
        if rule_type == "exec":
            target = group["rules"][0]
            from apparmor.rule.file import FileRule

            probe = FileRule(target, None, FileRule.ANY_EXEC, FileRule.ALL, owner=False, log_event=True)
            result["rule"] = f"{target} x"
            result["exec"] = _exec_choice(aa, target)
            sev_db.set_variables(variables)
            result["severity"] = sev_db.rank_path(target, "x")
            deny = FileRule(target, None, "x", FileRule.ALL, owner=False, log_event=True, deny=True)
            if policy.covered(storage, "file", deny, variables, deny=True):
                result["intended"] = deny.get_clean()
            elif policy.covered(storage, "file", probe, variables, deny=False):
                result["allowed"] = result["rule"]
            elif result["exec"]["mode"]:
                proposal = _exec_rule(target, result["exec"]["mode"])
                result["missing"] = proposal.get_clean()
                # a program anyone may have written: never offered, even with --allow-sensitive
                result["sensitive"] = _sensitive("file", proposal, request.get("sensitive_exec_paths", []), [])
                result["never"] = result["sensitive"] is not None
                result["sensitive"] = result["sensitive"] or _sensitive("file", proposal,
                                                                        request.get("sensitive_paths", []), [])
            out.append(result)
            continue
        rule = group["rules"][0]
        if rule_type == "file" and not rule.all_paths:
            merged = set().union(*(r.perms for r in group["rules"]))
            if "a" in merged and "w" in merged:
                merged.discard("a")  # as collapse_log: a is part of w
            rule = _file_rule_with(rule, merged)
        result["rule"] = rule.get_clean()
        parts = _classify(policy, storage, rule_type, rule, variables)
        for name, part in parts.items():
            result[name] = part.get_clean() if part is not None else None
        missing = parts["missing"]
        if missing is not None:
            result["severity"] = _severity(aa, sev_db, profile, policy, missing)
            result["includes"] = _includes(policy, storage, rule_type, missing, variables)
            if rule_type == "file" and not missing.all_paths:
                options = aa.propose_file_rules(storage, copy.deepcopy(missing))
                result["globs"] = [option for option in options if option != missing.get_clean()]
            result["sensitive"] = _sensitive(rule_type, missing, request.get("sensitive_paths", []),
                                             request.get("sensitive_capabilities", []))
        out.append(result)
    return {"records": events, "groups": out, "skipped": skipped}


if __name__ == "__main__":
    json.dump(answer(json.load(sys.stdin)), sys.stdout)
    sys.stdout.write("\n")
