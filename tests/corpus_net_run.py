"""Run inside a test host: every corpus file of one kind through its own tool, then converge.

`python tests/corpus_net_run.py KIND CORPUS_DIR WORK_DIR` prints one JSON object per file. For each
file, in one process (125 files must not cost 375 interpreter starts): put it where the subsystem
reads it (the previous one removed), ask the subsystem's own tool whether it accepts it, then
run converge's CLI in-process: `capture -H local --only KIND`, `validate` of the capture, `plan` of
it. tests/test_corpus_net.py judges the results.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from converge.cli import main as converge_main

JAIL_FILE = "/etc/fail2ban/jail.d/converge.local"


def converge(*args: str) -> dict[str, object]:
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code: object = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            converge_main(list(args))
        except SystemExit as exit_:
            code = exit_.code
        except BaseException as error:  # a traceback: recorded, the test fails on it
            code = f"raised {type(error).__name__}: {error}"
    return {"rc": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "seconds": round(time.monotonic() - started, 2)}


def run(argv: list[str]) -> dict[str, object]:
    started = time.monotonic()
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    return {"rc": completed.returncode, "stdout": completed.stdout[-4000:], "stderr": completed.stderr[-4000:],
            "seconds": round(time.monotonic() - started, 2)}


def place_ufw(sample: Path) -> dict[str, object]:
    for name in ("user.rules", "user6.rules"):
        source = sample / name if (sample / name).exists() else Path("/usr/share/ufw/iptables") / name
        shutil.copyfile(source, f"/etc/ufw/{name}")
    # What ufw does with the files: iptables-restore loads them (`--test`: checked by the kernel's
    # tables, not committed; a full reload per file costs 2.5 s), and ufw reads their tuples.
    results = [run(["iptables-restore", "--noflush", "--test", "/etc/ufw/user.rules"]),
               run(["ip6tables-restore", "--noflush", "--test", "/etc/ufw/user6.rules"]),
               run(["ufw", "show", "added"])]
    return {"rc": next((result["rc"] for result in results if result["rc"]), 0),
            "stdout": "".join(str(result["stdout"]) for result in results),
            "stderr": "".join(str(result["stderr"]) for result in results)}


def _fail2ban_log_paths() -> list[str]:
    """The log files the configuration names (fail2ban -t refuses a jail without one): created empty."""
    dump = run(["fail2ban-client", "-d"])
    paths = []
    for line in str(dump["stdout"]).splitlines():
        if "'addlogpath'" not in line:
            continue
        with contextlib.suppress(ValueError, SyntaxError):
            command = ast.literal_eval(line)
            paths.append(str(command[3]))
    return paths


def fail2ban_target(sample: Path) -> Path:
    """Where the file was in its repository: jail.local, or jail.d/NAME (its SOURCES name ends so)."""
    if sample.name.endswith("jail.local"):
        return Path("/etc/fail2ban/jail.local")
    return Path("/etc/fail2ban/jail.d") / f"corpus-{sample.name}"


def place_fail2ban(sample: Path) -> dict[str, object]:
    for old in [Path("/etc/fail2ban/jail.local"), *Path("/etc/fail2ban/jail.d").glob("corpus-*")]:
        old.unlink(missing_ok=True)
    shutil.copyfile(sample, fail2ban_target(sample))
    for path in _fail2ban_log_paths():
        if path.startswith("/var/log/") and "*" not in path and "?" not in path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).touch()
    return run(["fail2ban-client", "-t"])


def fail2ban_as_converges_own(sample: Path, work: Path) -> dict[str, object]:
    """The same file as converge's own jail file: what capture makes of it must validate."""
    for old in [Path("/etc/fail2ban/jail.local"), *Path("/etc/fail2ban/jail.d").glob("corpus-*")]:
        old.unlink(missing_ok=True)
    shutil.copyfile(sample, JAIL_FILE)
    captured = work / f"{sample.name}.own.toml"
    capture = converge("capture", "-H", "local", "--only", "fail2ban", "-o", str(captured))
    validate = converge("validate", str(captured)) if captured.exists() else None
    Path(JAIL_FILE).unlink()
    return {"capture": capture, "validate": validate, "captured": captured.read_text() if captured.exists() else None}


def place_sysctl(sample: Path) -> dict[str, object]:
    for old in Path("/etc/sysctl.d").glob("corpus-*.conf"):
        old.unlink()
    target = Path("/etc/sysctl.d") / f"corpus-{sample.name}"
    shutil.copyfile(sample, target)
    return run(["sysctl", "-p", str(target)])


def place_kmod(sample: Path) -> dict[str, object]:
    for old in Path("/etc/modprobe.d").glob("corpus-*.conf"):
        old.unlink()
    target = Path("/etc/modprobe.d") / f"corpus-{sample.name}"
    shutil.copyfile(sample, target)
    alone = run(["modprobe", "-C", str(target), "--showconfig"])
    everything = run(["modprobe", "--showconfig"])
    return {"rc": alone["rc"] or everything["rc"], "stdout": str(alone["stdout"]),
            "stderr": str(alone["stderr"]) + str(everything["stderr"])}


PLACE: dict[str, Callable[[Path], dict[str, object]]] = {
    "ufw": place_ufw, "fail2ban": place_fail2ban, "sysctl": place_sysctl, "kmod": place_kmod,
}


def samples(kind: str, corpus: Path) -> list[Path]:
    return sorted(path for path in corpus.iterdir() if path.name != "SOURCES.json")


def main() -> None:
    kind, corpus, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    work.mkdir(parents=True, exist_ok=True)
    if kind == "ufw":
        # Enabled once, with Debian's rules (ufw's chains exist for iptables-restore --test).
        run(["ufw", "--force", "enable"])
    if kind == "fail2ban":
        # Debian's stock sshd jail needs its log (see test-hosts.md).
        Path("/var/log/auth.log").touch()
    for sample in samples(kind, corpus):
        tool = PLACE[kind](sample)
        captured = work / f"{sample.name}.toml"
        if captured.exists():
            captured.unlink()
        capture = converge("capture", "-H", "local", "--only", kind, "-o", str(captured))
        validate = converge("validate", str(captured)) if captured.exists() else None
        plan = converge("plan", str(captured), "-H", "local", "--only", kind, "--json") if captured.exists() else None
        result = {"name": sample.name, "tool": tool, "capture": capture, "validate": validate, "plan": plan,
                  "captured": captured.read_text() if captured.exists() else None}
        if kind == "fail2ban":
            result["own"] = fail2ban_as_converges_own(sample, work)
        print(json.dumps(result), flush=True)
    os.sync()


if __name__ == "__main__":
    main()
