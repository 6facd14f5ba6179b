"""Whole-baseline workloads: converge plans a shipped baseline; Ansible and pyinfra, rendered here from
the same loaded baseline, do the same with the modules and operations a user of each would pick.

The files converge writes (sysctl, modprobe, jail, sshd drop-in, apt drop-ins, the AppArmor profile)
are read back from a settled host and installed by each peer under a name of its own with the same
content (`ansible.builtin.copy`, pyinfra's `files.put`): the same settings, the same checks of file
content, and one tool's apply never makes another's plan dirty. Shared state (runtime sysctls, ufw
rules, SELinux booleans and file contexts, firewalld zones) is declared to every tool identically.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converge.baseline import Baseline, load_baseline
from converge.registry import Registry
from tests.sshnet import CONTROLLER_ADDRESS, SSHTestHost

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "baselines"

# What a real host of each kind has that a fresh Debian test host lacks (as tests/test_baselines.py).
# apt keeps its binary cache (pkgcache.bin) on a server; this machine's image turns it off
# (/etc/apt/apt.conf.d/docker-clean), so each of the host's apt and python3-apt runs would rebuild it
# from the lists: ~0.7 s of CPU per plan that no real server spends. The host's own copy lives in
# its private /var/lib; the drop-in sorts after docker-clean.
APT_CACHE = ("mkdir -p /var/lib/apt/bench-cache && printf '%s\\n'"
             " 'Dir::Cache::pkgcache \"/var/lib/apt/bench-cache/pkgcache.bin\";'"
             " 'Dir::Cache::srcpkgcache \"/var/lib/apt/bench-cache/srcpkgcache.bin\";'"
             " >/etc/apt/apt.conf.d/zz-bench-apt-cache")
PREPARE_UBUNTU = "mkdir -p /run/sshd /var/log/nginx && touch /var/log/nginx/error.log && " + APT_CACHE
# ubuntu-web's `limit 22/tcp` refuses a 7th connection within 30 s from one address, and every run
# of every tool connects from the controller's: let it in ahead of the rules every tool manages (a
# real fleet's controller needs the same, or runs in quick succession are refused).
CONTROLLER_ALLOWED = (f"sed -i '/^COMMIT/i -A ufw-before-input -s {CONTROLLER_ADDRESS} -p tcp --dport 22 -j ACCEPT'"
                      " /etc/ufw/before.rules")
# RHEL's policy is called "targeted"; Debian's reference policy stands in for it.
PREPARE_RHEL = ("mkdir -p /run/sshd && cp -a /etc/selinux/default /etc/selinux/targeted"
                " && cp -a /var/lib/selinux/default /var/lib/selinux/targeted && " + APT_CACHE)

# The files converge writes for each provider, which the peers install under their own names.
PEER_FILES: dict[str, dict[str, str]] = {
    "kmod": {"/etc/modprobe.d/00-converge.conf": "/etc/modprobe.d/00-{tool}.conf"},
    "fail2ban": {"/etc/fail2ban/jail.d/converge.local": "/etc/fail2ban/jail.d/00-{tool}.local"},  # sorts before ours
    "sshd": {"/etc/ssh/sshd_config.d/00-converge.conf": "/etc/ssh/sshd_config.d/10-{tool}.conf"},
    "updates": {"/etc/apt/apt.conf.d/52converge-unattended-upgrades": "/etc/apt/apt.conf.d/51{tool}-unattended-upgrades"},
    "sysctl": {"/etc/sysctl.d/99-zz-converge.conf": "/etc/sysctl.d/90-{tool}.conf"},
}
# A handler each peer runs when that file changes (the service reads it then).
RELOAD = {"fail2ban": "fail2ban-client reload", "sshd": "kill -HUP $(cat /run/sshd.pid)"}
DRIFTED_SYSCTLS = ("kernel.kptr_restrict", "kernel.dmesg_restrict", "fs.protected_fifos", "fs.suid_dumpable",
                   "net.ipv4.conf.all.send_redirects", "net.ipv4.conf.all.accept_redirects", "net.ipv4.conf.all.rp_filter",
                   "net.ipv4.conf.default.rp_filter", "net.ipv4.tcp_syncookies", "net.ipv6.conf.all.accept_redirects")


@dataclass
class Workload:
    """One desired state: converge's baseline file, how to make a fresh host look like its kind, the
    drift an apply repairs (set behind every tool's back) and the check that it was repaired."""

    name: str
    title: str
    baseline_path: Path
    prepare: str
    drift: Callable[[SSHTestHost], None] | None = None
    check: Callable[[SSHTestHost], list[str]] | None = None
    only: tuple[str, ...] = ()  # converge --only: the providers planned (empty: all)
    peers: bool = True
    baseline: Baseline = field(init=False)

    def __post_init__(self) -> None:
        self.baseline = load_baseline(self.baseline_path, Registry())

    def spec(self, provider: str) -> Any:  # the provider's spec model, None when not planned
        table = self.baseline.tables.get(provider)
        return table.spec if table and (not self.only or provider in self.only) else None

    def sysctls(self) -> dict[str, str]:
        spec = self.spec("sysctl")
        return {key: str(value) for key, value in (spec.model_dump() if spec is not None else {}).items()}


def drift_sysctls(host: SSHTestHost, keys: tuple[str, ...] = DRIFTED_SYSCTLS) -> None:
    """Ten runtime values moved away from the desired ones (to a value the kernel accepts)."""
    for key in keys:
        current = host.sysctl(key)
        host.set_sysctl(key, "1" if current != "1" else "0")


def wrong_sysctls(host: SSHTestHost, wanted: dict[str, str], keys: tuple[str, ...] = DRIFTED_SYSCTLS) -> list[str]:
    return [f"{key}={host.sysctl(key)}" for key in keys if host.sysctl(key) != wanted[key]]


def ubuntu_web() -> Workload:
    workload = Workload("ubuntu-web", "ubuntu-web (shipped baseline)", SHIPPED / "ubuntu-web.toml",
                        f"{PREPARE_UBUNTU} && {CONTROLLER_ALLOWED}")

    def drift(host: SSHTestHost) -> None:
        drift_sysctls(host)
        host.run(["ufw", "delete", "allow", "80/tcp"])  # one rule of three gone

    def check(host: SSHTestHost) -> list[str]:
        rules = host.run(["ufw", "show", "added"]).stdout
        return wrong_sysctls(host, workload.sysctls()) + ([] if "allow 80/tcp" in rules else ["ufw rule 80/tcp missing"])

    workload.drift, workload.check = drift, check
    return workload


def rhel_web() -> Workload:
    workload = Workload("rhel-web", "rhel-web (shipped baseline)", SHIPPED / "rhel-web.toml", PREPARE_RHEL)

    def drift(host: SSHTestHost) -> None:
        drift_sysctls(host)
        host.run(["setsebool", "-P", "httpd_enable_homedirs=on"])

    def check(host: SSHTestHost) -> list[str]:
        local = host.run(["semanage", "boolean", "-l", "-C"]).stdout
        homedirs = [line for line in local.splitlines() if line.startswith("httpd_enable_homedirs ")]
        wrong = [line for line in homedirs if "(off" not in line.replace(" ", "") and ",on)" in line.replace(" ", "")]
        return wrong_sysctls(host, workload.sysctls()) + wrong

    workload.drift, workload.check = drift, check
    return workload


def selinux_scale(workdir: Path, booleans: dict[str, bool]) -> Workload:
    """The SELinux plan of the issue: 50 declared booleans (at their current values), 10 file
    contexts and 5 ports; converge only (its host CPU is the target)."""
    lines = ['[baseline]', 'name = "selinux-scale"', '', '[selinux]', 'policy = "targeted"', '', '[selinux.booleans]']
    lines += [f"{name} = {'true' if value else 'false'}" for name, value in list(booleans.items())[:50]]
    for index in range(10):
        lines += ["", "[[selinux.fcontexts]]", f'path = "/srv/app{index}(/.*)?"', 'type = "httpd_sys_content_t"']
    for index in range(5):
        lines += ["", "[[selinux.ports]]", f'port = "{18080 + index}"', 'protocol = "tcp"', 'type = "http_port_t"']
    path = workdir / "selinux-scale.toml"
    path.write_text("\n".join(lines) + "\n")
    return Workload("selinux-scale", "SELinux: 50 booleans, 10 fcontexts, 5 ports", path, PREPARE_RHEL, peers=False)


def fleet(only: tuple[str, ...]) -> Workload:
    return Workload("fleet", "ubuntu-web, " + ", ".join(only), SHIPPED / "ubuntu-web.toml", PREPARE_UBUNTU,
                    only=only, peers=False)


# ---- the peers' renderings ----------------------------------------------------------------------

def peer_files(workload: Workload, converge_files: dict[str, str], tool: str) -> dict[str, tuple[str, str]]:
    """{peer's path: (content, provider)} for the files converge wrote on a settled host."""
    files = {}
    for provider, mapping in PEER_FILES.items():
        if workload.spec(provider) is None:
            continue
        for ours, theirs in mapping.items():
            if ours in converge_files:
                files[theirs.format(tool=tool)] = (converge_files[ours], provider)
    apparmor = workload.spec("apparmor")
    for name in getattr(apparmor, "profiles", {}) or {}:
        path = f"/etc/apparmor.d/{name}"  # the profile itself: one path, whoever installs it
        if path in converge_files:
            files[path] = (converge_files[path], "apparmor")
    return files


def converge_paths(workload: Workload) -> list[str]:
    paths = [ours for provider, mapping in PEER_FILES.items() if workload.spec(provider) is not None for ours in mapping]
    apparmor = workload.spec("apparmor")
    return paths + [f"/etc/apparmor.d/{name}" for name in getattr(apparmor, "profiles", {}) or {}]


def _task(name: str, module: str, arguments: dict[str, object], loop: list[Any] | None = None,
          notify: str | None = None) -> str:
    """One Ansible task in YAML (JSON values are YAML values)."""
    lines = [f"    - name: {json.dumps(name)}", f"      {module}:"]
    lines += [f"        {key}: {json.dumps(value)}" for key, value in arguments.items()]
    if loop is not None:
        lines.append(f"      loop: {json.dumps(loop)}")
    if notify:
        lines.append(f"      notify: {notify}")
    return "\n".join(lines) + "\n"


def ansible_playbook(workload: Workload, files: dict[str, tuple[str, str]]) -> str:
    tasks: list[str] = []
    sysctls = workload.sysctls()
    if sysctls:
        tasks.append(_task("sysctl", "ansible.posix.sysctl",
                           {"name": "{{ item.key }}", "value": "{{ item.value }}", "state": "present", "sysctl_set": True,
                            "sysctl_file": "/etc/sysctl.d/90-ansible-sysctl.conf", "reload": False},
                           [{"key": key, "value": value} for key, value in sysctls.items()]))
    for path, (content, provider) in files.items():
        tasks.append(_task(f"{provider} {path}", "ansible.builtin.copy", {"dest": path, "content": content, "mode": "0644"},
                           notify=f"reload {provider}" if provider in RELOAD else None))
    handlers = [_task(f"reload {provider}", "ansible.builtin.shell", {"cmd": command})
                for provider, command in RELOAD.items() if any(p == provider for _, p in files.values())]
    ufw = workload.spec("ufw")
    if ufw is not None:
        rules = [{"rule": r.action, "port": r.port, "proto": r.proto, "comment": r.comment} for r in ufw.rules]
        tasks.append(_task("ufw rules", "community.general.ufw",
                           {"rule": "{{ item.rule }}", "port": "{{ item.port }}", "proto": "{{ item.proto }}",
                            "comment": "{{ item.comment }}"}, rules))
        defaults = [{"policy": ufw.default_incoming, "direction": "incoming"},
                    {"policy": ufw.default_outgoing, "direction": "outgoing"}]
        tasks.append(_task("ufw defaults", "community.general.ufw",
                           {"default": "{{ item.policy }}", "direction": "{{ item.direction }}"}, defaults))
        tasks.append(_task("ufw enabled", "community.general.ufw", {"state": "enabled", "logging": ufw.logging}))
    selinux = workload.spec("selinux")
    if selinux is not None:
        tasks.append(_task("selinux config", "ansible.builtin.lineinfile",
                           {"path": "/etc/selinux/config", "regexp": "^{{ item.key }}=",
                            "line": "{{ item.key }}={{ item.value }}"},
                           [{"key": "SELINUX", "value": selinux.mode}, {"key": "SELINUXTYPE", "value": selinux.policy}]))
        # ignore_selinux_state: the test host has the policy store but no SELinux kernel.
        tasks.append(_task("selinux booleans", "ansible.posix.seboolean",
                           {"name": "{{ item.key }}", "state": "{{ item.value }}", "persistent": True,
                            "ignore_selinux_state": True},
                           [{"key": key, "value": value} for key, value in selinux.booleans.items()]))
        tasks.append(_task("selinux file contexts", "community.general.sefcontext",
                           {"target": "{{ item.path }}", "setype": "{{ item.type }}", "ignore_selinux_state": True},
                           [{"path": f.path, "type": f.type} for f in selinux.fcontexts]))
    firewalld = workload.spec("firewalld")
    if firewalld is not None:
        services = [{"zone": zone, "service": service} for zone, spec in firewalld.zones.items() for service in spec.services]
        # offline: the test host runs no firewalld daemon (converge uses firewall-offline-cmd there too).
        tasks.append(_task("firewalld services", "ansible.posix.firewalld",
                           {"zone": "{{ item.zone }}", "service": "{{ item.service }}", "permanent": True, "state": "enabled",
                            "offline": True}, services))
    return ("- hosts: all\n  gather_facts: false\n  tasks:\n" + "".join(tasks)
            + ("  handlers:\n" + "".join(handlers) if handlers else ""))


PYINFRA_UFW = """
class UfwAdded(FactBase):
    command = 'ufw show added'

    def process(self, output):
        return [line.strip() for line in output]


added = host.get_fact(UfwAdded)
for wanted in {rules!r}:
    if wanted not in added:
        server.shell(name=wanted, commands=[wanted])
"""
# selinux.boolean reads getsebool, which needs a SELinux kernel: the persistent values come from
# semanage here, set with setsebool -P as selinux.boolean does. selinux.file_context_mapping's fact
# runs `set -o pipefail`, which Debian's sh (dash) refuses: the local file contexts come from
# `semanage fcontext -l -C` here, added with semanage as that operation does.
PYINFRA_SELINUX = """
files.line(name='SELINUX', path='/etc/selinux/config', line='^SELINUX=.*', replace='SELINUX={mode}')
files.line(name='SELINUXTYPE', path='/etc/selinux/config', line='^SELINUXTYPE=.*', replace='SELINUXTYPE={policy}')


class PersistentBooleans(FactBase):
    command = 'semanage boolean -l'

    def process(self, output):
        return {{line.split()[0]: line.split(')')[0].split(',')[-1].strip() == 'on'
                for line in output if ',' in line and '(' in line}}


persistent = host.get_fact(PersistentBooleans)
for name, value in {booleans!r}.items():
    if persistent.get(name) != value:
        server.shell(name=f'setsebool {{name}}', commands=[f"setsebool -P {{name}} {{'on' if value else 'off'}}"])


class LocalFileContexts(FactBase):
    command = 'semanage fcontext -l -C -n'

    def process(self, output):
        return {{line.split()[0]: line.split()[-1].split(':')[2] for line in output if line.count(':') >= 3}}


local = host.get_fact(LocalFileContexts)
for target, se_type in {fcontexts!r}:
    if local.get(target) != se_type:
        server.shell(name=f'fcontext {{target}}', commands=[f"semanage fcontext -a -t {{se_type}} '{{target}}'"])
"""
# pyinfra has no firewalld operation: a fact and guarded firewall-offline-cmd commands.
PYINFRA_FIREWALLD = """
class Services(FactBase):
    def command(self, zone):
        return f'firewall-offline-cmd --zone={{zone}} --list-services'

    def process(self, output):
        return ' '.join(output).split()


for zone, services in {zones!r}.items():
    for service in services:
        if service not in host.get_fact(Services, zone=zone):
            command = f'firewall-offline-cmd --zone={{zone}} --add-service={{service}}'
            server.shell(name=f'firewalld {{service}}', commands=[command])
"""


def pyinfra_deploy(workload: Workload, files: dict[str, tuple[str, str]]) -> str:
    lines = ["from io import StringIO", "from pyinfra import host", "from pyinfra.api import FactBase",
             "from pyinfra.operations import files, server", ""]
    sysctls = workload.sysctls()
    if sysctls:
        lines += [f"for key, value in {sysctls!r}.items():",
                  "    server.sysctl(name=f'sysctl {key}', key=key, value=value, persist=True,",
                  "                  persist_file='/etc/sysctl.d/90-pyinfra-sysctl.conf')", ""]
    for index, (path, (content, provider)) in enumerate(files.items()):
        lines.append(f"file{index} = files.put(name={f'{provider} {path}'!r}, src=StringIO({content!r}), dest={path!r}, "
                     "mode='644')")
        if provider in RELOAD:
            lines.append(f"server.shell(name='reload {provider}', commands=[{RELOAD[provider]!r}], "
                         f"_if=file{index}.did_change)")
    ufw = workload.spec("ufw")
    if ufw is not None:
        lines.append(PYINFRA_UFW.format(rules=[f"ufw {r.action} {r.port}/{r.proto} comment '{r.comment}'" for r in ufw.rules]))
    selinux = workload.spec("selinux")
    if selinux is not None:
        lines.append(PYINFRA_SELINUX.format(mode=selinux.mode, policy=selinux.policy, booleans=dict(selinux.booleans),
                                            fcontexts=[(f.path, f.type) for f in selinux.fcontexts]))
    firewalld = workload.spec("firewalld")
    if firewalld is not None:
        lines.append(PYINFRA_FIREWALLD.format(zones={zone: list(spec.services) for zone, spec in firewalld.zones.items()}))
    return "\n".join(lines) + "\n"
