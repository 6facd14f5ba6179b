"""sysctl's pure parts on real public sysctl.d files (sources in tests/data/sysctl/SOURCES.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from converge.providers.sysctl.parse import displayed, is_pattern, normalize, parse_sysctl_conf
from converge.providers.sysctl.spec import exec_hook_problem, helper_program

DATA = Path(__file__).parent / "data" / "sysctl"
SOURCES = json.loads((DATA / "SOURCES.json").read_text())


def test_every_data_file_names_its_source() -> None:
    files = {path.name for path in DATA.iterdir() if path.suffix in {".conf", ".in"}}
    assert files == set(SOURCES)
    assert all({"repository", "path", "commit"} <= set(source) for source in SOURCES.values())


def test_kicksecure_security_misc_keeps_glob_lines_and_last_assignment() -> None:
    values = parse_sysctl_conf((DATA / "kicksecure-990-security-misc.conf").read_text())
    assert values["net.ipv4.conf.*.rp_filter"] == "1"
    assert values["net.ipv4.conf.default.rp_filter"] == "1"
    assert values["kernel.core_pattern"] == "|/bin/false"
    assert values["kernel.panic"] == "-1"
    assert values["vm.max_map_count"] == "1048576"
    # Commented-out lines (`#kernel.printk=3 3 3 3`, `#fs.binfmt_misc.status=0`) are not assignments.
    assert "kernel.printk" not in values and "fs.binfmt_misc.status" not in values
    patterns = sorted(key for key in values if is_pattern(key))
    assert patterns == sorted([
        "net.ipv4.conf.*.rp_filter", "net.ipv4.conf.*.accept_redirects", "net.ipv4.conf.*.send_redirects",
        "net.ipv6.conf.*.accept_redirects", "net.ipv4.conf.*.shared_media", "net.ipv4.conf.*.arp_filter",
        "net.ipv4.conf.*.arp_ignore", "net.ipv4.conf.*.drop_gratuitous_arp", "net.ipv4.conf.*.accept_source_route",
        "net.ipv6.conf.*.accept_source_route", "net.ipv6.conf.*.accept_ra", "net.ipv4.conf.*.log_martians",
    ])
    assert len(values) == 46  # distinct names on assignment lines (grep -v "^#" | cut -d= -f1 | sort -u)


def test_systemd_default_strips_the_ignore_failure_dash_and_folds_whitespace() -> None:
    values = parse_sysctl_conf((DATA / "systemd-50-default.conf").read_text())
    assert values == {
        "kernel.sysrq": "16", "kernel.core_uses_pid": "1", "net.ipv4.conf.all.rp_filter": "2",
        "net.ipv4.conf.all.accept_source_route": "0", "net.ipv4.conf.all.promote_secondaries": "1",
        "net.ipv4.ping_group_range": "0 2147483647", "net.core.default_qdisc": "fq_codel",
        "fs.protected_hardlinks": "1", "fs.protected_symlinks": "1", "fs.protected_regular": "1", "fs.protected_fifos": "1",
    }


def test_systemd_coredump_pipe_pattern_is_one_value() -> None:
    values = parse_sysctl_conf((DATA / "systemd-50-coredump.conf.in").read_text())
    assert values == {"kernel.core_pattern": "|@rootlibexecdir@/systemd-coredump %P %u %g %s %t %c %h"}


def test_a_broken_line_of_a_real_file_is_read_as_written() -> None:
    # lpirl/admintools: a pasted terminal line ("1) [ OK ]") that the kernel refuses at boot.
    values = parse_sysctl_conf((DATA / "lpirl-admintools-hardening.conf").read_text())
    assert values["net.ipv4.icmp_ignore_bogus_error_responses"] == "1) [ OK ]"
    assert values["kernel.ctrl-alt-del"] == "0"
    assert len(values) == 25


def test_slash_separated_keys_and_semicolon_comments() -> None:
    text = "; comment\nnet/ipv4/conf/all/log_martians=0\nnet.ipv4.conf.eth0/1.rp_filter = 1\n -kernel.sysrq= 0 \n"
    assert parse_sysctl_conf(text) == {
        "net.ipv4.conf.all.log_martians": "0", "net.ipv4.conf.eth0/1.rp_filter": "1", "kernel.sysrq": "0"}


def test_normalize_and_displayed() -> None:
    assert normalize("4096\t 87380   +6291456") == "4096 87380 6291456"
    assert normalize("007") == "7"
    assert displayed("-1") == -1 and displayed("fq_codel") == "fq_codel" and displayed(None) is None


@pytest.mark.parametrize(("key", "value", "program"), [
    ("kernel.core_pattern", "|/usr/share/apport/apport -p%p -s%s", "/usr/share/apport/apport"),
    ("kernel.core_pattern", "core.%p", None),
    ("kernel.modprobe", "/sbin/modprobe", "/sbin/modprobe"),
    ("fs.binfmt_misc.register", ":qemu-arm:M::\\x7fELF::/usr/bin/qemu-arm-static:F", "/usr/bin/qemu-arm-static"),
    ("kernel.kptr_restrict", "2", None),
])
def test_helper_program(key: str, value: str, program: str | None) -> None:
    assert helper_program(key, value) == program


@pytest.mark.parametrize(("key", "value", "allowed", "refused"), [
    ("kernel.core_pattern", "|/tmp/x %p", True, "from /tmp, a place users can write to"),
    ("kernel.modprobe", "/tmp/m", False, "from /tmp, a place users can write to"),
    ("kernel.hotplug", "/home/eve/h", True, "from /home"),
    ("kernel.poweroff_cmd", "/dev/shm/p", False, "from /dev/shm"),
    ("kernel.modprobe", "/usr/../tmp/m", True, "no . or .. components"),
    ("kernel.core_pattern", "|x %p", True, "absolute path"),
    ("kernel.modprobe", "/opt/tools/modprobe", False, "allow_exec_hooks = true"),
    ("kernel.modprobe", "/opt/tools/modprobe", True, None),
    ("kernel.core_pattern", "|/bin/false", False, None),
    ("kernel.core_pattern", "|/lib/systemd/systemd-coredump %P %u %g %s %t %c %h", False, None),
    ("kernel.core_pattern", "/tmp/core.%p", False, None),  # a file name: the kernel runs nothing
])
def test_exec_hooks(key: str, value: str, allowed: bool, refused: str | None) -> None:
    problem = exec_hook_problem(key, value, allowed)
    assert (problem is None) if refused is None else (problem is not None and refused in problem)
