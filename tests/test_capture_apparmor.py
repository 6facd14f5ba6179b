"""converge capture for the apparmor provider, in a namespace test host with Debian's real
apparmor, apparmor-utils and apparmor-profiles packages (their profiles and dpkg's record of them).

This kernel has no AppArmor: the loaded profiles are stood in for as tests/test_apparmor_kernel.py
does (a tmpfs over /sys/kernel/security holding a `profiles` file in the kernel's format), so the
capture's kernel checks read through the real read path; real loading is the VM tier's."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from converge.provider import ParseError
from converge.providers.apparmor.parse import flags_mode, parse_conffiles, profile_names
from tests.test_apparmor_host import NGINX_PROFILE
from tests.test_apparmor_kernel import _stand_in_kernel
from tests.testhost import TestHost

PROFILES = "/etc/apparmor.d"
MIXED = """\
profile mixed-a /usr/local/bin/mixed-a flags=(complain) {
  /etc/hosts r,
}
profile mixed-b /usr/local/bin/mixed-b {
  /etc/hosts r,
}
"""


def _aa_tool(host: TestHost, tool: str, name: str) -> None:
    """aa-complain/aa-enforce/aa-disable edit the files, then exit 1 for the kernel part (no
    AppArmor in this kernel): the files are what this test needs, and are checked after."""
    host.run([tool, f"{PROFILES}/{name}"], check=False)


def _loaded_as_on_disk(host: TestHost, left_out: set[str]) -> str:
    """The kernel's profiles file as a boot would load the host's files (disabled ones and the
    `left_out` files aside), in the kernel's `name (mode)` format."""
    files = host.run(["find", PROFILES, "-maxdepth", "1", "-type", "f"]).stdout.split()
    lines = []
    for path in sorted(files):
        name = Path(path).name
        if name in left_out or host.read(f"{PROFILES}/disable/{name}") is not None:
            continue
        text = host.read(path)
        assert text is not None
        mode = flags_mode(text)
        lines += [f"{profile} ({mode})" for profile in profile_names(text) if mode in ("enforce", "complain")]
    return "".join(f"{line}\n" for line in lines)


def test_capture_keeps_own_and_changed_profiles_and_round_trips(test_host: TestHost, tmp_path: Path) -> None:
    # Stock profiles whose mode the admin changed with AppArmor's own tools: text as shipped but
    # for the mode flags (ping, nscd) or a disable/ link (avahi-daemon).
    _aa_tool(test_host, "aa-enforce", "bin.ping")
    _aa_tool(test_host, "aa-enforce", "usr.sbin.nscd")
    _aa_tool(test_host, "aa-disable", "usr.sbin.avahi-daemon")
    # The admin's own profile, put in complain mode; a stock profile edited by hand.
    test_host.write(f"{PROFILES}/usr.sbin.nginx", NGINX_PROFILE.read_text())
    _aa_tool(test_host, "aa-complain", "usr.sbin.nginx")
    identd = test_host.read(f"{PROFILES}/usr.sbin.identd")
    assert identd is not None
    test_host.write(f"{PROFILES}/usr.sbin.identd", identd.replace("  /usr/{bin,sbin}/identd   rmix,\n",
                                                                 "  /usr/{bin,sbin}/identd   rmix,\n  /srv/ident/** r,\n"))
    # What the table cannot hold as it is: mixed mode flags, a local/ override with rules, a
    # profile in Latin-1.
    test_host.write(f"{PROFILES}/usr.local.bin.mixed", MIXED)
    test_host.write(f"{PROFILES}/local/usr.sbin.dnsmasq", "# site additions\n  /srv/dns/** r,\n")
    latin1 = tmp_path / "usr.local.bin.latin1"
    latin1.write_bytes("# caf\u00e9\nprofile latin1 /usr/local/bin/latin1 {\n}\n".encode("latin-1"))
    test_host.run(["cp", str(latin1), f"{PROFILES}/usr.local.bin.latin1"])
    ping, nginx = test_host.read(f"{PROFILES}/bin.ping"), test_host.read(f"{PROFILES}/usr.sbin.nginx")
    assert ping is not None and flags_mode(ping) == "enforce"
    assert nginx is not None and flags_mode(nginx) == "complain"
    # The kernel as a boot loads these files, but: nscd still runs in complain mode (aa-enforce
    # could not reload it), the stock smbd profile is not loaded, docker-default has no file here.
    loaded = _loaded_as_on_disk(test_host, {"usr.sbin.nscd", "usr.sbin.smbd", "usr.local.bin.latin1"})
    assert "ping (enforce)\n" in loaded and "nginx (complain)\n" in loaded and "avahi" not in loaded
    _stand_in_kernel(test_host, loaded + "nscd (complain)\ndocker-default (enforce)\n")
    captured = tmp_path / "captured.toml"

    result = test_host.converge("capture", "-H", "local", "--only", "apparmor", "-o", str(captured))
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(captured.read_text())["apparmor"] == {"profiles": {
        "bin.ping": {"mode": "enforce"},
        "usr.sbin.avahi-daemon": {"mode": "disabled"},
        "usr.sbin.identd": {"mode": "complain", "content": test_host.read(f"{PROFILES}/usr.sbin.identd")},
        "usr.sbin.nginx": {"mode": "complain", "content": nginx},
    }}
    notes = result.stderr
    assert "usr.sbin.nscd: the kernel does not match its files (load into the kernel (apparmor_parser -r; " \
           "now nscd: complain)); not captured" in notes
    assert "usr.sbin.smbd: the kernel does not match its files (load into the kernel (apparmor_parser -r; " \
           "now smbd: not loaded)); not captured" in notes
    assert "usr.local.bin.mixed: its headers mix mode flags" in notes
    assert "usr.local.bin.latin1: its text is not UTF-8, which a TOML baseline cannot hold; not captured" in notes
    assert "/etc/apparmor.d/local/ overrides with rules, which the apparmor table does not manage, " \
           "not captured: usr.sbin.dnsmasq" in notes
    assert "1 profile(s) loaded in the kernel from no file in /etc/apparmor.d (snaps, container runtimes) " \
           "not captured: docker-default" in notes
    shipped_note = next(line for line in notes.splitlines() if "exactly as their packages ship them" in line)
    assert "usr.sbin.dnsmasq" in shipped_note and "usr.bin.man" in shipped_note
    assert "bin.ping" not in shipped_note and "usr.sbin.smbd" not in shipped_note

    validate = test_host.converge("validate", str(captured))
    assert validate.returncode == 0, validate.stdout + validate.stderr
    before = test_host.changed_files()
    plan = test_host.converge("plan", str(captured))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "in sync" in plan.stdout
    assert test_host.changed_files() == before


def test_conffiles_parser_reads_dpkg_query_output_and_refuses_anything_else() -> None:
    # Lines as `dpkg-query -W -f='${Conffiles}\n'` prints them on Debian 12 (blank: no conffiles).
    output = (" /etc/apparmor.d/bin.ping a01cb9055bc10f7d44be597f61caef1d\n\n"
              " /etc/apparmor.d/usr.sbin.nscd 1c7f3199009f120b19b2ca658f937e34 obsolete\n"
              " /etc/apparmor.d/usr.sbin.new newconffile\n")
    assert parse_conffiles(output, "dpkg-query") == {
        "/etc/apparmor.d/bin.ping": "a01cb9055bc10f7d44be597f61caef1d",
        "/etc/apparmor.d/usr.sbin.nscd": "1c7f3199009f120b19b2ca658f937e34",
        "/etc/apparmor.d/usr.sbin.new": "newconffile",
    }
    with pytest.raises(ParseError, match=r"^dpkg-query: unexpected conffile line: 'dpkg-query: no packages found"):
        parse_conffiles("dpkg-query: no packages found matching apparmor\n", "dpkg-query")
