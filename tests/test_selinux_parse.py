"""The SELinux provider's pure parts: parsers on output captured from the real tools on Debian 12
(selinux-policy-default, policycoreutils 3.4, in a test host after a converge apply), the kernel
seam on selinuxfs-format text, the config editor and the baseline model."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from pydantic import ValidationError

from converge.provider import ParseError
from converge.providers.selinux.kernel import parse_kernel_state
from converge.providers.selinux.parse import (
    count_relabelled,
    edit_config,
    parse_boolean_list,
    parse_booleans_local,
    parse_config,
    parse_export,
    parse_file_contexts,
    parse_module_kinds,
    parse_module_list,
    parse_module_priorities,
    parse_module_record,
    parse_package_name,
    parse_port_list,
    parse_ports_local,
)
from converge.providers.selinux.spec import FileContext, SelinuxSpec

DATA = Path(__file__).parent / "data" / "selinux"


def _data(name: str) -> str:
    return (DATA / name).read_text()


def test_boolean_list_gives_every_boolean_with_its_persistent_value() -> None:
    booleans = parse_boolean_list(_data("semanage-boolean-l.txt"))
    assert len(booleans) == 291  # every line but the header and the blank line after it
    assert booleans["httpd_can_network_connect_db"] is True  # set with setsebool -P before capture
    assert booleans["httpd_enable_homedirs"] is False
    assert booleans["aide_mmap_files"] is False
    assert "SELinux" not in booleans


def test_port_list_gives_single_ports_and_ranges_per_protocol() -> None:
    defined = parse_port_list(_data("semanage-port-l.txt"))
    assert ("tcp", "8080") in defined and ("tcp", "443") in defined
    assert ("tcp", "10001-10010") in defined  # http_cache_port_t's range
    assert ("udp", "7000-7005") in defined  # a local range
    assert ("udp", "8080") not in defined


def test_ports_local_joins_the_spaced_range_libsemanage_writes() -> None:
    assert parse_ports_local(_data("ports.local")) == {("tcp", "8080"): "http_port_t", ("udp", "7000-7005"): "http_port_t"}


def test_file_contexts_local_keys_by_regex_and_file_type() -> None:
    assert parse_file_contexts(_data("file_contexts.local")) == {
        ("/srv/www(/.*)?", "all"): "httpd_sys_content_t",
        ("/var/www(/.*)?", "all"): "httpd_sys_rw_content_t",
        ("/srv/dir", "directory"): "httpd_sys_content_t",
        ("/srv/file", "file"): "httpd_sys_content_t",
    }


def test_policy_file_contexts_include_none_contexts_and_typed_entries() -> None:
    contexts = parse_file_contexts(_data("file_contexts"))
    assert contexts[("/var/www(/.*)?", "all")] == "httpd_sys_content_t"
    assert contexts[("/var/www(/.*)?/logs", "directory")] == "httpd_sys_ra_content_t"
    assert None in contexts.values()  # <<none>> entries have no type
    assert len(contexts) > 25


def test_module_list_and_record() -> None:
    modules = parse_module_list(_data("semodule-l-m.txt"))
    assert len(modules) == 315
    assert modules["mynginx"] == "sha256:617591fe459b1e2e8431c28227d55f400e60a2642703f0584b701b04d899351e"
    record = parse_module_record("source sha256:ab\nmodule sha256:cd\n", "mynginx.sha256")
    assert record == {"source": "sha256:ab", "module": "sha256:cd"}


def test_kernel_seam_reads_selinuxfs_format() -> None:
    assert parse_kernel_state(None, {}).mode == "disabled"
    state = parse_kernel_state("1", {"/sys/fs/selinux/booleans/httpd_enable_homedirs": "1 0",
                                     "/sys/fs/selinux/booleans/ftpd_full_access": "0 0"})
    assert state.mode == "enforcing"
    assert state.booleans == {"httpd_enable_homedirs": True, "ftpd_full_access": False}  # current, not pending
    assert parse_kernel_state("0\n", {}).mode == "permissive"


def test_config_is_edited_in_place_keeping_comments() -> None:
    original = _data("config")
    edited = edit_config(original, {"SELINUX": "enforcing", "SELINUXTYPE": "default"})
    assert parse_config(edited) == {"SELINUX": "enforcing", "SELINUXTYPE": "default", "SETLOCALDEFS": "0"}
    assert [line for line in edited.splitlines() if line.startswith("#")] == [
        line for line in original.splitlines() if line.startswith("#")
    ]
    assert len(edited.splitlines()) == len(original.splitlines())
    # A repeated assignment would override ours: it is dropped; a missing one is appended.
    assert edit_config("SELINUX=disabled\nSELINUX=permissive\n", {"SELINUX": "enforcing", "SELINUXTYPE": "mls"}) == (
        "SELINUX=enforcing\nSELINUXTYPE=mls\n"
    )


@pytest.mark.parametrize(("path", "root"), [
    ("/srv/www(/.*)?", "/srv/www"),
    ("/srv/www/.*", "/srv/www"),
    ("/srv/ww[wx]", "/srv"),
    ("/opt/app/data", "/opt/app/data"),
    ("/.*", "/"),
])
def test_relabel_root_is_the_literal_prefix(path: str, root: str) -> None:
    assert FileContext(path=path, type="var_t").relabel_root() == root
    # A wider relabel root is taken as given (one outside the regex is refused: issue 23 finding 9).
    assert FileContext(path=path, type="var_t", relabel="/").relabel_root() == "/"
    if path.startswith("/srv"):
        assert FileContext(path=path, type="var_t", relabel="/srv").relabel_root() == "/srv"


def test_spec_accepts_the_spec_example_and_port_ranges() -> None:
    spec = SelinuxSpec.model_validate({
        "mode": "enforcing", "policy": "targeted", "booleans": {"httpd_enable_homedirs": False},
        "fcontexts": [{"path": "/srv/www(/.*)?", "type": "httpd_sys_content_t"}, {"path": "/old", "ensure": "absent"}],
        "ports": [{"type": "http_port_t", "protocol": "tcp", "port": 8080},
                  {"type": "http_port_t", "protocol": "udp", "port": "9000-9010"}],
    })
    assert [port.key for port in spec.ports] == [("tcp", "8080"), ("udp", "9000-9010")]


@pytest.mark.parametrize(("table", "message"), [
    ({"mode": "enforce"}, "Input should be"),
    ({"booleans": {"httpd;reboot": True}}, "not an SELinux boolean name"),
    ({"booleans": {"httpd_enable_homedirs": 1}}, "valid boolean"),
    ({"fcontexts": [{"path": "/srv/www $(reboot)", "type": "var_t"}]}, "file-context regex"),
    ({"fcontexts": [{"path": "srv", "type": "var_t"}]}, "file-context regex"),
    ({"fcontexts": [{"path": "/srv"}]}, "type is required"),
    ({"fcontexts": [{"path": "/srv", "type": "var_t", "relabel": "/srv/../etc"}]}, "'..'"),
    ({"ports": [{"type": "http_port_t", "protocol": "tcp", "port": 70000}]}, "1-65535"),
    ({"ports": [{"type": "http_port_t", "protocol": "tcp", "port": "90-80"}]}, "low <= high"),
    ({"ports": [{"type": "http_port_t", "protocol": "icmp", "port": 80}]}, "Input should be"),
    ({"ports": [{"type": "http_port_t", "protocol": "tcp", "port": 80}] * 2}, "declared twice"),
    ({"modules": [{"name": "m"}]}, "source"),
    ({"policy": "../x"}, "not a policy name"),
])
def test_spec_refuses_bad_values(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace("$", r"\$")):
        SelinuxSpec.model_validate(table)


@pytest.mark.parametrize(("parse", "text", "where"), [
    (parse_boolean_list, "SELinux boolean   State  Default Description\n\nhttpd_x (maybe, off) Allow\n", "semanage boolean -l"),
    (parse_port_list, "SELinux Port Type   Proto  Port Number\n\nhttp_port_t\n", "semanage port -l"),
    (parse_module_list, "mynginx\n", "semodule -l -m"),
    (lambda text: parse_module_record(text, "/var/lib/converge/selinux/modules/m.sha256"), "source\n",
     "/var/lib/converge/selinux/modules/m.sha256"),
    (parse_ports_local, "portcon tcp\n", "ports.local"),
    (parse_file_contexts, "/srv/www -x system_u:object_r:var_t:s0\n", "file_contexts"),
    (parse_booleans_local, "httpd_x=yes\n", "booleans.local"),
    (parse_export, "boolean\n", "semanage export"),
    (parse_module_priorities, "high mynginx pp\n", "semodule --list-modules=full"),
    (lambda text: parse_kernel_state(text, {}), "2\n", "/sys/fs/selinux/enforce"),
])
def test_parsers_raise_parse_error_naming_the_source_and_the_line(parse, text: str, where: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParseError) as raised:
        parse(text)
    assert raised.value.where == where
    assert raised.value.line is not None and raised.value.line.strip() == text.strip().splitlines()[-1]


def test_restorecon_verbose_output_counts_relabelled_files() -> None:
    # restorecon 3.4 -v, one line per file it changed.
    output = ("Relabeled /srv/www/index.html from unconfined_u:object_r:var_t:s0 to "
              "unconfined_u:object_r:httpd_sys_content_t:s0\n"
              "Relabeled /srv/www from unconfined_u:object_r:var_t:s0 to unconfined_u:object_r:httpd_sys_content_t:s0\n")
    assert count_relabelled(output) == 2
    assert count_relabelled("") == 0


def test_module_names_may_hold_a_dash_as_semodule_installs_them() -> None:
    """Issue 16, defect 5: `semodule -i my-app.pp` installs `my-app`."""
    spec = SelinuxSpec.model_validate({"modules": [{"name": "my-app", "ensure": "absent"}]})
    assert spec.modules[0].name == "my-app"
    with pytest.raises(ValidationError, match="policy module name"):
        SelinuxSpec.model_validate({"modules": [{"name": "-r", "ensure": "absent"}]})


@pytest.mark.parametrize("path", ["/etc/www(/.*)?|/etc/shadow", "/srv/www|/etc/shadow", "/srv/(www)|/etc/shadow"])
def test_an_fcontext_regex_with_a_top_level_alternative_is_refused(path: str) -> None:
    """Issue 23, finding 9: the second alternative would label /etc/shadow, far from /etc/www."""
    with pytest.raises(ValidationError, match="outside parentheses"):
        FileContext(path=path, type="httpd_sys_content_t")


@pytest.mark.parametrize(("path", "relabel"), [("/etc/shadow", "/srv"), ("/srv/(www|/etc/shadow)", "/srv/www"),
                                                ("/srv/www.*", "/srv/www")])
def test_an_fcontext_regex_reaching_outside_its_relabel_root_is_refused(path: str, relabel: str) -> None:
    with pytest.raises(ValidationError, match="outside its relabel root"):
        FileContext(path=path, type="httpd_sys_content_t", relabel=relabel)


@pytest.mark.parametrize("path", ["/etc/(www|ftp)(/.*)?", "/srv/www(/.*)?", r"/srv/a\|b", "/srv/[|]x"])
def test_alternatives_inside_parentheses_or_escaped_bars_are_accepted(path: str) -> None:
    assert FileContext(path=path, type="httpd_sys_content_t").relabel_root().startswith(("/etc", "/srv"))


def test_a_port_the_policy_defines_and_a_local_change_relabels_is_listed_twice() -> None:
    """`semanage port -l` on the in-sync case's host as it was recorded (tests/data/selinux/
    semanage-port-l-local.txt; plan now reads the store through libsemanage): local tcp 8080 is
    http_port_t, the policy's is http_cache_port_t; local 9000-9010 is not the policy's."""
    listing = (Path(__file__).parent / "data" / "selinux" / "semanage-port-l-local.txt").read_text()
    recorded = json.loads((Path(__file__).parent / "cases" / "selinux" / "in-sync" / "reads.json").read_text())
    listed = parse_port_list(listing)
    assert (listed[("tcp", "8080")], listed[("tcp", "9000-9010")], listed[("udp", "8080")]) == (2, 1, 0)
    [full] = [a["answer"]["stdout"] for a in recorded["answers"]
              if a["read"].get("command") == ["semodule", "--list-modules=full"]]
    kinds = parse_module_kinds(full, 400)
    assert kinds == {"mynginx": "pp"}  # everything else is Debian's, at 100


def test_a_policy_package_names_its_module_and_anything_else_is_refused() -> None:
    # The header semodule_package writes (libsepol module_package.c, policydb.c), then nothing else.
    name, version = b"testcat", b"0.1"
    module = (struct.pack("<II", 0xF97CFF8D, 15) + b"SE Linux Module" + struct.pack("<5I", 2, 21, 1, 8, 0)
              + struct.pack("<I", len(name)) + name + struct.pack("<I", len(version)) + version)
    package = struct.pack("<IIII", 0xF97CFF8F, 1, 1, 16) + module
    assert parse_package_name(package, "testcat.pp") == ("testcat", "0.1")
    with pytest.raises(ParseError, match="not a policy package"):
        parse_package_name(b"module testcat 1.0;\n", "testcat.pp")
    with pytest.raises(ParseError, match="truncated policy package"):
        parse_package_name(package[:40], "testcat.pp")
