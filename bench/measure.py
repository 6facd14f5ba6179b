"""Running the tools in the controller: wall time, peak memory, SSH sessions, reported changes.

Tools alternate run by run (the order rotates every round), so slow drift of a shared machine
spreads over every tool instead of biasing one; only medians and ratios are headlined.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from bench.tools import Invocation, Tool
from tests.sshnet import SSHNetwork, SSHTestHost
from tests.testhost import TestHost

# GNU time writes this last on stderr: the peak RSS (KiB) of the largest process of the tree.
TIME_FORMAT = "bench-time %M"


@dataclass
class Run:
    seconds: float
    cpu_seconds: float  # user+system of the tool's whole process tree: what contention cannot inflate
    peak_rss_kib: int
    sessions_per_host: float
    connections_per_host: float
    changes: int | None
    host_cpu_seconds: float = 0.0  # user+system of every SSH session's processes, summed over the hosts


@dataclass
class Series:
    """Every run of one tool in one scenario."""

    tool: str
    runs: list[Run] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(run, attribute) for run in self.runs)

    def as_dict(self) -> dict[str, object]:
        return {"tool": self.tool, "runs": [asdict(run) for run in self.runs]}


def _ssh_counts(hosts: list[SSHTestHost]) -> list[tuple[int, int]]:
    """(sessions, connections) each host's sshd has logged so far."""
    return [(host.sessions(), len(host.connections_from())) for host in hosts]


def _sshd_pid(host: SSHTestHost) -> int:
    return int((host.read("/run/sshd.pid") or "0").strip() or 0)


def reaped_cpu_seconds(pid: int) -> float:
    """CPU time of the waited-for descendants of a host's listening sshd: its sessions' processes."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return 0.0
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime, cstime


def _sessions_ended(pid: int, timeout: float = 5.0) -> None:
    """Wait until the listening sshd has reaped every connection (their CPU is counted then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as children:
                if not children.read().split():
                    return
        except FileNotFoundError:
            return
        time.sleep(0.02)


def hosts_cpu_seconds(hosts: list[SSHTestHost]) -> float:
    pids = [_sshd_pid(host) for host in hosts]
    for pid in pids:
        _sessions_ended(pid)
    return sum(reaped_cpu_seconds(pid) for pid in pids)


def _children_cpu_seconds() -> float:
    """CPU time of every waited-for descendant so far (nsenter and time wait for theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(controller: TestHost, tool: Tool, invocation: Invocation, hosts: list[SSHTestHost], run_id: str) -> Run:
    """One timed run; SSH counts come from the hosts' sshd logs, read outside the timing."""
    before = _ssh_counts(hosts)
    host_cpu_before = hosts_cpu_seconds(hosts)
    env = {"HOME": "/root", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **invocation.env}
    argv = ["/usr/bin/time", "-f", TIME_FORMAT, *invocation.argv]
    cpu_before = _children_cpu_seconds()
    started = time.perf_counter()
    completed = controller.run(argv, check=False, env=env)
    seconds = time.perf_counter() - started
    cpu_seconds = _children_cpu_seconds() - cpu_before
    for command in tool.after_run(run_id):
        controller.run(command, check=False)
    host_cpu = hosts_cpu_seconds(hosts) - host_cpu_before
    stderr_lines = completed.stderr.rstrip().splitlines()
    if not stderr_lines or not stderr_lines[-1].startswith("bench-time "):
        raise RuntimeError(f"{tool.name}: no resource usage from /usr/bin/time: {completed.stderr[-2000:]}")
    peak = int(stderr_lines[-1].split()[1])
    output = completed.stdout + "\n".join(stderr_lines[:-1])
    changes = tool.changes(completed.returncode, output)
    deltas = [(after[0] - earlier[0], after[1] - earlier[1]) for earlier, after in zip(before, _ssh_counts(hosts), strict=True)]
    untouched = [host.name for host, (sessions, _) in zip(hosts, deltas, strict=True) if sessions == 0]
    if untouched:  # a run that never reached a host measured nothing
        raise RuntimeError(f"{tool.name} opened no SSH session on {', '.join(untouched)}: {output[-2000:]}")
    return Run(seconds, cpu_seconds, peak, sum(sessions for sessions, _ in deltas) / len(hosts),
               sum(connections for _, connections in deltas) / len(hosts), changes, host_cpu)


def alternate(tools: list[Tool], rounds: int, one_run: Callable[[Tool, str], Run | None],
              log: Callable[[str], None], caps: dict[str, int] | None = None) -> dict[str, Series]:
    """`rounds` runs of each tool (at most `caps[name]`), rotating the order every round."""
    series = {tool.name: Series(tool.name) for tool in tools}
    for round_index in range(rounds):
        shift = round_index % len(tools)
        for tool in tools[shift:] + tools[:shift]:
            if round_index >= (caps or {}).get(tool.name, rounds):
                continue
            run = one_run(tool, f"{tool.name}-{round_index}-{time.monotonic_ns()}")
            if run is not None:
                series[tool.name].runs.append(run)
                log(f"  {tool.name:<9} round {round_index + 1}/{rounds}: {run.seconds:6.2f} s, CPU {run.cpu_seconds:.2f} s, "
                    f"hosts' CPU {run.host_cpu_seconds:.2f} s, {run.peak_rss_kib >> 10} MiB, "
                    f"{run.sessions_per_host:g} sessions/host, changes={run.changes}")
    return series


def plan_scenario(network: SSHNetwork, tools: list[Tool], hosts: list[SSHTestHost], rounds: int,
                  log: Callable[[str], None], *, caps: dict[str, int] | None = None) -> dict[str, Series]:
    def one_run(tool: Tool, run_id: str) -> Run:
        return run_once(network.controller, tool, tool.plan(hosts, run_id), hosts, run_id)

    return alternate(tools, rounds, one_run, log, caps)


def apply_scenario(network: SSHNetwork, tools: list[Tool], hosts: list[SSHTestHost], rounds: int, *,
                   drift: Callable[[list[SSHTestHost]], None], check: Callable[[list[SSHTestHost]], None],
                   log: Callable[[str], None], reapply: bool = True, caps: dict[str, int] | None = None,
                   ) -> tuple[dict[str, Series], dict[str, Series]]:
    """Apply after drift, then (`reapply`) the idempotent re-apply, per tool; the drift itself is not timed."""
    reapplied: dict[str, Series] = {tool.name: Series(tool.name) for tool in tools}

    def one_run(tool: Tool, run_id: str) -> Run:
        drift(hosts)
        run = run_once(network.controller, tool, tool.apply(hosts, run_id), hosts, run_id)
        check(hosts)  # the drift was really repaired
        if not reapply:
            return run
        again = run_once(network.controller, tool, tool.apply(hosts, run_id + "-again"), hosts, run_id + "-again")
        reapplied[tool.name].runs.append(again)
        return run

    applied = alternate(tools, rounds, one_run, log, caps)
    return applied, reapplied
