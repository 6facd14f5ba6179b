"""Policy modules as people publish them (tests/data/selinux/public, sources in SOURCES.md), on
Debian's policy store in a test host: reference-policy modules built with selinux-policy-dev's
Makefile, prebuilt .pp packages, and modules the build or semodule refuse, with the tool's reason
(issue 16, defects 6 and 7)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.test_selinux_edges import STOCK_CONFIG
from tests.testhost import TestHost

PUBLIC = Path(__file__).parent / "data" / "selinux" / "public"
MAKEFILE = "/usr/share/selinux/devel/Makefile"

pytestmark = pytest.mark.skipif(not Path(MAKEFILE).exists(), reason="selinux-policy-dev is not installed")


def _module_baseline(directory: Path, source: str, name: str = "testcat") -> str:
    path = directory / f"{name}.toml"
    path.write_text(f'[selinux]\n[[selinux.modules]]\nname = "{name}"\nsource = "{source}"\n')
    return str(path)


def _modules(host: TestHost) -> dict[str, str]:
    return dict(line.split() for line in host.run(["semodule", "-l", "-m"]).stdout.splitlines())


def test_a_reference_policy_module_is_built_with_the_devel_makefile_and_a_prebuilt_pp_installs(
        test_host: TestHost, tmp_path: Path) -> None:
    test_host.write("/etc/selinux/config", STOCK_CONFIG)
    shutil.copytree(PUBLIC / "testcat", tmp_path / "testcat")
    baseline = _module_baseline(tmp_path, "testcat/testcat.te")
    plan = test_host.converge("plan", baseline, "--json")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    host_plan = json.loads(plan.stdout)["hosts"][0]
    assert [c["notes"] for c in host_plan["changes"]] == [["from refpolicy source"]]
    operations = [op.get("argv") or [op["op"], op["path"]] for op in host_plan["operations"]]
    assert operations[:3] == [
        ["write", "/var/lib/converge/selinux/build/testcat/testcat.te"],
        ["write", "/var/lib/converge/selinux/build/testcat/testcat.fc"],
        ["make", "-C", "/var/lib/converge/selinux/build/testcat", "-f", MAKEFILE, "testcat.pp"],
    ]
    assert operations[3] == ["semodule", "-i", "/var/lib/converge/selinux/build/testcat/testcat.pp"]
    apply = test_host.converge("apply", baseline, "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "testcat" in _modules(test_host)
    # The module's .fc went in with it: the store's file contexts label /usr/bin/testcat.
    assert "testcat_exec_t" in test_host.run(["matchpathcon", "/usr/bin/testcat"]).stdout
    assert test_host.converge("plan", baseline).returncode == 0

    # The same public source built by hand into a .pp, declared as the source instead.
    test_host.run(["make", "-C", str(tmp_path / "testcat"), "-f", MAKEFILE, "testcat.pp"])
    prebuilt = _module_baseline(tmp_path, "testcat/testcat.pp")
    plan = json.loads(test_host.converge("plan", prebuilt, "--json").stdout)["hosts"][0]
    assert [(c["resource"], c["notes"]) for c in plan["changes"]] == [("module:testcat", ["source changed"])]
    apply = test_host.converge("apply", prebuilt, "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert test_host.converge("plan", prebuilt).returncode == 0


def test_a_pp_holding_another_module_is_refused_at_validate(test_host: TestHost, tmp_path: Path) -> None:
    shutil.copytree(PUBLIC / "testcat", tmp_path / "testcat")
    test_host.run(["make", "-C", str(tmp_path / "testcat"), "-f", MAKEFILE, "testcat.pp"])
    result = test_host.converge("validate", _module_baseline(tmp_path, "testcat/testcat.pp", name="other"))
    assert result.returncode != 0
    assert "testcat.pp holds module 'testcat', not 'other'" in result.stdout + result.stderr


def test_without_selinux_policy_dev_a_reference_policy_module_is_refused_saying_what_to_install(
        test_host: TestHost, tmp_path: Path) -> None:
    test_host.write("/etc/selinux/config", STOCK_CONFIG)
    # An empty directory over the devel files, in the host's private mount namespace only.
    test_host.run(["mount", "-t", "tmpfs", "no-devel", "/usr/share/selinux/devel"])
    shutil.copytree(PUBLIC / "testcat", tmp_path / "testcat")
    plan = test_host.converge("plan", _module_baseline(tmp_path, "testcat/testcat.te"))
    assert plan.returncode == 1
    assert (f"testcat: a reference-policy module (policy_module) is built with {MAKEFILE}, which this host lacks: "
            "install selinux-policy-dev") in plan.stdout + plan.stderr


def test_a_public_module_the_build_refuses_changes_nothing_and_says_why(test_host: TestHost, tmp_path: Path) -> None:
    """testprog (lab15) uses files_pid_file, which Debian's reference policy no longer defines."""
    test_host.write("/etc/selinux/config", STOCK_CONFIG)
    shutil.copytree(PUBLIC / "testprog", tmp_path / "testprog")
    before = _modules(test_host)
    apply = test_host.converge("apply", _module_baseline(tmp_path, "testprog/testprog.te", name="testprog"), "--yes")
    assert apply.returncode == 1
    assert "testprog.te:41:ERROR 'syntax error' at token 'files_pid_file'" in apply.stdout, apply.stdout
    assert _modules(test_host) == before
    assert test_host.read("/var/lib/converge/selinux/build/testprog/testprog.te") is None
