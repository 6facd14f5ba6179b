from __future__ import annotations

from pathlib import Path

import pytest

from converge.baseline import load_baseline
from converge.errors import BaselineError
from converge.registry import Registry


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_extends_merges_in_order_and_the_extending_file_wins(tmp_path: Path) -> None:
    _write(tmp_path, "common/kernel.toml", "[sysctl]\nkernel.kptr_restrict = 1\nkernel.dmesg_restrict = 1\n")
    _write(tmp_path, "common/net.toml", "[sysctl]\nnet.ipv4.ip_forward = 0\nkernel.kptr_restrict = 2\n")
    top = _write(
        tmp_path, "web.toml",
        '[baseline]\nname = "web"\nextends = ["common/kernel.toml", "common/net.toml"]\n'
        '[sysctl]\nnet.ipv4.ip_forward = 1\n',
    )
    baseline = load_baseline(top, Registry())
    assert baseline.name == "web"
    assert baseline.tables["sysctl"].spec.root == {
        "kernel.kptr_restrict": "2", "kernel.dmesg_restrict": "1", "net.ipv4.ip_forward": "1",
    }
    assert [path.name for path in baseline.files] == ["kernel.toml", "net.toml", "web.toml"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    top = _write(tmp_path, "b.toml", '[baseline]\nnmae = 1\n[sysctl]\nkernel.x = 1.5\n"bad key" = 1\n[nope]\n')
    with pytest.raises(BaselineError) as raised:
        load_baseline(top, Registry())
    # [baseline] is checked while loading the file, before the provider tables.
    assert [str(problem).split(": ")[1] for problem in raised.value.problems] == ["baseline.nmae"]
    top.write_text('[sysctl]\nkernel.x = 1.5\n"bad key" = 1\n[nope]\n')
    with pytest.raises(BaselineError) as raised:
        load_baseline(top, Registry())
    located = sorted((problem.line, problem.key) for problem in raised.value.problems)
    assert located == [(2, 'sysctl."kernel.x"'), (3, 'sysctl."bad key"'), (4, "nope")]


def test_source_paths_resolve_relative_to_the_declaring_file(tmp_path: Path) -> None:
    from converge.baseline import Locator, TomlSource, _resolve_sources
    from converge.tomlsource import SourceMap

    text = '[x.profiles.nginx]\nsource = "apparmor/nginx"\n'
    declaring = _write(tmp_path, "common/app.toml", text)
    _write(tmp_path, "common/apparmor/nginx", "profile nginx {}\n")
    table = {"profiles": {"nginx": {"source": "apparmor/nginx"}}}
    locator = Locator([TomlSource(declaring, {}, SourceMap(text))])
    assert _resolve_sources(table, ("x",), locator) == []
    assert table["profiles"]["nginx"]["source"] == str((tmp_path / "common/apparmor/nginx").resolve())
    table = {"profiles": {"nginx": {"source": "apparmor/missing"}}}
    [problem] = _resolve_sources(table, ("x",), locator)
    assert (problem.line, problem.key) == (2, "x.profiles.nginx.source")
    assert "no such file" in problem.message
