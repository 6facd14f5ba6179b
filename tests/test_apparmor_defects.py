"""AppArmor defect found on other people's profiles (issue 16, defect 16), on the real tools in a test host."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.testhost import TestHost

OWN = "/etc/apparmor.d/abstractions/site-logging"
PROFILE = """abi <abi/3.0>,
include <tunables/global>

profile site-report /usr/local/bin/site-report {
  include <abstractions/base>
  include <abstractions/site-logging>
  /usr/local/bin/site-report mr,
}
"""


def test_capture_notes_a_profile_including_the_admins_own_abstraction(test_host: TestHost, tmp_path: Path) -> None:
    test_host.write(OWN, "  /var/log/site/** w,\n")
    test_host.write("/etc/apparmor.d/site-report", PROFILE)
    # AppArmor's own verdict: it compiles here, and not where the abstraction is missing.
    compile_argv = ["apparmor_parser", "-Q", "-K", "/etc/apparmor.d/site-report"]
    assert test_host.run(compile_argv, check=False).returncode == 0
    # The package's abstractions are in dpkg's record, the admin's own is not.
    assert test_host.run(["dpkg", "-S", "/etc/apparmor.d/abstractions/base"], check=False).returncode == 0
    assert test_host.run(["dpkg", "-S", OWN], check=False).returncode != 0

    captured = tmp_path / "captured.toml"
    result = test_host.converge("capture", "-H", "local", "--only", "apparmor", "-o", str(captured))
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(captured.read_text())["apparmor"]["profiles"]["site-report"]["content"] == PROFILE
    assert ("local: apparmor: site-report: includes abstractions/site-logging, which no package ships (this host's "
            "own, in /etc/apparmor.d): captured, but it fails to compile on a host without them") in result.stderr.splitlines()
    assert not [line for line in result.stderr.splitlines() if "abstractions/base" in line or "tunables/global" in line]
    assert test_host.converge("validate", str(captured)).returncode == 0
    assert test_host.converge("plan", str(captured)).returncode == 0

    test_host.run(["rm", OWN])
    assert test_host.run(compile_argv, check=False).returncode != 0
