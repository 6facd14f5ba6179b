"""The shell a remote host runs answers exactly what the local host answers, and its writes are
all-or-nothing. Run here with the machine's own /bin/sh (dash, as on Debian hosts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from converge.hosts.local import LocalHost
from converge.hosts.remote_script import WRITE_SCRIPT, batch_script, parse_batch_output, write_arguments
from converge.reads import CommandResult, ReadFile, ReadGlob, RunCommand, Which


def test_batch_answers_match_the_local_host(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-a.conf").write_text("a = 1\n")
    (tmp_path / "conf.d" / "20-b.conf").write_text("no trailing newline")
    (tmp_path / "conf.d" / "30-empty.conf").write_text("")
    (tmp_path / "conf.d" / ".hidden.conf").write_text("hidden\n")
    (tmp_path / "conf.d" / "sub.conf").mkdir()
    (tmp_path / "conf.d" / "99-link.conf").symlink_to(tmp_path / "conf.d" / "10-a.conf")
    (tmp_path / "conf.d" / "notes.txt").write_text("not matched\n")
    (tmp_path / "weird name 'quoted' $x.txt").write_text("ünïcode\n\ttabs  and  spaces\n")
    reads = [
        ReadFile(str(tmp_path / "conf.d" / "10-a.conf")),
        ReadFile(str(tmp_path / "weird name 'quoted' $x.txt")),
        ReadFile(str(tmp_path / "missing")),
        ReadGlob(str(tmp_path / "conf.d" / "*.conf")),
        ReadGlob(str(tmp_path / "nowhere" / "*.conf")),
        RunCommand(("sh", "-c", "echo out; echo err >&2; exit 3")),
        RunCommand(("printf", "%s", "$(reboot); `id`")),
        RunCommand(("true",)),
        Which("sh"),
        Which("no-such-tool-anywhere"),
    ]
    script = subprocess.run(["sh", "-s"], input=batch_script(reads), capture_output=True, text=True, check=True)
    remote = parse_batch_output(reads, script.stdout)
    local = LocalHost().gather(reads)
    for read in reads:
        assert remote[read] == local._answer(read), read
    assert remote[reads[5]] == CommandResult(reads[5].argv, 3, "out\n", "err\n")
    assert remote[reads[6]].stdout == "$(reboot); `id`"  # arguments are data, never code
    assert list(remote[reads[3]]) == sorted(remote[reads[3]])


def test_missing_command_is_a_read_failure() -> None:
    reads = [RunCommand(("no-such-tool-anywhere", "--version"))]
    script = subprocess.run(["sh", "-s"], input=batch_script(reads), capture_output=True, text=True, check=True)
    answer = parse_batch_output(reads, script.stdout)[reads[0]]
    assert answer.reason == "no-such-tool-anywhere: command not found on this host"


def _write(target: Path, content: bytes, sent: bytes, backup: Path) -> subprocess.CompletedProcess[bytes]:
    arguments = write_arguments(str(target), content, 0o640, str(backup))
    return subprocess.run(["sh", "-c", WRITE_SCRIPT, "sh", *arguments], input=sent, capture_output=True, check=False)


def test_write_replaces_atomically_keeping_mode_and_backing_up(tmp_path: Path) -> None:
    target, backup = tmp_path / "etc" / "app.conf", tmp_path / "backup" / "app.conf"
    target.parent.mkdir()
    target.write_text("old\n")
    target.chmod(0o600)
    result = _write(target, b"new\n", b"new\n", backup)
    assert result.returncode == 0, result.stderr
    assert target.read_text() == "new\n"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert backup.read_text() == "old\n"
    assert result.stdout.decode().strip() == str(backup)
    fresh = tmp_path / "etc" / "fresh.conf"
    assert _write(fresh, b"x\n", b"x\n", tmp_path / "backup" / "fresh.conf").returncode == 0
    assert oct(fresh.stat().st_mode & 0o777) == "0o640"


def test_a_cut_transfer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "app.conf"
    target.write_text("old\n")
    content = b"x" * 100_000
    cut = _write(target, content, content[:40_000], tmp_path / "backup")
    assert cut.returncode == 3 and b"incomplete transfer" in cut.stderr
    corrupt = _write(target, content, b"y" * len(content), tmp_path / "backup")
    assert corrupt.returncode == 3 and b"corrupt transfer" in corrupt.stderr
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["app.conf"]


def test_ssh_config_with_match_exec_still_works(tmp_path: Path) -> None:
    # converge keeps paramiko from importing invoke until a config needs it for `Match exec`.
    config = tmp_path / "config"
    config.write_text('Match exec "test -d /"\n  User fromexec\nHost web1\n  HostName 203.0.113.7\n')
    lookup = (
        "from converge.hosts import ConnectOptions; from converge.hosts.ssh import SSHHost; "
        f"c = SSHHost._ssh_config(ConnectOptions(ssh_config={str(config)!r})).lookup('web1'); "
        "print(c['hostname'], c['user'])"
    )
    result = subprocess.run([sys.executable, "-c", lookup], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    assert result.stdout.split() == ["203.0.113.7", "fromexec"], result.stderr
