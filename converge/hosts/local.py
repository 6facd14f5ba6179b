"""This machine, without SSH."""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from converge.errors import HostError
from converge.hosts import SEARCH_PATH, CommandError, Host
from converge.hosts.lock import HOLDER_FILE, LOCK_DIR, LOCK_FILE, busy_message
from converge.reads import CommandResult, Facts, Read, ReadFailure, ReadFile, ReadGlob, RunCommand, Which

# Commands must parse the same on every host: C locale, and sbin on PATH.
COMMAND_ENV = {"PATH": SEARCH_PATH, "LC_ALL": "C", "LANG": "C"}


def _read_text(path: str) -> str | ReadFailure | None:
    try:
        # newline="": the bytes as they are (CRLF kept), as an SSH host's batched read returns them.
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        return ReadFailure(f"cannot read {path}: {error.strerror}")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_extended_attributes(source: Path, destination: str) -> None:
    """The replaced file's SELinux label, ACLs and user attributes go to its replacement (after
    chown, which may clear some of them)."""
    try:
        names = os.listxattr(source)
    except OSError:  # a filesystem without extended attributes
        return
    for name in names:
        os.setxattr(destination, name, os.getxattr(source, name))


class LocalHost(Host):
    def __init__(self, name: str | None = None) -> None:
        super().__init__(name or "local", "local")
        self._lock_fd: int | None = None

    def lock(self, holder: str, wait: float = 0.0) -> None:
        # flock(2) on a descriptor of this process (close-on-exec, so no command it starts keeps
        # it): the kernel releases it when the process ends, however it ends.
        try:
            os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
            fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise HostError(f"cannot take the apply lock {LOCK_FILE}: {error.strerror}") from None
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    shown = _read_text(HOLDER_FILE)
                    raise HostError(busy_message(self.name, shown if isinstance(shown, str) else "")) from None
                time.sleep(0.2)
        Path(HOLDER_FILE).write_text(holder + "\n", encoding="utf-8")
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def gather(self, reads: Iterable[Read]) -> Facts:
        return Facts({read: self._answer(read) for read in set(reads)})

    def _answer(self, read: Read) -> object:
        match read:
            case ReadFile(path):
                return _read_text(path)
            case ReadGlob(pattern):
                found: dict[str, str] = {}
                for path in sorted(glob.glob(pattern)):
                    if os.path.isfile(path):
                        text = _read_text(path)
                        if isinstance(text, ReadFailure):
                            return text
                        if text is not None:
                            found[path] = text
                return found
            case RunCommand(argv):
                try:
                    return self.run(argv, check=False)
                except HostError as error:
                    return ReadFailure(str(error))
            case Which(name):
                return shutil.which(name, path=SEARCH_PATH)
        raise TypeError(f"unknown read {read!r}")

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True) -> CommandResult:
        try:
            completed = subprocess.run(
                list(argv), input=input, capture_output=True, text=True, env=COMMAND_ENV,
                stdin=None if input is not None else subprocess.DEVNULL, check=False,
            )
        except FileNotFoundError:
            raise HostError(f"{argv[0]}: command not found on this host") from None
        result = CommandResult(tuple(argv), completed.returncode, completed.stdout, completed.stderr)
        if check and not result.ok:
            raise CommandError(result)
        return result

    def read_file(self, path: str) -> str | None:
        text = _read_text(path)
        if isinstance(text, ReadFailure):
            raise HostError(text.reason)
        return text

    def _backup(self, path: Path) -> str:
        backup = Path(self.backup_dir) / path.relative_to("/")
        backup.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy2(path, backup, follow_symlinks=True)
        return str(backup)

    def write_file(self, path: str, content: str, *, mode: int = 0o644) -> str | None:
        target = Path(path)
        try:
            current = target.stat()
        except FileNotFoundError:
            current = None
        try:
            backup = self._backup(target) if current else None
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".converge")
        except OSError as error:
            raise HostError(f"cannot write {path}: {error.strerror}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, stat.S_IMODE(current.st_mode) if current else mode)
            if current and os.geteuid() == 0:
                os.chown(temporary, current.st_uid, current.st_gid)
            if current:
                _copy_extended_attributes(target, temporary)
            os.replace(temporary, target)
            _fsync_directory(target.parent)
        except OSError as error:
            Path(temporary).unlink(missing_ok=True)
            raise HostError(f"cannot write {path}: {error.strerror}") from None
        return backup

    def remove_file(self, path: str) -> str | None:
        target = Path(path)
        if not target.exists():
            return None
        try:
            backup = self._backup(target)
            target.unlink()
        except OSError as error:
            raise HostError(f"cannot remove {path}: {error.strerror}") from None
        return backup
