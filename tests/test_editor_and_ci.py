"""Where users already work: the JSON Schema in editors (taplo, jsonschema), the pre-commit hook
(the real pre-commit), and shell completion (click's own mechanism)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

from converge.registry import Registry
from converge.schema import baseline_schema, readme_with_key_tables

ROOT = Path(__file__).resolve().parent.parent
# taplo's PyPI wheel installs the binary beside the interpreter running the tests.
TAPLO = shutil.which("taplo", path=str(Path(sys.executable).parent)) or "taplo"
SHIPPED = sorted((ROOT / "baselines").rglob("*.toml"))
BAD = {
    "misspelled key": '[ufw]\nenabeld = true\n',
    "wrong type": '[ufw]\nenabled = "yes"\n',
    "value out of its enumeration": '[ufw]\nlogging = "loud"\n',
}


def _converge(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "converge", *args], capture_output=True, text=True, check=False,
                          env=env, cwd=cwd)


@pytest.fixture(scope="module")
def schema_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    printed = _converge("schema")
    assert printed.returncode == 0, printed.stderr
    path = tmp_path_factory.mktemp("schema") / "baseline.schema.json"
    path.write_text(printed.stdout)
    return path


def test_schema_is_valid_2020_12_and_lists_every_provider(schema_file: Path) -> None:
    schema = json.loads(schema_file.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["properties"]) == {"baseline", *Registry().names()}


@pytest.mark.parametrize("baseline", SHIPPED, ids=[str(path.relative_to(ROOT)) for path in SHIPPED])
def test_shipped_baselines_validate_against_the_schema(baseline: Path, schema_file: Path) -> None:
    validator = jsonschema.Draft202012Validator(json.loads(schema_file.read_text()))
    assert list(validator.iter_errors(tomllib.loads(baseline.read_text()))) == []
    taplo = subprocess.run([TAPLO, "check", "--schema", schema_file.as_uri(), str(baseline)],
                           capture_output=True, text=True, check=False)
    assert taplo.returncode == 0, taplo.stderr


@pytest.mark.parametrize("mistake", BAD)
def test_mistakes_fail_in_the_editor_too(mistake: str, schema_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    # The directive taplo and Even Better TOML read at the top of a file.
    path.write_text(f"#:schema {schema_file.as_uri()}\n{BAD[mistake]}")
    validator = jsonschema.Draft202012Validator(json.loads(schema_file.read_text()))
    assert list(validator.iter_errors(tomllib.loads(path.read_text())))
    taplo = subprocess.run([TAPLO, "check", str(path)], capture_output=True, text=True, check=False)
    assert taplo.returncode != 0
    assert "bad.toml:" in taplo.stderr
    assert _converge("validate", str(path)).returncode == 1  # and converge agrees


def test_readme_key_tables_are_generated_from_the_models() -> None:
    """The README's key tables are the models' field descriptions: `python -m converge.schema README.md`."""
    readme = (ROOT / "README.md").read_text()
    assert readme_with_key_tables(readme, Registry()) == readme, "run: python -m converge.schema README.md"
    for name in Registry().names():
        assert f"<!-- keys:{name} -->" in readme, f"the README has no key table for {name}"
    schema = baseline_schema(Registry())
    missing = [f"{name}.{key}" for name in Registry().names()
               for key, field in schema["properties"][name].get("properties", {}).items() if not field.get("description")]
    assert missing == [], f"fields without a description: {missing}"


def _complete(words: str) -> list[str]:
    env = {**os.environ, "_CONVERGE_COMPLETE": "bash_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    result = _converge(env=env)
    return [line.split(",", 1)[1] for line in result.stdout.splitlines()]


def test_shell_completion_of_commands_providers_and_inventory_names(tmp_path: Path) -> None:
    assert "plan" in _complete("converge pl")
    assert set(_complete("converge plan --only ")) == set(Registry().names())
    inventory = tmp_path / "hosts.toml"
    inventory.write_text('[hosts.web1]\n[hosts.db1]\n[groups.web]\nhosts = ["web1"]\n')
    assert set(_complete(f"converge plan -i {inventory} --limit w")) == {"web1", "web"}
    for shell in ("bash", "zsh", "fish"):
        source = _converge(env={**os.environ, "_CONVERGE_COMPLETE": f"{shell}_source"})
        assert "_CONVERGE_COMPLETE" in source.stdout, shell


def test_pre_commit_hook_validates_changed_baselines(tmp_path: Path) -> None:
    """The real pre-commit, installing the hook from this repository (`pre-commit try-repo`)."""
    repo = tmp_path / "site"
    (repo / "baselines").mkdir(parents=True)
    (repo / "baselines" / "good.toml").write_text("[sysctl]\nkernel.kptr_restrict = 2\n")
    (repo / "baselines" / "bad.toml").write_text("[sysctl]\nkernel.kptr_restrict = 2.5\n")
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "cache"), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    subprocess.run(["git", "add", "."], cwd=repo, check=True, env=env)
    pre_commit = [sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), "converge-validate"]
    good = subprocess.run([*pre_commit, "--files", "baselines/good.toml"], cwd=repo, capture_output=True, text=True,
                          env=env, check=False)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = subprocess.run([*pre_commit, "--files", "baselines/good.toml", "baselines/bad.toml"], cwd=repo,
                         capture_output=True, text=True, env=env, check=False)
    assert bad.returncode == 1
    assert "baselines/bad.toml:2: sysctl.\"kernel.kptr_restrict\": a sysctl value is" in bad.stdout
