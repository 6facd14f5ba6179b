"""Hosts: everything a provider does to a machine goes through one of these.

A host gathers a batch of reads in one round trip, runs commands given as argv lists, and
writes files atomically with a backup of what they replace. Providers never learn whether
the host is this machine or one reached over SSH.
"""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from converge.errors import HostError
from converge.reads import CommandResult, Facts, Read

BACKUP_ROOT = "/var/lib/converge/backups"
# Commands run with sbin on PATH (non-login shells over SSH lack it) and the C locale.
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class CommandError(HostError):
    """A command exited non-zero; carries its result so callers can add context."""

    def __init__(self, result: CommandResult) -> None:
        self.result = result
        super().__init__(result.failure())


class Host(ABC):
    """One machine converge reads and changes."""

    def __init__(self, name: str, target: str) -> None:
        self.name = name
        self.target = target
        # Every file a run replaces or removes is kept under one directory per run; the random
        # part keeps two runs started in the same second apart.
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(4)}"
        self.backup_dir = f"{BACKUP_ROOT}/{self.run_id}"

    @abstractmethod
    def gather(self, reads: Iterable[Read]) -> Facts:
        """Answer every read at once (one round trip on a remote host)."""

    @abstractmethod
    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True) -> CommandResult:
        """Run a command; raise CommandError on a non-zero exit when `check`."""

    @abstractmethod
    def read_file(self, path: str) -> str | None:
        """The text of a file, or None if it does not exist."""

    @abstractmethod
    def write_file(self, path: str, content: str, *, mode: int = 0o644) -> str | None:
        """Replace a file atomically, keeping the owner and mode of the file it replaces (`mode`
        applies to a new file). Returns where the previous version was backed up, if any."""

    @abstractmethod
    def remove_file(self, path: str) -> str | None:
        """Remove a file after backing it up; returns the backup path (None if it was absent)."""

    def connection(self) -> Connection | None:
        """The connection converge manages this host through, as the host sees it, or None when
        it manages it without one (the local host)."""
        return None

    @abstractmethod
    def lock(self, holder: str, wait: float = 0.0) -> None:
        """Take this host's apply lock, waiting up to `wait` seconds for another holder; raises
        HostError naming the holder. Released by `close()`, or when this process dies."""

    def reconnect(self) -> Host:
        """A new, independent connection to the same host (itself when there is no connection)."""
        return self

    def close(self) -> None:  # noqa: B027 - most hosts hold nothing to release
        """Release connections."""

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True)
class Connection:
    """The connection converge manages a host through, as the host sees it."""

    client: str  # the client address ($SSH_CONNECTION's first field)
    port: int  # the server port it connected to
    user: str  # the user converge logged in as
    auth: str  # how it authenticated: publickey, password or keyboard-interactive


@dataclass(frozen=True)
class ConnectOptions:
    """How to reach remote hosts; `local` ignores them."""

    timeout: float = 10.0
    become: bool = False
    identity: str | None = None
    trust_new_host_keys: bool = False
    ssh_config: str | None = None
    # Whether a password may be asked on the terminal (sudo with --become).
    interactive: bool = False
    # Tries, one second apart, of a connect that failed in a way a later try may not (OpenSSH's
    # ConnectionAttempts); None: the host's ssh_config ConnectionAttempts, else 1.
    connect_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.connect_attempts is not None and self.connect_attempts < 1:
            raise ValueError(f"connect_attempts is {self.connect_attempts}: one attempt at least")


# What ConnectOptions.connect_attempts does, as every command taking --connect-attempts says it.
CONNECT_ATTEMPTS_HELP = (
    "Tries, one second apart, of an SSH connect that timed out, was refused, reset, found no route or was "
    "closed during the handshake (never of an authentication failure, a host key problem (changed, revoked, "
    "unknown), a name that does not resolve or a sudo refusal). Default: ssh_config's ConnectionAttempts, else 1."
)


def connect(target: str, options: ConnectOptions = ConnectOptions(), name: str | None = None) -> Host:
    """A host for a target string (SPEC section 2): `local`, or anything else over SSH."""
    if target == "local":
        from converge.hosts.local import LocalHost

        return LocalHost(name)
    # paramiko costs ~0.1 s to import: only runs that reach remote hosts pay for it.
    from converge.hosts.ssh import SSHHost

    return SSHHost(target, options, name)
