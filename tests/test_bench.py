"""The benchmark harness: its workload renderings, the parsers of the peers' real output, its targets."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from bench import baselines, report, workload
from bench.__main__ import main as bench_main
from bench.__main__ import rendered
from bench.measure import Run, Series, reaped_cpu_seconds
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


# ---- the whole-baseline workloads (bench/baselines.py) and the report's targets

@pytest.mark.parametrize("factory", [baselines.ubuntu_web, baselines.rhel_web])
def test_the_peers_render_every_part_of_a_shipped_baseline(factory: Callable[[], baselines.Workload]) -> None:
    workload = factory()
    written = {path: f"content of {path}\n" for path in baselines.converge_paths(workload)}
    playbook = yaml.safe_load(baselines.ansible_playbook(workload, baselines.peer_files(workload, written, "ansible")))
    tasks = playbook[0]["tasks"]
    modules = {key for task in tasks for key in task if "." in key}
    sysctl_task = next(task for task in tasks if "ansible.posix.sysctl" in task)
    assert {item["key"]: item["value"] for item in sysctl_task["loop"]} == workload.sysctls()
    copied = {task["ansible.builtin.copy"]["dest"]: task["ansible.builtin.copy"]["content"] for task in tasks
              if "ansible.builtin.copy" in task}
    # Every file converge writes is installed by the peer under its own name, with the same content.
    assert sorted(copied.values()) == sorted(written.values())
    assert not set(copied) & (set(written) - {path for path in written if path.startswith("/etc/apparmor.d/")})
    deploy = baselines.pyinfra_deploy(workload, baselines.peer_files(workload, written, "pyinfra"))
    ast.parse(deploy)
    if workload.name == "ubuntu-web":
        assert "community.general.ufw" in modules and "ufw limit 22/tcp comment 'ssh'" in deploy
    else:
        assert {"ansible.posix.seboolean", "community.general.sefcontext", "ansible.posix.firewalld"} <= modules
        assert "httpd_can_network_connect_db" in deploy and "--add-service=" in deploy


def test_the_selinux_workload_declares_50_booleans_10_fcontexts_5_ports(tmp_path: Path) -> None:
    workload = baselines.selinux_scale(tmp_path, {f"bool_{index}": index % 2 == 0 for index in range(80)})
    spec = workload.spec("selinux")
    assert (len(spec.booleans), len(spec.fcontexts), len(spec.ports)) == (50, 10, 5)
    assert spec.booleans["bool_0"] is True and spec.booleans["bool_1"] is False


def _series(tool: str, seconds: float, cpu: float = 0.1, host_cpu: float = 0.1, rss_mib: int = 50) -> Series:
    return Series(tool, [Run(seconds, cpu, rss_mib << 10, 1, 1, 0, host_cpu)])


def test_the_targets_say_met_or_not_met_with_the_figure() -> None:
    plan = {"converge": _series("converge", 1.0), "ansible": _series("ansible", 25.0), "pyinfra": _series("pyinfra", 5.0),
            "floor": _series("floor", 0.5), "floor+reads": _series("floor+reads", 0.9)}
    selinux = {"converge": _series("converge", 1.0, host_cpu=0.3)}
    fleet = {1: {"converge": _series("converge", 1.0, cpu=0.5), "floor": _series("floor", 0.5)},
             200: {"converge": _series("converge", 3.0, cpu=2.5, rss_mib=160), "floor": _series("floor", 2.0)}}
    rows = "\n".join(report.targets({"ubuntu-web": {"plan": plan}, "selinux-scale": {"plan": selinux}}, fleet))
    assert "| ≥ 20× ansible, ubuntu-web plan | 25.0× | met |" in rows
    assert "| ≥ 7× pyinfra, ubuntu-web plan | 5.0× | not met |" in rows
    assert "2.00× (× the floor running converge's read script: 1.11) | not met |" in rows
    assert "| SELinux plan (50 booleans, 10 fcontexts, 5 ports) ≤ 0.5 s of host CPU | 0.30 s | met |" in rows
    assert "| 200 hosts ≤ 2× the 200-host floor | 1.50× | met |" in rows
    assert "| controller CPU ≤ 10 ms per extra host | 10.1 ms | not met |" in rows
    assert "| peak RSS ≤ 150 MiB at 200 hosts | 160 MiB | not met |" in rows
    # A missed target says what bounds it, from the same run's figures.
    pyinfra = next(row for row in rows.splitlines() if "7× pyinfra" in row)
    assert pyinfra.endswith("the floor running converge's read script takes 0.90 s; converge 1.11× that; "
                            "the hosts' CPU 0.10 s (their own tools) of 1.00 s wall |")
    assert "the floor (a connect, one exec) costs 0.0 ms of controller CPU per extra host by itself |" in rows
    assert rows.count("| met |  |") == 4  # a met target has nothing to explain
    assert "| 160 MiB | not met | the floor's process (paramiko, 200 transports) peaks at 50 MiB |" in rows


def test_an_earlier_run_renders_again_from_its_raw_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = {"converge": _series("converge", 1.0), "floor": _series("floor", 0.5), "floor+reads": _series("floor+reads", 0.9)}
    fleet = {1: {"converge": _series("converge", 1.0, cpu=0.5), "floor": _series("floor", 0.5)},
             50: {"converge": _series("converge", 3.0, cpu=1.5), "floor": _series("floor", 1.0)}}
    meta = {"date": "2026-12-02T05:00Z", "command": "python -m bench", "duration": "10 s", "load at end": "1.0",
            "machine": {"cpu": "test"}, "versions": {"converge": "0.1.0"}}
    raw = {"meta": meta, "one_host": {"ubuntu-web": {"plan": [x.as_dict() for x in plan.values()]}},
           "fleet": {str(n): [x.as_dict() for x in series.values()] for n, series in fleet.items()}}
    (tmp_path / "results.json").write_text(json.dumps(raw))
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.START}\nold\n{report.END}\n")
    assert bench_main(["--from-results", str(tmp_path / "results.json"), "--write-readme", str(readme)]) == 0
    assert readme.read_text() == rendered(meta, {"ubuntu-web": {"plan": plan}}, fleet) + "\n"
    assert "| 50 hosts ≤ 2× the 50-host floor | 3.00× | not met |" in capsys.readouterr().out


def test_the_tables_replace_only_what_is_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{report.START}\nold\n{report.END}\n\n## After\n")
    report.write(readme, f"{report.START}\nnew\n{report.END}")
    assert readme.read_text() == f"# Title\n\n{report.START}\nnew\n{report.END}\n\n## After\n"


def test_the_hosts_cpu_is_what_a_process_reaped_from_its_sessions() -> None:
    before = reaped_cpu_seconds(os.getpid())
    subprocess.run([sys.executable, "-c", "sum(range(30_000_000))"], check=True)  # ~0.5 s of CPU, waited for
    assert reaped_cpu_seconds(os.getpid()) - before > 0.2
