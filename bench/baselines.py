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

from converge.baseline import Baseline, load_baseline
from converge.registry import Registry
from tests.sshnet import SSHTestHost

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "baselines"

# What a real host of each kind has that a fresh Debian test host lacks (as tests/test_baselines.py).
PREPARE_UBUNTU = "mkdir -p /run/sshd /var/log/nginx && touch /var/log/nginx/error.log"
# RHEL's policy is called "targeted"; Debian's reference policy stands in for it.
PREPARE_RHEL = ("mkdir -p /run/sshd && cp -a /etc/selinux/default /etc/selinux/targeted"
                " && cp -a /var/lib/selinux/default /var/lib/selinux/targeted")

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

    def spec(self, provider: str) -> object | None:
        table = self.baseline.tables.get(provider)
        return table.spec if table and (not self.only or provider in self.only) else None

    def sysctls(self) -> dict[str, str]:
        spec = self.spec("sysctl")
        return {key: str(value) for key, value in (spec.model_dump() if spec is not None else {}).items()}  # type: ignore[attr-defined]


def drift_sysctls(host: SSHTestHost, keys: tuple[str, ...] = DRIFTED_SYSCTLS) -> None:
    """Ten runtime values moved away from the desired ones (to a value the kernel accepts)."""
    for key in keys:
        current = host.sysctl(key)
        host.set_sysctl(key, "1" if current != "1" else "0")


def wrong_sysctls(host: SSHTestHost, wanted: dict[str, str], keys: tuple[str, ...] = DRIFTED_SYSCTLS) -> list[str]:
    return [f"{key}={host.sysctl(key)}" for key in keys if host.sysctl(key) != wanted[key]]


def ubuntu_web() -> Workload:
    workload = Workload("ubuntu-web", "ubuntu-web (shipped baseline)", SHIPPED / "ubuntu-web.toml", PREPARE_UBUNTU)

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


def _yaml(value: object) -> str:
    return json.dumps(value)  # JSON is YAML


def ansible_playbook(workload: Workload, files: dict[str, tuple[str, str]]) -> str:
    tasks: list[str] = []
    handlers: list[str] = []
    sysctls = workload.sysctls()
    if sysctls:
        tasks.append(
            "    - name: sysctl\n      ansible.posix.sysctl:\n        name: \"{{ item.key }}\"\n"
            "        value: \"{{ item.value }}\"\n        state: present\n        sysctl_set: true\n"
            "        sysctl_file: /etc/sysctl.d/90-ansible-sysctl.conf\n        reload: false\n"
            f"      loop: {_yaml([{'key': k, 'value': v} for k, v in sysctls.items()])}\n")
    for path, (content, provider) in files.items():
        notify = f"      notify: reload {provider}\n" if provider in RELOAD else ""
        tasks.append(f"    - name: {provider} {path}\n      ansible.builtin.copy:\n        dest: {path}\n"
                     f"        content: {_yaml(content)}\n        mode: \"0644\"\n{notify}")
    for provider, command in RELOAD.items():
        if any(p == provider for _, p in files.values()):
            handlers.append(f"    - name: reload {provider}\n      ansible.builtin.shell: {_yaml(command)}\n")
    ufw = workload.spec("ufw")
    if ufw is not None:
        rules = [{"rule": r.action, "port": r.port, "proto": r.proto, "comment": r.comment} for r in ufw.rules]  # type: ignore[attr-defined]
        tasks.append("    - name: ufw rules\n      community.general.ufw:\n        rule: \"{{ item.rule }}\"\n"
                     "        port: \"{{ item.port }}\"\n        proto: \"{{ item.proto }}\"\n        comment: \"{{ item.comment }}\"\n"
                     f"      loop: {_yaml(rules)}\n")
        tasks.append(f"    - name: ufw defaults\n      community.general.ufw:\n        default: \"{{{{ item.policy }}}}\"\n"
                     f"        direction: \"{{{{ item.direction }}}}\"\n"
                     f"      loop: {_yaml([{'policy': ufw.default_incoming, 'direction': 'incoming'}, {'policy': ufw.default_outgoing, 'direction': 'outgoing'}])}\n")  # type: ignore[attr-defined]
        tasks.append(f"    - name: ufw enabled\n      community.general.ufw:\n        state: enabled\n        logging: {ufw.logging}\n")  # type: ignore[attr-defined]
    selinux = workload.spec("selinux")
    if selinux is not None:
        tasks.append("    - name: selinux config\n      ansible.builtin.lineinfile:\n        path: /etc/selinux/config\n"
                     "        regexp: \"^{{ item.key }}=\"\n        line: \"{{ item.key }}={{ item.value }}\"\n"
                     f"      loop: {_yaml([{'key': 'SELINUX', 'value': selinux.mode}, {'key': 'SELINUXTYPE', 'value': selinux.policy}])}\n")  # type: ignore[attr-defined]
        # ignore_selinux_state: the test host has the policy store but no SELinux kernel.
        tasks.append("    - name: selinux booleans\n      ansible.posix.seboolean:\n        name: \"{{ item.key }}\"\n"
                     "        state: \"{{ item.value }}\"\n        persistent: true\n        ignore_selinux_state: true\n"
                     f"      loop: {_yaml([{'key': k, 'value': v} for k, v in selinux.booleans.items()])}\n")  # type: ignore[attr-defined]
        tasks.append("    - name: selinux file contexts\n      community.general.sefcontext:\n        target: \"{{ item.path }}\"\n"
                     "        setype: \"{{ item.type }}\"\n        ignore_selinux_state: true\n"
                     f"      loop: {_yaml([{'path': f.path, 'type': f.type} for f in selinux.fcontexts])}\n")  # type: ignore[attr-defined]
    firewalld = workload.spec("firewalld")
    if firewalld is not None:
        services = [{"zone": zone, "service": service} for zone, spec in firewalld.zones.items() for service in spec.services]  # type: ignore[attr-defined]
        # offline: the test host runs no firewalld daemon (converge uses firewall-offline-cmd there too).
        tasks.append("    - name: firewalld services\n      ansible.posix.firewalld:\n        zone: \"{{ item.zone }}\"\n"
                     "        service: \"{{ item.service }}\"\n        permanent: true\n        state: enabled\n        offline: true\n"
                     f"      loop: {_yaml(services)}\n")
    return ("- hosts: all\n  gather_facts: false\n  tasks:\n" + "".join(tasks)
            + ("  handlers:\n" + "".join(handlers) if handlers else ""))


def pyinfra_deploy(workload: Workload, files: dict[str, tuple[str, str]]) -> str:
    lines = ["from io import StringIO", "from pyinfra import host", "from pyinfra.api import FactBase",
             "from pyinfra.operations import files, selinux, server", ""]
    sysctls = workload.sysctls()
    if sysctls:
        lines += [f"for key, value in {sysctls!r}.items():",
                  "    server.sysctl(name=f'sysctl {key}', key=key, value=value, persist=True,",
                  "                  persist_file='/etc/sysctl.d/90-pyinfra-sysctl.conf')", ""]
    for index, (path, (content, provider)) in enumerate(files.items()):
        lines.append(f"file{index} = files.put(name={f'{provider} {path}'!r}, src=StringIO({content!r}), dest={path!r}, mode='644')")
        if provider in RELOAD:
            lines.append(f"server.shell(name='reload {provider}', commands=[{RELOAD[provider]!r}], _if=file{index}.did_change)")
    ufw = workload.spec("ufw")
    if ufw is not None:
        # pyinfra has no ufw operation: a fact and guarded ufw commands.
        rules = [f"ufw {r.action} {r.port}/{r.proto} comment '{r.comment}'" for r in ufw.rules]  # type: ignore[attr-defined]
        lines += ["", "class UfwAdded(FactBase):", "    command = 'ufw show added'", "",
                  "    def process(self, output):", "        return [line.strip() for line in output]", "",
                  "added = host.get_fact(UfwAdded)", f"for wanted in {rules!r}:", "    if wanted not in added:",
                  "        server.shell(name=wanted, commands=[wanted])", ""]
    selinux = workload.spec("selinux")
    if selinux is not None:
        lines += [f"files.line(name='SELINUX', path='/etc/selinux/config', line='^SELINUX=.*', replace='SELINUX={selinux.mode}')",  # type: ignore[attr-defined]
                  f"files.line(name='SELINUXTYPE', path='/etc/selinux/config', line='^SELINUXTYPE=.*', replace='SELINUXTYPE={selinux.policy}')",  # type: ignore[attr-defined]
                  # selinux.boolean reads getsebool, which needs a SELinux kernel: the persistent
                  # values come from semanage here, set with setsebool -P as selinux.boolean does.
                  "", "class PersistentBooleans(FactBase):", "    command = 'semanage boolean -l'", "",
                  "    def process(self, output):",
                  "        return {line.split()[0]: line.split(')')[0].split(',')[-1].strip() == 'on'",
                  "                for line in output if ',' in line and '(' in line}", "",
                  "persistent = host.get_fact(PersistentBooleans)",
                  f"for name, value in {dict(selinux.booleans)!r}.items():",  # type: ignore[attr-defined]
                  "    if persistent.get(name) != value:",
                  "        server.shell(name=f'setsebool {name}', commands=[f\"setsebool -P {name} {'on' if value else 'off'}\"])",
                  ""]
        for fcontext in selinux.fcontexts:  # type: ignore[attr-defined]
            lines.append(f"selinux.file_context_mapping(name={f'fcontext {fcontext.path}'!r}, target={fcontext.path!r}, se_type={fcontext.type!r})")
    firewalld = workload.spec("firewalld")
    if firewalld is not None:
        for zone, spec in firewalld.zones.items():  # type: ignore[attr-defined]
            lines += ["", f"class Services_{zone}(FactBase):", f"    command = 'firewall-offline-cmd --zone={zone} --list-services'", "",
                      "    def process(self, output):", "        return ' '.join(output).split()", "",
                      f"for service in {list(spec.services)!r}:",
                      f"    if service not in host.get_fact(Services_{zone}):",
                      f"        server.shell(name=f'firewalld {{service}}', commands=[f'firewall-offline-cmd --zone={zone} --add-service={{service}}'])"]
    return "\n".join(lines) + "\n"
