"""A regular (non-editable) install works: the tests themselves run on the editable one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_regular_install_registers_providers_under_the_converge_namespace(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT)], check=True, cwd=tmp_path)

    listed = subprocess.run([str(venv / "bin" / "converge"), "providers"], capture_output=True, text=True, check=True)
    assert "converge.providers.sysctl:SysctlProvider" in listed.stdout
    assert "converge-hardening 0.1.0" in listed.stdout  # the distribution name on PyPI (converge is taken)
    located = subprocess.run(
        [str(python), "-c", "import converge.providers.sysctl as m, importlib.util as u; "
         "print(m.__file__); print(u.find_spec('providers'))"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout.split()
    assert located[0].startswith(str(venv)) and located[0].endswith("/converge/providers/sysctl/__init__.py")
    assert located[1] == "None"  # never installed as a top-level `providers` package
