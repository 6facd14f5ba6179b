"""A corpus of broken baselines, one mistake each: every one is refused with the file, line and
key of the mistake, exit 1, no traceback, and leaves the host exactly as it was."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testhost import TestHost

CORPUS = Path(__file__).parent / "bad_baselines"
EXPECT = re.compile(r"# expect:(?: file=(?P<file>\S+))? line=(?P<line>\d+) key=(?P<key>.+)")
WATCHED_SYSCTLS = ("kernel.kptr_restrict", "kernel.dmesg_restrict", "net.ipv4.ip_forward", "kernel.hostname")


def _cases() -> list[Path]:
    return sorted(CORPUS.glob("*.toml"))


def test_the_corpus_is_large_enough() -> None:
    assert len(_cases()) >= 30


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestHost]:
    test_host = TestHost(tmp_path_factory.mktemp("bad-baselines"))
    yield test_host
    test_host.close()


@pytest.mark.parametrize("baseline", _cases(), ids=lambda path: path.stem)
def test_bad_baseline_is_refused_naming_file_line_and_key(host: TestHost, baseline: Path) -> None:
    expect = EXPECT.match(baseline.read_text(encoding="utf-8").splitlines()[0])
    assert expect, f"{baseline.name} lacks its '# expect:' line"
    reported_file = baseline.parent / expect["file"] if expect["file"] else baseline
    sysctls_before = {key: host.sysctl(key) for key in WATCHED_SYSCTLS}

    result = host.converge("apply", "--yes", str(baseline))

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # refused before any host was read or planned
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"error: {reported_file}:{expect['line']}: {expect['key']}: "), result.stderr
    assert {key: host.sysctl(key) for key in WATCHED_SYSCTLS} == sysctls_before
    assert host.changed_files() == []


def test_debug_shows_the_traceback(host: TestHost) -> None:
    result = host.converge("--debug", "validate", str(CORPUS / "07-shell-injection.toml"))
    assert result.returncode == 1
    assert "error:" in result.stderr  # validate reports, it does not raise


def test_debug_plan_raises_with_traceback(host: TestHost) -> None:
    result = host.converge("--debug", "plan", str(CORPUS / "07-shell-injection.toml"))
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "BaselineError" in result.stderr
