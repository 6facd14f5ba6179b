"""`python -m bench.capture`: the peers' and converge's real output, for the parser tests.

Writes tests/data/bench/: a no-op check and plan, a plan of 10 drifted values, and the applies.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench import workload
from bench.measure import run_once
from bench.peers import ensure_peers
from bench.tools import Invocation, Pyinfra, Tool, all_tools, write_ansible_config
from tests.sshnet import SSHNetwork, SSHTestHost

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "bench"
ENV = {"HOME": "/root", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def settle(hosts: list[SSHTestHost], network: SSHNetwork, tools: dict[str, Tool]) -> None:
    """The 30 keys' desired state in every tool's terms: converge applies, the peers' persistence
    files are written as they write them (their runtime values are the same kernel values)."""
    converge = tools["converge"]
    run_once(network.controller, converge, converge.apply(hosts, "settle"), hosts, "settle")
    sysctl_lines = "".join(f"{key} = {value}\n" for key, value in workload.SYSCTL.items())
    for host in hosts:
        host.write(workload.ANSIBLE_SYSCTL_FILE, sysctl_lines.replace(" = ", "="))  # as ansible.posix.sysctl writes
        host.write(workload.PYINFRA_SYSCTL_FILE, sysctl_lines)  # as server.sysctl(persist=True) writes


def drift(hosts: list[SSHTestHost]) -> None:
    for host in hosts:
        for key in workload.DRIFTED:
            host.set_sysctl(key, workload.drift_value(key))


def main() -> None:
    peers_bin = ensure_peers(print)
    workdir = Path(tempfile.mkdtemp(prefix="converge-bench-capture-"))
    network = SSHNetwork(workdir / "net")
    try:
        hosts = [network.add_host()]
        workload.write_all(workdir, ("sysctl",))
        write_ansible_config(workdir)
        tools = {name: tool for name, tool in all_tools(workdir, peers_bin).items() if name != "floor"}
        settle(hosts, network, tools)

        def capture(tool: str, verb: str, file: str) -> None:
            invocation = getattr(tools[tool], verb)(hosts, file)
            _run_and_write(tool, verb, file, invocation)

        def _run_and_write(tool: str, verb: str, file: str, invocation: Invocation) -> None:
            completed = network.controller.run(invocation.argv, check=False, env={**ENV, **invocation.env})
            for command in tools[tool].after_run(file):
                network.controller.run(command, check=False)
            output = (completed.stdout + completed.stderr).replace(str(workdir), "/tmp/converge-bench")
            (DATA / file).write_text(output)
            print(file, completed.returncode, tools[tool].changes(completed.returncode, output))

        DATA.mkdir(parents=True, exist_ok=True)
        capture("ansible", "plan", "ansible-check-noop.txt")
        capture("pyinfra", "plan", "pyinfra-dry-noop.txt")
        drift(hosts)
        capture("pyinfra", "plan", "pyinfra-dry-drifted.txt")
        capture("converge", "plan", "converge-plan-drifted.json")
        capture("ansible", "apply", "ansible-apply-drifted.txt")
        drift(hosts)
        capture("pyinfra", "apply", "pyinfra-apply.txt")
        # A jail file to install and a reload that depends on it: one certain, one conditional change.
        fail2ban = workload.write_all(workdir / "fail2ban", ("fail2ban",))["pyinfra"].parent
        tools["pyinfra"] = Pyinfra("pyinfra", fail2ban, peers_bin)
        capture("pyinfra", "plan", "pyinfra-dry-conditional.txt")
    finally:
        network.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
