"""`python -m bench [--quick] [--write-readme README.md]`: converge against Ansible and pyinfra on SSH test hosts.

Builds a controller namespace and test hosts running real sshd (tests/sshnet.py) and measures,
alternating the tools run by run: 1. the shipped ubuntu-web baseline, no-op plan and apply from
drift, 1 host; 2. the shipped rhel-web baseline, the same; 3. a SELinux plan of 50 booleans, 10 file
contexts and 5 ports (converge's host CPU); 4. the no-op plan of ubuntu-web on 50, 100 and 200 hosts
against the floor (N paramiko connects and one exec each, in threads). Wall and CPU time of the
controller, the hosts' CPU time (their SSH sessions), peak RSS, SSH sessions from the sshd logs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import baselines, report
from bench.baselines import Workload
from bench.measure import Run, Series, apply_scenario, plan_scenario, run_once
from bench.peers import ensure_peers, peer_versions
from bench.tools import Floor, Tool, all_tools, write_ansible_config
from converge.engine import host_reads
from converge.hosts.remote_script import batch_script
from converge.registry import Registry
from tests.sshnet import SSHNetwork, SSHTestHost

TOOLS = ("converge", "ansible", "pyinfra", "floor")
WORKLOADS = ("ubuntu-web", "rhel-web", "selinux-scale", "fleet")
# The fleet plans ubuntu-web's providers whose reads are files and light commands: the others run
# the host's own Python and Perl tools (needrestart, apt, fail2ban-client, ufw), whose cost is the
# hosts' (measured per host in scenario 1) and on one 2-core machine would be N times that.
FLEET_ONLY = ("sysctl", "kmod", "sshd", "apparmor")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="under two minutes: ubuntu-web's no-op plan (2 rounds, Ansible 1) and a 10-host fleet")
    parser.add_argument("--rounds", type=int, help="runs of each tool per plan (default 5, quick 2); applies get 3")
    parser.add_argument("--apply-rounds", type=int, help="runs of each tool per apply from drift (default 3, quick 0)")
    parser.add_argument("--workloads", default=None, help="comma-separated subset of " + ",".join(WORKLOADS))
    parser.add_argument("--fleet", default=None, help="comma-separated host counts of the fleet (default 50,100,200; quick 10)")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    parser.add_argument("--write-readme", type=Path, metavar="README", help="write the tables between the markers of this file")
    parser.add_argument("--from-results", type=Path, metavar="JSON",
                        help="measure nothing: render the tables of an earlier run from its raw results "
                             "(bench/.work/results-*.json)")
    options = parser.parse_args(argv)
    default_workloads = "ubuntu-web,fleet" if options.quick else ",".join(WORKLOADS)
    options.workloads = tuple(w for w in (options.workloads or default_workloads).split(",") if w)
    unknown = set(options.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    options.tools = tuple(tool for tool in TOOLS if tool in options.tools.split(","))
    options.rounds = options.rounds or (2 if options.quick else 5)
    options.apply_rounds = options.apply_rounds if options.apply_rounds is not None else (0 if options.quick else 3)
    options.fleet = tuple(int(n) for n in (options.fleet or ("10" if options.quick else "50,100,200")).split(","))
    # Ansible's plan of a whole baseline is 20-40 s here: fewer runs of it.
    options.caps = {"ansible": 1} if options.quick else {"ansible": 3}
    options.apply_caps = {"ansible": 2}
    return options


def converge_files(host: SSHTestHost, workload: Workload) -> dict[str, str]:
    return {path: text for path in baselines.converge_paths(workload) if (text := host.read(path)) is not None}


def settle_converge(network: SSHNetwork, converge: Tool, hosts: list[SSHTestHost], label: str) -> None:
    """converge applies the baseline (it must change something: the hosts start fresh), then plans 0."""
    run = run_once(network.controller, converge, converge.apply(hosts, f"settle-{label}"), hosts, f"settle-{label}")
    if not run.changes:
        raise RuntimeError(f"{label}: settling changed nothing: the hosts did not start drifted")
    check = run_once(network.controller, converge, converge.plan(hosts, f"check-{label}"), hosts, f"check-{label}")
    if check.changes:
        raise RuntimeError(f"{label}: converge still plans {check.changes} changes after its apply")


def read_script(workload: Workload, directory: Path) -> Path:
    """converge's batch read script for this workload: the floor runs it as its one exec."""
    registry = Registry()
    path = directory / "reads.sh"
    path.write_text(batch_script(host_reads(workload.baseline, registry, workload.only)))
    return path


def prepare_peers(network: SSHNetwork, host: SSHTestHost, workload: Workload, tools: dict[str, Tool],
                  directory: Path, *, settle: bool) -> None:
    """Render the peers' playbook and deploy from what converge wrote and install their files as
    they would (untimed); with `settle`, each peer also applies once, so that its plan starts from
    its own settled state whatever it reads differently."""
    written = converge_files(host, workload)
    renderings = {"ansible": ("playbook.yml", baselines.ansible_playbook), "pyinfra": ("deploy.py", baselines.pyinfra_deploy)}
    for name, tool in tools.items():
        file_name, render = renderings[name]
        files = baselines.peer_files(workload, written, name)
        (directory / file_name).write_text(render(workload, files))
        for path, (content, _) in files.items():
            host.write(path, content)
        # As ansible.posix.sysctl and pyinfra's server.sysctl(persist=True) write their files.
        separator = "=" if name == "ansible" else " = "
        host.write(f"/etc/sysctl.d/90-{name}-sysctl.conf",
                   "".join(f"{key}{separator}{value}\n" for key, value in workload.sysctls().items()))
        if settle:
            run_once(network.controller, tool, tool.apply([host], f"settle-{name}"), [host], f"settle-{name}")


def require_no_op(name: str, results: dict[str, Series]) -> None:
    """A plan of the settled state must report nothing to change, or the comparison is void."""
    for series in results.values():
        reported = {run.changes for run in series.runs} - {None, 0}
        if reported:
            raise RuntimeError(f"{name}: {series.tool} reported changes {reported} on a settled host")


def one_host_workload(network: SSHNetwork, workload: Workload, tools: dict[str, Tool], workdir: Path,
                      options: argparse.Namespace) -> dict[str, dict[str, Series]]:
    """No-op plan and apply from drift of one workload on a fresh host of its own."""
    log(f"{workload.name}: host, prepare, settle")
    directory = workdir / workload.name
    directory.mkdir(parents=True)
    host = network.add_host(shadow_net_sysctls=True)  # net.core.bpf_jit_harden: the initial namespace's only
    host.run(["sh", "-c", workload.prepare])
    for tool in tools.values():
        tool.use(directory, workload.baseline_path, workload.only)
    floor_reads = Floor("floor+reads", workdir, tools["converge"].peers_bin)
    floor_reads.use(directory, workload.baseline_path, script=read_script(workload, directory))
    settle_converge(network, tools["converge"], [host], workload.name)
    peers = {name: tool for name, tool in tools.items() if name in ("ansible", "pyinfra") and workload.peers}
    prepare_peers(network, host, workload, peers, directory, settle=not options.quick)
    plan_tools = [tools["converge"], *peers.values(), *([tools["floor"], floor_reads] if "floor" in tools else [])]
    log(f"{workload.name}: no-op plan, 1 host")
    results = {"plan": plan_scenario(network, plan_tools, [host], options.rounds, log, caps=options.caps)}
    require_no_op(f"{workload.name} plan", results["plan"])
    if options.apply_rounds and workload.drift is not None and workload.check is not None:
        log(f"{workload.name}: apply after drift, 1 host")
        drift, check = workload.drift, workload.check

        def check_all(hosts: list[SSHTestHost]) -> None:
            wrong = [problem for one in hosts for problem in check(one)]
            if wrong:
                raise RuntimeError(f"{workload.name}: apply left drift: {wrong}")

        results["apply"], _ = apply_scenario(network, [tools["converge"], *peers.values()], [host], options.apply_rounds,
                                             drift=lambda hosts: [drift(one) for one in hosts] and None, check=check_all,
                                             log=log, reapply=False, caps=options.apply_caps)
    return results


def selinux_workload(network: SSHNetwork, tools: dict[str, Tool], workdir: Path,
                     options: argparse.Namespace) -> dict[str, dict[str, Series]]:
    host = network.add_host()
    host.run(["sh", "-c", baselines.PREPARE_RHEL])
    listing = host.run(["semanage", "boolean", "-l"]).stdout
    booleans = {match[1]: match[2] == "on" for match in re.finditer(r"^(\S+)\s+\(\s*\w+\s*,\s*(\w+)\s*\)", listing, re.MULTILINE)}
    workload = baselines.selinux_scale(workdir, booleans)
    directory = workdir / workload.name
    directory.mkdir(parents=True)
    converge = tools["converge"]
    converge.use(directory, workload.baseline_path)
    log(f"{workload.name}: settle (semanage fcontext -a and port -a: ~1.5 s each)")
    settle_converge(network, converge, [host], workload.name)
    floor_reads = Floor("floor+reads", workdir, converge.peers_bin)
    floor_reads.use(directory, workload.baseline_path, script=read_script(workload, directory))
    plan_tools = [converge, *([tools["floor"], floor_reads] if "floor" in tools else [])]
    tools["floor"].use(directory, workload.baseline_path)
    log(f"{workload.name}: no-op plan, 1 host")
    results = {"plan": plan_scenario(network, plan_tools, [host], options.rounds, log)}
    require_no_op(f"{workload.name} plan", results["plan"])
    return results


def fleet_workload(network: SSHNetwork, tools: dict[str, Tool], workdir: Path, options: argparse.Namespace,
                   results: dict[int, dict[str, Series]]) -> None:
    """Fills `results` fleet size by fleet size, so a size that fails keeps the smaller ones."""
    workload = baselines.fleet(FLEET_ONLY)
    directory = workdir / "fleet"
    directory.mkdir(parents=True)
    converge, floor = tools["converge"], tools["floor"]
    # The floor running converge's read script on every host: what the hosts' own work adds.
    floor_reads = Floor("floor+reads", workdir, converge.peers_bin)
    floor_reads.use(directory, workload.baseline_path, script=read_script(workload, directory))
    hosts: list[SSHTestHost] = []
    rounds = 1 if options.quick else 3
    for count in (1, *options.fleet):
        log(f"fleet: {count} hosts")
        new = [network.add_host(shadow_net_sysctls=True) for _ in range(count - len(hosts))]
        for host in new:
            host.run(["sh", "-c", workload.prepare])
        converge.use(directory, workload.baseline_path, workload.only)
        floor.use(directory, workload.baseline_path)
        if new:
            settle_converge(network, converge, new, f"fleet-{count}")
        hosts += new
        results[count] = plan_scenario(network, [converge, floor, floor_reads], hosts[:count],
                                       rounds if count > 1 else options.rounds, log)
        require_no_op(f"fleet {count}", results[count])


def rendered(meta: dict[str, object], one_host: dict[str, dict[str, dict[str, Series]]],
             fleet: dict[int, dict[str, Series]]) -> str:
    return report.render(meta, report.tables(one_host, fleet, FLEET_ONLY), report.targets(one_host, fleet))


def from_results(path: Path, readme: Path | None) -> int:
    """The tables of an earlier run, rendered again from its raw figures (nothing is measured)."""
    raw = json.loads(path.read_text())

    def series(entries: list[dict[str, Any]]) -> dict[str, Series]:
        return {entry["tool"]: Series(entry["tool"], [Run(**run) for run in entry["runs"]]) for entry in entries}

    one_host = {workload: {scenario: series(entries) for scenario, entries in scenarios.items()}
                for workload, scenarios in raw["one_host"].items()}
    fleet = {int(count): series(entries) for count, entries in raw["fleet"].items()}
    text = rendered(raw["meta"], one_host, fleet)
    print(text)
    if readme:
        report.write(readme, text)
        log(f"wrote {readme} from {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    options = arguments(argv)
    if options.from_results:
        return from_results(options.from_results, options.write_readme)
    started = time.monotonic()
    peers_bin = ensure_peers(log)
    workdir = Path(tempfile.mkdtemp(prefix="converge-bench-"))
    meta: dict[str, object] = {
        "date": report.now(), "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": report.machine(), "versions": {"converge": report.converge_version(), **peer_versions()},
    }
    network = SSHNetwork(workdir / "net")
    one_host: dict[str, dict[str, dict[str, Series]]] = {}
    fleet: dict[int, dict[str, Series]] = {}
    try:
        write_ansible_config(workdir)
        tools = {name: tool for name, tool in all_tools(workdir, peers_bin).items() if name in options.tools}
        for name, factory in (("ubuntu-web", baselines.ubuntu_web), ("rhel-web", baselines.rhel_web)):
            if name in options.workloads:
                one_host[name] = one_host_workload(network, factory(), tools, workdir, options)
        if "selinux-scale" in options.workloads:
            one_host["selinux-scale"] = selinux_workload(network, tools, workdir, options)
        if "fleet" in options.workloads and "floor" in tools:
            try:
                fleet_workload(network, tools, workdir, options, fleet)
            except RuntimeError as error:  # reported with the sizes measured, not lost with them
                meta["fleet stopped"] = " ".join(str(error).split())[:600]
                log(f"fleet stopped: {meta['fleet stopped']}")
    finally:
        network.close()
        shutil.rmtree(workdir, ignore_errors=True)
    meta["duration"] = f"{time.monotonic() - started:.0f} s"
    meta["load at end"] = " ".join(f"{value:.1f}" for value in os.getloadavg())
    text = rendered(meta, one_host, fleet)
    print(text)
    raw = {"meta": meta, "one_host": {w: {s: [x.as_dict() for x in series.values()] for s, series in v.items()}
                                      for w, v in one_host.items()},
           "fleet": {str(n): [x.as_dict() for x in series.values()] for n, series in fleet.items()}}
    raw_path = report.save_raw(meta, raw)
    if options.write_readme:
        report.write(options.write_readme, text)
        log(f"wrote {options.write_readme}")
    log(f"raw results: {raw_path}; done in {meta['duration']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
