"""`python -m bench.profile`: where the time of one `converge plan` over SSH goes.

On one SSH test host settled to the workload: medians of the wall time of the plan and of its
parts measured as separate processes (interpreter start, imports, the remote batch script, the
paramiko floor), the import time per top-level package (`python -X importtime`) and converge's
own functions under cProfile. Written into the project README.md between the profile markers.
"""

from __future__ import annotations

import argparse
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench import report, workload
from bench.tools import FLOOR_SCRIPT
from converge.hosts.remote_script import batch_script
from converge.providers.sysctl import SysctlProvider, SysctlSpec
from tests.sshnet import SSHNetwork
from tests.testhost import TestHost

START, END = "<!-- profile:start (written by python -m bench.profile) -->", "<!-- profile:end -->"
ENV = {"HOME": "/root", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
IMPORTS = "import converge.cli, converge.hosts.ssh, converge.providers.sysctl"
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


def median_seconds(host: TestHost, argv: list[str], runs: int, stdin: str | None = None) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        host.run(argv, check=False, env=ENV, input=stdin)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def import_time_by_package(runs: list[str]) -> list[tuple[str, float]]:
    """Self import time summed per top-level package, in ms, median over runs, heaviest first."""
    per_run: dict[str, list[float]] = defaultdict(list)
    for stderr in runs:
        totals: dict[str, float] = defaultdict(float)
        for match in IMPORT_LINE.finditer(stderr):
            totals[match.group(4).split(".")[0]] += int(match.group(1)) / 1000
        for name, total in totals.items():
            per_run[name].append(total)
    medians = {name: statistics.median(values + [0.0] * (len(runs) - len(values))) for name, values in per_run.items()}
    return sorted(medians.items(), key=lambda item: -item[1])


def converge_functions(profile: Path, limit: int) -> list[tuple[str, float]]:
    """converge's own functions by cumulative time, in ms."""
    stats = pstats.Stats(str(profile))
    rows = []
    for (filename, line, function), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "/converge/" in filename and "site-packages" not in filename and function != "<module>":
            rows.append((f"{Path(filename).parent.name}/{Path(filename).name}:{line} {function}", cumulative * 1000))
    return sorted(rows, key=lambda row: -row[1])[:limit]


def measure(runs: int) -> list[str]:
    workdir = Path(tempfile.mkdtemp(prefix="converge-profile-"))
    network = SSHNetwork(workdir / "net")
    try:
        host = network.add_host()
        files = workload.write_all(workdir, ("sysctl",))
        target = f"root@{host.address}"
        python = sys.executable
        network.controller.run([python, "-m", "converge", "apply", "--yes", str(files["converge"]), "-H", target], env=ENV)
        plan = [python, "-m", "converge", "plan", str(files["converge"]), "-H", target]
        spec = SysctlSpec.model_validate(workload.SYSCTL)
        script = batch_script(list(dict.fromkeys(SysctlProvider().reads(spec))))
        controller = network.controller
        script_file = workdir / "batch.sh"
        script_file.write_text(script)
        phases = [
            ("`converge plan`, 30 keys, 1 host", median_seconds(controller, plan, runs)),
            ("floor: paramiko connect, one exec, close",
             median_seconds(controller, [python, str(FLOOR_SCRIPT), host.address], runs)),
            ("floor running the plan's batch read script as its one exec",
             median_seconds(controller, [python, str(FLOOR_SCRIPT), "--script", str(script_file), host.address], runs)),
            ("interpreter start (`python -c pass`)", median_seconds(controller, [python, "-c", "pass"], runs)),
            ("interpreter + converge's imports for a plan", median_seconds(controller, [python, "-c", IMPORTS], runs)),
            ("the plan's batch read script, run on the host directly", median_seconds(host, ["sh", "-s"], runs, script)),
        ]
        imports = [controller.run([python, "-X", "importtime", *plan[1:]], check=False, env=ENV).stderr for _ in range(runs)]
        profile = workdir / "plan.prof"
        controller.run([python, "-m", "cProfile", "-o", str(profile), *plan[1:]], check=False, env=ENV)
        functions = converge_functions(profile, 12)
    finally:
        network.close()
    lines = [START, f"Measured {report.now()} by `python -m bench.profile` (medians of {runs} runs; load at start "
             f"{report.machine()['load at start']}).", "", "| what | median wall time |", "|---|---|"]
    lines += [f"| {name} | {seconds * 1000:.0f} ms |" for name, seconds in phases]
    total_imports = sum(ms for _, ms in import_time_by_package(imports))
    lines += ["", f"Self import time per top-level package during one plan (`python -X importtime`, median of {runs}; "
              f"all packages: {total_imports:.0f} ms):", "",
              "| package | ms |", "|---|---|"]
    lines += [f"| {name} | {ms:.0f} |" for name, ms in import_time_by_package(imports)[:12]]
    lines += ["", "converge's own functions by cumulative time in one plan (cProfile, so slower than real):", "",
              "| function | ms |", "|---|---|"]
    lines += [f"| `{name}` | {ms:.0f} |" for name, ms in functions]
    shutil.rmtree(workdir, ignore_errors=True)
    return [*lines, END]


def controller_cpu_seconds() -> float:
    """User+system CPU time of every finished child process so far (nsenter waits for its command)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def checkout(ref: str, directory: Path) -> Path:
    """The converge package of a git ref, laid out as installed (providers/ as converge/providers)."""
    directory.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(report.README.parent), "archive", ref, "converge", "providers"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    (directory / "providers").rename(directory / "converge" / "providers")
    return directory


def compare(refs: list[str], runs: int) -> list[str]:
    """`converge plan` of each git ref, alternating run by run on one host: medians."""
    workdir = Path(tempfile.mkdtemp(prefix="converge-compare-"))
    network = SSHNetwork(workdir / "net")
    try:
        host = network.add_host()
        files = workload.write_all(workdir, ("sysctl",))
        target = f"root@{host.address}"
        trees = {ref: checkout(ref, workdir / f"tree{index}") for index, ref in enumerate(refs)}
        plan = [sys.executable, "-m", "converge", "plan", str(files["converge"]), "-H", target]
        network.controller.run([*plan[:3], "apply", "--yes", *plan[4:]], env=ENV)
        times: dict[str, list[float]] = {ref: [] for ref in refs}
        cpu: dict[str, list[float]] = {ref: [] for ref in refs}
        for _ in range(runs):
            for ref, tree in trees.items():
                before = controller_cpu_seconds()
                started = time.perf_counter()
                # PYTHONPATH comes before the editable install on sys.path: this ref's code runs.
                network.controller.run(plan, check=False, env={**ENV, "PYTHONPATH": str(tree)})
                times[ref].append(time.perf_counter() - started)
                cpu[ref].append(controller_cpu_seconds() - before)
    finally:
        network.close()
        shutil.rmtree(workdir, ignore_errors=True)
    first = statistics.median(times[refs[0]])
    lines = [f"`converge plan` (30 keys, 1 host), refs alternating run by run, medians of {runs} "
             f"(`python -m bench.profile --compare {' '.join(refs)}`, {report.now()}):", "",
             "| ref | median wall time | × first | median CPU time (user+sys) |", "|---|---|---|---|"]
    lines += [f"| {ref} | {statistics.median(values) * 1000:.0f} ms | {statistics.median(values) / first:.2f} | "
              f"{statistics.median(cpu[ref]) * 1000:.0f} ms |" for ref, values in times.items()]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--compare", nargs="+", metavar="GITREF", help="compare the plan time of git refs instead")
    options = parser.parse_args(argv)
    if options.compare:
        print("\n".join(compare(options.compare, options.runs)))
        return 0
    section = "\n".join(measure(options.runs))
    if options.no_readme:
        print(section)
        return 0
    text = report.README.read_text()
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    report.README.write_text(before + section + after)
    print(f"wrote {report.README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
