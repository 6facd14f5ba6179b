"""Other people's files: the network and kernel corpus (tests/corpus/{ufw,fail2ban,sysctl,kmod}).

Each kind runs in one test host, one process (tests/corpus_net_run.py): every public file is put
where its subsystem reads it, checked by the subsystem's own tool, then captured by converge, the
capture validated and planned. A file the tool accepts must round-trip (plan exits 0, no change)
unless EXPECTED says why not; a file the tool rejects must be refused by converge too, with the
tool's reason or the key. Results are parametrized by file, so a failure names it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from converge.providers.fail2ban import JAIL_FILE, Fail2banProvider, Fail2banSpec
from converge.providers.fail2ban.parse import parse_jail_file
from converge.providers.fail2ban.provider import STATUS, live_get
from converge.providers.sysctl.spec import SysctlSpec
from converge.providers.ufw.parse import read_user_rules
from converge.reads import CommandResult, Facts, ReadFile, RunCommand
from tests.testhost import TestHost

# The public files are committed as the search tool's index gave them (read_file, not a repository
# snapshot): SOURCES.json names each one (repository, path, the commit the index holds, URL, "via").
# CONVERGE_CORPUS may point at another copy laid out as tests/corpus/KIND/NAME.
CORPUS = Path(os.environ.get("CONVERGE_CORPUS", Path(__file__).parent / "corpus"))
SOURCES = Path(__file__).parent / "corpus"
RUNNER = Path(__file__).parent / "corpus_net_run.py"
KINDS = ("ufw", "fail2ban", "sysctl", "kmod")

# Files whose round trip is not clean, and exactly why: kind -> file -> the words converge's plan or
# capture must say (a substring of its output).
EXPECTED: dict[str, dict[str, str]] = {
    "ufw": {},
    "fail2ban": {},
    "sysctl": {},
    "kmod": {},
}
# Files the subsystem's own tool rejects: kind -> file -> a substring of the tool's reason. The
# fail2ban files name filters and actions of their own repositories (filter.d/, action.d/), which
# Debian's fail2ban does not ship; converge's plan shows fail2ban's refusal.
REJECTED: dict[str, dict[str, str]] = {
    "ufw": {
        "apeeqq-apache-fileserver":
            "table name 'filter",
    },
    "fail2ban": {
        "abhishekghosh-fail2ban-apache-wordpress--jail.local":
            "Invalid action definition 'iptables[name=apache-noscript,': unexpected option",
        "abhishekghosh-fail2ban-geo-jail.local":
            "Found no accessible config files for 'action.d/geo-iptables-multiport' under",
        "alpham8-opensuse-webstack-nextcloud.local":
            "Found no accessible config files for 'filter.d/nextcloud' under /etc/fail2ban",
        "anthonyrobinson-fail2ban-jail.local":
            "Found no accessible config files for 'filter.d/nginx-401' under /etc/fail2ban",
        "arrumis-infra-fail2ban-jail.local":
            "Unable to read action 'iptables-host'",
        "balsakup-my-fail2ban-jail.local":
            "Found no accessible config files for 'action.d/slack-notify' under /etc/fail2ban",
        "ben-tvpp-etckeeper-testserver-jail.local":
            "Found no accessible config files for 'filter.d/sshd-ddos' under /etc/fail2ban",
        "blastfm-fail2ban-jail.local":
            "Found no accessible config files for 'filter.d/sshd-ddos' under /etc/fail2ban",
        "carawebs-wordpress-fail2ban-resources-jail.local":
            "Found no accessible config files for 'filter.d/wordpress-hard' under",
        "casjay-base-centos-jail.local":
            "Found no accessible config files for 'filter.d/fail2ban' under /etc/fail2ban",
        "castle-oak-fail2ban-apache-error-jail.local":
            "Found no accessible config files for 'filter.d/apache-404' under /etc/fail2ban",
        "cmsecurity-cowrie-fail2ban-cowrie.conf":
            "Found no accessible config files for 'filter.d/cowrie' under /etc/fail2ban",
        "cursoanalistavoip-fail2ban-asterisk-jail.local":
            "Found no accessible config files for 'filter.d/asterisk-security' under",
        "gaumala-init-vps-jail.local":
            "Found no accessible config files for 'filter.d/nginx-401' under /etc/fail2ban",
        "itcomputer-server-phone-jail.local":
            "Found no accessible config files for 'action.d/iptables-asterisk' under",
        "jbarmentlo-roger-skyline-42-custom.conf":
            "Found no accessible config files for 'filter.d/portscanner' under /etc/fail2ban",
        "jdesk-ipblacklist-jail.local":
            "While reading from '/etc/fail2ban/jail.local' [line 155]: option 'port' in",
        "leozorkrasota-fusionpbxscripts-jail.local":
            "Found no accessible config files for 'filter.d/fusionpbx' under /etc/fail2ban",
        "matei-ciobotaru-fail2ban-telegram-alerts-jail.local":
            "While reading from '/etc/fail2ban/jail.local' [line 20]: section ' ... ' already exists",
        "moritzdptv-postfixadmin-fail2ban-jail.local":
            "Found no accessible config files for 'filter.d/postfixadmin' under /etc/fail2ban",
        "mrsleeps-fail2ban-nginx-botnet-jail.local":
            "Found no accessible config files for 'filter.d/nginx-botnet' under /etc/fail2ban",
        "noexittv-doh-server-fail2ban-jail.local":
            "Found no accessible config files for 'filter.d/doh-any' under /etc/fail2ban",
        "nutratech-vps-root-nginx-limit-req.conf":
            "Have not found any log file for nginx-limit-req jail",
        "oxmel-fail2ban-config-jail.local":
            "Found no accessible config files for 'filter.d/nginx-badrequests' under",
        "primemurcia-proxmox-8-0-3-security-fail2-jail.local":
            "Found no accessible config files for 'filter.d/proxmox' under /etc/fail2ban",
        "qwertyjack-fakessh-jail.local":
            "Found no accessible config files for 'filter.d/sshf' under /etc/fail2ban",
        "theagentk-fail2ban-with-blocklist-de-jail.local":
            "Found no accessible config files for 'filter.d/blocklist' under /etc/fail2ban",
        "thespiritman-v2-nginx-fail2ban-jail.local":
            "Have not found any log file for nginx-http-auth jail",
        "unicornpanel-fail2ban-jail.local":
            "Found no accessible config files for 'action.d/upcp' under /etc/fail2ban",
        "vagrantin-myfail2ban-jail.local":
            "Bad value substitution: option 'ignorecommand' in section",
    },
    # Beyond KERNEL_REFUSALS: a line that is no assignment (a key without value, a pasted shell prompt).
    "sysctl": {
        "oviron-vps-init-sysctl.conf": "corpus-oviron-vps-init-sysctl.conf(44): invalid syntax, continuing...",
        "t-h-e-c-h-e-f-sysctl-99-sysctl.conf": "corpus-t-h-e-c-h-e-f-sysctl-99-sysctl.conf(31): invalid syntax, continuing...",
    },
    "kmod": {
    },
}
# sysctl -p on keys this kernel lacks or whose value it refuses (it differs between kernels, so
# it is not a table): each is a refusal of that key only, and converge must name each key.
KERNEL_REFUSALS = re.compile(r'sysctl: (cannot stat /proc/sys/\S+: No such file or directory'
                             r'|setting key "[^"]+": (Invalid argument|No such file or directory|Operation not permitted))')


def corpus_files(kind: str) -> list[str]:
    """The files SOURCES.json records; each must be in CORPUS (a missing one fails, named)."""
    return sorted(json.loads((SOURCES / kind / "SOURCES.json").read_text()))


_results: dict[str, dict[str, dict[str, Any]]] = {}


def results(kind: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every file of every kind through the runner, once per session: one test host and one
    process per kind, the four at once (each mostly waits for its subsystem's tools)."""
    if not _results:
        hosts, runs = [], {}
        try:
            for each in KINDS:
                state = tmp_path_factory.mktemp(f"corpus-{each}")
                hosts.append(host := TestHost(state / "host", f"corpus-{each}"))
                argv = ["nsenter", "-t", str(host.pid), "-m", "-n", "-u", "--",
                        sys.executable, str(RUNNER), each, str(CORPUS / each), str(state / "work")]
                runs[each] = (state, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            for each, (state, process) in runs.items():
                stdout, stderr = process.communicate()
                assert process.returncode == 0, stderr
                (state / "results.jsonl").write_text(stdout)  # kept by pytest, to read after a failure
                _results[each] = {entry["name"]: entry for entry in map(json.loads, stdout.splitlines())}
        finally:
            for host in hosts:
                host.close()
    return _results[kind]


def _converge_steps(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    steps = [(name, result[name]) for name in ("capture", "validate", "plan") if result.get(name)]
    own = result.get("own") or {}
    return steps + [(f"as converge's own file: {name}", own[name]) for name in ("capture", "validate") if own.get(name)]


def _plan_changes(result: dict[str, Any]) -> list[str]:
    (host,) = json.loads(result["plan"]["stdout"])["hosts"]
    return [f"{change['action']} {change['resource']}" for change in host["changes"]] + [f"error: {host['error']}"] * bool(
        host["error"])


def _said(result: dict[str, Any]) -> str:
    return "\n".join(str(step[key]) for _, step in _converge_steps(result) for key in ("stdout", "stderr"))


def _tool_accepts(kind: str, tool: dict[str, Any]) -> bool:
    if kind == "sysctl":  # the file is fine; this kernel lacks or refuses some keys (named by converge)
        return all(KERNEL_REFUSALS.fullmatch(line) for line in tool["stderr"].splitlines())
    # ufw skips what it cannot read with a warning and goes on: that is a refusal of that line.
    return tool["rc"] == 0 and not (kind == "ufw" and "WARN" in tool["stderr"])


@pytest.mark.parametrize(("kind", "name"), [(kind, name) for kind in KINDS for name in corpus_files(kind)])
def test_corpus_file(kind: str, name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    found = results(kind, tmp_path_factory)
    assert name in found, f"{name} is not in {CORPUS / kind}: SOURCES.json gives its repository, commit and URL"
    result = found[name]
    for step, outcome in _converge_steps(result):
        assert isinstance(outcome["rc"], int), f"{step}: {outcome['rc']}"
        assert "internal error" not in outcome["stderr"] and "Traceback" not in outcome["stderr"], f"{step}: {outcome['stderr']}"
    tool = result["tool"]
    if _tool_accepts(kind, tool):
        assert name not in REJECTED[kind], f"{kind} accepts it now: {tool}"
    else:
        assert name in REJECTED[kind], f"{kind}'s own tool rejects it, unrecorded: {tool['stderr']}"
        assert REJECTED[kind][name] in tool["stdout"] + tool["stderr"]
    refused_by_converge(kind, result)
    assert result["capture"]["rc"] == 0, result["capture"]["stderr"]
    assert result["validate"]["rc"] == 0, result["validate"]["stderr"]
    own = result.get("own")
    if own:  # the file as converge's own: what capture writes of it, validate accepts
        assert own["capture"]["rc"] == 0 and own["validate"]["rc"] == 0, (own["capture"]["stderr"], own["validate"]["stderr"])
    if name in EXPECTED[kind]:
        assert EXPECTED[kind][name] in _said(result)
        return
    assert (result["plan"]["rc"], _plan_changes(result)) == (0, []), result["plan"]["stdout"] + result["plan"]["stderr"]


def refused_by_converge(kind: str, result: dict[str, Any]) -> None:
    """What the tool refused, converge says too: the key, the tool's reason, the file."""
    tool, said = result["tool"], _said(result)
    if kind == "sysctl":
        # sysctl -p names each key the kernel lacks or refused; capture leaves each out, named.
        for key in re.findall(r"cannot stat /proc/sys/(\S+): No such file", tool["stderr"]):
            where = f"/etc/sysctl.d/corpus-{result['name']}"
            assert f"{key.replace('/', '.')}: configured at boot (in {where}) but absent from this kernel" in said
        # A line it cannot read: converge names the file and the line too.
        for path, number in re.findall(r"sysctl: (\S+)\((\d+)\): invalid syntax", tool["stderr"]):
            assert f"{path} line {number}: " in said, (path, number)
        # A value it refused to write: left out as differing, unless the kernel holds it already.
        captured = tomllib.loads(result["captured"]).get("sysctl", {})
        for key in re.findall(r'setting key "([^"]+)"', tool["stderr"]):
            assert key in captured or re.search(
                rf"{re.escape(key)}: (runtime .* differs from the boot configuration|configured at boot but absent)", said), key
    elif kind == "fail2ban" and tool["rc"] != 0:
        reasons = re.findall(r"ERROR {2,}(.+)", tool["stderr"])
        assert reasons, tool["stderr"]
        assert "fail2ban-client -t refuses the configuration now on this host" in said or "Failed during configuration" in said
    elif kind == "ufw" and not _tool_accepts(kind, tool):
        assert "/etc/ufw/user" in said, said


def test_every_expected_entry_names_a_corpus_file() -> None:
    for table in (EXPECTED, REJECTED):
        for kind, entries in table.items():
            assert set(entries) <= set(corpus_files(kind)), kind


def test_every_corpus_file_has_its_source() -> None:
    for kind in KINDS:
        sources = json.loads((SOURCES / kind / "SOURCES.json").read_text())
        present = sorted(path.name for path in (CORPUS / kind).iterdir() if path.name != "SOURCES.json")
        assert present == sorted(sources), f"{kind}: the corpus copy in {CORPUS} differs from SOURCES.json"
        for name, source in sources.items():
            assert source["url"] == f"https://github.com/{source['repo']}/blob/{source['commit']}/{source['path']}", name
            assert re.fullmatch(r"[0-9a-f]{40}", source["commit"]), name


# ---- defects the corpus found, each shown on its corpus file ----------------------------------------


def test_fail2ban_reads_a_value_up_to_its_inline_semicolon_comment_as_fail2ban_does() -> None:
    # fail2ban's old recidive jail, copied into public jail.local files (Vagrantin/myfail2ban, Jdesk/ipblacklist).
    text = "[recidive]\nenabled  = true\nbantime  = 604800  ; 1 week\nfindtime = 86400   ; 1 day\n"
    sections = parse_jail_file(text, "jail.local")
    assert sections["recidive"]["bantime"] == "604800"
    assert sections["recidive"]["findtime"] == "86400"


def test_a_write_only_sysctl_is_refused_with_its_reason() -> None:
    # net.ipv4.route.flush = 1 in public tuning files (Edu4rdSHL/linuxscripts, netbospl/generic): writing
    # it flushes the route cache; reading it fails.
    with pytest.raises(ValueError, match="write-only trigger"):
        SysctlSpec.model_validate({"net.ipv4.route.flush": 1})


def test_captured_sysctl_leaves_write_only_keys_out_with_a_note(tmp_path_factory: pytest.TempPathFactory) -> None:
    result = results("sysctl", tmp_path_factory)["edu4rdshl-linuxscripts-80-network-tuning.conf"]
    assert result["capture"]["rc"] == 0, result["capture"]["stderr"]
    assert "net.ipv4.route.flush: a write-only trigger" in result["capture"]["stderr"]
    assert "net.ipv4.route.flush" not in tomllib.loads(result["captured"]).get("sysctl", {})


# ---- one sample per kind: part of a public file declared, applied on a fresh host, re-planned clean ----


def _apply_and_replan(host: TestHost, baseline: Path) -> None:
    first = host.converge("plan", str(baseline))
    assert first.returncode == 2, first.stdout + first.stderr  # a fresh host lacks what the file declares
    applied = host.converge("apply", str(baseline), "--yes")
    assert applied.returncode == 0 and "local: converged" in applied.stdout, applied.stdout + applied.stderr
    again = host.converge("plan", str(baseline))
    assert again.returncode == 0 and "in sync" in again.stdout, again.stdout + again.stderr


def test_part_of_a_public_ufw_rule_set_applies_and_ufw_agrees(test_host: TestHost, tmp_path: Path) -> None:
    # noraworld/ufw-conf: a web server's rules; the first three of its tuples, as ufw wrote them.
    tuples = [line for line in (CORPUS / "ufw" / "noraworld-ufw-conf" / "user.rules").read_text().splitlines()
              if line.startswith("### tuple ###")][:3]
    assert len(tuples) == 3
    baseline = tmp_path / "ufw.toml"
    baseline.write_text('[ufw]\nenabled = true\ndefault_incoming = "deny"\n' + "".join(
        f'[[ufw.rules]]\naction = "{fields[3]}"\nport = "{fields[5]}"\nproto = "{fields[4]}"\n'
        for fields in (line.split() for line in tuples)))
    _apply_and_replan(test_host, baseline)
    status = test_host.run(["ufw", "status"]).stdout
    assert "Status: active" in status
    for fields in (line.split() for line in tuples):
        to = fields[5] if fields[4] == "any" else f"{fields[5]}/{fields[4]}"
        assert re.search(rf"^{re.escape(to)}\s+{fields[3].upper()}\s+Anywhere\s*$", status, re.M), status


def test_part_of_a_public_jail_local_applies_and_fail2ban_agrees(test_host: TestHost, tmp_path: Path) -> None:
    # QwertyJack/FakeSSH: [DEFAULT] bantime/findtime/maxretry, set on an sshd jail declared as converge's.
    sections = parse_jail_file((CORPUS / "fail2ban" / "qwertyjack-fakessh-jail.local").read_text())
    defaults = sections["DEFAULT"]
    test_host.run(["rm", "-rf", "/run/systemd/system"])  # no systemd here: converge starts this host's own server
    test_host.write("/var/log/auth.log", "")
    baseline = tmp_path / "fail2ban.toml"
    baseline.write_text("[fail2ban]\nstart_server = true\n[fail2ban.jails.sshd]\nenabled = true\n" + "".join(
        f"{option} = {defaults[option]}\n" for option in ("bantime", "findtime", "maxretry")))
    _apply_and_replan(test_host, baseline)
    for option in ("bantime", "findtime", "maxretry"):
        assert test_host.run(["fail2ban-client", "get", "sshd", option]).stdout.strip() == defaults[option]


def test_part_of_a_public_sysctl_file_applies_and_sysctl_agrees(test_host: TestHost, tmp_path: Path) -> None:
    # virgilhem/linux-hardening 51-tcpip-harden.conf: its net.ipv4 keys (per network namespace: real here).
    text = (CORPUS / "sysctl" / "virgilhem-linux-hardening-51-tcpip-harden.conf").read_text()
    wanted = {key: " ".join(value.split()) for key, value in re.findall(r"^(net\.ipv4\.[\w.]+)\s*=\s*([^#\n]+)", text, re.M)}
    assert len(wanted) >= 5
    baseline = tmp_path / "sysctl.toml"
    baseline.write_text("[sysctl]\n" + "".join(f'"{key}" = {json.dumps(value) if " " in value else value}\n'
                                                for key, value in wanted.items()))
    _apply_and_replan(test_host, baseline)
    for key, value in wanted.items():
        assert test_host.run(["sysctl", "-n", key]).stdout.split() == value.split(), key


def test_part_of_a_public_modprobe_file_applies_and_modprobe_agrees(test_host: TestHost, tmp_path: Path) -> None:
    # virgilhem/linux-hardening blacklist.conf: its uncommon network protocols, `install NAME /bin/true`.
    text = (CORPUS / "kmod" / "virgilhem-linux-hardening-blacklist.conf").read_text()
    protocols = re.findall(r"^install (dccp|sctp|rds|tipc) /bin/true$", text, re.M)
    assert protocols == ["dccp", "sctp", "rds", "tipc"]
    baseline = tmp_path / "kmod.toml"
    baseline.write_text(f"[kmod]\ndisabled = {json.dumps(protocols)}\n")
    _apply_and_replan(test_host, baseline)
    shown = test_host.run(["modprobe", "--showconfig"]).stdout
    for module in protocols:
        assert f"install {module} /bin/false" in shown and f"blacklist {module}" in shown
        assert test_host.run(["modprobe", "-n", "-v", module]).stdout.strip() == "install /bin/false"


def test_a_ufw_rules_file_with_crlf_line_ends_is_said_to_be_unloadable() -> None:
    # apeeqq/apache-fileserver's user.rules, saved on Windows: iptables-restore refuses line 1.
    text = "\r\n".join(["*filter", ":ufw-user-input - [0:0]", "### RULES ###", "",
                        "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in", "-A ufw-user-input -p tcp --dport 22 -j ACCEPT",
                        "", "### END RULES ###", "COMMIT", ""])
    rules, skipped = read_user_rules(text, "/etc/ufw/user.rules")
    assert [rule.describe() for rule in rules] == ["in proto tcp from any to any port 22"]
    assert skipped == ["/etc/ufw/user.rules line 1: ends in a carriage return (CRLF line ends); iptables-restore refuses "
                       "the file, so ufw cannot load its rules: rewrite it with LF line ends"]


def test_fail2ban_capture_tests_the_configuration_once_and_asks_a_stopped_server_nothing(test_host: TestHost) -> None:
    # Each fail2ban-client start costs ~0.3 s: 40 public jail files took 350 s to capture and plan.
    provider = Fail2banProvider()
    first = provider.capture_reads()
    # A jail as in AngellusMortis/mortis-configs' jail.local.
    text = "[sshd]\nenabled = true\nmaxretry = 5\nfindtime = 1d\nbantime = 2w\nignoreip = 127.0.0.1/8\n"
    facts = Facts({ReadFile(JAIL_FILE): text, RunCommand(STATUS): CommandResult(STATUS, 255, "", "not running")})
    more = provider.capture_more_reads(facts)
    assert more == [RunCommand(live_get("sshd", option)) for option in ("maxretry", "findtime", "bantime", "ignoreip")]
    assert not set(more) & set(first)  # -t and status were read once, with the first batch
    # Without the server's socket, the shell answers at once: no fail2ban-client is started.
    test_host.run(["rm", "-rf", "/run/fail2ban", "/var/run/fail2ban"])
    guarded = test_host.run(list(live_get("sshd", "maxretry")), check=False)
    assert guarded.returncode == 3 and guarded.stdout == ""


def test_corpus_counts(tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]) -> None:
    """The table for the README and the issue: files, tool verdicts, clean round trips, notes."""
    rows = ["| kind | files | own tool accepts | own tool rejects | round trips clean | noted |", "|---|---|---|---|---|---|"]
    for kind in KINDS:
        found = {name: result for name, result in results(kind, tmp_path_factory).items() if name in corpus_files(kind)}
        accepted = [name for name, result in found.items() if _tool_accepts(kind, result["tool"])]
        clean = [name for name, result in found.items()
                 if result["plan"] and (result["plan"]["rc"], _plan_changes(result)) == (0, [])]
        assert set(found) == set(corpus_files(kind))
        assert set(found) - set(clean) == set(EXPECTED[kind]), kind
        lacking = sum(1 for result in found.values() if kind == "sysctl" and result["tool"]["rc"] != 0)
        accepts = f"{len(accepted)} ({lacking} with keys this kernel lacks or refuses)" if lacking else str(len(accepted))
        rejects = len(found) - len(accepted)
        rows.append(f"| {kind} | {len(found)} | {accepts} | {rejects} | {len(clean)} | {len(EXPECTED[kind])} |")
    with capsys.disabled():
        print("\n" + "\n".join(rows))


def test_a_filter_option_quoting_a_reference_is_fail2bans_own_grammar() -> None:
    # Vagrantin/myfail2ban's jail.local copies jail.conf's pass2allow-ftp jail (Debian's jail.conf has it too).
    sections = parse_jail_file('[pass2allow-ftp]\nfilter       = apache-pass[knocking_url="%(knocking_url)s"]\n')
    value = sections["pass2allow-ftp"]["filter"]
    assert value == 'apache-pass[knocking_url="%(knocking_url)s"]'
    jails = Fail2banSpec.model_validate({"jails": {"pass2allow-ftp": {"filter": value}}}).jails
    assert jails["pass2allow-ftp"].section()["filter"] == value
