"""What a provider needs to know about a host, declared up front so a host gathers it at once.

A provider returns a list of reads; the engine merges the reads of every provider and hands them
to the host in one `gather` call, which a remote host answers in a single round trip. Reads are
frozen dataclasses, so two providers asking for the same file share one read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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


# How many of a failed command's last output lines an error message keeps.
REASON_LINES = 6


def describe_read(read: Read) -> str:
    """A read as people name it: `file /etc/x`, `command sysctl -a`."""
    match read:
        case ReadFile(path):
            return f"file {path}"
        case ReadGlob(pattern):
            return f"files {pattern}"
        case RunCommand(argv):
            return "command " + " ".join(argv)
        case Which(name):
            return f"command -v {name}"
    raise TypeError(f"unknown read {read!r}")


def read_to_json(read: Read) -> dict[str, Any]:
    match read:
        case ReadFile(path):
            return {"file": path}
        case ReadGlob(pattern):
            return {"glob": pattern}
        case RunCommand(argv):
            return {"command": list(argv)}
        case Which(name):
            return {"which": name}
    raise TypeError(f"unknown read {read!r}")


def read_from_json(record: Any) -> Read:
    """A read from its JSON record; raises ValueError for anything else."""
    if isinstance(record, dict) and len(record) == 1:
        (kind, value), = record.items()
        if kind == "command" and isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return RunCommand(tuple(value))
        if isinstance(value, str) and kind == "file":
            return ReadFile(value)
        if isinstance(value, str) and kind == "glob":
            return ReadGlob(value)
        if isinstance(value, str) and kind == "which":
            return Which(value)
    raise ValueError(f"not a read: {record!r:.80}")


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
        """What went wrong, in the tool's own words, for error messages: its last few lines
        (tools such as semodule print the reason before a bare "Failed!")."""
        detail = [line.strip() for line in (self.stderr.strip() or self.stdout.strip()).splitlines() if line.strip()]
        reason = " / ".join(detail[-REASON_LINES:]) if detail else f"exit status {self.returncode}"
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

    def fingerprint(self, read: Read) -> str:
        """A digest of one answer: equal digests, equal answers (a saved plan's staleness check)."""
        answer = self._answers.get(read)
        if isinstance(answer, CommandResult):
            answer = [answer.returncode, answer.stdout, answer.stderr]
        elif isinstance(answer, ReadFailure):
            answer = {"failure": answer.reason}
        text = json.dumps(answer, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()

    def reads(self) -> list[Read]:
        return list(self._answers)

    def answers(self) -> dict[Read, object]:
        """Every answer as gathered, failures included (for recording test cases)."""
        return dict(self._answers)

    def merged(self, other: Facts) -> Facts:
        return Facts({**self._answers, **other._answers})
