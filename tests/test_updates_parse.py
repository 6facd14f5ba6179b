"""updates' parsers on real output recorded from a Debian 12 root host (tests/cases/updates)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from converge.provider import ParseError
from converge.providers.updates.parse import (
    config_list,
    newest_kernel,
    parse_apt_config,
    parse_index,
    parse_needrestart,
    parse_pending,
    parse_updateinfo,
)

CASE = Path(__file__).parent / "cases" / "updates" / "drift-pending-security-update" / "reads.json"


def recorded(first: str) -> str:
    for item in json.loads(CASE.read_text())["answers"]:
        argv = item["read"].get("command", [])
        if argv[:1] == [first] or (argv[:2] == ["python3", "-c"] and first in argv[2]):
            return str(item["answer"]["stdout"])
    raise KeyError(first)


def test_apt_config_dump_lists_keep_their_order() -> None:
    config = parse_apt_config(recorded("apt-config"))
    assert config["APT::Periodic::Unattended-Upgrade"] == "0"
    patterns = config_list(config, "Unattended-Upgrade::Origins-Pattern")
    assert patterns[0] == "origin=Debian,codename=${distro_codename},label=Debian"
    with pytest.raises(ParseError, match="apt-config dump: not a configuration line"):
        parse_apt_config("APT::Periodic {\n")


def test_pending_probe_and_index() -> None:
    pending = parse_pending(recorded("apt_pkg"), "probe")
    assert [(p.package, p.installed, p.candidate) for p in pending] == [("cvg-security", "1.0", "1.1")]
    _, fresh = parse_index(recorded("find"), "index") if "fresh" in recorded("find") else (None, True)
    assert fresh
    with pytest.raises(ParseError, match="not an index file line"):
        parse_index("1700000000 maybe x_Release\n", "index")


def test_needrestart_kernel_and_dnf() -> None:
    batch = "NEEDRESTART-VER: 3.6\nNEEDRESTART-KSTA: 3\nNEEDRESTART-SVC: ssh.service\n"
    assert parse_needrestart(batch) == (["ssh.service"], "3")
    assert newest_kernel(["vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-18-amd64"]) == "6.1.0-18-amd64"
    # The line shape of `dnf updateinfo list --security` (dnf 4.14); not recorded from a RHEL host here.
    line = "RHSA-2024:1234 Important/Sec. openssl-libs-1:3.0.7-27.el9.x86_64\n"
    assert parse_updateinfo(line, "dnf") == [("openssl-libs.x86_64", "1:3.0.7-27.el9", "RHSA-2024:1234", "Important/Sec.")]
