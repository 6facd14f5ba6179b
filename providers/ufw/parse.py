"""ufw rules as ufw itself records them, and the pure functions that read ufw's files and output.

ufw keeps every rule it manages as a `### tuple ###` line in /etc/ufw/user.rules (IPv4) and
/etc/ufw/user6.rules (IPv6); the iptables lines under it are generated from the tuple. Reading the
tuples (not `ufw status`, whose text is for people) gives the exact rule, its order and its family.
Parsers raise only `ParseError`, naming the file and the line.
"""

from __future__ import annotations

import configparser
import ipaddress
import re
from dataclasses import dataclass

from converge.provider import ParseError

ANY = "any"
ANY_NETWORKS = {"0.0.0.0/0": ANY, "::/0": ANY}
# ufw writes `allow_log` / `route:allow_log-all`; the log part is not a separate field.
_ACTION = re.compile(r"(?P<route>route:)?(?P<action>allow|deny|reject|limit)(?:_(?P<log>log|log-all))?")
_TUPLE = "### tuple ###"


def normalize_address(text: str) -> str:
    """`any`, a bare address for a single host (ufw drops /32 and /128), else the network."""
    if text in ANY_NETWORKS or text == ANY:
        return ANY
    network = ipaddress.ip_network(text, strict=False)
    if network.num_addresses == 1:
        return str(network.network_address)
    return str(network)


def address_family(text: str) -> int | None:
    """4 or 6 for an address or network, None for `any`."""
    return None if text == ANY else ipaddress.ip_network(text, strict=False).version


@dataclass(frozen=True)
class UfwRule:
    """One ufw rule in one address family, field for field as in ufw's tuple."""

    action: str
    direction: str = "in"
    interface_in: str = ""
    interface_out: str = ""
    route: bool = False
    log: str = ""
    proto: str = ANY
    to: str = ANY
    port: str = ANY
    app: str = ""
    source: str = ANY
    source_port: str = ANY
    source_app: str = ""
    comment: str = ""

    def identity(self) -> tuple[object, ...]:
        """What ufw itself compares to find "the same rule": all but action, log and comment.

        An application rule's protocol and ports come from its profile, so they are not part of it.
        """
        uses_app = bool(self.app or self.source_app)
        return (
            self.route, self.direction, self.interface_in, self.interface_out,
            None if uses_app else self.proto, self.to, None if self.app else self.port, self.app,
            self.source, None if self.source_app else self.source_port, self.source_app,
        )

    def verdict(self) -> str:
        """The action and comment: what an update of an existing rule changes."""
        return self.action + (f" # {self.comment}" if self.comment else "")

    def selector(self) -> list[str]:
        """The rule in ufw's command syntax, without action and comment (`in proto tcp from any …`)."""
        words = [self.direction]
        interface = self.interface_in if self.direction == "in" else self.interface_out
        if self.route and self.interface_in and self.interface_out:
            words = ["in", "on", self.interface_in, "out", "on", self.interface_out]
        elif interface:
            words += ["on", interface]
        elif self.route:
            # ufw refuses a route rule's direction without an interface ("Invalid interface clause
            # for route rule"), though it records one in the tuple.
            words = []
        if self.proto != ANY and not (self.app or self.source_app):
            words += ["proto", self.proto]
        words += ["from", self.source]
        if self.source_app:
            words += ["app", self.source_app]
        elif self.source_port != ANY:
            words += ["port", self.source_port]
        words += ["to", self.to]
        if self.app:
            words += ["app", self.app]
        elif self.port != ANY:
            words += ["port", self.port]
        return words

    def describe(self) -> str:
        return ("route " if self.route else "") + " ".join(self.selector())

    def named(self) -> str:
        """The rule with its action, as ufw's commands say it: `limit in proto tcp from any to any port 22`."""
        return ("route " if self.route else "") + " ".join([self.action, *self.selector()])

    def argv(self, *, delete: bool = False, position: int | None = None) -> list[str]:
        """The `ufw` command that adds (or updates in place), inserts at `position` or deletes this rule."""
        argv = ["ufw"] + (["route"] if self.route else []) + (["delete"] if delete else [])
        argv += ["insert", str(position)] if position is not None else []
        argv.append(self.action)
        selector = self.selector()
        # ufw wants `log` right after the direction and interface, before proto/from.
        split = selector.index("from") - (2 if "proto" in selector else 0)
        argv += selector[:split] + ([self.log] if self.log else []) + selector[split:]
        if self.comment and not delete:
            argv += ["comment", self.comment]
        return argv


def parse_tuple(line: str, where: str = "user.rules") -> UfwRule:
    """A `### tuple ###` line of user.rules/user6.rules (format of ufw 0.36's backend_iptables)."""
    body = line.removeprefix(_TUPLE).strip()
    comment = ""
    if " comment=" in f" {body}":
        body, _, hex_comment = body.partition("comment=")
        try:
            comment = bytes.fromhex(hex_comment.strip()).decode("utf-8")
        except ValueError:
            raise ParseError(where, "a rule comment that is not hex-encoded UTF-8", line) from None
    fields = body.split()
    if len(fields) not in (6, 7, 8, 9):
        raise ParseError(where, "unexpected ufw rule tuple (bad length)", line)
    if len(fields) in (6, 8):  # ufw's old format, without the direction: ufw reads it as `in`
        fields.append("in")
    match = _ACTION.fullmatch(fields[0])
    if not match:
        raise ParseError(where, "unexpected ufw rule action", line)
    proto, port, destination, source_port, source = fields[1:6]
    app, source_app = (fields[6], fields[7]) if len(fields) == 9 else ("-", "-")
    where_field = fields[-1]
    if "_" in where_field and not re.fullmatch(r"(in|out)_\S+|in_\w+!out_\w+", where_field):
        raise ParseError(where, "unexpected ufw rule tuple (interface)", line)
    direction, interface_in, interface_out = where_field.split("_", 1)[0], "", ""
    for part in where_field.split("!"):
        side, _, name = part.partition("_")
        if name and side == "in":
            interface_in = name
        elif name and side == "out":
            interface_out = name
    try:
        to, source = normalize_address(destination), normalize_address(source)
    except ValueError:
        raise ParseError(where, "a rule address that is not an address or a network", line) from None
    return UfwRule(
        action=match["action"], direction=direction, interface_in=interface_in, interface_out=interface_out,
        route=bool(match["route"]), log=match["log"] or "", proto=proto,
        to=to, port=port, app="" if app == "-" else app.replace("%20", " "),
        source=source, source_port=source_port,
        source_app="" if source_app == "-" else source_app.replace("%20", " "), comment=comment,
    )


def read_user_rules(text: str | None, where: str = "user.rules") -> tuple[list[UfwRule], list[str]]:
    """The rules of one user rules file (`where`, for messages), in ufw's order, and a warning
    per tuple skipped. ufw itself skips a tuple it cannot read ("WARN: Skipping malformed
    tuple") and goes on with the others; so does converge, saying which file and line."""
    rules: list[UfwRule] = []
    skipped: list[str] = []
    carriage_return = next((number for number, line in enumerate((text or "").split("\n"), start=1) if "\r" in line), None)
    if carriage_return is not None:
        # A file saved with CRLF line ends: ufw reads its tuples, but iptables-restore refuses the
        # file ("table name 'filter\r' invalid"), so ufw cannot load any of its rules.
        skipped.append(f"{where} line {carriage_return}: ends in a carriage return (CRLF line ends); iptables-restore "
                       "refuses the file, so ufw cannot load its rules: rewrite it with LF line ends")
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.startswith(_TUPLE):
            continue
        try:
            rules.append(parse_tuple(line, where))
        except ParseError as error:
            reason = str(error).removeprefix(f"{where}: ")
            skipped.append(f"{where} line {number}: {reason}; ufw skips this tuple, and so does converge")
    return rules, skipped


def parse_user_rules(text: str | None, where: str = "user.rules") -> list[UfwRule]:
    """The rules of one user rules file, in ufw's order (skipping what ufw skips, see `read_user_rules`)."""
    return read_user_rules(text, where)[0]


def parse_status_active(output: str) -> bool:
    """`ufw status` says `Status: active` when ufw's chains are loaded in the kernel."""
    return any(line.strip() == "Status: active" for line in output.splitlines())


@dataclass(frozen=True)
class PortRange:
    proto: str  # tcp | udp | any
    low: int
    high: int

    def admits(self, port: int, proto: str) -> bool:
        return self.proto in (ANY, proto) and self.low <= port <= self.high


def port_ranges(port: str, proto: str) -> list[PortRange]:
    """`22`, `80,443`, `6000:6007` (ufw syntax) as ranges; `any` is every port."""
    if port == ANY:
        return [PortRange(proto, 0, 65535)]
    ranges = []
    for item in port.split(","):
        low, _, high = item.partition(":")
        ranges.append(PortRange(proto, int(low), int(high or low)))
    return ranges


def parse_app_profiles(files: dict[str, str]) -> dict[str, list[PortRange]]:
    """Application profiles of /etc/ufw/applications.d: name -> the ports it opens.

    `ports=80,443/tcp|53/udp|6000:6007/tcp`; a spec without /proto means tcp and udp.
    """
    profiles: dict[str, list[PortRange]] = {}
    for text in files.values():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(text)
        except configparser.Error:
            continue  # ufw skips a profile file it cannot parse; so do we
        for name in parser.sections():
            ranges = []
            for spec in parser.get(name, "ports", fallback="").split("|"):
                ports, _, proto = spec.strip().partition("/")
                if ports:
                    ranges += port_ranges(ports, proto or ANY)
            profiles[name] = ranges
    return profiles
