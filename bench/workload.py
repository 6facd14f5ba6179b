"""The desired state every tool converges to, written once here and rendered for each tool.

Parts are optional: `sysctl` runs today; `ufw` and `fail2ban` need converge's providers of the
same name (they are rendered for the peers now so adding them to converge is a one-flag change).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

PARTS = ("sysctl", "ufw", "fail2ban")

# 30 CIS keys. net.* keys are per network namespace; kernel.*, fs.* and vm.* land in the test host's
# private copy of /proc/sys (tests/testhost.py), never in the machine's kernel.
SYSCTL: dict[str, int] = {
    "kernel.randomize_va_space": 2,
    "kernel.kptr_restrict": 2,
    "kernel.dmesg_restrict": 1,
    "kernel.perf_event_paranoid": 2,
    "vm.unprivileged_userfaultfd": 0,
    "fs.protected_hardlinks": 1,
    "fs.protected_symlinks": 1,
    "fs.protected_fifos": 2,
    "fs.protected_regular": 2,
    "fs.suid_dumpable": 0,
    "net.ipv4.ip_forward": 0,
    "net.ipv4.conf.all.send_redirects": 0,
    "net.ipv4.conf.default.send_redirects": 0,
    "net.ipv4.conf.all.accept_redirects": 0,
    "net.ipv4.conf.default.accept_redirects": 0,
    "net.ipv4.conf.all.secure_redirects": 0,
    "net.ipv4.conf.default.secure_redirects": 0,
    "net.ipv4.conf.all.accept_source_route": 0,
    "net.ipv4.conf.default.accept_source_route": 0,
    "net.ipv4.conf.all.rp_filter": 1,
    "net.ipv4.conf.default.rp_filter": 1,
    "net.ipv4.conf.all.log_martians": 1,
    "net.ipv4.conf.default.log_martians": 1,
    "net.ipv4.icmp_echo_ignore_broadcasts": 1,
    "net.ipv4.icmp_ignore_bogus_error_responses": 1,
    "net.ipv4.tcp_syncookies": 1,
    "net.ipv6.conf.all.accept_redirects": 0,
    "net.ipv6.conf.default.accept_redirects": 0,
    "net.ipv6.conf.all.accept_source_route": 0,
    "net.ipv6.conf.default.accept_source_route": 0,
}
# The ten values the apply benchmark drifts before each apply: a mix of per-namespace and
# shadowed global keys, each set to a value the kernel accepts.
DRIFTED = (
    "kernel.kptr_restrict", "kernel.dmesg_restrict", "fs.protected_fifos", "fs.suid_dumpable",
    "net.ipv4.conf.all.send_redirects", "net.ipv4.conf.all.accept_redirects", "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.default.log_martians", "net.ipv4.tcp_syncookies", "net.ipv6.conf.all.accept_redirects",
)

# Each tool persists into its own file, so one tool's apply never makes another's plan dirty.
CONVERGE_SYSCTL_FILE = "/etc/sysctl.d/99-zz-converge.conf"
ANSIBLE_SYSCTL_FILE = "/etc/sysctl.d/90-ansible.conf"
PYINFRA_SYSCTL_FILE = "/etc/sysctl.d/90-pyinfra.conf"


@dataclass(frozen=True)
class UfwRule:
    action: str
    port: str
    proto: str
    comment: str


# ufw is enabled in every host before the first run (incoming deny), so every tool's state
# differs only in the rules. Port 22 is allowed or the tools would lock themselves out.
UFW_RULES = (
    UfwRule("allow", "22", "tcp", "ssh"),
    UfwRule("allow", "80", "tcp", "http"),
    UfwRule("allow", "443", "tcp", "https"),
    UfwRule("allow", "53", "udp", "dns"),
    UfwRule("deny", "23", "tcp", "telnet"),
)

# Two jails on log files each host has (test hosts run no journald). polling needs no inotify.
FAIL2BAN_JAILS: dict[str, dict[str, str | int]] = {
    "sshd": {"enabled": "true", "port": "ssh", "backend": "polling", "logpath": "/var/log/auth.log", "maxretry": 3},
    "recidive": {"enabled": "true", "backend": "polling", "logpath": "/var/log/fail2ban.log", "maxretry": 5},
}
ANSIBLE_JAIL_FILE = "/etc/fail2ban/jail.d/ansible.local"
PYINFRA_JAIL_FILE = "/etc/fail2ban/jail.d/pyinfra.local"


def drift_value(key: str) -> str:
    """A value other than the desired one that the kernel accepts for this key."""
    return "1" if SYSCTL[key] != 1 else "0"


def jail_file(jails: dict[str, dict[str, str | int]]) -> str:
    """fail2ban's INI jail file, as Ansible and pyinfra install it."""
    sections = []
    for name, options in jails.items():
        sections.append(f"[{name}]\n" + "".join(f"{option} = {value}\n" for option, value in options.items()))
    return "\n".join(sections)


def converge_baseline(parts: tuple[str, ...]) -> str:
    lines = ['[baseline]', 'name = "bench"', '']
    if "sysctl" in parts:
        lines += ["[sysctl]", *(f"{key} = {value}" for key, value in SYSCTL.items()), ""]
    if "ufw" in parts:
        lines += ["[ufw]", "enabled = true", 'default_incoming = "deny"', 'default_outgoing = "allow"', ""]
        for rule in UFW_RULES:
            lines += ["[[ufw.rules]]", f'action = "{rule.action}"', f'port = "{rule.port}"', f'proto = "{rule.proto}"',
                      f'comment = "{rule.comment}"', ""]
    if "fail2ban" in parts:
        for name, options in FAIL2BAN_JAILS.items():
            lines.append(f"[fail2ban.jails.{name}]")
            for option, value in options.items():
                rendered = "true" if value == "true" else json.dumps(value)
                lines.append(f"{option} = {rendered}")
            lines.append("")
    return "\n".join(lines)


def _yaml_string(value: object) -> str:
    return json.dumps(str(value))  # JSON strings are YAML strings


def ansible_playbook(parts: tuple[str, ...]) -> str:
    tasks = []
    if "sysctl" in parts:
        tasks.append(
            "    - name: sysctl\n      ansible.posix.sysctl:\n        name: \"{{ item.key }}\"\n"
            "        value: \"{{ item.value }}\"\n        state: present\n        sysctl_set: true\n"
            f"        sysctl_file: {ANSIBLE_SYSCTL_FILE}\n        reload: false\n"
            "      loop: \"{{ sysctls | dict2items }}\"\n"
        )
    if "ufw" in parts:
        tasks.append(
            "    - name: ufw rules\n      community.general.ufw:\n        rule: \"{{ item.action }}\"\n"
            "        port: \"{{ item.port }}\"\n        proto: \"{{ item.proto }}\"\n        comment: \"{{ item.comment }}\"\n"
            "      loop: \"{{ ufw_rules }}\"\n"
            "    - name: ufw enabled\n      community.general.ufw:\n        state: enabled\n        default: deny\n"
            "        direction: incoming\n"
        )
    if "fail2ban" in parts:
        tasks.append(
            f"    - name: fail2ban jails\n      ansible.builtin.copy:\n        dest: {ANSIBLE_JAIL_FILE}\n"
            f"        content: {_yaml_string(jail_file(FAIL2BAN_JAILS))}\n        mode: \"0644\"\n"
            "      notify: reload fail2ban\n"
        )
    variables = {"sysctls": SYSCTL, "ufw_rules": [rule.__dict__ for rule in UFW_RULES]}
    handlers = "  handlers:\n    - name: reload fail2ban\n      ansible.builtin.command: fail2ban-client reload\n"
    return (
        "- hosts: all\n  gather_facts: false\n"
        f"  vars: {json.dumps(variables)}\n"
        "  tasks:\n" + "".join(tasks) + (handlers if "fail2ban" in parts else "")
    )


def pyinfra_deploy(parts: tuple[str, ...]) -> str:
    lines = [
        "from pyinfra import host",
        "from pyinfra.api import FactBase",
        "from pyinfra.operations import files, server",
        "",
        f"SYSCTL = {SYSCTL!r}",
        f"UFW_RULES = {[rule.__dict__ for rule in UFW_RULES]!r}",
        "",
    ]
    if "sysctl" in parts:
        lines += [
            "for key, value in SYSCTL.items():",
            "    server.sysctl(name=f'sysctl {key}', key=key, value=value, persist=True,",
            f"                  persist_file={PYINFRA_SYSCTL_FILE!r})",
            "",
        ]
    if "ufw" in parts:
        # pyinfra has no ufw operation: the idiomatic deploy is a fact plus guarded shell commands.
        lines += [
            "class UfwAdded(FactBase):",
            "    command = 'ufw show added'",
            "",
            "    def process(self, output):",
            "        return [line.strip() for line in output]",
            "",
            "added = host.get_fact(UfwAdded)",
            "for rule in UFW_RULES:",
            "    wanted = f\"ufw {rule['action']} {rule['port']}/{rule['proto']} comment '{rule['comment']}'\"",
            "    if wanted not in added:",
            "        server.shell(name=f'ufw {rule[\"port\"]}', commands=[wanted])",
            "",
        ]
    if "fail2ban" in parts:
        lines += [
            "from io import StringIO",
            f"jails = files.put(name='fail2ban jails', src=StringIO({jail_file(FAIL2BAN_JAILS)!r}), dest={PYINFRA_JAIL_FILE!r})",
            "server.shell(name='reload fail2ban', commands=['fail2ban-client reload'], _if=jails.did_change)",
            "",
        ]
    return "\n".join(lines)


def write_all(directory: Path, parts: tuple[str, ...]) -> dict[str, Path]:
    """Write the three renderings of the workload; returns their paths by tool."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "converge": directory / "baseline.toml",
        "ansible": directory / "playbook.yml",
        "pyinfra": directory / "deploy.py",
    }
    files["converge"].write_text(converge_baseline(parts))
    files["ansible"].write_text(ansible_playbook(parts))
    files["pyinfra"].write_text(pyinfra_deploy(parts))
    return files
