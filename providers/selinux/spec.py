"""The `[selinux]` table: every value checked against a strict pattern when the baseline loads."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, PrivateAttr, ValidationInfo, field_validator, model_validator

from converge.provider import ParseError, StrictModel, matching, port_range

_NAME = re.compile(r"[a-z][a-z0-9_]{0,127}")
# semodule installs names with `-` (most public modules have one); never a leading one (an option).
_MODULE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,127}")
POLICY_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
# A file-context regex as semanage stores it; no whitespace or quotes, since `semanage import`
# splits its lines on whitespace and strips quotes.
_FCONTEXT_PATH = re.compile(r"/[A-Za-z0-9_.*+?()\[\]{}|^\\/@%:,=~-]{0,1023}")
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9_.@%:+,=~/-]{0,1023}")
_REGEX_META = set(".*+?[](){}|^$\\")
_TE_MODULE = re.compile(r"^\s*module\s+(\S+)\s+[0-9][0-9.]*\s*;", re.MULTILINE)
# A reference-policy module (m4 macros of selinux-policy-dev): `policy_module(name, version)`.
_REFPOLICY_MODULE = re.compile(r"^\s*policy_module\(\s*([^,\s)]+)\s*(?:,[^)]*)?\)", re.MULTILINE)

FileType = Literal["all", "file", "directory", "symlink", "char", "block", "socket", "pipe"]
# semanage's -f letters and the field file_contexts files write for each (none for "all").
FILE_TYPE_FLAG = {
    "all": "a", "file": "f", "directory": "d", "symlink": "l", "char": "c", "block": "b", "socket": "s", "pipe": "p",
}
FILE_TYPE_FIELD = {"--": "file", "-d": "directory", "-l": "symlink", "-c": "char", "-b": "block", "-s": "socket", "-p": "pipe"}


def _plain_path(value: Any) -> str:
    if not isinstance(value, str) or not _PLAIN_PATH.fullmatch(value) or "/../" in f"{value}/" or "//" in value:
        raise ValueError(f"not an absolute path without regex characters, '..' or '//': {value!r}")
    return value


def _literal_prefix(regex: str) -> str:
    cut = next((i for i, char in enumerate(regex) if char in _REGEX_META), len(regex))
    return regex[:cut]


def _structure(regex: str) -> Iterator[tuple[int, str, int]]:
    """(index, character, parenthesis depth) of each character outside escapes and brackets;
    a bracket is taken to end at its first `]`, which can only show more characters, never fewer."""
    depth, bracket, escaped = 0, False, False
    for index, char in enumerate(regex):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif bracket:
            bracket = char != "]"
        elif char == "[":
            bracket = True
        else:
            depth -= char == ")" and depth > 0
            yield index, char, depth
            depth += char == "("


def alternatives(regex: str) -> list[str]:
    """The regex once per alternative of its first group (`/etc/(www|ftp)/.*` gives `/etc/www/.*`
    and `/etc/ftp/.*`), so each alternative's literal prefix can be checked; the regex itself when
    it has none. A `|` outside parentheses is refused: `/srv/www(/.*)?|/etc/shadow` labels
    `/etc/shadow`, far from the directory the regex seems to be about."""
    marks = list(_structure(regex))
    if any(char == "|" and depth == 0 for _, char, depth in marks):
        raise ValueError(f"a `|` outside parentheses matches paths anywhere: {regex!r} (group the alternatives)")
    prefix = _literal_prefix(regex)
    group = len(prefix)
    if regex[group:group + 1] != "(":
        return [regex]
    bars, close = [], len(regex)
    for index, char, depth in marks:
        if index > group and char == ")" and depth == 0:
            close = index
            break
        if index > group and char == "|" and depth == 1:
            bars.append(index)
    bounds = [group, *bars, close]
    return [prefix + regex[start + 1:end] + regex[close + 1:] for start, end in itertools.pairwise(bounds)]


def _fcontext_path(value: Any) -> str:
    if not isinstance(value, str) or not _FCONTEXT_PATH.fullmatch(value):
        raise ValueError("not a file-context regex starting with / (no spaces or quotes)"
                         + (f": {value!r}" if isinstance(value, str) else ""))
    alternatives(value)
    return value


def _directory_of(regex: str) -> str:
    """The directory every match of `regex` lives under: its literal prefix when that ends a path
    component (`/srv/www` followed by `(/`, `/` or the end), else the prefix's parent (`/srv` of
    `/srv/ww[wx]`)."""
    prefix = _literal_prefix(regex)
    rest = regex[len(prefix):]
    whole_component = not rest or prefix.endswith("/") or rest.startswith("(/")
    root = prefix if whole_component else os.path.dirname(prefix)
    return root.rstrip("/") or "/"


def _under(path: str, root: str) -> bool:
    return root in ("/", path) or path.startswith(root + "/")


BooleanName = Annotated[str, matching(_NAME, "an SELinux boolean name (lower-case letters, digits, _)")]
TypeName = Annotated[str, matching(_NAME, "an SELinux type name such as httpd_sys_content_t")]
Ensure = Literal["present", "absent"]


class FileContext(StrictModel):
    path: Annotated[str, PlainValidator(_fcontext_path)] = Field(
        description="The file-context regex, as `semanage fcontext` takes it (`/srv/www(/.*)?`): no spaces, quotes "
                    "or `|` outside parentheses.")
    type: TypeName | None = Field(None, description="The SELinux type files matching `path` get; required unless absent.")
    file_type: FileType = Field("all", description="Which kind of file the context applies to (semanage's `-f`).")
    ensure: Ensure = Field("present", description="`absent` removes the local customisation.")
    relabel: Annotated[str, PlainValidator(_plain_path)] | None = Field(
        None, description="The directory `restorecon -R` relabels after the change (default: the regex's literal "
                          "prefix); every alternative of the regex must lie under it.")

    @model_validator(mode="after")
    def _type_when_present(self) -> FileContext:
        if self.ensure == "present" and self.type is None:
            raise ValueError("type is required unless ensure = \"absent\"")
        root = self.relabel_root()
        outside = [_literal_prefix(alternative) for alternative in alternatives(self.path)
                   if not _under(_directory_of(alternative), root)]
        if outside:
            raise ValueError(f"path {self.path!r} matches {outside[0]!r}, outside its relabel root {root}")
        return self

    @property
    def key(self) -> tuple[str, str]:
        return (self.path, self.file_type)

    def relabel_root(self) -> str:
        """`relabel`, or the regex's literal prefix: the directory every match lives under."""
        return self.relabel or _directory_of(self.path)


class Port(StrictModel):
    type: TypeName | None = Field(None, description="The SELinux port type (`http_port_t`); required unless absent.")
    protocol: Literal["tcp", "udp", "sctp", "dccp"] = Field(description="The protocol the port is labelled for.")
    port: Annotated[str, port_range("-")] = Field(description="A port (8080) or a range as a string (\"9000-9010\").")
    ensure: Ensure = Field("present", description="`absent` removes the local customisation.")

    @model_validator(mode="after")
    def _type_when_present(self) -> Port:
        if self.ensure == "present" and self.type is None:
            raise ValueError("type is required unless ensure = \"absent\"")
        return self

    @property
    def key(self) -> tuple[str, str]:
        return (self.protocol, self.port)


class Module(StrictModel):
    name: Annotated[str, matching(_MODULE_NAME, "a policy module name (letters, digits, _ and -)")] = Field(
        description="The module's name, as `semodule -l` lists it.")
    source: str | None = Field(None, description="Its source, relative to the baseline: a `.te` (plain `module NAME "
                                                 "VERSION;`, or a reference-policy `policy_module(NAME, VERSION)` built "
                                                 "with the `.if` and `.fc` beside it by selinux-policy-dev's Makefile), a "
                                                 "`.cil`, or a prebuilt `.pp`; required unless absent.")
    ensure: Ensure = Field("present", description="`absent` removes the module (`semodule -r`).")
    _text: str = PrivateAttr("")  # the .te or .cil text, or the .pp's bytes in base64
    _kind: str = PrivateAttr("")
    _beside: dict[str, str] = PrivateAttr(default_factory=dict)  # a reference-policy module's .if and .fc
    _hash: str = PrivateAttr("")

    @field_validator("source")
    @classmethod
    def _check_source(cls, source: str | None, info: ValidationInfo) -> str | None:
        if source is None:
            return None
        path = Path(source)
        if path.suffix not in {".te", ".cil", ".pp"}:
            raise ValueError(f"source must be a .te, .cil or .pp file, got {path.name}")
        name = info.data.get("name")
        try:
            data = path.read_bytes()
            if path.suffix == ".pp":
                from .parse import parse_package_name  # here: parse.py imports this module
                inside, _ = parse_package_name(data, source)
                if name and inside != name:
                    raise ValueError(f"{path.name} holds module {inside!r}, not {name!r} (semodule installs it as {inside})")
                return source
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read {source}: {error}") from None
        except ParseError as error:
            raise ValueError(str(error)) from None
        # semodule names a .cil module after its file, checkmodule's output after the `module` statement.
        plain, refpolicy = _TE_MODULE.search(text), _REFPOLICY_MODULE.search(text)
        declared = plain or refpolicy
        if path.suffix == ".te" and name and (not declared or declared[1] != name):
            found = (f"`module {declared[1]}`" if plain else f"`policy_module({declared[1]}, ...)`") if declared else "neither"
            raise ValueError(f"{path.name} must declare `module {name} <version>;` or `policy_module({name}, <version>)`, "
                             f"found {found}")
        return source

    @model_validator(mode="after")
    def _read_source(self) -> Module:
        if self.source is None:
            if self.ensure == "present":
                raise ValueError("source (a .te, .cil or .pp file) is required unless ensure = \"absent\"")
            return self
        path = Path(self.source)
        if path.suffix == ".pp":
            data = path.read_bytes()
            self._kind, self._text, self._hash = "pp", base64.b64encode(data).decode(), _sha256(data)
            return self
        self._text = path.read_text(encoding="utf-8")
        self._kind = path.suffix.lstrip(".")
        if self._kind == "te" and _REFPOLICY_MODULE.search(self._text):
            self._kind = "refpolicy"
            for suffix in (".if", ".fc"):
                beside = path.with_suffix(suffix)
                if beside.exists():
                    self._beside[suffix] = beside.read_text(encoding="utf-8")
        # A plain .te or .cil: its text's hash (what earlier records hold); with .if/.fc, all of them.
        parts = [self._text, *(f"{suffix}\0{text}" for suffix, text in sorted(self._beside.items()))]
        self._hash = _sha256("\0".join(parts).encode())
        return self

    @property
    def kind(self) -> str:
        """te (plain), refpolicy (built with the devel Makefile), cil or pp."""
        return self._kind

    @property
    def text(self) -> str:
        return self._text

    @property
    def beside(self) -> dict[str, str]:
        return dict(self._beside)

    @property
    def source_hash(self) -> str:
        return self._hash


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class SelinuxSpec(StrictModel):
    """`[selinux]`: mode, policy, booleans, fcontexts, ports, modules, permissive domains; each optional."""

    mode: Literal["enforcing", "permissive", "disabled"] | None = Field(
        None, description="SELINUX= in /etc/selinux/config, and the running kernel's mode where it has SELinux.")
    policy: Annotated[str, matching(POLICY_NAME, "a policy name such as default or targeted")] | None = Field(
        None, description="SELINUXTYPE= in /etc/selinux/config (the policy loaded at boot); its store must exist.")
    booleans: dict[BooleanName, bool] = Field(
        {}, description="Booleans by name, set persistently and at runtime (`setsebool -P`).")
    fcontexts: list[FileContext] = Field([], description="Local file-context rules (`semanage fcontext`).")
    ports: list[Port] = Field([], description="Local port labels (`semanage port`).")
    modules: list[Module] = Field([], description="Policy modules built from source (or prebuilt) and installed "
                                                  "(`semodule -i`).")
    permissive_domains: list[TypeName] | None = Field(
        None, description="The domains put in permissive mode alone (`semanage permissive -a`), the narrow alternative to "
                          "a permissive system while troubleshooting one service; every other local one is made "
                          "enforcing again (`-d`). Unset: not managed.")

    @model_validator(mode="after")
    def _unique(self) -> SelinuxSpec:
        kinds: tuple[tuple[str, list[Any]], ...] = (
            ("fcontexts", [f.key for f in self.fcontexts]), ("ports", [p.key for p in self.ports]),
            ("modules", [m.name for m in self.modules]), ("permissive_domains", list(self.permissive_domains or [])))
        for kind, keys in kinds:
            repeated = sorted({str(key) for key in keys if keys.count(key) > 1})
            if repeated:
                raise ValueError(f"{kind} declared twice: {', '.join(repeated)}")
        return self
