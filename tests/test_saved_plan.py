"""Saved plans: `plan --out FILE` then `apply FILE` runs exactly that plan, on exactly the state it
was made from; a host changed since, and a damaged, edited or foreign plan file, are refused."""

from __future__ import annotations

import json
from pathlib import Path

from converge import __version__
from tests.sshnet import SSHNetwork
from tests.testhost import TestHost

DROP_IN = "/etc/sysctl.d/99-zz-converge.conf"
BASELINE = """\
[baseline]
name = "saved-plan-test"

[sysctl]
net.ipv4.conf.all.accept_redirects = 0
net.ipv4.conf.all.log_martians = 1
"""


def _baseline(tmp_path: Path) -> str:
    path = tmp_path / "kernel.toml"
    path.write_text(BASELINE)
    return str(path)


def test_plan_out_then_apply_file_converges(test_host: TestHost, tmp_path: Path) -> None:
    plan_file = tmp_path / "web.plan"
    made = test_host.converge("plan", _baseline(tmp_path), "--out", str(plan_file))
    assert made.returncode == 2, made.stderr
    document = json.loads(plan_file.read_text())
    assert document["format"] == "converge-plan" and document["converge"] == __version__
    [host] = document["hosts"]
    # sysctl -w, the read-back check, the drop-in.
    assert [op["op"] for provider in host["providers"] for op in provider["operations"]] == ["run", "run", "write"]
    assert "password" not in plan_file.read_text().lower()

    applied = test_host.converge("apply", str(plan_file), "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert test_host.sysctl("net.ipv4.conf.all.log_martians") == "1"
    assert "net.ipv4.conf.all.log_martians = 1" in (test_host.read(DROP_IN) or "")
    assert test_host.converge("plan", _baseline(tmp_path)).returncode == 0


def test_a_host_changed_since_the_plan_is_refused_untouched(test_host: TestHost, tmp_path: Path) -> None:
    plan_file = tmp_path / "web.plan"
    assert test_host.converge("plan", _baseline(tmp_path), "-o", str(plan_file)).returncode == 2
    test_host.set_sysctl("net.ipv4.conf.all.accept_redirects", "2")  # a third value, by hand

    refused = test_host.converge("apply", str(plan_file), "--yes")
    assert refused.returncode == 1
    assert "changed since the plan: file /proc/sys/net/ipv4/conf/all/accept_redirects" in refused.stdout
    # Nothing of the plan was applied: no file written, no runtime value changed.
    assert test_host.read(DROP_IN) is None
    assert test_host.sysctl("net.ipv4.conf.all.log_martians") == "0"
    assert test_host.sysctl("net.ipv4.conf.all.accept_redirects") == "2"


def _refusal(test_host: TestHost, plan_file: Path) -> str:
    refused = test_host.converge("apply", str(plan_file), "--yes")
    assert refused.returncode == 1
    assert test_host.read(DROP_IN) is None
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    return lines[0]


def test_foreign_truncated_and_edited_plans_are_refused(test_host: TestHost, tmp_path: Path) -> None:
    plan_file = tmp_path / "web.plan"
    assert test_host.converge("plan", _baseline(tmp_path), "-o", str(plan_file)).returncode == 2
    text = plan_file.read_text()

    foreign = tmp_path / "foreign.plan"
    foreign.write_text(text.replace(f'"converge": "{__version__}"', '"converge": "0.0.1"'))
    assert "made by converge 0.0.1" in _refusal(test_host, foreign)

    truncated = tmp_path / "truncated.plan"
    truncated.write_text(text[: len(text) // 2])
    assert "not a complete plan file" in _refusal(test_host, truncated)

    edited = tmp_path / "edited.plan"
    edited.write_text(text.replace("net.ipv4.conf.all.log_martians=1", "kernel.modprobe=/tmp/m"))
    assert edited.read_text() != text
    assert "does not match its digest" in _refusal(test_host, edited)


def test_saved_plan_over_ssh(network: SSHNetwork, tmp_path: Path) -> None:
    host = network.add_host()
    target = f"root@{host.address}"
    plan_file = tmp_path / "web.plan"
    made = network.converge("plan", _baseline(tmp_path), "-H", target, "--out", str(plan_file))
    assert made.returncode == 2, made.stderr
    assert json.loads(plan_file.read_text())["hosts"][0]["target"] == target

    applied = network.converge("apply", str(plan_file), "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert host.sysctl("net.ipv4.conf.all.log_martians") == "1"
    assert network.converge("plan", _baseline(tmp_path), "-H", target).returncode == 0

    # The same plan again: the host has changed since (it converged), so it is refused.
    again = network.converge("apply", str(plan_file), "--yes")
    assert again.returncode == 1
    assert "changed since the plan" in again.stdout
