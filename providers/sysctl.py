"""sysctl: kernel parameters at runtime (/proc/sys) and persisted in a drop-in converge owns.

A key is in sync when its runtime value is the desired one and the boot-time configuration
persists it: converge's drop-in, or a file read before it (what the distribution already sets
is not repeated).
Values are set through `sysctl -w`, so the kernel validates them before they are persisted: a
value the kernel refuses is rolled back at runtime and never written to the drop-in.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, PlainValidator, RootModel, model_validator

from converge.errors import ProviderError
from converge.hosts import Host
from converge.plan import Change
from converge.provider import Captured, Provider
from converge.reads import Facts, Read, ReadFile, ReadGlob

# Sorts after systemd's 99-protect-links.conf and Debian's 99-sysctl.conf, so what converge
# persists is what the kernel gets at boot (files later in name order win).
DROP_IN = "/etc/sysctl.d/99-zz-converge.conf"
# Where systemd-sysctl and `sysctl --system` look, highest priority first: a file name in an
# earlier directory masks the same name in later ones; files apply in file-name order.
BOOT_DIRECTORIES = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")
# Read last by `sysctl --system` (and on Debian through the 99-sysctl.conf link).
SYSCTL_CONF = "/etc/sysctl.conf"
# Applied by an enabled ufw whenever it starts or reloads (IPT_SYSCTL in /etc/default/ufw),
# after systemd-sysctl: on Debian and Ubuntu it sets log_martians=0, among others.
UFW_SYSCTL_CONF = "/etc/ufw/sysctl.conf"
UFW_CONF = "/etc/ufw/ufw.conf"
LATE_FILES = (SYSCTL_CONF, UFW_SYSCTL_CONF, UFW_CONF)
PROC_SYS = "/proc/sys"
DROP_IN_HEADER = (
    "# Managed by converge: rewritten on every apply, local edits are lost.\n"
    "# Change the baseline instead.\n"
)

_KEY = re.compile(r"[a-z][a-z0-9_]*(\.[A-Za-z0-9_-]+)+")
# Enough for numbers, lists and the paths and % patterns of keys such as kernel.core_pattern;
# nothing a shell or a config parser treats specially (quotes, ;, $, `, newlines).
_VALUE_TEXT = re.compile(r"[A-Za-z0-9 \t_.:,/+%|@*-]*")
_INTEGER = re.compile(r"[+-]?[0-9]+")
MAX_KEY_LENGTH = 255
MAX_VALUE_LENGTH = 4096
# The widest sysctl integers are unsigned 64-bit; the most negative are signed 64-bit.
INTEGER_RANGE = (-(2**63), 2**64 - 1)


def normalize(value: str) -> str:
    """Whitespace folded to single spaces and integers in canonical form, as compared."""
    return " ".join(str(int(token)) if _INTEGER.fullmatch(token) else token for token in value.split())


def displayed(value: str | None) -> int | str | None:
    """Integers as JSON numbers, as users write them in the baseline."""
    return int(value) if value is not None and _INTEGER.fullmatch(value) else value


def _check_key(key: str) -> str:
    if len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        raise ValueError("not a sysctl key: expected dot-separated names such as kernel.kptr_restrict")
    return key


_SET_TWICE = object()


def _check_value(value: Any) -> str:
    if value is _SET_TWICE:
        raise ValueError("set twice: once as a quoted key and once as a dotted key")
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


SysctlKey = Annotated[str, AfterValidator(_check_key)]
SysctlValue = Annotated[str, PlainValidator(_check_value)]


class SysctlSpec(RootModel[dict[SysctlKey, SysctlValue]]):
    """`[sysctl]`: key = value, keys bare-dotted (nested tables in TOML) or quoted."""

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        flat: dict[str, Any] = {}

        def walk(node: dict[str, Any], prefix: str) -> None:
            for name, value in node.items():
                key = f"{prefix}.{name}" if prefix else name
                if isinstance(value, dict):
                    walk(value, key)
                elif key in flat:
                    flat[key] = _SET_TWICE  # reported by _check_value, located at the key
                else:
                    flat[key] = value

        walk(data, "")
        return flat


def proc_path(key: str) -> str:
    return f"{PROC_SYS}/{key.replace('.', '/')}"


def parse_sysctl_conf(text: str) -> dict[str, str]:
    """Assignments of a sysctl.d file (sysctl.d(5)): `key = value`, `#`/`;` comments, a
    leading `-` to ignore failures, `/` accepted as separator when it comes first."""
    values: dict[str, str] = {}
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        key = key.removeprefix("-").strip()
        if "/" in key and ("." not in key or key.index("/") < key.index(".")):
            key = key.replace("/", ".")
        values[key] = normalize(value)
    return values


def render_drop_in(values: dict[str, str]) -> str:
    return DROP_IN_HEADER + "".join(f"{key} = {value}\n" for key, value in values.items())


@dataclass(frozen=True)
class SysctlLive:
    runtime: dict[str, str]
    # Boot-time configuration: converge's drop-in, and the last value the files read before
    # and after it set (with the file, for the ones after, which win over the drop-in).
    drop_in: dict[str, str]
    set_before: dict[str, str]
    set_after: dict[str, tuple[str, str]]

    def persisted(self, key: str) -> str | None:
        """The value `key` gets at boot."""
        if key in self.set_after:
            return self.set_after[key][1]
        return self.drop_in[key] if key in self.drop_in else self.set_before.get(key)


def _boot_files(facts: Facts) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(files read before converge's drop-in, files read after it), in boot order, without it."""
    by_name: dict[str, tuple[str, str]] = {}
    for directory in BOOT_DIRECTORIES:
        for path, text in facts.glob(f"{directory}/*.conf").items():
            by_name.setdefault(os.path.basename(path), (path, text))
    ours = os.path.basename(DROP_IN)
    before = [by_name[name] for name in sorted(by_name) if name < ours]
    after = [by_name[name] for name in sorted(by_name) if name > ours]
    ufw_enabled = re.search(r"^\s*ENABLED\s*=\s*yes\s*$", facts.file(UFW_CONF) or "", re.MULTILINE | re.IGNORECASE)
    for path in (SYSCTL_CONF, UFW_SYSCTL_CONF) if ufw_enabled else (SYSCTL_CONF,):
        text = facts.file(path)
        if text is not None:
            after.append((path, text))
    return before, after


def _assignments(files: list[tuple[str, str]], keys: Sequence[str]) -> dict[str, tuple[str, str]]:
    """key -> (file, value) of the last of `files` to set each key (globs in files included)."""
    found: dict[str, tuple[str, str]] = {}
    for path, text in files:
        for pattern, value in parse_sysctl_conf(text).items():
            for key in fnmatch.filter(keys, pattern):
                found[key] = (path, value)
    return found


def _live_state(facts: Facts, keys: Sequence[str], runtime: dict[str, str]) -> SysctlLive:
    """The boot configuration of `keys` around converge's drop-in, with their runtime values."""
    before, after = _boot_files(facts)
    set_before = {key: value for key, (_, value) in _assignments(before, keys).items()}
    return SysctlLive(runtime, parse_sysctl_conf(facts.file(DROP_IN) or ""), set_before, _assignments(after, keys))


def drop_in_content(spec: SysctlSpec, live: SysctlLive) -> dict[str, str]:
    """What the drop-in must hold: every key it holds already, and every key the rest of the boot
    configuration does not set to the desired value (it never repeats what the distribution
    already sets; a key a later file overrides is still written, for when that file goes)."""

    def set_elsewhere(key: str, wanted: str) -> bool:
        if key in live.set_after:
            return live.set_after[key][1] == wanted
        return live.set_before.get(key) == wanted

    return {key: wanted for key, wanted in spec.root.items() if key in live.drop_in or not set_elsewhere(key, wanted)}


class SysctlProvider(Provider[SysctlSpec, SysctlLive]):
    name = "sysctl"
    summary = "kernel parameters: runtime values and a persisted sysctl.d drop-in"
    spec_model = SysctlSpec
    # Last: enabling ufw (and other tools) sets sysctls of its own, which converge then corrects.
    apply_order = 90

    def presence_reads(self) -> Sequence[Read]:
        return [ReadFile(f"{PROC_SYS}/kernel/osrelease")]

    def reads(self, spec: SysctlSpec) -> Sequence[Read]:
        return [ReadFile(DROP_IN), *self._boot_configuration_reads(), *(ReadFile(proc_path(key)) for key in spec.root)]

    @staticmethod
    def _boot_configuration_reads() -> list[Read]:
        return [*(ReadFile(path) for path in LATE_FILES), *(ReadGlob(f"{directory}/*.conf") for directory in BOOT_DIRECTORIES)]

    def absent(self, facts: Facts) -> str | None:
        return None if facts.file(f"{PROC_SYS}/kernel/osrelease") is not None else f"no {PROC_SYS} on this host"

    def live(self, spec: SysctlSpec, facts: Facts) -> SysctlLive:
        runtime: dict[str, str] = {}
        missing = []
        for key in spec.root:
            text = facts.file(proc_path(key))
            if text is None:
                missing.append(key)
            else:
                runtime[key] = normalize(text)
        if missing:
            raise ProviderError(f"no such key on this host: {', '.join(missing)} (nothing under {PROC_SYS})")
        return _live_state(facts, list(spec.root), runtime)

    def diff(self, spec: SysctlSpec, live: SysctlLive) -> list[Change]:
        changes = []
        drop_in = drop_in_content(spec, live)
        for key, wanted in spec.root.items():
            runtime, persisted = live.runtime[key], live.persisted(key)
            # In sync when the drop-in holds what it must: a file read after it that sets
            # another value is beyond any change of ours, and is a warning instead.
            persisted_ok = drop_in.get(key) == live.drop_in.get(key)
            if runtime == wanted and persisted_ok:
                continue
            notes: tuple[str, ...] = ()
            if runtime == wanted:
                notes = (f"not persisted: add to {DROP_IN}",)
            elif persisted_ok:
                notes = ("persisted already; runtime differs",)
            changes.append(Change(
                self.name, key, "update", displayed(runtime), displayed(wanted), notes,
                extra={"persisted": displayed(persisted)},
            ))
        for key, persisted in live.drop_in.items():
            if key not in spec.root:
                changes.append(Change(
                    self.name, key, "remove", displayed(persisted), None,
                    (f"drop from {DROP_IN}; the runtime value stays as it is",),
                ))
        return changes

    def warnings(self, spec: SysctlSpec, live: SysctlLive) -> list[str]:
        return [
            f"{key}: {path} sets {value} and is applied after {DROP_IN} at boot, so {spec.root[key]} will not survive a reboot"
            for key, (path, value) in live.set_after.items() if value != spec.root[key]
        ]

    def apply(self, host: Host, spec: SysctlSpec, live: SysctlLive, changes: Sequence[Change]) -> list[str]:
        done = []
        runtime_keys = [c.resource for c in changes if c.action == "update" and live.runtime[c.resource] != spec.root[c.resource]]
        if runtime_keys:
            assignments = [f"{key}={spec.root[key]}" for key in runtime_keys]
            result = host.run(["sysctl", "-w", *assignments], check=False)
            if not result.ok:
                # Put back what the kernel accepted before refusing one, so nothing is half-done.
                host.run(["sysctl", "-w", *(f"{key}={live.runtime[key]}" for key in runtime_keys)], check=False)
                refused = [line.strip() for line in result.stderr.splitlines() if line.strip()]
                raise ProviderError("the kernel refused: " + "; ".join(refused or [result.failure()]) + "; nothing was changed")
            done.append(f"set {len(runtime_keys)} runtime value(s)")
        content = drop_in_content(spec, live)
        if content != live.drop_in:
            backup = host.write_file(DROP_IN, render_drop_in(content))
            done.append(f"wrote {DROP_IN}" + (f" (previous version in {backup})" if backup else ""))
        return done

    can_capture = True

    def capture_reads(self) -> Sequence[Read]:
        return [ReadFile(DROP_IN), *self._boot_configuration_reads()]

    def _configured_keys(self, facts: Facts) -> list[str]:
        """Keys the boot configuration sets by name: the admin's and the distribution's choices,
        the best record there is of what differs from the kernel's defaults."""
        before, after = _boot_files(facts)
        files = [*before, (DROP_IN, facts.file(DROP_IN) or ""), *after]
        names = {key for _, text in files for key in parse_sysctl_conf(text) if _KEY.fullmatch(key)}
        return sorted(names)

    def capture_more_reads(self, facts: Facts) -> Sequence[Read]:
        return [ReadFile(proc_path(key)) for key in self._configured_keys(facts)]

    def capture(self, facts: Facts) -> Captured:
        keys = self._configured_keys(facts)
        live = _live_state(facts, keys, {})
        table: dict[str, int | str] = {}
        notes = []
        for key in keys:
            text = facts.file(proc_path(key))
            if text is None:
                notes.append(f"{key}: configured at boot but absent from this kernel; not captured")
                continue
            runtime, persisted = normalize(text), live.persisted(key)
            if runtime != persisted:
                notes.append(f"{key}: runtime {runtime} differs from the boot configuration ({persisted}); not captured")
                continue
            value = displayed(runtime)
            table[key] = value if value is not None else runtime
        return Captured(table, notes)
