"""The benchmark harness: its workload renderings and the parsers of the peers' real output."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from bench import workload
from bench.tools import Ansible, Converge, Pyinfra, Tool

DATA = Path(__file__).parent / "data" / "bench"


def _tool(kind: type[Tool], tmp_path: Path) -> Tool:
    return kind(kind.__name__.lower(), tmp_path, tmp_path)


def test_the_workload_is_30_keys_and_10_drifted_values_the_kernel_accepts() -> None:
    assert len(workload.SYSCTL) == 30
    assert len(set(workload.DRIFTED)) == 10 and set(workload.DRIFTED) <= set(workload.SYSCTL)
    assert all(workload.drift_value(key) in ("0", "1") and workload.drift_value(key) != str(workload.SYSCTL[key])
               for key in workload.DRIFTED)


def test_the_converge_rendering_is_a_valid_baseline(tmp_path: Path) -> None:
    files = workload.write_all(tmp_path, ("sysctl",))
    result = subprocess.run([sys.executable, "-m", "converge", "validate", str(files["converge"])],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "valid (sysctl)" in result.stdout


def test_every_part_renders_for_the_peers(tmp_path: Path) -> None:
    files = workload.write_all(tmp_path, workload.PARTS)
    ast.parse(files["pyinfra"].read_text())  # a deploy pyinfra can import
    playbook = files["ansible"].read_text()
    for module in ("ansible.posix.sysctl", "community.general.ufw", "ansible.builtin.copy"):
        assert module in playbook
    baseline = files["converge"].read_text()
    assert "[[ufw.rules]]" in baseline and "[fail2ban.jails.sshd]" in baseline
    assert workload.jail_file(workload.FAIL2BAN_JAILS).startswith("[sshd]\nenabled = true\n")


@pytest.mark.parametrize(("capture", "changes"), [("ansible-check-noop.txt", 0), ("ansible-apply-drifted.txt", 1)])
def test_ansible_changes_are_read_from_its_recap(tmp_path: Path, capture: str, changes: int) -> None:
    assert _tool(Ansible, tmp_path).changes(0, (DATA / capture).read_text()) == changes


def test_a_failed_ansible_run_is_an_error_not_a_measurement(tmp_path: Path) -> None:
    output = (DATA / "ansible-check-noop.txt").read_text().replace("failed=0", "failed=1")
    with pytest.raises(RuntimeError, match="ansible-playbook failed"):
        _tool(Ansible, tmp_path).changes(2, output)


@pytest.mark.parametrize(("capture", "changes"), [("pyinfra-dry-noop.txt", 0), ("pyinfra-dry-drifted.txt", 10),
                                                  ("pyinfra-dry-conditional.txt", 1),  # a conditional reload is not counted
                                                  ("pyinfra-apply.txt", None)])
def test_pyinfra_changes_are_read_from_its_detected_changes_table(tmp_path: Path, capture: str, changes: int | None) -> None:
    assert _tool(Pyinfra, tmp_path).changes(0, (DATA / capture).read_text()) == changes


def test_converge_changes_are_read_from_its_json(tmp_path: Path) -> None:
    assert _tool(Converge, tmp_path).changes(2, (DATA / "converge-plan-drifted.json").read_text()) == 10
    with pytest.raises(RuntimeError, match="converge failed"):
        _tool(Converge, tmp_path).changes(1, "{}")
