"""The RHEL family's seam: dnf-automatic's /etc/dnf/automatic.conf and timer, and
`dnf updateinfo list --security` from the cache (never refreshed by a plan)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from converge.provider import (
    Captured,
    Change,
    Facts,
    Operation,
    ProviderError,
    ProviderPlan,
    Read,
    ReadFile,
    Run,
    RunCommand,
    Write,
    restore,
)
from converge.providers.updates.parse import parse_automatic_conf, parse_index, parse_rpm_installed, parse_updateinfo
from converge.providers.updates.spec import UpdatesSpec

AUTOMATIC_CONF = "/etc/dnf/automatic.conf"
TIMER = "dnf-automatic.timer"
# The RHEL side's reads run only where apt-get is missing: Debian ships dnf and rpm too, and
# running them there writes /root/.rpmdb and dnf's logs (a plan must change nothing).
_WITHOUT_APT = 'command -v apt-get >/dev/null 2>&1 && exit 0; exec "$@"'


def _without_apt(*argv: str) -> tuple[str, ...]:
    return ("sh", "-c", _WITHOUT_APT, "rhel-read", *argv)


RPM_QA = _without_apt("rpm", "-qa", "--qf", "%{NAME}.%{ARCH} %{EPOCHNUM}:%{VERSION}-%{RELEASE}\\n")
UPDATEINFO = _without_apt("dnf", "-C", "-q", "updateinfo", "list", "--security")
TIMER_STATE = ("systemctl", "is-enabled", TIMER)
NEEDS_RESTARTING = _without_apt("needs-restarting", "-r")
# dnf-automatic's own reboot setting (dnf 4.x: never | when-changed | when-needed).
REBOOT = {"never": "never", "when-required": "when-needed"}


def index_argv(spec: UpdatesSpec) -> tuple[str, ...]:
    return _without_apt("find", "/var/cache/dnf", "-maxdepth", "3", "-name", "repomd.xml", "(", "-mmin",
                        f"-{spec.max_index_minutes}", "-printf", "%T@ fresh %f\\n", ")", "-o", "-printf", "%T@ stale %f\\n")


def reads(spec: UpdatesSpec) -> Sequence[Read]:
    commands = (RPM_QA, UPDATEINFO, TIMER_STATE, NEEDS_RESTARTING, index_argv(spec))
    return [ReadFile(AUTOMATIC_CONF), *(RunCommand(argv) for argv in commands)]


@dataclass(frozen=True)
class DnfLive:
    conf_text: str | None
    conf: dict[str, str]
    installed: dict[str, str]
    timer: str
    # name.arch -> (installed, candidate, advisory); None: unknown, the reason in `pending_unknown`.
    pending: dict[str, tuple[str, str, str]] | None
    pending_unknown: str | None
    reboot_required: bool | None
    index_fresh: bool


def dnf_live(spec: UpdatesSpec, facts: Facts) -> DnfLive:
    text = facts.file(AUTOMATIC_CONF)
    installed = parse_rpm_installed(facts.command(*RPM_QA).stdout)
    info = facts.command(*UPDATEINFO)
    pending = None
    if info.ok:
        pending = {name: (installed.get(name, ""), version, advisory)
                   for name, version, advisory, _ in parse_updateinfo(info.stdout, " ".join(UPDATEINFO[4:]))}
    restarting = facts.command(*NEEDS_RESTARTING)
    _, fresh = parse_index(facts.command(*index_argv(spec)).stdout, "the dnf cache")
    return DnfLive(text, parse_automatic_conf(text or "", AUTOMATIC_CONF), installed,
                   facts.command(*TIMER_STATE).stdout.strip() or "not-found", pending, None if info.ok else info.failure(),
                   {0: False, 1: True}.get(restarting.returncode), fresh)


def wanted_conf(spec: UpdatesSpec) -> dict[str, str]:
    if spec.reboot_time:
        raise ProviderError(f'dnf-automatic cannot reboot at a given time: reboot = "{spec.reboot}" '
                            "works on Debian and Ubuntu only")
    return {"commands.upgrade_type": "security" if spec.automatic == "security" else "default",
            "commands.apply_updates": "yes", "commands.reboot": REBOOT[spec.reboot]}


def edit_conf(text: str, settings: dict[str, str]) -> str:
    """`text` with each `section.key` set: the line replaced in its section, or added at its end."""
    lines, section, done = text.splitlines(), "", set()
    out: list[str] = []
    for line in lines:
        header = re.fullmatch(r"\s*\[([^]]+)\]\s*", line)
        if header:
            out += [f"{key.split('.', 1)[1]} = {value}" for key, value in settings.items()
                    if key.startswith(f"{section}.") and key not in done and not done.add(key)]  # type: ignore[func-returns-value]
            section = header[1]
        else:
            assignment = re.match(r"\s*([A-Za-z_]+)\s*=", line)
            key = f"{section}.{assignment[1]}" if assignment else ""
            if key in settings:
                out.append(f"{assignment[1] if assignment else ''} = {settings[key]}")
                done.add(key)
                continue
        out.append(line)
    out += [f"{key.split('.', 1)[1]} = {value}" for key, value in settings.items()
            if key.startswith(f"{section}.") and key not in done]
    missing = [key for key in settings if key not in done and not key.startswith(f"{section}.")]
    for key in missing:
        out += [f"[{key.split('.', 1)[0]}]", f"{key.split('.', 1)[1]} = {settings[key]}"]
    return "\n".join(out) + "\n"


def diff(provider: str, spec: UpdatesSpec, live: DnfLive) -> ProviderPlan:
    changes: list[Change] = []
    operations: list[Operation] = []
    if spec.automatic != "off":
        if not any(name.startswith("dnf-automatic.") for name in live.installed):
            changes.append(Change(provider, "installed", "dnf-automatic", "add", False, True))
            operations.append(Run(("dnf", "-y", "install", "dnf-automatic")))
        wanted = wanted_conf(spec)
        differing = {key: value for key, value in wanted.items() if live.conf.get(key) != value}
        for key, value in differing.items():
            action: Literal["add", "update"] = "update" if key in live.conf else "add"
            changes.append(Change(provider, "dnf-automatic", key, action, live.conf.get(key), value, (f"in {AUTOMATIC_CONF}",)))
        if differing:
            operations.append(Write(AUTOMATIC_CONF, edit_conf(live.conf_text or "", wanted),
                                    undo=(restore(AUTOMATIC_CONF, live.conf_text),)))
        if live.timer != "enabled":
            changes.append(Change(provider, "timer", TIMER, "update", live.timer, "enabled"))
            operations.append(Run(("systemctl", "enable", "--now", TIMER)))
    if spec.pending == "install" and live.pending:
        for name, (before, after, advisory) in live.pending.items():
            changes.append(Change(provider, "package", name, "update", before or None, after, ("security update",),
                                  extra={"advisory": advisory}))
        targets = [f"{name.rsplit('.', 1)[0]}-{after}.{name.rsplit('.', 1)[1]}" for name, (_, after, _) in live.pending.items()]
        operations.append(Run(("dnf", "-y", "-C", "upgrade", *targets), says=f"installed {len(targets)} security update(s)"))
    return ProviderPlan(changes, operations)


def warnings(spec: UpdatesSpec, live: DnfLive) -> list[str]:
    found = []
    if live.pending is None:
        found.append(f"pending security updates unknown: {live.pending_unknown}")
    elif live.pending and spec.pending == "report":
        found.append(f"{len(live.pending)} pending security update(s): "
                     + ", ".join(f"{name} {b} -> {a} ({adv})" for name, (b, a, adv) in live.pending.items()))
    if not live.index_fresh:
        found.append(f"the dnf cache is older than {spec.max_index_age} (dnf makecache): pending updates are unknown")
    if live.reboot_required:
        found.append("reboot required (needs-restarting -r)")
    return found


def captured(live: DnfLive) -> Captured:
    enabled = live.conf.get("commands.apply_updates") == "yes" and live.timer == "enabled"
    automatic = "off" if not enabled else ("security" if live.conf.get("commands.upgrade_type") == "security" else "all")
    reboot = {"when-needed": "when-required", "when-changed": "when-required"}.get(live.conf.get("commands.reboot", ""), "never")
    return Captured({"automatic": automatic, "reboot": reboot, "pending": "report", "max_index_age": "1d"})
