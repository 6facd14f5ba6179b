"""The SELinux provider where the kernel or the subsystem is missing, and baselines it refuses.

This machine's kernel has no SELinux. The kernel seam reads selinuxfs, so a test host with a
stand-in selinuxfs (a tmpfs holding files in the kernel's format) is planned as a host whose
kernel runs SELinux; setenforce, which needs the real kernel, then fails, and apply says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from converge.provider import CommandResult, Facts, Host, Operation, Read, Remove, Run, Write
from converge.providers.selinux import SelinuxProvider
from converge.providers.selinux.kernel import KernelState
from converge.providers.selinux.provider import SelinuxLive
from converge.providers.selinux.spec import SelinuxSpec
from tests.testhost import TestHost

STOCK_CONFIG = (Path(__file__).parent / "data" / "selinux" / "config").read_text()


def _write_baseline(tmp_path: Path, text: str) -> str:
    path = tmp_path / "baseline.toml"
    path.write_text(text)
    return str(path)


def _stand_in_selinuxfs(host: TestHost, enforce: str, booleans: dict[str, str]) -> None:
    """A tmpfs over /sys/fs inside the host only (its mount namespace is private)."""
    host.run(["mount", "-t", "tmpfs", "stand-in-selinuxfs", "/sys/fs"])
    host.write("/sys/fs/selinux/enforce", enforce)
    for name, value in booleans.items():
        host.write(f"/sys/fs/selinux/booleans/{name}", value)


def test_runtime_state_comes_from_the_kernel_and_is_never_claimed(test_host: TestHost, tmp_path: Path) -> None:
    test_host.write("/etc/selinux/config", STOCK_CONFIG)  # SELINUX=permissive
    _stand_in_selinuxfs(test_host, "0", {"httpd_enable_homedirs": "1 1", "httpd_can_network_connect": "0 0"})
    baseline = _write_baseline(tmp_path, '[selinux]\nmode = "enforcing"\n[selinux.booleans]\n'
                                         "httpd_enable_homedirs = false\nhttpd_can_network_connect = false\n")
    plan = test_host.converge("plan", baseline, "--json")
    assert plan.returncode == 2, plan.stderr
    changes = {c["resource"]: c for c in json.loads(plan.stdout)["hosts"][0]["changes"]}
    assert set(changes) == {"mode", "boolean:httpd_enable_homedirs"}
    mode = changes["mode"]
    assert (mode["before"], mode["after"]) == ("permissive", "enforcing")
    assert (mode["runtime"], mode["persisted"]) == ({"before": "permissive", "after": "enforcing"},
                                                    {"before": "permissive", "after": "enforcing"})
    assert changes["mode"]["notes"] == ["SELINUX=enforcing in /etc/selinux/config", "runtime too (setenforce)"]
    boolean = changes["boolean:httpd_enable_homedirs"]
    assert (boolean["before"], boolean["after"]) == (False, False)
    assert (boolean["runtime"], boolean["persisted"]) == ({"before": True, "after": False}, {"before": False, "after": False})
    operations = [op for op in json.loads(plan.stdout)["hosts"][0]["operations"] if op["provider"] == "selinux"]
    assert [op.get("argv", [op["op"], op.get("path")])[:3] for op in operations] == [
        ["setenforce", "1"], ["write", "/etc/selinux/config"], ["setsebool", "-P", "httpd_enable_homedirs=0"]]
    assert boolean["notes"] == ["persistent already; runtime differs"]

    # setenforce needs the real kernel: apply fails, claims nothing and leaves the config alone.
    apply = test_host.converge("apply", baseline, "--yes")
    assert apply.returncode == 1
    assert "apply failed: `setenforce 1` failed" in apply.stdout
    assert "runtime mode set" not in apply.stdout and "converged" not in apply.stdout
    assert test_host.read("/etc/selinux/config") == STOCK_CONFIG
    assert test_host.read("/sys/fs/selinux/enforce") == "0"

    test_host.write("/etc/selinux/config", STOCK_CONFIG.replace("SELINUX=permissive", "SELINUX=enforcing"))
    mode = json.loads(test_host.converge("plan", baseline, "--json").stdout)["hosts"][0]["changes"][0]
    assert (mode["resource"], mode["before"], mode["after"], mode["notes"]) == (
        "mode", "enforcing", "enforcing", ["runtime only (setenforce)"])
    assert mode["runtime"] == {"before": "permissive", "after": "enforcing"}


def test_enabling_from_disabled_needs_a_reboot_and_a_relabel(test_host: TestHost, tmp_path: Path) -> None:
    # Planned only: apply would create /.autorelabel, and a test host's / is the machine's own.
    test_host.write("/etc/selinux/config", STOCK_CONFIG.replace("SELINUX=permissive", "SELINUX=disabled"))
    plan = test_host.converge("plan", _write_baseline(tmp_path, '[selinux]\nmode = "permissive"\n'), "--json")
    assert plan.returncode == 2
    [change] = json.loads(plan.stdout)["hosts"][0]["changes"]
    assert (change["resource"], change["before"], change["after"]) == ("mode", "disabled", "permissive")
    assert change["notes"] == [
        "SELINUX=permissive in /etc/selinux/config",
        "reboot required: SELinux cannot be turned on or off at runtime",
        "schedules a full relabel at the next boot (/.autorelabel)",
    ]


def test_a_host_without_selinux_is_skipped_or_an_error_when_required(test_host: TestHost, tmp_path: Path) -> None:
    test_host.run(["rm", "/etc/selinux/config"])
    plan = test_host.converge("plan", _write_baseline(tmp_path, '[selinux]\nmode = "enforcing"\n'), "--json")
    assert plan.returncode == 0
    assert json.loads(plan.stdout)["hosts"][0]["skipped"] == [
        {"provider": "selinux", "reason": "no SELinux policy installed (no /etc/selinux/config)"}
    ]
    required = test_host.converge("plan", _write_baseline(tmp_path, '[selinux]\nrequired = true\nmode = "enforcing"\n'))
    assert required.returncode == 1
    assert "selinux: required by the baseline, but no SELinux policy installed" in required.stdout


def test_an_uninstalled_policy_is_an_error(test_host: TestHost, tmp_path: Path) -> None:
    plan = test_host.converge("plan", _write_baseline(tmp_path, '[selinux]\npolicy = "mls"\n'))
    assert plan.returncode == 1
    assert "policy 'mls' is not installed" in plan.stdout


BAD_BASELINES = [
    ('[selinux]\nmode = "enforce"\n', 2, "selinux.mode"),
    ('[selinux]\n[selinux.booleans]\nhttpd_enable_homedirs = true\n"httpd;reboot" = true\n', 4,
     'selinux.booleans."httpd;reboot"'),
    ('[selinux]\n[[selinux.fcontexts]]\npath = "/srv/www $(reboot)"\ntype = "httpd_sys_content_t"\n', 3,
     "selinux.fcontexts[0].path"),
    ('[selinux]\n[[selinux.ports]]\ntype = "http_port_t"\nprotocol = "tcp"\nport = 70000\n', 5, "selinux.ports[0].port"),
    ('[selinux]\n[[selinux.ports]]\ntype = "http port"\nprotocol = "tcp"\nport = 80\n', 3, "selinux.ports[0].type"),
    ('[selinux]\n[[selinux.modules]]\nname = "mymod"\nsourc = "x.te"\n', 4, "selinux.modules[0].sourc"),
    # Issue 23 finding 9: the second alternative labels /etc/shadow.
    ('[selinux]\n[[selinux.fcontexts]]\npath = "/etc/www(/.*)?|/etc/shadow"\ntype = "httpd_sys_content_t"\n', 3,
     "selinux.fcontexts[0].path"),
]


@pytest.mark.parametrize(("text", "line", "key"), BAD_BASELINES)
def test_validate_names_the_key_and_line_of_a_bad_value(tmp_path: Path, text: str, line: int, key: str) -> None:
    path = _write_baseline(tmp_path, text)
    result = subprocess.run([sys.executable, "-m", "converge", "validate", path], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert f"{path}:{line}: {key}: " in result.stderr, result.stderr


def test_a_module_source_must_declare_the_module_it_is_named_for(tmp_path: Path) -> None:
    (tmp_path / "other.te").write_text("module other 1.0;\n")
    path = _write_baseline(tmp_path, '[selinux]\n[[selinux.modules]]\nname = "mymod"\nsource = "other.te"\n')
    result = subprocess.run([sys.executable, "-m", "converge", "validate", path], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    message = "other.te must declare `module mymod <version>;` or `policy_module(mymod, <version>)`, found `module other`"
    assert f"{path}:4: selinux.modules[0].source: {message}" in result.stderr
    (tmp_path / "other.te").write_text("policy_module(other, 1.0)\n")
    result = subprocess.run([sys.executable, "-m", "converge", "validate", path], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "found `policy_module(other, ...)`" in result.stderr


def test_a_module_checkmodule_refuses_stops_apply_before_any_change(test_host: TestHost, tmp_path: Path) -> None:
    (tmp_path / "broken.te").write_text("module broken 1.0;\n\nallow httpd_t undeclared_t:file read;\n")
    baseline = _write_baseline(tmp_path, '[selinux]\n[selinux.booleans]\nhttpd_enable_homedirs = true\n'
                                         '[[selinux.modules]]\nname = "broken"\nsource = "broken.te"\n')
    plan = test_host.converge("plan", baseline, "--json")
    planned = {c["resource"] for c in json.loads(plan.stdout)["hosts"][0]["changes"]}
    assert planned == {"boolean:httpd_enable_homedirs", "module:broken"}
    apply = test_host.converge("apply", baseline, "--yes")
    assert apply.returncode == 1
    assert "apply failed: `checkmodule -M -m" in apply.stdout
    # The boolean was not set either, and the build directory is gone (the engine's lock aside).
    assert [path for path in test_host.changed_files() if not path.startswith("/run/converge/")] == []


class RecordingHost(Host):
    """Records what apply does; every command succeeds (restorecon says it relabelled one file)."""

    def __init__(self) -> None:
        super().__init__("recording", "recording")
        self.done: list[Operation] = []

    def gather(self, reads: Iterable[Read]) -> Facts:
        raise AssertionError("apply reads nothing")

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True) -> CommandResult:
        self.done.append(Run(tuple(argv), input))
        stdout = "Relabeled /srv/www from a to b\n" if argv[0] == "restorecon" else ""
        return CommandResult(tuple(argv), 0, stdout, "")

    def read_file(self, path: str) -> str | None:
        raise AssertionError("apply reads nothing")

    def write_file(self, path: str, content: str, *, mode: int = 0o644) -> str | None:
        self.done.append(Write(path, content, mode))
        return None

    def remove_file(self, path: str) -> str | None:
        self.done.append(Remove(path))
        return None

    def lock(self, holder: str, wait: float = 0.0) -> None:
        pass


def _bare(operation: Operation) -> Operation:
    match operation:
        case Run(argv, input=text):
            return Run(argv, text)
        case Write(path, content, mode=mode):
            return Write(path, content, mode)
        case Remove(path):
            return Remove(path)


def test_apply_runs_exactly_the_plans_operations_in_order(tmp_path: Path) -> None:
    (tmp_path / "my-app.cil").write_text("(allow httpd_t self (process (setrlimit)))\n")
    spec = SelinuxSpec.model_validate({
        "mode": "enforcing", "booleans": {"httpd_enable_homedirs": True},
        "fcontexts": [{"path": "/srv/www(/.*)?", "type": "httpd_sys_content_t"}],
        "ports": [{"type": "http_port_t", "protocol": "tcp", "port": 8080}],
        "modules": [{"name": "my-app", "source": str(tmp_path / "my-app.cil")}, {"name": "old", "ensure": "absent"}],
    })
    live = SelinuxLive(STOCK_CONFIG, "default", KernelState("permissive", {"httpd_enable_homedirs": False}), False,
                       {"httpd_enable_homedirs": False}, {}, {("/var/www(/.*)?", "all")}, {}, {("tcp", "8080")},
                       {"old": "sha256:00"}, {"old": "source sha256:11\nmodule sha256:00\n"}, {"old": "pp"})
    plan = SelinuxProvider().diff(spec, live)
    host = RecordingHost()
    done = SelinuxProvider().apply(host, plan)
    assert host.done == [_bare(operation) for operation in plan.operations]
    assert [op.argv[:2] if isinstance(op, Run) else (type(op).__name__, op.path) for op in plan.operations] == [
        ("Write", "/var/lib/converge/selinux/build/my-app.cil"), ("setenforce", "1"), ("Write", "/etc/selinux/config"),
        ("setsebool", "-P"), ("semanage", "import"), ("restorecon", "-R"), ("sh", "-c"), ("semodule", "-i"), ("sh", "-c"),
        ("Remove", "/var/lib/converge/selinux/modules/old.sha256"), ("rm", "-rf"),
    ]
    # The module removed is extracted first; the transaction's undo puts it back and removes the new one.
    assert plan.operations[6].argv[4:] == ("/var/lib/converge/selinux/build/previous", "400", "old")
    # semanage import and semodule are transactions (refused, they change nothing): each one's undo is
    # carried by the operation after it, so it runs only once the transaction went in.
    assert plan.operations[7] == Run(("semodule", "-i", "/var/lib/converge/selinux/build/my-app.cil", "-r", "old"),
                                     says="semodule: 1 module(s) installed, 1 removed in one transaction")
    assert plan.operations[8].undo[-1] == Run(
        ("semodule", "-X", "400", "-i", "/var/lib/converge/selinux/build/previous/old.pp", "-r", "my-app"))
    # The import's undo: the inverse lines (8080 is the policy's: a local one is deleted), then the relabel again.
    assert plan.operations[4].undo == ()
    assert plan.operations[5].undo == (
        Run(("semanage", "import"), input="port -d -p tcp 8080\nfcontext -d -f a /srv/www(/.*)?\n"),
        Run(("restorecon", "-R", "-v", "-i", "/srv/www"), says="restorecon -R /srv/www"))
    assert "restorecon -R /srv/www: relabelled 1 file(s)" in done
    # JSON of the plan: values, never prose.
    for change in plan.changes:
        record = change.as_json()
        assert all(not isinstance(record[side], str) or " " not in record[side] for side in ("before", "after"))
