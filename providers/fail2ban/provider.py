"""The fail2ban provider: converge's jail file, tested on a staged copy, then reloaded (or started)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from converge.provider import (
    Captured,
    Change,
    Facts,
    Operation,
    Provider,
    ProviderError,
    ProviderPlan,
    Read,
    ReadFile,
    ReadGlob,
    Remove,
    Run,
    RunCommand,
    Side,
    Which,
    Write,
    restore,
)
from converge.providers.fail2ban.capture import capture_table, captured
from converge.providers.fail2ban.parse import (
    LIVE_OPTIONS,
    as_read,
    comments,
    displayed,
    enabled_jails,
    expected_live_value,
    fail2ban_errors,
    parse_jail_file,
    parse_jail_list,
    parse_live_option,
    typed,
)
from converge.providers.fail2ban.spec import CONFIG_DIR, JAIL_FILE, Fail2banSpec

Action = Literal["add", "update", "remove"]

# ---- constants and reads ------------------------------------------------------------------------

LOCAL_FILES = f"{CONFIG_DIR}/jail.d/*.local"
# Where else an admin or a package declares jails: named by capture, never copied into the table.
JAIL_CONF = f"{CONFIG_DIR}/jail.conf"
OTHER_JAIL_SOURCES = (f"{CONFIG_DIR}/jail.local",)
OTHER_JAIL_GLOBS = (f"{CONFIG_DIR}/jail.d/*.conf", LOCAL_FILES)
FILE_HEADER = (
    "# Managed by converge: rewritten on every apply, local edits are lost.\n"
    "# Change the baseline ([fail2ban.defaults], [fail2ban.jails.NAME]) instead.\n"
)
CLIENT = "fail2ban-client"
STATUS = (CLIENT, "status")
CONFIG_TEST = (CLIENT, "-t")
# `fail2ban-client get JAIL OPTION`, only when the server's socket exists: each client start costs
# ~0.3 s, and a stopped server with 20 jails would make every plan wait for 80 of them for nothing.
# (The socket where Debian's fail2ban.conf puts it; a server elsewhere is then not compared live.)
LIVE_GET = ('[ -S /run/fail2ban/fail2ban.sock ] || [ -S /var/run/fail2ban/fail2ban.sock ] || exit 3; '
            'exec fail2ban-client get "$1" "$2"')


def live_get(jail: str, option: str) -> tuple[str, ...]:
    return ("sh", "-c", LIVE_GET, "converge-fail2ban-get", jail, option)
# sd_booted(): systemd manages the fail2ban service on this host, so it starts it.
SYSTEMD_BOOTED = ("test", "-d", "/run/systemd/system")
START_WITH_SYSTEMD = ("systemctl", "start", "fail2ban.service")
# -x removes a stale socket a crashed server left behind (status said none answers it).
START_WITHOUT_SYSTEMD = (CLIENT, "-x", "start")
# A server that failed half-way through `start` keeps running without jails: stop it, if it runs.
STOP_IF_RUNNING = ("sh", "-c", f"{CLIENT} ping >/dev/null 2>&1 || exit 0; exec {CLIENT} stop", "converge-fail2ban-stop")
# `fail2ban-client -t` on a staged copy of the configuration (in a root-only directory under /run)
# with the new jail file, read from stdin ($1 = write), or without it ($1 = remove). Arguments:
# write|remove CONFIG_DIR JAIL_FILE-relative-to-CONFIG_DIR.
STAGED_TEST = r"""
stage=$(mktemp -d -p /run converge-fail2ban.XXXXXXXX) || exit 1
trap 'rm -rf -- "$stage"' EXIT
cp -a "$2/." "$stage" && rm -f "$stage/$3" || exit 1
if [ "$1" = write ]; then cat > "$stage/$3" || exit 1; fi
out=$(fail2ban-client -c "$stage" -t 2>&1) && exit 0
printf '%s\n' "$out" | sed "s|$stage|$2|g" | awk '
    /ERROR/ && !/test configuration failed/ {
        sub(/.*ERROR[ \t]+/, ""); sub(/\.$/, ""); if (!seen[$0]++) reasons = reasons (reasons ? "; " : "") $0 }
    END { print "fail2ban-client -t refused the new configuration: " (reasons ? reasons : "(no reason given)") \
                "; nothing was changed" }' >&2
exit 1
"""
STAGED_TEST_NAME = "converge-fail2ban-test"


def other_files_reads() -> list[Read]:
    return [ReadFile(JAIL_CONF), *(ReadFile(path) for path in OTHER_JAIL_SOURCES),
            *(ReadGlob(pattern) for pattern in OTHER_JAIL_GLOBS)]


def other_files(facts: Facts) -> list[tuple[str, str | None]]:
    """The jail files other than converge's, in the order fail2ban reads them (jail.conf,
    jail.d/*.conf, jail.local, jail.d/*.local)."""
    conf, local = OTHER_JAIL_GLOBS
    return [(JAIL_CONF, facts.file(JAIL_CONF)), *sorted(facts.glob(conf).items()),
            *((path, facts.file(path)) for path in OTHER_JAIL_SOURCES),
            *sorted((path, text) for path, text in facts.glob(local).items() if path != JAIL_FILE)]


def live_reads(spec: Fail2banSpec) -> list[tuple[str, str]]:
    """(jail, option) pairs to ask the server: the options the jail's own section sets.

    An option only [fail2ban.defaults] sets is not asked: the jail's section in jail.conf or
    another file may set it (recidive's bantime), and fail2ban rightly prefers that one.
    """
    return [(jail, option) for jail, options in spec.jails.items() for option in LIVE_OPTIONS if option in options.section()]


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


# ---- live ---------------------------------------------------------------------------------------


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
    # The jails the other files enable, when the baseline declares enabled_elsewhere.
    enabled_elsewhere: list[str] | None = None


def overriding_files(spec: Fail2banSpec, later_files: dict[str, str]) -> list[tuple[str, str, list[str]]]:
    """Options of the baseline that files read after JAIL_FILE set again (theirs win)."""
    found = []
    for path, text in later_files.items():
        try:
            sections = parse_jail_file(text, path)
        except ProviderError:
            continue  # fail2ban-client -t reports a broken file
        for section, options in spec.sections().items():
            overlap = [option for option in options if option in sections.get(section, {})]
            if overlap:
                found.append((path, section, overlap))
    return found


def _drift(spec: Fail2banSpec, name: str, live: Fail2banLive) -> tuple[list[str], Side | None]:
    """How the running jail `name` differs from the baseline: notes, and the live side (the
    values the server runs now, and the ones a reload gives it)."""
    options = spec.jails[name].section()
    enabled = options.get("enabled")  # from the defaults, another file's section may override it
    running = live.running_jails is not None and name in live.running_jails
    if live.running_jails is None or enabled is None:
        return [], None
    if enabled == "false":
        return (["running, though disabled: reload stops it"] if running else []), None
    if not running:
        return ["enabled but not running: reload starts it"], Side({"running": False}, {"running": True})
    notes, shown, wanted_shown = [], {}, {}
    for option, reported in live.live_values.get(name, {}).items():
        backend = options.get("backend", spec.defaults.section().get("backend"))
        wanted = expected_live_value(option, options[option], backend)
        if wanted is not None and reported != wanted:
            shown[option] = sorted(reported) if isinstance(reported, frozenset) else typed(reported)
            wanted_shown[option] = sorted(wanted) if isinstance(wanted, frozenset) else typed(wanted)
            notes.append(f"live {option} is {_shown(reported)}, not {_shown(wanted)}: reload applies it")
    return notes, Side(shown, wanted_shown) if shown else None


def _shown(value: str | frozenset[str]) -> str:
    return " ".join(sorted(value)) if isinstance(value, frozenset) else value


def option_differences(before: dict[str, Any], after: dict[str, Any]) -> str:
    """One line per changed option, `~ maxretry: 5 -> 3`."""
    lines = [f"+ {option}: {after[option]!r}" for option in after if option not in before]
    lines += [f"- {option}: {before[option]!r}" for option in before if option not in after]
    lines += [f"~ {option}: {before[option]!r} -> {after[option]!r}"
              for option in before if option in after and before[option] != after[option]]
    return "\n".join(sorted(lines, key=lambda line: line[2:]))


# ---- the provider -------------------------------------------------------------------------------


class Fail2banProvider(Provider[Fail2banSpec, Fail2banLive]):
    name = "fail2ban"
    summary = f"fail2ban jails in {JAIL_FILE}, tested with fail2ban-client -t, reloaded and verified live"
    spec_model = Fail2banSpec

    def presence_reads(self) -> Sequence[Read]:
        return [Which(CLIENT)]

    def reads(self, spec: Fail2banSpec) -> Sequence[Read]:
        return [
            ReadFile(JAIL_FILE), ReadGlob(LOCAL_FILES), RunCommand(STATUS), RunCommand(CONFIG_TEST), RunCommand(SYSTEMD_BOOTED),
            *(RunCommand(live_get(jail, option)) for jail, option in live_reads(spec)),
            *(other_files_reads() if spec.enabled_elsewhere is not None else []),
        ]

    # ---- absent ---------------------------------------------------------------------------------

    def absent(self, facts: Facts) -> str | None:
        return None if facts.which(CLIENT) else f"{CLIENT} is not installed"

    # ---- live -----------------------------------------------------------------------------------

    def live(self, spec: Fail2banSpec, facts: Facts) -> Fail2banLive:
        text = facts.file(JAIL_FILE)
        try:
            sections = as_read(parse_jail_file(text, JAIL_FILE)) if text is not None else {}
        except ProviderError:
            sections = None
        status = facts.command(*STATUS)
        running = parse_jail_list(status.stdout) if status.ok else None
        values: dict[str, dict[str, str | frozenset[str]]] = {}
        if running is not None:
            for jail, option in live_reads(spec):
                result = facts.command(*live_get(jail, option))
                if jail in running and result.ok:
                    values.setdefault(jail, {})[option] = parse_live_option(option, result.stdout)
        test = facts.command(*CONFIG_TEST)
        # fail2ban reads jail.d/*.local last, in name order: the ones named after ours win.
        later = {path: content for path, content in facts.glob(LOCAL_FILES).items() if path > JAIL_FILE}
        return Fail2banLive(text, sections, running, values, None if test.ok else fail2ban_errors(test),
                            facts.command(*SYSTEMD_BOOTED).ok, overriding_files(spec, later),
                            enabled_jails(other_files(facts)) if spec.enabled_elsewhere is not None else None)

    # ---- diff -----------------------------------------------------------------------------------

    def diff(self, spec: Fail2banSpec, live: Fail2banLive) -> ProviderPlan:
        changes = self._section_changes(spec, live)
        text = desired_file(spec)
        # A file fail2ban reads as the baseline says, with converge's comments only, is in sync
        # whatever its layout (ignoreip over several lines, spacing, indentation).
        same = live.file_sections is not None and text is not None and live.file_text is not None and \
            comments(live.file_text) == comments(text)
        if not changes and live.file_text != text and not same:
            if text is None:
                changes.append(Change(self.name, "file", JAIL_FILE, "remove", live.file_text, None,
                                      ("the baseline declares no jail",)))
            else:
                reason = "cannot be parsed" if live.file_sections is None else "differs in layout or comments"
                changes.append(Change(self.name, "file", JAIL_FILE, "update", live.file_text, text, (f"{reason}: rewrite it",)))
        if spec.start_server and live.running_jails is None:
            changes.append(Change(self.name, "server", "fail2ban-server", "update", False, True,
                                  ("start it: the baseline sets start_server = true",)))
        return ProviderPlan(changes, self._operations(spec, live, text) if changes else [])

    def _section_changes(self, spec: Fail2banSpec, live: Fail2banLive) -> list[Change]:
        changes = []
        wanted = spec.sections()
        on_file = live.file_sections or {}
        for section in dict.fromkeys([*wanted, *on_file]):
            before, after = displayed(on_file.get(section)), displayed(wanted.get(section))
            # Live drift matters when the file is right already; a new file is reloaded anyway.
            notes, drift = _drift(spec, section, live) if section in spec.jails and before == after else ([], None)
            if before == after and not notes:
                continue
            if after is None and section != "DEFAULT":
                notes = [f"drop from {JAIL_FILE}; reload stops the jail unless another file enables it"]
            action: Action = "add" if before is None else "remove" if after is None else "update"
            detail = option_differences(before, after) if before and after and before != after else None
            changes.append(Change(self.name, "jail", section, action, before, after, tuple(notes),
                                  {"live": drift} if drift else {}, detail))
        return changes

    @staticmethod
    def _operations(spec: Fail2banSpec, live: Fail2banLive, text: str | None) -> list[Operation]:
        """Test the new file on a staged copy, put it in place, reload (or start) the server; a
        failure puts the previous file back (and reloads a running server with it)."""
        running = live.running_jails is not None
        operations: list[Operation] = []
        if live.file_text != text:
            reload_again = [Run((CLIENT, "reload"))] if running else []
            put_back: tuple[Operation, ...] = (restore(JAIL_FILE, live.file_text), *reload_again)
            relative = JAIL_FILE.removeprefix(CONFIG_DIR + "/")
            operations.append(Run(("sh", "-c", STAGED_TEST, STAGED_TEST_NAME, "remove" if text is None else "write",
                                   CONFIG_DIR, relative), input=text,
                                  says="fail2ban-client -t accepted the new configuration (on a staged copy)"))
            operations.append(Remove(JAIL_FILE, undo=put_back) if text is None else Write(JAIL_FILE, text, undo=put_back))
        if running:
            operations.append(Run((CLIENT, "reload"), says="reloaded fail2ban-server"))
        elif spec.start_server:
            if live.systemd:
                operations.append(Run(START_WITH_SYSTEMD, says="started fail2ban-server"))
            else:
                operations.append(Run(START_WITHOUT_SYSTEMD, says="started fail2ban-server", undo=(Run(STOP_IF_RUNNING),)))
        return operations

    # ---- warnings -------------------------------------------------------------------------------

    def warnings(self, spec: Fail2banSpec, live: Fail2banLive) -> list[str]:
        found = []
        if live.config_error:
            found.append(f"fail2ban-client -t refuses the configuration now on this host: {live.config_error}; "
                         "apply refuses any configuration that fails this test (a jail of another file, such as "
                         "Debian's sshd in jail.d/defaults-debian.conf, can be declared here to fix or disable it)")
        found += [f"{path} is read after {JAIL_FILE} and sets {', '.join(options)} in [{section}]: its values win"
                  for path, section, options in live.overrides]
        if spec.enabled_elsewhere is not None and live.enabled_elsewhere != sorted(spec.enabled_elsewhere):
            found.append(f"files other than {JAIL_FILE} enable [{', '.join(live.enabled_elsewhere or [])}] here, the "
                         f"baseline's enabled_elsewhere says [{', '.join(sorted(spec.enabled_elsewhere))}]: converge "
                         "does not write those files (declare a jail in [fail2ban.jails] to manage it)")
        if live.running_jails is None and not spec.start_server and spec.jails:
            found.append("fail2ban-server is not running: the jails take effect when it starts (or set start_server = true)")
        return found

    # ---- capture --------------------------------------------------------------------------------
    # The jails of converge's own file. Other files keep declaring what they declare (copying their
    # jails here would write them into JAIL_FILE too); capture names them.

    def capture_reads(self) -> Sequence[Read]:
        return [*self.reads(Fail2banSpec.model_validate({})), *other_files_reads()]

    def capture_more_reads(self, facts: Facts) -> Sequence[Read]:
        # The live values plan compares, for the jails found: drift must show in the notes. The
        # rest of plan's reads are in capture_reads already (fail2ban-client -t once, not twice).
        table, _ = capture_table(facts.file(JAIL_FILE), facts.command(*STATUS).ok)
        return [RunCommand(live_get(jail, option)) for jail, option in live_reads(Fail2banSpec.model_validate(table))]

    def capture(self, facts: Facts) -> Captured:
        table, notes = capture_table(facts.file(JAIL_FILE), facts.command(*STATUS).ok)
        # The jails other files enable are compared (diff of two hosts sees them), never written.
        table["enabled_elsewhere"] = enabled_jails(other_files(facts))
        spec = Fail2banSpec.model_validate(table)
        live = self.live(spec, facts)
        others = {path: facts.file(path) for path in OTHER_JAIL_SOURCES} | {
            path: content for pattern in OTHER_JAIL_GLOBS for path, content in facts.glob(pattern).items()}
        # Planning the table against the same facts is the round trip; say what it would still change.
        return captured(table, notes, live.running_jails is not None, others, self.diff(spec, live).changes)
