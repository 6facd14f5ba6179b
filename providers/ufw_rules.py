"""ufw rules as ufw itself records them, and the pure functions that read ufw's files.

ufw keeps every rule it manages as a `### tuple ###` line in /etc/ufw/user.rules (IPv4) and
/etc/ufw/user6.rules (IPv6); the iptables lines under it are generated from the tuple. Reading the
tuples (not `ufw status`, whose text is for people) gives the exact rule, its order and its family.
"""

from __future__ import annotations

import configparser
import ipaddress
import re
from dataclasses import dataclass

ANY = "any"
ANY_NETWORKS = {"0.0.0.0/0": ANY, "::/0": ANY}
# ufw writes `allow_log` / `route:allow_log-all`; the log part is not a separate field.
_ACTION = re.compile(r"(?P<route>route:)?(?P<action>allow|deny|reject|limit)(?:_(?P<log>log|log-all))?")
_TUPLE = "### tuple ###"
_ASSIGNMENT = re.compile(r'^\s*(?P<key>[A-Z0-9_]+)\s*=\s*"?(?P<value>[^"\n]*)"?\s*$', re.MULTILINE)


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

    def argv(self, *, delete: bool = False) -> list[str]:
        """The `ufw` command that adds (or updates in place) or deletes this rule."""
        argv = ["ufw"] + (["route"] if self.route else []) + (["delete"] if delete else [])
        argv.append(self.action)
        selector = self.selector()
        # ufw wants `log` right after the direction and interface, before proto/from.
        split = selector.index("from") - (2 if "proto" in selector else 0)
        argv += selector[:split] + ([self.log] if self.log else []) + selector[split:]
        if self.comment and not delete:
            argv += ["comment", self.comment]
        return argv


def parse_tuple(line: str) -> UfwRule:
    """A `### tuple ###` line of user.rules/user6.rules (format of ufw 0.36's backend_iptables)."""
    body = line.removeprefix(_TUPLE).strip()
    comment = ""
    if " comment=" in f" {body}":
        body, _, hex_comment = body.partition("comment=")
        comment = bytes.fromhex(hex_comment.strip()).decode("utf-8")
    fields = body.split()
    if len(fields) not in (7, 9):
        raise ValueError(f"unexpected ufw rule tuple: {line.strip()!r}")
    match = _ACTION.fullmatch(fields[0])
    if not match:
        raise ValueError(f"unexpected ufw rule action: {line.strip()!r}")
    proto, port, destination, source_port, source = fields[1:6]
    app, source_app = (fields[6], fields[7]) if len(fields) == 9 else ("-", "-")
    where = fields[-1]
    direction, interface_in, interface_out = where.split("_", 1)[0], "", ""
    for part in where.split("!"):
        side, _, name = part.partition("_")
        if name and side == "in":
            interface_in = name
        elif name and side == "out":
            interface_out = name
    return UfwRule(
        action=match["action"], direction=direction, interface_in=interface_in, interface_out=interface_out,
        route=bool(match["route"]), log=match["log"] or "", proto=proto,
        to=normalize_address(destination), port=port, app="" if app == "-" else app.replace("%20", " "),
        source=normalize_address(source), source_port=source_port,
        source_app="" if source_app == "-" else source_app.replace("%20", " "), comment=comment,
    )


def parse_user_rules(text: str | None) -> list[UfwRule]:
    """The rules of one user rules file, in ufw's order."""
    return [parse_tuple(line) for line in (text or "").splitlines() if line.startswith(_TUPLE)]


def parse_assignments(text: str | None) -> dict[str, str]:
    """`KEY=value` / `KEY="value"` lines of ufw.conf and /etc/default/ufw (shell syntax, no code)."""
    return {match["key"]: match["value"].strip() for match in _ASSIGNMENT.finditer(text or "")}


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


def uncapturable(rule: UfwRule) -> str | None:
    """Why a rule cannot be written as a `[[ufw.rules]]` entry, or None when it can."""
    if rule.route:
        return "route (forwarding) rules are not in the baseline format"
    if rule.source_port != ANY or rule.source_app:
        return "a source port or source application is not in the baseline format"
    if rule.proto not in ("tcp", "udp", ANY):
        return f"protocol {rule.proto} is not in the baseline format (tcp, udp or any)"
    if rule.interface_out if rule.direction == "in" else rule.interface_in:
        return "an interface on the other side of the rule's direction is not in the baseline format"
    return None


def rule_entry(rule: UfwRule) -> dict[str, str | int]:
    """A rule as a `[[ufw.rules]]` entry, leaving out what is the default (for a readable file)."""
    entry: dict[str, str | int] = {"action": rule.action}
    if rule.app:
        entry["app"] = rule.app  # its ports and protocol come from the profile
    else:
        if rule.port != ANY:
            entry["port"] = int(rule.port) if rule.port.isdigit() else rule.port
        if rule.proto != ANY:
            entry["proto"] = rule.proto
    if rule.source != ANY:
        entry["from"] = rule.source
    if rule.to != ANY:
        entry["to"] = rule.to
    if rule.direction != "in":
        entry["direction"] = rule.direction
    if rule.interface_in or rule.interface_out:
        entry["interface"] = rule.interface_in or rule.interface_out
    if rule.comment:
        entry["comment"] = rule.comment
    return entry


def interleave_families(ipv4: list[UfwRule], ipv6: list[UfwRule]) -> tuple[list[UfwRule], list[UfwRule]]:
    """One rule list whose order agrees with both families' files, and the rules that cannot be
    placed in it.

    ufw adds a rule for any address to both files and a rule for one family's address to that
    file only, so both orders usually agree. A rule found in both whose position (after `ufw
    insert`) or action/comment differs between them has no single place; it is returned apart.
    """
    shared = {rule.identity() for rule in ipv4} & {rule.identity() for rule in ipv6}
    order: list[UfwRule] = []
    apart: list[UfwRule] = []
    handled: set[tuple[object, ...]] = set()
    first = second = 0
    while first < len(ipv4) or second < len(ipv6):
        head4 = ipv4[first] if first < len(ipv4) else None
        head6 = ipv6[second] if second < len(ipv6) else None
        if head4 and (head4.identity() in handled or head4.identity() not in shared):
            if head4.identity() not in handled:
                order.append(head4)
            first += 1
        elif head6 and (head6.identity() in handled or head6.identity() not in shared):
            if head6.identity() not in handled:
                order.append(head6)
            second += 1
        elif head4 and head6 and head4.identity() == head6.identity() and head4.verdict() == head6.verdict():
            order.append(head4)
            handled.add(head4.identity())
            first, second = first + 1, second + 1
        else:
            # Two different shared rules at the heads (or one rule with two verdicts): the
            # IPv4 one is set apart, and its IPv6 twin is skipped when reached.
            assert head4 is not None
            apart.append(head4)
            handled.add(head4.identity())
            first += 1
    return order, apart
