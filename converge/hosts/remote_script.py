"""The POSIX sh that a remote host runs: a whole batch of reads in one exec, and atomic writes.

Output of a batch is one line per answer, every variable part base64-encoded, so file contents
and command output of any shape come back exactly. Values reach the script only as quoted
arguments (shlex.quote), never spliced unquoted into shell code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import shlex
from collections.abc import Sequence

from converge.errors import HostError
from converge.hosts import SEARCH_PATH
from converge.reads import CommandResult, Read, ReadFailure, ReadFile, ReadGlob, RunCommand, Which

ENVIRONMENT = f"PATH={SEARCH_PATH}; LC_ALL=C; LANG=C; export PATH LC_ALL LANG\n"
PRELUDE = ENVIRONMENT + """\
t=$(mktemp -d) || exit 97
trap 'rm -rf "$t"' EXIT
b() { base64 -w0 -- "$@"; }
"""

_GLOB_CHARACTERS = set("*?[")
# Commands and globs (which fork) run in this many background lanes, each lane's reads one after
# the other: a plan waits for the slowest lane, not for the sum of every tool the host runs, and
# no more than this many of them run at once.
LANES = 4


def _read_file(index: int, path: str) -> str:
    p = shlex.quote(path)
    return (
        f"if [ ! -e {p} ]; then echo '{index} none'; "
        f"elif c=$(b {p} 2>/dev/null); then echo \"{index} ok $c\"; else echo '{index} err'; fi"
    )


def _read_glob(index: int, pattern: str) -> str:
    """glob.glob's answer, as LocalHost gives it: wildcards may stand in any component below the root."""
    absolute = pattern.startswith("/")
    components = pattern.split("/")[1:] if absolute else pattern.split("/")
    fixed = 0
    while fixed < len(components) - 1 and not _GLOB_CHARACTERS & set(components[fixed]):
        fixed += 1
    root = ("/" if absolute else "") + "/".join(components[:fixed]) or "."
    depth = len(components) - fixed
    below = root.rstrip("/")
    # find's -path lets * match "/", glob's does not: at an exact depth no wildcard can span two components.
    # glob's * never matches a leading dot; find's does, so dot-entries are excluded unless the pattern names one.
    match = f"-name {shlex.quote(components[-1])} " if depth == 1 else f"-path {shlex.quote(pattern)} "
    dotted = any(component.startswith(".") for component in components[fixed:])
    hidden = "" if dotted else f"! -path {shlex.quote(below + '/.*')} ! -path {shlex.quote(below + '/*/.*')} "
    return (
        f"find -L {shlex.quote(root)} -mindepth {depth} -maxdepth {depth} -type f {match}{hidden}"
        f"2>/dev/null | sort | while IFS= read -r p; do "
        f"echo \"{index} file $(printf %s \"$p\" | base64 -w0) $(b \"$p\" 2>/dev/null || echo '!')\"; done; "
        f"echo '{index} end'"
    )


def _run_command(index: int, argv: Sequence[str]) -> str:
    return (
        f"if command -v {shlex.quote(argv[0])} >/dev/null 2>&1; then "
        f"{shlex.join(argv)} >\"$t/o{index}\" 2>\"$t/e{index}\" </dev/null; "
        f"echo \"{index} cmd $? $(b \"$t/o{index}\") $(b \"$t/e{index}\")\"; else echo '{index} missing'; fi"
    )


def _which(index: int, name: str) -> str:
    return (
        f"if p=$(command -v -- {shlex.quote(name)}); then echo \"{index} ok $(printf %s \"$p\" | base64 -w0)\"; "
        f"else echo '{index} none'; fi"
    )


def batch_script(reads: Sequence[Read]) -> str:
    """A script answering every read, one `INDEX KIND ...` line each (globs: one per file).

    Files and `command -v` are answered in order by the script itself; commands and globs in
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
    return "\n".join(lines) + "\n"


def _decode(text: str) -> str:
    return base64.b64decode(text, validate=True).decode("utf-8", errors="surrogateescape")


def parse_batch_output(reads: Sequence[Read], output: str) -> dict[Read, object]:
    """The answers of `batch_script(reads)` from its output; raises HostError if it is cut short."""
    answers: dict[Read, object] = {}
    globs: dict[int, dict[str, str]] = {}
    try:
        for line in output.splitlines():
            index_text, kind, *fields = line.split(" ")
            index = int(index_text)
            read = reads[index]
            if kind == "none":
                answers[read] = None
            elif kind == "ok":
                answers[read] = _decode(fields[0]) if fields else ""
            elif kind == "err":
                answers[read] = ReadFailure(f"cannot read {getattr(read, 'path', read)}")
            elif kind == "file":
                content = fields[1] if len(fields) > 1 else ""
                if content == "!":
                    answers[read] = ReadFailure(f"cannot read {_decode(fields[0])}")
                else:
                    globs.setdefault(index, {})[_decode(fields[0])] = _decode(content)
            elif kind == "end":
                answers.setdefault(read, globs.get(index, {}))
            elif kind == "cmd":
                stdout = _decode(fields[1]) if len(fields) > 1 else ""
                stderr = _decode(fields[2]) if len(fields) > 2 else ""
                assert isinstance(read, RunCommand)
                answers[read] = CommandResult(read.argv, int(fields[0]), stdout, stderr)
            elif kind == "missing":
                assert isinstance(read, RunCommand)
                answers[read] = ReadFailure(f"{read.argv[0]}: command not found on this host")
    except (ValueError, IndexError, binascii.Error, AssertionError) as error:
        raise HostError(f"garbled answer from the host ({error})") from None
    if len(answers) != len(reads):
        raise HostError(f"the host answered {len(answers)} of {len(reads)} reads (connection cut?)")
    return answers


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
