"""Firewall changes over SSH: refuse what would cut converge off, and apply the rest under a
commit-confirm watchdog that restores the previous state unless a new connection confirms.

The engine knows nothing of ufw or firewalld: a provider that can lock us out implements the
`Firewall` protocol (whether a state admits a connection, which files hold its state, and the
commands that make restored files live again).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from converge.hosts import Host

ROLLBACK_ROOT = "/var/lib/converge/rollback"


@runtime_checkable
class Firewall(Protocol):
    def admits(self, spec: Any, live: Any, source: str, port: int, proto: str = "tcp") -> bool:
        """Whether the state `spec` describes admits a new connection from `source` to `port`."""
        ...  # pragma: no cover - protocol

    def state_paths(self) -> list[str]:
        """Files and directories holding the whole persistent state."""
        ...  # pragma: no cover - protocol

    def reactivate_argv(self) -> list[list[str]]:
        """Commands that make restored files live again."""
        ...  # pragma: no cover - protocol


# Run as `sh -c ARM_SCRIPT sh DIR TIMEOUT PATH... -- COMMAND...`: snapshots the paths, writes the
# watchdog, and starts it in its own session so it outlives the SSH connection.
ARM_SCRIPT = r"""
set -eu
dir=$1 timeout=$2; shift 2
mkdir -p -m 0700 "$dir/snapshot"
: > "$dir/paths"
while [ "$1" != "--" ]; do
    if [ -e "$1" ]; then
        mkdir -p "$dir/snapshot$(dirname -- "$1")"
        cp -a -- "$1" "$dir/snapshot$1"
        echo "keep $1" >> "$dir/paths"
    else
        echo "drop $1" >> "$dir/paths"
    fi
    shift
done
shift
printf '%s\n' "$@" > "$dir/reactivate"
cat > "$dir/watchdog" <<'WATCHDOG'
dir=$1
sleep "$2"
[ -e "$dir/confirmed" ] && exit 0
while read -r action path; do
    case $action in
        keep) rm -rf -- "$path.converge-rollback"
              cp -a -- "$dir/snapshot$path" "$path.converge-rollback"
              rm -rf -- "$path" && mv -- "$path.converge-rollback" "$path" ;;
        drop) rm -rf -- "$path" ;;
    esac
done < "$dir/paths"
while IFS= read -r command; do
    eval "$command" >> "$dir/log" 2>&1 || echo "failed: $command" >> "$dir/log"
done < "$dir/reactivate"
date -u +%FT%TZ > "$dir/rolled-back"
WATCHDOG
setsid sh "$dir/watchdog" "$dir" "$timeout" < /dev/null > /dev/null 2>&1 &
echo $! > "$dir/pid"
"""

CONFIRM_SCRIPT = r"""
touch "$1/confirmed"
kill -- "-$(cat "$1/pid")" 2>/dev/null || true
"""

ROLLBACK_NOW_SCRIPT = r"""
kill -- "-$(cat "$1/pid")" 2>/dev/null || true
sh "$1/watchdog" "$1" 0
"""


def lockout_problem(firewall: Firewall, spec: Any, live: Any, endpoint: tuple[str, int] | None) -> str | None:
    """Why applying `spec` would cut the connection at `endpoint` (client address, SSH port), if it would."""
    if endpoint is None:
        return None
    source, port = endpoint
    if firewall.admits(spec, live, source, port, "tcp"):
        return None
    return (
        f"refusing: the new firewall state would block converge's own SSH connection from {source} to port "
        f"{port}; allow it in the baseline, or pass --allow-lockout if you really mean it"
    )


class Watchdog:
    """A commit-confirm guard on one host, for one apply."""

    def __init__(self, host: Host, firewalls: Sequence[Firewall], timeout: float) -> None:
        self.host = host
        self.timeout = timeout
        self.directory = f"{ROLLBACK_ROOT}/{host.backup_dir.rsplit('/', 1)[-1]}"
        self.paths = sorted({path for firewall in firewalls for path in firewall.state_paths()})
        self.commands = [shlex.join(argv) for firewall in firewalls for argv in firewall.reactivate_argv()]

    def arm(self) -> None:
        self.host.run(["sh", "-c", ARM_SCRIPT, "sh", self.directory, f"{self.timeout:g}", *self.paths, "--", *self.commands])

    def roll_back_now(self) -> None:
        self.host.run(["sh", "-c", ROLLBACK_NOW_SCRIPT, "sh", self.directory])

    def confirm(self) -> None:
        """Confirm over a NEW connection: proof that the host still lets converge in."""
        fresh = self.host.reconnect()
        try:
            fresh.run(["sh", "-c", CONFIRM_SCRIPT, "sh", self.directory])
        finally:
            fresh.close()

    def rolled_back(self) -> bool:
        fresh = self.host.reconnect()
        try:
            return fresh.read_file(f"{self.directory}/rolled-back") is not None
        finally:
            fresh.close()
