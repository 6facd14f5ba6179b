"""Bad [apparmor] tables: each is refused by `converge validate` with exit 1, naming the file, the
line and the key, before any host is contacted; the shipped nginx example is valid."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BAD = Path(__file__).parent / "data" / "apparmor" / "bad"
EXPECT = re.compile(r"# expect: line=(?P<line>\d+) key=(?P<key>.+)")
NGINX_BASELINE = Path(__file__).parent.parent / "baselines" / "apparmor" / "nginx.toml"


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "converge", "validate", str(path)], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("baseline", sorted(BAD.glob("*.toml")), ids=lambda path: path.stem)
def test_bad_apparmor_table_is_refused_naming_line_and_key(baseline: Path) -> None:
    expect = EXPECT.fullmatch(baseline.read_text(encoding="utf-8").splitlines()[0])
    assert expect, f"{baseline.name} lacks its '# expect:' line"
    result = _validate(baseline)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0].startswith(f"error: {baseline}:{expect['line']}: {expect['key']}: "), result.stderr


def test_the_nginx_example_is_valid() -> None:
    result = _validate(NGINX_BASELINE)
    assert result.returncode == 0, result.stderr
    assert "valid (apparmor)" in result.stdout
