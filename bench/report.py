"""The results table, written by the tool into the project README.md between two markers."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bench.measure import Series

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- results:start (written by python -m bench) -->", "<!-- results:end -->"


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr.strip()
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    return {"cpu": f"{cpu}, {os.cpu_count()} cores", "memory": f"{memory_kib // 1024 // 1024} GiB", "kernel": platform.release(),
            "python": platform.python_version(), "openssh": ssh.split(",")[0], "load at start": load}


def converge_version() -> str:
    from importlib.metadata import version

    from converge import __version__

    commit = subprocess.run(["git", "-C", str(README.parent), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    return f"{__version__} ({commit}), paramiko {version('paramiko')}, pydantic {version('pydantic')}"


def _seconds(series: Series) -> str:
    values = sorted(run.seconds for run in series.runs)
    return f"{series.median('seconds'):.2f} s ({values[0]:.2f}–{values[-1]:.2f}, n={len(values)})"


def scenario_table(title: str, results: dict[str, Series], baseline: str = "converge") -> list[str]:
    """One table: medians (min to max, n), ratio to converge, sessions and peak memory."""
    present = {name: series for name, series in results.items() if series.runs}
    if not present:
        return []
    baseline = baseline if baseline in present else next(iter(present))
    reference = present[baseline].median("seconds")
    lines = [f"**{title}**", "",
             f"| tool | median wall time (min–max, n) | × {baseline} | median CPU time | × {baseline} | SSH sessions / host | "
             "connections / host | peak RSS (largest process) | changes reported |",
             "|---|---|---|---|---|---|---|---|---|"]
    reference_cpu = present[baseline].median("cpu_seconds")
    for name, series in present.items():
        changes = sorted({run.changes for run in series.runs}, key=str)
        lines.append(
            f"| {name} | {_seconds(series)} | {series.median('seconds') / reference:.2f} | "
            f"{series.median('cpu_seconds'):.2f} s | {series.median('cpu_seconds') / reference_cpu:.2f} | "
            f"{series.median('sessions_per_host'):g} | {series.median('connections_per_host'):g} | "
            f"{series.median('peak_rss_kib') / 1024:.0f} MiB | {', '.join(map(str, changes))} |"
        )
    return [*lines, ""]


def render(meta: dict[str, object], tables: list[list[str]], notes: list[str]) -> str:
    header = [
        f"Measured {meta['date']} by `{meta['command']}` (parts: {meta['parts']}).",
        "",
        "| | |", "|---|---|",
        *(f"| {key} | {value} |" for key, value in meta["machine"].items()),  # type: ignore[union-attr]
        *(f"| {key} | {value} |" for key, value in meta["versions"].items()),  # type: ignore[union-attr]
        "",
    ]
    body = [line for table in tables for line in table]
    return "\n".join([START, *header, *body, *notes, END])


def write(meta: dict[str, object], tables: list[list[str]], notes: list[str], raw: dict[str, object]) -> Path:
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    README.write_text(before + render(meta, tables, notes) + after)
    raw_path = README.parent / "bench" / ".work" / f"results-{meta['date']}.json".replace(":", "")
    raw_path.write_text(json.dumps(raw, indent=2))
    return raw_path


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ")
