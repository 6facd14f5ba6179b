"""The corpus of public firewalld, AppArmor and SELinux files (tests/corpus/<kind>), run inside one
test host by one process: `python -m tests.corpus_mac KIND CORPUS WORKDIR OPTIONS-JSON` prints a JSON object
of results by corpus file. For each file the subsystem's own tool says first whether it accepts
it; then converge (its CLI, called in this process) captures, validates and plans, or, for a file
the tool refuses, is shown to refuse it too with the tool's reason.

Files that cannot clash are put on the host together, so that one capture and one plan cover
many of them (each firewalld or semodule call costs a Python start or a policy rebuild); a group
whose round fails is run again one file at a time, so a result always names its file.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

Result = dict[str, Any]
STARTED = time.monotonic()
SAMPLE = "(sample baseline)"  # the key of the sample's result


def converge(*args: str) -> tuple[int, str, str]:
    """The converge CLI, called in this process (no interpreter start per call)."""
    from converge.cli import main

    print(f"{time.monotonic() - STARTED:6.1f}s converge {' '.join(args[:1])}", file=sys.stderr, flush=True)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    print(f"{time.monotonic() - STARTED:6.1f}s {argv[0]}", file=sys.stderr, flush=True)
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


def provider_notes(stderr: str, provider: str) -> list[str]:
    prefix = f"local: {provider}: "
    return [line.removeprefix(prefix) for line in stderr.splitlines() if line.startswith(prefix)]


def round_trip(provider: str, work: Path) -> Result:
    """capture -> validate -> plan of this host, as a user runs them."""
    captured = work / f"captured-{provider}.toml"
    code, _, err = converge("capture", "-H", "local", "--only", provider, "-o", str(captured))
    result: Result = {"capture": code, "notes": provider_notes(err, provider), "capture_stderr": err}
    if code != 0:
        return result
    result["table"] = tomllib.loads(captured.read_text()).get(provider, {})
    code, out, err = converge("validate", str(captured))
    result["validate"] = code
    if code != 0:
        result["validate_output"] = out + err
        return result
    code, out, err = converge("plan", str(captured), "--json")
    result["plan"] = code
    try:
        host = json.loads(out)["hosts"][0]
        result["changes"] = [change["resource"] for change in host["changes"]]
        result["warnings"] = host.get("warnings", [])
    except (ValueError, KeyError, IndexError):
        result["plan_output"] = out + err
    return result


def grouped(names: list[str], clashes: Callable[[str, str], bool]) -> list[list[str]]:
    """Greedy groups of names no two of which clash."""
    groups: list[list[str]] = []
    for name in names:
        for group in groups:
            if not any(clashes(name, other) for other in group):
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


# --- firewalld ------------------------------------------------------------------------------

FIREWALLD = Path("/etc/firewalld")
FIREWALLD_DIRS = {"zone": "zones", "service": "services", "policy": "policies"}
# firewall-offline-cmd --check-config's own code (firewall-offline-cmd, Debian's firewalld 1.3),
# run on a configuration directory per file in one Debian python3 process.
FIREWALLD_CHECK = r"""
import json, sys
from firewall import config
from firewall.core.fw import Firewall
from firewall.core.io.functions import check_on_disk_config
for directory in sys.argv[1:]:
    config.set_system_config_paths(directory)
    try:
        fw = Firewall(offline=True)
        fw.start()
        check_on_disk_config(fw)
        print(json.dumps([directory, None]), flush=True)
    except Exception as error:
        print(json.dumps([directory, str(error)]), flush=True)
"""


def firewalld(corpus: Path, work: Path, options: dict[str, Any]) -> dict[str, Result]:
    sources: dict[str, dict[str, Any]] = json.loads((corpus / "SOURCES.json").read_text())

    def target(name: str) -> str:
        """Where firewalld reads the file: /etc/firewalld/<its kind>/<its name upstream>."""
        entry = sources[name]
        return f"{FIREWALLD_DIRS[entry['role']]}/{Path(entry['path']).name}"

    def parts(name: str) -> list[str]:
        """The file and the corpus files it needs: its repository's own services that it names,
        and for a policy the zones it joins."""
        wanted = set(sources[name].get("services", []))
        return [name, *sources[name].get("with", []),
                *sorted(other for other, entry in sources.items() if entry["role"] == "service"
                        and entry["repo"] == sources[name]["repo"] and Path(entry["path"]).stem in wanted)]

    check_dirs = {}
    for name in sources:
        directory = work / "check" / name
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        shutil.copy(FIREWALLD / "firewalld.conf", directory)
        for part in parts(name):
            (directory / target(part)).parent.mkdir(exist_ok=True)
            shutil.copy(corpus / part, directory / target(part))
        check_dirs[str(directory)] = name
    checked = run(["/usr/bin/python3", "-c", FIREWALLD_CHECK, *check_dirs])
    verdicts = {check_dirs[directory]: error for directory, error in map(json.loads, checked.stdout.splitlines())}
    results: dict[str, Result] = {name: {"tool": verdicts.get(name, f"not checked: {checked.stderr}")} for name in sources}

    def bound(name: str) -> set[str]:
        """Interfaces and sources the zones bind (firewalld binds each to one zone), and the
        services installed (one file per name)."""
        found = set()
        for part in parts(name):
            if sources[part]["role"] == "service":
                found.add(f"service:{target(part)}:{(corpus / part).read_text()}")
            elif sources[part]["role"] == "zone":
                root = ElementTree.parse(corpus / part).getroot()
                found |= {f"{child.tag}:{value}" for child in root if child.tag in ("interface", "source")
                          for value in child.attrib.values()}
        return found

    def clashes(left: str, right: str) -> bool:
        mine, theirs = bound(left), bound(right)
        services = {item.rpartition(":")[0] for item in mine ^ theirs if item.startswith("service:")}
        return bool(mine & theirs - {item for item in mine if item.startswith("service:")}) or any(
            sum(item.startswith(path + ":") for item in mine | theirs) > 1 for path in services)

    # Policies first: the zones they join keep their own names.
    accepted = sorted((name for name in sources if results[name]["tool"] is None),
                      key=lambda name: sources[name]["role"] != "policy")
    for group in grouped(accepted, clashes):
        outcome = _firewalld_round(group, corpus, work, target, parts)
        if len(group) > 1 and not _firewalld_group_clean(outcome):
            for name in group:
                results[name] |= _firewalld_round([name], corpus, work, target, parts)[name]
        else:
            for name in group:
                results[name] |= outcome[name]
    # Refused files: those firewalld can still list (an unknown service, say) in one round, where
    # capture names each zone's problem; a file it cannot read at all (XML, a port) fails the whole
    # listing, so alone.
    refused = [name for name in sources if results[name]["tool"] is not None]
    listable = [name for name in refused if results[name]["tool"].startswith("INVALID_SERVICE")]
    for group in [listable, *([name] for name in refused if name not in listable)]:
        if group:
            for name, result in _firewalld_round(group, corpus, work, target, parts, plan=False).items():
                results[name] |= result
    return results


def _firewalld_group_clean(outcome: dict[str, Result]) -> bool:
    return all(result.get("plan") == 0 and not any("--check-config" in note for note in result["notes"])
               for result in outcome.values())


def _firewalld_round(group: list[str], corpus: Path, work: Path, target: Callable[[str], str],
                     parts: Callable[[str], list[str]], *, plan: bool = True) -> dict[str, Result]:
    """The group's files on the host at once, then capture (and validate, plan). A zone whose name
    another file of the round already has is installed under NAME-2, NAME-3, ... (the name is the
    file's; what is in it is what is tested)."""
    for kind in FIREWALLD_DIRS.values():
        shutil.rmtree(FIREWALLD / kind, ignore_errors=True)
        (FIREWALLD / kind).mkdir()
    placed: dict[str, str] = {}  # corpus file -> the path it was installed as
    taken: set[str] = set()
    for name in group:
        for part in parts(name):
            if part in placed:
                continue
            path, number = target(part), 1
            while path in taken:
                number += 1
                path = target(part).replace(".xml", f"-{number}.xml")
            shutil.copy(corpus / part, FIREWALLD / path)
            placed[part] = path
            taken.add(path)
    if plan:
        outcome = round_trip("firewalld", work)
    else:
        code, _, err = converge("capture", "-H", "local", "--only", "firewalld", "-o", str(work / "rejected.toml"))
        outcome = {"capture": code, "notes": provider_notes(err, "firewalld"), "error": err.strip() if code else None}
    results = {}
    for name in group:
        zone = Path(placed[name]).stem if placed[name].startswith("zones/") else None
        notes = [note for note in outcome["notes"] if zone and note.startswith(f"zone {zone}:")]
        # The failed --check-config (firewalld stops at the first error) when it is this file's.
        notes += [note for note in outcome["notes"] if "--check-config" in note
                  and (f"Zone '{zone}'" in note or "Zone '" not in note)]
        if placed[name].startswith("policies/"):
            notes += [note for note in outcome["notes"] if note.startswith("policies ")]
        forward = [note for note in outcome["notes"] if note.startswith("forward ")]
        if zone and forward:
            # One note lists every captured zone's forward setting; keep this zone's.
            values = forward[0].rpartition("not captured: ")[2].split(", ")
            notes += [f"forward {value.partition(' ')[2]}" for value in values if value.partition(" ")[0] == zone]
        result: Result = {"capture": outcome["capture"], "notes": notes}
        if placed[name] != target(name):
            result["installed_as"] = placed[name]
        if plan:
            result |= {key: outcome.get(key) for key in ("validate", "plan")}
            result["changes"] = [c for c in outcome.get("changes", []) if zone and zone in c.replace(":", " ").split()]
            result["table"] = outcome.get("table", {}).get("zones", {}).get(zone) if zone else None
        else:
            result["error"] = outcome["error"]
        results[name] = result
    return results


# --- AppArmor -------------------------------------------------------------------------------

APPARMOR = Path("/etc/apparmor.d")
APPARMOR_PARSER = ["apparmor_parser", "-Q", "-K", "--base", str(APPARMOR), "-I", str(APPARMOR)]


def apparmor(corpus: Path, work: Path, options: dict[str, Any]) -> dict[str, Result]:
    sources: dict[str, dict[str, Any]] = json.loads((corpus / "SOURCES.json").read_text())
    for name, entry in sources.items():
        if entry["role"] == "abstraction":  # the admin's own abstraction some corpus profiles include
            shutil.copy(corpus / name, APPARMOR / name)
    profiles = [name for name, entry in sources.items() if entry["role"] == "profile"]
    results: dict[str, Result] = {}
    for name in profiles:
        compiled = run([*APPARMOR_PARSER, str(corpus / name)])
        errors = [line for line in compiled.stderr.splitlines() if not line.startswith("Cache read/write disabled")]
        results[name] = {"tool": None if compiled.returncode == 0 and not errors else "\n".join(errors)}
    accepted = [name for name in profiles if results[name]["tool"] is None]
    for name in accepted:
        shutil.copy(corpus / name, APPARMOR / name)
    outcome = round_trip("apparmor", work)
    for name in accepted:
        profile = f"profile {name}:"
        results[name] |= {key: outcome.get(key) for key in ("capture", "validate", "plan")}
        results[name]["notes"] = [note for note in outcome["notes"] if note.startswith((f"{name}:", profile))]
        results[name]["changes"] = [c for c in outcome.get("changes", []) if c.split(":")[-1] == name]
        results[name]["table"] = outcome.get("table", {}).get("profiles", {}).get(name)
    # What the parser refuses, converge refuses too: apply compiles every text first, names the
    # file and the parser's line for each, and changes nothing.
    rejected = [name for name in profiles if results[name]["tool"] is not None]
    if rejected:
        directory = work / "rejected-apparmor"
        directory.mkdir(parents=True, exist_ok=True)
        for name in rejected:
            shutil.copy(corpus / name, directory / name)
        def table(name: str) -> str:
            return f'[apparmor.profiles."{name}"]\nmode = "enforce"\nsource = "{name}"\n\n'

        for name in rejected:  # converge's own checks first, file by file
            (directory / f"{name}.toml").write_text(table(name))
            code, out, err = converge("validate", str(directory / f"{name}.toml"))
            results[name]["validate"] = code
            if code != 0:
                results[name]["refusal"] = (out + err).replace(f"{directory}/", "").strip().splitlines()
        valid = [name for name in rejected if results[name]["validate"] == 0]
        baseline = directory / "baseline.toml"
        baseline.write_text("".join(map(table, valid)))
        before = {name: _read(APPARMOR / name) for name in valid}
        code, out, err = converge("apply", str(baseline), "--yes")
        for name in valid:
            said = (out + err).replace("\n", " ").partition("apply failed: ")[2].split("; ")
            results[name] |= {"apply": code, "refusal": [part for part in said if part.startswith(f"{name}: ")],
                              "left_untouched": _read(APPARMOR / name) == before[name]}
    return results


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


# --- SELinux --------------------------------------------------------------------------------

MAKEFILE = "/usr/share/selinux/devel/Makefile"


def selinux_modules(corpus: Path) -> dict[str, Path]:
    """Each module of the corpus by its name in the corpus: a plain .te or .cil at the top or in
    a directory, or a reference-policy set (a directory with NAME.te and its .if/.fc)."""
    sources: dict[str, dict[str, Any]] = json.loads((corpus / "SOURCES.json").read_text())
    return {name.removesuffix(".te"): corpus / name for name in sources if name.endswith((".te", ".cil"))}


def selinux(corpus: Path, work: Path, options: dict[str, Any]) -> dict[str, Result]:
    modules = selinux_modules(corpus)
    results: dict[str, Result] = {key: {"kind": _selinux_kind(path)} for key, path in modules.items()}
    built = work / "built"
    shutil.rmtree(built, ignore_errors=True)
    # The tool first: checkmodule and semodule_package for a plain .te, the devel Makefile for a
    # reference-policy set (one make per directory of distinct names, -k so one failure stops
    # nothing else), nothing to build for a .cil (semodule checks it).
    refpolicy = [key for key, path in modules.items() if results[key]["kind"] == "refpolicy"]
    for index, group in enumerate(grouped(refpolicy, lambda a, b: modules[a].stem == modules[b].stem)):
        directory = built / f"make-{index}"
        directory.mkdir(parents=True)
        for key in group:
            for part in modules[key].parent.glob(f"{modules[key].stem}.*"):
                shutil.copy(part, directory)
        made = run(["make", "-k", "-f", MAKEFILE, *(f"{modules[key].stem}.pp" for key in group)], cwd=directory)
        for key in group:
            stem = modules[key].stem
            errors = [line for line in (made.stdout + made.stderr).splitlines()
                      if line.startswith((f"{stem}.te:", f"{stem}.if:", f"{stem}.fc:", f"tmp/{stem}."))
                      or ("ERROR" in line and f"/{stem}." in line)]
            results[key]["tool"] = None if (directory / f"{stem}.pp").exists() else ("\n".join(errors) or made.stderr)
    for key, path in modules.items():
        if results[key]["kind"] == "te":
            directory = built / key
            directory.mkdir(parents=True)
            module = directory / f"{_selinux_name(path)}.mod"  # checkmodule wants the module's own name
            compiled = run(["checkmodule", "-M", "-m", "-o", str(module), str(path)])
            if compiled.returncode == 0:
                compiled = run(["semodule_package", "-o", str(module.with_suffix(".pp")), "-m", str(module)])
            results[key]["tool"] = None if compiled.returncode == 0 else (compiled.stderr or compiled.stdout).strip()
        elif results[key]["kind"] == "cil":
            results[key]["tool"] = None
    # converge: every module's own baseline validates (names are checked there)...
    tree = work / "baselines"  # a baseline names sources inside its own directory
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(corpus, tree)
    modules = {key: tree / path.relative_to(corpus) for key, path in modules.items()}
    for key, path in modules.items():
        baseline = tree / f"{key.replace('/', '--')}.toml"
        baseline.write_text(f'[selinux]\n[[selinux.modules]]\nname = "{_selinux_name(path)}"\n'
                            f'source = "{path.relative_to(tree)}"\n')
        code, out, err = converge("validate", str(baseline))
        results[key]["validate"] = code
        if code != 0:
            results[key]["validate_output"] = (out + err).strip()
    # ...and the modules the build accepted go in through one apply: one semodule transaction for
    # all of them (semodule's verdict), checked with semodule -l, planned again, then captured.
    # semodule rebuilds the whole policy for each transaction (seconds): the modules semodule is
    # known to refuse are not in it; one of them, `representative`, gets a transaction of its own
    # to show semodule's reason reaching the user.
    refused = set(options.get("semodule_refused", []))
    buildable = [key for key in modules if results[key]["tool"] is None and results[key]["validate"] == 0]
    for group in grouped([key for key in buildable if key not in refused],
                         lambda a, b: _selinux_name(modules[a]) == _selinux_name(modules[b])):
        _selinux_apply(group, modules, results, tree / "modules.toml", capture=True, work=work, options=options)
    for key in refused & set(buildable):
        results[key]["semodule"] = None if key == options.get("representative") else "not run"
    if options.get("representative") in buildable:
        _selinux_apply([options["representative"]], modules, results, tree / "refused.toml")
    # A module the build refuses: apply runs the same build first and stops with its words, the
    # store untouched (one of them: each apply reads the store again).
    unbuilt = options.get("build_representative")
    if unbuilt in modules and results[unbuilt]["tool"] is not None:
        before = run(["semodule", "-l"]).stdout
        _selinux_apply([unbuilt], modules, results, tree / "unbuilt.toml")
        results[unbuilt]["store_untouched"] = run(["semodule", "-l"]).stdout == before
    return results


def _selinux_kind(path: Path) -> str:
    if path.suffix == ".cil":
        return "cil"
    return "refpolicy" if "policy_module(" in path.read_text() else "te"


def _selinux_name(path: Path) -> str:
    if path.suffix == ".cil":
        return path.stem
    for line in path.read_text().splitlines():
        words = line.replace("(", " ").replace(",", " ").replace(")", " ").replace(";", " ").split()
        if words[:1] in (["module"], ["policy_module"]) and len(words) > 1:
            return words[1]
    return path.stem


def _selinux_apply(group: list[str], modules: dict[str, Path], results: dict[str, Result], baseline: Path,
                   *, capture: bool = False, work: Path | None = None, options: dict[str, Any] | None = None) -> None:
    """One baseline of the group's modules: plan, apply (one semodule transaction), semodule -l,
    plan again, and capture -> validate -> plan of the host with them installed."""
    baseline.write_text("[selinux]\n" + "".join(
        f'[[selinux.modules]]\nname = "{_selinux_name(modules[key])}"\nsource = "{modules[key].relative_to(baseline.parent)}"\n'
        for key in group))
    code, out, err = converge("plan", str(baseline), "--json")
    planned = {c["name"]: c["action"] for c in json.loads(out)["hosts"][0]["changes"]} if code == 2 else {}
    code, out, err = converge("apply", str(baseline), "--yes")
    installed = set(run(["semodule", "-l"]).stdout.split())
    replan = converge("plan", str(baseline))[0] if code == 0 else None
    for key in group:
        name = _selinux_name(modules[key])
        results[key] |= {"planned": planned.get(name), "apply": code, "replan": replan,
                         "installed": name in installed, "semodule": None if code == 0 else (out + err).strip()}
    for key, path in (options or {}).get("matchpathcon", {}).items():
        if key in group:
            results[key]["matchpathcon"] = run(["matchpathcon", path]).stdout.strip()
    if capture and code == 0 and work is not None:
        outcome = round_trip("selinux", work)
        for key in group:
            name = _selinux_name(modules[key])
            results[key] |= {"capture": outcome["capture"], "capture_validate": outcome.get("validate"),
                             "capture_plan": outcome.get("plan"),
                             "notes": _module_notes(outcome["notes"], name)}


def _module_notes(notes: list[str], name: str) -> list[str]:
    """What capture says of this module: one note lists every locally installed one; keep its item."""
    found = []
    for note in notes:
        items = note.rpartition("): ")[2]
        if note.startswith("modules installed locally"):
            found += [f"installed locally, not captured: {item}" for item in items.split(", ") if item.startswith(f"{name} (")]
        elif name in note.replace(",", " ").split():
            found.append(note)
    return found


def sample(options: dict[str, Any], corpus: Path, work: Path) -> Result:
    """A baseline declaring part of one corpus file, on the host as the corpus left it reset:
    plan, apply, plan again, then the subsystem's own tool on the result."""
    directory = work / "sample"
    directory.mkdir(parents=True, exist_ok=True)
    for name in options.get("files", []):
        shutil.copy(corpus / name, directory / Path(name).name)
    for argv in options.get("reset", []):
        run(argv)
    baseline = directory / "baseline.toml"
    baseline.write_text(options["baseline"])
    steps = [converge("plan", str(baseline)), converge("apply", str(baseline), "--yes"), converge("plan", str(baseline))]
    result: Result = {"steps": [code for code, _, _ in steps], "output": [out + err for _, out, err in steps]}
    result["tool"] = [{"argv": argv, "returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
                      for argv, done in ((argv, run(argv)) for argv in options.get("tool", []))]
    return result


KINDS: dict[str, Callable[[Path, Path, dict[str, Any]], dict[str, Result]]] = {
    "firewalld": firewalld, "apparmor": apparmor, "selinux": selinux,
}


def main(argv: Iterable[str]) -> None:
    kind, corpus, work, options = list(argv)
    given = json.loads(options)
    results = KINDS[kind](Path(corpus), Path(work), given)
    if "sample" in given:
        results[SAMPLE] = sample(given["sample"], Path(corpus), Path(work))
    print(json.dumps(results, indent=1, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
