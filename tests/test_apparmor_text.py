"""The apparmor provider's pure parts, on real profiles and real tool output (tests/data/apparmor),
cross-checked against the real apparmor_parser where it can answer without a kernel."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from converge.provider import ParseError
from converge.providers.apparmor.parse import (
    PARSER_ERROR,
    flags_mode,
    parse_loaded_profiles,
    profile_headers,
    profile_names,
    with_mode_flags,
)
from converge.providers.apparmor.provider import COMPILE_ARGV, unified_diff

DATA = Path(__file__).parent / "data" / "apparmor"
SHIPPED = sorted(
    path for path in [*Path("/etc/apparmor.d").iterdir(), *Path("/usr/share/apparmor/extra-profiles").iterdir()]
    if path.is_file() and path.name != "README"
)


def test_loaded_profiles_file_read_from_a_real_apparmor_kernel() -> None:
    # Captured in a Debian 6.1 kernel booted with apparmor=1 after converge loaded these profiles
    # (tests/data/apparmor/vm/run.sh).
    loaded = parse_loaded_profiles((DATA / "kernel-profiles-vm.txt").read_text(), "profiles")
    assert loaded == {
        "man_groff": "complain", "man_filter": "complain", "/usr/bin/man": "complain", "dnsmasq": "complain",
        "dnsmasq//libvirt_leaseshelper": "complain", "ping": "enforce", "nginx": "enforce",
    }


def test_loaded_profiles_file_is_parsed_by_name_and_mode() -> None:
    # The kernel's format (apparmorfs.c: `[:ns://]hname (mode)`) with names apparmor_parser -N gives
    # for shipped profiles, plus the namespaced and kill/unconfined forms a VM run did not produce.
    loaded = parse_loaded_profiles((DATA / "kernel-profiles.txt").read_text(), "profiles")
    assert loaded["ping"] == "complain"
    assert loaded["dnsmasq//libvirt_leaseshelper"] == "complain"
    assert loaded["/usr/bin/man"] == "enforce"
    assert loaded[":lxd-web1://docker-default"] == "enforce"
    assert loaded["/usr/lib/cups/backend/cups-pdf"] == "kill"
    assert len(loaded) == 14
    assert parse_loaded_profiles("", "profiles") == {}


def test_an_unexpected_line_in_the_loaded_profiles_file_is_an_error() -> None:
    with pytest.raises(ParseError, match=r"^/sys/kernel/security/apparmor/profiles: unexpected line: 'garbage'$"):
        parse_loaded_profiles("ping (enforce)\ngarbage\n", "/sys/kernel/security/apparmor/profiles")


def test_profile_names_match_apparmor_parser_for_every_shipped_profile() -> None:
    assert len(SHIPPED) > 100  # apparmor and apparmor-profiles are installed
    for path in SHIPPED:
        listed = subprocess.run(["apparmor_parser", "-N", "-I", "/etc/apparmor.d", str(path)],
                                capture_output=True, text=True, check=True).stdout.split()
        top_level = [name for name in listed if "//" not in name]
        assert sorted(profile_names(path.read_text())) == sorted(top_level), path


def test_headers_nest_children_and_hats_below_their_profile() -> None:
    headers = profile_headers((DATA / "usr.sbin.dnsmasq").read_text())
    assert [(h.name, h.depth) for h in headers] == [("dnsmasq", 0), ("libvirt_leaseshelper", 1)]
    assert headers[0].flags == ("complain", "attach_disconnected")
    text = 'profile "my app" /opt/app/** xattrs=(user.trust=yes) (complain) { # note\n  ^hat1 {\n  }\n}\n'
    assert [(h.name, h.depth, h.flags) for h in profile_headers(text)] == [("my app", 0, ("complain",)), ("hat1", 1, ())]


def test_mode_flags_are_read_from_every_header() -> None:
    assert flags_mode((DATA / "usr.sbin.dnsmasq").read_text()) == "complain"
    assert flags_mode((DATA / "usr.bin.man").read_text()) == "enforce"
    assert flags_mode("/a {\n}\nprofile b flags=(complain) {\n}\n") == "mixed"
    assert flags_mode("/a flags=(kill) {\n}\n") == "mixed"
    assert flags_mode("# only a comment\n") is None


def test_mode_rewrites_touch_only_headers_whose_flags_change() -> None:
    text = (DATA / "usr.sbin.dnsmasq").read_text()
    assert with_mode_flags(text, "complain") == text  # already complain: not rewritten
    assert with_mode_flags(text, "disabled") == text  # aa-disable leaves the flags alone
    enforced = with_mode_flags(text, "enforce")
    changed = [line for line in unified_diff("p", text, enforced).splitlines() if line[:1] in "+-"]
    assert changed == [
        "--- p", "+++ p (baseline)",
        "-profile dnsmasq /usr/{bin,sbin}/dnsmasq flags=(complain,attach_disconnected) {",
        "+profile dnsmasq /usr/{bin,sbin}/dnsmasq flags=(attach_disconnected) {",
        "-  profile libvirt_leaseshelper flags=(complain) {",
        "+  profile libvirt_leaseshelper {",
    ]
    assert flags_mode(enforced) == "enforce" and flags_mode(with_mode_flags(enforced, "complain")) == "complain"


def _parser_error(output: str) -> str:
    """What a refused compile reports: the line the compile operation's `fails_on` picks out."""
    found = re.search(PARSER_ERROR, output, re.MULTILINE)
    assert found, output
    return found[0]


def test_parser_messages_keep_the_error_and_its_line() -> None:
    syntax = (DATA / "parser-syntax-error.txt").read_text().rsplit("exit", 1)[0]
    assert _parser_error(syntax) == "AppArmor parser error at line 6: syntax error, unexpected TOK_ID, expecting TOK_MODE"
    include = (DATA / "parser-missing-include.txt").read_text().rsplit("exit", 1)[0]
    assert _parser_error(include) == "AppArmor parser error at line 5: Could not open 'abstractions/no-such-abstraction'"


@pytest.mark.parametrize(("profile", "captured"), [
    ("malformed.profile", "parser-syntax-error.txt"),
    ("missing-include.profile", "parser-missing-include.txt"),
])
def test_captured_parser_output_is_what_the_parser_says_today(profile: str, captured: str) -> None:
    result = subprocess.run(COMPILE_ARGV, input=(DATA / profile).read_text(), capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert _parser_error(result.stderr) == _parser_error((DATA / captured).read_text().rsplit("exit", 1)[0])
