"""The provider interface: one subsystem, one baseline table, the same verbs for all.

A provider declares the reads it needs (gathered for the whole host in one round trip), turns
their answers into live state, and diffs desired against live into a `ProviderPlan`: the `Change`
records people and scripts read, and the operations apply will run. Apply receives that plan and
nothing else, so what runs is what was shown. A provider never prints and never knows the transport.

Everything a provider needs from the engine is importable from here (see `converge.toolkit`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from converge.errors import ProviderError
from converge.hosts import Connection, Host
from converge.operations import Operation, Remove, Run, Write, execute, restore, wrote
from converge.plan import Change, Side
from converge.reads import CommandResult, Facts, Read, ReadFile, ReadGlob, RunCommand, Which
from converge.toolkit import (
    ParseError,
    StrictModel,
    choice,
    listed,
    matching,
    output_or_raise,
    port_range,
    shell_assignments,
)

SpecT = TypeVar("SpecT", bound=BaseModel)
LiveT = TypeVar("LiveT")

__all__ = [
    "Captured", "Capturing", "Change", "CommandResult", "Connection", "ConnectionGuard", "Facts", "Host", "Operation",
    "ParseError", "Provider", "ProviderError", "ProviderPlan", "Read", "ReadFile", "ReadGlob", "Remove", "Run",
    "RunCommand", "Side", "StrictModel", "Which", "Write", "choice", "execute", "listed", "matching",
    "output_or_raise", "port_range", "restore", "shell_assignments", "wrote",
]


@dataclass
class ProviderPlan:
    """What one provider will do to one host: the changes shown, and the operations that make them."""

    changes: list[Change] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)


@dataclass
class Captured:
    """A host's current state as a provider's baseline table (plain TOML-able data)."""

    table: dict[str, Any]
    # What was seen but deliberately left out, and why (said to the user, not written).
    notes: list[str] = field(default_factory=list)
    # Whether the subsystem is in use (enabled, running) on the host; None when it cannot tell.
    # Of two conflicting providers (ufw, firewalld) capture keeps the one in use.
    active: bool | None = None


class Provider(ABC, Generic[SpecT, LiveT]):
    """Base class of every provider; register a subclass under the `converge.providers`
    entry-point group with the name of the baseline table it owns."""

    name: ClassVar[str]
    summary: ClassVar[str]
    spec_model: ClassVar[type[BaseModel]]
    # Tables that must not appear in the same baseline (two providers managing one subsystem).
    conflicts: ClassVar[tuple[str, ...]] = ()
    # Providers apply in ascending order (ties: baseline order). Lower for what others build
    # on; higher for state other subsystems' tools also touch, so it is set last.
    apply_order: ClassVar[int] = 50

    def presence_reads(self) -> Sequence[Read]:
        """What `absent` needs, whatever the spec. The engine always gathers these with the other
        reads (plan, apply and capture alike): never repeat them in `reads` or `capture_reads`."""
        return ()

    def reads(self, spec: SpecT) -> Sequence[Read]:
        """Everything else `live` needs, for this spec."""
        return ()

    def absent(self, facts: Facts) -> str | None:
        """Why this subsystem is missing on the host (the provider is then skipped), or None."""
        return None

    @abstractmethod
    def live(self, spec: SpecT, facts: Facts) -> LiveT:
        """The host's current state, as far as the baseline cares; raises ProviderError."""

    @abstractmethod
    def diff(self, spec: SpecT, live: LiveT) -> ProviderPlan:
        """The changes that make the host match the spec, and the operations that carry them out;
        both empty when in sync."""

    def warnings(self, spec: SpecT, live: LiveT) -> list[str]:
        """Things an admin should know that no change of ours can fix."""
        return []

    def not_applicable(self, spec: SpecT, live: LiveT) -> dict[str, str]:
        """The declared resources this host cannot have (a container cannot set a kernel-global
        key), by name, with the reason; plan leaves them alone, or fails when the table says
        `required = true`."""
        return {}

    def apply(self, host: Host, plan: ProviderPlan) -> list[str]:
        """Carry out `plan.operations`, exactly; returns what was done. Override only to report
        more (a count from a tool's output), never to compute other work."""
        return execute(host, plan.operations)


@runtime_checkable
class Capturing(Protocol):
    """Optional capability: `converge capture` and `converge diff` of a host. Reads come in up to two
    rounds, because what to read next can depend on what the first round found."""

    def capture_reads(self) -> Sequence[Read]:
        ...  # pragma: no cover - protocol

    def capture_more_reads(self, facts: Facts) -> Sequence[Read]:
        ...  # pragma: no cover - protocol

    def capture(self, facts: Facts) -> Captured:
        """The host's state as a table that, planned against the same host, is in sync."""
        ...  # pragma: no cover - protocol


@runtime_checkable
class ConnectionGuard(Protocol):
    """Optional capability of a provider that can cut converge off the host (a firewall, sshd):
    the engine refuses a change that would, and applies the rest under a commit-confirm watchdog."""

    def lockout(self, spec: Any, live: Any, connection: Connection) -> str | None:
        """Why the state `spec` describes would refuse a new `connection` like converge's, or None."""
        ...  # pragma: no cover - protocol

    def state_paths(self) -> list[str]:
        """Files and directories holding the whole persistent state."""
        ...  # pragma: no cover - protocol

    def reactivate_argv(self) -> list[list[str]]:
        """Commands that make restored files live again."""
        ...  # pragma: no cover - protocol
