"""AppArmor proposals from real public records (tests/data/suggest/apparmor/SOURCES.md) in every
form (audit.log with `class=` and ENRICHED, printk with and without `class=`, journald's audit
transport), analysed by AppArmor's own library (python3-apparmor, in a helper on Debian's python3)
against Debian's abstractions and tunables as the apparmor package installs them here. The closed
loop compiles every amended profile with the real apparmor_parser in a test host."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from converge.auditlog import AuditRecord, parse_records
from converge.baseline import Baseline
from converge.providers.apparmor import suggest as aa_suggest
from converge.providers.apparmor.provider import COMPILE_ARGV
from converge.suggest import SYSTEM_PYTHON, HostSuggestions, Suggestion, exit_code, offer_sensitive, render_json, render_text
from tests.testhost import TestHost

DATA = Path(__file__).parent / "data" / "suggest" / "apparmor"
PROFILES = DATA / "profiles"
FORMS = ("audit.log", "printk.log", "journal.log")
MANAGED = ("usr.bin.swtpm", "usr.sbin.nginx", "snap.nextcloud.php-fpm", "dbus-session", "resolvconf", "who",
           "snap.microk8s.hook.disconnect-plug-network-control", "ubuntu_pro_esm_cache", "usr.bin.docker")
# The swtpm package ships this empty include with its profile.
SWTPM_LOCAL = "/etc/apparmor.d/local/usr.bin.swtpm"
NGINX_TROUBLESHOOTING_EDIT = ("/run/nginx.pid rwk,", "deny /run/nginx.pid x,")  # nap-apparmor's troubleshooting.md


def host_policy() -> dict[str, str]:
    """Debian's abstractions, tunables and abi as installed here (read, never written)."""
    files = {}
    for pattern in aa_suggest.POLICY_GLOBS[1:]:
        files.update({str(path): path.read_text(encoding="utf-8") for path in sorted(Path("/").glob(pattern.lstrip("/")))
                      if path.is_file()})
    files[SWTPM_LOCAL] = ""
    return files


def records_of(*names: str) -> list[AuditRecord]:
    text = "".join((DATA / name).read_text(encoding="utf-8") for name in names)
    return aa_suggest.apparmor_records(parse_records(text, "samples"), None)


def managed(**edits: tuple[str, str]) -> dict[str, aa_suggest.Managed]:
    """The test baseline's profiles; `edits` replaces a line of one (by file name, dots as _)."""
    found = {}
    for name in MANAGED:
        text = (PROFILES / name).read_text(encoding="utf-8")
        edit = edits.get(name.replace(".", "_").replace("-", "_"))
        if edit:
            assert edit[0] in text
            text = text.replace(*edit)
        found[name] = aa_suggest.Managed(name, str(PROFILES / name), text, "complain")
    return found


def analyse(profiles: dict[str, aa_suggest.Managed], host: dict[str, str] | None = None) -> list[Suggestion]:
    return aa_suggest.analyse(records_of(*FORMS), profiles, host or host_policy())


@pytest.fixture(scope="module")
def proposals() -> list[Suggestion]:
    return analyse(managed(usr_sbin_nginx=NGINX_TROUBLESHOOTING_EDIT))


def one(proposals: list[Suggestion], resource: str) -> Suggestion:
    (found,) = [p for p in proposals if p.resource == resource]
    return found


# ---- the records --------------------------------------------------------------------------------
def test_every_form_reaches_libapparmor_only_once_normalised(tmp_path: Path) -> None:
    records = records_of(*FORMS)
    assert {r.line.split(" ")[0] for r in records} >= {"type=AVC", "May", "audit:", "Jun", "[", "kernel:"}
    raw = aa_suggest.run_helper({"profile_dir": str(tmp_path), "records": [r.line for r in records]})["records"]
    fixed = aa_suggest.run_helper({"profile_dir": str(tmp_path),
                                   "records": [aa_suggest.libapparmor_line(r) for r in records]})["records"]
    # Debian 12's libapparmor (3.0.8) refuses class="file", the journal form and a bare `audit:` line...
    refused = [r.line for r, event in zip(records, raw, strict=True) if not event["parsed"]]
    assert any('class="file"' in line for line in refused)
    assert any("audit[204645]: AVC" in line for line in refused)
    assert any(line.startswith("audit: type=1400") for line in refused)
    # ... and parses every one of them in the form converge hands it
    assert all(event["parsed"] for event in fixed)
    assert {event["profile"] for event in fixed} >= {"swtpm", "/usr/sbin/nginx", "lspci", "dbus-session", "who",
                                                     "ubuntu_pro_esm_cache//ps"}


def test_normalised_line_drops_class_and_the_enriched_tail() -> None:
    (lspci,) = [r for r in records_of("audit.log") if r.get("profile") == "lspci"]
    line = aa_suggest.libapparmor_line(lspci)
    assert line.startswith("type=AVC msg=audit(1717430600.947:2040): apparmor=\"ALLOWED\" operation=\"open\" profile=")
    assert "class=" not in line and "\x1d" not in line and "FSUID" not in line
    (journal, *_) = records_of("journal.log")
    assert aa_suggest.libapparmor_line(journal).startswith("type=AVC msg=audit(0.000:0): apparmor=\"DENIED\"")


def test_one_record_seen_twice_counts_once_but_zero_serials_are_not_one_event() -> None:
    text = (DATA / "printk.log").read_text(encoding="utf-8")
    swtpm = [line for line in text.split("\n") if "profile=\"swtpm\"" in line]
    # the same kernel record through ausearch (audit.log form) and through the kernel log
    again = "type=AVC msg=audit(1651529746.124:98): " + swtpm[0].split("): ", 1)[1]
    records = aa_suggest.apparmor_records(parse_records("\n".join([*swtpm, again]), "x"), None)
    assert len(records) == len(swtpm)
    # apparmor.d#938's kernel printed audit(0000000000.000:0000) for two different records
    zeros = [r for r in records_of("printk.log") if r.get("profile") == "dbus-session"]
    assert len(zeros) == 2 and not any(aa_suggest.has_serial(r) for r in zeros)


def test_since_keeps_only_newer_records_and_status_records_give_the_last_load() -> None:
    records = parse_records((DATA / "printk.log").read_text(encoding="utf-8"), "x")
    newer = aa_suggest.apparmor_records(records, 1651529747.0)
    assert {r.get("profile") for r in newer if r.time and r.time > 1} == {"swtpm", "who", "ubuntu_pro_esm_cache//ps"}
    assert aa_suggest.last_loads(records) == {"libvirt-a382f0b5-97dc-4ae9-a1b6-5f83efd27dd7": 1625860396.588}


# ---- the kinds ------------------------------------------------------------------------------------
def test_profile_rule_is_the_exact_rule_the_records_need(proposals: list[Suggestion]) -> None:
    nginx = one(proposals, "/usr/sbin/nginx: owner /run/nginx.pid rw,")
    # d and c are w in the profile language; the same rule aa-logprof offers in nap-apparmor's guide
    assert nginx.kind == "profile-rule" and nginx.evidence["count"] == 3
    assert nginx.evidence["operation"] == ["mknod", "open", "unlink"] and nginx.evidence["comm"] == ["nginx"]
    resolv = one(proposals, "resolvconf: owner /etc/resolvconf.conf r,")  # audit.log, class="file", ENRICHED
    assert resolv.kind == "profile-rule" and resolv.evidence["events"] == ["1726778232.795:1655", "1726778232.795:1656"]
    assert resolv.evidence["first"] == resolv.evidence["last"] == 1726778232.795
    network = one(proposals, "dbus-session: network netlink raw,")  # printk, class="net"
    assert network.kind == "profile-rule" and network.evidence["apparmor"] == ["ALLOWED"]
    capability = one(proposals, "dbus-session: capability net_admin,")
    assert capability.kind == "profile-rule" and capability.evidence["severity"] == 8
    assert any("severity 8 of 10" in note and "high" in note for note in capability.notes)


def test_a_child_profiles_rule_goes_into_its_own_block(proposals: list[Suggestion]) -> None:
    node = one(proposals, "ubuntu_pro_esm_cache//ps: /sys/devices/system/node/ r,")  # fsuid 1000000, ouid 0: not owner
    assert node.kind == "profile-rule" and node.evidence["profile"] == "ubuntu_pro_esm_cache//ps"
    amended = node.files["apparmor/ubuntu_pro_esm_cache"].split("\n")
    child, close = amended.index("  profile ps {"), amended.index("  }")
    assert amended[close - 1] == "    /sys/devices/system/node/ r," and child < close
    for capability in ("dac_read_search", "dac_override"):
        assert one(proposals, f"ubuntu_pro_esm_cache//ps: capability {capability},").kind == "refused"


def test_abstractions_are_offered_never_chosen(proposals: list[Suggestion]) -> None:
    passwd = one(proposals, "swtpm: owner /etc/passwd r,")
    assert passwd.kind == "profile-rule" and passwd.evidence["severity"] == 4
    assert "alternative, not chosen: include <abstractions/nameservice>" in " ".join(passwd.notes)
    diff = passwd.files["apparmor/usr.bin.swtpm.diff"]
    assert "+  owner /etc/passwd r," in diff and "+  #include <abstractions/nameservice>" not in diff
    assert "alternative, not chosen: include <abstractions/nameservice>" in " ".join(
        one(proposals, "dbus-session: network netlink raw,").notes)


def test_exec_is_ix_by_default_px_when_the_target_has_a_profile_never_ux(proposals: list[Suggestion]) -> None:
    df = one(proposals, "snap.nextcloud.php-fpm: /bin/df mrix,")
    assert df.kind == "profile-rule" and "exec: ix, aa-logprof's default" in " ".join(df.notes)
    host = host_policy()
    host["/etc/apparmor.d/bin.ip"] = "profile ip /bin/ip {\n}\n"  # the host has a profile for the target
    with_target = analyse(managed(), host)
    ip = one(with_target, "snap.nextcloud.php-fpm: /bin/ip Px,")
    assert "exec: Px, aa-logprof's default when the target has a profile (the host's /etc/apparmor.d/bin.ip)" in ip.notes
    assert not [p for p in [*proposals, *with_target] if " ux" in p.resource.lower() or "Ux," in p.resource]


def test_stale_when_the_profile_or_an_include_already_allows(proposals: list[Suggestion]) -> None:
    for resource in ("swtpm: owner /etc/nsswitch.conf r,", "swtpm: capability chown,"):
        assert one(proposals, resource).kind == "stale"
    # abstractions/nameservice allows @{etc_ro}/passwd: covered once the variable is expanded
    who = one(proposals, "who: owner /etc/passwd r,")
    assert who.kind == "stale" and who.evidence["records"][0].startswith("audit: type=1400")
    # nap-apparmor's profile before the troubleshooting edit has /run/nginx.pid rwk
    original = analyse(managed())
    assert one(original, "/usr/sbin/nginx: owner /run/nginx.pid rw,").kind == "stale"


def test_intended_when_the_profiles_own_deny_rule_denies_it() -> None:
    denying = analyse(managed(usr_bin_swtpm=("owner /etc/nsswitch.conf r,",
                                             "owner /etc/nsswitch.conf r,\n  deny /etc/passwd r,\n"
                                             "  deny capability sys_admin,")))
    passwd = one(denying, "swtpm: owner /etc/passwd r,")
    assert passwd.kind == "intended" and passwd.table == {} and not passwd.files
    assert "denied by the profile's own deny rule" in passwd.notes[-1]
    assert one(denying, "swtpm: capability sys_admin,").kind == "intended"
    # a deny rule for one permission: that one is intended, the others are proposed
    partly = analyse(managed(usr_sbin_nginx=("/run/nginx.pid rwk,", "deny /run/nginx.pid w,")))
    assert one(partly, "/usr/sbin/nginx: owner /run/nginx.pid w,").kind == "intended"
    assert one(partly, "/usr/sbin/nginx: owner /run/nginx.pid r,").kind == "profile-rule"


def test_refused_for_sensitive_capabilities_and_paths(proposals: list[Suggestion]) -> None:
    admin = one(proposals, "swtpm: capability sys_admin,")
    assert admin.kind == "refused" and admin.evidence["count"] == 2 and admin.evidence["severity"] == 10
    assert "capability sys_admin: never proposed" in admin.notes[-1]
    module = one(proposals, "snap.microk8s.hook.disconnect-plug-network-control: capability sys_module,")
    assert module.kind == "refused" and not module.files


def test_records_the_library_has_no_rule_for_are_said_not_dropped(proposals: list[Suggestion]) -> None:
    mount = one(proposals, "/usr/bin/docker: mount (not analysed)")  # audit.log without class=
    assert mount.kind == "refused" and mount.evidence["events"] == ["1444521663.545:61650"]
    assert "no rule out of 'mount' records (failed srcname match)" in mount.notes[0]


def test_a_host_file_the_library_cannot_read_is_left_out_and_said() -> None:
    host = host_policy()
    host["/etc/apparmor.d/bwrap"] = (DATA / "host" / "bwrap").read_text(encoding="utf-8")  # AppArmor 4 syntax
    found = analyse(managed(), host)
    passwd = one(found, "swtpm: owner /etc/passwd r,")
    assert passwd.kind == "profile-rule"
    (note,) = [note for note in passwd.notes if "could not read" in note]
    assert note.startswith("AppArmor's library could not read 1 of the host's files, left out: bwrap: ") and "userns" in note


def test_records_of_profiles_the_baseline_does_not_manage_are_not_its_business(proposals: list[Suggestion]) -> None:
    assert not [p for p in proposals if p.resource.startswith(("lspci", "briar-desktop", "snap.openra.ra"))]


# ---- output ---------------------------------------------------------------------------------------
def test_json_text_and_exit_code(proposals: list[Suggestion]) -> None:
    results = [HostSuggestions("web1", "local", proposals)]
    assert exit_code(results) == 2
    assert exit_code([HostSuggestions("web1", "local", [p for p in proposals if p.kind != "profile-rule"])]) == 0
    record = next(s for s in json.loads(render_json(results))["hosts"][0]["suggestions"] if s["kind"] == "profile-rule")
    assert record["provider"] == "apparmor" and record["evidence"]["records"]
    assert record["table"]["profiles"][next(iter(record["table"]["profiles"]))]["source"].startswith("apparmor/")
    assert "+ profile-rule /usr/sbin/nginx: owner /run/nginx.pid rw," in render_text(results)


def test_write_puts_the_amended_profile_and_its_diff_next_to_the_baseline(proposals: list[Suggestion],
                                                                           tmp_path: Path) -> None:
    from converge.baseline import load_baseline
    from converge.registry import Registry
    from converge.suggest import write_overlay

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "profiles").mkdir()
    shutil.copy(PROFILES / "usr.bin.swtpm", tmp_path / "profiles" / "usr.bin.swtpm")
    (tmp_path / "web.toml").write_text('[apparmor.profiles."usr.bin.swtpm"]\nmode = "complain"\n'
                                       'source = "profiles/usr.bin.swtpm"\n')
    baseline = load_baseline(tmp_path / "web.toml", Registry())
    spec = baseline.tables["apparmor"].spec
    mine = aa_suggest.analyse(records_of(*FORMS), aa_suggest.managed_profiles(spec), host_policy())
    written = write_overlay(baseline, [HostSuggestions("web1", "local", mine)])
    overlay = tomllib.loads(written[0].read_text())
    assert overlay["apparmor"]["profiles"]["usr.bin.swtpm"] == {"mode": "complain", "source": "apparmor/usr.bin.swtpm"}
    assert {p.relative_to(tmp_path).as_posix() for p in written[1:]} == {"apparmor/usr.bin.swtpm",
                                                                       "apparmor/usr.bin.swtpm.diff"}
    # the diff names the source as git does, so `git apply` from the top turns the source into the copy
    diff = (tmp_path / "apparmor" / "usr.bin.swtpm.diff").read_text()
    assert diff.startswith("--- a/profiles/usr.bin.swtpm\n+++ b/profiles/usr.bin.swtpm\n")
    subprocess.run(["git", "-C", str(tmp_path), "apply", "apparmor/usr.bin.swtpm.diff"], check=True)
    assert (tmp_path / "profiles" / "usr.bin.swtpm").read_text() == (tmp_path / "apparmor" / "usr.bin.swtpm").read_text()
    load_baseline(written[0], Registry())  # the overlay is a valid baseline: its source was read and checked


# ---- the closed loop ------------------------------------------------------------------------------
@pytest.fixture
def compiling_host(test_host: TestHost) -> Iterator[TestHost]:
    test_host.write(SWTPM_LOCAL, "")
    yield test_host


def test_closed_loop_amended_profiles_compile_and_cover_every_proposed_group(compiling_host: TestHost) -> None:
    profiles = managed(usr_sbin_nginx=NGINX_TROUBLESHOOTING_EDIT)
    first = analyse(profiles)
    proposed = {p.resource for p in first if p.kind == "profile-rule"}
    held = {p.resource: p.kind for p in first if p.kind in ("refused", "intended")}
    assert len(proposed) >= 6 and held
    for name, each in profiles.items():
        if not each.rules:
            continue
        files, _ = aa_suggest.profile_files(each)
        compiled = compiling_host.run(list(COMPILE_ARGV), input=files[f"apparmor/{name}"], check=False)
        assert compiled.returncode == 0, (name, compiled.stderr)
        each.text, each.rules = files[f"apparmor/{name}"], {}
    second = analyse(profiles)
    by_group = {(p.evidence["profile"], p.evidence["rule"]): p for p in second}
    for proposal in [p for p in first if p.kind == "profile-rule"]:
        assert by_group[proposal.evidence["profile"], proposal.evidence["rule"]].kind == "stale", proposal.resource
    for resource, kind in held.items():
        assert one(second, resource).kind == kind  # still refused, still intended: not allowed
    assert not [p for p in second if p.kind == "profile-rule"]


# ---- the provider and the CLI ---------------------------------------------------------------------
def test_the_provider_reads_the_host_once_and_proposes_for_its_source_profiles(tmp_path: Path) -> None:
    from converge.baseline import load_baseline
    from converge.reads import CommandResult, Facts, ReadGlob
    from converge.registry import Registry

    shutil.copytree(PROFILES, tmp_path / "profiles")
    (tmp_path / "web.toml").write_text('[apparmor.profiles."usr.sbin.nginx"]\nmode = "complain"\n'
                                       'source = "profiles/usr.sbin.nginx"\n')
    spec = load_baseline(tmp_path / "web.toml", Registry()).tables["apparmor"].spec
    provider = Registry().get("apparmor")
    reads = provider.suggest_reads(spec)
    assert aa_suggest.DENIALS in reads and ReadGlob("/etc/apparmor.d/abstractions/*") in reads
    log = "# journalctl _TRANSPORT=audit (no serials)\n" + (DATA / "journal.log").read_text(encoding="utf-8")
    host = host_policy()
    answers: dict[object, object] = {read: {path: text for path, text in host.items() if Path(path).match(read.pattern)}
                                     for read in reads if isinstance(read, ReadGlob)}
    answers[aa_suggest.DENIALS] = CommandResult(aa_suggest.DENIALS.argv, 0, log, "")
    found = provider.suggest(spec, Facts(answers), None)  # type: ignore[arg-type]
    assert [(p.kind, p.resource) for p in found] == [("stale", "/usr/sbin/nginx: owner /run/nginx.pid rw,")]
    assert found[0].evidence["sources"] == ["journalctl _TRANSPORT=audit (no serials)"]
    assert found[0].evidence["events"] == []  # journald's audit transport keeps no serial


def test_suggest_cli_in_a_test_host_without_records_proposes_nothing(test_host: TestHost, tmp_path: Path) -> None:
    shutil.copytree(PROFILES, tmp_path / "profiles")
    baseline = tmp_path / "web.toml"
    baseline.write_text('[apparmor.profiles."usr.sbin.nginx"]\nmode = "complain"\nsource = "profiles/usr.sbin.nginx"\n')
    done = test_host.converge("suggest", str(baseline), "--only", "apparmor", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    (host,) = json.loads(done.stdout)["hosts"]
    assert host["suggestions"] == [] and host["errors"] == [] and host["skipped"] == []


def test_cli_closed_loop_suggest_write_apply_suggest_again(test_host: TestHost, tmp_path: Path) -> None:
    """The host's audit.log holds the real records; suggest --write, apply the overlay (the real
    apparmor_parser compiles it first), and a second suggest finds the records covered."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copytree(PROFILES, tmp_path / "profiles")
    baseline = tmp_path / "web.toml"
    baseline.write_text('[apparmor.profiles.resolvconf]\nmode = "complain"\nsource = "profiles/resolvconf"\n')
    test_host.run(["mkdir", "-p", "/var/log/audit"])
    test_host.write("/var/log/audit/audit.log", (DATA / "audit.log").read_text(encoding="utf-8"))
    first = test_host.converge("suggest", str(baseline), "--json", "--write")
    assert first.returncode == 2, first.stdout + first.stderr
    (host,) = json.loads(first.stdout)["hosts"]
    assert [(s["kind"], s["resource"]) for s in host["suggestions"]] == [
        ("profile-rule", "resolvconf: owner /etc/resolvconf.conf r,")]
    assert host["suggestions"][0]["evidence"]["count"] == 2
    assert host["suggestions"][0]["evidence"]["sources"] == ["/var/log/audit/audit.log"]
    assert f"wrote {tmp_path / 'web.suggested.toml'}" in first.stderr
    assert (tmp_path / "apparmor" / "resolvconf.diff").read_text().startswith("--- a/profiles/resolvconf\n")
    applied = test_host.converge("apply", str(tmp_path / "web.suggested.toml"), "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "  owner /etc/resolvconf.conf r," in (test_host.read("/etc/apparmor.d/resolvconf") or "")
    again = test_host.converge("suggest", str(tmp_path / "web.suggested.toml"), "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert [s["kind"] for s in json.loads(again.stdout)["hosts"][0]["suggestions"]] == ["stale"]


def test_sensitive_paths_are_matched_by_the_librarys_own_path_expressions() -> None:
    """No public record of a confined read of /etc/shadow that no deny rule stops was found: the
    refusal of sensitive paths is checked on the library's rule objects directly."""
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import aa_helper\n"
        "from apparmor.rule.file import FileRule\n"
        "paths = json.loads(sys.argv[2])\n"
        "rules = {p: FileRule(p, 'r', None, FileRule.ALL, owner=True, log_event=True) for p in sys.argv[3:]}\n"
        "print(json.dumps({p: aa_helper._sensitive('file', r, paths, []) for p, r in rules.items()}))\n")
    done = subprocess.run([SYSTEM_PYTHON, "-I", "-c", script, str(aa_suggest.HELPER.parent),
                           json.dumps(list(aa_suggest.SENSITIVE_PATHS)), "/etc/shadow", "/etc/gshadow-",
                           "/etc/sudoers.d/90-cloud-init-users", "/root/.ssh/authorized_keys",
                           "/etc/ssh/ssh_host_ed25519_key", "/etc/passwd", "/run/nginx.pid", "/etc/ssh/sshd_config"],
                          capture_output=True, text=True, check=True)
    verdicts = json.loads(done.stdout)
    assert verdicts["/etc/shadow"] == "sensitive path /etc/shadow (/etc/{,g}shadow{,-})"
    for path in ("/etc/gshadow-", "/etc/sudoers.d/90-cloud-init-users", "/root/.ssh/authorized_keys",
                 "/etc/ssh/ssh_host_ed25519_key"):
        assert verdicts[path], path
    assert verdicts["/etc/passwd"] is verdicts["/run/nginx.pid"] is verdicts["/etc/ssh/sshd_config"] is None


def test_exec_of_a_program_anyone_may_have_written_is_refused() -> None:
    profiles = managed()
    exec_tmp = [r for r in records_of("printk.log") if r.get("operation") == "exec"]
    assert aa_suggest.SENSITIVE_EXEC_PATHS[0] == "/tmp/**"
    found = aa_suggest.analyse(exec_tmp, profiles, host_policy())
    assert {p.kind for p in found} == {"profile-rule"}  # /bin/df, /bin/ip: system programs
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import aa_helper\n"
        "rule = aa_helper._exec_rule('/tmp/tmp.c5hrJ5UrsF', 'ix')\n"
        "print(json.dumps(aa_helper._sensitive('file', rule, json.loads(sys.argv[2]), [])))\n")
    done = subprocess.run([SYSTEM_PYTHON, "-I", "-c", script, str(aa_suggest.HELPER.parent),
                           json.dumps(list(aa_suggest.SENSITIVE_EXEC_PATHS))], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == "sensitive path /tmp/tmp.c5hrJ5UrsF (/tmp/**)"


# ---- --allow-sensitive ----------------------------------------------------------------------------
def swtpm_baseline(directory: Path) -> Baseline:
    """A git repository with the swtpm profile and a baseline managing it from source."""
    from converge.baseline import load_baseline
    from converge.registry import Registry

    subprocess.run(["git", "init", "-q", str(directory)], check=True)
    (directory / "profiles").mkdir()
    shutil.copy(PROFILES / "usr.bin.swtpm", directory / "profiles" / "usr.bin.swtpm")
    (directory / "web.toml").write_text('[apparmor.profiles."usr.bin.swtpm"]\nmode = "complain"\n'
                                        'source = "profiles/usr.bin.swtpm"\n')
    return load_baseline(directory / "web.toml", Registry())


def swtpm_proposals(baseline: Baseline, *forms: str) -> list[Suggestion]:
    spec = baseline.tables["apparmor"].spec
    return aa_suggest.analyse(records_of(*(forms or FORMS)), aa_suggest.managed_profiles(spec), host_policy())


def test_a_sensitive_capability_is_withheld_and_offered_only_with_allow_sensitive(tmp_path: Path) -> None:
    from converge.suggest import offer_sensitive, write_overlay

    baseline = swtpm_baseline(tmp_path)
    found = swtpm_proposals(baseline)
    admin = one(found, "swtpm: capability sys_admin,")  # stefanberger/swtpm#691's two records
    assert admin.kind == "refused" and admin.sensitive == "capability sys_admin" and not admin.files
    assert admin.withheld is not None and admin.withheld.kind == "profile-rule"
    # the withheld one comes after the profile's other proposals: offered, its full file is written last
    assert [p.resource for p in found][-1] == "swtpm: capability sys_admin,"
    text = render_text([HostSuggestions("web1", "local", found)])
    assert "--allow-sensitive would offer: profile-rule swtpm: capability sys_admin," in text
    write_overlay(baseline, [HostSuggestions("web1", "local", found)])
    amended = (tmp_path / "apparmor" / "usr.bin.swtpm").read_text()
    assert "  owner /etc/passwd r," in amended and "sys_admin" not in amended
    assert "sys_admin" not in (tmp_path / "apparmor" / "usr.bin.swtpm.diff").read_text()

    offered = offer_sensitive(found, True)
    rule = one(offered, "swtpm: capability sys_admin,")
    assert rule.kind == "profile-rule" and rule.sensitive == "capability sys_admin"
    assert "SENSITIVE: capability sys_admin" in render_text([HostSuggestions("web1", "local", offered)])
    assert exit_code([HostSuggestions("web1", "local", [rule])]) == 2
    write_overlay(baseline, [HostSuggestions("web1", "local", offered)])
    amended = (tmp_path / "apparmor" / "usr.bin.swtpm").read_text()
    marked = "  capability sys_admin,  # SENSITIVE (capability sys_admin): offered only because of --allow-sensitive"
    assert marked in amended.split("\n") and "  owner /etc/passwd r," in amended.split("\n")
    diff = (tmp_path / "apparmor" / "usr.bin.swtpm.diff").read_text()
    assert f"+{marked}\n" in diff and "+  owner /etc/passwd r,\n" in diff
    subprocess.run(["git", "-C", str(tmp_path), "apply", "--check", "apparmor/usr.bin.swtpm.diff"], check=True)
    # the library reads the amended profile: the sensitive rule now covers the records
    again = aa_suggest.analyse(records_of(*FORMS), {"usr.bin.swtpm": aa_suggest.Managed(
        "usr.bin.swtpm", str(tmp_path / "profiles" / "usr.bin.swtpm"), amended, "complain")}, host_policy())
    assert one(again, "swtpm: capability sys_admin,").kind == "stale"


def test_ux_and_exec_from_world_writable_directories_are_never_offered(proposals: list[Suggestion]) -> None:
    """No public record of an exec logprof.conf allows only `ux` for (its `/bin/mount = u`), nor of
    one from /tmp by a profile the tests have, was found: the real /bin/df group of
    nextcloud-snap#1270, with the helper's answer for such a target, goes through classify."""
    profiles = managed()
    records = records_of(*FORMS)
    df = one(proposals, "snap.nextcloud.php-fpm: /bin/df mrix,")
    group = {"profile": "snap.nextcloud.php-fpm", "hat": "snap.nextcloud.php-fpm", "type": "exec",
             "records": [records.index(r) for r in records if r.get("name") == "/bin/df"],
             "aamodes": ["REJECTING"], "allowed": None, "intended": None, "severity": df.evidence["severity"],
             "includes": [], "globs": [], "unknown_profile": False, "rule": "/bin/df x"}
    only_ux = {**group, "missing": None, "sensitive": None, "never": False,
               "exec": {"choices": "u", "mode": None, "target_profile": None}}
    from_tmp = {**group, "missing": "/bin/df mrix,", "sensitive": "sensitive path /bin/df (/tmp/**)", "never": True,
                "exec": {"choices": "ipcnu", "mode": "ix", "target_profile": None}}
    for case in (only_ux, from_tmp):
        found = aa_suggest.classify(case, records, profiles["snap.nextcloud.php-fpm"], {})
        assert [s.kind for s in found] == ["refused"] and found[0].withheld is None
        assert offer_sensitive(found, True) == found  # nothing to offer, even with the flag
    assert "ux or a child profile, never proposed" in aa_suggest.classify(
        only_ux, records, profiles["snap.nextcloud.php-fpm"], {})[0].notes[-1]
    assert "not even with --allow-sensitive" in aa_suggest.classify(
        from_tmp, records, profiles["snap.nextcloud.php-fpm"], {})[0].notes[-1]
    assert not profiles["snap.nextcloud.php-fpm"].rules and not profiles["snap.nextcloud.php-fpm"].sensitive_rules


# ---- several hosts --------------------------------------------------------------------------------
def test_two_hosts_proposals_for_one_profile_are_merged_on_its_source(compiling_host: TestHost, tmp_path: Path) -> None:
    """nextcloud-snap#1270's two exec records as two hosts: web1 logged /bin/df, web2 /bin/df and
    /bin/ip. The written profile has each line once, marked with its hosts; the diff is against the
    baseline's source; the real parser compiles it and the library finds both hosts' records covered."""
    from converge.baseline import load_baseline
    from converge.registry import Registry
    from converge.suggest import merged_files, write_overlay

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copytree(PROFILES, tmp_path / "profiles")
    (tmp_path / "web.toml").write_text('[apparmor.profiles."snap.nextcloud.php-fpm"]\nmode = "complain"\n'
                                       'source = "profiles/snap.nextcloud.php-fpm"\n')
    baseline = load_baseline(tmp_path / "web.toml", Registry())
    spec = baseline.tables["apparmor"].spec
    execs = [r for r in records_of("printk.log") if r.get("operation") == "exec"]
    assert [r.get("name") for r in execs] == ["/bin/df", "/bin/ip"]
    hosts = []
    for name, theirs in (("web1", execs[:1]), ("web2", execs)):
        found = aa_suggest.analyse(theirs, aa_suggest.managed_profiles(spec), host_policy())
        hosts.append(HostSuggestions(name, "local", found))
    assert [p.resource for p in hosts[0].suggestions] == ["snap.nextcloud.php-fpm: /bin/df mrix,"]
    assert [p.resource for p in hosts[1].suggestions] == ["snap.nextcloud.php-fpm: /bin/df mrix,",
                                                          "snap.nextcloud.php-fpm: /bin/ip mrix,"]
    notes: list[str] = []
    written = write_overlay(baseline, hosts, notes)
    assert {p.relative_to(tmp_path).as_posix() for p in written[1:]} == {"apparmor/snap.nextcloud.php-fpm",
                                                                       "apparmor/snap.nextcloud.php-fpm.diff"}
    amended = (tmp_path / "apparmor" / "snap.nextcloud.php-fpm").read_text()
    added = [line for line in amended.split("\n") if "mrix," in line]
    assert added == ["  /bin/df mrix,  # from web1, web2", "  /bin/ip mrix,  # from web2"]
    assert notes == ["apparmor/snap.nextcloud.php-fpm: /bin/df mrix, from web1, web2",
                     "apparmor/snap.nextcloud.php-fpm: /bin/ip mrix, from web2"]
    diff = (tmp_path / "apparmor" / "snap.nextcloud.php-fpm.diff").read_text()
    assert diff.startswith("--- a/profiles/snap.nextcloud.php-fpm\n")
    subprocess.run(["git", "-C", str(tmp_path), "apply", "apparmor/snap.nextcloud.php-fpm.diff"], check=True)
    assert (tmp_path / "profiles" / "snap.nextcloud.php-fpm").read_text() == amended
    assert merged_files(hosts[::-1])[0]["apparmor/snap.nextcloud.php-fpm"].count("mrix,") == 2  # each line once
    compiled = compiling_host.run(list(COMPILE_ARGV), input=amended, check=False)
    assert compiled.returncode == 0, compiled.stderr
    again = aa_suggest.analyse(execs, {"snap.nextcloud.php-fpm": aa_suggest.Managed(
        "snap.nextcloud.php-fpm", str(tmp_path / "profiles" / "snap.nextcloud.php-fpm"), amended, "complain")},
        host_policy())
    assert [p.kind for p in again] == ["stale", "stale"]


def test_the_kernels_own_command_line_is_not_taken_for_a_record(test_host: TestHost) -> None:
    # As the VM tier found: a host booted with `apparmor=1` and no journald has that line in dmesg
    # and the syslog; `grep apparmor=` took it for a record and suggest failed on it.
    record = next(line for line in (DATA / "printk.log").read_text().splitlines() if 'apparmor="' in line)
    boot = "kernel: Command line: BOOT_IMAGE=/vmlinuz-6.1.0-27-amd64 root=/dev/vda1 ro apparmor=1 security=apparmor"
    test_host.write("/var/log/audit/audit.log", f"{boot}\n{record}\n")
    lines = test_host.run(list(aa_suggest.DENIALS.argv)).stdout.splitlines()
    assert lines[:2] == ["# /var/log/audit/audit.log", record], lines
    assert not any("Command line" in line for line in lines), lines
