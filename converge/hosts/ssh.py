"""Hosts reached over SSH with paramiko: one connection per host, reused for the whole run.

~/.ssh/config (HostName, User, Port, IdentityFile, ProxyJump, UserKnownHostsFile), the agent and
known_hosts are honoured through paramiko's own SSHConfig and key handling. An unknown host key
is refused unless the user trusts new keys explicitly; a changed one is always refused.
"""

from __future__ import annotations

import dataclasses
import errno
import getpass
import glob
import io
import ipaddress
import logging
import os
import re
import secrets
import select
import shlex
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

from converge.errors import HostError
from converge.hosts import CommandError, Connection, ConnectOptions, Host, known_hosts
from converge.hosts.lock import LOCK_FILE, LOCK_SCRIPT, busy_message
from converge.hosts.paramiko_without_invoke import paramiko
from converge.hosts.remote_script import (
    ENVIRONMENT,
    REMOVE_SCRIPT,
    WRITE_SCRIPT,
    batch_script,
    parse_batch_output,
    write_arguments,
)
from converge.reads import CommandResult, Facts, Read, ReadFile

# paramiko logs a failed connect with its traceback (ERROR); with no handler configured Python
# prints that on stderr, for every host and every try. The host's error carries the reason.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_MATCH_EXEC = re.compile(r"^\s*match\b.*\bexec\b", re.IGNORECASE | re.MULTILINE)

DEFAULT_PORT = 22
# A host's answer is held in memory: more than this per session is refused, and a session silent
# for longer than the idle timeout (overridable by CONVERGE_IDLE_TIMEOUT, in seconds) is a hung host.
# Both are that host's error; the others go on.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
COMMAND_IDLE_TIMEOUT = 600.0
# After a command's exit status, how long its output may still take to end (seconds of silence).
_AFTER_EXIT_GRACE = 0.5
_WAIT_SECONDS = 1.0
# With a password, sudo runs this first: it must read the fresh token sent right after the
# password. sudo -k asks for the password every time, but a policy that does not ask (NOPASSWD
# for one command, a global timestamp) would leave the password line to the command, which would
# be a root shell reading it as a script: the guard refuses to run anything then.
_SUDO_GUARD = (
    'IFS= read -r line || exit 125; [ "$line" = "$1" ] || '
    '{ echo "sudo did not read the password it was given; nothing was run" >&2; exit 125; }; shift; exec "$@"'
)
_password_lock = threading.Lock()
_become_password: str | None = None
# Per SSH user, whether sudo on the first host to answer wanted a password (and that host's name):
# a later host that wants one when the first did not may be faking sudo to collect it.
_first_sudo_answer: dict[str, tuple[bool, str]] = {}


# Host and user names reach shell commands the operator's ssh_config runs (`Match exec "... %h"`,
# substituted unquoted by paramiko, as in OpenSSH CVE-2023-51385): only a set that no shell or
# ssh_config token gives a meaning is let through, wherever a name comes from.
_HOST_NAME = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")
_USER_NAME = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*\$?")


def check_host_name(name: str, where: str) -> str:
    """`name` if it is a plain host name or an IPv6 address; HostError otherwise."""
    if _HOST_NAME.fullmatch(name) and len(name) <= 253:
        return name
    try:
        if "%" not in name and ipaddress.IPv6Address(name):
            return name
    except ValueError:
        pass
    raise HostError(f"{where}: host name {name!r} refused; host names are letters, digits, '.', '_' and '-' "
                    "(not starting with '-'), or an IPv6 address in brackets")


def check_user_name(name: str, where: str) -> str:
    if _USER_NAME.fullmatch(name) and len(name) <= 64:
        return name
    raise HostError(f"{where}: user name {name!r} refused; user names are letters, digits, '.', '_' and '-' "
                    "(not starting with '-'), optionally ending in '$'")


@dataclass(frozen=True)
class SSHTarget:
    alias: str
    user: str | None
    port: int | None

    @classmethod
    def parse(cls, target: str) -> SSHTarget:
        """`ssh://[user@]host[:port]`, `user@host[:port]` or a bare host (or ~/.ssh/config alias)."""
        if not target.isprintable() or " " in target:  # urlsplit would drop tabs and newlines silently
            raise HostError(f"{target!r}: not a target; control characters and spaces are refused")
        shown = target
        try:
            parts = urlsplit(target if target.startswith("ssh://") else f"ssh://{target}")
        except ValueError:  # urlsplit checks what is in brackets
            raise HostError(f"{shown}: only IPv6 addresses go in brackets") from None
        try:
            port = parts.port
        except ValueError:
            raise HostError(f"{shown}: invalid port") from None
        if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/") or parts.query or parts.password:
            raise HostError(f"{shown}: not a target; expected local, ssh://[user@]host[:port] or user@host[:port]")
        # urlsplit lowercases the host name; ~/.ssh/config aliases are case-sensitive.
        alias = parts.netloc.rpartition("@")[2]
        alias = alias.rsplit(":", 1)[0] if parts.port is not None else alias
        bracketed = alias.startswith("[") and alias.endswith("]")
        alias = alias[1:-1] if bracketed else alias
        if bracketed and ":" not in alias:
            raise HostError(f"{shown}: only IPv6 addresses go in brackets")
        if not bracketed and ":" in alias:
            raise HostError(f"{shown}: an IPv6 address goes in brackets: ssh://[ADDRESS]:PORT")
        check_host_name(alias, shown)
        user = parts.username
        if user is not None:
            check_user_name(user, shown)
        return cls(alias, user, port)


def _revoked_error(hostname: str, key: paramiko.PKey) -> HostError:
    return HostError(f"{hostname}: host key {key.get_name()} {key.fingerprint} is REVOKED in known_hosts; refusing it")


class _UnknownHostKey(paramiko.MissingHostKeyPolicy):
    """Called for a host no known_hosts file names (a known host offering an unknown key is
    paramiko's BadHostKeyException: changed). Refuses, or with --trust-new-host-keys records."""

    def __init__(self, known: known_hosts.KnownKeys, record_in: str | None, hashed: bool) -> None:
        self.known, self.record_in, self.hashed = known, record_in, hashed

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if self.known.is_revoked(key):
            raise _revoked_error(hostname, key)
        if self.record_in is None:
            raise HostError(
                f"{hostname}: unknown host key {key.get_name()} {key.fingerprint}; verify it out of band, then "
                "run again with --trust-new-host-keys to record it in known_hosts"
            )
        known_hosts.record(self.record_in, hostname, key, hashed=self.hashed)


class _HandshakeTimeoutError(TimeoutError):
    """paramiko's start_client stopped waiting for the banner or key exchange to end; what it
    raises then ("No existing session") does not say so. The message says where it stopped."""


# paramiko wraps what cut the reading of the host's banner short (a timeout, a reset, the host
# closing) in an SSHException of this message, without its reason; the wrapped one says it.
_BANNER_ERROR = "Error reading SSH protocol banner"
# A connect that failed with one of these may succeed a second later (ssh_config(5) ConnectionAttempts).
_RETRIED_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT,
    errno.EHOSTUNREACH, errno.ENETUNREACH,
})


def _banner_cause(error: BaseException) -> BaseException | None:
    if isinstance(error, paramiko.SSHException) and str(error).startswith(_BANNER_ERROR):
        return error.__context__
    return None


def _described(error: BaseException) -> str:
    """Never empty: an exception's message, with its type, or its type alone (EOFError() has no message)."""
    message = str(error).strip()
    return f"{message} ({type(error).__name__})" if message else type(error).__name__


def _lost(error: BaseException) -> str:
    """Why an open connection failed, never empty (paramiko raises a bare EOFError when the host closes it)."""
    return f"the host closed the connection ({_described(error)})" if isinstance(error, EOFError) else _described(error)


def _os_failure(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return (error.strerror if isinstance(error, OSError) else None) or _described(error)


def _connect_failure(error: BaseException, timeout: float) -> str:
    """Why a connect failed, in words; never empty."""
    match error:
        case socket.gaierror():
            return f"cannot resolve host name ({error.strerror or _described(error)})"
        case paramiko.BadHostKeyException():
            return (
                f"HOST KEY CHANGED: known_hosts has {error.expected_key.fingerprint}, the host offered "
                f"{error.key.fingerprint}. This may be an attack; if the change is expected, remove the old key "
                f"(ssh-keygen -R HOST) and trust the new one"
            )
        case paramiko.AuthenticationException():
            return f"authentication failed ({_described(error)}); check the user, keys and agent"
        case paramiko.SSHException() if _banner_cause(error) is not None:
            cause = _banner_cause(error)
            assert cause is not None
            if isinstance(cause, TimeoutError):
                return f"timed out after {timeout:g} s waiting for the host's SSH banner"
            return _connect_failure(cause, timeout)
        case _HandshakeTimeoutError():
            return f"timed out after {timeout:g} s {error}"
        case TimeoutError():
            return f"timed out after {timeout:g} s"
        case EOFError():
            return f"connection closed by the host during the SSH handshake ({_described(error)})"
        case paramiko.ChannelException():
            return f"the jump host could not open a connection to it ({error.text or error.code})"
        case paramiko.ssh_exception.NoValidConnectionsError():
            return ", ".join(sorted({_os_failure(each) for each in error.errors.values()})) or _described(error)
        case OSError():
            return _os_failure(error)
        case _:
            return _described(error)


def _connect_error(where: str, error: BaseException, timeout: float, attempts: int = 1) -> HostError:
    if isinstance(error, HostError):  # says it all already (a host key refused, a ProxyJump hop's failure)
        return error
    tries = f" ({attempts} attempts)" if attempts > 1 else ""
    return HostError(f"{where}: {_connect_failure(error, timeout)}{tries}")


def _worth_retrying(error: BaseException) -> bool:
    """Whether a later try of a connect that failed so may succeed: one that timed out, was
    refused, reset, found no route or was closed during the handshake (a host still booting, a
    listener or a network overwhelmed). Never an authentication failure (sshd counts them), a host
    key problem, a name that does not resolve or anything else converge refused (HostError)."""
    match error:
        case HostError() | socket.gaierror() | paramiko.BadHostKeyException() | paramiko.AuthenticationException():
            return False
        case paramiko.SSHException() if _banner_cause(error) is not None:
            cause = _banner_cause(error)
            return cause is not None and _worth_retrying(cause)
        case TimeoutError() | EOFError() | paramiko.ssh_exception.NoValidConnectionsError():
            return True
        case paramiko.ChannelException():  # through a jump host: it could not connect to the target
            return error.code == paramiko.common.OPEN_FAILED_CONNECT_FAILED
        case OSError():
            return error.errno in _RETRIED_ERRNOS
        case _:
            return False


_INCLUDE = re.compile(r"^\s*include\s+(?P<patterns>.+?)\s*$", re.IGNORECASE)


def _with_includes(path: str, depth: int = 0) -> str:
    """The text of an ssh_config with its `Include` lines replaced by the files they name (globs,
    relative to ~/.ssh), as OpenSSH reads them; paramiko's parser ignores Include."""
    if depth > 16:
        raise HostError(f"{path}: Include nested more than 16 deep")
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    text: list[str] = []
    for line in lines:
        match = _INCLUDE.match(line)
        if not match:
            text.append(line)
            continue
        for pattern in shlex.split(match["patterns"]):
            pattern = os.path.expanduser(pattern)
            pattern = pattern if os.path.isabs(pattern) else os.path.join(os.path.expanduser("~/.ssh"), pattern)
            text += [_with_includes(included, depth + 1) for included in sorted(glob.glob(pattern)) if os.path.isfile(included)]
    return "\n".join(text) + "\n"


class _Transport(paramiko.Transport):
    """paramiko's transport thread wakes every `_active_check_timeout` seconds while a host is
    silent (0.1 by default): ~10 ms of CPU per second of waiting, per host. A plan waits on every
    host of the fleet at once; it still notices a closed transport at once (close() does not wait)."""

    _active_check_timeout = 1.0


def _transport(sock: Any, /, **options: Any) -> paramiko.Transport:
    return _Transport(sock, **options)


class SSHHost(Host):
    def __init__(self, target: str, options: ConnectOptions, name: str | None = None, *,
                 proxy_jump: str | None = None) -> None:
        parsed = SSHTarget.parse(target)
        super().__init__(name or parsed.alias, target)
        self.options = options
        config = self._ssh_config(options).lookup(parsed.alias)
        if proxy_jump is not None:  # a hop of a ProxyJump chain: reached through the hops before it
            config["proxyjump"] = proxy_jump
        # What ssh_config resolves the alias to is checked too: it reaches the connection, the
        # jump host's config lookup and the recorded known_hosts line.
        self.hostname = check_host_name(config.get("hostname", parsed.alias), f"{target}: ssh_config HostName")
        self.port = parsed.port or self._config_port(config, target)
        self.user = check_user_name(parsed.user or config.get("user") or getpass.getuser(), f"{target}: User")
        for hop in self._jump_hops(config):
            SSHTarget.parse(hop)
        self._where = f"{self.user}@{self.hostname}:{self.port}"
        self._jump: SSHHost | None = None
        self._lock_channel: Any = None
        self._lock_files: tuple[Any, ...] = ()
        self._config = config
        self._attempts = options.connect_attempts or self._config_attempts(config, target, options)
        self._client = self._connect_with_attempts()
        self._sudo: list[str] = []
        self._sudo_password: str | None = None
        if options.become and self.user != "root":
            self._start_become()

    @staticmethod
    def _config_port(config: paramiko.SSHConfigDict, target: str) -> int:
        text = str(config.get("port", DEFAULT_PORT))
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise HostError(f"{target}: ssh_config Port {text!r} is not a port number")
        return int(text)

    @classmethod
    def _config_attempts(cls, config: paramiko.SSHConfigDict, target: str, options: ConnectOptions) -> int:
        text = str(config.get("connectionattempts", 1))
        if not (text.isascii() and text.isdigit() and int(text) > 0):
            raise HostError(f"{target}: ssh_config {cls._config_path(options)}: ConnectionAttempts {text!r} "
                            "is not a number of attempts (a whole number, 1 or more)")
        return int(text)

    @staticmethod
    def _jump_hops(config: paramiko.SSHConfigDict) -> list[str]:
        jump = config.get("proxyjump", "")
        return [] if not jump or jump.lower() == "none" else jump.split(",")

    @staticmethod
    def _config_path(options: ConnectOptions) -> str:
        return options.ssh_config or os.path.expanduser("~/.ssh/config")

    @classmethod
    def _ssh_config(cls, options: ConnectOptions) -> paramiko.SSHConfig:
        path = cls._config_path(options)
        if not os.path.exists(path):
            return paramiko.SSHConfig()
        text = _with_includes(path)
        if getattr(paramiko.config, "invoke", None) is None and _MATCH_EXEC.search(text):
            import invoke

            setattr(paramiko.config, "invoke", invoke)  # noqa: B010 - not in paramiko's type stubs
            setattr(paramiko.config, "invoke_import_error", None)  # noqa: B010
        return paramiko.SSHConfig.from_file(io.StringIO(text))

    def _connect_with_attempts(self) -> paramiko.SSHClient:
        """A connected client, after up to `self._attempts` tries one second apart (as OpenSSH's
        ConnectionAttempts) of a connect that failed in a way a later try may not; each try is a
        fresh connection, through fresh jump hosts. The error says how many tries were made."""
        for attempt in range(1, self._attempts + 1):
            try:
                return self._connect(self._config, self.options)
            except Exception as error:
                if attempt == self._attempts or not _worth_retrying(error):
                    raise _connect_error(self._where, error, self.options.timeout, attempt) from error
            time.sleep(1.0)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _connect(self, config: paramiko.SSHConfigDict, options: ConnectOptions) -> paramiko.SSHClient:
        """One try: a client connected and authenticated, or the exception of the failed one
        (closed, with its jump hosts)."""
        client = paramiko.SSHClient()
        try:
            self._connect_client(client, config, options)
        except BaseException:
            client.close()
            self._close_jump()
            raise
        return client

    def _connect_client(self, client: paramiko.SSHClient, config: paramiko.SSHConfigDict, options: ConnectOptions) -> None:
        user_files, global_files = known_hosts.files_of(config)
        known = known_hosts.lookup([*user_files, *global_files], known_hosts.key_name(self.hostname, self.port))
        for key in reversed(known.keys):  # the first line of each type wins, as in OpenSSH
            if not known.is_revoked(key):
                client.get_host_keys().add(known_hosts.key_name(self.hostname, self.port), key.get_name(), key)
        record_in = user_files[0] if options.trust_new_host_keys and user_files else None
        hashed = str(config.get("hashknownhosts", "no")).lower() == "yes"
        client.set_missing_host_key_policy(_UnknownHostKey(known, record_in, hashed))
        sock = None
        hops = self._jump_hops(config)
        if hops:
            # ProxyJump a,b: reach b through a, then the target through a direct-tcpip channel of
            # b (as `ssh -J a,b` does). A jump host only forwards: it never runs sudo, so it never
            # sees the password.
            self._jump = SSHHost(hops[-1], dataclasses.replace(options, become=False),
                                 proxy_jump=",".join(hops[:-1]) or "none")
            transport = self._jump._client.get_transport()
            assert transport is not None
            sock = transport.open_channel("direct-tcpip", (self.hostname, self.port), ("127.0.0.1", 0))
        identity = [os.path.expanduser(path) for path in config.get("identityfile", [])]
        if options.identity:
            identity.insert(0, options.identity)
        try:
            client.connect(
                self.hostname, port=self.port, username=self.user, key_filename=cast(Any, identity or None),  # a list works
                timeout=options.timeout, banner_timeout=options.timeout, auth_timeout=options.timeout,
                allow_agent=True, look_for_keys=not identity, sock=sock, transport_factory=_transport,
            )
        except paramiko.SSHException as error:
            transport = client.get_transport()
            if transport is not None and transport.is_active() and not getattr(transport, "initial_kex_done", True):
                banner_read = bool(getattr(transport, "remote_version", ""))
                raise _HandshakeTimeoutError("during the SSH key exchange" if banner_read else
                                             "waiting for the host's SSH banner") from error
            raise
        transport = client.get_transport()
        offered = transport.get_remote_server_key() if transport else None
        if offered is not None and known.is_revoked(offered):
            raise _revoked_error(self.hostname, offered)

    def _start_become(self) -> None:
        """Use sudo for everything; ask the password once per run on a terminal if sudo needs one."""
        global _become_password  # noqa: PLW0603 - one password for every host of a run, asked once
        probe = self._exec(["sudo", "-n", "true"])
        wants_password = not probe.ok and "password" in probe.stderr
        with _password_lock:
            first_wanted, first_host = _first_sudo_answer.setdefault(self.user, (wants_password, self.name))
        if probe.ok:
            self._sudo = ["sudo", "-n", "--"]
            return
        if not wants_password or not self.options.interactive:
            raise HostError(f"{self.name}: sudo refused: {probe.failure()}")
        if not first_wanted:
            raise HostError(f"{self.name}: sudo asks {self.user}'s password here but not on {first_host}; "
                            "converge does not send it to a host that may be collecting it")
        with _password_lock:
            if _become_password is None:
                _become_password = getpass.getpass(f"sudo password for {self.user} on {self.name}: ")
        self._sudo_token = secrets.token_hex(16)
        self._sudo = ["sudo", "-k", "-S", "-p", "", "--", "sh", "-c", _SUDO_GUARD, "sh", self._sudo_token]
        self._sudo_password = _become_password
        check = self.run(["true"], check=False)
        if not check.ok:
            raise HostError(f"{self.name}: sudo refused: {check.failure()}")

    def _exec(self, argv: Sequence[str], stdin: bytes | None = None) -> CommandResult:
        """One SSH session running argv (quoted once, here) with optional input."""
        try:
            channel_in, channel_out, _ = self._open_session(shlex.join(argv))
            if stdin:
                channel_in.write(stdin)
            channel_in.channel.shutdown_write()
            out, err = self._collect(channel_out.channel, argv[0])
            stdout = out.decode("utf-8", errors="surrogateescape")
            stderr = err.decode("utf-8", errors="surrogateescape")
            status = channel_out.channel.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise HostError(f"{self.name}: connection lost: {_lost(error)}") from error
        if status == -1:  # the channel closed without an exit status
            raise HostError(f"{self.name}: connection lost while running {argv[0]}")
        return CommandResult(tuple(argv), status, stdout, stderr)

    def _collect(self, channel: paramiko.Channel, command: str) -> tuple[bytes, bytes]:
        """stdout and stderr of a session, both read as they come, within the size and idle limits."""
        idle = float(os.environ.get("CONVERGE_IDLE_TIMEOUT", COMMAND_IDLE_TIMEOUT))
        out, err = bytearray(), bytearray()
        last = time.monotonic()
        while True:
            received = False
            while channel.recv_ready():
                out += channel.recv(1 << 16)
                received = True
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(1 << 16)
                received = True
            if len(out) + len(err) > MAX_ANSWER_BYTES:
                channel.close()
                raise HostError(f"{self.name}: {command} answered more than {MAX_ANSWER_BYTES >> 20} MiB; stopped reading")
            if received:
                last = time.monotonic()
            elif channel.closed or channel.eof_received:
                if channel.recv_ready() or channel.recv_stderr_ready():
                    continue  # data that arrived since the reads above: the answer's last bytes
                return bytes(out), bytes(err)
            elif channel.exit_status_ready():
                # Exited but output still open: a background process it started may hold it (a
                # daemon), so wait briefly for the end of the output, not for the process.
                if time.monotonic() - last > _AFTER_EXIT_GRACE:
                    return bytes(out), bytes(err)
                select.select([channel], [], [], 0.02)
            elif time.monotonic() - last > idle:
                channel.close()
                raise HostError(f"{self.name}: {command} gave no answer for {idle:g} s; the host may be hung")
            else:
                # The channel's pipe wakes this as soon as output or the end of it arrives; the
                # timeout only bounds how late the idle check runs (polling costs CPU per host).
                select.select([channel], [], [], min(_WAIT_SECONDS, idle))

    def _open_session(self, command: str) -> tuple[Any, Any, Any]:
        """Start `command` in a new session, reconnecting once if the connection has dropped
        since the last one: nothing ran yet, so a retry cannot run anything twice."""
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            self._client.close()
            self._close_jump()
            try:
                self._client = self._connect_with_attempts()
            except HostError as error:
                raise HostError(f"{self.name}: connection lost, and reconnecting failed: {error}") from error
        return self._client.exec_command(command, timeout=None)

    def _privileged(self, argv: Sequence[str], stdin: bytes = b"") -> CommandResult:
        if self._sudo_password is not None:
            stdin = f"{self._sudo_password}\n{self._sudo_token}\n".encode() + stdin
        return self._exec([*self._sudo, *argv], stdin)

    def gather(self, reads: Iterable[Read]) -> Facts:
        ordered = list(dict.fromkeys(reads))
        if not ordered:
            return Facts({})
        result = self._privileged(["sh", "-s"], batch_script(ordered).encode())
        if result.returncode != 0:
            raise HostError(f"{self.name}: reading the host failed: {result.failure()}")
        return Facts(parse_batch_output(ordered, result.stdout))

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True) -> CommandResult:
        script = ENVIRONMENT + 'command -v "$1" >/dev/null 2>&1 || { echo "$1: command not found" >&2; exit 127; }\nexec "$@"\n'
        result = self._privileged(["sh", "-c", script, "sh", *argv], (input or "").encode("utf-8", "surrogateescape"))
        result = CommandResult(tuple(argv), result.returncode, result.stdout, result.stderr)
        if result.returncode == 127 and "command not found" in result.stderr:
            raise HostError(f"{argv[0]}: command not found on {self.name}")
        if check and not result.ok:
            raise CommandError(result)
        return result

    def read_file(self, path: str) -> str | None:
        return self.gather([ReadFile(path)]).file(path)

    def write_file(self, path: str, content: str, *, mode: int = 0o644) -> str | None:
        data = content.encode("utf-8", errors="surrogateescape")
        arguments = write_arguments(path, data, mode, f"{self.backup_dir}{path}")
        result = self._privileged(["sh", "-c", WRITE_SCRIPT, "sh", *arguments], data)
        if not result.ok:
            raise HostError(f"cannot write {path} on {self.name}: {result.failure()}")
        return result.stdout.strip() or None

    def remove_file(self, path: str) -> str | None:
        result = self._privileged(["sh", "-c", REMOVE_SCRIPT, "sh", path, f"{self.backup_dir}{path}"])
        if not result.ok:
            raise HostError(f"cannot remove {path} on {self.name}: {result.failure()}")
        return result.stdout.strip() or None

    def connection(self) -> Connection | None:
        # As the host sees it: behind NAT or a ProxyJump that is not the address we connect from.
        result = self._exec(["sh", "-c", 'echo "$SSH_CONNECTION"'])
        fields = result.stdout.split()
        if not result.ok or len(fields) != 4:
            raise HostError(f"{self.name}: cannot tell which connection converge is using (SSH_CONNECTION unset)")
        transport = self._client.get_transport()
        handler = getattr(transport, "auth_handler", None)
        auth = getattr(handler, "auth_method", None) or "publickey"
        return Connection(fields[0], int(fields[3]), self.user, auth)

    def lock(self, holder: str, wait: float = 0.0) -> None:
        """Hold the host's lock in a session of this connection: it ends, and the lock with it, when
        converge closes the session, exits or dies, or the connection drops."""
        argv = [*self._sudo, "sh", "-c", LOCK_SCRIPT, "sh", holder, f"{wait:g}"]
        try:
            stdin, stdout, stderr = self._open_session(shlex.join(argv))
            if self._sudo_password is not None:  # as _privileged feeds it: sudo's line, then the guard's
                stdin.write(f"{self._sudo_password}\n{self._sudo_token}\n".encode())
                stdin.flush()
            stdout.channel.settimeout(wait + max(self.options.timeout, 10.0))
            line = stdout.readline()
            answer = (line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line).strip()
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise HostError(f"{self.name}: cannot take the apply lock: {_lost(error)}") from error
        if answer != "locked":
            if answer.startswith("busy"):
                stdout.channel.close()
                raise HostError(busy_message(self.name, answer.removeprefix("busy")))
            # The script ended without the lock: its own words say why (permissions, no flock).
            words = stderr.read().decode("utf-8", errors="replace")  # stdout ended: so does the script
            stdout.channel.close()
            reason = " / ".join(line.strip() for line in words.splitlines() if line.strip()) or answer or "no answer"
            raise HostError(f"{self.name}: cannot take the apply lock {LOCK_FILE}: {reason}")
        stdout.channel.settimeout(None)
        # Keep the files: paramiko sends EOF when the stdin file is collected, which would end the lock.
        self._lock_channel, self._lock_files = stdout.channel, (stdin, stdout)

    def reconnect(self) -> Host:
        return SSHHost(self.target, self.options, self.name)

    def close(self) -> None:
        channel = getattr(self, "_lock_channel", None)  # close() also runs for a half-made host
        if channel is not None:
            for lock_file in self._lock_files:
                lock_file.close()
            channel.close()
            self._lock_channel, self._lock_files = None, ()
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()
        self._close_jump()

    def _close_jump(self) -> None:
        if self._jump is not None:
            self._jump.close()
            self._jump = None
