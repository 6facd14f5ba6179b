"""Run inside a test host (the repository root on PYTHONPATH): plan BASELINE with a recording
LocalHost, apply PROVIDER's plan, and print the planned operations and what the host was asked to
do, as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from converge.baseline import load_baseline
from converge.engine import plan_host
from converge.errors import ConvergeError
from converge.operations import to_json
from converge.registry import Registry
from tests.recording import Recording


def main() -> None:
    host = Recording()
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
