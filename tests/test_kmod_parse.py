"""kmod's parsers on real public modprobe.d files (tests/data/kmod/SOURCES.md), checked against
what the real `modprobe --showconfig -C DIR` resolves from the same files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from converge.provider import ParseError
from converge.providers.kmod.kernel import unloadable
from converge.providers.kmod.parse import (
    config_files,
    parse_initramfs_listing,
    parse_modprobe_conf,
    parse_proc_modules,
    parse_showconfig,
    resolve,
)

DATA = Path(__file__).parent / "data" / "kmod"
FILES = ("30_security-misc.conf", "30_security-misc_blacklist.conf", "30_security-misc_disable.conf")


def _found(directory: Path, as_directory: str) -> dict[str, str]:
    return {f"{as_directory}/{path.name}": path.read_text() for path in directory.iterdir() if path.is_file()}


def test_the_parser_agrees_with_modprobe_showconfig_on_real_files() -> None:
    ours = resolve(config_files({"/etc/modprobe.d": _found(DATA, "/etc/modprobe.d")}))
    shown = subprocess.run(["modprobe", "--showconfig", "-C", str(DATA)], capture_output=True, text=True, check=True)
    theirs = parse_showconfig(shown.stdout)
    assert {module: command for module, (_, command) in ours.install.items()} == \
        {module: command for module, (_, command) in theirs.install.items()}
    assert set(ours.blacklist) == set(theirs.blacklist)
    # The first install command read wins: 30_security-misc.conf sorts before ..._disable.conf ('.' < '_').
    assert ours.install["dccp"] == ("/etc/modprobe.d/30_security-misc.conf", "/bin/false")
    assert ours.install["jfs"] == ("/etc/modprobe.d/30_security-misc_disable.conf", "/usr/bin/disabled-filesys-by-security-misc")
    # `-` and `_` are one character to modprobe.
    assert "firewire_core" in ours.install and "firewire-core" not in ours.install
    assert ours.blacklist["pcspkr"] == ("/etc/modprobe.d/30_security-misc_blacklist.conf",)
    # Commented-out lines are not directives.
    assert "vivid" in ours.install and "mei" not in ours.install
    # Benchmarks' form: a no-op install command AND a blacklist line. Kicksecure installs /bin/false but
    # blacklists only a few modules; its helper scripts are not /bin/false.
    assert not ours.disabled("dccp") and ours.disabled("pcspkr") is False


def test_masking_and_order_across_directories(tmp_path: Path) -> None:
    found = {
        "/etc/modprobe.d": {"/etc/modprobe.d/50-local.conf": "install sctp /bin/false\nblacklist sctp\n",
                            "/etc/modprobe.d/notes.txt": "install dccp /bin/sh\n"},
        "/run/modprobe.d": {"/run/modprobe.d/10-early.conf": "install sctp /bin/true\n"},
        "/usr/lib/modprobe.d": {"/usr/lib/modprobe.d/50-local.conf": "install sctp /bin/sh -c oops\n",
                                "/usr/lib/modprobe.d/x.alias": "blacklist dccp\n"},
        "/lib/modprobe.d": {"/lib/modprobe.d/x.alias": "blacklist tipc\n"},
    }
    files = config_files(found)
    assert [path for path, _ in files] == ["/run/modprobe.d/10-early.conf", "/etc/modprobe.d/50-local.conf",
                                           "/usr/lib/modprobe.d/x.alias"]
    config = resolve(files)
    assert config.install["sctp"] == ("/run/modprobe.d/10-early.conf", "/bin/true")
    assert config.disabled("sctp") and "dccp" in config.blacklist and "tipc" not in config.blacklist
    # The same files in one directory, as modprobe -C reads them, agree (but for the masked one).
    for name, text in [("10-early.conf", found["/run/modprobe.d"]["/run/modprobe.d/10-early.conf"]),
                       ("50-local.conf", found["/etc/modprobe.d"]["/etc/modprobe.d/50-local.conf"]),
                       ("x.alias", "blacklist dccp\n"), ("notes.txt", "install dccp /bin/sh\n")]:
        (tmp_path / name).write_text(text)
    shown = subprocess.run(["modprobe", "--showconfig", "-C", str(tmp_path)], capture_output=True, text=True, check=True)
    theirs = parse_showconfig(shown.stdout)
    assert theirs.install["sctp"][1] == "/bin/true" and "dccp" not in theirs.install and "dccp" in theirs.blacklist


def test_continuation_lines_and_bad_lines() -> None:
    directives = parse_modprobe_conf("f.conf", "install usb-storage \\\n  /bin/false\n# install x /bin/true\nfrobnicate y\n")
    assert [(d.command, d.module, d.argument) for d in directives] == [("install", "usb_storage", "/bin/false")]
    with pytest.raises(ParseError, match=r"f.conf: `install` without a module name and command"):
        parse_modprobe_conf("f.conf", "install dccp\n")


# The format of the kernel's m_show (kernel/module/procfs.c): name size refcount users state address [taint].
PROC_MODULES = """\
dccp_ipv6 36864 6 - Live 0x0000000000000000
dccp_ipv4 32768 5 dccp_ipv6, Live 0x0000000000000000
dccp 106496 2 dccp_ipv6,dccp_ipv4, Live 0x0000000000000000
sctp 434176 3 - Live 0x0000000000000000
tipc 262144 0 - Live 0x0000000000000000
udf 131072 0 - Unloading 0x0000000000000000
cramfs 20480 - - Live 0x0000000000000000 (E)
"""


def test_unloading_order_and_what_stays() -> None:
    loaded = parse_proc_modules(PROC_MODULES)
    assert loaded["dccp"].users == ("dccp_ipv6", "dccp_ipv4") and loaded["cramfs"].refcount is None
    order, stays = unloadable(loaded, ["tipc", "sctp", "udf", "cramfs", "hfs"])
    assert order == ["tipc"]
    assert stays == {"sctp": "in use (refcount 3)", "udf": "it is unloading", "cramfs": "the kernel cannot unload modules"}
    # dccp's users hold only their own references once sockets are gone: users first, then dccp.
    quiet = parse_proc_modules("dccp_ipv4 32768 0 - Live 0x0\ndccp 106496 1 dccp_ipv4, Live 0x0\n")
    assert unloadable(quiet, ["dccp", "dccp_ipv4"]) == (["dccp_ipv4", "dccp"], {})
    assert unloadable(quiet, ["dccp"]) == ([], {"dccp": "used by dccp_ipv4"})


def test_initramfs_listings() -> None:
    debian = ("kernel 6.1.0-18-amd64\nimage /boot/initrd.img-6.1.0-18-amd64\ntool update-initramfs\nbuilt 200\ndrop-in 100\n"
              "listing\nusr/lib/modules/6.1.0-18-amd64/kernel/drivers/usb/storage/usb-storage.ko\n"
              "usr/lib/modules/6.1.0-18-amd64/kernel/fs/udf/udf.ko.xz\netc/modprobe.d\n")
    image = parse_initramfs_listing(debian)
    assert image is not None and image.modules == {"usb_storage", "udf"} and image.newer_than_drop_in
    assert image.tool == "update-initramfs"
    dracut = ("kernel 5.14.0\nimage /boot/initramfs-5.14.0.img\nbuilt 100\ndrop-in 200\nlisting\n"
              "-rw-r--r--   1 root root  1 Jan  1 00:00 usr/lib/modules/5.14.0/kernel/fs/cramfs/cramfs.ko.xz\n")
    image = parse_initramfs_listing(dracut)
    assert image is not None and image.modules == {"cramfs"} and not image.newer_than_drop_in and image.tool is None
    assert parse_initramfs_listing("") is None


def test_the_spec_refuses_a_module_twice_and_bad_names() -> None:
    from pydantic import ValidationError

    from converge.providers.kmod.spec import KmodSpec

    with pytest.raises(ValidationError, match="usb_storage is listed twice"):
        KmodSpec.model_validate({"disabled": ["usb-storage"], "blacklisted": ["usb_storage"]})
    with pytest.raises(ValidationError, match="not a kernel module name"):
        KmodSpec.model_validate({"disabled": ["dccp; reboot"]})
    with pytest.raises(ValidationError):
        KmodSpec.model_validate({"update_initramfs": "yes"})
