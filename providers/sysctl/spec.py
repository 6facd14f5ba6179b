"""The `[sysctl]` table: key = value, keys bare-dotted (nested tables in TOML) or quoted."""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, PlainValidator, RootModel, model_validator

from converge.providers.sysctl.parse import normalize

KEY = re.compile(r"[a-z][a-z0-9_]*(\.[A-Za-z0-9_-]+)+")
# Enough for numbers, lists and the paths and % patterns of keys such as kernel.core_pattern;
# nothing a shell or a config parser treats specially (quotes, ;, $, `, newlines).
_VALUE_TEXT = re.compile(r"[A-Za-z0-9 \t_.:,/+%|@*-]*")
MAX_KEY_LENGTH = 255
MAX_VALUE_LENGTH = 4096
# The widest sysctl integers are unsigned 64-bit; the most negative are signed 64-bit.
INTEGER_RANGE = (-(2**63), 2**64 - 1)

# The table's one key that is not a sysctl: executable hooks outside the system directories.
ALLOW_EXEC_HOOKS = "allow_exec_hooks"
# Keys whose value names a program the kernel runs as root: a pipe core pattern, the module
# loader, the uevent helper, the power-off command, and a binfmt_misc interpreter.
HELPER_KEYS = ("kernel.modprobe", "kernel.hotplug", "kernel.poweroff_cmd")
CORE_PATTERN = "kernel.core_pattern"
BINFMT_REGISTER = "fs.binfmt_misc.register"
# Root-owned system directories: a helper there is accepted.
SYSTEM_DIRECTORIES = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")
# Places any user can write to, or a user owns: a helper there is always refused.
# Write-only keys (mode 0200): writing one is an action (flush the route cache, compact memory),
# not a setting a host keeps; reading it fails ("Permission denied"), so nothing can be in sync.
WRITE_ONLY_KEYS = frozenset({"net.ipv4.route.flush", "net.ipv6.route.flush", "vm.compact_memory"})
WRITE_ONLY_REASON = "a write-only trigger (writing it is an action, not a setting a host keeps)"
WRITABLE_PLACES = ("/tmp", "/var/tmp", "/dev/shm", "/run/user", "/home", "/root", "/var/crash", "/var/mail")


def _check_key(key: str) -> str:
    if len(key) > MAX_KEY_LENGTH or not KEY.fullmatch(key):
        raise ValueError("not a sysctl key: expected dot-separated names such as kernel.kptr_restrict")
    return key


class _Refused:
    """A value the table-level checks refuse, reported by the value validator at its key."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def check_value(value: Any) -> str:
    """The value as compared and written: integers canonical, whitespace folded."""
    if isinstance(value, _Refused):
        raise ValueError(value.reason)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        low, high = INTEGER_RANGE
        if not low <= value <= high:
            raise ValueError(f"integer out of range for a sysctl ({low} to {high})")
        return str(value)
    if isinstance(value, str):
        if len(value) > MAX_VALUE_LENGTH:
            raise ValueError(f"value longer than {MAX_VALUE_LENGTH} characters")
        if not _VALUE_TEXT.fullmatch(value):
            raise ValueError("value may hold only letters, digits, spaces and _ . : , / + % | @ * -")
        if not value.strip():
            raise ValueError("value is empty")
        return normalize(value)
    raise ValueError("a sysctl value is an integer, a boolean or a string (multi-value keys as one string)")


def helper_program(key: str, value: str) -> str | None:
    """The program the kernel runs as root because `key` is `value`, or None."""
    if key == CORE_PATTERN:
        if not value.startswith("|"):
            return None  # a file name pattern: the kernel writes the core, it runs nothing
        words = value[1:].split()
        return words[0] if words else ""
    if key in HELPER_KEYS:
        return value.split(maxsplit=1)[0] if value.split() else None
    if key == BINFMT_REGISTER:
        # :name:type:offset:magic:mask:interpreter:flags (binfmt-misc.rst)
        fields = value[1:].split(value[0]) if value else []
        return fields[5] if len(fields) > 5 else ""
    return None


def exec_hook_problem(key: str, value: str, allowed: bool) -> str | None:
    """Why `key = value` must be refused: a root execution hook from a place that is not a
    root-owned system directory (unless `allowed`), or from a place any user can write to."""
    program = helper_program(key, value)
    if program is None:
        return None
    what = f"{key} makes the kernel run {program or 'a program'} as root"
    if not program.startswith("/"):
        return f"{what}: the program must be an absolute path"
    path = posixpath.normpath(program)
    if path != program.rstrip("/") or "/../" in program + "/":
        return f"{what}: the path must be normal (no . or .. components)"
    inside = [top for top in WRITABLE_PLACES if path == top or path.startswith(top + "/")]
    if inside:
        return f"{what}, from {inside[0]}, a place users can write to: refused (install it under /usr)"
    if any(path.startswith(top + "/") for top in SYSTEM_DIRECTORIES) or allowed:
        return None
    return (f"{what}, from outside the root-owned system directories ({', '.join(SYSTEM_DIRECTORIES)}): "
            f"set {ALLOW_EXEC_HOOKS} = true in [sysctl] to allow it")


SysctlKey = Annotated[str, AfterValidator(_check_key)]
SysctlValue = Annotated[str, PlainValidator(check_value)]


class SysctlSpec(RootModel[dict[SysctlKey, SysctlValue]]):
    """`[sysctl]`: key = value, keys bare-dotted (nested tables in TOML) or quoted."""

    root: dict[SysctlKey, SysctlValue] = Field(description=(
        "Each key a sysctl (kernel.kptr_restrict), each value an integer, a boolean or a string "
        "(multi-value keys as one string). A key whose value makes the kernel run a program as root "
        f"({CORE_PATTERN} pipes, {', '.join(HELPER_KEYS)}, {BINFMT_REGISTER}) is accepted from "
        f"{', '.join(SYSTEM_DIRECTORIES)} only, never from a place users can write to; "
        f"`{ALLOW_EXEC_HOOKS} = true` in the table allows other root-owned places."))

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        allowed = data.pop(ALLOW_EXEC_HOOKS, False)
        flat: dict[str, Any] = {}
        if not isinstance(allowed, bool):
            flat[ALLOW_EXEC_HOOKS] = _Refused(f"{ALLOW_EXEC_HOOKS} must be true or false")

        def walk(node: dict[str, Any], prefix: str) -> None:
            for name, value in node.items():
                key = f"{prefix}.{name}" if prefix else name
                if isinstance(value, dict):
                    walk(value, key)
                elif key in flat:
                    flat[key] = _Refused("set twice: once as a quoted key and once as a dotted key")
                else:
                    flat[key] = value

        walk(data, "")
        for key, value in flat.items():
            if key in WRITE_ONLY_KEYS:
                flat[key] = _Refused(f"{WRITE_ONLY_REASON}: leave it to the boot files or a script")
                continue
            problem = exec_hook_problem(key, normalize(value), allowed is True) if isinstance(value, str) else None
            if problem:
                flat[key] = _Refused(problem)
        return flat
