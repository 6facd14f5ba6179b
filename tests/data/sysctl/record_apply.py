"""Run inside a test host: plan BASELINE with a recording LocalHost, apply the sysctl plan, and
print the planned operations and what the host was asked to do, as JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from converge.baseline import load_baseline
from converge.engine import plan_host
from converge.errors import ConvergeError
from converge.hosts.local import LocalHost
from converge.operations import to_json
from converge.reads import CommandResult
from converge.registry import Registry


class RecordingHost(LocalHost):
    def __init__(self) -> None:
        super().__init__()
        self.done: list[dict[str, object]] = []

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True) -> CommandResult:
        self.done.append({"op": "run", "argv": list(argv), "input": input})
        return super().run(argv, input=input, check=check)

    def write_file(self, path: str, content: str, *, mode: int = 0o644) -> str | None:
        self.done.append({"op": "write", "path": path, "content": content})
        return super().write_file(path, content, mode=mode)

    def remove_file(self, path: str) -> str | None:
        self.done.append({"op": "remove", "path": path})
        return super().remove_file(path)


def main() -> None:
    host = RecordingHost()
    run = plan_host(host, load_baseline(Path(sys.argv[1]), Registry()), Registry())
    provider_run = next(p for p in run.provider_plans if p.provider.name == sys.argv[2])
    host.done.clear()
    error = None
    try:
        provider_run.provider.apply(host, provider_run.plan)
    except ConvergeError as failure:
        error = str(failure)
    print(json.dumps({"planned": [to_json(op) for op in provider_run.plan.operations], "done": host.done, "error": error}))


if __name__ == "__main__":
    main()
