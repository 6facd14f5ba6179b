"""SELinux proposals from real public AVC records (tests/data/suggest/SOURCES.md), analysed by the
field's tools (audit2why, setools, selabel_lookup, sepolgen in a helper on Debian's python3) against
Debian's selinux-policy-default as installed on this machine. One helper run serves every test."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest

from converge.auditlog import parse_records
from converge.providers.selinux import suggest as selinux_suggest
from converge.suggest import HostSuggestions, Suggestion, exit_code, offer_sensitive, render_json, render_text
from tests.testhost import TestHost

DATA = Path(__file__).parent / "data" / "suggest"
POLICY = Path("/etc/selinux/default/policy/policy.33")
CONTEXTS = Path("/etc/selinux/default/contexts/files/file_contexts")
FILES = ["raw-syscall.log", "raw-permissive.log", "node.log", "printk.log", "enriched.log", "journal.log", "pages.log",
         "labels.log"]

pytestmark = pytest.mark.skipif(not POLICY.exists(), reason="needs Debian's selinux-policy-default")


@pytest.fixture(scope="module")
def proposals() -> list[Suggestion]:
    text = "".join((DATA / name).read_text(encoding="utf-8") for name in FILES)
    groups, last_load = selinux_suggest.denial_groups(parse_records(text, "samples"), None)
    return selinux_suggest.analyse_with_helper(groups, policy_file=str(POLICY), contexts=str(CONTEXTS),
                                               pinned={"httpd_can_network_connect": False}, host="web1",
                                               last_load=last_load, source="samples")


def by_access(proposals: list[Suggestion], access: str) -> Suggestion:
    (found,) = [p for p in proposals if p.evidence.get("access") == access or p.resource == access]
    return found


def test_stale_when_the_current_policy_already_allows(proposals: list[Suggestion]) -> None:
    for access in ("init_t init_t:capability2 { audit_read }", "local_login_t pam_motd_runtime_t:file { getattr open read }",
                   "httpd_sys_script_t sysfs_t:file { read }"):
        assert by_access(proposals, access).kind == "stale"
    # refpolicy#23's contexts carry no MLS level: analysed at s0, and said so
    journal = by_access(proposals, "syslogd_t kernel_t:netlink_audit_socket { read write }")
    assert journal.kind == "stale" and "no MLS level" in journal.notes[0]


def test_relabel_when_file_contexts_name_an_allowed_type(proposals: list[Suggestion]) -> None:
    # two files of one access (same contexts, two Red Hat guide records): one relabel each
    for path, event in (("/var/www/html/file1", "1226874073.147:96"), ("/var/www/html/testfile", "1220706212.937:70")):
        relabel = by_access(proposals, path)
        assert relabel.kind == "relabel" and relabel.table == {} and relabel.evidence["events"] == [event]
        assert "httpd_sys_content_t" in relabel.notes[0] and relabel.evidence["paths"] == [path]
    assert by_access(proposals, "/var/www/html/file1").evidence["exe"] == ["/usr/sbin/httpd"]


def test_port_label_with_a_type_of_the_domain_before_the_broad_boolean(proposals: list[Suggestion]) -> None:
    # port_t (a port no module names): http_port_t, not allow_ypbind (2964 rules over 400 domains)
    bind = by_access(proposals, "httpd_t port_t:tcp_socket { name_bind }")
    assert bind.kind == "port" and bind.table == {"ports": [{"type": "http_port_t", "protocol": "tcp", "port": "9876"}]}
    assert "httpd_t may use unconditionally: http_port_t, http_cache_port_t" in bind.notes
    assert "not proposed: boolean allow_ypbind (2964 rules, 400 domains, 449 target types: 7968 type pairs)" in bind.notes


def test_a_port_the_policy_labels_with_an_allowed_type_now_is_stale(proposals: list[Suggestion]) -> None:
    # the nginx record (pages.log) has 8443 unreserved_port_t; Debian's policy labels 8443 http_port_t
    port = by_access(proposals, "httpd_t unreserved_port_t:tcp_socket { name_bind }")
    assert port.kind == "stale" and port.table == {}
    assert "8443 is http_port_t" in port.notes[0] and "predate the label" in port.notes[0]


def test_fcontext_at_the_first_directory_below_the_policys_own_with_a_type_the_domain_may_use(
        proposals: list[Suggestion]) -> None:
    # fedora-selinux/selinux-policy#954: /var/lib is the policy's; /var/lib/shorewall6-lite is not,
    # and the policy labels the domain's own /var/lib/shorewall shorewall_var_lib_t
    shorewall = by_access(proposals, "shorewall_t var_lib_t:file { getattr }")
    assert shorewall.kind == "fcontext" and shorewall.resource == "fcontext:/var/lib/shorewall6-lite(/.*)?"
    assert shorewall.table == {"fcontexts": [{"path": "/var/lib/shorewall6-lite(/.*)?", "type": "shorewall_var_lib_t"}]}
    assert shorewall.evidence["count"] == 3 and len(shorewall.evidence["paths"]) == 2
    # SELinuxProject/refpolicy#675, through audisp-syslog: the read names only the file; its inode's
    # open names the path. /usr/share is the policy's; cert_t is no library or program label
    agent = by_access(proposals, "staff_ssh_agent_t usr_t:file { getattr open read }")
    assert agent.kind == "fcontext"
    assert agent.table == {"fcontexts": [{"path": "/usr/share/crypto-policies(/.*)?", "type": "cert_t"}]}
    assert agent.evidence["paths"] == ["/usr/share/crypto-policies/FIPS/opensslcnf.txt"]
    assert "confirm it covers only this application" in agent.notes[1]


def test_boolean_narrowest_first_and_a_pinned_boolean_is_a_conflict(proposals: list[Suggestion]) -> None:
    dovecot = by_access(proposals, "boolean:dovecot_can_connect_db")
    assert dovecot.kind == "boolean" and dovecot.table == {"booleans": {"dovecot_can_connect_db": True}}
    httpd = by_access(proposals, "boolean:httpd_graceful_shutdown")  # 3 rules, 1 domain: narrower than the other two
    assert httpd.evidence["events"] == ["1610043878.967:3142", "1610043878.967:3143"]
    assert "httpd_can_network_connect (9 rules, 3 domains, 460 target types: 1380 type pairs)" in httpd.notes[0]
    # a connect to 7003 (unreserved_port_t): no port type of httpd's own family; the boolean the
    # baseline pins off is reported as a conflict, never flipped
    pinned = by_access(proposals, "httpd_t unreserved_port_t:tcp_socket { name_connect }")
    assert pinned.kind == "refused" and "pins httpd_can_network_connect = false" in pinned.notes[0]


def test_refused_for_sensitive_targets_and_unknown_types(proposals: list[Suggestion]) -> None:
    shadow = by_access(proposals, "httpd_t shadow_t:file { read }")
    assert shadow.kind == "refused" and shadow.table == {} and "shadow_t" in shadow.notes[0]
    unknown = by_access(proposals, "systemd_sysctl_t proc_security_t:file { read }")
    assert unknown.kind == "refused" and "BADTCON" in unknown.notes[0]


def compiles(te: str, name: str, tmp_path: Path) -> None:
    (tmp_path / f"{name}.te").write_text(te)
    built = subprocess.run(["checkmodule", "-M", "-m", "-o", str(tmp_path / f"{name}.mod"), str(tmp_path / f"{name}.te")],
                           capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr


def test_one_module_per_domain_with_exactly_the_observed_access_and_it_compiles(proposals: list[Suggestion],
                                                                                tmp_path: Path) -> None:
    modules = {p.table["modules"][0]["name"]: p for p in proposals if p.kind == "module"}
    assert sorted(modules) == ["converge_logwatch_mail", "converge_syslogd"]
    rules = {}
    for name, module in modules.items():
        ((relative, te),) = module.files.items()
        assert module.table == {"modules": [{"name": name, "source": relative}]} and relative == f"selinux/{name}.te"
        rules[name] = sorted(line for line in te.split("\n") if line.startswith("allow "))
        assert "*" not in te and "~" not in te and "attribute" not in te and "(" not in te.split("require")[1]
        compiles(te, name, tmp_path)
    assert rules == {"converge_logwatch_mail": ["allow logwatch_mail_t sysctl_net_t:file open;"],
                     "converge_syslogd": ["allow syslogd_t cgroup_t:file write;", "allow syslogd_t sysctl_net_t:file read;"]}


def test_a_sensitive_access_is_refused_with_its_proposal_withheld_and_offered_only_when_allowed(
        proposals: list[Suggestion], tmp_path: Path) -> None:
    shadow = by_access(proposals, "httpd_t shadow_t:file { read }")
    assert shadow.kind == "refused" and shadow.sensitive == "sensitive target shadow_t"
    assert shadow.withheld is not None and shadow.withheld.resource == "module:converge_httpd_shadow_file"
    assert shadow not in offer_sensitive(proposals, True) and offer_sensitive(proposals, False) == proposals
    (offered,) = [p for p in offer_sensitive(proposals, True) if p.resource == "module:converge_httpd_shadow_file"]
    assert offered.kind == "module" and offered.sensitive == "sensitive target shadow_t"
    assert offered.notes[-1].startswith("SENSITIVE (sensitive target shadow_t)")
    ((_, te),) = offered.files.items()
    assert [line for line in te.split("\n") if line.startswith("allow ")] == ["allow httpd_t shadow_t:file read;"]
    compiles(te, "converge_httpd_shadow_file", tmp_path)
    # the refusal shows what --allow-sensitive would offer; the offer is marked
    assert "--allow-sensitive would offer: module module:converge_httpd_shadow_file" in render_text(
        [HostSuggestions("web1", "local", proposals)])
    assert "SENSITIVE: sensitive target shadow_t" in render_text([HostSuggestions("web1", "local", [offered])])
    import json

    (record,) = [r for r in json.loads(render_json([HostSuggestions("web1", "local", proposals)]))["hosts"][0]["suggestions"]
                 if r["resource"] == "httpd_t shadow_t:file { read }"]
    assert record["sensitive"] == "sensitive target shadow_t" and record["withheld"]["kind"] == "module"
    assert exit_code([HostSuggestions("web1", "local", [shadow])]) == 0  # a refusal alone proposes nothing
    assert exit_code([HostSuggestions("web1", "local", [offered])]) == 2


def test_text_json_and_exit_code(proposals: list[Suggestion]) -> None:
    results = [HostSuggestions("web1", "local", proposals)]
    assert exit_code(results) == 2 and exit_code([HostSuggestions("web1", "local", [])]) == 0
    assert exit_code([HostSuggestions("web1", "local", proposals, errors=["x"])]) == 1
    text = render_text(results)
    assert "+ port     httpd_t port_t:tcp_socket { name_bind }" in text
    import json

    record = json.loads(render_json(results))["hosts"][0]["suggestions"][0]
    assert {"provider", "kind", "resource", "table", "evidence", "notes", "files", "sensitive"} <= set(record)
    host = json.loads(render_json(results))["hosts"][0]
    assert (host["status"], host["error"]) == ("ok", None)


def test_write_overlay_extends_the_baseline_inside_its_directory(proposals: list[Suggestion], tmp_path: Path) -> None:
    from converge.baseline import load_baseline
    from converge.registry import Registry
    from converge.suggest import write_overlay

    (tmp_path / "web.toml").write_text('[selinux]\nports = [{ type = "ssh_port_t", protocol = "tcp", port = "2222" }]\n')
    baseline = load_baseline(tmp_path / "web.toml", Registry())
    written = write_overlay(baseline, [HostSuggestions("web1", "local", proposals)])
    overlay = tomllib.loads(written[0].read_text())
    assert written[0] == tmp_path / "web.suggested.toml" and overlay["baseline"]["extends"] == ["web.toml"]
    assert overlay["selinux"]["ports"][0]["type"] == "ssh_port_t"  # arrays written whole: extends replaces them
    assert {"type": "http_port_t", "protocol": "tcp", "port": "9876"} in overlay["selinux"]["ports"]
    assert overlay["selinux"]["booleans"]["dovecot_can_connect_db"] is True
    assert all(path.is_relative_to(tmp_path) for path in written) and written[1].suffix == ".te"
    load_baseline(written[0], Registry())  # the overlay is a valid baseline


def test_suggest_takes_plans_ssh_and_fleet_options() -> None:
    from converge.cli import cli

    def options(command: str) -> dict[str, object]:
        return {p.name: p.default for p in cli.commands[command].params if isinstance(p, click.Option)}

    plan, suggest = options("plan"), options("suggest")
    shared = ("targets", "inventory", "limit", "forks", "timeout", "connect_attempts", "become", "identity",
              "trust_new_host_keys", "ssh_config")
    assert all(name in plan and suggest[name] == plan[name] for name in shared), (plan, suggest)


def test_an_unreachable_host_is_an_error_of_its_own_and_the_others_are_still_read(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from converge.cli import cli

    (tmp_path / "web.toml").write_text('[selinux]\npolicy = "default"\n')
    # two hosts nothing listens for, read at once (--forks), each with plan's --timeout
    result = CliRunner().invoke(cli, ["suggest", str(tmp_path / "web.toml"), "--json", "--timeout", "2", "--forks", "2",
                                      "-H", "ssh://root@127.0.0.1:9", "-H", "ssh://root@127.0.0.1:7"])
    assert result.exit_code == 1, result.output
    import json

    hosts = json.loads(result.output)["hosts"]
    assert [h["target"] for h in hosts] == ["ssh://root@127.0.0.1:9", "ssh://root@127.0.0.1:7"]
    assert all(h["status"] == "error" and h["error"] for h in hosts)


def host_proposals(host: str, *files: str) -> list[Suggestion]:
    text = "".join((DATA / name).read_text(encoding="utf-8") for name in files)
    groups, last_load = selinux_suggest.denial_groups(parse_records(text, host), None)
    return selinux_suggest.analyse_with_helper(groups, policy_file=str(POLICY), contexts=str(CONTEXTS), pinned={},
                                               host=host, last_load=last_load, source=files[0])


def test_two_hosts_modules_of_one_name_are_merged_into_the_union_of_their_rules(tmp_path: Path) -> None:
    """web1 logged systemd-journal's write to memory.pressure (printk.log), web2 rsyslogd's read of
    disable_ipv6 (raw-permissive.log): both propose converge_syslogd, each with its own rule."""
    from converge.baseline import load_baseline
    from converge.registry import Registry
    from converge.suggest import write_overlay

    web1, web2 = host_proposals("web1", "printk.log"), host_proposals("web2", "raw-permissive.log")
    (one,), (two,) = ([p for p in found if p.resource == "module:converge_syslogd"] for found in (web1, web2))
    assert one.files["selinux/converge_syslogd.te"] != two.files["selinux/converge_syslogd.te"]
    (tmp_path / "web.toml").write_text('[selinux]\npolicy = "default"\n')
    baseline = load_baseline(tmp_path / "web.toml", Registry())
    notes: list[str] = []
    written = write_overlay(baseline, [HostSuggestions("web1", "local", web1), HostSuggestions("web2", "local", web2)],
                            notes)
    te = (tmp_path / "selinux" / "converge_syslogd.te").read_text()
    assert sorted(line for line in te.split("\n") if line.startswith("allow ")) == [
        "allow syslogd_t cgroup_t:file write;", "allow syslogd_t sysctl_net_t:file read;"]
    assert "#   allow syslogd_t cgroup_t:file write from web1\n" in te
    assert "#   allow syslogd_t sysctl_net_t:file read from web2\n" in te
    assert "selinux/converge_syslogd.te: allow syslogd_t sysctl_net_t:file read from web2" in notes
    compiles(te, "converge_syslogd", tmp_path)
    overlay = tomllib.loads(written[0].read_text())
    assert overlay["selinux"]["modules"].count({"name": "converge_syslogd", "source": "selinux/converge_syslogd.te"}) == 1
    load_baseline(written[0], Registry())


def test_files_that_differ_and_cannot_be_merged_are_an_error_never_one_host_lost(tmp_path: Path) -> None:
    from converge.baseline import load_baseline
    from converge.errors import ConvergeError
    from converge.registry import Registry
    from converge.suggest import write_overlay

    (tmp_path / "web.toml").write_text('[selinux]\npolicy = "default"\n')
    baseline = load_baseline(tmp_path / "web.toml", Registry())
    mine = [Suggestion("selinux", "module", "module:x", {}, files={"selinux/x.te": text}) for text in ("a\n", "b\n")]
    with pytest.raises(ConvergeError, match=r"selinux/x\.te: web1, web2 propose different texts"):
        write_overlay(baseline, [HostSuggestions("web1", "local", mine[:1]), HostSuggestions("web2", "local", mine[1:])])
    assert not (tmp_path / "selinux").exists() and not (tmp_path / "web.suggested.toml").exists()


def test_a_boolean_over_every_port_type_ranks_after_the_one_over_the_port_in_question() -> None:
    # As the VM tier's httpd_t connect to zabbix_port_t (10051) found: httpd_can_network_connect
    # holds fewer rules but one of them is on the port_type attribute, every port of the policy.
    answer = selinux_suggest.run_helper({"policy": str(POLICY), "groups": [{
        "scontext": "system_u:system_r:httpd_t:s0", "tcontext": "system_u:object_r:zabbix_port_t:s0",
        "tclass": "tcp_socket", "perms": ["name_connect"]}]})
    (result,) = answer["groups"]
    ranked = sorted(result["booleans"], key=lambda b: tuple(result["breadth"][b[0]]))
    assert [name for name, _ in ranked][:2] == ["httpd_can_network_connect_zabbix", "httpd_can_network_connect"], result
    assert result["breadth"]["httpd_can_network_connect"][3] > 100  # target types: the port_type attribute expanded


def test_the_denial_source_is_one_that_holds_records(test_host: TestHost) -> None:
    # As the VM tier found: journalctl installed but no journald running reads an empty journal, and
    # ausearch without an audit.log finds nothing; dmesg then. A running journald (its socket) wins.
    script = list(selinux_suggest.DENIALS.argv)
    assert test_host.run(script).stdout.split("\n", 1)[0] == "# dmesg (no PATH records; may be rate-limited)"
    test_host.run([sys.executable, "-c", "import os, socket; os.makedirs('/run/systemd/journal', exist_ok=True); "
                   "socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).bind('/run/systemd/journal/socket')"])
    assert test_host.run(script).stdout.split("\n", 1)[0] == "# journalctl -k (no PATH records; may be rate-limited)"
