"""sysctl in a container (issue 16 defect 4): a network namespace without the initial one's keys,
and a read-only /proc/sys, as LXC/LXD, systemd-nspawn and docker give one."""

from __future__ import annotations

import json
from pathlib import Path

from converge.providers.sysctl.parse import container_signals, read_only_at, read_only_mounts
from tests.testhost import TestHost

REPO = Path(__file__).resolve().parent.parent
KERNEL_BASELINE = REPO / "baselines" / "common" / "kernel.toml"
ON_THE_HOST = "set on the container's host"


def _plan(host: TestHost, baseline: Path | str) -> tuple[int, dict[str, object], str]:
    plan = host.converge("plan", str(baseline), "--json")
    return plan.returncode, json.loads(plan.stdout)["hosts"][0] if plan.stdout.strip() else {}, plan.stderr


def test_the_shipped_kernel_baseline_plans_in_a_network_namespace_without_the_initial_keys(test_host: TestHost) -> None:
    # A plain netns test host (no copy of the root namespace's /proc/sys/net): no net.core.bpf_jit_*.
    assert test_host.read("/proc/sys/net/core/bpf_jit_harden") is None
    code, host, stderr = _plan(test_host, KERNEL_BASELINE)
    assert code == 2, (host, stderr)
    assert host["status"] == "ok" and host["error"] is None, host
    left = [item for item in host["not_applicable"] if item["resource"] == "net.core.bpf_jit_harden"]
    assert len(left) == 1 and left[0]["provider"] == "sysctl", host
    assert ON_THE_HOST in left[0]["reason"] and "network namespace" in left[0]["reason"], left
    assert not any("bpf_jit_harden" in warning for warning in host.get("warnings", [])), host
    resources = {change["resource"] for change in host["changes"]}
    assert "net.core.bpf_jit_harden" not in resources
    assert "kernel.kptr_restrict" in resources or "net.ipv4.conf.all.accept_redirects" in resources
    # Applying it converges what the host can set, and leaves the key out of the drop-in.
    apply = test_host.converge("apply", str(KERNEL_BASELINE), "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    drop_in = test_host.read("/etc/sysctl.d/99-zz-converge.conf") or ""
    assert "bpf_jit_harden" not in drop_in and "net.ipv4.conf.all.accept_redirects = 0" in drop_in
    replan = test_host.converge("plan", str(KERNEL_BASELINE))
    assert replan.returncode == 0 and "sysctl: net.core.bpf_jit_harden: not applicable here" in replan.stdout, replan.stdout


def test_a_required_table_with_a_key_this_host_cannot_set_is_an_error(test_host: TestHost, tmp_path: Path) -> None:
    baseline = tmp_path / "b.toml"
    baseline.write_text("[sysctl]\nrequired = true\nnet.core.bpf_jit_harden = 2\nnet.ipv4.conf.all.accept_redirects = 0\n")
    code, host, _ = _plan(test_host, baseline)
    assert code == 1 and host["status"] == "error", host
    assert "sysctl: required by the baseline, but net.core.bpf_jit_harden: not applicable here" in str(host["error"]), host
    assert "not_applicable" not in host
    apply = test_host.converge("apply", str(baseline), "--yes")
    assert apply.returncode == 1 and test_host.read("/etc/sysctl.d/99-zz-converge.conf") is None, apply.stdout


def test_a_missing_key_that_is_not_initial_namespace_only_is_still_an_error(test_host: TestHost, tmp_path: Path) -> None:
    baseline = tmp_path / "b.toml"
    baseline.write_text("[sysctl]\nnet.ipv4.tcp_synccookies = 1\n")  # a typo, in a container too
    code, host, _ = _plan(test_host, baseline)
    assert code == 1 and "no such key on this host: net.ipv4.tcp_synccookies" in str(host["error"])


def test_a_key_under_a_read_only_proc_sys_is_not_applicable_and_left_alone(test_host: TestHost, tmp_path: Path) -> None:
    test_host.set_sysctl("kernel.dmesg_restrict", "0")
    test_host.run(["mount", "-o", "remount,bind,ro", "/proc/sys/kernel"])
    baseline = tmp_path / "b.toml"
    baseline.write_text("[sysctl]\nkernel.dmesg_restrict = 1\nnet.ipv4.conf.all.accept_redirects = 0\n")
    code, host, stderr = _plan(test_host, baseline)
    assert code == 2, (host, stderr)
    assert [change["resource"] for change in host["changes"]] == ["net.ipv4.conf.all.accept_redirects"]
    assert [(item["resource"], "read-only" in item["reason"] and ON_THE_HOST in item["reason"])
            for item in host["not_applicable"]] == [("kernel.dmesg_restrict", True)], host
    apply = test_host.converge("apply", str(baseline), "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert test_host.sysctl("kernel.dmesg_restrict") == "0"


def test_container_signals_and_read_only_mounts_are_read_as_the_kernel_prints_them() -> None:
    assert container_signals("net:[4026531840]\nnet:[4026531840]\n") == []
    assert container_signals("net:[4026532301]\nnet:[4026531840]\n") == ["its network namespace is not the one of PID 1"]
    # LXC: PID 1 is the container's init, in the same namespace; its environment says so.
    assert container_signals("net:[1]\nnet:[1]\ncontainer=lxc\n/.dockerenv\n") == [
        "PID 1 runs with container=lxc", "/.dockerenv exists"]
    # As LXC mounts it: /proc/sys read-only, /proc/sys/net writable again.
    mountinfo = ("22 1 0:5 / /proc rw,nosuid,nodev,noexec - proc proc rw\n"
                 "30 22 0:5 /sys /proc/sys ro,nosuid,nodev,noexec - proc proc rw\n"
                 "31 30 0:5 /sys/net /proc/sys/net rw,nosuid,nodev,noexec - proc proc rw\n")
    mounts = read_only_mounts(mountinfo)
    assert read_only_at(mounts, "/proc/sys/kernel/dmesg_restrict") == "/proc/sys"
    assert read_only_at(mounts, "/proc/sys/net/ipv4/ip_forward") is None
    assert read_only_at(mounts, "/proc/sysrq-trigger") is None
