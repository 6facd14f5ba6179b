"""Data-driven provider cases: a host's answers to the reads, the baseline, the plan it gives.

    tests/cases/<provider>/<case>/
        baseline.toml    what is declared
        reads.json       {"source": where the answers came from, "answers": [{"read": ..., "answer": ...}]}
        expected.json    the plan: changes, operations, warnings, errors, skipped

`tests/test_cases.py` plans every case against its recorded answers and compares with expected.json
(CONVERGE_WRITE_CASES=1 writes it instead, for review with git diff). Record a case from a real host,
inside a test host, with `python -m tests.cases record BASELINE CASE_DIR "where this came from"`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from converge.baseline import load_baseline
from converge.engine import plan_host
from converge.hosts import Host
from converge.hosts.local import LocalHost
from converge.reads import CommandResult, Facts, Read, ReadFailure, read_from_json, read_to_json
from converge.registry import Registry

CASES = Path(__file__).parent / "cases"


def answer_to_json(answer: object) -> Any:
    if isinstance(answer, CommandResult):
        return {"returncode": answer.returncode, "stdout": answer.stdout, "stderr": answer.stderr}
    if isinstance(answer, ReadFailure):
        return {"failure": answer.reason}
    if isinstance(answer, dict):
        return {"files": answer}
    return answer


def answer_from_json(read: Read, record: Any) -> object:
    if isinstance(record, dict) and "failure" in record:
        return ReadFailure(record["failure"])
    if isinstance(record, dict) and "files" in record:
        return dict(record["files"])
    if isinstance(record, dict) and "returncode" in record:
        argv = read_to_json(read)["command"]
        return CommandResult(tuple(argv), record["returncode"], record["stdout"], record["stderr"])
    return record


class RecordedHost(Host):
    """A host that answers reads from a case's reads.json and refuses to be changed."""

    def __init__(self, answers: dict[Read, object]) -> None:
        super().__init__("case", "case")
        self.answers = answers

    def gather(self, reads: Iterable[Read]) -> Facts:
        return Facts({read: self.answers.get(read, ReadFailure(f"{read} is not in the case's reads.json")) for read in reads})

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True) -> CommandResult:
        raise AssertionError("a case never runs commands")

    def lock(self, holder: str, wait: float = 0.0) -> None:
        raise AssertionError("a case is only planned; plans take no lock")

    def read_file(self, path: str) -> str | None:
        raise AssertionError("a case never reads outside the batch")

    def write_file(self, path: str, content: str, *, mode: int = 0o644) -> str | None:
        raise AssertionError("a case never writes")

    def remove_file(self, path: str) -> str | None:
        raise AssertionError("a case never removes")


def load_answers(case: Path) -> dict[Read, object]:
    document = json.loads((case / "reads.json").read_text(encoding="utf-8"))
    answers = {}
    for item in document["answers"]:
        read = read_from_json(item["read"])
        answers[read] = answer_from_json(read, item["answer"])
    return answers


def planned(case: Path) -> dict[str, Any]:
    """The plan of a case, as compared with expected.json."""
    baseline = load_baseline(case / "baseline.toml", Registry())
    record = plan_host(RecordedHost(load_answers(case)), baseline, Registry()).plan.as_json()
    # Keys that most cases lack are compared only where present.
    return {key: record.get(key, []) for key in ("changes", "operations", "warnings", "skipped")} | {
        key: record[key] for key in ("not_applicable",) if key in record} | {
        "error": record["error"]}


class _RecordingLocalHost(LocalHost):
    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[Read, object] = {}

    def gather(self, reads: Iterable[Read]) -> Facts:
        reads = list(reads)
        facts = super().gather(reads)
        self.seen.update(facts.answers())
        return facts


def record(baseline: Path, case: Path, source: str) -> None:
    """Plan `baseline` on this machine (run it inside a test host!) and write the case."""
    case.mkdir(parents=True, exist_ok=True)
    host = _RecordingLocalHost()
    plan_host(host, load_baseline(baseline, Registry()), Registry())
    answers = [{"read": read_to_json(read), "answer": answer_to_json(answer)} for read, answer in host.seen.items()]
    document = {"source": source, "answers": answers}
    (case / "reads.json").write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if not (case / "baseline.toml").exists():
        (case / "baseline.toml").write_text(baseline.read_text(encoding="utf-8"), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "record":
        sys.exit("usage: python -m tests.cases record BASELINE CASE_DIR SOURCE")
    record(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
