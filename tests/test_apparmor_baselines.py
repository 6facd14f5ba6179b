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


def test_a_source_is_read_once_and_its_text_is_what_the_plan_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from converge.providers.apparmor.spec import AppArmorSpec

    profile = tmp_path / "usr.sbin.nginx"
    profile.write_text("profile nginx /usr/sbin/nginx {\n}\n")
    reads: list[Path] = []
    read_text = Path.read_text

    def counted(path: Path, *args: object, **kwargs: object) -> str:
        reads.append(path)
        return read_text(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", counted)
    spec = AppArmorSpec.model_validate({"profiles": {"usr.sbin.nginx": {"mode": "enforce", "source": str(profile)}}})
    profile.write_text("profile changed-since /usr/sbin/nginx {\n}\n")
    assert reads == [profile]
    assert spec.profiles["usr.sbin.nginx"].text == "profile nginx /usr/sbin/nginx {\n}\n"
    assert spec.model_dump(mode="json")["profiles"]["usr.sbin.nginx"]["source"] == str(profile)  # still the path
