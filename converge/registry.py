"""Installed providers, found through the `converge.providers` entry-point group.

Built-in providers are registered exactly like third-party ones. A provider module is imported
only when a baseline uses its table, so a plan pays for the providers it needs and no more.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from converge.errors import ConvergeError
from converge.provider import Provider

ENTRY_POINT_GROUP = "converge.providers"


class Registry:
    def __init__(self) -> None:
        self._entry_points: dict[str, EntryPoint] = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        self._loaded: dict[str, Provider[Any, Any]] = {}

    def names(self) -> list[str]:
        return sorted(self._entry_points)

    def __contains__(self, name: str) -> bool:
        return name in self._entry_points

    def origin(self, name: str) -> str:
        """Which distribution and object provide `name`, for `converge providers`."""
        entry_point = self._entry_points[name]
        dist = entry_point.dist
        package = f"{dist.name} {dist.version}" if dist else "?"
        return f"{package} ({entry_point.value})"

    def get(self, name: str) -> Provider[Any, Any]:
        if name not in self._loaded:
            entry_point = self._entry_points[name]
            try:
                provider_class = entry_point.load()
                provider = provider_class()
            except Exception as error:  # a broken plugin must not look like a converge bug
                raise ConvergeError(f"provider {name!r} ({entry_point.value}) failed to load: {error}") from error
            if not isinstance(provider, Provider) or provider.name != name:
                raise ConvergeError(f"provider {name!r} ({entry_point.value}) is not a converge Provider named {name!r}")
            self._loaded[name] = provider
        return self._loaded[name]
