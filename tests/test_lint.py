from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_types_check_strictly(tmp_path: Path) -> None:
    """mypy --strict over the engine and every built-in provider. providers/ is installed as
    converge.providers (a package-dir mapping mypy cannot follow), so mypy reads a tree of links
    laid out as the installed package is."""
    tree = tmp_path / "converge"
    tree.mkdir()
    for entry in (ROOT / "converge").iterdir():
        if entry.name != "__pycache__":
            (tree / entry.name).symlink_to(entry)
    (tree / "providers").symlink_to(ROOT / "providers")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-version", "3.11", "-p", "converge"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
