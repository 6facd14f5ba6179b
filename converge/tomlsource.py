"""Where each key of a TOML document was written.

tomllib gives values but no positions, and a baseline error must name its line. This module
scans the text line by line and lets tomllib itself parse every key and header it meets (so
quoting and dotted keys follow the TOML grammar exactly); only the line structure is its own.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Sequence

Loc = tuple[str | int, ...]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def format_key(loc: Sequence[str | int]) -> str:
    """A location as the user would write it: `ufw.rules[2].port`, `sysctl."kernel.x"`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            # Non-bare keys are quoted with every control and non-ASCII character escaped, so a
            # hostile key can neither forge output lines nor hide behind a homoglyph.
            name = part if _BARE_KEY.match(part) else json.dumps(part)
            text += f".{name}" if text else name
    return text


def _dotted(loc: Sequence[str | int]) -> str:
    # Quoted "a.b" and bare a.b name the same sysctl once flattened, so lookups compare the
    # dotted spelling rather than the tuple.
    return ".".join(f"[{part}]" if isinstance(part, int) else part for part in loc)


def key_path(text: str) -> tuple[str, ...] | None:
    """The path of a TOML key such as `a."b.c".d`, parsed by tomllib; None if not a key."""
    try:
        document = tomllib.loads(f"{text} = 0")
    except tomllib.TOMLDecodeError:
        return None
    path: list[str] = []
    node: object = document
    while isinstance(node, dict) and len(node) == 1:
        (name, node), = node.items()
        path.append(name)
    return tuple(path) if node == 0 else None


class _ValueScanner:
    """Whether a value is still open (in a multi-line string, an array, an inline table) after
    each line, in one pass over the text: asking tomllib again for every added line was quadratic
    in the value's length."""

    def __init__(self) -> None:
        self.depth = 0
        self.string: str | None = None  # the delimiter of the open multi-line string

    def feed(self, text: str) -> bool:
        """Take one more line; True once the value is complete."""
        index = 0
        while index < len(text):
            index = self._in_string(text, index) if self.string else self._outside(text, index)
        return self.string is None and self.depth <= 0

    def _in_string(self, text: str, index: int) -> int:
        assert self.string is not None
        quote = self.string[0]
        if text[index] == "\\" and quote == '"':
            return index + 2
        if text[index] != quote:
            return index + 1
        end = index
        while end < len(text) and text[end] == quote:
            end += 1
        if end - index >= 3:  # up to two quotes may end the content, right before the delimiter
            self.string = None
        return end

    def _outside(self, text: str, index: int) -> int:
        character = text[index]
        if character == "#":
            return len(text)
        if text.startswith(('"""', "'''"), index):
            self.string = text[index:index + 3]
            return index + 3
        if character == '"':
            index += 1
            while index < len(text) and text[index] != '"':
                index += 2 if text[index] == "\\" else 1
            return index + 1
        if character == "'":
            end = text.find("'", index + 1)
            return len(text) if end < 0 else end + 1
        if character in "[{":
            self.depth += 1
        elif character in "]}":
            self.depth -= 1
        return index + 1


def _split_key_value(line: str) -> tuple[tuple[str, ...], str] | None:
    for match in re.finditer("=", line):
        path = key_path(line[: match.start()])
        if path:
            return path, line[match.end():]
    return None


def _header(line: str) -> tuple[tuple[str, ...], bool] | None:
    """(path, is_array_of_tables) for a `[table]` or `[[array]]` header line."""
    array = line.startswith("[[")
    opening, closing = ("[[", "]]") if array else ("[", "]")
    end = line.rfind(closing)
    if end < 0:
        return None
    path = key_path(line[len(opening):end])
    return (path, array) if path else None


class SourceMap:
    """Line numbers of the tables and keys of one TOML text."""

    def __init__(self, text: str) -> None:
        self._lines: dict[str, int] = {}
        self._scan(text.splitlines())

    def _record(self, loc: Loc, line: int) -> None:
        self._lines.setdefault(_dotted(loc), line)

    def _scan(self, lines: list[str]) -> None:
        table: Loc = ()
        array_index: dict[tuple[str, ...], int] = {}
        number = 0
        while number < len(lines):
            stripped = lines[number].strip()
            number += 1
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.startswith("["):
                header = _header(stripped)
                if header is None:
                    continue
                path, is_array = header
                # A header below an array of tables refers to that array's latest element.
                resolved: list[str | int] = []
                for depth, name in enumerate(path):
                    resolved.append(name)
                    prefix = path[: depth + 1]
                    if prefix in array_index and (depth < len(path) - 1 or not is_array):
                        resolved.append(array_index[prefix])
                if is_array:
                    array_index[path] = array_index.get(path, -1) + 1
                    self._record(tuple(resolved), number)
                    resolved.append(array_index[path])
                table = tuple(resolved)
                for depth in range(1, len(table) + 1):
                    self._record(table[:depth], number)
                continue
            split = _split_key_value(stripped)
            if split is None:
                continue
            path, value = split
            first_line = number
            # Multi-line strings and arrays: skip their lines, which hold no keys.
            scanner = _ValueScanner()
            complete = scanner.feed(value)
            while not complete and number < len(lines):
                complete = scanner.feed(lines[number])
                number += 1
            for depth in range(1, len(path) + 1):
                self._record(table + path[:depth], first_line)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The line where `loc` was written, or None if this text does not write it."""
        return self._lines.get(_dotted(loc))
