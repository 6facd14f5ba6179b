"""Pure parsers of what the SELinux tools print and the files they read, and the config editor.

Each raises `ParseError` naming the file or command and the line it cannot read.
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from collections.abc import Iterator, Mapping

from converge.provider import ParseError, shell_assignments

from .spec import FILE_TYPE_FIELD

_BOOLEAN_LINE = re.compile(r"(\S+)\s+\(\s*(on|off)\s*,\s*(on|off)\s*\)")
_PORT_LINE = re.compile(r"\S+\s+(tcp|udp|sctp|dccp)\s+(.+)")


def parse_config(text: str) -> dict[str, str]:
    """KEY=value lines of /etc/selinux/config, as libselinux's shell-like reader takes them."""
    return shell_assignments(text)


def edit_config(text: str, settings: Mapping[str, str]) -> str:
    """Set KEY=value in place, keeping every comment and other line; append keys not present."""
    pending, lines = dict(settings), []
    for line in text.splitlines():
        key, sep, _ = line.strip().partition("=")
        if sep and key.strip() in settings:
            if key.strip() in pending:
                lines.append(f"{key.strip()}={pending.pop(key.strip())}")
            continue  # a repeated assignment would override ours: drop it
        lines.append(line)
    return "\n".join([*lines, *(f"{key}={value}" for key, value in pending.items())]) + "\n"


def _lines(text: str, header: str | None = None) -> list[str]:
    """The non-blank lines of a listing, without its header line."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[1:] if header and lines and lines[0].startswith(header) else lines


def parse_boolean_list(text: str) -> dict[str, bool]:
    """`semanage boolean -l`: `name (state, default) description`. In seobject the state is the
    kernel's active value (the default when SELinux is off) and the default the policy store's,
    i.e. the persistent value."""
    booleans = {}
    for line in _lines(text, "SELinux boolean"):
        match = _BOOLEAN_LINE.match(line)
        if not match:
            raise ParseError("semanage boolean -l", "not `name (state, default) description`", line)
        booleans[match[1]] = match[3] == "on"
    return booleans


def parse_port_list(text: str) -> Counter[tuple[str, str]]:
    """`semanage port -l`: every (protocol, port or range) the policy or a local change defines,
    with how many times it is listed (a local port the policy defines too is listed twice)."""
    defined: Counter[tuple[str, str]] = Counter()
    for line in _lines(text, "SELinux Port Type"):
        match = _PORT_LINE.fullmatch(line.strip())
        if not match:
            raise ParseError("semanage port -l", "not `type protocol ports`", line)
        defined.update((match[1], item.strip()) for item in match[2].split(",") if item.strip())
    return defined


def _context_type(context: str) -> str | None:
    parts = context.split(":")
    return parts[2] if len(parts) >= 3 else None  # "<<none>>" has no type


def _content_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def parse_ports_local(text: str, where: str = "ports.local") -> dict[tuple[str, str], str | None]:
    """The store's ports.local: `portcon tcp 8080 <context>`, ranges written `portcon udp 7000 - 7005 <context>`."""
    ports = {}
    for line in _content_lines(text):
        fields = line.split()
        if len(fields) not in (4, 6) or fields[0] != "portcon":
            raise ParseError(where, "not `portcon PROTOCOL PORT[ - PORT] CONTEXT`", line)
        ports[(fields[1], "".join(fields[2:-1]))] = _context_type(fields[-1])
    return ports


def parse_file_contexts(text: str, where: str = "file_contexts") -> dict[tuple[str, str], str | None]:
    """A file_contexts file: `regex [file type] context` -> {(regex, file type): SELinux type}."""
    contexts = {}
    for line in _content_lines(text):
        fields = line.split()
        if len(fields) not in (2, 3) or (len(fields) == 3 and fields[1] not in FILE_TYPE_FIELD):
            raise ParseError(where, "not `regex [file type] context`", line)
        file_type = FILE_TYPE_FIELD[fields[1]] if len(fields) == 3 else "all"
        contexts[(fields[0], file_type)] = _context_type(fields[-1])
    return contexts


def parse_module_list(text: str) -> dict[str, str]:
    """`semodule -l -m`: `name sha256:<hex>` for each installed module."""
    modules = {}
    for line in _lines(text):
        fields = line.split()
        if len(fields) != 2:
            raise ParseError("semodule -l -m", "not `name checksum`", line)
        modules[fields[0]] = fields[1]
    return modules


def parse_module_record(text: str, where: str) -> dict[str, str]:
    """converge's record of an installed module: `source sha256:...` and `module sha256:...` lines."""
    record = {}
    for line in _lines(text):
        key, sep, value = line.partition(" ")
        if not sep:
            raise ParseError(where, "not `key value`", line)
        record[key] = value
    return record


def parse_booleans_local(text: str, where: str = "booleans.local") -> dict[str, bool]:
    """The store's booleans.local, which `setsebool -P` and `semanage boolean -m` write: `name=1`."""
    booleans = {}
    for line in _content_lines(text):
        name, sep, value = line.strip().partition("=")
        if not sep or value.strip() not in ("0", "1"):
            raise ParseError(where, "not `name=0` or `name=1`", line)
        booleans[name.strip()] = value.strip() == "1"
    return booleans


def parse_export(text: str) -> dict[str, list[str]]:
    """`semanage export`: the local customisations as semanage command lines, by kind, without
    the `<kind> -D` lines that open each kind. A file-context equivalence (`fcontext -a -e`) is
    its own kind, `fcontext-equivalence`; a disabled module (`module -d`) is `module-disabled`."""
    kinds: dict[str, list[str]] = {}
    for line in _lines(text):
        fields = line.split()
        if len(fields) < 2:
            raise ParseError("semanage export", "not `kind option ...`", line)
        if fields[1] == "-D":
            continue
        kind = fields[0]
        if kind == "fcontext" and "-e" in fields:
            kind = "fcontext-equivalence"
        elif kind == "module" and fields[1] == "-d":
            kind = "module-disabled"
        kinds.setdefault(kind, []).append(line.strip())
    return kinds


def _full_module_list(text: str) -> Iterator[tuple[int, str, str]]:
    for line in _lines(text):
        fields = line.split()
        if len(fields) not in (3, 4) or not fields[0].isdigit():
            raise ParseError("semodule --list-modules=full", "not `priority name kind [disabled]`", line)
        yield int(fields[0]), fields[1], fields[2]


def parse_module_priorities(text: str) -> dict[str, tuple[int, str]]:
    """`semodule --list-modules=full`: `priority name kind [disabled]` -> {name: (priority, kind)},
    the highest priority of each name (the one in effect: a local module at 400 overrides the
    policy's own at 100, and semodule lists both)."""
    found: dict[str, tuple[int, str]] = {}
    for priority, name, kind in _full_module_list(text):
        if name not in found or priority > found[name][0]:
            found[name] = (priority, kind)
    return found


def parse_module_kinds(text: str, priority: int) -> dict[str, str]:
    """`semodule --list-modules=full`: the modules installed at `priority`, and each one's kind (pp, cil)."""
    return {name: kind for at, name, kind in _full_module_list(text) if at == priority}


def count_relabelled(restorecon_output: str) -> int:
    """`restorecon -v`: one `Relabeled PATH from OLD to NEW` line per file it changed."""
    return sum(1 for line in restorecon_output.splitlines() if line.startswith("Relabeled"))


# A policy package (.pp, libsepol's module_package.c): magic, version, section count and offsets;
# its first section is the module (policydb.c): magic, "SE Linux Module", five numbers, name, version.
_PACKAGE_MAGIC = 0xF97CFF8F
_MODULE_MAGIC = 0xF97CFF8D


def parse_package_name(data: bytes, where: str) -> tuple[str, str]:
    """The module name and version inside a policy package: semodule installs it under that name."""
    def numbers(offset: int, count: int) -> tuple[int, ...]:
        if offset + 4 * count > len(data):
            raise ParseError(where, "truncated policy package", f"{len(data)} bytes")
        return struct.unpack_from(f"<{count}I", data, offset)

    def string(offset: int) -> tuple[str, int]:
        (length,) = numbers(offset, 1)
        text = data[offset + 4:offset + 4 + length]
        if len(text) != length:
            raise ParseError(where, "truncated policy package", f"{len(data)} bytes")
        return text.decode("ascii", "replace"), offset + 4 + length

    magic, _, sections = numbers(0, 3)
    if magic != _PACKAGE_MAGIC or sections < 1:
        raise ParseError(where, "not a policy package (.pp from semodule_package)", data[:8].hex())
    (start,) = numbers(12, 1)
    module_magic, = numbers(start, 1)
    signature, offset = string(start + 4)
    if module_magic != _MODULE_MAGIC or signature != "SE Linux Module":
        raise ParseError(where, "the package holds no policy module", signature)
    name, offset = string(offset + 20)
    version, _ = string(offset)
    return name, version
