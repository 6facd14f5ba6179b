"""Plan and apply hosts: gather, diff, apply exactly the planned operations, re-read, verify.

A host's run reads like its jobs: `plan_host` (one batch of reads, every provider's plan),
`check_lockout` (refuse what would cut converge off), `apply_operations` (each provider's plan in
apply order, guarded ones under a watchdog), `verify` (read again, compare with the baseline).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from converge.baseline import Baseline, ProviderTable
from converge.errors import ConvergeError
from converge.hosts import Connection, ConnectOptions, Host, connect
from converge.operations import from_json, to_json
from converge.plan import Change, HostPlan, NotApplicable, Skipped
from converge.provider import Captured, Capturing, ConnectionGuard, Provider, ProviderPlan
from converge.reads import Facts, Read, describe_read
from converge.registry import Registry
from converge.safeguard import Watchdog, lockout_problem

# How long after the watchdog fires converge waits for it to record the restore.
ROLLBACK_GRACE_SECONDS = 30.0


@dataclass
class ProviderRun:
    """One provider's part of a host's plan, with the live state it was computed from."""

    provider: Provider[Any, Any]
    table: ProviderTable
    live: Any
    plan: ProviderPlan


@dataclass
class HostRun:
    """A host's plan together with what applying it needs: the live state and the reads it came from."""

    host: Host | None  # None when it could not be reached
    baseline: Baseline
    only: Collection[str]
    plan: HostPlan
    provider_plans: list[ProviderRun] = field(default_factory=list)
    facts: Facts | None = None


@dataclass(frozen=True)
class ApplyOptions:
    allow_lockout: bool = False
    confirm_timeout: float = 60.0


@dataclass(frozen=True)
class LockRequest:
    """Take each host's apply lock before reading it (apply); `wait` seconds for another holder."""

    holder: str
    wait: float = 0.0


@dataclass(frozen=True)
class Job:
    """One host to converge: its name, how to reach it, and its baseline."""

    name: str | None
    target: str
    baseline: Baseline


def _selected(baseline: Baseline, only: Collection[str]) -> list[tuple[str, ProviderTable]]:
    return [(name, table) for name, table in baseline.tables.items() if not only or name in only]


def _in_apply_order(provider_runs: Sequence[ProviderRun]) -> list[ProviderRun]:
    return sorted(provider_runs, key=lambda p: p.provider.apply_order)


def host_reads(baseline: Baseline, registry: Registry, only: Collection[str] = ()) -> list[Read]:
    """Every read a plan of `baseline` gathers, presence reads included."""
    reads: list[Read] = []
    for name, table in _selected(baseline, only):
        provider = registry.get(name)
        reads += [*provider.presence_reads(), *provider.reads(table.spec)]
    return list(dict.fromkeys(reads))


def new_host_plan(name: str, target: str, baseline: Baseline, only: Collection[str] = ()) -> HostPlan:
    return HostPlan(name, target, providers=[name for name, _ in _selected(baseline, only)],
                    baseline=(baseline.name, baseline.digest))


def plan_host(host: Host, baseline: Baseline, registry: Registry, only: Collection[str] = ()) -> HostRun:
    """Read the host once for every provider of the baseline and diff it; never changes the host."""
    run = HostRun(host, baseline, only, new_host_plan(host.name, host.target, baseline, only))
    try:
        facts = host.gather(host_reads(baseline, registry, only))
    except ConvergeError as error:
        run.plan.errors.append(str(error))
        return run
    return plan_from_facts(run, facts, registry)


def plan_from_facts(run: HostRun, facts: Facts, registry: Registry) -> HostRun:
    run.facts = facts
    for name, table in _selected(run.baseline, run.only):
        provider = registry.get(name)
        try:
            reason = provider.absent(facts)
            if reason:
                if table.required:
                    run.plan.errors.append(f"{provider.name}: required by the baseline, but {reason}")
                else:
                    run.plan.skipped.append(Skipped(provider.name, reason))
                continue
            live = provider.live(table.spec, facts)
            provider_plan = provider.diff(table.spec, live)
            run.plan.warnings += provider.warnings(table.spec, live)
            for resource, why in provider.not_applicable(table.spec, live).items():
                if table.required:
                    run.plan.errors.append(f"{provider.name}: required by the baseline, but {resource}: {why}")
                else:
                    run.plan.not_applicable.append(NotApplicable(provider.name, resource, why))
        except ConvergeError as error:
            run.plan.errors.append(f"{provider.name}: {error}")
            continue
        run.plan.changes += provider_plan.changes
        run.provider_plans.append(ProviderRun(provider, table, live, provider_plan))
    for provider_run in _in_apply_order(run.provider_plans):
        run.plan.operations += [(provider_run.provider.name, to_json(op)) for op in provider_run.plan.operations]
    return run


def changed_reads(facts: Facts, fingerprints: dict[Read, str]) -> list[str]:
    """The reads whose answers differ from `fingerprints` (a saved plan's), as people name them."""
    return [describe_read(read) for read, digest in fingerprints.items() if facts.fingerprint(read) != digest]


def replan_saved(run: HostRun, facts: Facts, registry: Registry, saved: dict[str, tuple[list[Change], list[dict[str, Any]]]]
                 ) -> HostRun:
    """A host run from a saved plan, re-read under the lock (`facts`, equal to the plan's): the
    providers' live state comes from these reads, and their plans are exactly the saved ones."""
    run.facts = facts
    for name, table in _selected(run.baseline, run.only):
        if name not in saved:
            continue
        provider = registry.get(name)
        changes, operations = saved[name]
        live = provider.live(table.spec, facts)
        run.provider_plans.append(ProviderRun(provider, table, live, ProviderPlan(changes, [from_json(op) for op in operations])))
        run.plan.changes += changes
    for provider_run in _in_apply_order(run.provider_plans):
        run.plan.operations += [(provider_run.provider.name, to_json(op)) for op in provider_run.plan.operations]
    return run


def check_lockout(pending: Sequence[ProviderRun], connection: Connection | None) -> None:
    """Refuse a guarded change that would cut converge's own connection to the host."""
    for provider_run in (p for p in pending if isinstance(p.provider, ConnectionGuard)):
        assert isinstance(provider_run.provider, ConnectionGuard)
        problem = lockout_problem(provider_run.provider, provider_run.table.spec, provider_run.live, connection)
        if problem:
            raise ConvergeError(f"{provider_run.provider.name}: {problem}")


def apply_operations(run: HostRun, pending: Sequence[ProviderRun], options: ApplyOptions, *, remote: bool) -> bool:
    """Apply each provider's plan in order; the first that fails stops the host (later providers
    may rely on it). Over a connection (`remote`), a guarded provider applies under its own watchdog,
    confirmed right after it, before any slower provider runs on the watchdog's clock. False: rolled back."""
    assert run.host is not None
    host, plan = run.host, run.plan
    for provider_run in pending:
        provider = provider_run.provider
        watchdog = None
        if remote and isinstance(provider, ConnectionGuard):
            watchdog = Watchdog(host, provider, options.confirm_timeout, provider.name)
            watchdog.arm()
        try:
            done = provider.apply(host, provider_run.plan)
        except ConvergeError as error:
            if watchdog:
                watchdog.roll_back_now()
                plan.applied.append(f"{provider.name}: previous state restored")
            raise ConvergeError(f"{provider.name}: apply failed: {error}") from error
        plan.applied += [f"{provider.name}: {line}" for line in done]
        if watchdog and not _confirmed(watchdog, plan, provider.name):
            return False
    return True


def verify(run: HostRun, registry: Registry) -> None:
    """Read the host again: converged when a new plan has no changes."""
    assert run.host is not None
    after = plan_host(run.host, run.baseline, registry, run.only).plan
    run.plan.errors += [f"after apply: {error}" for error in after.errors]
    if after.changes:
        still = ", ".join(f"{change.provider} {change.resource}" for change in after.changes)
        run.plan.errors.append(f"did not converge; still differing: {still}")


def apply_host(run: HostRun, registry: Registry, options: ApplyOptions = ApplyOptions()) -> HostPlan:
    """Apply a planned host, then re-read it and record whether it converged. A host whose plan
    failed is not touched."""
    plan = run.plan
    if plan.errors or run.host is None:
        plan.converged = False
        return plan
    pending = [p for p in _in_apply_order(run.provider_plans) if p.plan.operations]
    if not pending:
        plan.converged = not plan.changes  # the plan was just read; nothing to re-read
        if plan.changes:
            plan.errors.append("changes planned but no operation to carry them out")
        return plan
    try:
        # Asked of the host once (a round trip over SSH), and only when a guarded provider applies.
        guarded = any(isinstance(p.provider, ConnectionGuard) for p in pending)
        connection = run.host.connection() if guarded else None
        if not options.allow_lockout:
            check_lockout(pending, connection)
        if not apply_operations(run, pending, options, remote=connection is not None):
            plan.converged = False
            return plan
    except ConvergeError as error:
        plan.errors.append(str(error))
        plan.converged = False
        return plan
    verify(run, registry)
    plan.converged = not plan.errors
    return plan


def _confirmed(watchdog: Watchdog, plan: HostPlan, name: str) -> bool:
    """Confirm over a new connection; if that fails, wait for the rollback and check the host is back."""
    try:
        if watchdog.confirm():
            plan.applied.append(f"{name}: confirmed over a new connection; the watchdog is disarmed")
            return True
        plan.errors.append(f"{name}: the watchdog began restoring the previous state before the confirmation "
                           f"arrived (--confirm-timeout {watchdog.timeout:g} s)")
    except ConvergeError as error:
        plan.errors.append(
            f"{name}: a new connection failed after the change ({error}); the host restores its previous "
            f"state {watchdog.timeout:g} s after the change"
        )
        time.sleep(watchdog.due_in())
    # The restore itself takes a moment (the reactivation commands): poll until it is recorded.
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


def in_parallel(items: Sequence[Any], work: Callable[[Any], Any], forks: int) -> list[Any]:
    if len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(items)))) as pool:
        return list(pool.map(work, items))


def plan_fleet(
    jobs: Sequence[Job], registry: Registry, *, only: Collection[str] = (), options: ConnectOptions = ConnectOptions(),
    forks: int = 20, on_done: Callable[[HostPlan], None] | None = None, lock: LockRequest | None = None,
) -> list[HostRun]:
    """Connect to and plan every host, `forks` at a time; one host's failure never stops another.
    With `lock`, each host's apply lock is taken before it is read, and held until it is closed."""

    def plan_one(job: Job) -> HostRun:
        try:
            host = connect(job.target, options, name=job.name)
        except ConvergeError as error:
            run = HostRun(None, job.baseline, only, new_host_plan(job.name or job.target, job.target, job.baseline, only))
            run.plan.errors.append(str(error))
        else:
            try:
                if lock:
                    host.lock(lock.holder, lock.wait)
                run = plan_host(host, job.baseline, registry, only)
            except ConvergeError as error:
                run = HostRun(host, job.baseline, only, new_host_plan(host.name, host.target, job.baseline, only))
                run.plan.errors.append(str(error))
            except Exception as error:  # a provider bug on one host must not stop the fleet
                run = HostRun(host, job.baseline, only, new_host_plan(host.name, host.target, job.baseline, only))
                run.plan.errors.append(f"internal error: {type(error).__name__}: {error}")
        if on_done:
            on_done(run.plan)
        return run

    return in_parallel(jobs, plan_one, forks)


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

    return in_parallel(runs, apply_one, forks)


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
    # A baseline may not hold two providers of one subsystem (ufw and firewalld): keep the one the
    # host uses; when that cannot be told, it is for the user to say, with --only.
    for provider in present:
        for other in provider.conflicts:
            if provider.name < other and {provider.name, other} <= result.tables.keys():
                pair = (provider.name, other)
                in_use = [name for name in pair if result.tables[name].active]
                if len(in_use) == 1:
                    unused = next(name for name in pair if name != in_use[0])
                    del result.tables[unused]
                    result.skipped.append(Skipped(unused, f"installed but not in use (the host uses {in_use[0]})"))
                    continue
                for name in pair:
                    del result.tables[name]
                    result.skipped.append(Skipped(name, f"both {provider.name} and {other} are installed"
                                                        f"{' and in use' if in_use else ''}; "
                                                        f"capture the one you mean with --only"))
    return result
