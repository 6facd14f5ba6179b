"""`python -m bench [--quick]`: converge against Ansible and pyinfra on SSH test hosts.

Builds a controller namespace and test hosts running real sshd (tests/sshnet.py), brings every
host to the desired state once, then measures, alternating the tools run by run:
1. the no-op plan on 1 host, 2. on N hosts in parallel, 3. apply after 10 drifted values and the
idempotent re-apply; SSH sessions per host from the sshd logs and the peak RSS of every run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import report, workload
from bench.measure import Series, apply_scenario, plan_scenario, run_once
from bench.peers import ensure_peers, peer_versions
from bench.tools import Tool, all_tools, write_ansible_config
from converge.registry import Registry
from tests.sshnet import SSHNetwork, SSHTestHost

TOOLS = ("converge", "ansible", "pyinfra", "floor")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="under two minutes: 3 rounds (Ansible 2), 5 hosts for the fleet, Ansible only in the 1-host plan")
    parser.add_argument("--rounds", type=int, help="runs of each tool per scenario (default 7, quick 3)")
    parser.add_argument("--hosts", type=int, help="hosts of the fleet scenario (default 20, quick 5)")
    parser.add_argument("--parts", default="sysctl", help=f"comma-separated workload parts of {','.join(workload.PARTS)}")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    parser.add_argument("--no-readme", action="store_true", help="print the table instead of writing README.md")
    options = parser.parse_args(argv)
    options.parts = tuple(part for part in options.parts.split(",") if part)
    unknown = set(options.parts) - set(workload.PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    options.tools = tuple(tool for tool in TOOLS if tool in options.tools.split(","))
    if "converge" in options.tools:
        missing = [part for part in options.parts if part not in Registry()]
        if missing:
            parser.error(f"this converge has no {', '.join(missing)} provider yet: add it, or measure the peers "
                         "alone with --tools ansible,pyinfra")
    options.rounds = options.rounds or (3 if options.quick else 7)
    options.hosts = options.hosts or (5 if options.quick else 20)
    return options


def prepare(hosts: list[SSHTestHost], parts: tuple[str, ...]) -> None:
    """What each part needs on a host before any tool runs: ufw enabled (SSH allowed), fail2ban up."""
    for host in hosts:
        if "ufw" in parts:
            host.run(["ufw", "allow", "22/tcp"])
            host.run(["ufw", "--force", "enable"])
        if "fail2ban" in parts:
            host.run(["touch", "/var/log/auth.log", "/var/log/fail2ban.log"])  # the jails' logs
            host.run(["fail2ban-client", "start"])


def settle(hosts: list[SSHTestHost], network: SSHNetwork, tools: dict[str, Tool], parts: tuple[str, ...]) -> None:
    """Bring every host to the desired state in every tool's terms, so every plan has nothing to do.

    converge applies its baseline; for sysctl the peers' persistence files are written as they
    write them (their runtime values are the same kernel values); for the other parts each peer
    applies its own rendering once.
    """
    if "converge" in tools:
        converge = tools["converge"]
        run = run_once(network.controller, converge, converge.apply(hosts, "settle"), hosts, "settle")
        if run.changes == 0:
            raise RuntimeError("settling changed nothing: the hosts did not start drifted")
    if "sysctl" in parts:
        sysctl_lines = "".join(f"{key} = {value}\n" for key, value in workload.SYSCTL.items())
        for host in hosts:
            host.run(["sysctl", "-q", "-w", *(f"{key}={value}" for key, value in workload.SYSCTL.items())])
            host.write(workload.ANSIBLE_SYSCTL_FILE, sysctl_lines.replace(" = ", "="))  # as ansible.posix.sysctl writes
            host.write(workload.PYINFRA_SYSCTL_FILE, sysctl_lines)  # as server.sysctl(persist=True) writes
    if set(parts) - {"sysctl"}:
        for name in ("ansible", "pyinfra"):
            if name in tools:
                run_once(network.controller, tools[name], tools[name].apply(hosts, f"settle-{name}"), hosts, f"settle-{name}")


def drift(hosts: list[SSHTestHost]) -> None:
    for host in hosts:
        for key in workload.DRIFTED:
            host.set_sysctl(key, workload.drift_value(key))


def check_converged(hosts: list[SSHTestHost]) -> None:
    for host in hosts:
        wrong = {key: host.sysctl(key) for key in workload.DRIFTED if host.sysctl(key) != str(workload.SYSCTL[key])}
        if wrong:
            raise RuntimeError(f"{host.name}: apply left drifted values: {wrong}")


def require_no_op(name: str, results: dict[str, Series]) -> None:
    """A plan of the settled state must report nothing to change, or the comparison is void."""
    for series in results.values():
        reported = {run.changes for run in series.runs} - {None, 0}
        if reported:
            raise RuntimeError(f"{name}: {series.tool} reported changes {reported} on a settled host")


def main(argv: list[str] | None = None) -> int:
    options = arguments(argv)
    started = time.monotonic()
    peers_bin = ensure_peers(log)
    workdir = Path(tempfile.mkdtemp(prefix="converge-bench-"))
    meta: dict[str, object] = {
        "date": report.now(), "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "parts": ", ".join(options.parts), "machine": report.machine(),
        "versions": {"converge": report.converge_version(), **peer_versions()},
    }
    network = SSHNetwork(workdir / "net")
    try:
        log(f"starting {options.hosts} test hosts with sshd")
        hosts = [network.add_host() for _ in range(options.hosts)]
        workload.write_all(workdir, options.parts)
        write_ansible_config(workdir)
        tools = {name: tool for name, tool in all_tools(workdir, peers_bin).items() if name in options.tools}
        prepare(hosts, options.parts)
        settle(hosts, network, tools, options.parts)

        log("1. no-op plan, 1 host")
        # --quick: Ansible (10-25 s a plan on a busy 2-core machine) runs 2 rounds, the others 3.
        caps = {"ansible": 2} if options.quick else None
        one = plan_scenario(network, list(tools.values()), hosts[:1], options.rounds, log, caps=caps)
        require_no_op("plan, 1 host", one)
        fleet_tools = [tool for name, tool in tools.items() if name != "floor" and not (options.quick and name == "ansible")]
        fleet_rounds = 1 if options.quick else max(3, options.rounds // 2)
        log(f"2. no-op plan, {len(hosts)} hosts in parallel")
        fleet = plan_scenario(network, fleet_tools, hosts, fleet_rounds, log)
        require_no_op("plan, fleet", fleet)
        applied: dict[str, Series] = {}
        reapplied: dict[str, Series] = {}
        if "sysctl" in options.parts:  # the drift is of sysctl values
            apply_rounds = 1 if options.quick else max(3, options.rounds // 2)
            log("3. apply after 10 drifted values, then the idempotent re-apply, 1 host")
            applied, reapplied = apply_scenario(network, fleet_tools, hosts[:1], apply_rounds, drift=drift,
                                                 check=check_converged, log=log)
    finally:
        network.close()
        shutil.rmtree(workdir, ignore_errors=True)

    meta["duration"] = f"{time.monotonic() - started:.0f} s"
    tables = [
        report.scenario_table("1. No-op plan, 1 host over SSH", one),
        report.scenario_table(f"2. No-op plan, {len(hosts)} hosts in parallel", fleet),
        report.scenario_table("3a. Apply after 10 drifted values, 1 host", applied),
        report.scenario_table("3b. Idempotent re-apply, 1 host", reapplied),
    ]
    notes = summary(one, fleet, options) if {"converge", "floor", "ansible", "pyinfra"} <= set(options.tools) else []
    raw = {"meta": meta, "plan_1": [s.as_dict() for s in one.values()], "plan_fleet": [s.as_dict() for s in fleet.values()],
           "apply": [s.as_dict() for s in applied.values()], "reapply": [s.as_dict() for s in reapplied.values()]}
    if options.no_readme:
        print(report.render(meta, tables, notes))
    else:
        raw_path = report.write(meta, tables, notes, raw)
        log(f"wrote {report.README} and {raw_path}")
    log(f"done in {meta['duration']}")
    return 0


def summary(one: dict[str, Series], fleet: dict[str, Series], options: argparse.Namespace) -> list[str]:
    """The targets of issue 8, each with the measured value."""
    converge = one["converge"].median("seconds")
    converge_cpu = one["converge"].median("cpu_seconds")
    lines = ["**Targets (issue 8)**, on median wall time (CPU time in brackets where it differs)", "",
             "| target | measured | met |", "|---|---|---|"]

    def target(name: str, measured: str, met: bool) -> None:
        lines.append(f"| {name} | {measured} | {'yes' if met else 'no'} |")

    for peer, factor in (("ansible", 20), ("pyinfra", 5)):
        if one[peer].runs:
            ratio = one[peer].median("seconds") / converge
            cpu_ratio = one[peer].median("cpu_seconds") / converge_cpu
            target(f"{factor}× faster than {peer}, 1 host", f"{ratio:.1f}× ({cpu_ratio:.1f}× CPU)", ratio >= factor)
    floor_ratio = converge / one["floor"].median("seconds")
    floor_cpu_ratio = converge_cpu / one["floor"].median("cpu_seconds")
    target("within 1.5× of the floor (paramiko connect, one exec, close)",
           f"{floor_ratio:.2f}× ({floor_cpu_ratio:.2f}× CPU)", floor_ratio <= 1.5)
    sessions = max(run.sessions_per_host for run in one["converge"].runs + fleet["converge"].runs)
    target("at most 2 SSH sessions per host per plan", f"{sessions:g}", sessions <= 2)
    scaling = fleet["converge"].median("seconds") / converge
    target(f"{options.hosts} hosts in under twice the time of 1 host", f"{scaling:.2f}×", scaling < 2)
    return [*lines, ""]


if __name__ == "__main__":
    sys.exit(main())
