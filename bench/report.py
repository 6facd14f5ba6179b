"""The results tables and the targets, written by the tool between two markers of a README."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bench.measure import Series

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
START, END = "<!-- results:start (written by python -m bench) -->", "<!-- results:end -->"
CORES = os.cpu_count() or 1


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr.strip()
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    return {"cpu": f"{cpu}, {CORES} cores", "memory": f"{memory_kib // 1024 // 1024} GiB", "kernel": platform.release(),
            "python": platform.python_version(), "openssh": ssh.split(",")[0], "load at start": load}


def converge_version() -> str:
    from importlib.metadata import version

    from converge import __version__

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    return f"{__version__} ({commit}), paramiko {version('paramiko')}, pydantic {version('pydantic')}"


def _seconds(series: Series) -> str:
    values = sorted(run.seconds for run in series.runs)
    return f"{series.median('seconds'):.2f} s ({values[0]:.2f}–{values[-1]:.2f}, n={len(values)})"


def scenario_table(title: str, results: dict[str, Series], baseline: str = "converge") -> list[str]:
    """One table: medians (min to max, n), ratio to converge, CPU on both sides, sessions, peak memory."""
    present = {name: series for name, series in results.items() if series.runs}
    if not present:
        return []
    baseline = baseline if baseline in present else next(iter(present))
    reference = present[baseline].median("seconds")
    lines = [f"**{title}**", "",
             f"| tool | median wall time (min–max, n) | × {baseline} | controller CPU | hosts' CPU | SSH sessions / host | "
             "peak RSS (largest process) | changes reported |",
             "|---|---|---|---|---|---|---|---|"]
    for name, series in present.items():
        changes = sorted({run.changes for run in series.runs}, key=str)
        lines.append(
            f"| {name} | {_seconds(series)} | {series.median('seconds') / reference:.2f} | "
            f"{series.median('cpu_seconds'):.2f} s | {series.median('host_cpu_seconds'):.2f} s | "
            f"{series.median('sessions_per_host'):g} | {series.median('peak_rss_kib') / 1024:.0f} MiB | "
            f"{', '.join(map(str, changes))} |"
        )
    return [*lines, ""]


def fleet_table(fleet: dict[int, dict[str, Series]], only: tuple[str, ...]) -> list[str]:
    """Per host count: converge against the floor, CPU on both sides, and the wall time the two cores
    need for that CPU alone (controller + hosts' sshd and sessions, all on this machine)."""
    if not fleet:
        return []
    lines = [f"**4. No-op plan of ubuntu-web ({', '.join(only)}) on N hosts at once** "
             "(converge `--forks N`; floor: N paramiko connects and one exec each, in threads)", "",
             "| hosts | converge (min–max, n) | floor | × floor | floor + converge's reads | × that | × converge on 1 host | "
             "controller CPU | CPU per extra host | hosts' CPU | CPU-bound wall (all CPU / cores) | peak RSS |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    one = fleet[min(fleet)]["converge"]
    for count, results in sorted(fleet.items()):
        converge, floor = results["converge"], results["floor"]
        cpu = converge.median("cpu_seconds")
        extra = (cpu - one.median("cpu_seconds")) / (count - 1) * 1000 if count > 1 else 0.0
        bound = (cpu + converge.median("host_cpu_seconds")) / CORES
        lines.append(
            f"| {count} | {_seconds(converge)} | {floor.median('seconds'):.2f} s | "
            f"{converge.median('seconds') / floor.median('seconds'):.2f} | {_with_reads(results)} | "
            f"{converge.median('seconds') / one.median('seconds'):.2f} | "
            f"{cpu:.2f} s | {extra:.1f} ms | {converge.median('host_cpu_seconds'):.2f} s | {bound:.2f} s | "
            f"{converge.median('peak_rss_kib') / 1024:.0f} MiB |")
    return [*lines, ""]


def _with_reads(results: dict[str, Series]) -> str:
    reads = results.get("floor+reads")
    if reads is None or not reads.runs:
        return "– | –"
    return f"{reads.median('seconds'):.2f} s | {results['converge'].median('seconds') / reads.median('seconds'):.2f}"


TITLES = {"ubuntu-web": "ubuntu-web (shipped baseline)", "rhel-web": "rhel-web (shipped baseline)",
          "selinux-scale": "SELinux: 50 booleans, 10 file contexts, 5 ports"}


def tables(one_host: dict[str, dict[str, dict[str, Series]]], fleet: dict[int, dict[str, Series]],
           only: tuple[str, ...]) -> list[list[str]]:
    out = []
    for number, (workload, scenarios) in enumerate(one_host.items(), start=1):
        out.append(scenario_table(f"{number}a. {TITLES[workload]}: no-op plan, 1 host", scenarios["plan"]))
        if "apply" in scenarios:
            out.append(scenario_table(f"{number}b. {TITLES[workload]}: apply after drift, 1 host", scenarios["apply"]))
    out.append(fleet_table(fleet, only))
    return out


def _hosts_bound(results: dict[str, Series]) -> str:
    """What a 1-host time is made of, measured: the floor running converge's reads, and the hosts' CPU."""
    converge = results["converge"]
    reads = results.get("floor+reads")
    hosts = (f"the hosts' CPU {converge.median('host_cpu_seconds'):.2f} s (their own tools) "
             f"of {converge.median('seconds'):.2f} s wall")
    if reads is None or not reads.runs:
        return hosts
    return (f"the hosts' reads: the floor running converge's read script takes {reads.median('seconds'):.2f} s; "
            f"converge {converge.median('seconds') / reads.median('seconds'):.2f}× that; {hosts}")


def targets(one_host: dict[str, dict[str, dict[str, Series]]], fleet: dict[int, dict[str, Series]]) -> list[str]:
    """Issue 21's targets, each with its measured figure, met or not, and what bounds a missed one."""
    lines = ["**Targets (issue 21)**, on median wall time unless said", "",
             "| target | measured | met | what bounds it (measured in the same run) |", "|---|---|---|---|"]

    def target(name: str, measured: str, met: bool, bound: str = "") -> None:
        lines.append(f"| {name} | {measured} | {'met' if met else 'not met'} | {'' if met else bound} |")

    for workload, scenarios in one_host.items():
        for scenario, results in scenarios.items():
            if not results.get("converge") or not results["converge"].runs:
                continue
            converge = results["converge"].median("seconds")
            for peer, factor in (("ansible", 20), ("pyinfra", 7)):
                if results.get(peer) and results[peer].runs:
                    ratio = results[peer].median("seconds") / converge
                    target(f"≥ {factor}× {peer}, {workload} {scenario}", f"{ratio:.1f}×", ratio >= factor,
                           _hosts_bound(results))
        plan = scenarios["plan"]
        if workload == "ubuntu-web" and plan.get("floor") and plan["floor"].runs:
            ratio = plan["converge"].median("seconds") / plan["floor"].median("seconds")
            with_reads = plan["converge"].median("seconds") / plan["floor+reads"].median("seconds")
            target("≤ 1.3× the paramiko floor, ubuntu-web no-op plan, 1 host",
                   f"{ratio:.2f}× (× the floor running converge's read script: {with_reads:.2f})", ratio <= 1.3,
                   _hosts_bound(plan))
        if workload == "selinux-scale":
            cpu = plan["converge"].median("host_cpu_seconds")
            target("SELinux plan (50 booleans, 10 fcontexts, 5 ports) ≤ 0.5 s of host CPU", f"{cpu:.2f} s", cpu <= 0.5)
    if fleet:
        largest, smallest = max(fleet), min(fleet)
        converge, floor = fleet[largest]["converge"], fleet[largest]["floor"]
        ratio = converge.median("seconds") / floor.median("seconds")
        reads = fleet[largest].get("floor+reads")
        beside = f" (× the floor running converge's read script: {converge.median('seconds') / reads.median('seconds'):.2f})" \
            if reads and reads.runs else ""
        cpu_bound = (converge.median("cpu_seconds") + converge.median("host_cpu_seconds")) / CORES
        shared = (f"the {CORES} cores: the hosts' CPU {converge.median('host_cpu_seconds'):.1f} s and the controller's "
                  f"{converge.median('cpu_seconds'):.1f} s need {cpu_bound:.1f} s of wall on them "
                  f"(the floor's hosts: {floor.median('host_cpu_seconds'):.1f} s)")
        target(f"{largest} hosts ≤ 2× the {largest}-host floor", f"{ratio:.2f}×{beside}", ratio <= 2, shared)
        scale = converge.median("seconds") / fleet[smallest]["converge"].median("seconds")
        target(f"{largest} hosts ≤ 5× converge's 1-host time", f"{scale:.2f}×", scale <= 5, shared)
        if largest > smallest:
            def per_host(series: dict[str, Series]) -> float:
                return (series[largest].median("cpu_seconds") - series[smallest].median("cpu_seconds")) / (largest - smallest)
            extra = per_host({n: results["converge"] for n, results in fleet.items()})
            floor_extra = per_host({n: results["floor"] for n, results in fleet.items()})
            bound = (f"paramiko: the floor (a connect, one exec) costs {floor_extra * 1000:.1f} ms of controller CPU "
                     "per extra host by itself")
            if all(results.get("floor+reads") and results["floor+reads"].runs for results in fleet.values()):
                reads_extra = per_host({n: results["floor+reads"] for n, results in fleet.items()})
                bound += f", {reads_extra * 1000:.1f} ms when it runs converge's read script"
            target("controller CPU ≤ 10 ms per extra host", f"{extra * 1000:.1f} ms", extra <= 0.010, bound)
        rss = converge.median("peak_rss_kib") / 1024
        target(f"peak RSS ≤ 150 MiB at {largest} hosts", f"{rss:.0f} MiB", rss <= 150,
               f"the floor's process (paramiko, {largest} transports) peaks at {floor.median('peak_rss_kib') / 1024:.0f} MiB")
    return [*lines, ""]


def render(meta: dict[str, object], tables: list[list[str]], notes: list[str]) -> str:
    header = [
        f"Measured {meta['date']} by `{meta['command'].strip()}` in {meta['duration']}.",  # type: ignore[union-attr]
        "",
        "| | |", "|---|---|",
        *(f"| {key} | {value} |" for key, value in meta["machine"].items()),  # type: ignore[union-attr]
        f"| load at end | {meta['load at end']} |",
        *([f"| fleet stopped | {meta['fleet stopped']} |"] if "fleet stopped" in meta else []),
        *(f"| {key} | {value} |" for key, value in meta["versions"].items()),  # type: ignore[union-attr]
        "",
        "Controller CPU: user+system of the tool's process tree; hosts' CPU: of the SSH sessions' processes "
        "on the hosts (each host's sshd's reaped children). Both run on the same cores here.",
        "",
    ]
    body = [line for table in tables for line in table]
    return "\n".join([START, *header, *body, *notes, END])


def write(path: Path, text: str) -> None:
    """Replace what is between the markers of `path` (or append the section if it has none)."""
    current = path.read_text() if path.exists() else ""
    if START in current and END in current:
        before, _, rest = current.partition(START)
        _, _, after = rest.partition(END)
        path.write_text(before + text + after)
    else:
        path.write_text(current + ("\n" if current else "") + text + "\n")


def save_raw(meta: dict[str, object], raw: dict[str, object]) -> Path:
    directory = REPO / "bench" / ".work"
    directory.mkdir(parents=True, exist_ok=True)
    raw_path = directory / f"results-{meta['date']}.json".replace(":", "")
    raw_path.write_text(json.dumps(raw, indent=2))
    return raw_path


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ")
