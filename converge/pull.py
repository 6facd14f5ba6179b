"""Pull mode: a host fetches its baselines from git, checks who signed them, and converges itself.

Run on the host (by a systemd timer, `contrib/systemd/`): git distributes the baselines, SSH
signatures decide what may be applied (`git verify-commit` against an allowed-signers file), and the
outcome goes to a JSON record and to Prometheus metrics for node_exporter's textfile collector. The
plan or apply itself is exactly `converge plan/apply -H local`: the same engine, lock and verification.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from converge.baseline import load_baseline
from converge.engine import ApplyOptions, Job, LockRequest, apply_fleet, close_all, plan_fleet
from converge.errors import ConvergeError
from converge.hosts.lock import holder_description
from converge.inventory import load_inventory
from converge.plan import HostPlan, plan_exit_code, render_json
from converge.registry import Registry

CHECKOUT = "/var/lib/converge/pull/repo"
STATE = "/var/lib/converge/pull/state.json"
KEEP_REPORTS = 10


class PullRefusedError(ConvergeError):
    """A commit (or a repository) that must not be applied; nothing was."""


@dataclass
class PullOptions:
    repo: str
    ref: str = "main"
    inventory: str | None = None
    baseline: str | None = None
    apply: bool = False
    allowed_signers: Path | None = None
    report: Path | None = None
    metrics: Path | None = None
    name: str | None = None
    allow_rewind: bool = False
    deploy_key: Path | None = None
    checkout: Path = Path(CHECKOUT)
    state: Path = Path(STATE)


@dataclass
class PullResult:
    exit_code: int
    result: str  # converged | in-sync | changes | failed | refused
    reason: str | None = None
    commit: str | None = None
    signer: str | None = None
    plans: list[HostPlan] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    duration: float = 0.0


def _git(options: PullOptions, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    if options.deploy_key:
        env["GIT_SSH_COMMAND"] = f"ssh -i {shlex.quote(str(options.deploy_key))} -o IdentitiesOnly=yes -o BatchMode=yes"
    return subprocess.run(["git", "-C", str(options.checkout), *args], capture_output=True, text=True, env=env, check=False)


def _checked(result: subprocess.CompletedProcess[str], what: str) -> str:
    if result.returncode != 0:
        reason = " / ".join(line.strip() for line in result.stderr.splitlines() if line.strip())[-400:]
        raise ConvergeError(f"{what} failed: {reason or f'exit status {result.returncode}'}")
    return result.stdout.strip()


def fetch(options: PullOptions) -> str:
    """Fetch `ref` of the repository into converge's own checkout; the fetched commit's id."""
    options.checkout.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (options.checkout / ".git").exists():
        _checked(_git(options, "init", "-q"), "git init")
    _checked(_git(options, "fetch", "-q", "--no-tags", options.repo, options.ref), f"git fetch {options.repo} {options.ref}")
    return _checked(_git(options, "rev-parse", "FETCH_HEAD^{commit}"), "git rev-parse")


_SIGNER = re.compile(r'Good "git" signature for (?P<principal>\S+) with (?P<key>\S+ key \S+)')


def verify(options: PullOptions, commit: str, last: str | None) -> str:
    """The signer of `commit`, or PullRefusedError: unsigned, signed by a key not allowed, or going
    backwards from the last commit applied."""
    if options.allowed_signers is None:
        raise PullRefusedError("no --allowed-signers: pull applies only commits signed by a key listed there")
    result = _git(options, "-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={options.allowed_signers}",
                  "verify-commit", "--raw", commit)
    match = _SIGNER.search(result.stderr)
    if result.returncode != 0 or not match:
        words = " / ".join(line.strip() for line in result.stderr.splitlines() if line.strip()) or "no signature"
        raise PullRefusedError(f"commit {commit[:12]} is not signed by an allowed signer ({words[:300]})")
    if last and last != commit and not options.allow_rewind:
        ancestor = _git(options, "merge-base", "--is-ancestor", last, commit)
        if ancestor.returncode != 0:
            raise PullRefusedError(f"commit {commit[:12]} does not descend from {last[:12]}, the last one applied: the ref was "
                              "rewound or rewritten (pass --allow-rewind if that is intended)")
    return f"{match['principal']} ({match['key']})"


def check_out(options: PullOptions, commit: str) -> Path:
    _checked(_git(options, "checkout", "-q", "--force", "--detach", commit), "git checkout")
    _checked(_git(options, "clean", "-q", "-fdx"), "git clean")
    return options.checkout


def choose_baseline(options: PullOptions, tree: Path) -> tuple[str, Path]:
    """This host's name and baseline: from the inventory by name (or --name), or --baseline."""
    name = options.name or socket.gethostname()
    if options.baseline:
        return name, tree / options.baseline
    assert options.inventory is not None
    entries = load_inventory(tree / options.inventory)
    short = name.split(".")[0]
    entry = next((e for e in entries if e.name == name), None) or next((e for e in entries if e.name == short), None)
    if entry is None:
        raise PullRefusedError(f"host {name} is not in {options.inventory} (give its inventory name with --name)")
    if entry.baseline is None:
        raise PullRefusedError(f"host {name} has no baseline in {options.inventory}")
    return name, entry.baseline


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError:
        Path(temporary).unlink(missing_ok=True)
        raise


def run_pull(options: PullOptions, registry: Registry) -> PullResult:
    """Fetch, verify, choose, plan or apply; never raises for a refused or failed run."""
    result = PullResult(1, "failed")
    state = _load_state(options.state)
    try:
        result.commit = fetch(options)
        result.signer = verify(options, result.commit, state.get("last_applied"))
        tree = check_out(options, result.commit)
        name, baseline_path = choose_baseline(options, tree)
        baseline = load_baseline(baseline_path, registry)
        _converge(options, registry, result, name, baseline)
    except PullRefusedError as refused:
        result.exit_code, result.result, result.reason = 1, "refused", str(refused)
    except ConvergeError as error:
        result.exit_code, result.result, result.reason = 1, "failed", str(error)
    result.duration = time.time() - result.started
    if result.result == "converged" or (result.result == "in-sync" and options.apply):
        state["last_applied"] = result.commit
    state["last_good"] = result.commit if result.result != "refused" else state.get("last_good")
    _atomic_write(options.state, json.dumps(state, indent=1) + "\n", 0o600)
    if options.report:
        write_report(options.report, result)
    if options.metrics:
        _atomic_write(options.metrics, metrics_text(result))
    return result


def _converge(options: PullOptions, registry: Registry, result: PullResult, name: str, baseline: Any) -> None:
    lock = LockRequest(holder_description(), 0.0) if options.apply else None
    runs = plan_fleet([Job(name, "local", baseline)], registry, lock=lock)
    try:
        plans = [run.plan for run in runs]
        if options.apply and not any(plan.errors for plan in plans):
            plans = apply_fleet(runs, registry, options=ApplyOptions())
            converged = all(plan.converged for plan in plans)
            had_changes = any(plan.applied for plan in plans)
            result.exit_code = 0 if converged else 1
            result.result = ("converged" if had_changes else "in-sync") if converged else "failed"
        else:
            result.exit_code = plan_exit_code(plans)
            result.result = {0: "in-sync", 2: "changes"}.get(result.exit_code, "failed")
        result.plans = plans
        errors = [error for plan in plans for error in plan.errors]
        result.reason = "; ".join(errors) or None
    finally:
        close_all(runs)


def write_report(path: Path, result: PullResult) -> None:
    """The run as SPEC section 4 JSON plus the commit, signer and time; the last KEEP_REPORTS kept
    as PATH.1 ... PATH.N (newest first)."""
    document = json.loads(render_json(result.plans)) if result.plans else {"hosts": [], "summary": {}}
    document["pull"] = {
        "result": result.result, "reason": result.reason, "commit": result.commit, "signer": result.signer,
        "time": datetime.fromtimestamp(result.started, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_seconds": round(result.duration, 3),
    }
    for index in range(KEEP_REPORTS - 1, 0, -1):
        newer = path if index == 1 else path.with_name(f"{path.name}.{index - 1}")
        if newer.exists():
            os.replace(newer, path.with_name(f"{path.name}.{index}"))
    _atomic_write(path, json.dumps(document, indent=1) + "\n")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def metrics_text(result: PullResult) -> str:
    """Prometheus text exposition format, for node_exporter's textfile collector."""
    pending: dict[str, int] = {}
    failed: set[str] = set()
    for plan in result.plans:
        for change in plan.changes:
            pending[change.provider] = pending.get(change.provider, 0) + (0 if plan.converged else 1)
        for provider in plan.providers:
            pending.setdefault(provider, 0)
            if any(error.startswith(f"{provider}:") or f": {provider}: " in error for error in plan.errors):
                failed.add(provider)
    converged = int(result.result in ("converged", "in-sync"))
    lines: list[str] = []

    def metric(name: str, kind: str, text: str, samples: Sequence[tuple[str, float]]) -> None:
        lines.extend([f"# HELP {name} {text}", f"# TYPE {name} {kind}"])
        # repr keeps every digit a Unix time has (`:g` would print 1.79617e+09).
        lines.extend(f"{name}{labels} {int(value) if float(value).is_integer() else repr(float(value))}"
                     for labels, value in samples)

    metric("converge_last_run_timestamp_seconds", "gauge", "When the last pull run started (Unix time).",
           [("", round(result.started, 3))])
    metric("converge_last_run_duration_seconds", "gauge", "How long the last pull run took.", [("", round(result.duration, 3))])
    metric("converge_converged", "gauge", "1 when the host is in sync with its signed baseline after the last run.",
           [("", converged)])
    results = ("converged", "in-sync", "changes", "failed", "refused")
    metric("converge_last_run_result", "gauge", "The outcome of the last run (1 for the one it had).",
           [(f'{{result="{name}"}}', int(result.result == name)) for name in results])
    metric("converge_changes_pending", "gauge", "Changes the last run left pending, per provider.",
           [(f'{{provider="{_label(name)}"}}', count) for name, count in sorted(pending.items())])
    metric("converge_provider_failed", "gauge", "1 for a provider that failed in the last run.",
           [(f'{{provider="{_label(name)}"}}', int(name in failed)) for name in sorted(pending)])
    info = f'{{commit="{_label(result.commit or "")}",signer="{_label(result.signer or "")}",' \
           f'reason="{_label((result.reason or "")[:200])}"}}'
    metric("converge_last_run_info", "gauge", "The commit and signer of the last run, and why it failed.", [(info, 1)])
    return "\n".join(lines) + "\n"
