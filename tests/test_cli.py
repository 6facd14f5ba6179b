"""The command line as users and their scripts see it: exit codes, streams, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def converge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "converge", *args], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, **(env or {})}, check=False,
    )


def test_providers_lists_the_built_in_providers_from_entry_points() -> None:
    result = converge("providers")
    assert result.returncode == 0
    assert any(line.startswith("sysctl ") for line in result.stdout.splitlines())  # sorted, among the others
    assert "converge.providers.sysctl:SysctlProvider" in result.stdout


def test_validate_accepts_every_shipped_baseline() -> None:
    shipped = sorted(str(path) for path in (ROOT / "baselines").rglob("*.toml"))
    result = converge("validate", *shipped)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": valid (") == len(shipped)


def test_usage_errors_exit_1_not_2() -> None:
    # 2 means "changes pending" to scripts; a typo on the command line must not look like it.
    assert converge("plan", "--bogus").returncode == 1
    assert converge("plan").returncode == 1
    only = converge("plan", "baselines/common/kernel.toml", "--only", "sysctll")
    assert only.returncode == 1 and "unknown provider sysctll" in only.stderr


def test_unsupported_target_is_one_line_on_stderr() -> None:
    result = converge("plan", "baselines/common/kernel.toml", "-H", "telnet://web1")
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "telnet://web1" in result.stderr


def test_missing_baseline_file() -> None:
    result = converge("validate", "no/such/baseline.toml")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: no/such/baseline.toml: no such file"
