"""Operations: the exact steps a provider's apply carries out, computed at plan time.

A provider's plan is its `Change` records (what differs, for people and scripts) plus the list of
operations that make the host match (for the host). Apply runs the operations and nothing else, so
a plan saved to a file and applied later runs exactly what was reviewed. Operations are plain data
(JSON in a saved plan), and each may carry the operations that undo it: when a later step fails,
every step tried so far is undone in reverse order, so a failed apply leaves the host as it was.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any

from converge.errors import ConvergeError, ProviderError
from converge.hosts import Host


@dataclass(frozen=True)
class Run:
    """Run a command (argv, never a shell string), optionally with `input` on its stdin."""

    argv: tuple[str, ...]
    input: str | None = None
    # What apply reports once it succeeded; default: the command line.
    says: str | None = None
    # Output that means failure although the tool exits 0 (firewall-cmd's "Warning: INVALID_...").
    fails_on: str | None = None
    undo: tuple[Operation, ...] = ()
    # What the command is about (a profile, a module), named in its error: several checks may
    # share one argv with different input.
    about: str | None = None
    # A check that changes nothing (a compile, `sshd -t` on a staged copy): consecutive checks all
    # run before apply stops, so every refusal is reported at once.
    check: bool = False


@dataclass(frozen=True)
class Write:
    """Replace a file atomically, with a backup of what it replaces (`mode` for a new file)."""

    path: str
    content: str
    mode: int = 0o644
    says: str | None = None
    undo: tuple[Operation, ...] = ()


@dataclass(frozen=True)
class Remove:
    """Remove a file after backing it up."""

    path: str
    says: str | None = None
    undo: tuple[Operation, ...] = ()


Operation = Run | Write | Remove


def restore(path: str, previous: str | None, mode: int = 0o644) -> Operation:
    """The operation that puts `path` back as it was read at plan time (None: it did not exist)."""
    return Remove(path) if previous is None else Write(path, previous, mode)


def wrote(path: str, backup: str | None) -> str:
    """How apply reports a file it wrote."""
    return f"wrote {path}" + (f" (previous version in {backup})" if backup else "")


def command_line(argv: Sequence[str]) -> str:
    """A command as people read it: `sh -c SCRIPT NAME ARGS...` (a script of converge's own) by its
    name and arguments, not by the script's text."""
    if len(argv) >= 4 and argv[0] == "sh" and argv[1] == "-c":
        return " ".join(argv[3:])
    return " ".join(argv)


def describe(operation: Operation) -> str:
    """One line for people: the command, or the file and its size."""
    match operation:
        case Run(argv, input=text):
            line = command_line(argv)
            return line + (f" < ({len(text.encode())} bytes)" if text else "")
        case Write(path, content):
            return f"write {path} ({len(content.encode())} bytes)"
        case Remove(path):
            return f"remove {path}"


def _carry_out(host: Host, operation: Operation) -> str:
    match operation:
        case Run(argv, input=text, says=says, fails_on=fails_on, about=about):
            result = host.run(argv, input=text, check=False)
            problem = re.search(fails_on, result.stderr + result.stdout, re.MULTILINE) if fails_on else None
            if not result.ok or problem:
                reason = problem[0] if problem else result.failure()
                raise ProviderError((f"{about}: " if about else "") + f"`{command_line(argv)}` failed: {reason}")
            return says or command_line(argv)
        case Write(path, content, mode=mode, says=says):
            backup = host.write_file(path, content, mode=mode)
            return says or wrote(path, backup)
        case Remove(path, says=says):
            backup = host.remove_file(path)
            return says or f"removed {path}" + (f" (previous version in {backup})" if backup else "")


def execute(host: Host, operations: Sequence[Operation]) -> list[str]:
    """Carry out `operations` in order; returns what each did.

    When one fails, the undo steps of every operation tried (the failing one included: a command
    may have half-worked) run in reverse order, and the error says so, with the tool's reason.
    """
    done: list[str] = []
    tried: list[Operation] = []
    refused: list[str] = []  # failed checks, reported together once the run of checks ends
    for operation in operations:
        is_check = isinstance(operation, Run) and operation.check
        if refused and not is_check:
            break
        tried.append(operation)
        try:
            done.append(_carry_out(host, operation))
        except ConvergeError as error:
            if is_check:
                refused.append(str(error))
                continue
            raise ProviderError(f"{error}{_undo(host, tried)}") from error
    if refused:
        raise ProviderError("; ".join(refused) + _undo(host, tried))
    return done


def _undo(host: Host, tried: Sequence[Operation]) -> str:
    steps = [step for operation in reversed(tried) for step in operation.undo]
    if not steps:
        return ""
    failed = []
    for step in steps:
        try:
            _carry_out(host, step)
        except ConvergeError as error:
            failed.append(str(error))
    if failed:
        return "; undoing it failed too: " + "; ".join(failed)
    return "; what was done before it was undone"


# Saved plans hold operations as JSON: {"op": "run", "argv": [...], ...}, defaults left out.
_KINDS: dict[str, type[Run] | type[Write] | type[Remove]] = {"run": Run, "write": Write, "remove": Remove}


def to_json(operation: Operation) -> dict[str, Any]:
    kind = next(name for name, cls in _KINDS.items() if isinstance(operation, cls))
    record: dict[str, Any] = {"op": kind}
    for spec in fields(operation):
        value = getattr(operation, spec.name)
        if spec.name == "undo":
            if value:
                record["undo"] = [to_json(step) for step in value]
        elif spec.default is MISSING or value != spec.default:
            record[spec.name] = list(value) if isinstance(value, tuple) else value
    return record


def from_json(record: Any) -> Operation:
    """An operation from its JSON record; raises ValueError for anything malformed."""
    if not isinstance(record, dict) or record.get("op") not in _KINDS:
        raise ValueError(f"not an operation: {record!r:.80}")
    fields = {key: value for key, value in record.items() if key != "op"}
    if "argv" in fields:
        argv = fields["argv"]
        if not isinstance(argv, list) or not argv or not all(isinstance(part, str) for part in argv):
            raise ValueError("an operation's argv must be a non-empty list of strings")
        fields["argv"] = tuple(argv)
    fields["undo"] = tuple(from_json(step) for step in fields.get("undo", []))
    try:
        operation = _KINDS[record["op"]](**fields)
    except TypeError as error:
        raise ValueError(f"malformed {record['op']} operation: {error}") from None
    for name, value in vars(operation).items():
        expected = {"mode": int, "argv": tuple, "undo": tuple, "check": bool}.get(name, str)
        if value is not None and not isinstance(value, expected):
            raise ValueError(f"malformed {record['op']} operation: {name} must be {expected.__name__}")
    return operation
