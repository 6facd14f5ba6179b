"""The `[selinux]` table: every value checked against a strict pattern when the baseline loads."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, PrivateAttr, ValidationInfo, field_validator, model_validator

_NAME = re.compile(r"[a-z][a-z0-9_]{0,127}")
_MODULE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
POLICY_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
# A file-context regex as semanage stores it; no whitespace or quotes, since `semanage import`
# splits its lines on whitespace and strips quotes.
_FCONTEXT_PATH = re.compile(r"/[A-Za-z0-9_.*+?()\[\]{}|^\\/@%:,=~-]{0,1023}")
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9_.@%:+,=~/-]{0,1023}")
_PORT_RANGE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")
_REGEX_META = set(".*+?[](){}|^$\\")
_TE_MODULE = re.compile(r"^\s*module\s+(\S+)\s+[0-9][0-9.]*\s*;", re.MULTILINE)

FileType = Literal["all", "file", "directory", "symlink", "char", "block", "socket", "pipe"]
# semanage's -f letters and the field file_contexts files write for each (none for "all").
FILE_TYPE_FLAG = {
    "all": "a", "file": "f", "directory": "d", "symlink": "l", "char": "c", "block": "b", "socket": "s", "pipe": "p",
}
FILE_TYPE_FIELD = {"--": "file", "-d": "directory", "-l": "symlink", "-c": "char", "-b": "block", "-s": "socket", "-p": "pipe"}


def _pattern(regex: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"not {what}: {value!r}")
        return value

    return AfterValidator(check)


def _plain_path(value: str) -> str:
    if not _PLAIN_PATH.fullmatch(value) or "/../" in f"{value}/" or "//" in value:
        raise ValueError(f"not an absolute path without regex characters, '..' or '//': {value!r}")
    return value


def _port_range(value: int | str) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    match = _PORT_RANGE.fullmatch(text) if isinstance(text, str) else None
    if not match:
        raise ValueError("a port is a number (8080) or a range as a string (\"8080-8090\")")
    low, high = int(match[1]), int(match[2] or match[1])
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"port range must lie within 1-65535 with low <= high, got {text}")
    return str(low) if low == high else f"{low}-{high}"


BooleanName = Annotated[str, _pattern(_NAME, "an SELinux boolean name (lower-case letters, digits, _)")]
TypeName = Annotated[str, _pattern(_NAME, "an SELinux type name such as httpd_sys_content_t")]
PortRange = Annotated[str, AfterValidator(_port_range)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FileContext(_Strict):
    path: Annotated[str, _pattern(_FCONTEXT_PATH, "a file-context regex starting with / (no spaces or quotes)")]
    type: TypeName | None = None
    file_type: FileType = "all"
    ensure: Literal["present", "absent"] = "present"
    relabel: Annotated[str, AfterValidator(_plain_path)] | None = None

    @model_validator(mode="after")
    def _type_when_present(self) -> FileContext:
        if self.ensure == "present" and self.type is None:
            raise ValueError("type is required unless ensure = \"absent\"")
        return self

    @property
    def key(self) -> tuple[str, str]:
        return (self.path, self.file_type)

    def relabel_root(self) -> str:
        """`relabel`, or the regex's literal prefix: the directory every match lives under."""
        if self.relabel:
            return self.relabel
        cut = next((i for i, char in enumerate(self.path) if char in _REGEX_META), len(self.path))
        prefix = self.path[:cut]
        whole_component = cut == len(self.path) or prefix.endswith("/") or self.path[cut:cut + 2] == "(/"
        root = prefix if whole_component else os.path.dirname(prefix)
        return root.rstrip("/") or "/"


class Port(_Strict):
    type: TypeName | None = None
    protocol: Literal["tcp", "udp", "sctp", "dccp"]
    port: Annotated[int | str, AfterValidator(_port_range)]
    ensure: Literal["present", "absent"] = "present"

    @model_validator(mode="after")
    def _type_when_present(self) -> Port:
        if self.ensure == "present" and self.type is None:
            raise ValueError("type is required unless ensure = \"absent\"")
        return self

    @property
    def key(self) -> tuple[str, str]:
        return (self.protocol, str(self.port))


class Module(_Strict):
    name: Annotated[str, _pattern(_MODULE_NAME, "a policy module name (letters, digits, _)")]
    source: str | None = None  # made absolute by the baseline loader
    ensure: Literal["present", "absent"] = "present"
    _text: str = PrivateAttr("")

    @field_validator("source")
    @classmethod
    def _check_source(cls, source: str | None, info: ValidationInfo) -> str | None:
        if source is None:
            return None
        path = Path(source)
        if path.suffix not in {".te", ".cil"}:
            raise ValueError(f"source must be a .te or .cil file, got {path.name}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read {source}: {error}") from None
        name = info.data.get("name")
        # checkmodule refuses a module whose output file is named after another module.
        declared = _TE_MODULE.search(text)
        if path.suffix == ".te" and name and (not declared or declared[1] != name):
            found = f"`module {declared[1]}`" if declared else "no `module NAME VERSION;` statement"
            raise ValueError(f"{path.name} must declare `module {name} <version>;`, found {found}")
        return source

    @model_validator(mode="after")
    def _read_source(self) -> Module:
        if self.source is None and self.ensure == "present":
            raise ValueError("source (a .te or .cil file) is required unless ensure = \"absent\"")
        self._text = Path(self.source).read_text(encoding="utf-8") if self.source else ""
        return self

    @property
    def kind(self) -> str:
        return Path(self.source or "").suffix.lstrip(".")

    @property
    def text(self) -> str:
        return self._text

    @property
    def source_hash(self) -> str:
        return "sha256:" + hashlib.sha256(self._text.encode()).hexdigest()


class SelinuxSpec(_Strict):
    """`[selinux]`: mode, policy, booleans, fcontexts, ports, modules; each optional."""

    mode: Literal["enforcing", "permissive", "disabled"] | None = None
    policy: Annotated[str, _pattern(POLICY_NAME, "a policy name such as default or targeted")] | None = None
    booleans: dict[BooleanName, bool] = {}
    fcontexts: list[FileContext] = []
    ports: list[Port] = []
    modules: list[Module] = []

    @model_validator(mode="after")
    def _unique(self) -> SelinuxSpec:
        for kind, keys in (("fcontexts", [f.key for f in self.fcontexts]), ("ports", [p.key for p in self.ports]),
                           ("modules", [m.name for m in self.modules])):
            repeated = sorted({str(key) for key in keys if keys.count(key) > 1})
            if repeated:
                raise ValueError(f"{kind} declared twice: {', '.join(repeated)}")
        return self
