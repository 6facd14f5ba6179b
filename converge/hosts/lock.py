"""One apply per host: an exclusive flock(1)/flock(2) lock on the host itself.

The lock is held by a process tied to converge's own lifetime (this process for the local host, a
session of converge's SSH connection for a remote one), never by a file someone must delete: a
converge killed with SIGKILL, or a dropped connection, leaves the host unlocked. Both kinds lock
the same file, so a local apply and a remote one exclude each other too.
"""

from __future__ import annotations

import getpass
import os
import socket
from datetime import UTC, datetime

LOCK_DIR = "/run/converge"
LOCK_FILE = f"{LOCK_DIR}/apply.lock"
# Who holds the lock, written by the holder once it has it; read by whoever is refused.
HOLDER_FILE = f"{LOCK_DIR}/apply.holder"
BUSY_EXIT = 75  # EX_TEMPFAIL

# Run as `sh -c LOCK_SCRIPT sh HOLDER WAIT_SECONDS` in a session of its own: prints `locked` and
# then holds the lock until its stdin closes (converge closing the session, or the connection dying).
LOCK_SCRIPT = f"""\
mkdir -p -m 0700 {LOCK_DIR} || exit 96
exec 9>>{LOCK_FILE} || exit 96
if ! flock -n 9; then
    if [ "$2" = 0 ] || ! flock -w "$2" 9; then
        echo "busy $(cat {HOLDER_FILE} 2>/dev/null)"
        exit {BUSY_EXIT}
    fi
fi
printf '%s\\n' "$1" > {HOLDER_FILE}
echo locked
exec cat > /dev/null
"""


def holder_description() -> str:
    """Who is asking: user, controller host, pid and since when (shown to whoever is refused)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{user}@{socket.gethostname()} pid {os.getpid()} since {since}"


def busy_message(name: str, holder: str) -> str:
    return (f"{name}: another converge apply holds this host's lock ({holder.strip() or 'holder unknown'}); "
            "try again when it is done, or wait for it with --lock-timeout SECONDS")
