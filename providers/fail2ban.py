"""fail2ban: jails declared in one jail.d file converge owns, tested by fail2ban, verified live.

converge writes `[fail2ban.defaults]` and `[fail2ban.jails.NAME]` into `JAIL_FILE`. A new file is
first written into a staged copy of /etc/fail2ban and checked there with `fail2ban-client -t`;
only a configuration fail2ban accepts is put in place, then the running server reloads (or is
started when the baseline says so). When the server runs, plan also compares the live jails
(`fail2ban-client status` and `get JAIL OPTION`, all gathered up front) with the baseline.
"""

from __future__ import annotations

import configparser
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError

from converge.diff import describe_difference
from converge.errors import ProviderError
from converge.hosts import Host
from converge.plan import Change
from converge.provider import Captured, Provider
from converge.reads import CommandResult, Facts, Read, ReadFile, ReadGlob, RunCommand, Which

CONFIG_DIR = "/etc/fail2ban"
# Read after jail.conf, jail.d/*.conf and jail.local: the baseline wins over the stock files.
JAIL_FILE = f"{CONFIG_DIR}/jail.d/converge.local"
LOCAL_FILES = f"{CONFIG_DIR}/jail.d/*.local"
# Where else an admin or a package declares jails: named by capture, never copied into the table.
OTHER_JAIL_SOURCES = (f"{CONFIG_DIR}/jail.local",)
OTHER_JAIL_GLOBS = (f"{CONFIG_DIR}/jail.d/*.conf", LOCAL_FILES)
FILE_HEADER = (
    "# Managed by converge: rewritten on every apply, local edits are lost.\n"
    "# Change the baseline ([fail2ban.defaults], [fail2ban.jails.NAME]) instead.\n"
)
CLIENT = "fail2ban-client"
STATUS = (CLIENT, "status")
CONFIG_TEST = (CLIENT, "-t")
# sd_booted(): systemd manages the fail2ban service on this host, so it starts it.
SYSTEMD_BOOTED = ("test", "-d", "/run/systemd/system")
START_WITH_SYSTEMD = ("systemctl", "start", "fail2ban.service")
# -x removes a stale socket a crashed server left behind (status said none answers it).
START_WITHOUT_SYSTEMD = (CLIENT, "-x", "start")
# Staged copies of the configuration live on the host, in a directory only root can read.
STAGING_PARENT = "/run"
MAX_COUNT = 1_000_000

# ---- values: each validator returns the text written after `option = ` in the file ----------

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_INTERPOLATION = r"%\([a-z_]+\)s"  # a reference to another option, as fail2ban's own files use
_PLAIN = rf"(?:[A-Za-z0-9_.:/@+-]|{_INTERPOLATION})+"
_QUOTED = rf'"(?:[A-Za-z0-9_.:/@+, -]|{_INTERPOLATION})*"'
# Parameters named action* replace the action's shell commands: those belong in action.d files.
_PARAM = rf"(?!action)[a-z_]+=(?:{_PLAIN}|{_QUOTED})"
_PARAMS = rf"\[{_PARAM}(?:, ?{_PARAM})*\]"
_ACTION = re.compile(rf"(?:{_NAME}|{_INTERPOLATION})(?:{_PARAMS})?")
_FILTER = re.compile(rf"{_NAME}(?:\[[a-z_]+=[A-Za-z0-9_.-]+(?:, ?[a-z_]+=[A-Za-z0-9_.-]+)*\])?")
_PORT_ITEM = re.compile(r"[a-z][a-z0-9-]{0,31}|[0-9]{1,5}(?::[0-9]{1,5})?")
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


def _choice(*allowed: str) -> Any:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of: {', '.join(allowed)}")
        return str(value)
    return PlainValidator(check)


def _matching(pattern: re.Pattern[str], what: str) -> Any:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(f"not {what}")
        return value
    return PlainValidator(check)


def _listed(pattern: re.Pattern[str], what: str, separator: str) -> Any:
    """A TOML array (or one string) of items matching `pattern`, joined by `separator`."""
    def check(value: Any) -> str:
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(item, str) and pattern.fullmatch(item) for item in items):
            raise ValueError(f"expected {what} (one string, or an array of them)")
        return separator.join(items)
    return PlainValidator(check)


def _port(value: Any) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    items = text.split(",") if isinstance(text, str) else None
    if not items or not all(_PORT_ITEM.fullmatch(item.strip()) for item in items):
        raise ValueError("not a port: expected a number, a range 1000:2000, a service name, or several joined by commas")
    for item in items:
        for number in item.strip().split(":"):
            if number.isdigit() and not 1 <= int(number) <= 65535:
                raise ValueError(f"port {number} out of range (1 to 65535)")
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


def _multipliers(value: Any) -> str:
    if not isinstance(value, list) or not value or not all(type(item) is int and 1 <= item <= MAX_COUNT for item in value):
        raise ValueError("expected an array of whole numbers, such as [1, 2, 4, 8]")
    return " ".join(str(item) for item in value)


Count = Annotated[int, Field(ge=1, le=MAX_COUNT)]
Time = Annotated[str, PlainValidator(_time)]
BanTime = Annotated[str, PlainValidator(lambda value: _time(value, permanent_allowed=True))]
Actions = Annotated[str, _listed(_ACTION, "actions: name or name[param=value, ...], no action* command parameters", "\n")]
Name = Annotated[str, _matching(re.compile(_NAME), "a name: letters, digits and _ . - (such as iptables-multiport)")]


class JailOptions(BaseModel):
    """The options of one jail (or of [DEFAULT]), as jail.conf(5) names them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool | None = None
    port: Annotated[str, PlainValidator(_port)] | None = None
    protocol: Annotated[str, _choice("tcp", "udp", "sctp", "dccp", "all")] | None = None
    filter: Annotated[str, _matching(_FILTER, "a filter name, optionally with options: sshd[mode=aggressive]")] | None = None
    logpath: Annotated[str, _listed(_LOG_PATH, "absolute log file paths (globs allowed) or %(name)s", "\n")] | None = None
    logencoding: Annotated[str, _matching(re.compile(r"auto|[A-Za-z0-9][A-Za-z0-9_.-]{0,31}"), "an encoding")] | None = None
    backend: Annotated[str, _choice("auto", "pyinotify", "polling", "systemd")] | None = None
    journalmatch: Annotated[str, _listed(_JOURNAL_MATCH, "journal matches FIELD=value or +", " ")] | None = None
    maxretry: Count | None = None
    maxmatches: Count | None = None
    maxlines: Count | None = None
    findtime: Time | None = None
    bantime: BanTime | None = None
    bantime_increment: bool | None = Field(None, alias="bantime.increment")
    bantime_factor: Count | None = Field(None, alias="bantime.factor")
    bantime_multipliers: Annotated[str, PlainValidator(_multipliers)] | None = Field(None, alias="bantime.multipliers")
    bantime_maxtime: Time | None = Field(None, alias="bantime.maxtime")
    bantime_rndtime: Time | None = Field(None, alias="bantime.rndtime")
    bantime_overalljails: bool | None = Field(None, alias="bantime.overalljails")
    action: Actions | None = None
    banaction: Name | None = None
    banaction_allports: Name | None = None
    chain: Name | None = None
    mode: Annotated[str, _matching(re.compile(r"[a-z][a-z0-9-]{0,31}"), "a filter mode such as aggressive")] | None = None
    ignoreip: Annotated[str, PlainValidator(_ignore_address)] | None = None
    ignoreself: bool | None = None
    usedns: Annotated[str, _choice("yes", "warn", "no", "raw")] | None = None
    destemail: Annotated[str, _matching(_EMAIL, "an e-mail address")] | None = None
    sender: Annotated[str, _matching(_EMAIL, "an e-mail address")] | None = None
    mta: Name | None = None

    def section(self) -> dict[str, str]:
        """The options set, as the file says them (option name -> text after `=`)."""
        options = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if value is not None:
                options[info.alias or name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return options


def _jail_name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(_NAME, value):
        raise ValueError("not a jail name: letters, digits and _ . - (such as sshd)")
    if value.upper() in {"DEFAULT", "INCLUDES"}:
        raise ValueError(f"the name {value} is reserved by fail2ban; use [fail2ban.defaults] for the defaults")
    return value


class Fail2banSpec(BaseModel):
    """`[fail2ban]`: `defaults`, `jails.NAME`, and whether converge starts a stopped server."""

    model_config = ConfigDict(extra="forbid", strict=True)

    start_server: bool = False
    defaults: JailOptions = JailOptions()
    jails: dict[Annotated[str, PlainValidator(_jail_name)], JailOptions] = {}

    def sections(self) -> dict[str, dict[str, str]]:
        wanted = {"DEFAULT": self.defaults.section()} if self.defaults.section() else {}
        return wanted | {name: jail.section() for name, jail in self.jails.items()}


# ---- capture: converge's file back into a baseline table ------------------------------------

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
            _jail_name(section)
        except ValueError as error:
            notes.append(f"[{section}] in {JAIL_FILE}: not captured: {error}")
            continue
        table.setdefault("jails", {})[section] = values
    return table, notes


# ---- the file ---------------------------------------------------------------------------------


def render_jail_file(sections: dict[str, dict[str, str]]) -> str:
    blocks = []
    for section, options in sections.items():
        lines = [f"[{section}]"]
        # Multi-line values (several log paths or actions) continue on indented lines.
        lines += [f"{option} = " + value.replace("\n", "\n" + " " * (len(option) + 3)) for option, value in options.items()]
        blocks.append("\n".join(lines) + "\n")
    return FILE_HEADER + "\n" + "\n".join(blocks)


def desired_file(spec: Fail2banSpec) -> str | None:
    """The file the baseline asks for; None (no file) when it declares no defaults and no jail."""
    sections = spec.sections()
    return render_jail_file(sections) if sections else None


def _typed(value: str) -> bool | int | str:
    if value in {"true", "false"}:
        return value == "true"
    return int(value) if re.fullmatch(r"-?[0-9]+", value) else value


def displayed(section: dict[str, str] | None) -> dict[str, bool | int | str] | None:
    """A section's options as a baseline writes them (booleans and whole numbers typed), for plans."""
    return None if section is None else {option: _typed(value) for option, value in section.items()}


def parse_jail_file(text: str) -> dict[str, dict[str, str]]:
    """Sections and options of a jail file, values as fail2ban reads them; ValueError if unreadable."""
    # No section is special here: [DEFAULT] is one of the sections converge writes.
    parser = configparser.RawConfigParser(interpolation=None, default_section="\0", strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.Error as error:
        raise ValueError(str(error).splitlines()[0]) from None
    return {section: dict(parser.items(section)) for section in parser.sections()}


# ---- the live server --------------------------------------------------------------------------

# Options `fail2ban-client get JAIL OPTION` answers in a form comparable with the baseline.
LIVE_OPTIONS = ("maxretry", "maxmatches", "maxlines", "findtime", "bantime", "usedns", "ignoreself", "logpath", "ignoreip")


def parse_jail_list(status_output: str) -> list[str]:
    """Jail names from `fail2ban-client status`."""
    for line in status_output.splitlines():
        if "Jail list:" in line:
            names = line.split("Jail list:", 1)[1]
            return [name.strip() for name in names.split(",") if name.strip()]
    raise ValueError("no jail list in the output of fail2ban-client status")


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


@dataclass(frozen=True)
class Fail2banLive:
    file_text: str | None
    # The file's sections, or None when it exists but cannot be parsed.
    file_sections: dict[str, dict[str, str]] | None
    running_jails: list[str] | None  # None: no server answers
    # jail -> option -> value the server reports, for the options the baseline sets.
    live_values: dict[str, dict[str, str | frozenset[str]]]
    config_error: str | None  # why `fail2ban-client -t` refuses the configuration on disk
    systemd: bool
    # (file, section, options) set again by jail.d/*.local files fail2ban reads after ours.
    overrides: list[tuple[str, str, list[str]]]


def overriding_files(spec: Fail2banSpec, later_files: dict[str, str]) -> list[tuple[str, str, list[str]]]:
    """Options of the baseline that files read after JAIL_FILE set again (theirs win)."""
    found = []
    for path, text in later_files.items():
        try:
            sections = parse_jail_file(text)
        except ValueError:
            continue  # fail2ban-client -t reports a broken file
        for section, options in spec.sections().items():
            overlap = [option for option in options if option in sections.get(section, {})]
            if overlap:
                found.append((path, section, overlap))
    return found


def _live_reads(spec: Fail2banSpec) -> list[tuple[str, str]]:
    """(jail, option) pairs to ask the server: the options the jail's own section sets.

    An option only [fail2ban.defaults] sets is not asked: the jail's section in jail.conf or
    another file may set it (recidive's bantime), and fail2ban rightly prefers that one.
    """
    return [(jail, option) for jail, options in spec.jails.items() for option in LIVE_OPTIONS if option in options.section()]


def _drift(spec: Fail2banSpec, name: str, live: Fail2banLive) -> tuple[list[str], dict[str, Any]]:
    """How the running jail `name` differs from the baseline: notes, and the live values shown."""
    options = spec.jails[name].section()
    enabled = options.get("enabled")  # from the defaults, another file's section may override it
    running = live.running_jails is not None and name in live.running_jails
    if live.running_jails is None or enabled is None:
        return [], {}
    if enabled == "false":
        return (["running, though disabled: reload stops it"] if running else []), {}
    if not running:
        return ["enabled but not running: reload starts it"], {"running": False}
    notes, shown = [], {}
    for option, reported in live.live_values.get(name, {}).items():
        backend = options.get("backend", spec.defaults.section().get("backend"))
        wanted = expected_live_value(option, options[option], backend)
        if wanted is not None and reported != wanted:
            shown[option] = sorted(reported) if isinstance(reported, frozenset) else _typed(reported)
            notes.append(f"live {option} is {_shown(reported)}, not {_shown(wanted)}: reload applies it")
    return notes, shown


def _shown(value: str | frozenset[str]) -> str:
    return " ".join(sorted(value)) if isinstance(value, frozenset) else value


class Fail2banProvider(Provider[Fail2banSpec, Fail2banLive]):
    name = "fail2ban"
    summary = f"fail2ban jails in {JAIL_FILE}, tested with fail2ban-client -t, reloaded and verified live"
    spec_model = Fail2banSpec

    def reads(self, spec: Fail2banSpec) -> Sequence[Read]:
        return [
            Which(CLIENT), ReadFile(JAIL_FILE), ReadGlob(LOCAL_FILES), RunCommand(STATUS), RunCommand(CONFIG_TEST),
            RunCommand(SYSTEMD_BOOTED),
            *(RunCommand((CLIENT, "get", jail, option)) for jail, option in _live_reads(spec)),
        ]

    def absent(self, facts: Facts) -> str | None:
        return None if facts.which(CLIENT) else f"{CLIENT} is not installed"

    def live(self, spec: Fail2banSpec, facts: Facts) -> Fail2banLive:
        text = facts.file(JAIL_FILE)
        try:
            sections = parse_jail_file(text) if text is not None else {}
        except ValueError:
            sections = None
        status = facts.command(*STATUS)
        running = None
        if status.ok:
            try:
                running = parse_jail_list(status.stdout)
            except ValueError as error:
                raise ProviderError(str(error)) from None
        values: dict[str, dict[str, str | frozenset[str]]] = {}
        if running is not None:
            for jail, option in _live_reads(spec):
                result = facts.command(CLIENT, "get", jail, option)
                if jail in running and result.ok:
                    values.setdefault(jail, {})[option] = parse_live_option(option, result.stdout)
        test = facts.command(*CONFIG_TEST)
        # fail2ban reads jail.d/*.local last, in name order: the ones named after ours win.
        later = {path: content for path, content in facts.glob(LOCAL_FILES).items() if path > JAIL_FILE}
        return Fail2banLive(text, sections, running, values, None if test.ok else fail2ban_errors(test),
                            facts.command(*SYSTEMD_BOOTED).ok, overriding_files(spec, later))

    def diff(self, spec: Fail2banSpec, live: Fail2banLive) -> list[Change]:
        changes = []
        wanted = spec.sections()
        on_file = live.file_sections or {}
        for section in dict.fromkeys([*wanted, *on_file]):
            resource = "defaults" if section == "DEFAULT" else f"jails.{section}"
            before, after = displayed(on_file.get(section)), displayed(wanted.get(section))
            # Live drift matters when the file is right already; a new file is reloaded anyway.
            notes, shown = _drift(spec, section, live) if section in spec.jails and before == after else ([], {})
            if before == after and not notes:
                continue
            if after is None and section != "DEFAULT":
                notes = [f"drop from {JAIL_FILE}; reload stops the jail unless another file enables it"]
            action = "add" if before is None else "remove" if after is None else "update"
            detail = describe_difference(before, after) if before and after and before != after else None
            changes.append(Change(self.name, resource, action, before, after, tuple(notes), {"live": shown} if shown else {},
                                  detail))
        if not changes and live.file_text != desired_file(spec):
            if not wanted:
                changes.append(Change(self.name, JAIL_FILE, "remove", "present", None, ("the baseline declares no jail",)))
            else:
                reason = "cannot be parsed" if live.file_sections is None else "differs in layout or comments"
                changes.append(Change(self.name, JAIL_FILE, "update", "edited", "managed content", (f"{reason}: rewrite it",)))
        if spec.start_server and live.running_jails is None:
            changes.append(Change(self.name, "server", "update", "stopped", "running"))
        return changes

    def warnings(self, spec: Fail2banSpec, live: Fail2banLive) -> list[str]:
        found = []
        if live.config_error:
            found.append(f"fail2ban-client -t refuses the configuration now on this host: {live.config_error}; "
                         "apply refuses any configuration that fails this test (a jail of another file, such as "
                         "Debian's sshd in jail.d/defaults-debian.conf, can be declared here to fix or disable it)")
        found += [f"{path} is read after {JAIL_FILE} and sets {', '.join(options)} in [{section}]: its values win"
                  for path, section, options in live.overrides]
        if live.running_jails is None and not spec.start_server and spec.jails:
            found.append("fail2ban-server is not running: the jails take effect when it starts (or set start_server = true)")
        return found

    def apply(self, host: Host, spec: Fail2banSpec, live: Fail2banLive, changes: Sequence[Change]) -> list[str]:
        done = []
        text = desired_file(spec)
        if live.file_text != text:
            _test_staged(host, text)
            if text is None:
                backup = host.remove_file(JAIL_FILE)
                done.append(f"removed {JAIL_FILE} (previous version in {backup}), accepted by fail2ban-client -t")
            else:
                backup = host.write_file(JAIL_FILE, text, mode=0o644)
                kept = f" (previous version in {backup})" if backup else ""
                done.append(f"wrote {JAIL_FILE}{kept}, accepted by fail2ban-client -t")
        if live.running_jails is not None:
            command: tuple[str, ...] = (CLIENT, "reload")
        elif spec.start_server:
            command = START_WITH_SYSTEMD if live.systemd else START_WITHOUT_SYSTEMD
        else:
            return done
        result = host.run(command, check=False)
        if not result.ok:
            _restore(host, live.file_text)
            if live.running_jails is not None:
                host.run((CLIENT, "reload"), check=False)
                outcome = "the server keeps its previous jails"
            else:
                # A server that failed half-way through `start` keeps running without jails.
                if command == START_WITHOUT_SYSTEMD:
                    host.run((CLIENT, "stop"), check=False)
                outcome = "the server is stopped, as it was"
            raise ProviderError(f"{' '.join(command)} failed: {fail2ban_errors(result)}; {JAIL_FILE} was restored; {outcome}")
        done.append("reloaded fail2ban-server" if live.running_jails is not None else "started fail2ban-server")
        return done


    # Capture: the jails of converge's own file. Other files keep declaring what they declare
    # (copying their jails here would write them into JAIL_FILE too); capture names them.
    can_capture = True

    def capture_reads(self) -> Sequence[Read]:
        return [*self.reads(Fail2banSpec()), *(ReadFile(path) for path in OTHER_JAIL_SOURCES),
                *(ReadGlob(pattern) for pattern in OTHER_JAIL_GLOBS)]

    def _captured(self, facts: Facts) -> tuple[dict[str, Any], list[str]]:
        text = facts.file(JAIL_FILE)
        try:
            sections = parse_jail_file(text) if text is not None else {}
        except ValueError as error:
            return {}, [f"{JAIL_FILE} cannot be parsed ({error}): its jails are not captured"]
        return captured_table(sections, facts.command(*STATUS).ok)

    def capture_more_reads(self, facts: Facts) -> Sequence[Read]:
        # The live values plan compares, for the jails found: drift must show in the notes.
        table, _ = self._captured(facts)
        return self.reads(Fail2banSpec.model_validate(table))

    def capture(self, facts: Facts) -> Captured:
        table, notes = self._captured(facts)
        spec = Fail2banSpec.model_validate(table)
        live = self.live(spec, facts)
        if live.running_jails is None:
            notes.append("fail2ban-server is not running: start_server is left false")
        others = {path: facts.file(path) for path in OTHER_JAIL_SOURCES} | {
            path: content for pattern in OTHER_JAIL_GLOBS for path, content in facts.glob(pattern).items()}
        for path, content in sorted(others.items()):
            if path == JAIL_FILE:
                continue
            try:
                sections = [name for name in parse_jail_file(content or "") if name != "INCLUDES"]
            except ValueError as error:
                notes.append(f"{path} cannot be parsed ({error}): not captured")
                continue
            if sections:
                notes.append(f"{path} declares [{'], ['.join(sections)}]: not captured, converge manages only "
                             f"{JAIL_FILE}; that file keeps applying as it is")
        # Planning the table against the same facts is the round trip; say what it would still change.
        for change in self.diff(spec, live):
            why = "; ".join([*change.notes, *(change.detail or "").splitlines()]) or f"{change.before} -> {change.after}"
            notes.append(f"plan will still {change.action} {change.resource}: {why}")
        return Captured(table, notes)


def _test_staged(host: Host, text: str | None) -> None:
    """Run `fail2ban-client -t` on a copy of the configuration with `text` as JAIL_FILE (None: without
    it); raise with fail2ban's message if refused."""
    stage = host.run(("mktemp", "-d", "-p", STAGING_PARENT, "converge-fail2ban.XXXXXXXX")).stdout.strip()
    try:
        host.run(("cp", "-a", f"{CONFIG_DIR}/.", stage))
        staged_file = stage + JAIL_FILE.removeprefix(CONFIG_DIR)
        host.run(("rm", "-f", staged_file))  # a fresh file: write_file then keeps no backup of the copy
        if text is not None:
            host.write_file(staged_file, text, mode=0o644)
        result = host.run((CLIENT, "-c", stage, "-t"), check=False)
    finally:
        host.run(("rm", "-rf", "--", stage), check=False)
    if not result.ok:
        message = fail2ban_errors(result).replace(stage, CONFIG_DIR)
        raise ProviderError(f"fail2ban-client -t refused the new configuration: {message}; nothing was changed")


def _restore(host: Host, previous: str | None) -> None:
    if previous is None:
        host.remove_file(JAIL_FILE)
    else:
        host.write_file(JAIL_FILE, previous)
