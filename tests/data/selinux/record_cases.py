"""Records tests/cases/selinux/* from real test hosts: Debian 12's policy store (selinux-policy-default),
real semanage/semodule/setsebool, each case's state made by converge apply and the tools themselves.

Run as root from the worktree: `.venv/bin/python tests/data/selinux/record_cases.py [CASE...]`.
Then `CONVERGE_WRITE_CASES=1 .venv/bin/python -m pytest tests/test_cases.py -k selinux` and review
expected.json with git diff.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from tests.testhost import TestHost  # noqa: E402

CASES = ROOT / "tests" / "cases" / "selinux"
STOCK_CONFIG = (ROOT / "tests" / "data" / "selinux" / "config").read_text()
POLICY = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}", "selinux-policy-default"],
                        capture_output=True, text=True, check=False).stdout.strip() or "selinux-policy-default"

TE_SOURCE = """module mynginx 1.0;

require {
\ttype httpd_t;
\ttype httpd_sys_content_t;
\tclass file { read open getattr };
}

allow httpd_t httpd_sys_content_t:file { read open getattr };
"""

WEB = """[selinux]
mode = "permissive"
policy = "default"

[selinux.booleans]
httpd_can_network_connect = true
httpd_enable_homedirs = false

[[selinux.fcontexts]]
path = "/srv/www(/.*)?"
type = "httpd_sys_content_t"

[[selinux.fcontexts]]
path = "/var/lib/webapp/run.sock"
type = "httpd_runtime_t"
file_type = "socket"

[[selinux.ports]]
type = "http_port_t"
protocol = "tcp"
port = 8080

[[selinux.ports]]
type = "http_port_t"
protocol = "tcp"
port = "9000-9010"

[[selinux.modules]]
name = "mynginx"
source = "mynginx.te"
"""

REMOVAL = """[selinux]
[[selinux.fcontexts]]
path = "/srv/www(/.*)?"
ensure = "absent"

[[selinux.ports]]
protocol = "tcp"
port = "9000-9010"
ensure = "absent"

[[selinux.ports]]
protocol = "udp"
port = 4444
ensure = "absent"

[[selinux.modules]]
name = "mynginx"
ensure = "absent"
"""


def _converged(host: TestHost, work: Path) -> None:
    """The web baseline applied by converge (so its module records exist)."""
    (work / "mynginx.te").write_text(TE_SOURCE)
    (work / "web.toml").write_text(WEB)
    result = host.converge("apply", str(work / "web.toml"), "--yes")
    if result.returncode != 0:
        raise SystemExit(f"apply failed: {result.stdout}{result.stderr}")


def in_sync(host: TestHost, work: Path) -> str:
    _converged(host, work)
    return "after `converge apply` of the same baseline; SELinux disabled in the kernel (no selinuxfs)"


def drift(host: TestHost, work: Path) -> str:
    _converged(host, work)
    host.run(["setsebool", "-P", "httpd_can_network_connect=0", "httpd_enable_homedirs=1"])
    host.run(["semanage", "import"], input="fcontext -m -f a -t public_content_t /srv/www(/.*)?\n"
                                           "port -m -t http_cache_port_t -p tcp 9000-9010\n")
    host.run(["semanage", "port", "-d", "-p", "tcp", "8080"])
    # A stand-in selinuxfs (the kernel's file formats) in the host's private mount namespace: the
    # runtime mode and booleans differ from the persisted ones.
    host.run(["mount", "-t", "tmpfs", "stand-in-selinuxfs", "/sys/fs"])
    host.write("/sys/fs/selinux/enforce", "1")
    host.write("/sys/fs/selinux/booleans/httpd_can_network_connect", "1 1")
    host.write("/sys/fs/selinux/booleans/httpd_enable_homedirs", "0 0")
    return ("after `converge apply` of the same baseline, then by hand: setsebool -P httpd_can_network_connect=0 "
            "httpd_enable_homedirs=1; semanage import of /srv/www(/.*)? as public_content_t and tcp 9000-9010 as "
            "http_cache_port_t; semanage port -d -p tcp 8080; a stand-in selinuxfs saying enforcing, "
            "httpd_can_network_connect 1 and httpd_enable_homedirs 0 at runtime")


def removal(host: TestHost, work: Path) -> str:
    _converged(host, work)
    return ("after `converge apply` of the in-sync case's baseline (fcontexts, tcp 8080 and 9000-9010, module "
            "mynginx); udp 4444 was never local")


RECORDERS: dict[str, tuple[str, Callable[[TestHost, Path], str]]] = {
    "in-sync": (WEB, in_sync), "drift": (WEB, drift), "removal": (REMOVAL, removal)}


def record(name: str) -> None:
    baseline, make = RECORDERS[name]
    case = CASES / name
    case.mkdir(parents=True, exist_ok=True)
    (case / "baseline.toml").write_text(baseline)
    if "mynginx.te" in baseline:
        (case / "mynginx.te").write_text(TE_SOURCE)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        host = TestHost(work / "host", name=f"selinux-{name}")
        try:
            host.write("/etc/selinux/config", STOCK_CONFIG)
            how = make(host, work)
            source = f"a namespace test host (tests/testhost.py) with Debian 12's {POLICY} store, {how}"
            host.run(["sh", "-c", 'cd "$1" && exec "$2" -m tests.cases record "$3" "$4" "$5"', "record", str(ROOT),
                      sys.executable, str(case / "baseline.toml"), str(case), source])
        finally:
            host.close()
    print(f"recorded {case}")


if __name__ == "__main__":
    for name in sys.argv[1:] or list(RECORDERS):
        record(name)
