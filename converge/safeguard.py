"""Changes that can cut converge off a host (firewalls, sshd): refuse what would, and apply the
rest under a commit-confirm watchdog that restores the previous state unless a new connection confirms.

The engine knows no subsystem: a provider that can lock us out implements
`converge.provider.ConnectionGuard` (why a state would refuse converge's connection, which files hold
its state, and the commands that make restored files live again).
"""

from __future__ import annotations

import shlex
import time

from converge.errors import HostError
from converge.hosts import Connection, Host
from converge.provider import ConnectionGuard

ROLLBACK_ROOT = "/var/lib/converge/rollback"


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
# Whoever makes "decided" first wins: a confirmation, or this restore. A restore once begun is
# never interrupted by a late confirmation (mkdir is atomic).
mkdir "$dir/decided" 2>/dev/null || exit 0
date -u +%FT%TZ > "$dir/restoring"
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

# Prints `confirmed` once the watchdog is disarmed and gone, or `restoring` if it began first.
CONFIRM_SCRIPT = r"""
if ! mkdir "$1/decided" 2>/dev/null; then echo restoring; exit 0; fi
touch "$1/confirmed"
pid=$(cat "$1/pid")
kill -- "-$pid" 2>/dev/null || true
i=0
while kill -0 "$pid" 2>/dev/null && [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" != Z ]; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "still running"; exit 1; }
    sleep 0.05
done
echo confirmed
"""

# Restore at once (a later step of the guarded apply failed): stop the timer, then restore.
ROLLBACK_NOW_SCRIPT = r"""
kill -- "-$(cat "$1/pid")" 2>/dev/null || true
sh "$1/watchdog" "$1" 0
"""


def lockout_problem(guard: ConnectionGuard, spec: object, live: object, connection: Connection | None) -> str | None:
    """Why applying `spec` would cut converge's own connection, if it would."""
    if connection is None:
        return None
    reason = guard.lockout(spec, live, connection)
    if reason is None:
        return None
    return (
        f"refusing: {reason}, which would cut converge's own SSH connection from {connection.client} to port "
        f"{connection.port}; change the baseline, or pass --allow-lockout if you really mean it"
    )


class Watchdog:
    """A commit-confirm guard on one host, for one provider's apply."""

    def __init__(self, host: Host, guard: ConnectionGuard, timeout: float, label: str) -> None:
        self.host = host
        self.timeout = timeout
        self.directory = f"{ROLLBACK_ROOT}/{host.run_id}-{label}"
        self.paths = sorted(set(guard.state_paths()))
        self.commands = [shlex.join(argv) for argv in guard.reactivate_argv()]
        self.armed_at: float | None = None

    def arm(self) -> None:
        self.host.run(["sh", "-c", ARM_SCRIPT, "sh", self.directory, f"{self.timeout:g}", *self.paths, "--", *self.commands])
        self.armed_at = time.monotonic()

    def due_in(self) -> float:
        """Seconds until the watchdog restores, if nothing confirms."""
        assert self.armed_at is not None
        return max(0.0, self.armed_at + self.timeout - time.monotonic())

    def roll_back_now(self) -> None:
        self.host.run(["sh", "-c", ROLLBACK_NOW_SCRIPT, "sh", self.directory])

    def confirm(self) -> bool:
        """Confirm over a NEW connection (proof that the host still lets converge in): True once the
        watchdog is disarmed and checked gone, False if it had begun restoring first."""
        fresh = self.host.reconnect()
        try:
            answer = fresh.run(["sh", "-c", CONFIRM_SCRIPT, "sh", self.directory]).stdout.strip()
        finally:
            fresh.close()
        if answer not in ("confirmed", "restoring"):
            raise HostError(f"unexpected answer from the watchdog: {answer!r}")
        return answer == "confirmed"

    def rolled_back(self) -> bool:
        fresh = self.host.reconnect()
        try:
            return fresh.read_file(f"{self.directory}/rolled-back") is not None
        finally:
            fresh.close()

