"""Pure parsers of what the SELinux tools print and the files they read, and the config editor."""

from __future__ import annotations

import re
from collections.abc import Mapping

from converge.providers.selinux.spec import FILE_TYPE_FIELD


def parse_config(text: str) -> dict[str, str]:
    """KEY=value lines of /etc/selinux/config."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("\"'")
    return values


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


def parse_boolean_list(text: str) -> dict[str, bool]:
    """`semanage boolean -l`: `name (state, default) description`. In seobject the state is the
    kernel's active value (the default when SELinux is off) and the default the policy store's,
    i.e. the persistent value."""
    booleans = {}
    for match in re.finditer(r"^(\S+)\s+\(\s*(on|off)\s*,\s*(on|off)\s*\)", text, re.MULTILINE):
        booleans[match[1]] = match[3] == "on"
    return booleans


def parse_port_list(text: str) -> set[tuple[str, str]]:
    """`semanage port -l`: every (protocol, port or range) the policy or a local change defines."""
    defined = set()
    for match in re.finditer(r"^\S+\s+(tcp|udp|sctp|dccp)\s+(.+)$", text, re.MULTILINE):
        defined |= {(match[1], item.strip()) for item in match[2].split(",") if item.strip()}
    return defined


def _context_type(context: str) -> str | None:
    parts = context.split(":")
    return parts[2] if len(parts) >= 3 else None  # "<<none>>" has no type


def parse_ports_local(text: str) -> dict[tuple[str, str], str | None]:
    """The store's ports.local: `portcon tcp 8080 <context>`, ranges written `portcon udp 7000 - 7005 <context>`."""
    ports = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "portcon":
            ports[(fields[1], "".join(fields[2:-1]))] = _context_type(fields[-1])
    return ports


def parse_file_contexts(text: str) -> dict[tuple[str, str], str | None]:
    """A file_contexts file: `regex [file type] context` -> {(regex, file type): SELinux type}."""
    contexts = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#") or len(fields) not in (2, 3):
            continue
        file_type = FILE_TYPE_FIELD.get(fields[1], "all") if len(fields) == 3 else "all"
        contexts[(fields[0], file_type)] = _context_type(fields[-1])
    return contexts


def parse_module_list(text: str) -> dict[str, str]:
    """`semodule -l -m`: `name sha256:<hex>` for each installed module."""
    return {fields[0]: fields[1] for fields in (line.split() for line in text.splitlines()) if len(fields) == 2}


def parse_module_record(text: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)


def parse_booleans_local(text: str) -> dict[str, bool]:
    """The store's booleans.local, which `setsebool -P` and `semanage boolean -m` write: `name=1`."""
    booleans = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and not name.startswith("#"):
            booleans[name.strip()] = value.strip() == "1"
    return booleans


def parse_export(text: str) -> dict[str, list[str]]:
    """`semanage export`: the local customisations as semanage command lines, by kind, without
    the `<kind> -D` lines that open each kind. A file-context equivalence (`fcontext -a -e`) is
    its own kind, `fcontext-equivalence`; a disabled module (`module -d`) is `module-disabled`."""
    kinds: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[1] == "-D":
            continue
        kind = fields[0]
        if kind == "fcontext" and "-e" in fields:
            kind = "fcontext-equivalence"
        elif kind == "module" and fields[1] == "-d":
            kind = "module-disabled"
        kinds.setdefault(kind, []).append(line.strip())
    return kinds


def parse_module_priorities(text: str) -> dict[str, tuple[int, str]]:
    """`semodule --list-modules=full`: `priority name kind [disabled]` -> {name: (priority, kind)}."""
    modules = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0].isdigit():
            modules[fields[1]] = (int(fields[0]), fields[2])
    return modules
