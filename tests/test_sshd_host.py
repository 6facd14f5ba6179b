"""The sshd provider inside a test host (Debian's own /etc/ssh, sshd running from it): apply runs exactly
the planned operations; a configuration sshd -t refuses at apply time is undone and sshd keeps running;
capture writes what the admin set."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

from converge.providers.sshd.provider import STAGED_SCRIPT
from tests.testhost import TestHost

WORKTREE = Path(__file__).resolve().parent.parent
SETUP = ("mkdir -p /run/sshd && ssh-keygen -A >/dev/null && "
         "printf 'Port 2222\\nPidFile /run/sshd-debian.pid\\n' > /etc/ssh/sshd_config.d/50-lab.conf && /usr/sbin/sshd")
# Plans [sshd] MaxAuthTries = 3 with LocalHost, optionally breaks another file (as an admin might between
# plan and apply), applies through a host that records what it does, and prints both as JSON.
SCRIPT = r"""
import json, sys
from pathlib import Path
from converge.baseline import load_baseline
from converge.engine import plan_host
from converge.errors import ConvergeError
from converge.hosts.local import LocalHost
from converge.operations import to_json
from converge.registry import Registry
from tests.recording import Recording

Path("/tmp/b.toml").write_text("[sshd]\nMaxAuthTries = 3\nX11Forwarding = false\n")
registry = Registry()
run = plan_host(LocalHost(), load_baseline(Path("/tmp/b.toml"), registry), registry)
(provider_run,) = run.provider_plans
if sys.argv[1] == "break":
    with open("/etc/ssh/sshd_config.d/50-lab.conf", "a") as lab:
        lab.write("LoginGraceTime soon\n")
host = Recording()
try:
    result = provider_run.provider.apply(host, provider_run.plan)
except ConvergeError as error:
    result = f"error: {error}"
planned = [{k: v for k, v in to_json(op).items() if k in ("op", "argv", "path", "content")}
           | ({"input": to_json(op).get("input")} if to_json(op)["op"] == "run" else {})
           for op in provider_run.plan.operations]
print(json.dumps({"planned": planned, "done": host.done, "result": result}))
"""


def _apply(test_host: TestHost, mode: str) -> dict[str, object]:
    test_host.run(["sh", "-c", SETUP])
    out = test_host.run(["sh", "-c", 'cd "$1" && exec "$2" -c "$3" "$4"', "sh", str(WORKTREE), sys.executable, SCRIPT, mode])
    return json.loads(out.stdout)


def _sshd_pid(test_host: TestHost) -> str:
    return (test_host.read("/run/sshd-debian.pid") or "").strip()


def test_apply_runs_exactly_the_planned_operations(test_host: TestHost) -> None:
    result = _apply(test_host, "keep")
    assert result["done"] == result["planned"]
    assert [op["op"] for op in result["planned"]] == ["write", "run", "run"]
    assert result["planned"][1]["argv"] == ["/usr/sbin/sshd", "-t"]
    assert "X11Forwarding no\nMaxAuthTries 3\n" in (test_host.read("/etc/ssh/sshd_config.d/00-converge.conf") or "")
    out = test_host.run(["/usr/sbin/sshd", "-T", "-C", "user=root,host=localhost,addr=127.0.0.1"]).stdout
    assert "maxauthtries 3" in out.splitlines() and "x11forwarding no" in out.splitlines()


def test_a_configuration_sshd_refuses_at_apply_is_undone_and_sshd_keeps_running(test_host: TestHost) -> None:
    result = _apply(test_host, "break")
    pid = _sshd_pid(test_host)
    assert isinstance(result["result"], str)
    assert "`/usr/sbin/sshd -t` failed" in result["result"]
    assert "/etc/ssh/sshd_config.d/50-lab.conf line 3: invalid time value." in result["result"]
    assert "what was done before it was undone" in result["result"]
    # The drop-in was written, sshd -t failed, the drop-in was removed again; no reload was sent.
    assert [op["op"] for op in result["done"]] == ["write", "run", "remove"]
    assert test_host.read("/etc/ssh/sshd_config.d/00-converge.conf") is None
    assert pid and Path(f"/proc/{pid}").exists()
    assert ":2222 " in test_host.run(["ss", "-Hltn"]).stdout


def test_capture_writes_what_the_admin_set(test_host: TestHost) -> None:
    test_host.run(["sh", "-c", SETUP])
    test_host.write("/etc/ssh/sshd_config.d/60-admin.conf",
                    "MaxAuthTries 4\nAllowGroups admin ops\nMatch User x\n  Banner none\n")
    out = test_host.run(["sh", "-c", 'cd "$1" && exec "$2" -m converge capture -H local --only sshd', "sh", str(WORKTREE),
                         sys.executable])
    assert "[sshd]" in out.stdout
    text = out.stdout.split("[sshd]", 1)[1]
    table = tomllib.loads(text.split("\n[", 1)[0])
    assert table == {"AcceptEnv": ["LANG", "LC_*"], "AllowGroups": ["admin", "ops"], "KbdInteractiveAuthentication": False,
                     "MaxAuthTries": 4, "Port": [2222], "PrintMotd": False, "UsePAM": True, "X11Forwarding": True}
    # PasswordAuthentication (sshd's default, set in no file) and Banner (in a Match block) are not captured.


def test_the_staged_configuration_is_evaluated_only_when_it_differs(test_host: TestHost) -> None:
    """A no-op plan's staged configuration is the live one: the staged read says so instead of
    running sshd -T a second time; any other content is evaluated by sshd -T."""
    drop_in = "/etc/ssh/sshd_config.d/00-converge.conf"
    content = "# Managed by converge.\nMaxAuthTries 3\n"
    test_host.run(["sh", "-c", "mkdir -p /run/sshd && ssh-keygen -A >/dev/null"])
    test_host.write(drop_in, content)
    try:
        same = test_host.run(["sh", "-c", STAGED_SCRIPT, "sshd-staged", content])
        assert same.stdout == "unchanged\n"
        other = test_host.run(["sh", "-c", STAGED_SCRIPT, "sshd-staged", content.replace("3", "4")])
        assert other.stdout.startswith("connection ") and "\nmaxauthtries 4\n" in other.stdout
        # Drop-ins not read first (Include not sshd_config's first line): evaluated, never assumed.
        test_host.run(["sed", "-i", "s#^Include /etc/ssh/sshd_config.d/\\*.conf#\\#&#", "/etc/ssh/sshd_config"])
        unincluded = test_host.run(["sh", "-c", STAGED_SCRIPT, "sshd-staged", content])
        assert "\nmaxauthtries 3\n" in unincluded.stdout
    finally:
        test_host.run(["sed", "-i", "s#^\\#\\(Include /etc/ssh/sshd_config.d/\\*.conf\\)#\\1#", "/etc/ssh/sshd_config"])
        test_host.run(["rm", "-f", drop_in])
