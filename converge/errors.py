"""Errors with a message meant for the user; the CLI prints them as one or a few lines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class ConvergeError(Exception):
    """Anything converge reports to the user instead of a traceback."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a baseline, located as precisely as the source allows."""

    file: Path
    line: int | None
    key: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else f"{self.file}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class BaselineError(ConvergeError):
    """A baseline that cannot be used; carries every problem found, each with file and line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


class HostError(ConvergeError):
    """The host could not be reached or did not do what was asked."""


class ProviderError(ConvergeError):
    """A provider found the host in a state it cannot plan or apply against."""
