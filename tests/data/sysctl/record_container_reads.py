"""Add the container reads (issue 16 defect 4) to the recorded sysctl cases: run inside a plain
netns test host, as the cases were recorded: `python -m tests.data.sysctl.record_container_reads CASE...`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from converge.hosts.local import LocalHost
from converge.provider import ReadFile, RunCommand
from converge.providers.sysctl.provider import CONTAINER_PROBE, MOUNTINFO
from converge.reads import read_to_json
from tests.cases import answer_to_json

if __name__ == "__main__":
    reads = [ReadFile(MOUNTINFO), RunCommand(CONTAINER_PROBE)]
    answers = LocalHost().gather(reads).answers()
    for case in sys.argv[1:]:
        path = Path(case) / "reads.json"
        document = json.loads(path.read_text(encoding="utf-8"))
        known = [item for item in document["answers"] if item["read"] not in [read_to_json(r) for r in reads]]
        document["answers"] = known + [{"read": read_to_json(r), "answer": answer_to_json(answers[r])} for r in reads]
        if "container reads" not in document["source"]:
            document["source"] += "; container reads (mountinfo, netns probe) recorded in a plain netns test host"
        path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
