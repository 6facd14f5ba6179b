"""The shell a remote host runs answers exactly what the local host answers, and its writes are
all-or-nothing. Run here with the machine's own /bin/sh (dash, as on Debian hosts)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from converge.errors import HostError, ProviderError
from converge.hosts.local import LocalHost
from converge.hosts.remote_script import WRITE_SCRIPT, _unpack, batch_script, parse_batch_output, write_arguments
from converge.reads import CommandResult, Read, ReadFailure, ReadFile, ReadGlob, RunCommand, Which


def _tree(tmp_path: Path) -> list[Read]:
    """Reads of every shape the batch answers differently: archived files, pseudo files copied
    first, globs of both, answers on lines of their own, and what LocalHost reads as-is."""
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-a.conf").write_text("a = 1\n")
    (tmp_path / "conf.d" / "20-b.conf").write_text("no trailing newline")
    (tmp_path / "conf.d" / "30-empty.conf").write_text("")
    (tmp_path / "conf.d" / "40-crlf.conf").write_bytes(b"a = 1\r\nb = 2\r\n")
    (tmp_path / "conf.d" / "50-latin1.conf").write_bytes(b"name = caf\xe9\n")
    (tmp_path / "conf.d" / ".hidden.conf").write_text("hidden\n")
    (tmp_path / "conf.d" / "sub.conf").mkdir()
    (tmp_path / "conf.d" / "99-link.conf").symlink_to(tmp_path / "conf.d" / "10-a.conf")
    (tmp_path / "conf.d" / "notes.txt").write_text("not matched\n")
    os.link(tmp_path / "conf.d" / "10-a.conf", tmp_path / "hard-link.conf")  # tar stores it as a link
    (tmp_path / "weird name 'quoted' $x.txt").write_text("ünïcode\n\ttabs  and  spaces\n")
    # A link into /proc stats as a regular empty file, as /etc/mtab does: tar would store it empty.
    (tmp_path / "conf.d" / "60-proc-link.conf").symlink_to("/proc/sys/kernel/osrelease")
    (tmp_path / "empty").write_text("")
    return [
        ReadFile(str(tmp_path / "conf.d" / "10-a.conf")),
        ReadFile(str(tmp_path / "hard-link.conf")),
        ReadFile(str(tmp_path / "conf.d" / "40-crlf.conf")),
        ReadFile(str(tmp_path / "weird name 'quoted' $x.txt")),
        ReadFile(str(tmp_path / "missing")),
        ReadFile(str(tmp_path / "conf.d")),  # a directory
        ReadFile(str(tmp_path / "conf.d" / ".." / "conf.d" / "10-a.conf")),  # a name tar would rewrite
        ReadGlob(str(tmp_path / "conf.d" / "*.conf")),
        ReadGlob(str(tmp_path / "nowhere" / "*.conf")),
        # /proc and /sys stat as empty: copied by cp before tar sees them.
        ReadFile("/proc/sys/kernel/osrelease"),
        ReadFile("/proc/sys/kernel/printk"),
        ReadFile("/proc/filesystems"),
        ReadFile("/proc/sys/kernel/no-such-key"),
        ReadGlob("/proc/sys/kernel/os*"),
        RunCommand(("sh", "-c", "echo out; echo err >&2; exit 3")),
        RunCommand(("printf", "%s", "$(reboot); `id`")),
        RunCommand(("true",)),
        RunCommand(("no-such-tool-anywhere", "--version")),
        Which("sh"),
        Which("no-such-tool-anywhere"),
        ReadFile(str(tmp_path / "conf.d" / "60-proc-link.conf")),
        ReadFile(str(tmp_path / "empty")),
    ]


def _answers(reads: list[Read], script: str) -> tuple[dict[Read, object], str]:
    output = subprocess.run(["sh", "-s"], input=script.encode(), capture_output=True, check=True).stdout
    text = output.decode("utf-8", errors="surrogateescape")
    return parse_batch_output(reads, text), text


# The same answers when the archive cannot be made (no tar on the host, or a file that changed
# while tar read it) and when cp cannot copy the pseudo files (no GNU cp): every answer then
# comes on a line of its own.
SABOTAGED = {
    "archive": ("tar -chf", "false -chf"),
    "no tar, no cp": ("exec cp --parents", "exec false"),
    # Alpine's and the VM tier's userland (.ci/packages/vm.txt installs busybox)
    "busybox": ("tar -chf", "busybox tar -chf"),
    "nothing": ("", ""),
}


@pytest.mark.parametrize("sabotage", SABOTAGED, ids=list(SABOTAGED))
def test_batch_answers_match_the_local_host(tmp_path: Path, sabotage: str) -> None:
    reads = _tree(tmp_path)
    script = batch_script(reads)
    if sabotage != "nothing":
        old, new = SABOTAGED[sabotage]
        assert old in script
        script = script.replace(old, new)
        if sabotage == "no tar, no cp":
            script = script.replace("tar -chf", "false -chf")
        if sabotage == "busybox":
            script = script.replace("exec cp --parents", "exec busybox cp --parents")
    remote, output = _answers(reads, script)
    assert ("\nT !\n" in output) == (sabotage in ("archive", "no tar, no cp"))
    local = LocalHost().gather(reads)
    for read in reads:
        try:
            assert remote[read] == local._answer(read), read
        except ProviderError:  # unreadable both ways; the reasons' wording differs
            assert isinstance(remote[read], ReadFailure), read
    assert remote[reads[1]] == "a = 1\n"
    assert remote[reads[2]] == "a = 1\r\nb = 2\r\n"
    assert remote[reads[10]].count("\t") == 3  # kernel.printk, read to its end
    assert "ext4" in remote[reads[11]] or "proc" in remote[reads[11]]
    assert remote[reads[14]] == CommandResult(reads[14].argv, 3, "out\n", "err\n")
    assert remote[reads[15]].stdout == "$(reboot); `id`"  # arguments are data, never code
    assert list(remote[reads[7]]) == sorted(remote[reads[7]])
    assert str(tmp_path / "conf.d" / "99-link.conf") in remote[reads[7]]
    assert remote[reads[20]] == remote[reads[9]] != ""  # the link into /proc, read to its end
    assert remote[reads[7]][str(tmp_path / "conf.d" / "60-proc-link.conf")] == remote[reads[9]]
    assert remote[reads[21]] == ""


def test_a_batch_is_one_archive_when_the_host_has_tar(tmp_path: Path) -> None:
    reads = _tree(tmp_path)
    output = subprocess.run(["sh", "-s"], input=batch_script(reads).encode(), capture_output=True, check=True).stdout
    lines = output.decode("utf-8", errors="surrogateescape").split("\n")
    assert sum(line.startswith("T ") and line != "T !" for line in lines) == 1
    # Nothing archivable is answered on a line of its own, so no base64 ran per file or output.
    assert not [line for line in lines if line.split(" ")[1:2] in (["ok"], ["file"], ["out"])
                and not line.startswith(("6 ", "18 "))]


def test_a_cut_batch_is_an_error(tmp_path: Path) -> None:
    reads = _tree(tmp_path)
    output = subprocess.run(["sh", "-s"], input=batch_script(reads).encode(), capture_output=True, check=True).stdout
    text = output.decode("utf-8", errors="surrogateescape")
    with pytest.raises(HostError, match="answered"):
        parse_batch_output(reads, text[:text.index("\nT ")])
    with pytest.raises(HostError, match="garbled"):
        parse_batch_output(reads, text[:text.index("\nT ") + 200])


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


@pytest.mark.parametrize("tar_format", ["gnu", "ustar"])
def test_the_archive_reader_agrees_with_tarfile(tmp_path: Path, tar_format: str) -> None:
    """The batch's own tar reader against the standard library's, on archives GNU tar writes:
    names past 100 bytes (GNU long names, ustar prefixes), hard links, bytes that are not UTF-8."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    (deep / "long-name.conf").write_text("deep\n")
    (tmp_path / "a.conf").write_bytes(b"caf\xe9\n" * 300)
    os.link(tmp_path / "a.conf", tmp_path / "b.conf")
    (tmp_path / "empty.conf").write_text("")
    (tmp_path / b"n\xe9.conf".decode("utf-8", errors="surrogateescape")).write_text("odd name\n")
    names = [str(path) for path in sorted(tmp_path.rglob("*.conf"))]
    archive = subprocess.run(["tar", f"--format={tar_format}", "-chf", "-", *names], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as reference:
        expected = {member.name: reference.extractfile(member).read()  # type: ignore[union-attr]
                    for member in reference if member.isfile() or member.islnk()}
    assert _unpack(archive) == expected
    assert len(expected) == 5 and any(len(name) > 100 for name in expected)
    with pytest.raises(ValueError):
        _unpack(archive[:1024])
