"""The sshd provider: reads, live state, the plan (changes and operations), warnings, the connection guard."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from converge.provider import (
    Captured,
    Change,
    Connection,
    Facts,
    Operation,
    ParseError,
    Provider,
    ProviderError,
    ProviderPlan,
    Read,
    ReadFile,
    ReadGlob,
    Run,
    RunCommand,
    Side,
    Which,
    Write,
    output_or_raise,
    restore,
)
from converge.providers.sshd import capture, parse
from converge.providers.sshd.parse import DROP_IN_DIR, DROP_IN_GLOB, SSHD_CONFIG
from converge.providers.sshd.spec import KEYWORDS, SshdSpec, Value, _Base

DROP_IN = f"{DROP_IN_DIR}/00-converge.conf"
DROP_IN_HEADER = (
    "# Managed by converge: rewritten on every apply, local edits are lost.\n"
    "# Read before the other files here: sshd uses the first value it reads for a keyword.\n"
)
PASSWD, GROUP = "/etc/passwd", "/etc/group"

# The connection sshd's effective configuration is evaluated for: converge's own ($SSH_CONNECTION, the
# login user before sudo) or, on the local host, a neutral root@localhost.
_CONNECTION = r"""
set -- ${SSH_CONNECTION:-}
if [ -n "${1:-}" ]; then spec="user=${SUDO_USER:-$(id -un)},host=$1,addr=$1"
else spec="user=root,host=localhost,addr=127.0.0.1"; fi
"""
# `sshd -T` for that connection, after two lines: the connection, and the listener's pid (from
# the pidfile sshd -T names).
EFFECTIVE_SCRIPT = _CONNECTION + r"""
out=$("$(command -v sshd)" -T -C "$spec" 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
pidfile=$(printf '%s\n' "$out" | sed -n 's/^pidfile //p')
printf 'connection %s\npid %s\n%s\n' "$spec" "$(cat "$pidfile" 2>/dev/null | head -n 1)" "$out"
"""
# The same for the configuration the baseline stages: sshd_config and sshd_config.d copied to a
# temporary directory, converge's drop-in replaced by $1, the Include line added if it is not first.
# When the drop-in already holds $1 and is included first, the staged configuration is the live
# one: it prints `unchanged` instead of running sshd -T a second time (a no-op plan's usual case).
STAGED_SCRIPT = "staged=$1\n" + _CONNECTION + r"""
first=$(grep -Ev '^[[:space:]]*(#|$)' /etc/ssh/sshd_config | head -n 1)
case $first in
    [Ii]nclude*sshd_config.d/\*.conf*) included=yes ;;
    *) included= ;;
esac
current=/etc/ssh/sshd_config.d/00-converge.conf
if [ -n "$included" ] && [ -f "$current" ] && [ "$(cat -- "$current"; echo .)" = "$staged." ]; then
    echo unchanged; exit 0
fi
t=$(mktemp -d) || exit 1
trap 'rm -rf "$t"' EXIT
mkdir "$t/d"
for f in /etc/ssh/sshd_config.d/*.conf; do [ -e "$f" ] && cp -- "$f" "$t/d/"; done
printf '%s' "$staged" > "$t/d/00-converge.conf"
if [ -n "$included" ]; then : > "$t/c"; else printf 'Include %s\n' "$t/d/*.conf" > "$t/c"; fi
sed "s#\(/etc/ssh/\)\{0,1\}sshd_config\.d/\*\.conf#$t/d/*.conf#g" /etc/ssh/sshd_config >> "$t/c"
out=$("$(command -v sshd)" -T -f "$t/c" -C "$spec" 2>&1) || {
    printf '%s\n' "$out" | sed "s#$t/d#/etc/ssh/sshd_config.d#g; s#$t/c#/etc/ssh/sshd_config#g" >&2; exit 1; }
printf 'connection %s\npid\n%s\n' "$spec" "$out"
"""
SYSTEMD_UNITS = ("systemctl", "show", "--property=Id,ActiveState", "ssh.service", "sshd.service")
# What the commit-confirm watchdog runs after restoring the files (no plan there: decided on the host).
# One line: the watchdog reads its commands a line each.
RELOAD_SCRIPT = (
    "if systemctl is-active -q ssh.service 2>/dev/null; then systemctl reload ssh.service; "
    "elif systemctl is-active -q sshd.service 2>/dev/null; then systemctl reload sshd.service; "
    "else pidfile=$(\"$(command -v sshd)\" -T | sed -n 's/^pidfile //p'); kill -HUP \"$(cat \"$pidfile\")\"; fi"
)
# SIGHUP makes sshd re-execute itself, closing its listening sockets for a moment; it writes its
# pidfile once it listens again: wait for that, so the next connection is not refused.
HUP_SCRIPT = r"""
rm -f -- "$1"
kill -HUP "$2" || exit 1
i=0
while [ ! -s "$1" ]; do
    i=$((i + 1))
    [ "$i" -le 100 ] || { echo "sshd did not write $1 again within 10 s of SIGHUP" >&2; exit 1; }
    sleep 0.1
done
"""


def render_drop_in(settings: dict[str, Value]) -> str:
    lines = [f"{keyword} {text}" for keyword, value in settings.items() for text in KEYWORDS[keyword][0].write(value)]
    return DROP_IN_HEADER + "".join(line + "\n" for line in lines)


def shown(keyword: str, value: Value | None) -> str:
    """A value as sshd_config writes it."""
    return " / ".join(KEYWORDS[keyword][0].write(value)) if value not in (None, []) else "(none)"


def staged_read(spec: _Base) -> RunCommand:
    return RunCommand(("sh", "-c", STAGED_SCRIPT, "sshd-staged", render_drop_in(spec.settings())))


@dataclass(frozen=True)
class Evaluated:
    """`sshd -T` for one connection: keyword (lower-case) -> value lines."""

    connection: str  # "user=root,host=198.18.0.1,addr=198.18.0.1"
    values: dict[str, list[str]]
    pid: int | None

    def value(self, keyword: str) -> Value:
        value = KEYWORDS[keyword][0].effective(self.values.get(keyword.lower(), []))
        # Cumulative keywords (AcceptEnv) list what every file adds: a repeat changes nothing.
        return list(dict.fromkeys(value)) if isinstance(value, list) else value  # type: ignore[return-value]

    @property
    def user(self) -> str:
        return dict(part.split("=", 1) for part in self.connection.split(","))["user"]


def evaluated(text: str, where: str) -> Evaluated:
    head, _, rest = text.partition("\n")
    pid_line, _, body = rest.partition("\n")
    if not head.startswith("connection ") or not pid_line.startswith("pid"):
        raise ParseError(where, "unexpected output", head)
    return Evaluated(head.removeprefix("connection "), parse.effective(body, where), parse.pid(pid_line.removeprefix("pid")))


@dataclass(frozen=True)
class SshdLive:
    sshd: str
    sshd_config: str
    drop_ins: dict[str, str]  # sshd_config.d/*.conf, converge's drop-in included
    now: Evaluated  # the running configuration's files, for converge's connection
    staged: Evaluated  # the same with the baseline's drop-in (and the Include line)
    unit: str | None  # the systemd unit running sshd, if systemd runs it
    passwd: str
    group: str

    @property
    def drop_in(self) -> dict[str, list[str]]:
        """converge's drop-in, keyword (lower-case) -> value lines."""
        values: dict[str, list[str]] = {}
        for directive in parse.directives(DROP_IN, self.drop_ins.get(DROP_IN, "")):
            values.setdefault(directive.keyword, []).append(directive.value)
        return values

    @property
    def include_first(self) -> bool:
        return parse.includes_drop_ins_first(self.sshd_config)


class SshdProvider(Provider[_Base, SshdLive]):
    name = "sshd"
    summary = "OpenSSH server keywords, compared on sshd -T, in a drop-in read first"
    spec_model: ClassVar[type[_Base]] = SshdSpec
    # Last: a reload is the step most likely to cost the connection the others still need.
    apply_order = 95

    # -- reads -----------------------------------------------------------------------------------

    def presence_reads(self) -> Sequence[Read]:
        return [Which("sshd")]

    def reads(self, spec: _Base) -> Sequence[Read]:
        queries = sorted({kind.query for keyword in spec.settings() if (kind := KEYWORDS[keyword][0]).query})
        return [
            ReadFile(SSHD_CONFIG), ReadGlob(DROP_IN_GLOB), RunCommand(("sh", "-c", EFFECTIVE_SCRIPT, "sshd-T")),
            staged_read(spec), RunCommand(SYSTEMD_UNITS), ReadFile(PASSWD), ReadFile(GROUP),
            *(RunCommand(("ssh", "-Q", query)) for query in queries),
        ]

    # -- absent ----------------------------------------------------------------------------------

    def absent(self, facts: Facts) -> str | None:
        return None if facts.which("sshd") else "sshd is not installed"

    # -- live ------------------------------------------------------------------------------------

    def live(self, spec: _Base, facts: Facts) -> SshdLive:
        self._check_algorithms(spec, facts)
        sshd_config = facts.file(SSHD_CONFIG)
        if sshd_config is None:
            raise ProviderError(f"no {SSHD_CONFIG}")
        now = evaluated(output_or_raise(facts, ("sh", "-c", EFFECTIVE_SCRIPT, "sshd-T")), "sshd -T")
        staged = facts.command(*staged_read(spec).argv)
        if not staged.ok:
            raise ProviderError(f"sshd refuses the configuration this baseline makes: {staged.failure().partition(': ')[2]}")
        units = facts.command(*SYSTEMD_UNITS)
        return SshdLive(
            str(facts.which("sshd")), sshd_config, facts.glob(DROP_IN_GLOB), now,
            Evaluated(now.connection, now.values, None) if staged.stdout.strip() == "unchanged"
            else evaluated(staged.stdout, "sshd -T of the staged configuration"),
            parse.systemd_unit(units.stdout) if units.ok else None, facts.file(PASSWD) or "", facts.file(GROUP) or "",
        )

    @staticmethod
    def _check_algorithms(spec: _Base, facts: Facts) -> None:
        for keyword, value in spec.settings().items():
            query = KEYWORDS[keyword][0].query
            if query and isinstance(value, list):
                supported = parse.algorithm_names(output_or_raise(facts, ("ssh", "-Q", query)))
                unknown = [str(name) for name in value if name not in supported]
                if unknown:
                    raise ProviderError(f"{keyword}: not supported by this host's OpenSSH (ssh -Q {query}): {', '.join(unknown)}")

    # -- diff ------------------------------------------------------------------------------------

    def diff(self, spec: _Base, live: SshdLive) -> ProviderPlan:
        settings = spec.settings()
        drop_in = live.drop_in
        changes = []
        for keyword, wanted in settings.items():
            kind = KEYWORDS[keyword][0]
            effective, staged = live.now.value(keyword), live.staged.value(keyword)
            held = kind.effective(drop_in[keyword.lower()]) if keyword.lower() in drop_in else None
            if held == wanted and (effective == wanted or staged != wanted):
                continue  # in sync, or beyond any change of ours (a warning says why)
            if held is None and effective == wanted and staged == wanted:
                continue  # sshd already uses it (another file sets it, or it is the default): not repeated
            notes = () if staged == wanted else (f"sshd will still use {shown(keyword, staged)}: see the warning",)
            changes.append(Change(self.name, self.name, keyword, "update", effective, wanted, notes, sides={
                "effective": Side(effective, wanted), "drop-in": Side(held, wanted)}))
        for keyword_lower, lines in drop_in.items():
            known = next((k for k in KEYWORDS if k.lower() == keyword_lower), None)
            if known is None:
                changes.append(Change(self.name, self.name, keyword_lower, "remove", " ".join(lines), None,
                                      (f"dropped from {DROP_IN}",)))
            elif known not in settings:
                before, after = KEYWORDS[known][0].effective(lines), live.staged.value(known)
                changes.append(Change(self.name, self.name, known, "remove", before, None,
                                      (f"dropped from {DROP_IN}; sshd then uses {shown(known, after)}",)))
        if not live.include_first:
            changes.append(Change(self.name, "include", SSHD_CONFIG, "add", None, parse.INCLUDE_LINE, (
                f"{SSHD_CONFIG} does not include {DROP_IN_GLOB} before its own settings: the line is added at the top",)))
        return ProviderPlan(changes, self._operations(settings, live) if changes else [])

    def _operations(self, settings: dict[str, Value], live: SshdLive) -> list[Operation]:
        operations: list[Operation] = [
            Write(DROP_IN, render_drop_in(settings), undo=(restore(DROP_IN, live.drop_ins.get(DROP_IN)),))]
        if not live.include_first:
            operations.append(Write(SSHD_CONFIG, parse.with_include(live.sshd_config),
                                    undo=(restore(SSHD_CONFIG, live.sshd_config),)))
        operations.append(Run((live.sshd, "-t"), says="sshd -t: the new configuration is valid"))
        if live.unit:
            operations.append(Run(("systemctl", "reload", live.unit)))
        elif live.now.pid:
            pidfile = live.now.values["pidfile"][0]
            operations.append(Run(("sh", "-c", HUP_SCRIPT, "sshd-reload", pidfile, str(live.now.pid)),
                                  says=f"reloaded sshd (SIGHUP to pid {live.now.pid}, listening again)"))
        return operations

    # -- warnings --------------------------------------------------------------------------------

    def warnings(self, spec: _Base, live: SshdLive) -> list[str]:
        found = []
        staged_files = {**live.drop_ins, DROP_IN: render_drop_in(spec.settings())}
        ordered = parse.configuration(live.sshd_config if live.include_first else parse.with_include(live.sshd_config),
                                      staged_files)
        for keyword, wanted in spec.settings().items():
            staged = live.staged.value(keyword)
            if staged == wanted:
                continue
            lines = [d for d in ordered if d.keyword == keyword.lower()]
            first = next((d for d in lines if d.match is None), None)
            if first is not None and first.file != DROP_IN:
                where = f"{first.file} line {first.line} sets it first ({first.value})"
            else:
                match = next((d for d in lines if d.match is not None), None)
                where = (f"a Match block ({match.match}) in {match.file} line {match.line} overrides it"
                         if match else "another setting overrides it")
                where += f" for converge's connection ({live.staged.connection})"
            found.append(f"{keyword}: sshd will use {shown(keyword, staged)}, not {shown(keyword, wanted)}: {where}")
        if not live.unit and not live.now.pid:
            found.append("sshd is not running: the new configuration applies when it starts")
        return found

    # -- connection guard ------------------------------------------------------------------------

    def lockout(self, spec: Any, live: Any, connection: Connection) -> str | None:
        """Why sshd, configured as `spec` stages it, would refuse a new connection like converge's.

        The values are sshd's own (`sshd -T` of the staged configuration, for converge's connection:
        Match blocks resolved). The rule, in sshd's order: the port must be one sshd listens on;
        DenyUsers, AllowUsers, DenyGroups, AllowGroups against the user (and client address) and the
        user's groups (/etc/passwd, /etc/group); root against PermitRootLogin; the way converge
        authenticated against its *Authentication keyword and AuthenticationMethods.
        """
        assert isinstance(live, SshdLive)
        values = live.staged.values
        ports = parse.listen_ports(values.get("listenaddress", [])) or {int(p) for p in values.get("port", ["22"])}
        if connection.port not in ports:
            return f"sshd would listen on port(s) {', '.join(map(str, sorted(ports)))}, not {connection.port}"
        user, client = connection.user, connection.client
        groups = parse.groups_of(user, live.passwd, live.group)
        listed = {key: [w for line in values.get(key, []) for w in line.split()]
                  for key in ("denyusers", "allowusers", "denygroups", "allowgroups")}
        if parse.matches(listed["denyusers"], user, client):
            return f"DenyUsers refuses {user}"
        if listed["allowusers"] and not parse.matches(listed["allowusers"], user, client):
            return f"AllowUsers ({' '.join(listed['allowusers'])}) does not admit {user}"
        if any(parse.matches(listed["denygroups"], group) for group in groups):
            return f"DenyGroups refuses a group of {user} ({' '.join(sorted(groups))})"
        if listed["allowgroups"] and not any(parse.matches(listed["allowgroups"], group) for group in groups):
            shown = " ".join(sorted(groups)) or "none"
            return f"AllowGroups ({' '.join(listed['allowgroups'])}) admits none of {user}'s groups ({shown})"
        method = connection.auth
        if user == "root":
            root = live.staged.value("PermitRootLogin")
            if root in {"no", "forced-commands-only"}:
                return f"PermitRootLogin {root} refuses root"
            if root == "prohibit-password" and method != "publickey":
                return f"PermitRootLogin prohibit-password refuses root logging in with {method}"
        keyword = {"publickey": "PubkeyAuthentication", "password": "PasswordAuthentication",
                   "keyboard-interactive": "KbdInteractiveAuthentication"}.get(method)
        if keyword and live.staged.value(keyword) is False:
            return f"{keyword} no refuses the way converge logged in ({method})"
        lists = live.staged.value("AuthenticationMethods")
        if isinstance(lists, list) and lists and not any(
                all(step.split(":")[0] == method for step in str(methods).split(",")) for methods in lists):
            return f"AuthenticationMethods {' '.join(map(str, lists))} needs more than {method}"
        return None

    def state_paths(self) -> list[str]:
        return [DROP_IN, SSHD_CONFIG]

    def reactivate_argv(self) -> list[list[str]]:
        return [["sh", "-c", RELOAD_SCRIPT]]

    # -- capture ---------------------------------------------------------------------------------

    def capture_reads(self) -> Sequence[Read]:
        return [ReadFile(SSHD_CONFIG), ReadGlob(DROP_IN_GLOB)]

    def capture_more_reads(self, facts: Facts) -> Sequence[Read]:
        return ()

    def capture(self, facts: Facts) -> Captured:
        return capture.capture(facts)
