"""`converge suggest` closing the loop on a real kernel: denials in, a baseline out, the service working.

A confined web server runs in the SELinux guest as an admin would start one: an init script
(`initrc_exec_t`, so it runs in `initrc_t`) executes a binary labelled `httpd_exec_t`, and the
policy's own transition puts it in `httpd_t`. The binary is busybox-static (no libraries, which
are unlabelled on the 9p root) on a tmpfs: a confined domain may not execute a file of the
overlay, whose backing file is opened with the mounter's (kernel_t) credentials. In permissive
mode it does three things the policy refuses: it serves a site under /srv (`var_t`, the label
the policy gives /srv), binds port 8123 (`unreserved_port_t`) and connects to a zabbix port
(a boolean allows it), and it reads /etc/shadow. suggest proposes an fcontext, a port and a
boolean and refuses shadow_t; the suggested baseline is applied, and in enforcing mode the three
work again while /etc/shadow stays denied.

The guest has no journald: suggest reads the kernel log, which lets through 10 audit lines per
5 s (more are "callbacks suppressed"); the actions cause 8, and the test checks none was lost.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.fixtures import apparmor_vm, selinux_vm
from tests.vm.machine import VirtualMachine

pytestmark = pytest.mark.vm
__all__ = ["apparmor_vm", "selinux_vm"]  # fixtures, used by name

WEB_ROOT = "/srv"
SITE_FILE = "/srv/site/index.html"
WEB_PORT = 8123  # unreserved_port_t in Debian's policy
ZABBIX_PORT = 10051  # zabbix_port_t: httpd_t connects there only with a boolean
INIT_SCRIPT = "/etc/init.d/converge-webd"
MARK = "converge-vm: denials from here"

SETUP = f"""
set -e
# The policy store and the installed policy under an overlay of their own, which the fixture
# unmounts: put back at once, where undoing each change with semanage rebuilds the policy.
for directory in /var/lib/selinux/default /etc/selinux/default; do
    scratch=/run/converge-vm-policy$(echo $directory | tr / _)
    mkdir -p $scratch/upper $scratch/work
    mount -t overlay overlay -o lowerdir=$directory,upperdir=$scratch/upper,workdir=$scratch/work $directory
done
mkdir -p /run/webd {WEB_ROOT}
mount -t tmpfs tmpfs {WEB_ROOT}
mkdir {WEB_ROOT}/site
echo 'converge web' > {SITE_FILE}
restorecon -R {WEB_ROOT}
cp /bin/busybox /run/webd/busybox
chcon -t httpd_exec_t /run/webd/busybox
cat > {INIT_SCRIPT} <<'SCRIPT'
#!/bin/sh
# Run busybox APPLET ARGS... in httpd_t: initrc_t here, httpd_t on exec of the httpd_exec_t file.
# TZ: no read of the unlabelled zoneinfo; stdio opened here, in initrc_t, which httpd_t may use.
export TZ=UTC0
exec </dev/null >/dev/null 2>&1
exec /run/webd/busybox "$@"
SCRIPT
chmod 0755 {INIT_SCRIPT}
restorecon {INIT_SCRIPT}
# What httpd_t connects to: an unconfined server on the zabbix port.
mkdir -p /tmp/zabbix && echo pong > /tmp/zabbix/index.html
busybox httpd -p 127.0.0.1:{ZABBIX_PORT} -h /tmp/zabbix
echo "lsm=$(cat /sys/kernel/security/lsm)"
echo "script_label=$(stat -c %C {INIT_SCRIPT})"
echo "site_label=$(stat -c %C {SITE_FILE})"
"""

# The actions, run in permissive mode (to collect denials) and again in enforcing mode.
ACTIONS = f"""
pkill -f 'webd/busybox httpd' || true
sleep 0.5
{INIT_SCRIPT} httpd -p 127.0.0.1:{WEB_PORT} -h {WEB_ROOT}
sleep 1
echo "served=$(busybox wget -q -O - http://127.0.0.1:{WEB_PORT}/site/index.html)"
{INIT_SCRIPT} wget -q -O /dev/null http://127.0.0.1:{ZABBIX_PORT}/; echo "connect=$?"
{INIT_SCRIPT} cat {SITE_FILE}; echo "read_site=$?"
{INIT_SCRIPT} cat /etc/shadow; echo "read_shadow=$?"
echo "domain=$(ps -o label= -p "$(pgrep -f 'webd/busybox httpd')")"
"""

LOST = f"dmesg | sed -n '/{MARK}/,$p' | grep -c 'callbacks suppressed' || true"


def _fields(output: str) -> dict[str, str]:
    """`name=value` lines printed by a guest script (the first `=` splits)."""
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


@pytest.fixture
def web_server(selinux_vm: VirtualMachine) -> Iterator[VirtualMachine]:
    """The guest with the web server's files in place; afterwards the policy store, the installed
    policy, the booleans and the mode as they were, the server and its files gone."""
    assert selinux_vm.run("getenforce").stdout.strip() == "Permissive"
    seen = _fields(selinux_vm.run(SETUP).stdout)
    assert "selinux" in seen["lsm"].split(",")
    assert seen["script_label"].split(":")[2] == "initrc_exec_t"
    assert seen["site_label"].split(":")[2] == "var_t"
    booleans_before = selinux_vm.run("getsebool -a").stdout
    yield selinux_vm
    selinux_vm.run(f"""
setenforce 0
pkill -f 'busybox httpd' || true
sleep 0.5
umount {WEB_ROOT}
rm -rf /run/webd {INIT_SCRIPT} /tmp/zabbix
umount /var/lib/selinux/default /etc/selinux/default
rm -rf /run/converge-vm-policy_*
load_policy
""")
    # load_policy keeps the running booleans: put back those the test moved, at runtime.
    moved = set(selinux_vm.run("getsebool -a").stdout.splitlines()) - set(booleans_before.splitlines())
    if moved:
        values = {line.split(" --> ")[0]: line.split(" --> ")[1] for line in booleans_before.splitlines()}
        selinux_vm.run("setsebool " + " ".join(f"{line.split()[0]}={values[line.split()[0]]}" for line in moved))
    assert selinux_vm.run("getsebool -a").stdout == booleans_before


def test_suggest_from_real_denials_then_apply_makes_the_service_work(web_server: VirtualMachine, tmp_path: Path) -> None:
    vm = web_server
    baseline = tmp_path / "guest.toml"
    baseline.write_text('[selinux]\nmode = "permissive"\n')

    since = vm.run("date -u +%Y-%m-%dT%H:%M:%S+00:00").stdout.strip()
    permissive = _fields(vm.run(f"echo '{MARK}' > /dev/kmsg\n{ACTIONS}echo lost=$({LOST})").stdout)
    # Permissive: everything works, and every denial reached the kernel log.
    assert permissive["served"] == "converge web"
    assert (permissive["connect"], permissive["read_site"], permissive["read_shadow"]) == ("0", "0", "0")
    assert permissive["domain"].split(":")[2] == "httpd_t"
    assert permissive["lost"] == "0", "the kernel log dropped audit records"

    suggested = vm.converge("suggest", str(baseline), "--since", since, "--write")
    print(suggested.stdout)  # the transcript: pytest -s shows it
    assert suggested.returncode == 2, suggested.stdout + suggested.stderr
    transcript = suggested.stdout
    assert "+ port     httpd_t unreserved_port_t:tcp_socket { name_bind }" in transcript
    assert "+ fcontext fcontext:/srv/site(/.*)?" in transcript
    assert "+ boolean  boolean:" in transcript
    assert "! refused  httpd_t shadow_t:file" in transcript
    assert "sensitive target shadow_t" in transcript

    overlay = tmp_path / "guest.suggested.toml"
    assert f"wrote {overlay}" in suggested.stderr
    table = tomllib.loads(overlay.read_text())["selinux"]
    assert table["mode"] == "permissive"
    assert table["ports"] == [{"type": "http_port_t", "protocol": "tcp", "port": str(WEB_PORT)}]
    # The site's own directory, with the policy's label for web content.
    assert table["fcontexts"] == [{"path": "/srv/site(/.*)?", "type": "httpd_sys_content_t"}]
    ((boolean, on),) = table["booleans"].items()
    # the narrowest boolean: the zabbix port's own, not the one over every port type
    assert on is True and boolean == "httpd_can_network_connect_zabbix", table["booleans"]

    applied = vm.converge("apply", "--yes", str(overlay))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert ": converged" in applied.stdout
    assert "restorecon -R /srv/site: relabelled" in applied.stdout

    enforcing = _fields(vm.run(f"setenforce 1\necho mode=$(getenforce)\n{ACTIONS}"
                               f"echo site_label=$(stat -c %C {SITE_FILE})\n"
                               f"echo shadow_denied=$(dmesg | grep -c 'denied .* name=\"shadow\" .*permissive=0')\n"
                               "setenforce 0").stdout)
    assert enforcing["mode"] == "Enforcing"
    assert enforcing["site_label"].split(":")[2] == "httpd_sys_content_t"
    assert enforcing["served"] == "converge web"  # the port label: bound; the fcontext: read
    assert (enforcing["connect"], enforcing["read_site"]) == ("0", "0")  # the boolean
    assert enforcing["read_shadow"] == "1"  # the refused access stays refused
    assert int(enforcing["shadow_denied"]) >= 1


# ---- AppArmor ------------------------------------------------------------------------------------
# The shipped nginx profile; a copy of `cat` at /usr/sbin/nginx stands in for nginx (the profile
# attaches by that path), as in test_vm_apparmor.py. The site moved to /srv/www, which the profile
# does not cover: in complain mode the read is allowed and logged, /etc/shadow is refused even
# there (the profile's own deny rule).
SHIPPED_PROFILE = Path(__file__).resolve().parent.parent / "baselines" / "apparmor" / "profiles" / "usr.sbin.nginx"
PROFILE_FILE = "usr.sbin.nginx"
MOVED_SITE = "/srv/www/index.html"

NGINX_ACTIONS = f"""
echo "profile=$(grep '^nginx ' /sys/kernel/security/apparmor/profiles)"
echo "site=$(/usr/sbin/nginx {MOVED_SITE} 2>&1)"
echo "shadow=$(/usr/sbin/nginx /etc/shadow 2>&1 >/dev/null)"
"""


@pytest.fixture
def nginx_stand_in(apparmor_vm: VirtualMachine) -> Iterator[VirtualMachine]:
    """`cat` as /usr/sbin/nginx and a site under /srv/www; all removed, the profile unloaded, after."""
    apparmor_vm.run(f"""
set -e
cp /usr/bin/cat /usr/sbin/nginx
mkdir -p {MOVED_SITE.rsplit('/', 1)[0]}
echo 'moved site' > {MOVED_SITE}
""")
    yield apparmor_vm
    apparmor_vm.run(f"""
apparmor_parser -R /etc/apparmor.d/{PROFILE_FILE} 2>/dev/null
rm -f /etc/apparmor.d/{PROFILE_FILE} /usr/sbin/nginx
rm -rf /srv/www
""", check=False)
    assert "nginx " not in apparmor_vm.run("cat /sys/kernel/security/apparmor/profiles").stdout


def test_suggest_from_complain_mode_records_then_enforce(nginx_stand_in: VirtualMachine, tmp_path: Path) -> None:
    vm = nginx_stand_in
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / PROFILE_FILE).write_bytes(SHIPPED_PROFILE.read_bytes())
    baseline = tmp_path / "nginx.toml"
    baseline.write_text(f'[apparmor.profiles."{PROFILE_FILE}"]\nmode = "complain"\nsource = "profiles/{PROFILE_FILE}"\n')
    complain = vm.converge("apply", "--yes", str(baseline))
    assert complain.returncode == 0, complain.stdout + complain.stderr

    since = vm.run("date -u +%Y-%m-%dT%H:%M:%S+00:00").stdout.strip()
    learning = _fields(vm.run(NGINX_ACTIONS).stdout)
    assert learning["profile"] == "nginx (complain)"
    assert learning["site"] == "moved site"  # complain mode: allowed, and logged
    assert learning["shadow"].endswith("Permission denied")  # the profile's deny rule, even in complain mode

    suggested = vm.converge("suggest", str(baseline), "--since", since, "--write")
    print(suggested.stdout)  # the transcript: pytest -s shows it
    assert suggested.returncode == 2, suggested.stdout + suggested.stderr
    assert f"+ profile-rule nginx: owner {MOVED_SITE} r," in suggested.stdout
    # A deny rule is not audited: no record, nothing to propose or refuse.
    assert "/etc/shadow" not in suggested.stdout

    overlay = tmp_path / "nginx.suggested.toml"
    table = tomllib.loads(overlay.read_text())["apparmor"]["profiles"][PROFILE_FILE]
    assert table == {"mode": "complain", "source": f"apparmor/{PROFILE_FILE}"}
    amended = (tmp_path / "apparmor" / PROFILE_FILE).read_text()
    assert f"owner {MOVED_SITE} r," in amended and "deny /etc/shadow rwklx," in amended
    # Reviewed: enforce it.
    overlay.write_text(overlay.read_text().replace('mode = "complain"', 'mode = "enforce"'))

    enforce = vm.converge("apply", "--yes", str(overlay))
    assert enforce.returncode == 0, enforce.stdout + enforce.stderr
    enforced = _fields(vm.run(NGINX_ACTIONS).stdout)
    assert enforced["profile"] == "nginx (enforce)"
    assert enforced["site"] == "moved site"  # the proposed rule
    assert enforced["shadow"].endswith("Permission denied")
