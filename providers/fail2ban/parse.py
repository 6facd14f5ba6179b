"""Pure readers of fail2ban's files and of what fail2ban-client prints (1.0.2)."""

from __future__ import annotations

import configparser
import ipaddress
import re

from converge.provider import CommandResult, ParseError
from converge.providers.fail2ban.spec import time_to_seconds

# Options `fail2ban-client get JAIL OPTION` answers in a form comparable with the baseline.
LIVE_OPTIONS = ("maxretry", "maxmatches", "maxlines", "findtime", "bantime", "usedns", "ignoreself", "logpath", "ignoreip")


def parse_jail_file(text: str, where: str = "jail file") -> dict[str, dict[str, str]]:
    """Sections and options of a jail file, values as fail2ban reads them; ParseError if unreadable."""
    # No section is special here: [DEFAULT] is one of the sections converge writes. fail2ban's
    # parser ends a value at ` ;` (`bantime = 604800  ; 1 week`, its own jail.conf once), not at `#`.
    parser = configparser.RawConfigParser(interpolation=None, default_section="\0", strict=True,
                                          inline_comment_prefixes=(";",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.Error as error:
        line_number = getattr(error, "lineno", None)
        lines = text.splitlines()
        line = lines[line_number - 1] if isinstance(line_number, int) and 0 < line_number <= len(lines) else None
        raise ParseError(where, str(error).splitlines()[0], line) from None
    return {section: dict(parser.items(section)) for section in parser.sections()}


# Options fail2ban splits into words (splitwords: commas, spaces and newlines separate them), and
# options it reads one item a line (logpath, action: blank lines and indentation mean nothing).
_WORD_OPTIONS = {"ignoreip", "journalmatch", "bantime.multipliers"}
_LINE_OPTIONS = {"logpath", "action"}


def as_read(sections: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Each value as fail2ban reads it, in the form converge writes it: a file laid out
    differently (ignoreip over several lines, indented actions) that fail2ban reads the same
    compares equal."""
    def value(option: str, text: str) -> str:
        if option in _WORD_OPTIONS:
            return " ".join(text.replace(",", " ").split()) if option == "ignoreip" else " ".join(text.split())
        if option in _LINE_OPTIONS:
            return "\n".join(line.strip() for line in text.splitlines() if line.strip())
        return text.strip()
    return {section: {option: value(option, text) for option, text in options.items()} for section, options in sections.items()}


def comments(text: str) -> list[str]:
    """The comment lines of a jail file, as written (what a reader, not fail2ban, sees)."""
    return [line.strip() for line in text.splitlines() if line.strip()[:1] in ("#", ";")]


def parse_jail_list(status_output: str) -> list[str]:
    """Jail names from `fail2ban-client status`."""
    for line in status_output.splitlines():
        if "Jail list:" in line:
            names = line.split("Jail list:", 1)[1]
            return [name.strip() for name in names.split(",") if name.strip()]
    raise ParseError("fail2ban-client status", "no jail list in its output")


def parse_live_option(option: str, output: str) -> str | frozenset[str]:
    """The value `fail2ban-client get JAIL OPTION` printed: lists (logpath, ignoreip) as sets."""
    if option in {"logpath", "ignoreip"}:
        return frozenset(line[3:].strip() for line in output.splitlines() if line.startswith(("|- ", "`- ")))
    return output.strip()


def expected_live_value(option: str, value: str, backend: str | None) -> str | frozenset[str] | None:
    """What `get` prints when the server runs `option = value`; None when it cannot be told."""
    if option in {"findtime", "bantime"}:
        return str(time_to_seconds(value))
    if option == "ignoreself":
        return "True" if value == "true" else "False"
    if option == "logpath":
        paths = value.split("\n")
        if backend == "systemd" or any(set(path) & set("*?%") for path in paths):
            return None  # the journal, globs and references are resolved by fail2ban
        return frozenset(paths)
    if option == "ignoreip":
        try:
            networks = [ipaddress.ip_network(item, strict=False) for item in value.split()]
        except ValueError:
            return None  # host names are resolved by fail2ban
        # fail2ban prints networks with their host bits cleared, and single addresses bare.
        return frozenset(str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net) for net in networks)
    return value


def fail2ban_errors(result: CommandResult) -> str:
    """fail2ban's own error messages from its log lines, joined on one line."""
    messages = []
    for line in (result.stderr + "\n" + result.stdout).splitlines():
        match = re.search(r"\bERROR\s+(.*)", line)
        if match and "test configuration failed" not in match[1]:
            # The server's refusals arrive as a Python tuple: NOK: ('Failed to change log target',)
            messages.append(re.sub(r"^NOK: \(['\"](.*)['\"],\)$", r"\1", match[1].strip()).rstrip("."))
    return "; ".join(dict.fromkeys(messages)) or result.failure()


def typed(value: str) -> bool | int | str:
    if value in {"true", "false"}:
        return value == "true"
    return int(value) if re.fullmatch(r"-?[0-9]+", value) else value


def displayed(section: dict[str, str] | None) -> dict[str, bool | int | str] | None:
    """A section's options as a baseline writes them (booleans and whole numbers typed), for plans."""
    return None if section is None else {option: typed(value) for option, value in section.items()}


def enabled_jails(files: list[tuple[str, str | None]]) -> list[str]:
    """The jails `files` enable, read in fail2ban's order (the caller's): a section's own `enabled`
    wins over [DEFAULT]'s, a later file's over an earlier one's, as fail2ban merges them. Files
    that cannot be parsed are left out (fail2ban-client -t names them)."""
    default = False
    own: dict[str, bool | None] = {}  # None: the section sets no `enabled` of its own
    for path, text in files:
        try:
            sections = parse_jail_file(text or "", path)
        except ParseError:
            continue
        for section, options in sections.items():
            if section in ("DEFAULT", "INCLUDES") and "enabled" not in options:
                continue
            if "enabled" not in options:
                own.setdefault(section, None)
            else:
                value = options["enabled"].strip().lower() in ("true", "yes", "on", "1")
                if section == "DEFAULT":
                    default = value
                elif section != "INCLUDES":
                    own[section] = value
    return sorted(name for name, value in own.items() if (default if value is None else value))
