"""Issue 23, finding 6: `extends` and `source` stay inside the baseline's repository, and an error
never quotes a file that is not a baseline.

Baselines are written by other people; before this, `extends = ["../fakehome/.git-credentials"]`
printed the token in the syntax error, and `/proc/self/environ` an environment variable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TOKEN = "ghp_S3cretT0kenValue"
CREDENTIALS = f"https://operator:{TOKEN}@github.com\n"


def _validate(path: Path) -> tuple[int, str]:
    env = {**os.environ, "CONVERGE_TEST_SECRET": TOKEN}
    done = subprocess.run([sys.executable, "-m", "converge", "validate", str(path)],
                          capture_output=True, text=True, env=env, check=False)
    return done.returncode, done.stdout + done.stderr


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _repository(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    return repo


def test_extends_outside_the_repository_is_refused_without_reading_it(tmp_path: Path) -> None:
    repo = _repository(tmp_path)
    _write(tmp_path / "fakehome/.git-credentials", CREDENTIALS)
    top = _write(repo / "baselines/web.toml", '[baseline]\nname = "web"\nextends = ["../../fakehome/.git-credentials"]\n')
    status, output = _validate(top)
    assert status == 1
    assert output.startswith(f"error: {top}:3: baseline.extends[0]: must be a file inside {repo.resolve()}"), output
    assert TOKEN not in output and len(output.splitlines()) == 1

    for hostile in ("/proc/self/environ", "/etc/passwd"):
        _write(top, f'[baseline]\nextends = ["{hostile}"]\n')
        status, output = _validate(top)
        assert status == 1 and f"baseline.extends[0]: must be a file inside {repo.resolve()}" in output, output
        assert TOKEN not in output and "root:x:" not in output


def test_a_symlink_out_of_the_repository_is_refused(tmp_path: Path) -> None:
    repo = _repository(tmp_path)
    _write(tmp_path / "outside.toml", '[sysctl]\nkernel.kptr_restrict = 2\n')
    (repo / "common.toml").symlink_to(tmp_path / "outside.toml")
    (repo / "apparmor").mkdir()
    (repo / "apparmor/nginx").symlink_to("/etc/shadow")
    top = _write(repo / "web.toml", '[baseline]\nextends = ["common.toml"]\n')
    status, output = _validate(top)
    assert status == 1 and f"{top}:2: baseline.extends[0]: must be a file inside" in output, output

    _write(top, '[apparmor.profiles."usr.sbin.nginx"]\nmode = "enforce"\nsource = "apparmor/nginx"\n')
    status, output = _validate(top)
    assert status == 1, output
    assert f"{top}:3: apparmor.profiles.usr.sbin.nginx.source: must be a file inside" in output.replace('"', ""), output


def test_a_file_that_is_no_baseline_is_named_but_never_quoted(tmp_path: Path) -> None:
    repo = _repository(tmp_path)
    _write(repo / ".git-credentials", CREDENTIALS)  # inside the repository, so it is read
    top = _write(repo / "baselines/web.toml", '[baseline]\nextends = ["../.git-credentials"]\n')
    status, output = _validate(top)
    assert status == 1
    assert output.startswith(f"error: {repo / '.git-credentials'}:1: invalid TOML: "), output
    assert "its text is not shown" in output
    assert TOKEN not in output and "operator" not in output


def test_dot_dot_inside_the_repository_still_works(tmp_path: Path) -> None:
    repo = _repository(tmp_path)
    _write(repo / "common/kernel.toml", "[sysctl]\nkernel.kptr_restrict = 2\n")
    top = _write(repo / "baselines/web/web.toml", '[baseline]\nextends = ["../../common/kernel.toml"]\n')
    status, output = _validate(top)
    assert status == 0, output
    # Without a repository, the top baseline's directory is the limit.
    alone = _write(tmp_path / "alone/web.toml", '[baseline]\nextends = ["../repo/common/kernel.toml"]\n')
    status, output = _validate(alone)
    assert status == 1 and f"must be a file inside {alone.parent.resolve()}" in output, output


def test_a_syntax_error_in_a_baseline_still_shows_its_key_and_line(tmp_path: Path) -> None:
    top = _write(tmp_path / "web.toml", "[sysctl]\nkernel.kptr_restrict = \n")
    status, output = _validate(top)
    assert status == 1
    assert output.startswith(f"error: {top}:2: kernel.kptr_restrict: invalid TOML: "), output
    assert "in `kernel.kptr_restrict =`" in output
