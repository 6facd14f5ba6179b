"""The peers, installed with pip into their own environment under bench/.work (gitignored)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

WORK = Path(__file__).resolve().parent / ".work"
PEERS = WORK / "peers"
# Pinned so that two runs of the benchmark compare the same peers.
# paramiko<4: pyinfra 3.10 with paramiko 4.0 randomly loses exit statuses ("could not load fact",
# exit status -1) on this machine; with 3.5.1 it does not.
REQUIREMENTS = ("ansible==12.3.0", "pyinfra==3.10.0", "paramiko<4")


def ensure_peers(log: callable) -> Path:
    """The peers' bin directory, installing them first if needed."""
    marker = PEERS / ".installed"
    if not marker.exists() or marker.read_text().split() != list(REQUIREMENTS):
        log(f"installing {', '.join(REQUIREMENTS)} into {PEERS} (once)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEERS)], check=True)
        subprocess.run([str(PEERS / "bin" / "pip"), "install", "-q", *REQUIREMENTS], check=True)
        marker.write_text("\n".join(REQUIREMENTS) + "\n")
    return PEERS / "bin"


def peer_versions() -> dict[str, str]:
    code = (
        "import importlib.metadata as m\n"
        "for name in ('ansible', 'ansible-core', 'pyinfra', 'paramiko'):\n"
        "    print(name, m.version(name))\n"
    )
    output = subprocess.run([str(PEERS / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True).stdout
    return {f"{name} (peers)" if name == "paramiko" else name: version
            for name, version in (line.split() for line in output.splitlines())}
