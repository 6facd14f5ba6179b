"""Capture: the keywords the admin set in sshd's files under /etc/ssh (never sshd's defaults)."""

from __future__ import annotations

from typing import Any

from converge.provider import Captured, Facts
from converge.providers.sshd import parse
from converge.providers.sshd.parse import DROP_IN_GLOB, SSHD_CONFIG
from converge.providers.sshd.spec import KEYWORDS, canonical

# Keywords whose lines add up (every line counts), where the others take the first line's value.
ACCUMULATING = {"port", "allowusers", "denyusers", "allowgroups", "denygroups", "acceptenv"}


def capture(facts: Facts) -> Captured:
    sshd_config = facts.file(SSHD_CONFIG) or ""
    drop_ins = facts.glob(DROP_IN_GLOB) if parse.includes_drop_ins_first(sshd_config) or "include" in sshd_config.lower() else {}
    lines: dict[str, list[parse.Directive]] = {}
    notes = []
    for directive in parse.configuration(sshd_config, drop_ins):
        if directive.match is not None:
            if f"match {directive.match}" not in notes:
                notes.append(f"{directive.file} line {directive.line}: Match {directive.match}: Match blocks are not captured")
            continue
        lines.setdefault(directive.keyword, []).append(directive)
    table: dict[str, Any] = {}
    for keyword_lower, found in lines.items():
        keyword = canonical(keyword_lower)
        if keyword is None:
            continue  # a keyword the provider does not manage (HostKey, Subsystem, ...)
        kind = KEYWORDS[keyword][0]
        used = found if keyword_lower in ACCUMULATING else found[:1]
        try:
            table[keyword] = kind.check(kind.effective([d.value for d in used]))
        except ValueError as error:
            notes.append(f"{used[0].file} line {used[0].line}: {keyword} {used[0].value!r} not captured: {error}")
    return Captured(dict(sorted(table.items())), notes)
