"""The command line: wiring only. Exit codes are those of SPEC section 3."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from converge import __version__
from converge.baseline import Baseline, load_baseline
from converge.engine import HostRun, apply_host, plan_host
from converge.errors import ConvergeError
from converge.hosts import connect
from converge.plan import HostPlan, plan_exit_code, render_json, render_text
from converge.registry import Registry

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2

baseline_argument = click.argument("baseline", type=click.Path(path_type=Path, dir_okay=False), required=False)
host_option = click.option(
    "-H", "--host", "targets", multiple=True, metavar="TARGET", help="Host to reach: local (default), ssh://[user@]host[:port]."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (SPEC section 4).")
only_option = click.option("--only", multiple=True, metavar="PROVIDER", help="Plan only these providers' tables.")


def _use_color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _load(baseline: Path | None, registry: Registry) -> Baseline:
    if baseline is None:
        raise click.UsageError("a BASELINE file is required")
    return load_baseline(baseline, registry)


def _check_only(only: Sequence[str], registry: Registry) -> None:
    unknown = [name for name in only if name not in registry]
    if unknown:
        installed = ", ".join(registry.names())
        raise click.BadParameter(f"unknown provider {', '.join(unknown)}; installed: {installed}", param_hint="--only")


def _plan_all(baseline: Baseline, targets: Sequence[str], only: Sequence[str], registry: Registry) -> list[HostRun]:
    runs = []
    for target in targets or ("local",):
        host = connect(target)
        runs.append(plan_host(host, baseline, registry, only))
    return runs


def _show(plans: Sequence[HostPlan], as_json: bool) -> None:
    if as_json:
        click.echo(render_json(plans))
    else:
        color = _use_color()
        click.echo(render_text(plans, color=color), color=color)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(__version__, prog_name="converge")
def cli(debug: bool) -> None:
    """Declarative hardening: make hosts match a security baseline written in TOML."""


@cli.command()
@baseline_argument
@host_option
@json_option
@only_option
def plan(baseline: Path | None, targets: tuple[str, ...], as_json: bool, only: tuple[str, ...]) -> int:
    """Show what apply would change; change nothing. Exit 0 in sync, 2 changes pending, 1 error."""
    registry = Registry()
    _check_only(only, registry)
    runs = _plan_all(_load(baseline, registry), targets, only, registry)
    plans = [run.plan for run in runs]
    _show(plans, as_json)
    return plan_exit_code(plans)


@cli.command()
@baseline_argument
@host_option
@json_option
@only_option
@click.option("--yes", "-y", is_flag=True, help="Apply without asking for confirmation.")
def apply(baseline: Path | None, targets: tuple[str, ...], as_json: bool, only: tuple[str, ...], yes: bool) -> int:
    """Plan, confirm, apply, then re-read each host and verify it converged. Exit 0 when all did."""
    registry = Registry()
    _check_only(only, registry)
    runs = _plan_all(_load(baseline, registry), targets, only, registry)
    plans = [run.plan for run in runs]
    if not as_json:
        _show(plans, as_json=False)
    if any(plan.changes for plan in plans if not plan.errors) and not yes:
        if not sys.stdin.isatty():
            raise ConvergeError("not applying: no terminal to confirm on; pass --yes to apply without asking")
        if not click.confirm("Apply these changes?", default=False, err=True):
            click.echo("Nothing applied.", err=True)
            return EXIT_ERROR
    results = [apply_host(run, registry) for run in runs]
    if as_json:
        click.echo(render_json(results))
    else:
        for result in results:
            for line in result.applied:
                click.echo(f"{result.host}: {line}")
            verdict = "converged" if result.converged else "FAILED: " + "; ".join(result.errors)
            click.echo(f"{result.host}: {verdict}")
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


@cli.command()
def providers() -> int:
    """List the installed providers."""
    registry = Registry()
    for name in registry.names():
        provider = registry.get(name)
        click.echo(f"{name:<12} {provider.summary}  [{registry.origin(name)}]")
    return EXIT_OK


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
            click.echo(f"error: {line}", err=True)
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
