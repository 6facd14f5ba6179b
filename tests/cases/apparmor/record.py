"""Record the apparmor cases from real hosts: run as root from the worktree,
`PYTHONPATH=. .venv/bin/python tests/cases/apparmor/record.py [CASE...]`. Each case is planned inside a fresh namespace test
host with Debian 12's apparmor and apparmor-profiles packages (their real /etc/apparmor.d), set up
as its `source` line says; the kernel's profiles file, where a case has one, is the stand-in of
tests/test_apparmor_kernel.py (a tmpfs over /sys/kernel/security in the kernel's format).
Then `CONVERGE_WRITE_CASES=1 .venv/bin/python -m pytest tests/test_cases.py -k apparmor` writes
expected.json, to be read as the reviewed plan."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.test_apparmor_kernel import _stand_in_kernel
from tests.testhost import TestHost

HERE = Path(__file__).parent
REPO = HERE.parent.parent.parent
NGINX = REPO / "baselines" / "apparmor" / "profiles" / "usr.sbin.nginx"


def _none(host: TestHost) -> None:
    pass


def _drifted(host: TestHost) -> None:
    # The admin put ping in enforce mode with AppArmor's own tool (it exits 1 for the kernel part).
    host.run(["aa-enforce", "/etc/apparmor.d/bin.ping"], check=False)
    _stand_in_kernel(host, "ping (enforce)\ndnsmasq (complain)\ndnsmasq//libvirt_leaseshelper (complain)\n"
                           "/usr/bin/man (enforce)\nman_groff (enforce)\nman_filter (enforce)\n")


def _to_remove(host: TestHost) -> None:
    host.write("/etc/apparmor.d/usr.sbin.nginx", NGINX.read_text())
    host.run(["aa-disable", "/etc/apparmor.d/usr.sbin.nginx"], check=False)
    host.run(["ln", "-s", "/etc/apparmor.d/usr.bin.man", "/etc/apparmor.d/force-complain/usr.bin.man"])
    _stand_in_kernel(host, "/usr/bin/man (complain)\nman_groff (complain)\nman_filter (complain)\n")


CASES: dict[str, tuple[Callable[[TestHost], None], str]] = {
    "in-sync": (_none, "Debian 12 test host, apparmor 3.0.8-3 + apparmor-profiles 3.0.8-3 as installed; "
                       "kernel without AppArmor"),
    "drift": (_drifted, "Debian 12 test host, apparmor-profiles 3.0.8-3; `aa-enforce bin.ping` run; stand-in kernel "
                        "profiles file: ping enforce, dnsmasq complain, man enforce"),
    "pending-without-kernel": (_none, "Debian 12 test host, apparmor-profiles 3.0.8-3 as installed; kernel without "
                                      "AppArmor"),
    "removal": (_to_remove, "Debian 12 test host, apparmor-profiles 3.0.8-3; nginx profile installed and "
                            "`aa-disable`d; force-complain/usr.bin.man linked; stand-in kernel: man complain"),
}


def main(names: list[str]) -> None:
    for name in names or list(CASES):
        prepare, source = CASES[name]
        case = HERE / name
        with tempfile.TemporaryDirectory() as state:
            host = TestHost(Path(state) / "host", f"case-{name}")
            try:
                prepare(host)
                script = 'cd "$1" && exec "$2" -m tests.cases record "$3" "$4" "$5"'
                baseline = str(case / "baseline.toml")
                host.run(["sh", "-c", script, "record", str(REPO), sys.executable, baseline, str(case), source])
            finally:
                host.close()
        print(f"recorded {case}")


if __name__ == "__main__":
    main(sys.argv[1:])
