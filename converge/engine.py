"""Plan and apply one host: gather, diff, apply exactly the planned changes, re-read, verify."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from converge.baseline import Baseline, ProviderTable
from converge.errors import ConvergeError
from converge.hosts import ConnectOptions, Host, connect
from converge.plan import Change, HostPlan, Skipped
from converge.operations import to_json
from converge.provider import Captured, Capturing, ConnectionGuard, Provider, ProviderPlan
from converge.reads import Read
from converge.registry import Registry
from converge.safeguard import Firewall, Watchdog, lockout_problem

# How long after the watchdog fires converge waits for it to record the restore.
ROLLBACK_GRACE_SECONDS = 30.0


@dataclass
class ProviderRun:
    """One provider's part of a host's plan, with the live state it was computed from."""

    provider: Provider
    table: ProviderTable
    live: Any
    plan: ProviderPlan


@dataclass
class HostRun:
    """A host's plan together with what applying it needs (the live state it was made from)."""

    host: Host | None  # None when it could not be reached
    baseline: Baseline
    only: Collection[str]
    plan: HostPlan
    provider_plans: list[ProviderRun] = field(default_factory=list)


@dataclass(frozen=True)
class ApplyOptions:
    allow_lockout: bool = False
    confirm_timeout: float = 60.0


@dataclass(frozen=True)
class Job:
    """One host to converge: its name, how to reach it, and its baseline."""

    name: str | None
    target: str
    baseline: Baseline


def _selected(baseline: Baseline, only: Collection[str]) -> list[tuple[str, ProviderTable]]:
    return [(name, table) for name, table in baseline.tables.items() if not only or name in only]


def plan_host(host: Host, baseline: Baseline, registry: Registry, only: Collection[str] = ()) -> HostRun:
    """Read the host once for every provider of the baseline and diff it; never changes the host."""
    run = HostRun(host, baseline, only, HostPlan(host.name, host.target))
    selected = [(registry.get(name), table) for name, table in _selected(baseline, only)]
    reads: list[Read] = []
    for provider, table in selected:
        reads += [*provider.presence_reads(), *provider.reads(table.spec)]
    try:
        facts = host.gather(reads)
    except ConvergeError as error:
        run.plan.errors.append(str(error))
        return run
    for provider, table in selected:
        try:
            reason = provider.absent(facts)
            if reason:
                if table.required:
                    run.plan.errors.append(f"{provider.name}: required by the baseline, but {reason}")
                else:
                    run.plan.skipped.append(Skipped(provider.name, reason))
                continue
            live = provider.live(table.spec, facts)
            provider_plan = _provider_plan(provider.diff(table.spec, live))
            run.plan.warnings += provider.warnings(table.spec, live)
        except ConvergeError as error:
            run.plan.errors.append(f"{provider.name}: {error}")
            continue
        run.plan.changes += provider_plan.changes
        run.provider_plans.append(ProviderRun(provider, table, live, provider_plan))
    for provider_run in _in_apply_order(run.provider_plans):
        run.plan.operations += [(provider_run.provider.name, to_json(op)) for op in provider_run.plan.operations]
    return run


def _provider_plan(result: ProviderPlan | list[Change]) -> ProviderPlan:
    # TRANSITIONAL: providers not yet converted return bare changes (removed once all are).
    if isinstance(result, ProviderPlan):
        return result
    legacy = ProviderPlan(list(result), [])
    legacy.legacy = True  # type: ignore[attr-defined]
    return legacy


def _in_apply_order(provider_runs: Sequence[ProviderRun]) -> list[ProviderRun]:
    return sorted(provider_runs, key=lambda p: p.provider.apply_order)


def apply_host(run: HostRun, registry: Registry, options: ApplyOptions = ApplyOptions()) -> HostPlan:
    """Apply a planned host, then re-read it and record whether it converged.

    A host whose plan failed is not touched. The first provider that fails stops the host:
    later providers may rely on what it was to do. Firewall changes over a connection are checked
    for lockout and applied under a commit-confirm watchdog.
    """
    plan = run.plan
    if plan.errors or run.host is None:
        plan.converged = False
        return plan
    if not plan.changes:
        plan.converged = True  # the plan was just read; nothing to re-read
        return plan
    host = run.host
    pending = [p for p in _in_apply_order(run.provider_plans) if p.plan.changes or p.plan.operations]
    firewalls = [p for p in pending if isinstance(p.provider, Firewall)]
    watchdog = None
    try:
        endpoint = host.connection_endpoint() if firewalls else None
        if endpoint and not options.allow_lockout:
            for provider_plan in firewalls:
                problem = lockout_problem(provider_plan.provider, provider_plan.table.spec, provider_plan.live, endpoint)
                if problem:
                    raise ConvergeError(f"{provider_plan.provider.name}: {problem}")
        for provider_plan in pending:
            provider = provider_plan.provider
            if endpoint and watchdog is None and provider_plan in firewalls:
                watchdog = Watchdog(host, [p.provider for p in firewalls], options.confirm_timeout)
                watchdog.arm()
                armed_at = time.monotonic()
            try:
                if not getattr(provider_plan.plan, "legacy", False):
                    done = provider.apply(host, provider_plan.plan)
                else:  # TRANSITIONAL: an unconverted provider
                    done = provider.apply(host, provider_plan.table.spec, provider_plan.live,  # type: ignore[call-arg]
                                          provider_plan.plan.changes)
            except ConvergeError as error:
                if watchdog:
                    watchdog.roll_back_now()
                    plan.applied.append("firewall: previous state restored")
                raise ConvergeError(f"{provider.name}: apply failed: {error}") from error
            plan.applied += [f"{provider.name}: {line}" for line in done]
    except ConvergeError as error:
        plan.errors.append(str(error))
        plan.converged = False
        return plan
    if watchdog and not _confirmed(watchdog, plan, armed_at):
        plan.converged = False
        return plan
    after = plan_host(host, run.baseline, registry, run.only).plan
    plan.errors += [f"after apply: {error}" for error in after.errors]
    if after.changes:
        still = ", ".join(f"{change.provider} {change.resource}" for change in after.changes)
        plan.errors.append(f"did not converge; still differing: {still}")
    plan.converged = not plan.errors
    return plan


def _confirmed(watchdog: Watchdog, plan: HostPlan, armed_at: float) -> bool:
    """Confirm over a new connection; if that fails, wait for the rollback and check the host is back."""
    try:
        watchdog.confirm()
    except ConvergeError as error:
        plan.errors.append(
            f"a new connection failed after the firewall change ({error}); the host restores its previous "
            f"firewall state {watchdog.timeout:g} s after the change"
        )
        time.sleep(max(0.0, armed_at + watchdog.timeout - time.monotonic()))
        # The restore itself takes a moment (a firewall reload): poll until it is recorded.
        deadline = time.monotonic() + ROLLBACK_GRACE_SECONDS
        last_error: ConvergeError | None = None
        while time.monotonic() < deadline:
            try:
                if watchdog.rolled_back():
                    plan.errors.append("rolled back: the host is reachable again")
                    return False
            except ConvergeError as again:
                last_error = again
            time.sleep(1.0)
        plan.errors.append(f"no rollback recorded {ROLLBACK_GRACE_SECONDS:g} s after it was due"
                           + (f"; still unreachable: {last_error}" if last_error else ""))
        return False
    plan.applied.append("firewall: confirmed over a new connection; rollback disarmed")
    return True


def _in_parallel(items: Sequence[Any], work: Callable[[Any], Any], forks: int) -> list[Any]:
    if len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(items)))) as pool:
        return list(pool.map(work, items))


def plan_fleet(
    jobs: Sequence[Job], registry: Registry, *, only: Collection[str] = (), options: ConnectOptions = ConnectOptions(),
    forks: int = 20, on_done: Callable[[HostPlan], None] | None = None,
) -> list[HostRun]:
    """Connect to and plan every host, `forks` at a time; one host's failure never stops another."""

    def plan_one(job: Job) -> HostRun:
        try:
            host = connect(job.target, options, name=job.name)
        except ConvergeError as error:
            run = HostRun(None, job.baseline, only, HostPlan(job.name or job.target, job.target, errors=[str(error)]))
        else:
            try:
                run = plan_host(host, job.baseline, registry, only)
            except Exception as error:  # a provider bug on one host must not stop the fleet
                run = HostRun(host, job.baseline, only, HostPlan(host.name, host.target))
                run.plan.errors.append(f"internal error: {type(error).__name__}: {error}")
        if on_done:
            on_done(run.plan)
        return run

    return _in_parallel(jobs, plan_one, forks)


def apply_fleet(
    runs: Sequence[HostRun], registry: Registry, *, options: ApplyOptions = ApplyOptions(), forks: int = 20,
    on_done: Callable[[HostPlan], None] | None = None,
) -> list[HostPlan]:
    def apply_one(run: HostRun) -> HostPlan:
        try:
            plan = apply_host(run, registry, options)
        except Exception as error:
            run.plan.errors.append(f"internal error: {type(error).__name__}: {error}")
            run.plan.converged = False
            plan = run.plan
        if on_done:
            on_done(plan)
        return plan

    return _in_parallel(runs, apply_one, forks)


def close_all(runs: Sequence[HostRun]) -> None:
    for run in runs:
        if run.host is not None:
            run.host.close()


@dataclass
class HostCapture:
    """A host's state as baseline tables, one per provider that can capture it."""

    tables: dict[str, Captured] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)


def capture_host(host: Host, registry: Registry, only: Collection[str] = ()) -> HostCapture:
    """Read a host's state for every installed provider that can capture (two rounds at most)."""
    result = HostCapture()
    providers = []
    for name in registry.names():
        if only and name not in only:
            continue
        provider = registry.get(name)
        if isinstance(provider, Capturing):
            providers.append(provider)
        else:
            result.skipped.append(Skipped(name, "this provider cannot capture"))
    facts = host.gather([read for p in providers for read in (*p.presence_reads(), *p.capture_reads())])
    present = []
    for provider in providers:
        reason = provider.absent(facts)
        if reason:
            result.skipped.append(Skipped(provider.name, reason))
        else:
            present.append(provider)
    more = [read for provider in present for read in provider.capture_more_reads(facts)]
    if more:
        facts = facts.merged(host.gather(more))
    for provider in present:
        result.tables[provider.name] = provider.capture(facts)
    # A baseline may not hold two providers of one subsystem (ufw and firewalld): which one the
    # host really uses is for the user to say, with --only.
    for provider in present:
        for other in provider.conflicts:
            if provider.name < other and {provider.name, other} <= result.tables.keys():
                for name in (provider.name, other):
                    del result.tables[name]
                    result.skipped.append(Skipped(name, f"both {provider.name} and {other} are installed; "
                                                        f"capture the one in use with --only"))
    return result
