"""What providers share: a strict base model, value validators, and small parsing helpers.

Providers import these through `converge.provider`. Nothing here knows a subsystem.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, PlainValidator

from converge.errors import ProviderError
from converge.reads import CommandResult, Facts


class StrictModel(BaseModel):
    """A baseline table: unknown keys are errors, and values are never coerced (no "1" for 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ParseError(ProviderError):
    """A tool's file or output that a parser cannot read; the message names where and the line."""

    def __init__(self, where: str, message: str, line: str | None = None) -> None:
        self.where, self.line = where, line
        shown = f": {line.strip()[:120]!r}" if line is not None else ""
        super().__init__(f"{where}: {message}{shown}")


def _validator(check: Callable[[Any], Any], accepts: Any = str) -> Any:
    # PlainValidator: the check sees the raw TOML value (strict mode would refuse before an
    # AfterValidator could explain what is expected); `accepts` is what the JSON schema shows.
    return PlainValidator(check, json_schema_input_type=accepts)


def matching(pattern: re.Pattern[str], what: str) -> Any:
    """A string matching `pattern` entirely; the error says it is not `what`."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(f"not {what}" + (f": {value!r}" if isinstance(value, str) else ""))
        return value

    return _validator(check)


def choice(*allowed: str) -> Any:
    """One of `allowed`, exactly."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"expected one of: {', '.join(allowed)}")
        return value

    return _validator(check, Literal[allowed])


def listed(pattern: re.Pattern[str], what: str, separator: str = " ") -> Any:
    """A TOML array (or one string) of items matching `pattern`, joined by `separator`."""

    def check(value: Any) -> str:
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(item, str) and pattern.fullmatch(item) for item in items):
            raise ValueError(f"expected {what} (one string, or an array of them)")
        return separator.join(items)

    return _validator(check, str | list[str])


_PORT_RANGE = re.compile(r"([0-9]{1,5})(?:([-:])([0-9]{1,5}))?")


def port_range(separator: str = "-", *, allow_zero: bool = False) -> Any:
    """A port (8080, or "8080" as a string) or a range "8080-8090", canonical with `separator`:
    within 1-65535 (0 too when `allow_zero`), low <= high."""

    def check(value: Any) -> str:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        match = _PORT_RANGE.fullmatch(text) if isinstance(text, str) else None
        if not match or (match[2] and match[2] != separator):
            raise ValueError(f'a port is a number (8080) or a range as a string ("8080{separator}8090")')
        low, high = int(match[1]), int(match[3] or match[1])
        if not (0 if allow_zero else 1) <= low <= high <= 65535:
            raise ValueError(f"port range must lie within {0 if allow_zero else 1}-65535 with low <= high, got {text}")
        return str(low) if low == high else f"{low}{separator}{high}"

    return _validator(check, int | str)


def shell_assignments(text: str | None) -> dict[str, str]:
    """`KEY=value` lines of a shell-syntax config file (ufw.conf, /etc/default/*, selinux/config),
    as a shell would read them: quotes removed, `#` comments, `export` allowed; never evaluated.
    A line the shell would not read as one plain assignment is ignored."""
    values: dict[str, str] = {}
    for line in (text or "").splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if words[:1] == ["export"]:
            words = words[1:]
        if len(words) != 1:
            continue
        key, sep, value = words[0].partition("=")
        if sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            values[key] = value
    return values


def output_or_raise(facts: Facts, argv: tuple[str, ...]) -> str:
    """The stdout of a read-only command of the batch; its failure, with the tool's reason, raised."""
    result: CommandResult = facts.command(*argv)
    if not result.ok:
        raise ProviderError(result.failure())
    return result.stdout
