"""The provider interface: one subsystem, one baseline table, the same verbs for all.

A provider declares the reads it needs (gathered for the whole host in one round trip), turns
their answers into live state, diffs desired against live into `Change` records, and applies
exactly those changes through the host. It never prints and never knows the transport.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from converge.hosts import Host
from converge.plan import Change
from converge.reads import Facts, Read

SpecT = TypeVar("SpecT", bound=BaseModel)


@dataclass
class Captured:
    """A host's current state as a provider's baseline table (plain TOML-able data)."""

    table: dict[str, Any]
    # What was seen but deliberately left out, and why (said to the user, not written).
    notes: list[str] = field(default_factory=list)

LiveT = TypeVar("LiveT")


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
        """What `absent` needs, whatever the spec (gathered for plans and captures alike)."""
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
    def diff(self, spec: SpecT, live: LiveT) -> list[Change]:
        """The changes that make the host match the spec; empty when in sync."""

    def warnings(self, spec: SpecT, live: LiveT) -> list[str]:
        """Things an admin should know that no change of ours can fix."""
        return []

    @abstractmethod
    def apply(self, host: Host, spec: SpecT, live: LiveT, changes: Sequence[Change]) -> list[str]:
        """Carry out `changes` (from `diff` on this same `live`); returns what was done."""

    # Capture (`converge capture`, `converge diff`): optional. Reads come in up to two rounds,
    # because what to read next can depend on what the first round found.
    can_capture: ClassVar[bool] = False

    def capture_reads(self) -> Sequence[Read]:
        return ()

    def capture_more_reads(self, facts: Facts) -> Sequence[Read]:
        return ()

    def capture(self, facts: Facts) -> Captured:
        """The host's state as a table that, planned against the same host, is in sync."""
        raise NotImplementedError
