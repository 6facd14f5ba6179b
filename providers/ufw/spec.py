"""The `[ufw]` table: settings and rules in ufw's own terms, validated when the baseline loads."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, model_validator

from converge.provider import StrictModel, matching
from converge.providers.ufw.parse import ANY, UfwRule, address_family, normalize_address

_INTERFACE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_APP = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._+-]{0,63}")
_COMMENT = re.compile(r"[A-Za-z0-9 _.,:;/()@+=-]{0,100}")
_PORT_ITEM = re.compile(r"([0-9]{1,5})(?::([0-9]{1,5}))?")
MAX_MULTIPORT = 15  # iptables multiport takes 15 ports, a range counting as two


def _check_port(value: Any) -> str:
    """ufw's port syntax: `22`, `80,443`, `6000:6007` (a list of ports and `low:high` ranges)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("a port is a number, a range \"6000:6007\" or a list \"80,443\" (as a string)")
    canonical, slots = [], 0
    for item in str(value).split(","):
        match = _PORT_ITEM.fullmatch(item.strip())
        if not match:
            raise ValueError(f"not a port: {item.strip()!r}; use numbers, \"low:high\" ranges, commas between; "
                             "for a service name use `app`")
        low, high = int(match[1]), int(match[2] or match[1])
        if not 1 <= low <= 65535 or not 1 <= high <= 65535:
            raise ValueError(f"port out of range 1-65535: {item.strip()!r}")
        if match[2] and low >= high:
            raise ValueError(f"range {item.strip()!r} must go from low to high")
        canonical.append(f"{low}:{high}" if match[2] else str(low))
        slots += 2 if match[2] else 1
    if slots > MAX_MULTIPORT:
        raise ValueError(f"at most {MAX_MULTIPORT} ports in one rule (a range counts as two)")
    return ",".join(canonical)


def _check_address(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("an address is a string: \"any\", an IPv4/IPv6 address or a network in CIDR form")
    if value == ANY:
        return ANY
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ValueError(f"not \"any\", an address or a network (host bits must be zero): {value!r}") from None
    return normalize_address(value)


Port = Annotated[str, PlainValidator(_check_port)]
Address = Annotated[str, PlainValidator(_check_address)]
InterfaceName = Annotated[str, matching(_INTERFACE, "an interface name (letters, digits, _ . -, at most 15)")]
AppName = Annotated[str, matching(_APP, "an application profile name (letters, digits, spaces, . _ + -)")]
Comment = Annotated[str, matching(_COMMENT, "a comment of at most 100 letters, digits, spaces and _ . , : ; / ( ) @ + = -")]
Policy = Literal["allow", "deny", "reject"]


class UfwRuleSpec(StrictModel):
    """`[[ufw.rules]]`: one rule in ufw's own terms."""

    action: Literal["allow", "deny", "reject", "limit"] = Field(
        description="What the rule does; `limit` allows but refuses an address's 7th connection in 30 s.")
    port: Port | None = Field(default=None, description='The local port: `22`, a list `"80,443"` or a range `"6000:6007"` '
                                                "(a list or range needs `proto`).")
    app: AppName | None = Field(default=None, description="An application profile of /etc/ufw/applications.d instead of "
                                                  "`port`/`proto`.")
    proto: Literal["tcp", "udp", "any"] = Field(default="any", description="The protocol.")
    source: Address = Field(default=ANY, alias="from", description='Where connections come from: "any", an address or a network.')
    to: Address = Field(default=ANY, description='The local address: "any", an address or a network.')
    direction: Literal["in", "out"] = Field(default="in", description="Incoming or outgoing connections.")
    interface: InterfaceName | None = Field(default=None, description="Only on this interface (on the rule's direction's side).")
    comment: Comment = Field(default="", description="ufw's comment for the rule.")
    ensure: Literal["present", "absent"] = Field(default="present", description="`absent` removes the rule if it is there.")

    @model_validator(mode="after")
    def _consistent(self) -> UfwRuleSpec:
        if self.app and (self.port or self.proto != "any"):
            raise ValueError("`app` takes its ports and protocol from the profile: drop `port`/`proto`")
        if self.port and ("," in self.port or ":" in self.port) and self.proto == "any":
            raise ValueError("a port list or range needs proto = \"tcp\" or \"udp\"")
        families = {address_family(self.source), address_family(self.to)} - {None}
        if len(families) > 1:
            raise ValueError("`from` and `to` must be of one address family")
        return self

    def rule(self) -> UfwRule:
        interface = self.interface or ""
        return UfwRule(
            action=self.action, direction=self.direction,
            interface_in=interface if self.direction == "in" else "",
            interface_out=interface if self.direction == "out" else "",
            proto=self.proto, to=self.to, port=self.port or ANY, app=self.app or "",
            source=self.source, comment=self.comment,
        )

    def families(self, ipv6: bool) -> tuple[int, ...]:
        """ufw adds a rule for a specific address only in its family, otherwise in both."""
        family = address_family(self.source) or address_family(self.to)
        return (family,) if family else ((4, 6) if ipv6 else (4,))


class UfwSpec(StrictModel):
    """`[ufw]`; every setting is optional and left alone when absent."""

    enabled: bool | None = Field(default=None, description="Whether ufw's rules are loaded now and at boot.")
    logging: Literal["off", "low", "medium", "high", "full"] | None = Field(default=None, description="ufw's log level.")
    default_incoming: Policy | None = Field(default=None, description="The policy for incoming connections no rule matches.")
    default_outgoing: Policy | None = Field(default=None, description="The policy for outgoing connections no rule matches.")
    # "disabled" is what `ufw status` shows while the kernel does not forward: ufw's policy is deny.
    default_routed: Literal["allow", "deny", "reject", "disabled"] | None = Field(
        default=None, description='The policy for forwarded packets (`"disabled"`, as `ufw status` says, is deny).')
    exclusive: bool = Field(default=False, description="Remove every rule the baseline does not declare.")
    rules: list[UfwRuleSpec] = Field(default=[], description="The rules, in order: ufw applies the first that matches.")

    @model_validator(mode="after")
    def _one_entry_per_rule(self) -> UfwSpec:
        # ufw knows a rule by everything but its action and comment: two entries for one rule
        # would overwrite each other on every apply.
        first: dict[tuple[object, ...], int] = {}
        for index, rule_spec in enumerate(self.rules):
            identity = rule_spec.rule().identity()
            if identity in first:
                raise ValueError(f"rules[{index}] is the same rule as rules[{first[identity]}] "
                                 "(they differ only in action, comment or ensure)")
            first[identity] = index
        return self

    def settings(self) -> dict[str, Any]:
        routed = "deny" if self.default_routed == "disabled" else self.default_routed
        wanted = {"enabled": self.enabled, "logging": self.logging, "default_incoming": self.default_incoming,
                  "default_outgoing": self.default_outgoing, "default_routed": routed}
        return {key: value for key, value in wanted.items() if value is not None}
