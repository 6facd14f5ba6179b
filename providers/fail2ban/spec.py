"""The `[fail2ban]` table: `defaults`, `jails.NAME`, and whether converge starts a stopped server.

Each validator returns the text written after `option = ` in converge's jail file.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import Field, PlainValidator

from converge.provider import StrictModel, choice, listed, matching

CONFIG_DIR = "/etc/fail2ban"
# Read after jail.conf, jail.d/*.conf and jail.local: the baseline wins over the stock files.
JAIL_FILE = f"{CONFIG_DIR}/jail.d/converge.local"
MAX_COUNT = 1_000_000

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_INTERPOLATION = r"%\([a-z_]+\)s"  # a reference to another option, as fail2ban's own files use
# Action parameters are substituted unescaped into the action's shell commands, run as root
# (security review, issue 23 finding 3): only the parameters fail2ban's stock actions take as
# plain words, each a word without spaces or `/`. Anything else belongs in an action.d file.
ACTION_PARAMETERS = (
    "name", "port", "protocol", "chain", "blocktype", "returntype", "bantime", "actname", "type", "table",
    "table_family", "chain_hook", "chain_priority", "addr_type", "dest", "sender", "sendername", "mta",
)
_PARAM_WORD = rf"(?:[A-Za-z0-9_.:,@+-]|{_INTERPOLATION})+"
_PARAM_VALUE = re.compile(rf'{_PARAM_WORD}|"{_PARAM_WORD}"')
_ACTION_NAME = re.compile(rf"{_NAME}|{_INTERPOLATION}")
_ACTION_SHAPE = re.compile(r"(?P<name>[^\[\]]+)(?:\[(?P<params>.*)\])?", re.DOTALL)
# Filter options (filter.d [Init] values, substituted into the filter's regular expressions, not
# into shell commands): plain words or %(name)s references, or a quoted phrase, as jail.conf's own
# `%(__name__)s[mode=%(mode)s]`, `recidive[_jailname="recidivist"]` and
# `apache-pass[knocking_url="%(knocking_url)s"]` say.
_FILTER_WORD = rf"(?:[A-Za-z0-9_.-]|{_INTERPOLATION})+"
_FILTER_PHRASE = rf"(?:[A-Za-z0-9_. -]|{_INTERPOLATION})*"
_FILTER_OPTION = rf"""[A-Za-z_][A-Za-z0-9_]*=(?:{_FILTER_WORD}|"{_FILTER_PHRASE}"|'{_FILTER_PHRASE}')"""
_FILTER = re.compile(rf"(?:{_NAME}|{_INTERPOLATION})(?:\[{_FILTER_OPTION}(?:, ?{_FILTER_OPTION})*\])?")
_PORT_ITEM = re.compile(r"[a-z][a-z0-9-]{0,31}|[0-9]{1,5}(?::[0-9]{1,5})?|%\([a-z_]+\)s")
# Absolute, no `..` component: a log path must not walk out of the directory it names.
_LOG_PATH = re.compile(rf"(?:/(?!\.\.(?:/|$))[A-Za-z0-9_.*?@+-]+)+|{_INTERPOLATION}")
_JOURNAL_MATCH = re.compile(r"\+|[A-Z_][A-Z0-9_]*=[A-Za-z0-9_.@:-]+")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
_EMAIL = re.compile(r"[A-Za-z0-9._+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
# fail2ban's own time abbreviations (MyTime.str2seconds), months and years left out: not whole seconds.
TIME_UNITS = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}
_TIME_PART = re.compile(r"([0-9]{1,9}) ?(" + "|".join(sorted(TIME_UNITS, key=len, reverse=True)) + r")?(?![a-z])")
_TIME = re.compile(rf"{_TIME_PART.pattern}(?: ?{_TIME_PART.pattern})*")

def time_to_seconds(value: str) -> int:
    """Seconds of a validated time value ("600", "1h 30m", "-1"), as fail2ban computes them."""
    if re.fullmatch(r"-?[0-9]+", value):
        return int(value)
    return sum(int(number) * TIME_UNITS[unit or "s"] for number, unit in _TIME_PART.findall(value))


def _time(value: Any, *, permanent_allowed: bool = False) -> str:
    if isinstance(value, bool):
        raise ValueError("a time is a number of seconds or a string such as \"10m\" or \"1h 30m\"")
    if isinstance(value, int):
        if value == -1 and permanent_allowed:
            return "-1"
        if not 1 <= value <= 10**9:
            raise ValueError("a time is 1 to 1000000000 seconds" + (" (or -1: for ever)" if permanent_allowed else ""))
        return str(value)
    if isinstance(value, dict):
        raise ValueError("a time, not a table (quote dotted options: \"bantime.increment\" = true)")
    text = " ".join(str(value).split()) if isinstance(value, str) else ""
    if not isinstance(value, str) or not _TIME.fullmatch(text) or time_to_seconds(text) < 1:
        raise ValueError("not a time: expected seconds, or numbers with the units s, m, h, d or w such as \"10m\" or \"1h 30m\"")
    return text




_ASSIGNMENT = re.compile(r'\s*(?P<parameter>[^=,]*)(?:=(?P<value>"[^"]*"|[^,"]*))?\s*(?:,|$)')


def _assignments(params: str) -> list[tuple[str, str]]:
    """`param=value, param="a,b"` as (param, value) pairs; a part without `=` has the value ""."""
    found: list[tuple[str, str]] = []
    position = 0
    while position < len(params):
        match = _ASSIGNMENT.match(params, position)
        if not match or match.end() == position:
            return [*found, (params[position:].strip(), "")]
        found.append((match["parameter"].strip(), match["value"] if match["value"] is not None else ""))
        position = match.end()
    return found


def check_action(item: str) -> str | None:
    """Why one `action` item is refused, or None: name[param=value, ...] with known parameters only."""
    shape = _ACTION_SHAPE.fullmatch(item)
    if not shape or not _ACTION_NAME.fullmatch(shape["name"]):
        return f"expected actions: name or name[param=value, ...], not {item!r}"
    for parameter, value in _assignments(shape["params"]) if shape["params"] is not None else ():
        if parameter not in ACTION_PARAMETERS:
            return (f"action parameter {parameter!r} is not allowed: fail2ban puts parameters unescaped into root shell "
                    f"commands; allowed: {', '.join(ACTION_PARAMETERS)} (write anything else in an action.d file)")
        if not _PARAM_VALUE.fullmatch(value):
            return (f"action parameter {parameter}={value} is refused: a parameter value is one word without spaces "
                    "or / (fail2ban puts it unescaped into root shell commands, security review finding 3; "
                    "write such values in an action.d file)")
    return None


def _actions(value: Any) -> str:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, str) for item in items):
        raise ValueError("expected actions (one string, or an array of them)")
    for item in items:
        problem = check_action(item)
        if problem:
            raise ValueError(problem)
    return "\n".join(items)

def _port(value: Any) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    items = text.split(",") if isinstance(text, str) else None
    if not items or not all(_PORT_ITEM.fullmatch(item.strip()) for item in items):
        raise ValueError("not a port: expected a number, a range 1000:2000, a service name, or several joined by commas")
    for item in items:
        numbers = item.strip().split(":")
        for number in numbers:
            # 0 only as the start of a range: jail.conf's own all-ports value is 0:65535.
            low = 0 if len(numbers) == 2 and number == numbers[0] else 1
            if number.isdigit() and not low <= int(number) <= 65535:
                raise ValueError(f"port {number} out of range (1 to 65535, or 0:N for a range)")
    return ",".join(item.strip() for item in items)


def _ignore_address(value: Any) -> str:
    items = value.split() if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError("expected addresses, networks or host names (an array, or one string)")
    for item in items:
        if not isinstance(item, str):
            raise ValueError("expected addresses, networks or host names as strings")
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            if not _HOSTNAME.fullmatch(item):
                raise ValueError(f"not an address, a network or a host name: {item!r}") from None
    return " ".join(items)


def _ban_action(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected an action.d name, optionally with parameters: nftables[blocktype=reject]")
    problem = check_action(value)
    if problem:
        raise ValueError(problem)
    return value


def _formula(value: Any) -> str:
    raise ValueError("bantime.formula is refused: it is a Python expression fail2ban evaluates (as root, with eval); "
                     "say the increment with bantime.factor, bantime.multipliers and bantime.maxtime instead")


def _multipliers(value: Any) -> str:
    if not isinstance(value, list) or not value or not all(type(item) is int and 1 <= item <= MAX_COUNT for item in value):
        raise ValueError("expected an array of whole numbers, such as [1, 2, 4, 8]")
    return " ".join(str(item) for item in value)


Count = Annotated[int, Field(ge=1, le=MAX_COUNT)]
Time = Annotated[str, PlainValidator(_time)]
BanTime = Annotated[str, PlainValidator(lambda value: _time(value, permanent_allowed=True))]
Actions = Annotated[str, PlainValidator(_actions)]
Name = Annotated[str, matching(re.compile(_NAME), "a name: letters, digits and _ . - (such as iptables-multiport)")]
Port = Annotated[str, PlainValidator(_port)]
Protocol = Annotated[str, choice("tcp", "udp", "sctp", "dccp", "all")]
Filter = Annotated[str, matching(_FILTER, "a filter name, optionally with options: sshd[mode=aggressive]")]
LogPaths = Annotated[str, listed(_LOG_PATH, "absolute log file paths (globs allowed) or %(name)s", "\n")]
Encoding = Annotated[str, matching(re.compile(r"auto|[A-Za-z0-9][A-Za-z0-9_.-]{0,31}"), "an encoding")]
_BACKENDS = ("auto", "pyinotify", "polling", "systemd", "gamin")


def _backend(value: Any) -> str:
    # A backend may take options (systemd[journalflags=1]); a reference such as jail.conf's
    # %(sshd_backend)s names a [DEFAULT] option fail2ban resolves.
    if isinstance(value, str) and (re.fullmatch(_INTERPOLATION, value) or re.fullmatch(
            rf"(?:{'|'.join(_BACKENDS)})(?:\[[a-z_]+=[A-Za-z0-9_.-]+(?:, ?[a-z_]+=[A-Za-z0-9_.-]+)*\])?", value)):
        return value
    raise ValueError(f"expected one of {', '.join(_BACKENDS)} (optionally with options), or %(name)s")


Backend = Annotated[str, PlainValidator(_backend)]
JournalMatch = Annotated[str, listed(_JOURNAL_MATCH, "journal matches FIELD=value or +", " ")]
Multipliers = Annotated[str, PlainValidator(_multipliers)]
Mode = Annotated[str, matching(re.compile(r"[a-z][a-z0-9-]{0,31}"), "a filter mode such as aggressive")]
Addresses = Annotated[str, PlainValidator(_ignore_address)]
UseDns = Annotated[str, choice("yes", "warn", "no", "raw")]
Email = Annotated[str, matching(_EMAIL, "an e-mail address")]
BanAction = Annotated[str, PlainValidator(_ban_action)]
SenderName = Annotated[str, matching(re.compile(r"[A-Za-z0-9_.-]{1,64}|%\([a-z_]+\)s"), "one word: letters, digits, _ . -")]


def _option(description: str, alias: str | None = None) -> Any:
    return Field(None, alias=alias, description=description)


class JailOptions(StrictModel):
    """The options of one jail (or of [DEFAULT]), as jail.conf(5) names them."""

    enabled: bool | None = _option("Whether fail2ban runs the jail.")
    port: Port | None = _option("Ports the ban blocks: a number, a range 1000:2000, a service name, or several joined by commas.")
    protocol: Protocol | None = _option("The protocol the ban blocks: tcp, udp, sctp, dccp or all.")
    filter: Filter | None = _option("The filter.d file that finds failures, optionally with options: sshd[mode=aggressive].")
    logpath: LogPaths | None = _option("Absolute log file paths (globs allowed) or %(name)s references, one string or an array.")
    logencoding: Encoding | None = _option("The encoding of the log files (auto, utf-8, ...).")
    backend: Backend | None = _option("How fail2ban watches the logs: auto, pyinotify, polling or systemd.")
    journalmatch: JournalMatch | None = _option("systemd journal matches (FIELD=value, or +), with backend = systemd.")
    maxretry: Count | None = _option("Failures within findtime that ban an address.")
    maxmatches: Count | None = _option("Matches kept per ticket.")
    maxlines: Count | None = _option("Lines the filter buffers for multi-line patterns.")
    findtime: Time | None = _option('The window failures are counted in: seconds, or "10m", "1h 30m".')
    bantime: BanTime | None = _option('How long a ban lasts: seconds, "1h", or -1 for ever.')
    bantime_increment: bool | None = _option("Whether repeat offenders get longer bans.", "bantime.increment")
    bantime_factor: Count | None = _option("The factor of the increment formula.", "bantime.factor")
    bantime_multipliers: Multipliers | None = _option("Ban time multipliers, such as [1, 2, 4, 8].", "bantime.multipliers")
    bantime_maxtime: Time | None = _option("The longest an incremented ban lasts.", "bantime.maxtime")
    bantime_rndtime: Time | None = _option("Random time added to each incremented ban.", "bantime.rndtime")
    bantime_formula: Annotated[str, PlainValidator(_formula)] | None = _option(
        "Refused: a Python expression fail2ban evaluates; use bantime.factor and bantime.multipliers.", "bantime.formula")
    bantime_overalljails: bool | None = _option("Whether the increment counts the bans of every jail.", "bantime.overalljails")
    action: Actions | None = _option(
        "Actions: name or name[param=value, ...], one string or an array; only known parameters, each one word without "
        "spaces or / (fail2ban puts them unescaped into root shell commands).")
    banaction: BanAction | None = _option(
        "The action.d name the ban actions use (iptables-multiport, nftables, ...), optionally with parameters as in action.")
    banaction_allports: BanAction | None = _option("The action.d name used for bans of all ports.")
    chain: Name | None = _option("The firewall chain the ban rules go in.")
    mode: Mode | None = _option("The filter mode (normal, aggressive, ...).")
    ignoreip: Addresses | None = _option("Addresses, networks or host names never banned (an array, or one string).")
    ignoreself: bool | None = _option("Whether the host's own addresses are never banned.")
    usedns: UseDns | None = _option("Whether host names in logs are resolved: yes, warn, no or raw.")
    destemail: Email | None = _option("Where mail actions send reports.")
    sender: Email | None = _option("The sender address of mail actions.")
    sendername: SenderName | None = _option("The sender name of mail actions: one word (letters, digits, _ . -).")
    mta: Name | None = _option("The mail program mail actions use (sendmail, mail).")

    def section(self) -> dict[str, str]:
        """The options set, as the file says them (option name -> text after `=`)."""
        options = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if value is not None:
                options[info.alias or name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return options


def jail_name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(_NAME, value):
        raise ValueError("not a jail name: letters, digits and _ . - (such as sshd)")
    if value.upper() in {"DEFAULT", "INCLUDES"}:
        raise ValueError(f"the name {value} is reserved by fail2ban; use [fail2ban.defaults] for the defaults")
    return value


class Fail2banSpec(StrictModel):
    """`[fail2ban]`: `defaults`, `jails.NAME`, and whether converge starts a stopped server."""

    start_server: bool = Field(False, description="Start fail2ban-server when it is not running (else the jails wait for it).")
    defaults: JailOptions = Field(JailOptions(), description="Options of [DEFAULT] in converge's jail file.")
    jails: dict[Annotated[str, PlainValidator(jail_name)], JailOptions] = Field(
        {}, description="Jails by name, each with the options of its section in converge's jail file.")

    enabled_elsewhere: list[Annotated[str, PlainValidator(jail_name)]] | None = Field(None, description=(
        "The jails files other than converge's enable (jail.conf, jail.d/*.conf, jail.local, other jail.d/*.local), "
        "as capture found them: compared, never written (plan warns when the host's differ; declare a jail in "
        "[fail2ban.jails] to manage it)."))

    def sections(self) -> dict[str, dict[str, str]]:
        wanted = {"DEFAULT": self.defaults.section()} if self.defaults.section() else {}
        return wanted | {name: jail.section() for name, jail in self.jails.items()}

