"""What `converge capture` writes for `[selinux]`, decided on what `live()` reads.

Captured: the mode and policy of the config, and the local customisations the table can declare
(booleans set with `setsebool -P`/`semanage boolean`, file contexts and ports added or modified
with `semanage`), i.e. what differs from the installed policy, not the policy's hundreds of stock
values. The provider first reads what is local (`probe` turns it into a spec declaring exactly
that), then plans that spec with `live()`: what live reads back is what is captured, so planning
the capture on the same host is in sync. What is seen but left out is said in the notes.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from converge.provider import Captured, ParseError

from .parse import (
    parse_booleans_local,
    parse_export,
    parse_file_contexts,
    parse_module_priorities,
    parse_ports_local,
)
from .spec import POLICY_NAME, FileContext, Port, SelinuxSpec

if TYPE_CHECKING:
    from .provider import SelinuxLive

# Local customisations the table has no key for, as `semanage export` names them.
UNMANAGED_KINDS = {
    "login": "login mappings (semanage login)",
    "user": "SELinux users (semanage user)",
    "interface": "network interface labels (semanage interface)",
    "node": "network node labels (semanage node)",
    "ibpkey": "InfiniBand pkey labels (semanage ibpkey)",
    "ibendport": "InfiniBand end port labels (semanage ibendport)",
    "fcontext-equivalence": "file-context equivalences (semanage fcontext -e)",
    "module-disabled": "disabled policy modules (semodule -d)",
}
STOCK_MODULE_PRIORITY = 100  # the distribution's policy packages; semodule -i installs at 400


def configured_policy(policy: str, installed: Collection[str]) -> str | None:
    """The config's policy, if its name is safe to put in a path and its store exists."""
    return policy if POLICY_NAME.fullmatch(policy) and policy in installed else None


def uninstalled(policy: str, named: bool) -> Captured:
    if named:
        return Captured({}, [f"policy {policy!r} in the config is not installed; nothing captured"])
    return Captured({}, [f"the config sets no SELINUXTYPE=, and the policy the SELinux tools then use ({policy!r}) "
                         f"is not installed; nothing captured"])


@dataclass(frozen=True)
class Probe:
    """A spec declaring every local customisation the table can hold, and notes on the rest."""

    spec: SelinuxSpec
    notes: list[str] = field(default_factory=list)


def _errors(error: ValidationError) -> str:
    return "; ".join(detail["msg"] for detail in error.errors())


def probe(booleans_local: str, fcontexts_local: str, ports_local: str, listed: dict[str, bool] | None,
          has_stock_fcontexts: bool) -> Probe:
    """The spec to read live state for. `listed` (`semanage boolean -l`, None before it is read)
    drops booleans the policy does not have; file contexts only where the policy has stock ones."""
    notes: list[str] = []
    booleans = {}
    for name in sorted(parse_booleans_local(booleans_local)):
        if listed is not None and name not in listed:
            notes.append(f"boolean {name}: set locally but not in the policy; not captured")
        else:
            booleans[name] = False  # the value is live's
    fcontexts = _valid(FileContext, [
        {"path": path, "type": type_name, **({"file_type": file_type} if file_type != "all" else {})}
        for (path, file_type), type_name in sorted(parse_file_contexts(fcontexts_local).items()) if type_name
    ], notes, "fcontext {path}")
    for (path, _), type_name in sorted(parse_file_contexts(fcontexts_local).items()):
        if type_name is None:
            notes.append(f"fcontext {path}: labelled <<none>> (never relabelled), which the table cannot declare; not captured")
    if fcontexts and not has_stock_fcontexts:
        notes.append("file contexts: no file_contexts installed for the policy; none captured")
        fcontexts = []
    by_number = sorted(parse_ports_local(ports_local).items(), key=lambda item: (item[0][0], int(item[0][1].split("-")[0])))
    ports = _valid(Port, [{"type": type_name, "protocol": protocol, "port": int(port) if port.isdigit() else port}
                          for (protocol, port), type_name in by_number if type_name], notes, "port {protocol}/{port}")
    notes += [f"port {protocol}/{port}: no type in ports.local; not captured" for (protocol, port), type_name in by_number
              if type_name is None]
    valid_booleans, problem = _valid_booleans(booleans)
    notes += problem
    return Probe(SelinuxSpec.model_validate({"booleans": valid_booleans, "fcontexts": fcontexts, "ports": ports,
                                              "permissive_domains": []}), notes)


def _valid(model: type[FileContext] | type[Port], entries: list[dict[str, Any]], notes: list[str], what: str) -> list[Any]:
    valid = []
    for entry in entries:
        try:
            valid.append(model.model_validate(entry))
        except ValidationError as error:
            notes.append(f"{what.format(**entry)}: {_errors(error)}; not captured")
    return valid


def _valid_booleans(booleans: dict[str, bool]) -> tuple[dict[str, bool], list[str]]:
    valid, notes = {}, []
    for name, value in booleans.items():
        try:
            SelinuxSpec.model_validate({"booleans": {name: value}})
        except ValidationError as error:
            notes.append(f"boolean {name}: {_errors(error)}; not captured")
        else:
            valid[name] = value
    return valid, notes


def captured_table(live: SelinuxLive, probe: Probe, exported: str | None, module_list: str | None) -> Captured:
    """The table, from what live read for the probe's spec."""
    table: dict[str, Any] = {}
    notes = list(probe.notes)
    _mode(live, table, notes)
    if live.config_policy:
        table["policy"] = live.policy
    else:
        notes.append(f"policy: the config sets no SELINUXTYPE= (the SELinux tools use {live.policy!r}); not captured")
    booleans = {}
    for name in probe.spec.booleans:
        persisted, runtime = live.booleans[name], live.kernel.booleans.get(name)
        if runtime not in (None, persisted):
            notes.append(f"boolean {name}: runtime {runtime} differs from the persistent value ({persisted}); not captured")
        else:
            booleans[name] = persisted
    if booleans:
        table["booleans"] = booleans
    if probe.spec.fcontexts:
        table["fcontexts"] = [fc.model_dump(exclude_defaults=True) for fc in probe.spec.fcontexts]
    if probe.spec.ports:
        table["ports"] = [{"type": p.type, "protocol": p.protocol, "port": int(p.port) if p.port.isdigit() else p.port}
                          for p in probe.spec.ports]
    if live.permissive:
        table["permissive_domains"] = sorted(live.permissive)
    notes += _unmanaged_notes(exported, module_list)
    return Captured(table, notes)


def _mode(live: SelinuxLive, table: dict[str, Any], notes: list[str]) -> None:
    runtime, mode = live.kernel.mode, live.config_mode
    if mode not in ("enforcing", "permissive", "disabled"):
        notes.append(f"mode: SELINUX={mode} in the config is not a mode; not captured")
    elif "disabled" not in (runtime, mode) and runtime != mode:
        # The plan would setenforce: capturing it would not be in sync with the running kernel.
        notes.append(f"mode: runtime {runtime} differs from the config ({mode}); not captured")
    else:
        table["mode"] = mode


def _unmanaged_notes(exported: str | None, module_list: str | None) -> list[str]:
    notes = []
    try:
        kinds = parse_export(exported) if exported is not None else None
    except ParseError as error:
        kinds, notes = None, [str(error)]
    if kinds is None:
        notes.append("`semanage export` failed: other local customisations were not looked for")
    else:
        for kind, what in UNMANAGED_KINDS.items():
            if kinds.get(kind):
                lines = kinds[kind]
                notes.append(f"{len(lines)} {what} not captured (the table has no key for them): {'; '.join(lines)}")
    if module_list is not None:
        local = sorted(f"{name} ({kind})" for name, (priority, kind) in parse_module_priorities(module_list).items()
                       if priority != STOCK_MODULE_PRIORITY and not name.startswith("permissive_"))
        if local:
            notes.append(f"modules installed locally, not captured (their source is not on the host; declare each "
                         f"with its .te or .cil source to manage it): {', '.join(local)}")
    return notes
