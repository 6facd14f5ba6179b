"""`converge suggest`: from a host's MAC denials to reviewed baseline changes; never changes a host.

The engine knows no subsystem: a provider that can read denials implements `Suggesting`
(`suggest_reads`, `suggest`), and this module reads each host once (those reads plus the provider's
presence reads), collects the providers' `Suggestion`s, renders them (text, or JSON as
`hosts[].suggestions[]`) and, with `--write`, writes an overlay `<name>.suggested.toml` that
`extends` the baseline plus any generated file, only inside the baseline's directory.
A provider never drops a sensitive access silently: it returns it `refused`, with the proposal it
would have made attached (`withheld`) and the reason (`sensitive`); only `--allow-sensitive` offers
that proposal, marked sensitive with the reason.
Exit codes: 0 nothing to propose, 2 proposals, 1 an error on some host.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import click

from converge.baseline import META_TABLE, Baseline
from converge.errors import ConvergeError, ProviderError
from converge.hosts import CONNECT_ATTEMPTS_HELP
from converge.reads import Facts, Read

# The kinds a proposal can have, narrowest first; the first two and the last change no baseline.
KINDS = ("stale", "relabel", "fcontext", "port", "boolean", "module", "profile-rule", "intended", "refused")
PROPOSING = frozenset({"fcontext", "port", "boolean", "module", "profile-rule"})
EXIT_OK, EXIT_ERROR, EXIT_PROPOSALS = 0, 1, 2


@dataclass(frozen=True)
class Suggestion:
    """One proposal for one group of denials, with the records it rests on."""

    provider: str
    kind: str
    resource: str
    # The baseline fragment, as data, merged into the provider's table by --write ({} when none).
    table: dict[str, Any] = field(default_factory=dict)
    # The records: event ids, comm, exe, paths, counts, first and last time.
    evidence: dict[str, Any] = field(default_factory=dict)
    # Why this kind and not a narrower one; alternatives; what the user must confirm.
    notes: tuple[str, ...] = ()
    # Files --write creates next to the baseline (a .te module, a profile diff), by relative path.
    files: dict[str, str] = field(default_factory=dict)
    # Why the access is sensitive (a refused one, and the withheld proposal once offered), or None.
    sensitive: str | None = None
    # On a refused one: the proposal that would have been made, offered only with --allow-sensitive.
    withheld: Suggestion | None = None
    # How the provider merges several proposals (of several hosts) that write the same file with
    # different texts: given every (host, proposal) writing it, the merged files and notes saying
    # which hosts each part came from. None: such proposals are an error, never one silently lost.
    merge: Callable[[Sequence[tuple[str, Suggestion]]], tuple[dict[str, str], list[str]]] | None = field(
        default=None, compare=False, repr=False)

    def as_json(self) -> dict[str, Any]:
        record = {"provider": self.provider, "kind": self.kind, "resource": self.resource, "table": self.table,
                  "evidence": self.evidence, "notes": list(self.notes), "files": sorted(self.files),
                  "sensitive": self.sensitive}
        if self.withheld is not None:
            record["withheld"] = {"kind": self.withheld.kind, "resource": self.withheld.resource,
                                  "table": self.withheld.table, "notes": list(self.withheld.notes),
                                  "files": sorted(self.withheld.files)}
        return record


def offer_sensitive(suggestions: Sequence[Suggestion], allow: bool) -> list[Suggestion]:
    """With --allow-sensitive, each refused proposal that has a withheld one becomes that proposal,
    marked sensitive with the reason; without it, nothing changes."""
    if not allow:
        return list(suggestions)
    offered = []
    for s in suggestions:
        if s.kind == "refused" and s.withheld is not None:
            reason = s.sensitive or "sensitive"
            s = replace(s.withheld, sensitive=reason, evidence=s.withheld.evidence or s.evidence,
                        notes=(*s.withheld.notes, f"SENSITIVE ({reason}): offered only because of --allow-sensitive"))
        offered.append(s)
    return offered


@runtime_checkable
class Suggesting(Protocol):
    """Optional capability: proposals from the host's denial records, against its own policy."""

    def suggest_reads(self, spec: Any) -> Sequence[Read]:
        ...  # pragma: no cover - protocol

    def suggest(self, spec: Any, facts: Facts, since: float | None) -> list[Suggestion]:
        ...  # pragma: no cover - protocol


SYSTEM_PYTHON = "/usr/bin/python3"


def run_helper(script: Path, request: dict[str, Any], *, what: str, packages: str) -> dict[str, Any]:
    """Run a provider's analysis helper on the distribution's python3 (where the field's own
    libraries are installed, not on PyPI): the request as JSON on stdin, the answer as JSON out."""
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-I", str(script)], input=json.dumps(request), capture_output=True,
                              text=True, check=False, timeout=600)
    except OSError as error:
        raise ProviderError(f"suggest needs {SYSTEM_PYTHON} with {packages}: {error}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().split("\n") or [""])[-1]
        raise ProviderError(f"{what} failed ({last}); it needs {packages} on the controller")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


@dataclass
class HostSuggestions:
    host: str
    target: str
    suggestions: list[Suggestion] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def parse_since(value: str | None, facts_boot: float | None = None) -> float | None:
    """`boot` (the host's boot time, from /proc/stat btime) or an ISO time, as a Unix time."""
    if value in (None, ""):
        return None
    if value == "boot":
        return facts_boot
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise click.BadParameter(f"not boot or an ISO time: {value!r}", param_hint="--since") from None


def boot_time(stat: str | None) -> float | None:
    for line in (stat or "").split("\n"):
        if line.startswith("btime "):
            return float(line.split()[1])
    return None


def suggest_host(host: Any, baseline: Baseline, registry: Any, only: Sequence[str], since: str | None, *,
                 allow_sensitive: bool = False) -> HostSuggestions:
    """Read the host once for every suggesting provider of the baseline and collect proposals."""
    result = HostSuggestions(host.name, host.target)
    chosen: list[tuple[str, Any, Any]] = []
    for name, table in baseline.tables.items():
        if only and name not in only:
            continue
        provider = registry.get(name)
        if isinstance(provider, Suggesting):
            chosen.append((name, provider, table.spec))
    reads: list[Read] = []
    from converge.reads import ReadFile

    for _, provider, spec in chosen:
        reads += [*provider.presence_reads(), *provider.suggest_reads(spec)]
    reads.append(ReadFile("/proc/stat"))
    try:
        facts = host.gather(list(dict.fromkeys(reads)))
    except ConvergeError as error:
        result.errors.append(str(error))
        return result
    start = parse_since(since, boot_time(facts.file("/proc/stat")))
    for name, provider, spec in chosen:
        reason = provider.absent(facts)
        if reason:
            result.skipped.append(f"{name}: {reason}")
            continue
        try:
            result.suggestions += offer_sensitive(provider.suggest(spec, facts, start), allow_sensitive)
        except ConvergeError as error:
            result.errors.append(f"{name}: {error}")
    return result


def exit_code(results: Sequence[HostSuggestions]) -> int:
    if any(r.errors for r in results):
        return EXIT_ERROR
    return EXIT_PROPOSALS if any(s.kind in PROPOSING for r in results for s in r.suggestions) else EXIT_OK


def render_json(results: Sequence[HostSuggestions]) -> str:
    hosts = [{"host": r.host, "target": r.target, "status": "error" if r.errors else "ok",
              "error": "; ".join(r.errors) or None, "suggestions": [s.as_json() for s in r.suggestions],
              "errors": r.errors, "skipped": r.skipped} for r in results]
    return json.dumps({"version": 1, "hosts": hosts, "exit_code": exit_code(results)}, indent=2, ensure_ascii=False)


SYMBOL = {"stale": "=", "relabel": "~", "refused": "!", "intended": "=", "stale-note": "="}


def render_text(results: Sequence[HostSuggestions]) -> str:
    lines = []
    for r in results:
        proposing = sum(s.kind in PROPOSING for s in r.suggestions)
        lines.append(f"{r.host}: {proposing} proposal(s), {len(r.suggestions)} group(s) of denials")
        for error in r.errors:
            lines.append(f"  error: {error}")
        for skipped in r.skipped:
            lines.append(f"  skipped {skipped}")
        for s in r.suggestions:
            symbol = SYMBOL.get(s.kind, "+")
            lines.append(f"  {symbol} {s.kind:<8} {s.resource}" + (f"   SENSITIVE: {s.sensitive}" if s.sensitive and
                                                                   s.kind != "refused" else ""))
            if s.table:
                lines.append(f"             [{s.provider}] {json.dumps(s.table, sort_keys=True)}")
            ev = s.evidence
            shown = [f"{ev.get('count', 0)} record(s)"]
            shown += [f"{key}={','.join(map(str, ev[key]))}" for key in ("comm", "exe", "paths") if ev.get(key)]
            if ev.get("events"):
                shown.append("events " + " ".join(ev["events"][:3]) + (" …" if len(ev["events"]) > 3 else ""))
            lines.append("             " + " · ".join(shown))
            lines += [f"             {note}" for note in s.notes]
            if s.withheld is not None:
                lines.append(f"             --allow-sensitive would offer: {s.withheld.kind} {s.withheld.resource}")
    return "\n".join(lines) + "\n"


def _merged_table(baseline: Baseline, provider: str, additions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The provider's table as the baseline's own file writes it, with the additions: arrays are
    written whole, since `extends` replaces arrays."""
    table: dict[str, Any] = {}
    for path in baseline.files:
        data = tomllib.loads(path.read_text(encoding="utf-8")).get(provider, {})
        for key, value in data.items():
            table[key] = value
    for addition in additions:
        for key, value in addition.items():
            if isinstance(value, list):
                table[key] = [*table.get(key, []), *(v for v in value if v not in table.get(key, []))]
            elif isinstance(value, dict):
                table[key] = {**table.get(key, {}), **value}
            else:
                table[key] = value
    return table


def merged_files(results: Sequence[HostSuggestions]) -> tuple[dict[str, str], list[str]]:
    """Every generated file of the proposals, by relative path. Proposals (of several hosts, or a
    sensitive one offered beside the others) that write one file with different texts are merged
    by their provider (`Suggestion.merge`), which says in the notes which hosts each part came from;
    without a way to merge them it is an error, never a host's proposal silently overwritten."""
    writers: dict[str, list[tuple[str, Suggestion]]] = {}
    for r in results:
        for s in r.suggestions:
            if s.kind in PROPOSING:
                for relative in s.files:
                    writers.setdefault(relative, []).append((r.host, s))
    files: dict[str, str] = {}
    notes: list[str] = []
    for relative, theirs in writers.items():
        if relative in files:
            continue  # written by the merge of an earlier file (a profile and its diff)
        if len({s.files[relative] for _, s in theirs}) == 1:
            files[relative] = theirs[0][1].files[relative]
            continue
        merge = theirs[-1][1].merge
        if merge is None:
            hosts = ", ".join(dict.fromkeys(host for host, _ in theirs))
            raise ConvergeError(f"{relative}: {hosts} propose different texts and {theirs[0][1].provider} cannot "
                                "merge them; write the hosts' overlays one at a time")
        merged, said = merge(theirs)
        files.update(merged)
        notes += said
    return files, notes


def write_overlay(baseline: Baseline, results: Sequence[HostSuggestions], notes: list[str] | None = None) -> list[Path]:
    """`<name>.suggested.toml` extending the baseline, plus generated files (merged across hosts,
    see `merged_files`; the merge's notes are appended to `notes`), in its directory."""
    import tomli_w

    directory = baseline.path.parent.resolve()
    by_provider: dict[str, list[dict[str, Any]]] = {}
    written: list[Path] = []
    for r in results:
        for s in r.suggestions:
            if s.kind in PROPOSING:
                by_provider.setdefault(s.provider, []).append(s.table)
    files, said = merged_files(results)
    if notes is not None:
        notes += said
    for relative in files:
        target = (directory / relative).resolve()
        if not target.is_relative_to(directory):
            raise ConvergeError(f"refusing to write {relative}: outside {directory}")
    for relative, text in files.items():
        target = (directory / relative).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    document: dict[str, Any] = {META_TABLE: {"extends": [baseline.path.name]}}
    for provider, additions in by_provider.items():
        document[provider] = _merged_table(baseline, provider, additions)
    overlay = directory / f"{baseline.path.stem}.suggested.toml"
    header = "# Written by `converge suggest --write`: review with git diff, then plan and apply.\n"
    overlay.write_text(header + tomli_w.dumps(document, multiline_strings=True), encoding="utf-8")
    return [overlay, *written]


def suggest_fleet(jobs: Sequence[Any], registry: Any, *, only: Sequence[str], since: str | None, options: Any,
                  forks: int, allow_sensitive: bool = False) -> list[HostSuggestions]:
    """Connect to and read every host, `forks` at a time, as plan does; one host's failure never stops another."""
    from converge.engine import in_parallel
    from converge.hosts import connect

    def suggest_one(job: Any) -> HostSuggestions:
        try:
            host = connect(job.target, options, name=job.name)
        except ConvergeError as error:
            return HostSuggestions(job.name or job.target, job.target, errors=[str(error)])
        try:
            return suggest_host(host, job.baseline, registry, only, since, allow_sensitive=allow_sensitive)
        except Exception as error:  # a provider bug on one host must not stop the fleet
            return HostSuggestions(host.name, host.target, errors=[f"internal error: {type(error).__name__}: {error}"])
        finally:
            host.close()

    results: list[HostSuggestions] = in_parallel(jobs, suggest_one, forks)
    return results


@click.command("suggest")
@click.argument("baseline_path", metavar="[BASELINE]", type=click.Path(path_type=Path, dir_okay=False), required=False)
@click.option("-H", "--host", "targets", multiple=True, metavar="TARGET", help="Host to read (default local). Repeatable.")
@click.option("-i", "--inventory", type=click.Path(path_type=Path, dir_okay=False), help="Inventory file of hosts.")
@click.option("--limit", multiple=True, metavar="PATTERN", help="Only inventory hosts or groups matching (glob).")
@click.option("--forks", type=click.IntRange(1, 500), default=20, show_default=True, help="Hosts read at once.")
# The same SSH options as plan (converge.cli.connection_options; that module imports this one, so
# they are repeated here, and tests/test_suggest_selinux.py checks that they stay the same).
@click.option("--timeout", type=click.FloatRange(0.1), default=10.0, show_default=True, help="SSH connect timeout (s).")
@click.option("--connect-attempts", type=click.IntRange(1), metavar="N", help=CONNECT_ATTEMPTS_HELP)
@click.option("--become", is_flag=True, help="Run privileged reads through sudo for a non-root SSH user.")
@click.option("--identity", type=click.Path(exists=True, dir_okay=False), help="SSH private key to try first.")
@click.option("--trust-new-host-keys", is_flag=True, help="Accept and record host keys not in known_hosts yet.")
@click.option("--ssh-config", type=click.Path(dir_okay=False), help="SSH config file (default ~/.ssh/config).")
@click.option("--only", multiple=True, type=click.Choice(["selinux", "apparmor"]), help="Only this provider's denials.")
@click.option("--since", metavar="boot|ISO-TIME", help="Only records from then on.")
@click.option("--allow-sensitive", is_flag=True,
              help="Offer the proposals refused as sensitive (capabilities, shadow_t, ...), marked with the reason.")
@click.option("--json", "as_json", is_flag=True, help="Print hosts[].suggestions[] as JSON.")
@click.option("--write", "write", is_flag=True, help="Write <name>.suggested.toml and generated files next to the baseline.")
def suggest_command(baseline_path: Path | None, *, targets: tuple[str, ...], inventory: Path | None, limit: tuple[str, ...],
                    forks: int, timeout: float, connect_attempts: int | None, become: bool, identity: str | None,
                    trust_new_host_keys: bool, ssh_config: str | None, only: tuple[str, ...], since: str | None,
                    allow_sensitive: bool, as_json: bool, write: bool) -> None:
    """Propose baseline changes from SELinux and AppArmor denials; read-only on every host."""
    import sys

    from converge.cli import _jobs
    from converge.hosts import ConnectOptions
    from converge.registry import Registry

    registry = Registry()
    jobs = _jobs(baseline_path, targets, inventory, limit, registry)
    options = ConnectOptions(timeout, become, identity, trust_new_host_keys, ssh_config, interactive=sys.stdin.isatty(),
                             connect_attempts=connect_attempts)
    results = suggest_fleet(jobs, registry, only=only, since=since, options=options, forks=forks,
                            allow_sensitive=allow_sensitive)
    click.echo(render_json(results) if as_json else render_text(results), nl=False)
    if write:
        # one overlay per baseline, from the hosts that use it (an inventory may give hosts different ones)
        by_baseline: dict[Path, tuple[Baseline, list[HostSuggestions]]] = {}
        for job, result in zip(jobs, results, strict=True):
            by_baseline.setdefault(job.baseline.path.resolve(), (job.baseline, []))[1].append(result)
        for baseline, theirs in by_baseline.values():
            merge_notes: list[str] = []
            for path in write_overlay(baseline, theirs, merge_notes):
                click.echo(f"wrote {path}", err=True)
            for note in merge_notes:
                click.echo(f"merged {note}", err=True)
    raise SystemExit(exit_code(results))
