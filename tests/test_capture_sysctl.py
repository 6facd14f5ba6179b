"""sysctl capture in a real test host: what it leaves out is said, never dropped silently."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.testhost import TestHost


def test_capture_notes_glob_lines_and_refused_exec_hooks_and_round_trips(test_host: TestHost, tmp_path: Path) -> None:
    # Kicksecure's security-misc names interfaces by glob (issue 16, defect 9); kernel.modprobe from
    # /tmp is a hook the baseline refuses (issue 23, finding 14).
    test_host.write("/etc/sysctl.d/90-site.conf",
                    "net.ipv4.conf.*.rp_filter=1\nkernel.modprobe = /tmp/m\nkernel.dmesg_restrict = 1\n")
    test_host.set_sysctl("kernel.modprobe", "/tmp/m")
    test_host.set_sysctl("kernel.dmesg_restrict", "1")
    captured = tmp_path / "captured.toml"
    result = test_host.converge("capture", "-H", "local", "--only", "sysctl", "-o", str(captured))
    assert result.returncode == 0, result.stderr
    table = tomllib.loads(captured.read_text())["sysctl"]
    flat = dict(_flat(table))
    assert flat["kernel.dmesg_restrict"] == 1 and "kernel.modprobe" not in flat
    assert "net.ipv4.conf.*.rp_filter = 1 in /etc/sysctl.d/90-site.conf: a glob line names no key; not captured" in result.stderr
    assert ("kernel.modprobe = /tmp/m: not captured: kernel.modprobe makes the kernel run /tmp/m as root, from /tmp"
            in result.stderr)
    plan = test_host.converge("plan", str(captured))
    assert plan.returncode == 0, plan.stdout + plan.stderr


def _flat(node: object, prefix: str = "") -> list[tuple[str, object]]:
    if not isinstance(node, dict):
        return [(prefix, node)]
    return [item for name, value in node.items() for item in _flat(value, f"{prefix}.{name}" if prefix else name)]
