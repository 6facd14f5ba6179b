"""Label drift in plan: files under a managed file context whose label is not the policy's are a change
(`relabel N files`) that apply fixes, in a namespace test host whose /var/lib and /etc/selinux are
overlays on this machine's ext4, which keeps `security.selinux` attributes. The kernel has no
SELinux here, so the provider's kernel seam (kernel.py) checks with `setfiles -n` and relabels with
`setfiles`; restorecon, for an SELinux kernel, is the VM tier's."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from converge.provider import CommandResult, Facts
from converge.providers.selinux.kernel import KernelState, relabel_argv, relabel_check
from converge.providers.selinux.provider import SelinuxLive, SelinuxProvider, live_label_drift
from converge.providers.selinux.spec import SelinuxSpec
from tests.testhost import TestHost

STOCK_CONFIG = Path(__file__).parent / "data" / "selinux" / "config"
BASELINE = """
[selinux]
policy = "default"

[[selinux.fcontexts]]
path = "/var/lib/webapp(/.*)?"
type = "httpd_sys_rw_content_t"
"""
WANTED = b"system_u:object_r:httpd_sys_rw_content_t:s0"
SET_LABEL = "import os, sys; os.setxattr(sys.argv[1], 'security.selinux', sys.argv[2].encode() + b'\\0')"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestHost]:
    test_host = TestHost(tmp_path_factory.mktemp("drift") / "host", name="drift-host")
    test_host.write("/etc/selinux/config", STOCK_CONFIG.read_text())
    try:
        yield test_host
    finally:
        test_host.close()


def _label(host: TestHost, path: str) -> bytes:
    """The attribute as stored in the host's /var/lib overlay (its upper layer, on this machine)."""
    stored = host.state_dir / "overlay" / "var_lib" / "upper" / path.removeprefix("/var/lib/")
    return os.getxattr(stored, "security.selinux").rstrip(b"\0")


def test_mislabelled_files_are_a_relabel_change_that_apply_fixes(host: TestHost, tmp_path: Path) -> None:
    baseline = tmp_path / "web.toml"
    baseline.write_text(BASELINE)
    first = host.converge("apply", str(baseline), "--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    # Files made after the file context: one unlabelled (as a copy without -Z leaves it), one with the
    # label its directory had before (var_lib_t), one already right.
    host.run(["mkdir", "-p", "/var/lib/webapp/uploads"])
    for name in ("a.png", "b.png", "c.png"):
        host.run(["touch", f"/var/lib/webapp/uploads/{name}"])
    host.run(["setfiles", "/etc/selinux/default/contexts/files/file_contexts", "/var/lib/webapp"])
    host.run([sys.executable, "-c", SET_LABEL, "/var/lib/webapp/uploads/a.png", "system_u:object_r:var_lib_t:s0"])
    host.run(["touch", "/var/lib/webapp/uploads/new.png"])
    assert _label(host, "/var/lib/webapp/uploads/b.png") == WANTED

    plan = host.converge("plan", str(baseline), "--json")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    (change,) = json.loads(plan.stdout)["hosts"][0]["changes"]
    assert (change["kind"], change["name"], change["before"], change["after"]) == ("relabel", "/var/lib/webapp", 2, 0)
    assert change["notes"][0] == "relabel 2 file(s) whose label is not the policy's"
    assert "/var/lib/webapp/uploads/a.png: var_lib_t -> httpd_sys_rw_content_t" in change["notes"]
    assert host.converge("plan", str(baseline)).stdout.count("relabel 2 file(s)") == 1

    applied = host.converge("apply", str(baseline), "--yes", "--json")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    record = json.loads(applied.stdout)["hosts"][0]
    assert record["converged"] is True
    assert "selinux: relabelled 2 file(s) under /var/lib/webapp" in record["applied"]
    for name in ("a.png", "b.png", "new.png"):
        assert _label(host, f"/var/lib/webapp/uploads/{name}") == WANTED
    again = host.converge("plan", str(baseline))
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_root_whose_file_context_changes_is_relabelled_by_the_import_not_twice() -> None:
    spec = SelinuxSpec.model_validate({"fcontexts": [
        {"path": "/srv/www(/.*)?", "type": "httpd_sys_content_t"}, {"path": "/var/lib/app(/.*)?", "type": "var_lib_t"}]})
    check = relabel_check(None, ["/srv/www", "/var/lib/app"])
    facts = Facts({check: CommandResult(check.argv, 0, (
        "Would relabel /srv/www/index.html from system_u:object_r:var_t:s0 to system_u:object_r:httpd_sys_content_t:s0\n"
        "Would relabel /var/lib/app/x from (null) to system_u:object_r:var_lib_t:s0\n"), "")})
    drift = live_label_drift(spec, facts)
    assert drift == {"/srv/www": [("/srv/www/index.html", "system_u:object_r:var_t:s0",
                                   "system_u:object_r:httpd_sys_content_t:s0")],
                     "/var/lib/app": [("/var/lib/app/x", "(null)", "system_u:object_r:var_lib_t:s0")]}
    live = SelinuxLive("SELINUX=permissive\nSELINUXTYPE=default\n", "default", KernelState("disabled", {}), False, {},
                       {("/var/lib/app(/.*)?", "all"): "var_lib_t"}, {("/var/www(/.*)?", "all")}, {}, set(), {}, {},
                       label_drift=drift)
    plan = SelinuxProvider().diff(spec, live)
    # /srv/www's file context is added: its import relabels it; /var/lib/app's is in sync: a change of its own
    assert [(c.kind, c.name) for c in plan.changes] == [("fcontext", "/srv/www(/.*)?"), ("relabel", "/var/lib/app")]
    assert plan.operations[-1].argv == relabel_argv(live.kernel, "default", ["/var/lib/app"])  # type: ignore[union-attr]
    assert relabel_argv(live.kernel, "default", ["/x"]) == (
        "setfiles", "-v", "-i", "/etc/selinux/default/contexts/files/file_contexts", "/x")
    assert relabel_argv(KernelState("enforcing", {}), "default", ["/x"]) == ("restorecon", "-R", "-v", "-i", "/x")
