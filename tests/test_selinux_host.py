"""The SELinux provider end to end, through the CLI, in one namespace test host whose policy store
(/var/lib/selinux) and /etc/selinux are overlays: real semanage, setsebool -P, semodule, checkmodule
and setfiles change only this host. semanage is slow, so the tests share the host and build on each
other, in file order: refused -> converged -> changed -> module replaced and removed -> failed import.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testhost import TestHost

STOCK_CONFIG = Path(__file__).parent / "data" / "selinux" / "config"
TE_SOURCE = """module mynginx 1.0;

require {
\ttype httpd_t;
\ttype httpd_sys_content_t;
\tclass file { read open getattr };
}

allow httpd_t httpd_sys_content_t:file { read open getattr };
"""

CIL_SOURCE = "(allow httpd_t self (process (setrlimit)))\n"
CIL_HASH = "sha256:" + hashlib.sha256(CIL_SOURCE.encode()).hexdigest()

BASELINE = """
[selinux]
mode = "enforcing"
policy = "default"

[selinux.booleans]
httpd_can_network_connect_db = true
httpd_can_network_connect = true
httpd_enable_homedirs = true

[[selinux.fcontexts]]
path = "/srv/www(/.*)?"
type = "httpd_sys_content_t"

[[selinux.fcontexts]]
path = "/var/lib/webapp(/.*)?"                 # inside the test host's /var/lib overlay
type = "httpd_sys_rw_content_t"

[[selinux.ports]]
type = "http_port_t"
protocol = "tcp"
port = 8080

[[selinux.modules]]
name = "mynginx"
source = "selinux/mynginx.te"
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestHost]:
    test_host = TestHost(tmp_path_factory.mktemp("selinux") / "host", name="selinux-host")
    # Debian's stock config (captured here), whatever the machine running the tests has.
    test_host.write("/etc/selinux/config", STOCK_CONFIG.read_text())
    try:
        yield test_host
    finally:
        test_host.close()


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("baseline")
    (directory / "selinux").mkdir()
    (directory / "selinux" / "mynginx.te").write_text(TE_SOURCE)
    return directory


def _baseline(directory: Path, text: str, name: str = "web.toml") -> str:
    path = directory / name
    path.write_text(text)
    return str(path)


def _plan(host: TestHost, baseline: str) -> tuple[int, dict]:
    result = host.converge("plan", baseline, "--json")
    return result.returncode, json.loads(result.stdout)["hosts"][0]


def _changes(host_plan: dict) -> dict[str, dict]:
    return {change["resource"]: change for change in host_plan["changes"]}


def _local(host: TestHost, kind: str) -> str:
    """What the real tools list as local customisations."""
    return host.run(["semanage", kind, "-l", "-C"]).stdout


def _modules(host: TestHost) -> dict[str, str]:
    return dict(line.split() for line in host.run(["semodule", "-l", "-m"]).stdout.splitlines())


def test_an_unknown_boolean_is_refused_before_any_change(host: TestHost, baseline_dir: Path) -> None:
    text = BASELINE.replace("httpd_enable_homedirs = true", "httpd_enable_homedirs = true\nno_such_boolean = false")
    baseline = _baseline(baseline_dir, text, "unknown.toml")
    code, host_plan = _plan(host, baseline)
    assert code == 1
    assert "no such boolean in policy 'default': no_such_boolean" in host_plan["error"]
    apply = host.converge("apply", baseline, "--yes")
    assert apply.returncode == 1
    assert "no_such_boolean" in apply.stdout
    # The fixture's stock config, untouched (and the engine's apply lock).
    assert [path for path in host.changed_files() if not path.startswith("/run/converge/")] == ["/etc/selinux/config"]
    assert host.read("/etc/selinux/config") == STOCK_CONFIG.read_text()


def test_the_baseline_converges_in_one_apply_and_then_is_in_sync(host: TestHost, baseline_dir: Path) -> None:
    baseline = _baseline(baseline_dir, BASELINE)
    code, host_plan = _plan(host, baseline)
    assert code == 2
    changes = _changes(host_plan)
    assert set(changes) == {
        "mode", "boolean:httpd_can_network_connect_db", "boolean:httpd_can_network_connect", "boolean:httpd_enable_homedirs",
        "fcontext:/srv/www(/.*)?", "fcontext:/var/lib/webapp(/.*)?", "port:tcp/8080", "module:mynginx",
    }
    mode = changes["mode"]
    assert (mode["before"], mode["after"]) == ("permissive", "enforcing")
    # SELinux is disabled in this kernel: the runtime side stays as it is.
    assert (mode["runtime"], mode["persisted"]) == ({"before": "disabled", "after": "disabled"},
                                                    {"before": "permissive", "after": "enforcing"})
    boolean = changes["boolean:httpd_can_network_connect_db"]
    assert (boolean["runtime"], boolean["persisted"]) == ({"before": None, "after": None}, {"before": False, "after": True})
    # What apply will run, in order: modules built first (checkmodule checks them), nothing at runtime.
    operations = [op for op in host_plan["operations"] if op["provider"] == "selinux"]
    assert [op.get("argv", [op["op"], op.get("path")])[0:2] for op in operations] == [
        ["write", "/var/lib/converge/selinux/build/mynginx.te"], ["checkmodule", "-M"], ["semodule_package", "-o"],
        ["write", "/etc/selinux/config"], ["setsebool", "-P"], ["semanage", "import"], ["setfiles", "-v"],
        ["semodule", "-i"], ["sh", "-c"], ["rm", "-rf"],
    ]
    assert operations[5]["input"] == (
        "fcontext -a -f a -t httpd_sys_content_t /srv/www(/.*)?\n"
        "fcontext -a -f a -t httpd_sys_rw_content_t /var/lib/webapp(/.*)?\n"
        "port -m -t http_port_t -p tcp 8080\n"
    )
    assert any("reboot required" in note for note in changes["mode"]["notes"])
    assert changes["port:tcp/8080"]["action"] == "add"

    apply = host.converge("apply", baseline, "--yes", "--json")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    applied = json.loads(apply.stdout)["hosts"][0]
    assert applied["converged"] is True
    assert "selinux: set 3 boolean(s) persistently (setsebool -P)" in applied["applied"]
    assert "selinux: semanage import: 2 file context(s), 1 port(s) in one transaction" in applied["applied"]
    assert "selinux: restorecon -R /srv/www /var/lib/webapp: relabelled 0 file(s)" in applied["applied"]
    # SELinux is disabled in this kernel: apply never claims to have changed the runtime.
    assert not any("setenforce" in line for line in applied["applied"])

    config = host.read("/etc/selinux/config") or ""
    assert "SELINUX=enforcing\n" in config and "SELINUXTYPE=default\n" in config
    assert config.count("#") == STOCK_CONFIG.read_text().count("#")  # comments kept
    booleans = _local(host, "boolean")
    for name in ("httpd_can_network_connect_db", "httpd_can_network_connect", "httpd_enable_homedirs"):
        assert re.search(rf"^{name}\s+\(on\s*,\s*on\)", booleans, re.MULTILINE), booleans
    fcontexts = _local(host, "fcontext")
    assert re.search(r"^/srv/www\(/\.\*\)\?\s+all files\s+system_u:object_r:httpd_sys_content_t:s0", fcontexts, re.MULTILINE)
    assert "/var/lib/webapp(/.*)?" in fcontexts
    assert re.search(r"^http_port_t\s+tcp\s+8080$", _local(host, "port"), re.MULTILINE)
    assert "mynginx" in _modules(host)

    # restorecon does nothing without the kernel; setfiles labels by the same rules, proving them.
    host.run(["mkdir", "-p", "/var/lib/webapp/uploads"])
    host.run(["touch", "/var/lib/webapp/uploads/a.png"])
    assert "httpd_sys_content_t" in host.run(["matchpathcon", "/srv/www/index.html"]).stdout
    host.run(["setfiles", "/etc/selinux/default/contexts/files/file_contexts", "/var/lib/webapp"])
    verified = host.run(["matchpathcon", "-V", "/var/lib/webapp/uploads/a.png"])
    assert "verified" in verified.stdout
    # The label setfiles wrote, read from the file in the host's /var/lib overlay.
    labelled = host.state_dir / "overlay" / "var_lib" / "upper" / "webapp" / "uploads" / "a.png"
    assert os.getxattr(labelled, "security.selinux").rstrip(b"\0") == b"system_u:object_r:httpd_sys_rw_content_t:s0"

    again = host.converge("plan", baseline)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "in sync" in again.stdout
    assert "SELinux is disabled in the running kernel" in again.stdout  # the reboot still to come
    commit_before = host.run(["stat", "-c", "%Y %i", "/var/lib/selinux/default/active/commit_num"]).stdout
    second = host.converge("apply", baseline, "--yes", "--json")
    assert second.returncode == 0
    assert json.loads(second.stdout)["hosts"][0]["applied"] == []
    assert host.run(["stat", "-c", "%Y %i", "/var/lib/selinux/default/active/commit_num"]).stdout == commit_before


def test_changed_values_and_source_converge(host: TestHost, baseline_dir: Path) -> None:
    (baseline_dir / "selinux" / "mynginx.te").write_text(TE_SOURCE.replace("read open getattr", "read open getattr ioctl"))
    modules_before = _modules(host)
    text = (
        BASELINE.replace("httpd_enable_homedirs = true", "httpd_enable_homedirs = false")
        .replace('type = "httpd_sys_content_t"', 'type = "httpd_sys_content_t"\nensure = "absent"')
        .replace('type = "http_port_t"', 'type = "http_cache_port_t"')
        + '\n[[selinux.ports]]\ntype = "http_port_t"\nprotocol = "udp"\nport = "9000-9010"\n'
        + '\n[[selinux.modules]]\nname = "mycil"\nsource = "selinux/mycil.cil"\n'
    )
    (baseline_dir / "selinux" / "mycil.cil").write_text(CIL_SOURCE)
    baseline = _baseline(baseline_dir, text)
    code, host_plan = _plan(host, baseline)
    assert code == 2
    changes = {resource: (c["action"], c["before"], c["after"]) for resource, c in _changes(host_plan).items()}
    source_hash = changes.pop("module:mynginx")
    assert changes.pop("module:mycil") == ("add", None, CIL_HASH)
    assert changes == {
        "boolean:httpd_enable_homedirs": ("update", True, False),
        "fcontext:/srv/www(/.*)?": ("remove", "httpd_sys_content_t", None),
        "port:tcp/8080": ("update", "http_port_t", "http_cache_port_t"),
        "port:udp/9000-9010": ("add", None, "http_port_t"),
    }
    assert source_hash[0] == "update" and source_hash[1] != source_hash[2]

    apply = host.converge("apply", baseline, "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "local: converged" in apply.stdout
    assert "semanage import: 1 file context(s), 2 port(s) in one transaction" in apply.stdout
    assert re.search(r"^httpd_enable_homedirs\s+\(off\s*,\s*off\)", _local(host, "boolean"), re.MULTILINE)
    fcontexts = _local(host, "fcontext")
    assert "/srv/www" not in fcontexts and "/var/lib/webapp(/.*)?" in fcontexts
    ports = _local(host, "port")
    assert re.search(r"^http_cache_port_t\s+tcp\s+8080$", ports, re.MULTILINE)
    assert re.search(r"^http_port_t\s+udp\s+9000-9010$", ports, re.MULTILINE)
    modules = _modules(host)
    assert modules["mynginx"] != modules_before["mynginx"]
    assert modules["mycil"] == CIL_HASH  # the store's checksum of a .cil module is its source's
    assert "semodule: 2 module(s) installed, 0 removed in one transaction" in apply.stdout
    assert host.converge("plan", baseline).returncode == 0


def test_a_module_replaced_outside_converge_is_noticed_and_absent_removes_it(host: TestHost, baseline_dir: Path) -> None:
    host.write("/root/mynginx.cil", "(allow httpd_t self (process (setrlimit)))\n")
    host.run(["semodule", "-i", "/root/mynginx.cil"])
    module_table = '[[selinux.modules]]\nname = "mynginx"\nsource = "selinux/mynginx.te"\n'
    baseline = _baseline(baseline_dir, f"[selinux]\n{module_table}", "modules.toml")
    code, host_plan = _plan(host, baseline)
    assert code == 2
    assert _changes(host_plan)["module:mynginx"]["notes"] == ["module in the store was replaced since converge installed it"]

    absent = _baseline(baseline_dir, '[selinux]\n[[selinux.modules]]\nname = "mynginx"\nensure = "absent"\n', "absent.toml")
    apply = host.converge("apply", absent, "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "mynginx" not in _modules(host)
    assert host.read("/var/lib/converge/selinux/modules/mynginx.sha256") is None
    assert host.converge("plan", absent).returncode == 0


def test_a_failing_import_leaves_every_record_as_it_was(host: TestHost, baseline_dir: Path) -> None:
    before = host.run(["semanage", "export"]).stdout
    text = (
        '[selinux]\n[[selinux.ports]]\ntype = "http_port_t"\nprotocol = "tcp"\nport = 8081\n'
        '[[selinux.fcontexts]]\npath = "/var/lib/other(/.*)?"\ntype = "no_such_type_t"\n'
    )
    apply = host.converge("apply", _baseline(baseline_dir, text, "broken.toml"), "--yes")
    assert apply.returncode == 1
    assert "no_such_type_t" in apply.stdout
    assert host.run(["semanage", "export"]).stdout == before  # the port went in with nothing else


PUBLIC = Path(__file__).parent / "data" / "selinux" / "public"


def _store(host: TestHost) -> tuple[list[str], dict[str, str], str | None]:
    """The local customisations (semanage export, sorted), the modules and converge's record of mycil."""
    return (sorted(host.run(["semanage", "export"]).stdout.splitlines()), _modules(host),
            host.read("/var/lib/converge/selinux/modules/mycil.sha256"))


def test_a_module_semodule_refuses_undoes_the_import_and_the_booleans_with_semodules_reason(
        host: TestHost, baseline_dir: Path) -> None:
    """A public module (vscode.te, hspaans/selinux) needing container_t, which Debian's policy lacks:
    checkmodule builds it, semodule refuses the transaction; every earlier step is undone."""
    before = _store(host)
    assert "mycil" in before[1] and before[2] is not None
    (baseline_dir / "selinux" / "vscode.te").write_text((PUBLIC / "vscode.te").read_text())
    (baseline_dir / "selinux" / "mycil.cil").write_text("(allow httpd_t self (process (setrlimit setsched)))\n")
    text = (
        '[selinux.booleans]\nhttpd_enable_homedirs = true\n'
        '[[selinux.fcontexts]]\npath = "/var/lib/webapp(/.*)?"\nensure = "absent"\n'
        '[[selinux.ports]]\ntype = "http_port_t"\nprotocol = "tcp"\nport = 8080\n'
        '[[selinux.ports]]\ntype = "http_port_t"\nprotocol = "tcp"\nport = 8083\n'
        '[[selinux.modules]]\nname = "mycil"\nsource = "selinux/mycil.cil"\n'
        '[[selinux.modules]]\nname = "vscode"\nsource = "selinux/vscode.te"\n'
    )
    baseline = _baseline(baseline_dir, "[selinux]\n" + text, "refused.toml")
    code, host_plan = _plan(host, baseline)
    assert code == 2
    operations = [op for op in host_plan["operations"] if op["provider"] == "selinux"]
    imports = [op for op in operations if op.get("argv") == ["semanage", "import"]]
    assert imports[0]["input"] == ("fcontext -d -f a /var/lib/webapp(/.*)?\n"
                                   "port -m -t http_port_t -p tcp 8080\nport -a -t http_port_t -p tcp 8083\n")
    # The inverse import, built from live, rides on the operation after it (restorecon).
    assert operations[operations.index(imports[0]) + 1]["undo"][0]["input"] == (
        "port -d -p tcp 8083\nport -m -t http_cache_port_t -p tcp 8080\n"
        "fcontext -a -f a -t httpd_sys_rw_content_t /var/lib/webapp(/.*)?\n")

    apply = host.converge("apply", baseline, "--yes")
    assert apply.returncode == 1
    # semodule's own reason, not its bare "Failed!" (issue 16, defect 7).
    assert re.search(r"`semodule -i \S+/mycil\.cil -i \S+/vscode\.pp` failed: semodule: Failed to resolve "
                     r"typeattributeset statement at /var/lib/selinux/default/tmp/modules/400/vscode/cil:1", apply.stdout)
    assert "what was done before it was undone" in apply.stdout
    assert "undoing it failed" not in apply.stdout
    assert _store(host) == before  # booleans, ports, file contexts, modules and records as they were
    assert host.read("/var/lib/converge/selinux/build/vscode.te") is None  # the build is cleaned up


# Run inside the host: the real provider and tools on its store, the record step after semodule failing.
FAILING_RECORD = """
import sys
from converge.hosts.local import LocalHost
from converge.provider import CommandResult, ProviderError, execute
from converge.providers.selinux import SelinuxProvider
from converge.providers.selinux.operations import RECORD_SCRIPT
from converge.providers.selinux.spec import SelinuxSpec

class RecordFails(LocalHost):
    def run(self, argv, *, input=None, check=True):
        if list(argv[:3]) == ["sh", "-c", RECORD_SCRIPT]:
            return CommandResult(tuple(argv), 1, "", "injected: the record step fails")
        return super().run(argv, input=input, check=check)

provider = SelinuxProvider()
spec = SelinuxSpec.model_validate({
    "ports": [{"type": "http_port_t", "protocol": "tcp", "port": 8084}],
    "modules": [{"name": "mycil", "source": sys.argv[1]}, {"name": "mynewcil", "source": sys.argv[2]}]})
facts = LocalHost().gather([*provider.presence_reads(), *provider.reads(spec)])
plan = provider.diff(spec, provider.live(spec, facts))
print([change.resource for change in plan.changes])
try:
    execute(RecordFails(), plan.operations)
except ProviderError as error:
    print(error)
"""


def test_a_replaced_module_comes_back_when_a_later_step_fails(host: TestHost, baseline_dir: Path) -> None:
    """mycil is replaced in the store and mynewcil added, then the record step fails: the transaction's
    undo installs the version `semodule -E` saved before it (same checksum) and removes mynewcil,
    and the import before it is undone."""
    before = _store(host)
    (baseline_dir / "selinux" / "mycil.cil").write_text("(allow httpd_t self (process (setrlimit setsched)))\n")
    (baseline_dir / "selinux" / "mynewcil.cil").write_text("(allow httpd_t self (process (getsched)))\n")
    result = host.run([sys.executable, "-c", FAILING_RECORD, str(baseline_dir / "selinux" / "mycil.cil"),
                       str(baseline_dir / "selinux" / "mynewcil.cil")], check=False)
    lines = result.stdout.splitlines()
    assert lines[0] == "['port:tcp/8084', 'module:mycil', 'module:mynewcil']", result.stdout + result.stderr
    assert result.stdout.rstrip().endswith(
        "failed: sh: injected: the record step fails; what was done before it was undone"), result.stdout
    assert _store(host) == before
    assert "mynewcil" not in _modules(host)
