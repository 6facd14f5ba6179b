"""Inventories: named hosts with their targets and baselines, grouped, selected with --limit.

```toml
[hosts.web1]
target = "ssh://root@203.0.113.10"    # default: the name itself, resolved through ~/.ssh/config
baseline = "baselines/ubuntu-web.toml" # relative to this file; default: the group's, then the CLI's

[groups.web]
hosts = ["web1", "web2"]
baseline = "baselines/ubuntu-web.toml"
```
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from converge.baseline import Locator, parse_toml_file, validation_problems
from converge.errors import BaselineError, ConvergeError, HostError, Problem

_NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _check_name(name: str) -> str:
    if not name or not set(name) <= _NAME_CHARACTERS or name.startswith("-"):
        raise ValueError("names are letters, digits, '.', '_' and '-' (not starting with '-')")
    return name


def _check_target(target: str) -> str:
    if target != "local":
        from converge.hosts.ssh import SSHTarget

        try:
            SSHTarget.parse(target)
        except HostError as error:
            raise ValueError(str(error)) from None
    return target


Name = Annotated[str, AfterValidator(_check_name)]
Target = Annotated[str, AfterValidator(_check_target)]


class InventoryHost(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    target: Target | None = None
    baseline: str | None = None


class InventoryGroup(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    hosts: list[Name] = []
    baseline: str | None = None


class InventoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    hosts: dict[Name, InventoryHost] = {}
    groups: dict[Name, InventoryGroup] = {}


@dataclass(frozen=True)
class InventoryEntry:
    name: str
    target: str
    baseline: Path | None
    groups: tuple[str, ...]


def load_inventory(path: Path) -> list[InventoryEntry]:
    """Hosts of an inventory file in file order; raises BaselineError with file, line and key."""
    source = parse_toml_file(Path(path))
    locator = Locator([source])
    try:
        inventory = InventoryFile.model_validate(source.data)
    except ValidationError as error:
        raise BaselineError(validation_problems(error, (), locator, InventoryFile)) from None
    problems: list[Problem] = []
    member_of: dict[str, list[str]] = {}
    for group_name, group in inventory.groups.items():
        for index, host_name in enumerate(group.hosts):
            if host_name not in inventory.hosts:
                problems.append(locator.problem(("groups", group_name, "hosts", index), f"no host {host_name!r} in [hosts]"))
            member_of.setdefault(host_name, []).append(group_name)
    if problems:
        raise BaselineError(problems)
    entries = []
    for name, host in inventory.hosts.items():
        groups = member_of.get(name, [])
        baseline = host.baseline or next((inventory.groups[g].baseline for g in groups if inventory.groups[g].baseline), None)
        entries.append(InventoryEntry(
            name, host.target or name, source.path.parent / baseline if baseline else None, tuple(groups),
        ))
    return entries


def limit_hosts(entries: Sequence[InventoryEntry], patterns: Sequence[str]) -> list[InventoryEntry]:
    """Hosts whose name or one of whose groups matches a pattern (globs, comma-separated lists)."""
    wanted = [pattern.strip() for text in patterns for pattern in text.split(",") if pattern.strip()]
    if not wanted:
        return list(entries)
    selected = [
        entry for entry in entries
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in wanted for name in (entry.name, *entry.groups))
    ]
    if not selected:
        raise ConvergeError(f"--limit {','.join(wanted)} matches no host of the inventory")
    return selected

