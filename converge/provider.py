"""The provider interface: one subsystem, one baseline table, the same verbs for all.

A provider declares the reads it needs (gathered for the whole host in one round trip), turns
their answers into live state, diffs desired against live into `Change` records, and applies
exactly those changes through the host. It never prints and never knows the transport.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel

from converge.hosts import Host
from converge.plan import Change
from converge.reads import Facts, Read

SpecT = TypeVar("SpecT", bound=BaseModel)
LiveT = TypeVar("LiveT")


class Provider(ABC, Generic[SpecT, LiveT]):
    """Base class of every provider; register a subclass under the `converge.providers`
    entry-point group with the name of the baseline table it owns."""

    name: ClassVar[str]
    summary: ClassVar[str]
    spec_model: ClassVar[type[BaseModel]]

    def reads(self, spec: SpecT) -> Sequence[Read]:
        """Everything to gather before `absent` and `live` are asked."""
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
