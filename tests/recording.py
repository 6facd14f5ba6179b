"""A LocalHost that records every command, write and removal it carries out (and still does them),
for tests that compare what apply did with the operations the plan listed. Scripts run inside a
test host import it with the repository root on sys.path."""

from __future__ import annotations

from collections.abc import Sequence

from converge.hosts.local import LocalHost
from converge.reads import CommandResult


class Recording(LocalHost):
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
