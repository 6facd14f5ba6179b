"""The command line: wiring only. Exit codes are those of SPEC section 3."""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from converge import __version__
from converge.baseline import Baseline, load_baseline
from converge.engine import ApplyOptions, HostRun, Job, LockRequest, apply_fleet, capture_host, close_all, plan_fleet
from converge.errors import ConvergeError
from converge.hosts import CONNECT_ATTEMPTS_HELP, ConnectOptions, Host, connect
from converge.hosts.lock import holder_description
from converge.inventory import limit_hosts, load_inventory
from converge.plan import HostPlan, plan_exit_code, printable, render_text
from converge.registry import Registry

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2

baseline_argument = click.argument("baseline", type=click.Path(path_type=Path, dir_okay=False), required=False)
# apply also takes a saved plan (recognised by its content) where plan takes a baseline.
baseline_or_plan_argument = click.argument("baseline", metavar="[BASELINE | PLANFILE]",
                                           type=click.Path(path_type=Path, dir_okay=False), required=False)


def fleet_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Options choosing hosts and how to reach them, shared by plan and apply."""
    options = [
        click.option("-H", "--host", "targets", multiple=True, metavar="TARGET",
                     help="Host to reach: local (default), ssh://[user@]host[:port] or user@host[:port]. Repeatable."),
        click.option("-i", "--inventory", type=click.Path(path_type=Path, dir_okay=False), help="Inventory file of hosts."),
        click.option("--limit", multiple=True, metavar="PATTERN", shell_complete=_complete_limit,
                     help="Only inventory hosts or groups matching (glob)."),
        click.option("--forks", type=click.IntRange(1, 500), default=20, show_default=True, help="Hosts handled at once."),
    ]
    for option in reversed(options):
        command = option(command)
    return connection_options(command)


def connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """SSH options, handed to the command as one `options: ConnectOptions`."""

    @functools.wraps(command)
    def wrapper(*, timeout: float, connect_attempts: int | None, become: bool, identity: str | None,
                trust_new_host_keys: bool, ssh_config: str | None, **rest: Any) -> Any:
        options = ConnectOptions(timeout, become, identity, trust_new_host_keys, ssh_config,
                                 interactive=sys.stdin.isatty(), connect_attempts=connect_attempts)
        return command(options=options, **rest)

    options = [
        click.option("--timeout", type=click.FloatRange(0.1), default=10.0, show_default=True, help="SSH connect timeout (s)."),
        click.option("--connect-attempts", type=click.IntRange(1), metavar="N", help=CONNECT_ATTEMPTS_HELP),
        click.option("--become", is_flag=True, help="Run privileged steps through sudo for a non-root SSH user."),
        click.option("--identity", type=click.Path(exists=True, dir_okay=False), help="SSH private key to try first."),
        click.option("--trust-new-host-keys", is_flag=True, help="Accept and record host keys not in known_hosts yet."),
        click.option("--ssh-config", type=click.Path(dir_okay=False), help="SSH config file (default ~/.ssh/config)."),
    ]
    decorated: Callable[..., Any] = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


def report_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--format, --json (short for --format json) and --report, handed on as one `output`."""

    @functools.wraps(command)
    def wrapper(*, as_json: bool, output_format: str | None, report: Path | None, **rest: Any) -> Any:
        if as_json and output_format not in (None, "json"):
            raise click.UsageError("--json is --format json: give one of them")
        return command(output=Output("json" if as_json else output_format or "text", report), **rest)

    from converge.reports import FORMATS

    options = [
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (SPEC section 4): --format json."),
        click.option("--format", "output_format", type=click.Choice(FORMATS), help="Output format (default text)."),
        click.option("--report", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
                     help="Write the report in --format to FILE; the terminal keeps the text view."),
    ]
    decorated: Callable[..., Any] = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


@dataclass(frozen=True)
class Output:
    format: str
    report: Path | None

    @property
    def terminal(self) -> str:
        """What stdout shows: the text view when the report goes to a file."""
        return "text" if self.report else self.format

    def write_report(self, plans: Sequence[HostPlan]) -> None:
        if self.report:
            from converge.reports import RENDERERS

            self.report.write_text(RENDERERS[self.format](plans), encoding="utf-8")
            click.echo(f"wrote the {self.format} report to {self.report}", err=True)

def _complete_providers(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [name for name in Registry().names() if name.startswith(incomplete)]


def _complete_limit(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Host and group names of the inventory given with -i (nothing without one)."""
    inventory = ctx.params.get("inventory")
    if not inventory:
        return []
    try:
        entries = load_inventory(Path(inventory))
    except ConvergeError:
        return []
    names = dict.fromkeys([*(entry.name for entry in entries), *(group for entry in entries for group in entry.groups)])
    return [name for name in names if name.startswith(incomplete)]


only_option = click.option("--only", multiple=True, metavar="PROVIDER", shell_complete=_complete_providers,
                           help="Plan only these providers' tables.")


def _use_color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _jobs(baseline_path: Path | None, targets: Sequence[str], inventory: Path | None, limit: Sequence[str],
          registry: Registry) -> list[Job]:
    """Every host to handle, each with its baseline; a baseline file is loaded once however many use it."""
    if limit and not inventory:
        raise click.UsageError("--limit selects hosts of an inventory (-i)")
    loaded: dict[Path, Baseline] = {}

    def baseline_for(path: Path | None, host: str) -> Baseline:
        if path is None:
            raise click.UsageError(f"no baseline for host {host}: give BASELINE or set one in the inventory")
        key = path.resolve()
        if key not in loaded:
            loaded[key] = load_baseline(path, registry)
        return loaded[key]

    jobs = []
    if inventory:
        for entry in limit_hosts(load_inventory(inventory), limit):
            jobs.append(Job(entry.name, entry.target, baseline_for(entry.baseline or baseline_path, entry.name)))
    for target in targets or (() if inventory else ("local",)):
        jobs.append(Job(None, _checked_target(target), baseline_for(baseline_path, target)))
    return jobs


class _Progress:
    """`planning: 12/20 done, 1 failed` on a terminal's stderr while hosts finish."""

    def __init__(self, verb: str, total: int) -> None:
        self.verb, self.total, self.done, self.failed = verb, total, 0, 0
        self.enabled = total > 1 and sys.stderr.isatty()
        self._lock = threading.Lock()

    def __call__(self, plan: HostPlan) -> None:
        with self._lock:
            self.done += 1
            self.failed += bool(plan.errors)
            if self.enabled:
                click.echo(f"\r\x1b[K{self.verb}: {self.done}/{self.total} done, {self.failed} failed", err=True, nl=False)

    def finish(self) -> None:
        if self.enabled:
            click.echo("\r\x1b[K", err=True, nl=False)


def _check_only(only: Sequence[str], registry: Registry) -> None:
    unknown = [name for name in only if name not in registry]
    if unknown:
        installed = ", ".join(registry.names())
        raise click.BadParameter(f"unknown provider {', '.join(unknown)}; installed: {installed}", param_hint="--only")


def _plan_all(jobs: Sequence[Job], only: Sequence[str], options: ConnectOptions, forks: int,
              registry: Registry, *, lock: LockRequest | None = None) -> list[HostRun]:
    progress = _Progress("planning", len(jobs))
    try:
        return plan_fleet(jobs, registry, only=only, options=options, forks=forks, on_done=progress, lock=lock)
    finally:
        progress.finish()


def savedplan_file(path: Path) -> bool:
    from converge.savedplan import is_saved_plan

    return is_saved_plan(path)


def _recheck_saved(path: Path, options: ConnectOptions, forks: int, registry: Registry, lock: LockRequest) -> list[HostRun]:
    from converge import savedplan

    saved = savedplan.load(path, registry)
    progress = _Progress("re-reading", len(saved.hosts))
    try:
        return savedplan.recheck_fleet(saved, registry, options=options, lock=lock, forks=forks, on_done=progress)
    finally:
        progress.finish()


def _show(plans: Sequence[HostPlan], output_format: str) -> None:
    if output_format == "text":
        color = _use_color()
        click.echo(render_text(plans, color=color), color=color)
    else:
        from converge.reports import RENDERERS

        click.echo(RENDERERS[output_format](plans), nl=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(__version__, prog_name="converge")
def cli(debug: bool) -> None:
    """Declarative hardening: make hosts match a security baseline written in TOML."""


def _with_fleet(command: Callable[..., int]) -> Callable[..., int]:
    """Turn the fleet options into jobs and connect options, and close every host afterwards."""

    @functools.wraps(command)
    def wrapper(*, baseline: Path | None, targets: tuple[str, ...], inventory: Path | None, limit: tuple[str, ...],
                forks: int, options: ConnectOptions, only: tuple[str, ...], **rest: Any) -> int:
        registry = Registry()
        _check_only(only, registry)
        lock_timeout = rest.pop("lock_timeout", None)
        lock = LockRequest(holder_description(), lock_timeout) if lock_timeout is not None else None
        if baseline is not None and lock is not None and savedplan_file(baseline):
            if targets or inventory or limit or only:
                raise click.UsageError("a saved plan names its hosts and providers: give PLANFILE alone")
            runs = _recheck_saved(baseline, options, forks, registry, lock)
        else:
            jobs = _jobs(baseline, targets, inventory, limit, registry)
            runs = _plan_all(jobs, only, options, forks, registry, lock=lock)
        try:
            return command(runs=runs, registry=registry, forks=forks, only=only, **rest)
        finally:
            close_all(runs)

    return wrapper


@cli.command()
@baseline_argument
@fleet_options
@report_options
@only_option
@click.option("-o", "--out", "plan_file", type=click.Path(path_type=Path, dir_okay=False), metavar="PLANFILE",
              help="Also save the plan here, for `converge apply PLANFILE`.")
@_with_fleet
def plan(*, runs: list[HostRun], registry: Registry, forks: int, output: Output, only: tuple[str, ...],
         plan_file: Path | None) -> int:
    """Show what apply would change; change nothing. Exit 0 in sync, 2 changes pending, 1 error."""
    plans = [run.plan for run in runs]
    _show(plans, output.terminal)
    output.write_report(plans)
    if plan_file:
        from converge import savedplan

        savedplan.save(plan_file, runs, only)
        click.echo(f"Saved the plan to {plan_file}; apply exactly it with: converge apply {plan_file}", err=True)
    return plan_exit_code(plans)


@cli.command()
@baseline_or_plan_argument
@fleet_options
@report_options
@only_option
@click.option("--yes", "-y", is_flag=True, help="Apply without asking for confirmation.")
@click.option("--allow-lockout", is_flag=True,
              help="Apply changes that would cut converge's SSH connection (firewall, sshd) anyway.")
@click.option("--confirm-timeout", type=click.FloatRange(1), default=60.0, show_default=True, metavar="SECONDS",
              help="Roll such changes back unless a new SSH connection confirms them within this time.")
@click.option("--lock-timeout", type=click.FloatRange(0), default=0.0, show_default=True, metavar="SECONDS",
              help="Wait this long for another apply's lock on a host instead of refusing at once.")
@_with_fleet
def apply(*, runs: list[HostRun], registry: Registry, forks: int, only: tuple[str, ...], output: Output, yes: bool,
          allow_lockout: bool, confirm_timeout: float) -> int:
    """Plan (or re-check a saved PLANFILE), confirm, apply, then re-read each host and verify it
    converged. Each host is locked from its read to its verification. Exit 0 when all converged."""
    plans = [run.plan for run in runs]
    if output.terminal == "text":
        _show(plans, "text")
    if any(plan.changes for plan in plans if not plan.errors) and not yes:
        if not sys.stdin.isatty():
            raise ConvergeError("not applying: no terminal to confirm on; pass --yes to apply without asking")
        if not click.confirm("Apply these changes?", default=False, err=True):
            click.echo("Nothing applied.", err=True)
            return EXIT_ERROR
    progress = _Progress("applying", len(runs))
    try:
        options = ApplyOptions(allow_lockout, confirm_timeout)
        results = apply_fleet(runs, registry, options=options, forks=forks, on_done=progress)
    finally:
        progress.finish()
    output.write_report(results)
    if output.terminal != "text":
        _show(results, output.terminal)
    else:
        for result in results:
            for line in result.applied:
                click.echo(printable(f"{result.host}: {line}"))
            verdict = "converged" if result.converged else "FAILED: " + "; ".join(result.errors)
            click.echo(printable(f"{result.host}: {verdict}"))
    return EXIT_OK if all(result.converged for result in results) else EXIT_ERROR


@cli.command()
@click.argument("baselines", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
def validate(baselines: tuple[Path, ...]) -> int:
    """Check baselines without contacting any host. Exit 0 when all are valid."""
    registry = Registry()
    status = EXIT_OK
    for path in baselines:
        try:
            loaded = load_baseline(path, registry)
        except ConvergeError as error:
            for line in str(error).splitlines():
                click.echo(f"error: {line}", err=True)
            status = EXIT_ERROR
            continue
        click.echo(f"{path}: valid ({', '.join(loaded.tables) or 'no provider tables'})")
    return status


def _checked_target(target: str) -> str:
    """A malformed target is a usage error, found before any host is contacted."""
    if target != "local":
        from converge.hosts.ssh import SSHTarget

        SSHTarget.parse(target)
    return target


def _connect_one(target: str, options: ConnectOptions) -> Host:
    return connect(_checked_target(target), options)


def _captured_document(target: str, only: Sequence[str], options: ConnectOptions, registry: Registry) -> dict[str, Any]:
    with _connect_one(target, options) as host:
        captured = capture_host(host, registry, only)
    for skipped in captured.skipped:
        click.echo(printable(f"{target}: {skipped.provider}: skipped: {skipped.reason}"), err=True)
    document: dict[str, Any] = {}
    for name, table in captured.tables.items():
        for note in table.notes:
            click.echo(printable(f"{target}: {name}: {note}"), err=True)
        if table.table:
            document[name] = table.table
    return document


@cli.command()
@click.option("-H", "--host", "target", required=True, metavar="TARGET", help="Host to capture.")
@only_option
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write here instead of stdout.")
@connection_options
def capture(*, target: str, only: tuple[str, ...], output: Path | None, options: ConnectOptions) -> int:
    """Write a baseline of a host's current state; planning it against the host exits 0."""
    import tomli_w

    registry = Registry()
    _check_only(only, registry)
    document = _captured_document(target, only, options, registry)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = {"baseline": {"name": f"captured-{target}", "description": f"captured from {target} by converge on {stamp}"}}
    header = f"# Captured from {target} by converge {__version__} on {stamp}.\n"
    text = header + tomli_w.dumps(meta | document, multiline_strings=True)
    if output:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output} ({', '.join(document) or 'nothing captured'})", err=True)
    else:
        click.echo(text, nl=False)
    return EXIT_OK


def _state_of(source: str, only: Sequence[str], options: ConnectOptions, registry: Registry) -> dict[str, Any]:
    """Comparable state of a baseline file or a host: each provider's validated spec as plain data."""
    if Path(source).is_file():
        tables = {name: table.spec for name, table in load_baseline(Path(source), registry).tables.items()}
    else:
        tables = {
            name: registry.get(name).spec_model.model_validate(table)
            for name, table in _captured_document(source, only, options, registry).items()
        }
    return {name: spec.model_dump(mode="json") for name, spec in tables.items() if not only or name in only}


@cli.command()
@click.argument("left")
@click.argument("right")
@only_option
@connection_options
def diff(*, left: str, right: str, only: tuple[str, ...], options: ConnectOptions) -> int:
    """What differs between two hosts' posture, or a baseline and a host. Exit 0 same, 2 different."""
    from converge.diff import describe_difference

    registry = Registry()
    _check_only(only, registry)
    # A baseline declares what it cares about: against a host, only its tables are compared.
    files = [load_baseline(Path(source), registry) for source in (left, right) if Path(source).is_file()]
    if len(files) == 1 and not only:
        only = tuple(files[0].tables)
    states = [_state_of(source, only, options, registry) for source in (left, right)]
    click.echo(f"--- {left}\n+++ {right}")
    differs = False
    for name in dict.fromkeys([*states[0], *states[1]]):
        difference = describe_difference(states[0].get(name), states[1].get(name))
        if difference:
            differs = True
            click.echo(f"{name}")
            click.echo("\n".join(f"  {line}" for line in difference.splitlines()))
    if not differs:
        click.echo("no differences")
    return EXIT_CHANGES if differs else EXIT_OK


@cli.command()
@click.option("--repo", required=True, metavar="URL", help="The git repository of baselines (any URL git fetches).")
@click.option("--ref", default="main", show_default=True, help="The branch or ref to apply.")
@click.option("--inventory", metavar="FILE", help="Inventory in the repository; this host's entry names its baseline.")
@click.option("--baseline", "baseline_path", metavar="PATH", help="Baseline in the repository (instead of --inventory).")
@click.option("--plan/--apply", "plan_only", default=True, help="Only plan (default), or apply.")
@click.option("--allowed-signers", type=click.Path(path_type=Path, dir_okay=False, exists=True), metavar="FILE",
              help="ssh-keygen allowed-signers file: only commits signed by these keys are applied.")
@click.option("--report", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Write the run's JSON record here (the previous ones kept as FILE.1, FILE.2, ...).")
@click.option("--metrics", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Write Prometheus metrics here (node_exporter textfile collector).")
@click.option("--name", help="This host's name in the inventory (default: its host name).")
@click.option("--allow-rewind", is_flag=True, help="Apply a commit that does not descend from the last one applied.")
@click.option("--deploy-key", type=click.Path(path_type=Path, dir_okay=False, exists=True), metavar="PATH",
              help="SSH private key git uses to fetch the repository.")
@click.option("--checkout", type=click.Path(path_type=Path, file_okay=False), default=Path("/var/lib/converge/pull/repo"),
              show_default=True, help="converge's own checkout of the repository.")
def pull(*, repo: str, ref: str, inventory: str | None, baseline_path: str | None, plan_only: bool,
         allowed_signers: Path | None, report: Path | None, metrics: Path | None, name: str | None, allow_rewind: bool,
         deploy_key: Path | None, checkout: Path) -> int:
    """Run on a host: fetch baselines from git, verify the commit's signature, plan or apply this
    host's baseline locally. Exit codes as plan (--plan) and apply (--apply)."""
    from converge.pull import PullOptions, run_pull

    if bool(inventory) == bool(baseline_path):
        raise click.UsageError("give exactly one of --inventory and --baseline")
    options = PullOptions(repo, ref, inventory, baseline_path, not plan_only, allowed_signers, report, metrics, name,
                          allow_rewind, deploy_key, checkout, checkout.parent / "state.json")
    result = run_pull(options, Registry())
    if result.plans:
        _show(result.plans, "text")
    where = f"commit {result.commit[:12]}" if result.commit else repo
    click.echo(f"pull: {result.result} ({where}" + (f", signed by {result.signer})" if result.signer else ")")
               + (f": {result.reason}" if result.reason and result.result in ("refused", "failed") else ""), err=True)
    return result.exit_code


@cli.command()
def schema() -> int:
    """Print a JSON Schema (2020-12) of the baseline format for the installed providers."""
    import json

    from converge.schema import baseline_schema

    click.echo(json.dumps(baseline_schema(Registry()), indent=2))
    return EXIT_OK


@cli.command()
def providers() -> int:
    """List the installed providers."""
    registry = Registry()
    for name in registry.names():
        provider = registry.get(name)
        click.echo(f"{name:<12} {provider.summary}  [{registry.origin(name)}]")
    return EXIT_OK


def _register_suggest() -> None:
    # Defined with the analysis it drives; registered here so `converge --help` lists it.
    from converge.suggest import suggest_command

    cli.add_command(suggest_command)


_register_suggest()


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        code = cli.main(args=args, prog_name="converge", standalone_mode=False)
    except click.ClickException as error:  # usage errors exit 1 here: 2 means "changes pending"
        error.show()
        code = EXIT_ERROR
    except click.Abort:
        click.echo("Aborted.", err=True)
        code = EXIT_ERROR
    except ConvergeError as error:
        if debug:
            raise
        for line in str(error).splitlines():
            click.echo(printable(f"error: {line}"), err=True)
        code = EXIT_ERROR
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        code = 130
    except Exception as error:
        if debug:
            raise
        click.echo(f"internal error: {type(error).__name__}: {error} (run with --debug for a traceback)", err=True)
        code = EXIT_ERROR
    sys.exit(code if isinstance(code, int) else EXIT_OK)
