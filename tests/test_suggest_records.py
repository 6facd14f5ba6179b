"""The audit record parser on real public records in every form a host keeps them (sources in
tests/data/suggest/SOURCES.md): raw audit.log with SYSCALL, node= and permissive=, ENRICHED with
its \\x1d tail, `ausearch --raw`, kernel printk with and without a syslog prefix, journald's audit
transport, AppArmor with and without class=, and `ausearch -i`, which is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from converge.auditlog import event_exe, group_events, parse_records, record_path
from converge.provider import ParseError

DATA = Path(__file__).parent / "data" / "suggest"


def records(name: str):  # type: ignore[no-untyped-def]
    return parse_records((DATA / name).read_text(encoding="utf-8"), name)


def test_raw_audit_log_groups_avc_with_its_syscall() -> None:
    events = group_events(records("raw-syscall.log"))
    assert [[r.type for r in event] for event in events] == [["AVC", "SYSCALL"], ["AVC", "SYSCALL"]]
    avc = events[0][0]
    assert (avc.event, avc.time, avc.verdict, avc.perms) == ("1226874073.147:96", 1226874073.147, "denied", ("getattr",))
    assert avc.fields["scontext"] == "unconfined_u:system_r:httpd_t:s0"
    assert avc.fields["tclass"] == "file" and avc.fields["comm"] == "httpd"
    assert record_path(avc, events[0]) == "/var/www/html/file1"
    assert event_exe(events[0]) == "/usr/sbin/httpd" and events[0][1].fields["success"] == "no"
    # the shadow read names only the last component: no full path is invented
    assert record_path(events[1][0], events[1]) is None and events[1][0].fields["name"] == "shadow"


def test_node_prefix_and_permissive_and_path_from_a_sibling_of_the_same_inode() -> None:
    events = group_events(records("node.log"))
    assert [len(event) for event in events] == [1, 2]
    read, opened = events[1]
    assert read.node == "localhost" and read.fields["permissive"] == "1"
    assert read.perms == ("read",) and "path" not in read.fields
    assert record_path(read, events[1]) == "/run/motd" == record_path(opened, events[1])


def test_enriched_tail_is_kept_apart_and_does_not_split_the_line() -> None:
    text = (DATA / "enriched.log").read_text(encoding="utf-8")
    assert len(text.splitlines()) > len(text.rstrip("\n").split("\n"))  # the trap: splitlines splits at \x1d
    parsed = parse_records(text, "enriched.log")
    assert [r.type for r in parsed] == ["AVC", "SYSCALL", "PROCTITLE", "AVC"]
    syscall, apparmor = parsed[1], parsed[3]
    assert syscall.fields["key"] == "(null)" and syscall.enriched["SYSCALL"] == "connect"
    assert syscall.enriched["UID"] == "dovecot" and "ARCH" not in syscall.fields
    assert apparmor.fields["apparmor"] == "ALLOWED" and apparmor.fields["class"] == "file"
    assert apparmor.fields["ouid"] == "0" and apparmor.enriched == {"FSUID": "remorin", "OUID": "root"}
    assert event_exe(group_events(parsed)[0]) == "/usr/libexec/dovecot/auth"


def test_ausearch_raw_is_audit_log_form() -> None:
    ours = records("ausearch-raw.log")
    assert [(r.type, r.event, r.perms) for r in ours] == [
        (r.type, r.event, r.perms) for r in [*records("raw-syscall.log"), *records("node.log")]
    ]


def test_printk_forms_with_and_without_syslog_prefix_and_apparmor_with_and_without_class() -> None:
    parsed = records("printk.log")
    assert [r.type for r in parsed] == ["AVC"] * 4  # "systemd[1]: Listening ..." is not a record
    capability, cgroup, denied, allowed = parsed
    assert capability.event == "1452851002.184:3" and capability.fields["capability"] == "37"
    assert capability.fields["tclass"] == "capability2" and cgroup.fields["permissive"] == "1"
    assert denied.fields["apparmor"] == "DENIED" and "class" not in denied.fields
    assert denied.fields["profile"] == "snap.openra.ra" and denied.fields["name"] == "/etc/openal/alsoft.conf"
    assert allowed.fields["class"] == "file" and allowed.fields["profile"] == "dhcpcd//null-/usr/bin/resolvconf"
    assert allowed.event == "1703615849.025:1388628"


def test_journald_audit_transport_has_no_serial() -> None:
    parsed = records("journal.log")
    assert [r.type for r in parsed] == ["AVC", "AVC", "SYSCALL", "PROCTITLE", "AVC"]
    assert all(r.event is None and r.time is None for r in parsed)
    assert parsed[0].perms == ("read", "write") and parsed[0].fields["scontext"] == "system_u:system_r:syslogd_t"
    assert parsed[2].fields["exe"] == "/usr/lib/systemd/systemd-sysctl"
    assert len(group_events(parsed)) == 5  # without serials nothing is joined by guess


def test_hex_encoded_untrusted_fields_are_decoded() -> None:
    # refpolicy#694 (etbe): comm logged in hex by the kernel because it holds a space
    line = ('type=AVC msg=audit(1695242498.119:183): avc:  granted  { read open } for  pid=1673 '
            'comm=5468726561642028706F6F6C656429 path="/proc/sys/vm/overcommit_memory" dev="proc" ino=29888 '
            'scontext=user_u:user_r:user_t:s0 tcontext=system_u:object_r:sysctl_vm_overcommit_t:s0 tclass=file')
    (record,) = parse_records(line, "refpolicy#694")
    assert record.fields["comm"] == "Thread (pooled)" and record.verdict == "granted"
    assert record.fields["dev"] == "proc"


def test_interpreted_ausearch_output_is_refused_with_the_line() -> None:
    with pytest.raises(ParseError, match=r"interpreted.log: interpreted audit output \(ausearch -i\).*09/05/2022"):
        records("interpreted.log")


def test_a_mangled_avc_is_an_error_not_a_silent_skip() -> None:
    with pytest.raises(ParseError, match="without permissions"):
        parse_records("type=AVC msg=audit(1.2:3): avc:  denied  {  } for pid=1", "x")
    with pytest.raises(ParseError, match="no known form"):
        parse_records("kernel: avc: denied { read } for pid=1 but no header", "x")
