"""What `converge capture` writes for `[fail2ban]`: converge's jail file back into a table.

Pure functions of what the provider read and of `live()`: each option as the baseline writes it,
options the baseline cannot say left out with a note, other jail files named, never copied.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from converge.provider import Captured, Change, ProviderError
from converge.providers.fail2ban.parse import parse_jail_file
from converge.providers.fail2ban.spec import JAIL_FILE, JailOptions, jail_name

_BOOLEAN_OPTIONS = {"enabled", "bantime.increment", "bantime.overalljails", "ignoreself"}
# Options whose baseline value may be a whole number (times in seconds, ports, counts).
_NUMBER_OPTIONS = {"maxretry", "maxmatches", "maxlines", "bantime.factor", "findtime", "bantime",
                   "bantime.maxtime", "bantime.rndtime", "port"}
_LINE_LIST_OPTIONS = {"logpath", "action"}  # written one item a line
_WORD_LIST_OPTIONS = {"ignoreip", "journalmatch"}  # written space-separated


def baseline_value(option: str, text: str) -> Any:
    """The value a baseline gives `option` for the file to say `option = text` (JailOptions.section reversed)."""
    if option in _BOOLEAN_OPTIONS and text in {"true", "false"}:
        return text == "true"
    if option in _NUMBER_OPTIONS and re.fullmatch(r"-?[0-9]{1,10}", text):
        return int(text)
    if option == "bantime.multipliers" and re.fullmatch(r"[0-9]{1,7}(?: [0-9]{1,7})*", text):
        return [int(item) for item in text.split()]
    if option in _LINE_LIST_OPTIONS:
        return text.split("\n")
    if option in _WORD_LIST_OPTIONS:
        return text.split()
    return text


def captured_options(section: str, options: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """A file section as baseline options; options the baseline cannot say are left out, with a note."""
    values = {option: baseline_value(option, text) for option, text in options.items()}
    notes = []
    try:
        JailOptions.model_validate(values)
    except ValidationError as error:
        for problem in error.errors():
            option = str(problem["loc"][0])
            if values.pop(option, None) is not None:
                reason = "converge does not manage this option" if problem["type"] == "extra_forbidden" else problem["msg"]
                notes.append(f"[{section}] {option} = {options[option]!r} in {JAIL_FILE}: not captured: {reason}")
    return values, notes


def captured_table(sections: dict[str, dict[str, str]], server_running: bool) -> tuple[dict[str, Any], list[str]]:
    """The baseline table declaring JAIL_FILE's sections, and the server running if it runs now."""
    table: dict[str, Any] = {"start_server": True} if server_running else {}
    notes = []
    for section, options in sections.items():
        values, section_notes = captured_options(section, options)
        notes += section_notes
        if section == "DEFAULT":
            table["defaults"] = values
            continue
        try:
            jail_name(section)
        except ValueError as error:
            notes.append(f"[{section}] in {JAIL_FILE}: not captured: {error}")
            continue
        table.setdefault("jails", {})[section] = values
    return table, notes


def capture_table(text: str | None, server_running: bool) -> tuple[dict[str, Any], list[str]]:
    """The table of converge's jail file as read (`text`), with notes."""
    try:
        sections = parse_jail_file(text, JAIL_FILE) if text is not None else {}
    except ProviderError as error:
        return {}, [f"{error}: its jails are not captured"]
    return captured_table(sections, server_running)


def captured(table: dict[str, Any], notes: list[str], running: bool, others: dict[str, str | None],
             still: Sequence[Change]) -> Captured:
    """The captured table and every note: a stopped server, other jail files, what plan would still do."""
    notes = list(notes)
    if not running:
        notes.append("fail2ban-server is not running: start_server is left false")
    for path, content in sorted(others.items()):
        if path == JAIL_FILE:
            continue
        try:
            sections = [name for name in parse_jail_file(content or "", path) if name != "INCLUDES"]
        except ProviderError as error:
            notes.append(f"{error}: not captured")
            continue
        if sections:
            notes.append(f"{path} declares [{'], ['.join(sections)}]: not captured, converge manages only "
                         f"{JAIL_FILE}; that file keeps applying as it is")
    for change in still:
        why = "; ".join([*change.notes, *(change.detail or "").splitlines()]) or f"{change.before} -> {change.after}"
        notes.append(f"plan will still {change.action} {change.resource}: {why}")
    return Captured(table, notes)
