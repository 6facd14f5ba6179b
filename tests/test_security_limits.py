"""Issue 23, finding 11: a host that answers endlessly or not at all is that host's error.

Before: a 256 MiB answer took 1.7 GB on the controller, and one hung host stalled a two-host
plan with nothing printed. Each host here has sshd force one command on every session.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.sshnet import SSHD_CONFIG, SSHNetwork, SSHTestHost

BASELINE = "[sysctl]\nnet.ipv4.conf.all.log_martians = 1\n"


def _force(host: SSHTestHost, command: str) -> None:
    host.write(SSHD_CONFIG, (host.read(SSHD_CONFIG) or "") + f"ForceCommand {command}\n")
    host.stop_sshd()
    host.start_sshd()


def test_an_endless_and_a_silent_host_fail_alone(network: SSHNetwork, tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.toml"
    baseline.write_text(BASELINE)
    endless, silent, healthy = network.add_host(), network.add_host(), network.add_host()
    # It reads what converge sends first, as a host's `sh -s` reads the batch script: with a
    # host that never read its input, 2 of 3 full CI runs saw the host close the connection
    # before the cap (never in 23 runs of this test alone; cause not found).
    _force(endless, "sh -c 'cat >/dev/null; exec yes'")
    _force(silent, "exec sleep 1000")
    argv = ["nsenter", "-t", str(network.controller.pid), "-m", "-n", "-u", "--", *network.controller.converge_argv(
        "plan", "--json", str(baseline), *(f"-Hroot@{host.address}" for host in (endless, silent, healthy)))]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "CONVERGE_IDLE_TIMEOUT": "3"})
    assert done.returncode == 1, done.stdout + done.stderr
    hosts = {entry["host"]: entry for entry in json.loads(done.stdout)["hosts"]}
    assert "sh answered more than 64 MiB; stopped reading" in hosts[endless.address]["error"]
    assert "sh gave no answer for 3 s; the host may be hung" in hosts[silent.address]["error"]
    assert hosts[healthy.address]["status"] != "error" and len(hosts[healthy.address]["changes"]) == 1
