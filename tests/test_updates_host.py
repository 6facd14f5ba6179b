"""The updates provider end to end, with real apt, dpkg and unattended-upgrades, in a host whose
whole root is disposable and whose only package source is a repository the test builds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from converge.providers.updates.provider import DROP_IN
from tests.rootfs import RootHost

# Two tiny packages at 1.0, installed; 1.1 of cvg-security in a suite whose Release carries
# Debian's security origin and label (what 50unattended-upgrades allows), 1.1 of cvg-other in
# a suite of another origin. cvg-security 1.1's postinst asks for a reboot, as a kernel would.
REPOSITORY = r"""
set -eu
codename=$(. /etc/os-release; echo "$VERSION_CODENAME")
build() {  # name version suite [postinst]
    dir=/srv/build/$1_$2; mkdir -p "$dir/DEBIAN" "$dir/usr/share/$1" /srv/repo/$3
    printf 'Package: %s\nVersion: %s\nArchitecture: all\n' "$1" "$2" > "$dir/DEBIAN/control"
    echo 'Maintainer: converge tests <t@example.org>' >> "$dir/DEBIAN/control"
    echo 'Description: test package' >> "$dir/DEBIAN/control"
    echo "$2" > "$dir/usr/share/$1/version"
    if [ -n "${4:-}" ]; then printf '#!/bin/sh\n%s\n' "$4" > "$dir/DEBIAN/postinst"; chmod 0755 "$dir/DEBIAN/postinst"; fi
    dpkg-deb --build --root-owner-group "$dir" "/srv/repo/$3/$1_$2_all.deb" >/dev/null
}
release() {  # suite origin label codename
    cd /srv/repo/$1
    apt-ftparchive packages . > Packages
    apt-ftparchive -o APT::FTPArchive::Release::Origin="$2" -o APT::FTPArchive::Release::Label="$3" \
        -o APT::FTPArchive::Release::Codename="$4" -o APT::FTPArchive::Release::Suite="$4" release . > Release
}
build cvg-security 1.0 installed
build cvg-other 1.0 installed
build cvg-security 1.1 security 'touch /run/reboot-required; echo cvg-security >> /run/reboot-required.pkgs'
build cvg-other 1.1 other
release security Debian Debian-Security "$codename-security"
release other Local Local "$codename-local"
dpkg -i /srv/repo/installed/*.deb >/dev/null
rm -rf /etc/apt/sources.list /etc/apt/sources.list.d/* /var/lib/apt/lists/*
printf 'deb [trusted=yes] file:/srv/repo/%s ./\n' security other > /etc/apt/sources.list.d/converge-test.list
apt-get update -q >/dev/null
"""


def baseline(tmp_path: Path, **values: str) -> str:
    path = tmp_path / "baseline.toml"
    table = "".join(f'{key} = "{value}"\n' for key, value in values.items())
    path.write_text(f'[baseline]\nname = "updates-test"\n\n[updates]\n{table}')
    return str(path)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[RootHost]:
    root = RootHost(tmp_path / "host")
    try:
        root.sh(REPOSITORY)
        yield root
    finally:
        root.close()


def plan_json(host: RootHost, path: str) -> tuple[int, dict]:
    result = host.converge("plan", "--json", path)
    return result.returncode, json.loads(result.stdout)


def version(host: RootHost, package: str) -> str:
    return host.run(["dpkg-query", "-W", "-f", "${Version}", package]).stdout


def test_plan_lists_exactly_the_security_update_and_unattended_upgrade_agrees(host: RootHost, tmp_path: Path) -> None:
    status, plan = plan_json(host, baseline(tmp_path, pending="install"))
    assert status == 2
    packages = [c for c in plan["hosts"][0]["changes"] if c["kind"] == "package"]
    assert [(c["name"], c["before"], c["after"]) for c in packages] == [("cvg-security", "1.0", "1.1")]
    assert "l=Debian-Security" in packages[0]["origin"]
    dry_run = host.run(["unattended-upgrade", "--dry-run", "--debug"], check=False)
    assert "Packages that will be upgraded: cvg-security\n" in dry_run.stdout
    # pending = "report": the same update is a warning, not a change.
    _, report = plan_json(host, baseline(tmp_path))
    assert not [c for c in report["hosts"][0]["changes"] if c["kind"] == "package"]
    assert any("cvg-security 1.0 -> 1.1" in warning for warning in report["hosts"][0]["warnings"])


def test_install_puts_exactly_the_planned_version_and_reports_the_reboot(host: RootHost, tmp_path: Path) -> None:
    path = baseline(tmp_path, pending="install")
    _, plan = plan_json(host, path)
    operations = plan["hosts"][0]["operations"]
    apply = host.converge("apply", "--json", "--yes", path)
    assert apply.returncode == 0, apply.stdout + apply.stderr
    result = json.loads(apply.stdout)["hosts"][0]
    # apply ran exactly the plan's operations, in order (each reports its `says`, or its command).
    assert result["applied"] == [f"updates: {op.get('says') or 'wrote ' + op['path']}" for op in operations]
    assert version(host, "cvg-security") == "1.1"
    assert version(host, "cvg-other") == "1.0"
    assert host.read("/usr/share/cvg-other/version") == "1.0\n"
    status, after = plan_json(host, path)
    assert status == 0, after
    assert any(w == "reboot required (by cvg-security)" for w in after["hosts"][0]["warnings"])


def test_automatic_off_to_security_then_off_removes_only_converges_drop_in(host: RootHost, tmp_path: Path) -> None:
    off = 'APT::Periodic::Update-Package-Lists "0";\nAPT::Periodic::Unattended-Upgrade "0";\n'
    host.write("/etc/apt/apt.conf.d/20auto-upgrades", off)
    distribution = host.read("/etc/apt/apt.conf.d/50unattended-upgrades")
    path = baseline(tmp_path, automatic="security", reboot="03:30")
    status, plan = plan_json(host, path)
    assert status == 2
    changed = {c["name"]: (c["before"], c["after"]) for c in plan["hosts"][0]["changes"]}
    assert changed["APT::Periodic::Unattended-Upgrade"] == ("0", "1")
    assert changed["Unattended-Upgrade::Automatic-Reboot-Time"] == (None, "03:30")
    assert host.converge("apply", "--yes", path).returncode == 0
    dump = host.run(["apt-config", "dump"]).stdout
    assert 'APT::Periodic::Unattended-Upgrade "1";' in dump
    assert 'Unattended-Upgrade::Automatic-Reboot-Time "03:30";' in dump
    assert 'Unattended-Upgrade::Origins-Pattern:: "origin=Debian,codename=${distro_codename},label=Debian";' not in dump
    second = host.converge("apply", "--yes", path)
    assert second.returncode == 0 and "in sync" in second.stdout, second.stdout
    off_path = baseline(tmp_path, automatic="off")
    _, plan = plan_json(host, off_path)
    assert [(c["kind"], c["action"]) for c in plan["hosts"][0]["changes"]] == [("drop-in", "remove")]
    assert host.converge("apply", "--yes", off_path).returncode == 0
    assert host.read(DROP_IN) is None
    assert host.read("/etc/apt/apt.conf.d/50unattended-upgrades") == distribution
    assert host.read("/etc/apt/apt.conf.d/20auto-upgrades") is not None


def test_a_held_dpkg_lock_is_refused_and_nothing_changes(host: RootHost, tmp_path: Path) -> None:
    holder = host.popen(["python3", "-c", "import fcntl,sys,time; f=open('/var/lib/dpkg/lock-frontend','w'); "
                         "fcntl.lockf(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)"])
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    apply = host.converge("apply", "--yes", baseline(tmp_path, pending="install"))
    assert apply.returncode == 1
    assert "the package manager is busy: /var/lib/dpkg/lock-frontend (process" in apply.stdout + apply.stderr
    assert version(host, "cvg-security") == "1.0"
    assert host.read(DROP_IN) is None


def test_an_interrupted_dpkg_is_refused_and_nothing_changes(host: RootHost, tmp_path: Path) -> None:
    host.run(["dpkg", "--unpack", "/srv/repo/other/cvg-other_1.1_all.deb"])
    apply = host.converge("apply", "--yes", baseline(tmp_path, pending="install"))
    assert apply.returncode == 1
    assert "dpkg was interrupted or left packages broken (dpkg --audit" in apply.stdout + apply.stderr
    assert version(host, "cvg-security") == "1.0"
    assert host.read(DROP_IN) is None
