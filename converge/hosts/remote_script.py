"""The POSIX sh that a remote host runs: a whole batch of reads in one exec, and atomic writes.

A batch's answers come back as one tar archive, base64-encoded on one line, plus one short
`INDEX KIND ...` line per read: every process started on the host costs it a millisecond or two of
CPU, and a fleet's reads share the hosts' cores, so the script starts one `tar`, one `cp` and one
`base64` for the whole batch instead of a `base64` per file and per output. The archive holds the
regular files read (dereferenced), each glob's list of matches and the matches themselves, and the
commands' stdout and stderr (written to files of the script's temporary directory). Files of /proc
and /sys report a size of 0, which tar would believe: they are copied into the temporary directory
first (`cp --parents` reads to the end). Whatever cannot go that way (no tar or no GNU cp on the
host, a file that changed while tar read it) is answered the old way, a `base64` per file, so the
answers are always exact. Values reach the script only as quoted arguments (shlex.quote), never
spliced unquoted into shell code.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import os
import shlex
import tarfile
from collections.abc import Sequence

from converge.errors import HostError
from converge.hosts import SEARCH_PATH
from converge.reads import CommandResult, Read, ReadFailure, ReadFile, ReadGlob, RunCommand, Which

ENVIRONMENT = f"PATH={SEARCH_PATH}; LC_ALL=C; LANG=C; export PATH LC_ALL LANG\n"
PRELUDE = ENVIRONMENT + """\
t=$(mktemp -d) || exit 97
trap 'rm -rf "$t"' EXIT
b() { base64 -w0 -- "$@"; }
echo "t $t"
set --
"""

_GLOB_CHARACTERS = set("*?[")
# Commands and globs (which fork) run in this many background lanes, each lane's reads one after
# the other: a plan waits for the slowest lane, not for the sum of every tool the host runs, and
# no more than this many of them run at once.
LANES = 4
# Pseudo-file systems whose files stat as empty: read to the end by cp, never sized by tar.
_PSEUDO = ("/proc/", "/sys/")


def _archivable(path: str) -> bool:
    """Whether tar's member name for `path` is `path` without its leading '/': an absolute path
    with no '.', '..' or empty component (tar rewrites those)."""
    return path.startswith("/") and os.path.normpath(path) == path and not path.startswith("//")


def _read_one(index: int, path: str) -> str:
    """A file answered on its own line, base64-encoded."""
    p = shlex.quote(path)
    return (
        f"if [ ! -e {p} ]; then echo '{index} none'; "
        f"elif c=$(b {p} 2>/dev/null); then echo \"{index} ok $c\"; else echo '{index} err'; fi"
    )


def _read_file(index: int, path: str) -> str:
    if not _archivable(path):
        return _read_one(index, path)
    p = shlex.quote(path)
    # Files that stat as empty (pseudo files, a link into /proc such as /etc/mtab, empty files)
    # are listed for the one cp after the lanes, which reads to the end; others go to tar's arguments.
    pseudo = f"printf '%s\\n' {p} >>\"$t/pseudo\"; q{index}=1; echo '{index} pseudo'"
    queue = pseudo if path.startswith(_PSEUDO) else \
        f"if [ -s {p} ]; then set -- \"$@\" {p}; echo '{index} tar'; else {pseudo}; fi"
    return f"if [ -f {p} ] && [ -r {p} ]; then {queue}; else {_read_one(index, path)}; fi"


def _glob_root(pattern: str) -> tuple[str, int, list[str]]:
    absolute = pattern.startswith("/")
    components = pattern.split("/")[1:] if absolute else pattern.split("/")
    fixed = 0
    while fixed < len(components) - 1 and not _GLOB_CHARACTERS & set(components[fixed]):
        fixed += 1
    root = ("/" if absolute else "") + "/".join(components[:fixed]) or "."
    return root, len(components) - fixed, components[fixed:]


def _find(pattern: str) -> str:
    """glob.glob's matches, as LocalHost gives them: wildcards may stand in any component below the root."""
    root, depth, below_root = _glob_root(pattern)
    below = root.rstrip("/")
    # find's -path lets * match "/", glob's does not: at an exact depth no wildcard can span two components.
    # glob's * never matches a leading dot; find's does, so dot-entries are excluded unless the pattern names one.
    match = f"-name {shlex.quote(below_root[-1])} " if depth == 1 else f"-path {shlex.quote(pattern)} "
    dotted = any(component.startswith(".") for component in below_root)
    hidden = "" if dotted else f"! -path {shlex.quote(below + '/.*')} ! -path {shlex.quote(below + '/*/.*')} "
    return f"find -L {shlex.quote(root)} -mindepth {depth} -maxdepth {depth} -type f {match}{hidden}2>/dev/null"


def _glob_archived(pattern: str) -> bool:
    """Whether a glob's matches go to the archive: not when tar would rewrite their names."""
    return _archivable(_glob_root(pattern)[0])


def _match_line(index: int) -> str:
    """The match in $p on its own line, path and content base64-encoded ('!': unreadable)."""
    return f"echo \"{index} file $(printf %s \"$p\" | base64 -w0) $(b \"$p\" 2>/dev/null || echo '!')\""


def _glob_one_by_one(index: int, listing: str) -> str:
    return f"while IFS= read -r p; do {_match_line(index)}; done <{listing}; echo '{index} end'"


def _read_glob(index: int, pattern: str) -> str:
    listing = f"\"$t/g{index}\""
    if not _glob_archived(pattern):
        return f"{_find(pattern)} >{listing}; {_glob_one_by_one(index, listing)}"
    return f"{_find(pattern)} >{listing}; echo '{index} glob'"


# Whether the match in $p stats as empty (a pseudo file, a link to one, an empty file): copied by cp.
_STATS_EMPTY = 'case $p in /proc/*|/sys/*) true;; *) [ ! -s "$p" ];; esac'


def _note_pseudo_matches(index: int) -> str:
    return f"while IFS= read -r p; do if {_STATS_EMPTY}; then printf '%s\\n' \"$p\" >>\"$t/pseudo\"; fi; done <\"$t/g{index}\""


def _queue_matches(index: int) -> str:
    """A glob's matches join tar's arguments: those that stat as empty from their copies in $t/p,
    one cp could not copy on a line of its own."""
    return (
        f"while IFS= read -r p; do if {_STATS_EMPTY}; then "
        f"if [ -f \"$t/p$p\" ]; then set -- \"$@\" \"$t/p$p\"; else {_match_line(index)}; fi; "
        f"else set -- \"$@\" \"$p\"; fi; done <\"$t/g{index}\""
    )


def _run_command(index: int, argv: Sequence[str]) -> str:
    return (
        f"if command -v {shlex.quote(argv[0])} >/dev/null 2>&1; then "
        f"{shlex.join(argv)} >\"$t/o{index}\" 2>\"$t/e{index}\" </dev/null; "
        f"echo \"{index} cmd $?\"; else echo '{index} missing'; fi"
    )


def _which(index: int, name: str) -> str:
    return (
        f"if p=$(command -v -- {shlex.quote(name)}); then echo \"{index} ok $(printf %s \"$p\" | base64 -w0)\"; "
        f"else echo '{index} none'; fi"
    )


def _archive(reads: Sequence[Read]) -> list[str]:
    """After the lanes: the pseudo files copied, then one tar of everything; if tar cannot, every
    archived answer on a line of its own instead."""
    globs = [index for index, read in enumerate(reads) if isinstance(read, ReadGlob) and _glob_archived(read.pattern)]
    pseudo, one_by_one = [], []
    for index, read in enumerate(reads):
        match read:
            case ReadFile(path) if _archivable(path):
                one_by_one.append(_read_one(index, path))
                copy = shlex.quote(f"/p{path}")
                pseudo.append(f"if [ -n \"${{q{index}:-}}\" ]; then if [ -f \"$t\"{copy} ]; then "
                              f"set -- \"$@\" \"$t\"{copy}; else {_read_one(index, path)}; fi; fi")
            case ReadGlob():
                if index in globs:
                    one_by_one.append(_glob_one_by_one(index, f"\"$t/g{index}\""))
            case RunCommand():
                one_by_one.append(f"[ -e \"$t/o{index}\" ] && echo \"{index} out $(b \"$t/o{index}\") $(b \"$t/e{index}\")\"")
    return [
        *map(_note_pseudo_matches, globs),
        # cp --parents reads each pseudo file to its end, into $t/p/<its path>; one it could not
        # copy (gone, unreadable, no GNU cp) is answered on a line of its own.
        'if [ -e "$t/pseudo" ]; then (set --; while IFS= read -r p; do set -- "$@" "$p"; done <"$t/pseudo"; '
        'mkdir "$t/p" && exec cp --parents -- "$@" "$t/p") 2>/dev/null; fi',
        *pseudo,
        *map(_queue_matches, globs),
        # Outputs and lists of matches that are empty stay out: a missing one is empty.
        'for f in "$t"/o* "$t"/e* "$t"/g*; do [ -s "$f" ] && set -- "$@" "$f"; done',
        # Any failure of tar (a file that changed or went away while it read) and every archived
        # answer comes on its own line instead.
        'if [ $# -gt 0 ] && tar -chf "$t/all.tar" -- "$@" 2>/dev/null; then printf \'T \'; b "$t/all.tar"; echo',
        "else echo 'T !'",
        *(f"  {line}" for line in one_by_one),
        "fi",
    ]


def batch_script(reads: Sequence[Read]) -> str:
    """A script answering every read: `INDEX KIND ...` lines and one archive line (see the module's doc)."""
    return _batch_script(tuple(reads))


@functools.lru_cache(maxsize=32)  # a fleet's hosts mostly share one baseline: one script for all
def _batch_script(reads: tuple[Read, ...]) -> str:
    """Files and `command -v` are answered in order by the script itself; commands and globs in
    LANES background lanes writing to files of their own, printed whole once all have ended (the
    answers' lines are tagged with their read, so their order between reads does not matter)."""
    inline: list[str] = []
    lanes: list[list[str]] = [[] for _ in range(LANES)]
    forking = 0
    for index, read in enumerate(reads):
        match read:
            case ReadFile(path):
                inline.append(_read_file(index, path))
            case ReadGlob(pattern):
                lanes[forking % LANES].append(_read_glob(index, pattern))
                forking += 1
            case RunCommand(argv):
                lanes[forking % LANES].append(_run_command(index, argv))
                forking += 1
            case Which(name):
                inline.append(_which(index, name))
    used = [lane for lane in lanes if lane]
    # The lanes start first, so the host reads its files while the commands run.
    lines = [PRELUDE, *("{\n" + "\n".join(lane) + f"\n}} >\"$t/lane{number}\" &" for number, lane in enumerate(used)), *inline]
    if used:
        lines += ["wait", " ".join(["cat", *(f'"$t/lane{number}"' for number in range(len(used)))])]
    lines += [*_archive(reads), "exit 0"]
    return "\n".join(lines) + "\n"


def _decode(text: str) -> str:
    return base64.b64decode(text, validate=True).decode("utf-8", errors="surrogateescape")


_BLOCK = 512
_REGULAR, _HARD_LINK, _LONG_NAME, _LONG_LINK = (b"0", b"\0"), b"1", b"L", b"K"


def _unpack(archive: bytes) -> dict[str, bytes]:
    """Regular files of a tar in GNU or ustar format by member name, hard links resolved.

    tarfile costs ~40 us per member, a batch archive has a hundred or more, and a plan of 200 hosts
    parses 200 of them on one controller: this reads only what GNU tar and BusyBox write for
    regular files (~2 us per member). Anything else (pax headers, sparse or huge files) raises
    ValueError, and tarfile reads that archive instead."""
    members: dict[str, bytes] = {}
    offset, long_name, long_link = 0, b"", b""
    while offset + _BLOCK <= len(archive):
        header = archive[offset:offset + _BLOCK]
        if not header.strip(b"\0"):
            return members
        stored = int(header[148:156].strip(b"\0 ") or b"0", 8)
        if stored != sum(header[:148]) + sum(header[156:]) + 8 * 32:  # the checksum counts its field as spaces
            raise ValueError("tar header checksum")
        kind, size = header[156:157], int(header[124:136].strip(b"\0 ") or b"0", 8)
        data = archive[offset + _BLOCK:offset + _BLOCK + size]
        offset += _BLOCK + -(-size // _BLOCK) * _BLOCK
        name = long_name or header[:100].split(b"\0", 1)[0]
        if not long_name and header[257:263] == b"ustar\0":  # POSIX ustar: a prefix before the name
            prefix = header[345:500].split(b"\0", 1)[0]
            name = prefix + b"/" + name if prefix else name
        link = long_link or header[157:257].split(b"\0", 1)[0]
        long_name = long_link = b""
        if kind == _LONG_NAME:
            long_name = data.split(b"\0", 1)[0]
        elif kind == _LONG_LINK:
            long_link = data.split(b"\0", 1)[0]
        elif kind in _REGULAR:
            members[name.decode("utf-8", errors="surrogateescape")] = data
        elif kind == _HARD_LINK:
            members[name.decode("utf-8", errors="surrogateescape")] = members[link.decode("utf-8", errors="surrogateescape")]
        elif kind != b"5":  # directories carry nothing
            raise ValueError(f"tar member type {kind!r}")
    raise ValueError("tar archive cut short")


def _members(encoded: str) -> dict[str, str]:
    """The archive's regular files by absolute path."""
    archive = base64.b64decode(encoded, validate=True)
    try:
        unpacked = _unpack(archive)
    except (ValueError, KeyError):
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
            unpacked = {}
            for member in tar:
                handle = tar.extractfile(member) if member.isfile() or member.islnk() else None
                if handle is not None:
                    unpacked[member.name] = handle.read()
    return {_absolute(name): data.decode("utf-8", errors="surrogateescape") for name, data in unpacked.items()}


def _absolute(name: str) -> str:
    """A member's path as the script named it (tar drops the leading '/'); normpath only when needed."""
    path = "/" + name
    return os.path.normpath(path) if "//" in path or "/." in path or path.endswith("/") else path


class _Answers:
    """What a batch's lines said, read by read, before the archive fills in the rest."""

    def __init__(self, reads: Sequence[Read], output: str) -> None:
        self.reads = reads
        self.direct: dict[int, object] = {}  # answered on their own lines
        self.pending: dict[int, str] = {}  # index: "tar", "pseudo" or "glob", answered by the archive
        self.status: dict[int, int] = {}
        self.outputs: dict[int, tuple[str, str]] = {}
        self.matches: dict[int, dict[str, str | None]] = {}  # a glob's matches answered one by one
        self.ended: set[int] = set()
        self.temporary = ""
        self.archive: dict[str, str] | None = None
        self.archive_line = False
        for line in output.split("\n"):
            if line:
                self.take(line)

    def take(self, line: str) -> None:
        tag, _, rest = line.partition(" ")
        if tag == "t":
            self.temporary = rest
            return
        if tag == "T":
            self.archive_line = True
            self.archive = None if rest == "!" else _members(rest)
            return
        index = int(tag)
        read = self.reads[index]
        kind, *fields = rest.split(" ")
        if kind == "none":
            self.direct[index] = None
        elif kind == "ok":
            self.direct[index] = _decode(fields[0]) if fields else ""
        elif kind == "err":
            self.direct[index] = ReadFailure(f"cannot read {getattr(read, 'path', read)}")
        elif kind in ("tar", "pseudo", "glob"):
            self.pending[index] = kind
        elif kind == "file":
            content = fields[1] if len(fields) > 1 else ""
            self.matches.setdefault(index, {})[_decode(fields[0])] = None if content == "!" else _decode(content)
        elif kind == "end":
            self.ended.add(index)
        elif kind == "cmd":
            self.status[index] = int(fields[0])
        elif kind == "out":
            self.outputs[index] = (_decode(fields[0]) if fields else "", _decode(fields[1]) if len(fields) > 1 else "")
        elif kind == "missing":
            assert isinstance(read, RunCommand)
            self.direct[index] = ReadFailure(f"{read.argv[0]}: command not found on this host")
        else:
            raise ValueError(f"unknown answer {kind!r}")

    def member(self, path: str) -> str | None:
        if self.archive is None:
            raise ValueError("no archive, and answers missing")
        return self.archive.get(_absolute(path.lstrip("/")))  # every path the script archives is absolute

    def file(self, index: int, path: str) -> object:
        """A file queued for the archive: from it (pseudo files from their copy), else unreadable."""
        copy = self.temporary + "/p" + path
        found = self.member(copy) if self.pending[index] == "pseudo" else self.member(path)
        return ReadFailure(f"cannot read {path}") if found is None else found

    def glob(self, index: int) -> object:
        matches = self.matches.get(index, {})
        if index not in self.ended:  # answered by the archive: its listing of matches, each file's text
            listing = self.member(f"{self.temporary}/g{index}") or ""
            for path in listing.split("\n")[:-1]:
                if path not in matches:  # in the archive, or (if it stats as empty) its copy is
                    archived = self.member(path)
                    matches[path] = self.member(self.temporary + "/p" + path) if archived is None else archived
        found: dict[str, str] = {}
        for path in sorted(matches):  # as LocalHost: glob.glob's matches, sorted
            text = matches[path]
            if text is None:
                return ReadFailure(f"cannot read {path}")
            found[path] = text
        return found

    def command(self, index: int, read: RunCommand) -> CommandResult:
        if index in self.outputs:
            stdout, stderr = self.outputs[index]
        else:
            stdout = self.member(f"{self.temporary}/o{index}") or ""
            stderr = self.member(f"{self.temporary}/e{index}") or ""
        return CommandResult(read.argv, self.status[index], stdout, stderr)

    def answer(self, index: int) -> object:
        read = self.reads[index]
        if index in self.direct:
            return self.direct[index]
        if isinstance(read, RunCommand) and index in self.status:
            return self.command(index, read)
        if isinstance(read, ReadGlob) and (index in self.ended or self.pending.get(index) == "glob"):
            return self.glob(index)
        if isinstance(read, ReadFile) and index in self.pending:
            return self.file(index, read.path)
        raise KeyError(index)


def parse_batch_output(reads: Sequence[Read], output: str) -> dict[Read, object]:
    """The answers of `batch_script(reads)` from its output; raises HostError if it is cut short."""
    try:
        answers = _Answers(reads, output)
        if (answers.pending or answers.status) and not answers.archive_line:
            raise HostError(f"the host answered {len(answers.direct)} of {len(reads)} reads (connection cut?)")
        found: dict[Read, object] = {}
        for index, read in enumerate(reads):
            try:
                found[read] = answers.answer(index)
            except KeyError:
                continue
    except (ValueError, IndexError, binascii.Error, AssertionError, tarfile.TarError) as error:
        raise HostError(f"garbled answer from the host ({error})") from None
    if len(found) != len(reads):
        raise HostError(f"the host answered {len(found)} of {len(reads)} reads (connection cut?)")
    return found


# Atomic replace of one file, run as `sh -c WRITE_SCRIPT sh TARGET MODE BACKUP SIZE SHA256` with
# the content on stdin. The content is checked complete before the rename: a connection cut
# mid-transfer leaves the old file in place, never a truncated new one.
WRITE_SCRIPT = """\
set -eu
target=$1 mode=$2 backup=$3 size=$4 sum=$5
dir=$(dirname -- "$target")
mkdir -p -- "$dir"
tmp=$(mktemp -- "$dir/.$(basename -- "$target").XXXXXX.converge")
trap 'rm -f -- "$tmp"' EXIT HUP INT TERM
cat > "$tmp"
[ "$(wc -c < "$tmp")" -eq "$size" ] || { echo "incomplete transfer of $target" >&2; exit 3; }
[ "$(sha256sum < "$tmp" | cut -d' ' -f1)" = "$sum" ] || { echo "corrupt transfer of $target" >&2; exit 3; }
if [ -e "$target" ]; then
    mkdir -p -m 0700 -- "$(dirname -- "$backup")"
    cp -pL -- "$target" "$backup"
    chmod --reference="$target" -- "$tmp"
    chown --reference="$target" -- "$tmp"
    # The file's SELinux label, ACLs and other extended attributes go to its replacement.
    cp --attributes-only --preserve=mode,ownership,xattr -- "$target" "$tmp"
    echo "$backup"
else
    chmod "$mode" -- "$tmp"
fi
sync -- "$tmp"
mv -f -- "$tmp" "$target"
trap - EXIT HUP INT TERM
sync -- "$dir" 2>/dev/null || true
"""

REMOVE_SCRIPT = """\
set -eu
target=$1 backup=$2
[ -e "$target" ] || exit 0
mkdir -p -m 0700 -- "$(dirname -- "$backup")"
cp -pL -- "$target" "$backup"
rm -f -- "$target"
echo "$backup"
"""


def write_arguments(path: str, content: bytes, mode: int, backup: str) -> list[str]:
    return [path, f"{mode:o}", backup, str(len(content)), hashlib.sha256(content).hexdigest()]
