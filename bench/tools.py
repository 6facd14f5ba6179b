"""How each tool is invoked: the same no-op plan and the same apply, in each tool's own terms.

Every tool runs as a fresh process in the controller namespace (a plan is a short-lived
process), with its usual production settings: Ansible with pipelining, no fact gathering and
SSH multiplexing (its ControlMaster lives for one run: each run starts cold, as a user's does);
pyinfra with its defaults; converge with its defaults.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.sshnet import SSHTestHost

REPO = Path(__file__).resolve().parent.parent
FLOOR_SCRIPT = REPO / "bench" / "floor.py"
SSH_KEY = "/root/.ssh/id_ed25519"


@dataclass
class Invocation:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Tool:
    """A tool under test; `changes` reads how many changes a run reported from its output."""

    name: str
    workdir: Path
    peers_bin: Path
    # What the tool runs: converge's baseline (and --only), Ansible's playbook, pyinfra's deploy,
    # the floor's one exec (None: `true`). Set per workload by `use`.
    baseline: Path | None = None
    only: tuple[str, ...] = ()
    playbook: Path | None = None
    deploy: Path | None = None
    script: Path | None = None

    def use(self, directory: Path, baseline: Path, only: tuple[str, ...] = (), script: Path | None = None) -> None:
        self.baseline, self.only, self.script = baseline, only, script
        self.playbook, self.deploy = directory / "playbook.yml", directory / "deploy.py"

    def plan(self, hosts: list[SSHTestHost], run_id: str) -> Invocation:
        raise NotImplementedError

    def apply(self, hosts: list[SSHTestHost], run_id: str) -> Invocation:
        raise NotImplementedError

    def changes(self, returncode: int, output: str) -> int | None:
        """Changes the run reported (None: the tool cannot say); raises if the run failed."""
        raise NotImplementedError

    def after_run(self, run_id: str) -> list[list[str]]:
        """Commands (in the controller) that end what a run left behind, outside the timing."""
        return []


def _host_errors(output: str) -> str:
    """The hosts that failed and why, from converge's JSON (empty when it printed none)."""
    try:
        document = json.loads(output[output.index("{"): output.rindex("}") + 1])
    except ValueError:
        return ""
    failed = [f"{entry['host']}: {entry['error']}" for entry in document.get("hosts", []) if entry.get("error")]
    return f"{len(failed)} host(s) failed: " + "; ".join(failed[:5]) if failed else ""


class Converge(Tool):
    def _argv(self, verb: str, hosts: list[SSHTestHost]) -> list[str]:
        targets = [argument for host in hosts for argument in ("-H", f"ssh://root@{host.address}")]
        extra = ["--yes"] if verb == "apply" else []
        extra += [argument for provider in self.only for argument in ("--only", provider)]
        if len(hosts) > 20:  # the default --forks: a user planning a larger fleet at once raises it
            # and the connect timeout too: 200 handshakes at once on 2 shared cores outlast 10 s,
            # and a few of them are cut short (sshd closing during the key exchange): tried again
            extra += ["--forks", str(len(hosts)), "--timeout", "60", "--connect-attempts", "3"]
        baseline = self.baseline or self.workdir / "baseline.toml"
        return [sys.executable, "-m", "converge", verb, *extra, "--json", str(baseline), *targets]

    def plan(self, hosts: list[SSHTestHost], run_id: str) -> Invocation:
        return Invocation(self._argv("plan", hosts))

    def apply(self, hosts: list[SSHTestHost], run_id: str) -> Invocation:
        return Invocation(self._argv("apply", hosts))

    def changes(self, returncode: int, output: str) -> int | None:
        if returncode not in (0, 2):
            raise RuntimeError(f"converge failed ({returncode}): {_host_errors(output) or output[-2000:]}")
        document = json.loads(output[: output.rindex("}") + 1])
        return sum(len(entry.get("changes") or entry.get("applied") or []) for entry in document["hosts"])


class Ansible(Tool):
    def _config(self, run_id: str) -> dict[str, str]:
        return {
            "ANSIBLE_CONFIG": str(self.workdir / "ansible.cfg"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.workdir / "ansible-cp" / run_id),
            "PATH": f"{self.peers_bin}:/usr/sbin:/usr/bin:/sbin:/bin",
        }

    def _argv(self, hosts: list[SSHTestHost], check: bool) -> list[str]:
        inventory = ",".join(host.address for host in hosts) + ","  # a trailing comma: a host list, not a file
        flags = ["--check", "--diff"] if check else []
        return [str(self.peers_bin / "ansible-playbook"), *flags, "-f", str(max(len(hosts), 5)), "-i", inventory,
                str(self.playbook or self.workdir / "playbook.yml")]

    def plan(self, hosts: list[SSHTestHost], run_id: str) -> Invocation:
        return Invocation(self._argv(hosts, check=True), self._config(run_id))

    def apply(self, hosts: list[SSHTestHost], run_id: str) -> Invocation:
        return Invocation(self._argv(hosts, check=False), self._config(run_id))

    def changes(self, returncode: int, output: str) -> int | None:
        recap = re.findall(r"changed=(\d+).*?unreachable=(\d+)\s+failed=(\d+)", output)
        if returncode != 0 or not recap or any(int(unreachable) or int(failed) for _, unreachable, failed in recap):
            raise RuntimeError(f"ansible-playbook failed ({returncode}): {output[-2000:]}")
        return sum(int(changed) for changed, _, _ in recap)

    def after_run(self, run_id: str) -> list[list[str]]:
        # The ControlPersist masters outlive ansible-playbook; close them so the next run is cold.
        directory = self.workdir / "ansible-cp" / run_id
        return [["ssh", "-O", "exit", "-o", f"ControlPath={socket}", "bench"] for socket in sorted(directory.glob("*"))]


class Pyinfra(Tool):
    def _argv(self, hosts: list[SSHTestHost], dry: bool) -> list[str]:
        # An inventory file, not a comma-separated list: past ~60 hosts pyinfra takes the long
        # argument for a file name ("File name too long").
        inventory = self.workdir / f"inventory-{len(hosts)}.py"
        inventory.write_text(f"hosts = {[host.address for host in hosts]!r}\n")
        # --dry detects changes and stops; -y applies without asking (and without a detection pass).
        flags = ["--dry"] if dry else ["-y"]
        return [str(self.peers_bin / "pyinfra"), *flags, "--parallel", str(len(hosts)), "--user", "root", "--key", SSH_KEY,
                str(inventory), str(self.deploy or self.workdir / "deploy.py")]

    def plan(self, hosts: list[SSHTestHost], run_id: str) -> Invocation:
        return Invocation(self._argv(hosts, dry=True), {"PATH": f"{self.peers_bin}:/usr/sbin:/usr/bin:/sbin:/bin"})

    def apply(self, hosts: list[SSHTestHost], run_id: str) -> Invocation:
        return Invocation(self._argv(hosts, dry=False), {"PATH": f"{self.peers_bin}:/usr/sbin:/usr/bin:/sbin:/bin"})

    def changes(self, returncode: int, output: str) -> int | None:
        if returncode != 0:
            raise RuntimeError(f"pyinfra failed ({returncode}): {output[-2000:]}")
        if "--> Detected changes:" not in output:
            return None  # apply with -y skips change detection and prints no count we could trust
        # Rows of the "Detected changes" table: operation, then "N (hosts)" or "-" for certain
        # changes, then the same for conditional ones (an `_if` pyinfra cannot decide in a dry run).
        table = output.split("--> Detected changes:", 1)[1].split("Detected changes may not", 1)[0]
        changes = 0
        for row in table.splitlines():
            columns = re.split(r"\s{2,}", row.strip())
            if len(columns) == 3 and (certain := re.fullmatch(r"(\d+) \(.*\)", columns[1])):
                changes += int(certain.group(1))
        return changes


class Floor(Tool):
    """The floor of the issue: one Python process doing a paramiko connect, one exec, close."""

    def plan(self, hosts: list[SSHTestHost], run_id: str) -> Invocation:
        script = ["--script", str(self.script)] if self.script else []
        return Invocation([sys.executable, str(FLOOR_SCRIPT), *script, *(host.address for host in hosts)])

    def apply(self, hosts: list[SSHTestHost], run_id: str) -> Invocation:
        raise NotImplementedError("the floor only plans")

    def changes(self, returncode: int, output: str) -> int | None:
        if returncode != 0:
            raise RuntimeError(f"floor failed ({returncode}): {output[-2000:]}")
        return None


def write_ansible_config(workdir: Path) -> None:
    (workdir / "ansible-cp").mkdir(parents=True, exist_ok=True)
    (workdir / "ansible.cfg").write_text(
        "[defaults]\n"
        "remote_user = root\ngathering = explicit\nhost_key_checking = True\nretry_files_enabled = False\n"
        "stdout_callback = default\nnocows = True\ninterpreter_python = /usr/bin/python3\n"
        "[ssh_connection]\npipelining = True\n"
    )


def all_tools(workdir: Path, peers_bin: Path) -> dict[str, Tool]:
    return {
        "converge": Converge("converge", workdir, peers_bin),
        "ansible": Ansible("ansible", workdir, peers_bin),
        "pyinfra": Pyinfra("pyinfra", workdir, peers_bin),
        "floor": Floor("floor", workdir, peers_bin),
    }
