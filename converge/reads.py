"""What a provider needs to know about a host, declared up front so a host gathers it at once.

A provider returns a list of reads; the engine merges the reads of every provider and hands them
to the host in one `gather` call, which a remote host answers in a single round trip. Reads are
frozen dataclasses, so two providers asking for the same file share one read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from converge.errors import ProviderError


@dataclass(frozen=True)
class ReadFile:
    """The text of a file; None when it does not exist."""

    path: str


@dataclass(frozen=True)
class ReadGlob:
    """The text of every regular file matching a glob, by path, in sorted order."""

    pattern: str


@dataclass(frozen=True)
class RunCommand:
    """The outcome of a read-only command (argv, never a shell string)."""

    argv: tuple[str, ...]


@dataclass(frozen=True)
class Which:
    """The path of an executable on the host's PATH (sbin included); None if missing."""

    name: str


Read = ReadFile | ReadGlob | RunCommand | Which


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failure(self) -> str:
        """One line saying what went wrong, for error messages."""
        detail = (self.stderr.strip() or self.stdout.strip()).splitlines()
        reason = detail[-1] if detail else f"exit status {self.returncode}"
        return f"{self.argv[0]}: {reason}"


@dataclass(frozen=True)
class ReadFailure:
    """A read that failed for another reason than absence (permission, I/O)."""

    reason: str


class Facts:
    """The answers to a batch of reads, with typed accessors for providers."""

    def __init__(self, answers: Mapping[Read, object]) -> None:
        self._answers = dict(answers)

    def _answer(self, read: Read) -> object:
        try:
            answer = self._answers[read]
        except KeyError:
            raise ProviderError(f"internal error: {read} was not gathered") from None
        if isinstance(answer, ReadFailure):
            raise ProviderError(answer.reason)
        return answer

    def file(self, path: str) -> str | None:
        answer = self._answer(ReadFile(path))
        assert answer is None or isinstance(answer, str)
        return answer

    def glob(self, pattern: str) -> dict[str, str]:
        answer = self._answer(ReadGlob(pattern))
        assert isinstance(answer, dict)
        return answer

    def command(self, *argv: str) -> CommandResult:
        answer = self._answer(RunCommand(tuple(argv)))
        assert isinstance(answer, CommandResult)
        return answer

    def which(self, name: str) -> str | None:
        answer = self._answer(Which(name))
        assert answer is None or isinstance(answer, str)
        return answer

    def merged(self, other: Facts) -> Facts:
        return Facts({**self._answers, **other._answers})
