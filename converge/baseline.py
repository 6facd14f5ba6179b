"""Baselines: TOML files composed with `extends`, validated into one typed spec per provider.

Every problem is reported with the file that wrote the offending key, its line and the key,
and nothing is validated against a host here: a baseline is checked before any host is touched.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from converge.errors import BaselineError, Problem
from converge.registry import Registry
from converge.tomlsource import Loc, SourceMap, format_key, key_path

META_TABLE = "baseline"
# Keys every provider table accepts; the engine, not the provider, acts on them.
REQUIRED_KEY = "required"
# Values of keys with this name are files relative to the baseline that declares them.
SOURCE_KEY = "source"


class BaselineMeta(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = None
    description: str | None = None
    extends: list[str] = []


@dataclass(frozen=True)
class ProviderTable:
    spec: BaseModel
    required: bool


@dataclass(frozen=True)
class Baseline:
    path: Path
    name: str
    description: str | None
    tables: dict[str, ProviderTable]
    files: tuple[Path, ...]
    # SHA-256 over the files' contents, in merge order: which baseline a report or plan came from.
    digest: str


@dataclass(frozen=True)
class TomlSource:
    path: Path
    data: dict[str, Any]
    lines: SourceMap


class Locator:
    """Finds which file, and which line of it, wrote a key of the merged baseline."""

    def __init__(self, sources: Sequence[TomlSource]) -> None:
        self._sources = list(reversed(sources))  # later files win, so they are asked first

    def where(self, loc: Loc) -> tuple[Path, int | None]:
        for depth in range(len(loc), 0, -1):
            for source in self._sources:
                line = source.lines.line_of(loc[:depth])
                if line:
                    return source.path, line
        return self._sources[0].path, None

    def problem(self, loc: Loc, message: str) -> Problem:
        path, line = self.where(loc)
        return Problem(path, line, format_key(loc) if loc else None, message)


def allowed_root(top: Path) -> Path:
    """Where a baseline's `extends` and `source` files may live: the git repository holding the
    top baseline, or its directory when it is in none. Other people write baselines; they must not
    make converge read (and print in an error) the operator's other files."""
    directory = top.resolve().parent
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():
            return candidate
    return directory


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root)


def parse_toml_file(path: Path, included_from: Problem | None = None) -> TomlSource:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if included_from:
            raise BaselineError([_with(included_from, f"no such file: {path}")]) from None
        raise BaselineError([Problem(path, None, None, "no such file")]) from None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise BaselineError([Problem(path, None, None, f"cannot read: {reason}")]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise BaselineError([_syntax_problem(path, text, error)]) from None
    return TomlSource(path, data, SourceMap(text))


def _with(problem: Problem, message: str) -> Problem:
    return Problem(problem.file, problem.line, problem.key, message)


def _syntax_problem(path: Path, text: str, error: tomllib.TOMLDecodeError) -> Problem:
    # tomllib says "Invalid value (at line 3, column 9)". Only a `.toml` file is shown (its key and
    # line): a file that is no baseline (credentials, /proc/self/environ) is named, never quoted.
    message = str(error)
    line = getattr(error, "lineno", None)
    if line is None and "(at line " in message:
        line = int(message.rsplit("(at line ", 1)[1].split(",", maxsplit=1)[0].rstrip(")"))
    reason = message.split(" (at ", maxsplit=1)[0]
    if path.suffix != ".toml":
        return Problem(path, line, None, f"invalid TOML: {reason} (not a .toml file: its text is not shown)")
    source_lines = text.splitlines()
    written = source_lines[line - 1].strip() if line and line <= len(source_lines) else ""
    written_key = key_path(written.split("=")[0]) if "=" in written else None
    key = format_key(written_key) if written_key else None
    shown = f" in `{written[:80]}`" if written and written.isprintable() else ""
    return Problem(path, line, key, f"invalid TOML: {reason}{shown}")


def _load_chain(path: Path, root: Path, stack: tuple[Path, ...] = (),
                included_from: Problem | None = None) -> list[TomlSource]:
    """The file and everything it extends, in merge order (extended files first)."""
    # Paths are shown as the user wrote them, but compared resolved to find cycles.
    path = Path(os.path.normpath(path))
    resolved = path.resolve()
    if resolved in stack:
        cycle = " -> ".join(str(p) for p in (*stack[stack.index(resolved):], resolved))
        assert included_from is not None
        raise BaselineError([_with(included_from, f"extends cycle: {cycle}")])
    source = parse_toml_file(path, included_from)
    meta_data = source.data.get(META_TABLE, {})
    locator = Locator([source])
    if not isinstance(meta_data, dict):
        raise BaselineError([locator.problem((META_TABLE,), "must be a table")])
    try:
        meta = BaselineMeta.model_validate(meta_data)
    except ValidationError as error:
        raise BaselineError(validation_problems(error, (META_TABLE,), locator, BaselineMeta)) from None
    chain: list[TomlSource] = []
    for index, relative in enumerate(meta.extends):
        here = locator.problem((META_TABLE, "extends"), "")
        here = Problem(here.file, here.line, f"{META_TABLE}.extends[{index}]", "")
        extended = path.parent / relative
        if PurePosixPath(relative).is_absolute() or not _inside(extended, root):
            raise BaselineError([_with(here, f"must be a file inside {root} (the baseline's repository or directory), "
                                             f"got {relative!r}")])
        chain += _load_chain(extended, root, (*stack, resolved), here)
    return [*chain, source]


def _merge(into: dict[str, Any], data: dict[str, Any]) -> None:
    """Tables merge key by key; any other value (arrays included) is replaced by the later file."""
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, dict):
            into[key] = {}
            _merge(into[key], value)
        else:
            into[key] = value


def _source_keys(node: Any, loc: Loc) -> Iterator[tuple[Loc, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == SOURCE_KEY and not isinstance(value, dict | list):
                yield (*loc, key), value
            else:
                yield from _source_keys(value, (*loc, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _source_keys(value, (*loc, index))


def _resolve_sources(table: dict[str, Any], loc: Loc, locator: Locator, root: Path | None = None) -> list[Problem]:
    """Turn `source` values into absolute paths, relative to the file that declared them."""
    problems = []
    for key_loc, value in _source_keys(table, loc):
        if not isinstance(value, str):
            problems.append(locator.problem(key_loc, "must be a path (a string)"))
            continue
        relative = PurePosixPath(value)
        if relative.is_absolute() or ".." in relative.parts or not value.strip():
            problems.append(locator.problem(key_loc, f"must be a path inside the baseline's directory, got {value!r}"))
            continue
        declared_in, _ = locator.where(key_loc)
        resolved = declared_in.parent / relative
        inside = root or allowed_root(declared_in)
        if not _inside(resolved, inside):  # a symlink committed next to the baseline
            problems.append(locator.problem(key_loc, f"must be a file inside {inside}, got {value!r} (a symlink out of it)"))
            continue
        if not resolved.is_file():
            problems.append(locator.problem(key_loc, f"no such file: {resolved}"))
            continue
        node: Any = table
        for part in key_loc[len(loc):-1]:
            node = node[part]
        node[SOURCE_KEY] = str(resolved.resolve())
    return problems


def _model_field_names(model: type[BaseModel], seen: set[type] | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    names = set()
    for name, info in model.model_fields.items():
        names.add(info.alias or name)
        pending = [info.annotation]
        while pending:
            annotation = pending.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                names |= _model_field_names(annotation, seen)
            pending += list(get_args(annotation))
    return names


def _describe(error: dict[str, Any], known_keys: set[str]) -> str:
    kind, message = str(error["type"]), str(error["msg"])
    if kind == "extra_forbidden":
        name = str(error["loc"][-1])
        close = difflib.get_close_matches(name, sorted(known_keys), n=1)
        return "unknown key" + (f"; did you mean {close[0]!r}?" if close else "")
    if kind == "missing":
        return "required key is missing"
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = message[0].lower() + message[1:] if message else message
    if kind not in {"value_error", "assertion_error"} and "input" in error and not isinstance(error["input"], dict):
        shown = json.dumps(error["input"], default=str)
        message += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    return message


def validation_problems(error: ValidationError, prefix: Loc, locator: Locator, model: type[BaseModel]) -> list[Problem]:
    known = _model_field_names(model)
    problems = []
    for item in error.errors():
        # Dict-key errors end in "[key]"; the key itself is the location the user wrote.
        loc = tuple(part for part in item["loc"] if part != "[key]")
        # RootModel errors start with "root"; TOML has no such level.
        loc = loc[1:] if loc[:1] == ("root",) else loc
        problems.append(locator.problem((*prefix, *loc), _describe(dict(item), known)))
    return problems


def load_baseline(path: Path, registry: Registry) -> Baseline:
    """Read, compose and validate a baseline; raises BaselineError listing every problem."""
    root = allowed_root(Path(path))
    sources = _load_chain(Path(path), root)
    locator = Locator(sources)
    merged: dict[str, Any] = {}
    for source in sources:
        _merge(merged, source.data)
    meta = merged.pop(META_TABLE, {})
    problems: list[Problem] = []
    tables: dict[str, ProviderTable] = {}
    for name, table in merged.items():
        if name not in registry:
            close = difflib.get_close_matches(name, [*registry.names(), META_TABLE], n=1)
            hint = f"did you mean [{close[0]}]?" if close else f"installed providers: {', '.join(registry.names())}"
            problems.append(locator.problem((name,), f"unknown table; {hint}"))
            continue
        if not isinstance(table, dict):
            problems.append(locator.problem((name,), "must be a table"))
            continue
        required = table.pop(REQUIRED_KEY, False)
        if not isinstance(required, bool):
            problems.append(locator.problem((name, REQUIRED_KEY), "must be true or false"))
        source_problems = _resolve_sources(table, (name,), locator, root)
        if source_problems:
            problems += source_problems
            continue
        model = registry.get(name).spec_model
        try:
            spec = model.model_validate(table)
        except ValidationError as error:
            problems += validation_problems(error, (name,), locator, model)
            continue
        tables[name] = ProviderTable(spec, required is True)
    for name in tables:
        for other in registry.get(name).conflicts:
            if other in tables and name < other:
                problems.append(locator.problem((other,), f"[{name}] and [{other}] manage the same subsystem: declare only one"))
    if problems:
        raise BaselineError(problems)
    top = sources[-1].path
    files = tuple(source.path for source in sources)
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()
    return Baseline(top, meta.get("name") or top.stem, meta.get("description"), tables, files, digest)
