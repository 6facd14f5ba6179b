"""Real-world files (tests/corpus/<kind>, each with its source in SOURCES.json): public firewalld
zones, services and policies, AppArmor profiles, SELinux modules (plain, CIL and reference-policy
sets), on Debian 12's tools in one test host per kind.

One process in the host (tests/corpus_mac.py) loops over every file of a kind: the subsystem's own
tool says first whether it accepts the file; then converge's capture, validate and plan run on
the host holding it (or, for a file the tool refuses, converge is shown refusing it too, with the
tool's reason). The results are checked here one test per file, so a failure names the file;
tests/corpus/<kind>/EXPECTED.json says, per file, what is not a clean round trip and why (the
notes capture gives, word for word) or why the tool refuses the file.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from converge.providers.selinux.spec import Module
from tests.test_selinux_edges import STOCK_CONFIG
from tests.testhost import TestHost

ROOT = Path(__file__).parent.parent
CORPUS = Path(__file__).parent / "corpus"
# semodule rebuilds the whole policy for each transaction: the modules it refuses (they name
# types Debian's policy lacks: container_t, abrt_t, ...) are known from EXPECTED.json and kept out
# of the one transaction of the rest; one of each kind of refusal is run for real.
SELINUX_OPTIONS: dict[str, Any] = {
    "representative": "bblfshd", "build_representative": "fedora-cpuplug/cpuplug",
    # The sample: geoclue's .fc reaches the store's file contexts once its module is installed.
    "matchpathcon": {"refpolicy-geoclue/geoclue": "/usr/libexec/geoclue"},
}
SAMPLE = "(sample baseline)"
# For one file per kind, a baseline declaring part of it: plan, apply, plan again on the host reset
# to its stock state, then the subsystem's own tool.
MIKCH06_RULES = ['rule family="ipv4" source address="147.88.200.97/32" service name="ssh" accept',
                 'rule family="ipv4" source address="62.171.108.7/32" service name="ssh" accept']
FIREWALLD_SAMPLE = {
    "reset": [["sh", "-c", "rm -f /etc/firewalld/zones/* /etc/firewalld/services/* /etc/firewalld/policies/*"]],
    "baseline": "[firewalld.zones.public]\nservices = [\"cockpit\", \"http\", \"https\", \"ssh\"]\n"
                f"rich_rules = {json.dumps(MIKCH06_RULES)}\n",
    "tool": [["firewall-offline-cmd", "--check-config"], ["firewall-offline-cmd", "--zone=public", "--list-all"]],
}
APPARMOR_SAMPLE = {
    "files": ["usr.sbin.yadifad"],
    "reset": [["rm", "-f", "/etc/apparmor.d/usr.sbin.yadifad"]],
    "baseline": '[apparmor.profiles."usr.sbin.yadifad"]\nmode = "complain"\nsource = "usr.sbin.yadifad"\n',
    "tool": [["apparmor_parser", "-Q", "-K", "--base", "/etc/apparmor.d", "-I", "/etc/apparmor.d",
              "/etc/apparmor.d/usr.sbin.yadifad"], ["cat", "/etc/apparmor.d/usr.sbin.yadifad"]],
}


def _sources(kind: str) -> dict[str, dict[str, Any]]:
    sources: dict[str, dict[str, Any]] = json.loads((CORPUS / kind / "SOURCES.json").read_text())
    return sources


def _expected(kind: str) -> dict[str, dict[str, Any]]:
    expected: dict[str, dict[str, Any]] = json.loads((CORPUS / kind / "EXPECTED.json").read_text())
    return expected


def _selinux_modules() -> list[str]:
    return sorted(name.removesuffix(".te") for name in _sources("selinux") if name.endswith((".te", ".cil")))


def _run_corpus(kind: str, tmp_path: Path, options: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    host = TestHost(tmp_path / "host")
    try:
        if kind == "selinux":
            host.write("/etc/selinux/config", STOCK_CONFIG)
        work = tmp_path / "work"
        work.mkdir()
        completed = host.run(
            [sys.executable, "-m", "tests.corpus_mac", kind, str(CORPUS / kind), str(work), json.dumps(options or {})],
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        results: dict[str, dict[str, Any]] = json.loads(completed.stdout)
        return results
    finally:
        host.close()


@pytest.fixture(scope="module")
def corpus_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[dict[str, dict[str, Any]]]]]:
    """The three kinds at once, each in its own test host (the machine has two cores; each run
    mostly waits for one tool at a time)."""
    refused = [name for name, entry in _expected("selinux").items() if "semodule_refuses" in entry]
    options: dict[str, dict[str, Any]] = {"firewalld": {"sample": FIREWALLD_SAMPLE}, "apparmor": {"sample": APPARMOR_SAMPLE},
               "selinux": {**SELINUX_OPTIONS, "semodule_refused": refused}}
    with ThreadPoolExecutor(max_workers=len(options)) as pool:
        yield {kind: pool.submit(_run_corpus, kind, tmp_path_factory.mktemp(f"corpus-{kind}"), given)
               for kind, given in options.items()}


@pytest.fixture(scope="module")
def firewalld_results(corpus_runs: dict[str, Future[dict[str, dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    return corpus_runs["firewalld"].result()


@pytest.fixture(scope="module")
def apparmor_results(corpus_runs: dict[str, Future[dict[str, dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    return corpus_runs["apparmor"].result()


@pytest.fixture(scope="module")
def selinux_results(corpus_runs: dict[str, Future[dict[str, dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    return corpus_runs["selinux"].result()


def _assert_round_trip(result: dict[str, Any], expected: dict[str, Any]) -> None:
    assert result["tool"] is None, result["tool"]
    assert (result["capture"], result["validate"], result["plan"]) == (0, 0, 0), result
    assert result["changes"] == []
    assert result["notes"] == expected.get("notes", [])


# --- firewalld ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(_sources("firewalld")))
def test_firewalld_file(name: str, firewalld_results: dict[str, dict[str, Any]]) -> None:
    result, expected = firewalld_results[name], _expected("firewalld").get(name, {})
    if "tool_refuses" in expected:
        # firewalld's own check refuses it, and converge says so: capture names the service the
        # zone lacks (and plans without it), or fails with the line firewalld could not read.
        assert result["tool"] == expected["tool_refuses"]
        unknown = re.fullmatch(r"INVALID_SERVICE: Zone '.*': '(\S+)' not among existing services", result["tool"])
        if unknown:
            assert result["capture"] == 0
            assert any(f"services '{unknown[1]}': no such service on this host" in note for note in result["notes"])
        else:  # converge names the file and line firewalld means, and keeps firewalld's words
            assert result["capture"] == 1 and expected["tool_refuses"] in result["error"], result["error"]
            assert result["error"].startswith(f"error: /etc/firewalld/{expected['error_at']}: firewalld cannot load it: ")
        assert result["notes"] == expected.get("notes", [])
        return
    _assert_round_trip(result, expected)
    assert result.get("installed_as") == expected.get("installed_as")


def test_firewalld_sample_converges_and_firewalld_agrees(firewalld_results: dict[str, dict[str, Any]]) -> None:
    # Part of mikch06's public zone on a stock host: services and two of its rich rules.
    sample = firewalld_results[SAMPLE]
    assert sample["steps"] == [2, 0, 0], sample["output"]
    check, listed = sample["tool"]
    assert check["returncode"] == 0, check["stderr"]
    zone = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in listed["stdout"].splitlines())}
    assert zone["services"] == "cockpit dhcpv6-client http https ssh"
    assert [line.strip() for line in listed["stdout"].splitlines() if line.startswith("\trule ")] == MIKCH06_RULES


def test_firewalld_corpus_counts(firewalld_results: dict[str, dict[str, Any]]) -> None:
    _report("firewalld", firewalld_results)
    assert set(firewalld_results) - {SAMPLE} == set(_sources("firewalld"))


# --- AppArmor -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(n for n, e in _sources("apparmor").items() if e["role"] == "profile"))
def test_apparmor_profile(name: str, apparmor_results: dict[str, dict[str, Any]]) -> None:
    result, expected = apparmor_results[name], _expected("apparmor").get(name, {})
    if "tool_refuses" in expected:
        assert expected["tool_refuses"] in result["tool"], result["tool"]
        if "converge_refuses" in expected:  # converge's own check, before the parser: file, line, key
            assert result["refusal"] == [expected["converge_refuses"]]
            return
        # apply compiles first and stops with the parser's line for this profile, nothing written.
        assert result["apply"] == 1
        assert [f"{name}: " in line and expected["tool_refuses"] in line for line in result["refusal"]] == [True]
        assert result["left_untouched"]
        return
    _assert_round_trip(result, expected)
    assert result["table"]["content"] == (CORPUS / "apparmor" / name).read_text()


def test_apparmor_sample_converges_and_the_parser_agrees(apparmor_results: dict[str, dict[str, Any]]) -> None:
    # yadifad's profile (the YADIFA name server), installed in complain mode.
    sample = apparmor_results[SAMPLE]
    assert sample["steps"] == [2, 0, 0], sample["output"]
    compiled, installed = sample["tool"]
    assert compiled["returncode"] == 0, compiled["stderr"]
    assert "profile yadifad /usr/sbin/yadifad flags=(complain) {" in installed["stdout"].splitlines()
    assert installed["stdout"].replace(" flags=(complain)", "") == (CORPUS / "apparmor" / "usr.sbin.yadifad").read_text()


def test_apparmor_corpus_counts(apparmor_results: dict[str, dict[str, Any]]) -> None:
    _report("apparmor", apparmor_results)


# --- SELinux --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", _selinux_modules())
def test_selinux_module(name: str, selinux_results: dict[str, dict[str, Any]]) -> None:
    result, expected = selinux_results[name], _expected("selinux").get(name, {})
    assert result["validate"] == 0, result.get("validate_output")
    if "tool_refuses" in expected:  # the build (checkmodule, or the devel Makefile's m4 and checkmodule)
        assert expected["tool_refuses"] in result["tool"], result["tool"]
        if name == SELINUX_OPTIONS["build_representative"]:
            assert result["apply"] == 1 and result["store_untouched"]
            assert expected["tool_refuses"] in result["semodule"], result["semodule"]
        return
    assert result["tool"] is None, result["tool"]
    if "semodule_refuses" in expected:
        if name == SELINUX_OPTIONS["representative"]:
            assert result["apply"] == 1 and not result["installed"]
            assert expected["semodule_refuses"] in result["semodule"], result["semodule"]
        else:
            assert result["semodule"] == "not run"
        return
    # Planned (an update where Debian's policy has a module of that name), installed by converge's
    # one semodule transaction, listed by semodule -l, in sync afterwards; the captured host plans clean.
    assert result["planned"] == expected.get("planned", "add")
    assert (result["apply"], result["installed"], result["replan"]) == (0, True, 0), result
    assert (result["capture"], result["capture_validate"], result["capture_plan"]) == (0, 0, 0)
    # Capture leaves locally installed modules out, saying so (their source is not on the host).
    kind = "cil" if name.endswith(".cil") else "pp"
    module = Path(name).stem if kind == "cil" else Path(name).name
    assert result["notes"] == [f"installed locally, not captured: {module} ({kind})"]
    if name in SELINUX_OPTIONS["matchpathcon"]:  # the store labels what the module's .fc names
        assert ":geoclue_exec_t:" in result["matchpathcon"], result["matchpathcon"]


def test_selinux_corpus_counts(selinux_results: dict[str, dict[str, Any]]) -> None:
    _report("selinux", selinux_results)


# --- what the corpus found ------------------------------------------------------------------

def test_a_reference_policy_module_without_a_version_is_read_as_one(tmp_path: Path) -> None:
    # refpolicy's own modules since 2020 say `policy_module(dkim)`: the devel Makefile builds them,
    # converge refused them ("found neither") and would have compiled them as plain .te.
    source = tmp_path / "dkim.te"
    source.write_text((CORPUS / "selinux" / "refpolicy-dkim" / "dkim.te").read_text())
    assert "policy_module(dkim)" in source.read_text()
    for suffix in (".if", ".fc"):
        (tmp_path / f"dkim{suffix}").write_text((CORPUS / "selinux" / "refpolicy-dkim" / f"dkim{suffix}").read_text())
    module = Module(name="dkim", source=str(source))
    assert module.kind == "refpolicy"


def _report(kind: str, results: dict[str, dict[str, Any]]) -> None:
    """The counts for the README and the closing note (pytest -s shows them)."""
    results = {name: result for name, result in results.items() if name != SAMPLE}
    refused = [name for name, result in results.items() if result.get("tool")]
    noted = [name for name, result in results.items() if not result.get("tool") and result.get("notes")]
    print(f"\n{kind}: {len(results)} files, tool refuses {len(refused)}, round trips clean "
          f"{len(results) - len(refused) - len(noted)}, with notes {len(noted)}")


def test_firewalld_capture_names_the_admins_policies() -> None:
    # An admin's own policy in /etc/firewalld/policies (a docker-forwarding one, as people publish
    # them): capture said nothing of it.
    from converge.providers.firewalld.capture import captured
    from converge.providers.firewalld.parse import Zone
    from converge.providers.firewalld.provider import FirewalldLive

    live = FirewalldLive(False, "public", {"public": Zone("default")}, None, None, {}, {},
                         own_policies=frozenset({"docker-forwarding"}))
    assert captured(live, {"public"}).notes == [
        "policies docker-forwarding (/etc/firewalld/policies) are not managed by converge; not captured"]


def test_a_policy_module_replaced_at_a_local_priority_is_read_at_that_priority() -> None:
    # refpolicy's bird rebuilt and installed over Debian's: semodule lists 400 before 100, and the
    # local module (the one in effect) was read as the stock one, so capture did not mention it.
    from converge.providers.selinux.parse import parse_module_priorities

    listed = "400 bird            pp          \n100 bird            pp          \n100 dkim            pp          \n"
    assert parse_module_priorities(listed) == {"bird": (400, "pp"), "dkim": (100, "pp")}


def test_a_zone_file_firewalld_cannot_load_is_named_with_its_line() -> None:
    # Two corpus zones stop firewall-offline-cmd from listing anything (malformed XML, a template's
    # placeholder port); its message names neither file nor, for the port, a line.
    from converge.providers.firewalld.provider import unreadable_file

    zones = {"/etc/firewalld/zones/public.xml": (CORPUS / "firewalld" / "young-at-heart--public.xml").read_text(),
             "/etc/firewalld/zones/home.xml": "<zone/>"}
    assert unreadable_file(zones, "INVALID_ZONE: not a valid zone file") == "/etc/firewalld/zones/public.xml:12"
    zones = {"/etc/firewalld/zones/incoming.xml": (CORPUS / "firewalld" / "gucci-on-fleek--incoming.xml").read_text()}
    assert unreadable_file(zones, "INVALID_PORT: '!!dns.altport!!' is invalid port range") == \
        "/etc/firewalld/zones/incoming.xml:29"
