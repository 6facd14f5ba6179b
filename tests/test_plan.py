from __future__ import annotations

import json

from converge.plan import Change, HostPlan, Side, Skipped, plan_exit_code, printable, render_json, render_text


def _plans() -> list[HostPlan]:
    web = HostPlan("web1", "ssh://root@203.0.113.10:22")
    web.changes = [
        Change("sysctl", "sysctl", "kernel.kptr_restrict", "update", 1, 2,
               sides={"runtime": Side(1, 2), "persisted": Side(None, 2)}),
        Change("fail2ban", "jail", "sshd", "add", None, {"maxretry": 3}),
        Change("sysctl", "sysctl", "net.ipv4.ip_forward", "remove", 1, None, ("drop from file",)),
    ]
    web.skipped = [Skipped("selinux", "SELinux is not enabled in this host's kernel")]
    return [web, HostPlan("db1", "ssh://db1")]


def test_json_follows_the_spec() -> None:
    document = json.loads(render_json(_plans()))
    web, db = document["hosts"]
    assert web["host"] == "web1" and web["target"] == "ssh://root@203.0.113.10:22"
    assert web["status"] == "ok" and web["error"] is None
    assert web["changes"][0] == {
        "provider": "sysctl", "resource": "kernel.kptr_restrict", "kind": "sysctl", "name": "kernel.kptr_restrict",
        "action": "update", "before": 1, "after": 2,
        "runtime": {"before": 1, "after": 2}, "persisted": {"before": None, "after": 2},
    }
    # The stable key gives the display resource: kind:name unless the kind is the provider's own.
    assert web["changes"][1]["resource"] == "jail:sshd"
    assert web["changes"][2]["notes"] == ["drop from file"]
    assert web["skipped"] == [{"provider": "selinux", "reason": "SELinux is not enabled in this host's kernel"}]
    assert db["changes"] == [] and db["status"] == "ok"
    assert document["summary"] == {"add": 1, "update": 1, "remove": 1}


def test_text_groups_by_host_and_provider_without_colour_when_asked() -> None:
    text = render_text(_plans(), color=False)
    assert "\x1b[" not in text
    lines = text.splitlines()
    assert lines[0] == "web1 (ssh://root@203.0.113.10:22)"
    assert "  sysctl" in lines and "  fail2ban" in lines
    assert any(line.startswith("    ~ kernel.kptr_restrict") and line.endswith("1 -> 2") for line in lines)
    assert any(line.startswith("    - net.ipv4.ip_forward") and "(drop from file)" in line for line in lines)
    assert "  selinux: skipped: SELinux is not enabled in this host's kernel" in lines
    assert "  in sync" in lines  # db1
    assert lines[-1] == "Plan: 1 to add, 1 to change, 1 to remove on 2 hosts."
    assert "\x1b[" in render_text(_plans(), color=True)


def test_exit_codes() -> None:
    plans = _plans()
    assert plan_exit_code(plans) == 2
    assert plan_exit_code([plans[1]]) == 0
    plans[1].errors.append("unreachable")
    assert plan_exit_code(plans) == 1
    assert json.loads(render_json(plans))["hosts"][1] == {
        "host": "db1", "target": "ssh://db1", "status": "error", "error": "unreachable", "changes": [], "skipped": [],
    }


def test_a_change_right_on_one_side_shows_the_side_that_moves() -> None:
    plan = HostPlan("web1", "web1", changes=[Change("sysctl", "sysctl", "net.ipv4.tcp_syncookies", "update", 1, 1,
                                                    sides={"runtime": Side(1, 1), "persisted": Side(None, 1)})])
    assert "~ net.ipv4.tcp_syncookies  persisted (none) -> 1" in render_text([plan], color=False)


def test_text_from_a_host_cannot_drive_the_terminal() -> None:
    """Security finding 10: escape sequences (cursor moves, OSC 52 clipboard, titles) are shown, not sent."""
    hostile = "x\x1b[2K\x1b[1A\x1b]52;c;ZXZpbA==\x07\x9b31m"
    plan = HostPlan("web1", "web1", changes=[Change("fail2ban", "jail", hostile, "add", None, hostile, (hostile,))],
                    warnings=[hostile], errors=[hostile])
    text = render_text([plan], color=False)
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert "x\\x1b[2K\\x1b[1A\\x1b]52;c;ZXZpbA==\\x07\\x9b31m" in text
    assert printable("tab\tand\nnewline") == "tab\tand\nnewline"
