"""The sshd provider without a host: parsers on real sshd output and Debian's files, the spec's checks,
and the lockout rule on live states planned from recorded real answers (tests/cases/sshd)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from converge.provider import Connection
from converge.providers.sshd import parse
from converge.providers.sshd.provider import (
    EFFECTIVE_SCRIPT,
    SshdLive,
    SshdProvider,
    evaluated,
    render_drop_in,
    staged_read,
)
from converge.providers.sshd.spec import SshdSpec
from converge.reads import CommandResult, Facts, RunCommand
from tests.cases import CASES, load_answers

CASE = CASES / "sshd" / "drift"  # Debian 12's stock /etc/ssh, sshd running from it


def _answers(case: Path = CASE) -> Facts:
    return Facts(load_answers(case))


def _live(settings: dict[str, object], case: Path = CASE) -> tuple[SshdProvider, object, SshdLive]:
    """A live state for `settings`: the recorded answers, with the staged evaluation the baseline's
    drop-in gives (sshd -T of the recorded running configuration, with those keywords first)."""
    provider = SshdProvider()
    spec = SshdSpec.model_validate(settings)
    facts = _answers(case)
    now = facts.command("sh", "-c", EFFECTIVE_SCRIPT, "sshd-T")
    # What sshd -T prints for a keyword set first, as it prints it (tests of the rule, not of sshd).
    staged_lines = {line.partition(" ")[0]: line for line in now.stdout.splitlines()}
    written = [line.split(" ", 1) for line in render_drop_in(spec.settings()).splitlines() if not line.startswith("#")]
    for keyword, text in written:
        staged_lines[keyword.lower()] = f"{keyword.lower()} {text}"
    if "Port" in spec.settings():
        staged_lines["listenaddress"] = "\n".join(f"listenaddress 0.0.0.0:{port}" for port in spec.settings()["Port"])
    staged = "\n".join(staged_lines.values())
    answers = dict(load_answers(case))
    answers[staged_read(spec)] = CommandResult(staged_read(spec).argv, 0, staged, "")
    live = provider.live(spec, Facts(answers))
    return provider, spec, live


def test_effective_output_of_debian_sshd() -> None:
    text = _answers().command("sh", "-c", EFFECTIVE_SCRIPT, "sshd-T").stdout
    now = evaluated(text, "sshd -T")
    assert now.connection == "user=root,host=localhost,addr=127.0.0.1"
    assert now.value("PermitRootLogin") == "prohibit-password"  # sshd -T says without-password
    assert now.value("PasswordAuthentication") is True and now.value("X11Forwarding") is True
    assert now.value("LoginGraceTime") == 120 and now.value("Port") == [2222]
    assert parse.listen_ports(now.values["listenaddress"]) == {2222}
    assert now.values["pidfile"] == ["/run/sshd-debian.pid"] and now.pid


def test_debian_sshd_config_includes_its_drop_ins_first_and_the_include_is_added_keeping_the_rest() -> None:
    config = _answers().file(parse.SSHD_CONFIG) or ""
    assert parse.includes_drop_ins_first(config)
    moved = config.replace("Include /etc/ssh/sshd_config.d/*.conf", "MaxAuthTries 5\nInclude /etc/ssh/sshd_config.d/*.conf")
    assert not parse.includes_drop_ins_first(moved)
    added = parse.with_include(moved)
    assert parse.includes_drop_ins_first(added) and added.endswith(moved)


def test_directives_keep_file_line_and_match() -> None:
    found = parse.directives("/x.conf", "# c\nPort 2222\nMatch User root\n    X11Forwarding yes\nMatch all\nMaxAuthTries=4\n")
    assert [(d.line, d.keyword, d.value, d.match) for d in found] == [
        (2, "port", "2222", None), (4, "x11forwarding", "yes", "User root"), (6, "maxauthtries", "4", None)]


def test_groups_and_patterns() -> None:
    passwd = "root:x:0:0:root:/root:/bin/bash\ndeploy:x:1000:1000::/home/deploy:/bin/sh\n"
    group = "root:x:0:\nadm:x:4:deploy\ndeploy:x:1000:\nsshusers:x:1001:\n"
    assert parse.groups_of("deploy", passwd, group) == {"adm", "deploy"}
    assert parse.matches(["dep*"], "deploy") and not parse.matches(["*", "!deploy"], "deploy")
    assert parse.matches(["deploy@198.18.*"], "deploy", "198.18.0.1")
    assert not parse.matches(["deploy@10.*"], "deploy", "198.18.0.1")


@pytest.mark.parametrize(("table", "message"), [
    ({"PermitRootLogn": "no"}, "Extra inputs are not permitted"),
    ({"Banner": "/etc/issue net"}, "one word"),
    ({"MaxStartups": "10\n"}, "one word"),
    ({"AllowGroups": ["a b"]}, "without spaces"),
    ({"PasswordAuthentication": "no"}, "true or false"),
    ({"MaxAuthTries": True}, "whole number"),
    ({"LoginGraceTime": "30 s"}, "time span"),
    ({"Match": "User bob"}, "Match blocks are out of scope"),
    ({"maxauthtries": 3, "MaxAuthTries": 4}, "set twice"),
])
def test_spec_refuses(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SshdSpec.model_validate(table)


def test_spec_is_case_insensitive_and_canonical() -> None:
    spec = SshdSpec.model_validate({"permitrootlogin": "Prohibit-Password", "logingracetime": "1m30s", "x11forwarding": False,
                                    "ChallengeResponseAuthentication": False, "Port": [2222, 22]})
    assert spec.settings() == {"PermitRootLogin": "prohibit-password", "X11Forwarding": False, "LoginGraceTime": 90,
                               "Port": [22, 2222], "KbdInteractiveAuthentication": False}
    assert render_drop_in(spec.settings()).splitlines()[2:] == [
        "PermitRootLogin prohibit-password", "KbdInteractiveAuthentication no", "X11Forwarding no", "LoginGraceTime 90",
        "Port 22", "Port 2222"]


ROOT_KEY = Connection("198.18.0.1", 2222, "root", "publickey")


@pytest.mark.parametrize(("settings", "connection", "refused"), [
    ({"PermitRootLogin": "no"}, ROOT_KEY, "PermitRootLogin no refuses root"),
    ({"PermitRootLogin": "prohibit-password"}, ROOT_KEY, None),
    ({"PermitRootLogin": "prohibit-password"}, Connection("198.18.0.1", 2222, "root", "password"),
     "PermitRootLogin prohibit-password refuses root logging in with password"),
    ({"PasswordAuthentication": False}, Connection("198.18.0.1", 2222, "deploy", "password"),
     "PasswordAuthentication no refuses the way converge logged in (password)"),
    ({"PasswordAuthentication": False}, ROOT_KEY, None),
    ({"PubkeyAuthentication": False}, ROOT_KEY, "PubkeyAuthentication no refuses"),
    ({"AllowGroups": ["sshusers", "admin"]}, ROOT_KEY, "AllowGroups (sshusers admin) admits none of root's groups (root)"),
    ({"AllowGroups": ["root"]}, ROOT_KEY, None),
    ({"AllowUsers": ["deploy"]}, ROOT_KEY, "AllowUsers (deploy) does not admit root"),
    ({"DenyUsers": ["root@198.18.*"]}, ROOT_KEY, "DenyUsers refuses root"),
    ({"Port": [22]}, ROOT_KEY, "sshd would listen on port(s) 22, not 2222"),
    ({"AuthenticationMethods": ["publickey,password"]}, ROOT_KEY, "AuthenticationMethods publickey,password needs more"),
    ({"AuthenticationMethods": ["publickey,password", "publickey"]}, ROOT_KEY, None),
])
def test_lockout_rule(settings: dict[str, object], connection: Connection, refused: str | None) -> None:
    provider, spec, live = _live(settings)
    reason = provider.lockout(spec, live, connection)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason


def test_plans_carry_values_and_the_reload_is_computed_at_plan_time() -> None:
    expected = json.loads((CASES / "sshd" / "drift" / "expected.json").read_text())
    assert all(not isinstance(change["before"], str) or change["before"] in ("prohibit-password",)
               for change in expected["changes"] if change["name"] != "PermitRootLogin")
    reload = expected["operations"][-1]["argv"]
    assert reload[-2:] == ["/run/sshd-debian.pid", str(evaluated(_answers().command(
        "sh", "-c", EFFECTIVE_SCRIPT, "sshd-T").stdout, "sshd -T").pid)]
    assert RunCommand(("ssh", "-Q", "cipher")) in load_answers(CASE)
