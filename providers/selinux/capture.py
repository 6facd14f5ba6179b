"""What `converge capture` writes for `[selinux]`: a pure function of what the provider read.

Captured: the mode and policy of the config, and the local customisations the table can declare
(booleans set with `setsebool -P`/`semanage boolean`, file contexts and ports added or modified
with `semanage`), i.e. what differs from the installed policy, not the policy's hundreds of stock
values. Everything is captured exactly as `live()` will read it back, so planning the capture on
the same host is in sync. What is seen but left out is said in the notes, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from converge.provider import Captured
from converge.providers.selinux.kernel import KernelState
from converge.providers.selinux.spec import FileContext, Port, SelinuxSpec

# Local customisations the table has no key for, as `semanage export` names them.
UNMANAGED_KINDS = {
    "login": "login mappings (semanage login)",
    "user": "SELinux users (semanage user)",
    "interface": "network interface labels (semanage interface)",
    "node": "network node labels (semanage node)",
    "ibpkey": "InfiniBand pkey labels (semanage ibpkey)",
    "ibendport": "InfiniBand end port labels (semanage ibendport)",
    "permissive": "permissive domains (semanage permissive)",
    "fcontext-equivalence": "file-context equivalences (semanage fcontext -e)",
    "module-disabled": "disabled policy modules (semodule -d)",
}
STOCK_MODULE_PRIORITY = 100  # the distribution's policy packages; semodule -i installs at 400


@dataclass(frozen=True)
class CaptureInputs:
    """The host's state as the provider read it for the policy in the config."""

    mode: str | None
    policy: str | None
    policy_installed: bool
    kernel: KernelState
    local_booleans: dict[str, bool] = field(default_factory=dict)
    # `semanage boolean -l`'s persistent values: what live() compares; None when not read.
    listed_booleans: dict[str, bool] | None = None
    local_fcontexts: dict[tuple[str, str], str | None] = field(default_factory=dict)
    policy_has_fcontexts: bool = False
    local_ports: dict[tuple[str, str], str | None] = field(default_factory=dict)
    exported: dict[str, list[str]] | None = None  # parse_export of `semanage export`; None if it failed
    module_priorities: dict[str, tuple[int, str]] | None = None


def _errors(error: ValidationError) -> str:
    return "; ".join(detail["msg"] for detail in error.errors())


def _mode(inputs: CaptureInputs, table: dict[str, Any], notes: list[str]) -> None:
    runtime = inputs.kernel.mode
    if inputs.mode not in ("enforcing", "permissive", "disabled"):
        notes.append(f"mode: SELINUX={inputs.mode} in the config is not a mode; not captured")
    elif "disabled" not in (runtime, inputs.mode) and runtime != inputs.mode:
        # The plan would setenforce: capturing it would not be in sync with the running kernel.
        notes.append(f"mode: runtime {runtime} differs from the config ({inputs.mode}); not captured")
    else:
        table["mode"] = inputs.mode


def _booleans(inputs: CaptureInputs, notes: list[str]) -> dict[str, bool]:
    booleans = {}
    listed = inputs.listed_booleans or {}
    for name in sorted(inputs.local_booleans):
        persistent, runtime = listed.get(name), inputs.kernel.booleans.get(name)
        if persistent is None:
            notes.append(f"boolean {name}: set locally but not in the policy; not captured")
        elif runtime not in (None, persistent):
            notes.append(f"boolean {name}: runtime {runtime} differs from the persistent value ({persistent}); not captured")
        else:
            booleans[name] = persistent
    return booleans


def _fcontexts(inputs: CaptureInputs, notes: list[str]) -> list[dict[str, Any]]:
    if inputs.local_fcontexts and not inputs.policy_has_fcontexts:
        notes.append(f"file contexts: no file_contexts installed for policy {inputs.policy!r}; none captured")
        return []
    captured = []
    for (path, file_type), type_name in sorted(inputs.local_fcontexts.items()):
        if type_name is None:
            notes.append(f"fcontext {path}: labelled <<none>> (never relabelled), which the table cannot declare; not captured")
            continue
        entry: dict[str, Any] = {"path": path, "type": type_name}
        if file_type != "all":
            entry["file_type"] = file_type
        try:
            FileContext.model_validate(entry)
        except ValidationError as error:
            notes.append(f"fcontext {path}: {_errors(error)}; not captured")
            continue
        captured.append(entry)
    return captured


def _ports(inputs: CaptureInputs, notes: list[str]) -> list[dict[str, Any]]:
    captured = []
    by_protocol_and_number = sorted(inputs.local_ports.items(), key=lambda item: (item[0][0], int(item[0][1].split("-")[0])))
    for (protocol, port), type_name in by_protocol_and_number:
        if type_name is None:
            notes.append(f"port {protocol}/{port}: no type in ports.local; not captured")
            continue
        # A single port is a TOML integer, a range the "low-high" string the table takes.
        entry: dict[str, Any] = {"type": type_name, "protocol": protocol, "port": int(port) if port.isdigit() else port}
        try:
            Port.model_validate(entry)
        except ValidationError as error:
            notes.append(f"port {protocol}/{port}: {_errors(error)}; not captured")
            continue
        captured.append(entry)
    return captured


def _unmanaged_notes(inputs: CaptureInputs) -> list[str]:
    notes = []
    if inputs.exported is None:
        notes.append("`semanage export` failed: other local customisations were not looked for")
    else:
        for kind, what in UNMANAGED_KINDS.items():
            if inputs.exported.get(kind):
                lines = inputs.exported[kind]
                notes.append(f"{len(lines)} {what} not captured (the table has no key for them): {'; '.join(lines)}")
    if inputs.module_priorities is not None:
        local = sorted(f"{name} ({kind})" for name, (priority, kind) in inputs.module_priorities.items()
                       if priority != STOCK_MODULE_PRIORITY and not name.startswith("permissive_"))
        if local:
            notes.append(f"modules installed locally, not captured (their source is not on the host; declare each "
                         f"with its .te or .cil source to manage it): {', '.join(local)}")
    return notes


def captured_table(inputs: CaptureInputs) -> Captured:
    if not inputs.policy or not inputs.policy_installed:
        return Captured({}, [f"policy {inputs.policy!r} in the config is not installed; nothing captured"])
    table: dict[str, Any] = {}
    notes: list[str] = []
    _mode(inputs, table, notes)
    table["policy"] = inputs.policy
    booleans, fcontexts, ports = _booleans(inputs, notes), _fcontexts(inputs, notes), _ports(inputs, notes)
    if booleans:
        table["booleans"] = booleans
    if fcontexts:
        table["fcontexts"] = fcontexts
    if ports:
        table["ports"] = ports
    notes += _unmanaged_notes(inputs)
    try:
        SelinuxSpec.model_validate(table)
    except ValidationError as error:  # a value no pattern lets through: say so rather than write it
        return Captured({}, [f"the captured table does not validate ({_errors(error)}); nothing captured"])
    return Captured(table, notes)

