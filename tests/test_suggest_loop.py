"""The closed loop, offline: the proposals for the real records of tests/data/suggest, written by
`suggest --write` as `<name>.suggested.toml`, applied by converge itself to Debian's policy store in a
namespace test host (/etc/selinux and /var/lib/selinux are its overlays: real setsebool -P, semanage
import and semodule rebuild the policy there). The same records analysed again against the rebuilt
policy and file contexts: every proposed group is allowed now (a file context's files once
relabelled), every refused one is still refused, and nothing is proposed a second time."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from converge.auditlog import parse_records
from converge.baseline import load_baseline
from converge.providers.selinux import suggest as selinux_suggest
from converge.registry import Registry
from converge.suggest import PROPOSING, HostSuggestions, Suggestion, exit_code, write_overlay
from tests.testhost import TestHost

DATA = Path(__file__).parent / "data" / "suggest"
FILES = ["raw-syscall.log", "raw-permissive.log", "node.log", "printk.log", "enriched.log", "journal.log", "pages.log",
         "labels.log"]
STOCK_CONFIG = Path(__file__).parent / "data" / "selinux" / "config"
POLICY = "/etc/selinux/default/policy/policy.33"
CONTEXTS = "/etc/selinux/default/contexts/files/file_contexts"
BASELINE = '[selinux]\npolicy = "default"\n\n[selinux.booleans]\nhttpd_can_network_connect = false\n'
PINNED = {"httpd_can_network_connect": False}


def analyse(groups: Sequence[selinux_suggest.Group], policy: str, contexts: str) -> list[Suggestion]:
    return selinux_suggest.analyse_with_helper(groups, policy_file=policy, contexts=contexts, pinned=PINNED, host="loop",
                                               last_load=None, source="samples")


def by_records(suggestions: Sequence[Suggestion]) -> dict[str, list[Suggestion]]:
    """The suggestions each record (audit event id, else the access) ended in: a module carries
    several groups, a group restorecon fixes only in part is a relabel and a proposal."""
    found: dict[str, list[Suggestion]] = {}
    for s in suggestions:
        for evidence in s.evidence.get("groups", [s.evidence]):
            for key in evidence["events"] or [evidence["access"]]:
                found.setdefault(key, []).append(s)
    return found


def test_every_proposal_applied_by_converge_is_allowed_after_and_nothing_is_proposed_again(tmp_path: Path) -> None:
    records = "".join((DATA / name).read_text(encoding="utf-8") for name in FILES)
    groups, _ = selinux_suggest.denial_groups(parse_records(records, "samples"), None)
    before = analyse(groups, POLICY, CONTEXTS)
    proposed = {key: s for key, found in by_records(before).items() for s in found if s.kind in PROPOSING}
    refused = {key: s for key, found in by_records(before).items() for s in found if s.kind == "refused"}
    assert {s.kind for s in proposed.values()} == {"fcontext", "port", "boolean", "module"}
    assert len({s.resource for s in refused.values()}) >= 3

    (tmp_path / "web.toml").write_text(BASELINE)
    written = write_overlay(load_baseline(tmp_path / "web.toml", Registry()), [HostSuggestions("loop", "local", before)])
    overlay = written[0]
    assert overlay.name == "web.suggested.toml" and [p.suffix for p in written[1:]] == [".te", ".te"]
    # The relabel after the import runs on the file contexts' roots; outside the test host's
    # overlays it would reach this machine's own files, so none of those may exist.
    roots = [fc["path"].removesuffix("(/.*)?") for s in proposed.values() for fc in s.table.get("fcontexts", [])]
    assert not [root for root in roots if not root.startswith(("/var/lib/", "/etc/")) and Path(root).exists()]

    host = TestHost(tmp_path / "host", name="suggest-loop")
    try:
        host.write("/etc/selinux/config", STOCK_CONFIG.read_text())
        applied = host.converge("apply", str(overlay), "--yes", "--json")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        record = json.loads(applied.stdout)["hosts"][0]
        assert record["converged"] is True, record
        assert any(line.startswith("selinux: semodule: 2 module(s) installed") for line in record["applied"])
        # the rebuilt policy and the host's file contexts (the local ones beside the stock file)
        rebuilt = host.state_dir / "overlay" / "etc" / "upper" / "selinux" / "default" / "policy" / "policy.33"
        assert rebuilt.exists()
        contexts = tmp_path / "file_contexts"
        shutil.copyfile(CONTEXTS, contexts)
        (tmp_path / "file_contexts.local").write_text(host.read(CONTEXTS + ".local") or "")
        after = analyse(groups, str(rebuilt), str(contexts))
    finally:
        host.close()

    now = by_records(after)
    for key, proposal in proposed.items():
        # a file context's files are labelled by restorecon (relabel: host drift); the rest is allowed
        wanted = "relabel" if proposal.kind == "fcontext" else "stale"
        assert [s.kind for s in now[key]] == [wanted], (proposal.resource, [(s.kind, s.notes) for s in now[key]])
        if proposal.kind == "fcontext":
            assert proposal.table["fcontexts"][0]["type"] in now[key][0].notes[0]
    for key, refusal in refused.items():
        assert [(s.kind, s.notes) for s in now[key]] == [("refused", refusal.notes)]
    assert exit_code([HostSuggestions("loop", "local", after)]) == 0


@pytest.fixture(autouse=True)
def _needs_the_store() -> None:
    # Debian's selinux-policy-default (.ci/packages) provides the store this test copies into its host.
    assert Path(POLICY).exists() and Path("/var/lib/selinux/default/active").is_dir()
