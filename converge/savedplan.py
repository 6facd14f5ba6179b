"""Saved plans: `converge plan --out FILE`, then `converge apply FILE` runs exactly that plan.

The file holds everything apply needs and nothing secret: the resolved baseline (the text of every
file it is made of), each host's target, its changes and the operations apply will run, and a
digest of every read the plan was computed from. Apply re-reads each host under its lock and
refuses a host whose answers differ ("changed since the plan"): what was reviewed is what runs,
on the state it was reviewed against. A digest over the whole document refuses a damaged or
edited file; a plan from another converge version is refused too (operations are its own).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import tomllib
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from converge import __version__
from converge.baseline import SOURCE_KEY, Baseline, load_baseline
from converge.engine import HostRun, LockRequest, changed_reads, in_parallel, new_host_plan, replan_saved
from converge.errors import ConvergeError
from converge.hosts import ConnectOptions, connect
from converge.plan import Change, HostPlan, NotApplicable, Skipped
from converge.reads import Read, read_from_json, read_to_json
from converge.registry import Registry

FORMAT = "converge-plan"
FORMAT_VERSION = 1


class PlanFileError(ConvergeError):
    """A saved plan that cannot be applied as it is."""


def is_saved_plan(path: Path) -> bool:
    """Whether `path` holds a saved plan (recognised by its content, not its name)."""
    try:
        with path.open("rb") as handle:
            start = handle.read(64).lstrip()
    except OSError:
        return False
    return start.startswith(b"{") and b'"format"' in start


def _canonical(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogateescape")


def _source_files(toml_file: Path) -> Iterator[Path]:
    def walk(node: Any) -> Iterator[Path]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == SOURCE_KEY and isinstance(value, str):
                    yield (toml_file.parent / value).resolve()
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    yield from walk(tomllib.loads(toml_file.read_text(encoding="utf-8")))


def baseline_files(baseline: Baseline) -> tuple[str, dict[str, str]]:
    """The top file's name and the text of every file of `baseline` (TOML files and sources), by
    path relative to the directory that holds them all."""
    paths = [path.resolve() for path in baseline.files]
    paths += [source for path in baseline.files for source in _source_files(path)]
    root = Path(os.path.commonpath([str(path.parent) for path in paths]))
    files = {str(path.relative_to(root)): path.read_text(encoding="utf-8") for path in dict.fromkeys(paths)}
    return str(baseline.path.resolve().relative_to(root)), files


def document(runs: Sequence[HostRun], only: Collection[str]) -> dict[str, Any]:
    baselines: dict[str, dict[str, Any]] = {}
    hosts = []
    for run in runs:
        top, files = baseline_files(run.baseline)
        digest = hashlib.sha256(_canonical({"top": top, "files": files})).hexdigest()
        baselines[digest] = {"top": top, "files": files}
        facts = run.facts
        hosts.append({
            "host": run.plan.host, "target": run.plan.target, "baseline": digest,
            "reads": [{"read": read_to_json(read), "sha256": facts.fingerprint(read)} for read in facts.reads()]
            if facts else [],
            "errors": run.plan.errors, "warnings": run.plan.warnings,
            "skipped": [{"provider": s.provider, "reason": s.reason} for s in run.plan.skipped],
            "not_applicable": [{"provider": n.provider, "resource": n.resource, "reason": n.reason}
                               for n in run.plan.not_applicable],
            "providers": [{
                "provider": p.provider.name,
                "changes": [change.record() for change in p.plan.changes],
                "operations": [op for name, op in run.plan.operations if name == p.provider.name],
            } for p in run.provider_plans],
        })
    body = {
        "format": FORMAT, "version": FORMAT_VERSION, "converge": __version__,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "only": sorted(only),
        "baselines": baselines, "hosts": hosts,
    }
    return body | {"digest": hashlib.sha256(_canonical(body)).hexdigest()}


def save(path: Path, runs: Sequence[HostRun], only: Collection[str]) -> None:
    """Write the plan atomically (a half-written plan file must never be applied)."""
    text = json.dumps(document(runs, only), indent=1, ensure_ascii=False) + "\n"
    directory = path.resolve().parent
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except OSError:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass
class SavedHost:
    name: str
    target: str
    baseline: Baseline
    fingerprints: dict[Read, str]
    plan: HostPlan
    providers: dict[str, tuple[list[Change], list[dict[str, Any]]]]


@dataclass
class SavedPlan:
    path: Path
    only: list[str]
    hosts: list[SavedHost]


def load(path: Path, registry: Registry) -> SavedPlan:
    """Read and check a saved plan; raises PlanFileError with one clear line."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise PlanFileError(f"{path}: cannot read the plan: {getattr(error, 'strerror', None) or error}") from None
    except json.JSONDecodeError as error:
        raise PlanFileError(f"{path}: not a complete plan file (truncated or damaged: {error.msg} at line {error.lineno})"
                            ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PlanFileError(f"{path}: not a converge plan file")
    if data.get("version") != FORMAT_VERSION or data.get("converge") != __version__:
        raise PlanFileError(f"{path}: made by converge {data.get('converge')} (plan format {data.get('version')}); this "
                            f"is converge {__version__}: make the plan again with this version")
    body = {key: value for key, value in data.items() if key != "digest"}
    if data.get("digest") != hashlib.sha256(_canonical(body)).hexdigest():
        raise PlanFileError(f"{path}: the plan's content does not match its digest (edited or damaged): make it again")
    # The baseline's files are needed until the run ends (verification plans them again).
    workdir = Path(tempfile.mkdtemp(prefix="converge-plan-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    try:
        return SavedPlan(path, list(data["only"]), _hosts(data, workdir, registry))
    except (KeyError, TypeError, ValueError) as error:
        raise PlanFileError(f"{path}: malformed plan file ({type(error).__name__}: {error})") from None


def _hosts(data: dict[str, Any], workdir: Path, registry: Registry) -> list[SavedHost]:
    baselines: dict[str, Baseline] = {}
    for digest, saved in data["baselines"].items():
        directory = workdir / digest[:16]
        for relative, text in saved["files"].items():
            target = (directory / relative).resolve()
            if not target.is_relative_to(directory.resolve()):
                raise ValueError(f"file outside the plan's baseline: {relative}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        baselines[digest] = load_baseline(directory / saved["top"], registry)
    hosts = []
    for entry in data["hosts"]:
        baseline = baselines[entry["baseline"]]
        plan = new_host_plan(entry["host"], entry["target"], baseline, data["only"])
        plan.warnings, plan.errors = list(entry["warnings"]), list(entry["errors"])
        plan.skipped = [Skipped(s["provider"], s["reason"]) for s in entry["skipped"]]
        plan.not_applicable = [NotApplicable(n["provider"], n["resource"], n["reason"])
                               for n in entry.get("not_applicable", [])]
        providers = {p["provider"]: ([Change.from_record(c) for c in p["changes"]], list(p["operations"]))
                     for p in entry["providers"]}
        fingerprints = {read_from_json(item["read"]): str(item["sha256"]) for item in entry["reads"]}
        hosts.append(SavedHost(entry["host"], entry["target"], baseline, fingerprints, plan, providers))
    return hosts


def recheck_fleet(saved: SavedPlan, registry: Registry, *, options: ConnectOptions, lock: LockRequest, forks: int = 20,
                  on_done: Callable[[HostPlan], None] | None = None) -> list[HostRun]:
    """Connect to every host of a saved plan, take its lock, and re-read it: a host whose answers
    differ from the plan's is refused ("changed since the plan"), the others get the saved plan."""

    def recheck(entry: SavedHost) -> HostRun:
        run = HostRun(None, entry.baseline, saved.only, entry.plan)
        if entry.plan.errors:
            return run
        try:
            run.host = connect(entry.target, options, name=entry.name if entry.name != entry.target else None)
            run.host.lock(lock.holder, lock.wait)
            facts = run.host.gather(list(entry.fingerprints))
            changed = changed_reads(facts, entry.fingerprints)
            if changed:
                shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
                raise ConvergeError(f"changed since the plan: {shown}; nothing applied: plan again")
            replan_saved(run, facts, registry, entry.providers)
        except ConvergeError as error:
            run.plan.errors.append(str(error))
        except Exception as error:  # one host's surprise must not stop the others
            run.plan.errors.append(f"internal error: {type(error).__name__}: {error}")
        if on_done:
            on_done(run.plan)
        return run

    return in_parallel(saved.hosts, recheck, forks)
