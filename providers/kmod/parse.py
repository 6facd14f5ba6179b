"""Pure parsers of what kmod and the initramfs tools read and print.

modprobe.d(5), as libkmod reads it: files named `*.conf` (or `*.alias`) in /etc/modprobe.d,
/run/modprobe.d, /usr/local/lib/modprobe.d and /lib/modprobe.d (kmod 33 adds /usr/lib/modprobe.d);
a file name in an earlier directory masks the same name in later ones, and the files are read in
file-name order whatever their directory. Lines end with a backslash to continue; `#` starts a
comment line. For `install`, the first command read for a module is the one modprobe runs;
`blacklist` lines add up.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from converge.provider import ParseError
from converge.providers.kmod.spec import normalise

# libkmod's directories, highest priority first. /usr/lib/modprobe.d too: kmod 33 reads it, and on a
# merged-/usr system it is /lib/modprobe.d under another name (masked by name, so read once).
CONFIG_DIRECTORIES = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/usr/lib/modprobe.d",
                      "/lib/modprobe.d")
COMMANDS = ("alias", "options", "install", "remove", "softdep", "weakdep", "blacklist")
# The install commands benchmarks accept as "this module never loads" (CIS, SSG: /bin/false or /bin/true).
NO_OP_COMMANDS = re.compile(r"(/usr)?/bin/(false|true)")


@dataclass(frozen=True)
class Directive:
    path: str
    command: str  # install, blacklist, ...
    module: str  # normalised
    argument: str  # the rest of the line (the install command)


def config_files(found: Mapping[str, Mapping[str, str]]) -> list[tuple[str, str]]:
    """(path, text) of the files modprobe reads, in its order. `found`: directory -> {path: text}."""
    by_name: dict[str, tuple[str, str]] = {}
    for directory in CONFIG_DIRECTORIES:
        for path, text in sorted(found.get(directory, {}).items()):
            name = os.path.basename(path)
            if name.startswith(".") or not name.endswith((".conf", ".alias")):
                continue
            by_name.setdefault(name, (path, text))
    return [by_name[name] for name in sorted(by_name)]


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        lines.append(pending + raw)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def parse_modprobe_conf(path: str, text: str) -> list[Directive]:
    """The directives of one modprobe.d file; libkmod skips (and logs) lines it cannot read, and so
    does this parser, except an `install` or `blacklist` without a module name, which is an error."""
    directives = []
    for line in _logical_lines(text):
        words = line.split()
        if not words or words[0].startswith("#") or words[0] not in COMMANDS:
            continue
        if len(words) < 2 or (words[0] == "install" and len(words) < 3):
            if words[0] in ("install", "blacklist"):
                raise ParseError(path, f"`{words[0]}` without a module name" + (" and command" if len(words) < 3 else ""), line)
            continue
        argument = line.split(None, 2)[2].strip() if len(words) > 2 else ""
        directives.append(Directive(path, words[0], normalise(words[1]), argument))
    return directives


@dataclass(frozen=True)
class ModprobeConfig:
    """What the files say about each module: the install command modprobe runs (with the file it is
    in), and the files that blacklist it."""

    install: dict[str, tuple[str, str]]
    blacklist: dict[str, tuple[str, ...]]

    def disabled(self, module: str) -> bool:
        install = self.install.get(module)
        return install is not None and bool(NO_OP_COMMANDS.fullmatch(install[1])) and module in self.blacklist


def resolve(files: Sequence[tuple[str, str]]) -> ModprobeConfig:
    install: dict[str, tuple[str, str]] = {}
    blacklist: dict[str, list[str]] = {}
    for path, text in files:
        for directive in parse_modprobe_conf(path, text):
            if directive.command == "install":
                install.setdefault(directive.module, (path, directive.argument))
            elif directive.command == "blacklist" and path not in blacklist.get(directive.module, []):
                blacklist.setdefault(directive.module, []).append(path)
    return ModprobeConfig(install, {module: tuple(paths) for module, paths in blacklist.items()})


def parse_showconfig(text: str) -> ModprobeConfig:
    """`modprobe --showconfig` (or `-c`): the configuration as libkmod resolved it, without files."""
    install: dict[str, tuple[str, str]] = {}
    blacklist: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        if line.startswith("# End of configuration files"):
            break
        words = line.split(None, 2)
        if words[:1] == ["install"] and len(words) == 3:
            install.setdefault(normalise(words[1]), ("modprobe --showconfig", words[2].strip()))
        elif words[:1] == ["blacklist"] and len(words) >= 2:
            blacklist[normalise(words[1])] = ("modprobe --showconfig",)
    return ModprobeConfig(install, blacklist)


@dataclass(frozen=True)
class LoadedModule:
    refcount: int | None  # None: the kernel cannot unload modules (CONFIG_MODULE_UNLOAD off)
    users: tuple[str, ...]  # modules that depend on it
    state: str  # Live, Loading, Unloading


def parse_proc_modules(text: str) -> dict[str, LoadedModule]:
    """/proc/modules: `name size refcount users state address [taint]` (users "-" or "a,b,")."""
    modules = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 5 or not fields[1].isdigit():
            raise ParseError("/proc/modules", "not a module line", line)
        refcount = int(fields[2]) if fields[2].isdigit() else None
        users = tuple(user for user in fields[3].split(",") if user and user != "-")
        modules[fields[0]] = LoadedModule(refcount, users, fields[4])
    return modules


_KO = re.compile(r"/([^/\s]+)\.ko(\.xz|\.zst|\.gz)?$")


@dataclass(frozen=True)
class Initramfs:
    kernel: str
    image: str
    tool: str | None  # update-initramfs or dracut, whichever builds it
    newer_than_drop_in: bool  # built after converge's drop-in was last written
    modules: frozenset[str]  # normalised names of the .ko files it holds


def parse_initramfs_listing(text: str) -> Initramfs | None:
    """The output of kernel.INITRAMFS_SCRIPT: `kernel K`, `image PATH`, `tool T`, `built N`, `drop-in N`
    header lines, `listing`, then the image's files as lsinitramfs or lsinitrd prints them; None
    when the running kernel has no image (or no tool can list it)."""
    header: dict[str, str] = {}
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line == "listing":
            body = lines[index + 1:]
            break
        key, _, value = line.partition(" ")
        if key not in ("kernel", "image", "tool", "built", "drop-in"):
            raise ParseError("initramfs listing", "unexpected header line", line)
        header[key] = value
    else:
        return None
    if "kernel" not in header or "image" not in header:
        raise ParseError("initramfs listing", "no kernel or image line", text[:120])
    modules = set()
    for line in body:
        words = line.split()
        match = _KO.search(words[-1]) if words else None
        if match:
            modules.add(normalise(match[1]))
    built, drop_in = header.get("built", "0"), header.get("drop-in", "")
    newer = drop_in.isdigit() and built.isdigit() and int(built) > int(drop_in)
    return Initramfs(header["kernel"], header["image"], header.get("tool") or None, newer, frozenset(modules))
