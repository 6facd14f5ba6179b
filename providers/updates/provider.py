"""The updates provider: automatic updates configured, pending security updates known (and installed
on request), reboots and stale services reported, in the host's one round trip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from converge.provider import (
    Captured,
    Change,
    Facts,
    Operation,
    Provider,
    ProviderError,
    ProviderPlan,
    Read,
    ReadFile,
    Remove,
    Run,
    RunCommand,
    Which,
    Write,
    restore,
)
from converge.providers.updates import rhel
from converge.providers.updates.capture import apt_captured
from converge.providers.updates.parse import (
    Pending,
    apt_boolean,
    config_list,
    config_scalar,
    installed,
    newest_kernel,
    parse_apt_config,
    parse_dpkg_query,
    parse_index,
    parse_lock_holders,
    parse_needrestart,
    parse_pending,
)
from converge.providers.updates.probes import APT_CONFIG_SHOWS, INSTALLED_VERSIONS, LOCKS, ONLY_LISTED, PENDING
from converge.providers.updates.spec import UpdatesSpec

# ---- constants and reads ------------------------------------------------------------------------

# Sorts after the distribution's 50unattended-upgrades (and 20auto-upgrades), so converge's values
# win; lists are cleared first (`#clear`), as apt appends list items of later files.
DROP_IN = "/etc/apt/apt.conf.d/52converge-unattended-upgrades"
DROP_IN_HEADER = "// Managed by converge: rewritten on every apply, local edits are lost. Change the baseline instead.\n"
PERIODIC = ("APT::Periodic::Update-Package-Lists", "APT::Periodic::Unattended-Upgrade")
PATTERNS, LEGACY = "Unattended-Upgrade::Origins-Pattern", "Unattended-Upgrade::Allowed-Origins"
REBOOT, REBOOT_TIME = "Unattended-Upgrade::Automatic-Reboot", "Unattended-Upgrade::Automatic-Reboot-Time"
# The security origins, as the distributions' own 50unattended-upgrades name them.
SECURITY_PATTERNS = (
    "origin=Debian,codename=${distro_codename}-security,label=Debian-Security",
    "origin=Debian,codename=${distro_codename},label=Debian-Security",
    "origin=Ubuntu,archive=${distro_codename}-security",
    "origin=UbuntuESMApps,archive=${distro_codename}-apps-security",
    "origin=UbuntuESM,archive=${distro_codename}-infra-security",
)
ALL_PATTERNS = ("origin=*",)
TIMERS = ("apt-daily.timer", "apt-daily-upgrade.timer")
DPKG_LOCKS = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock")
REBOOT_REQUIRED, REBOOT_PACKAGES = "/run/reboot-required", "/run/reboot-required.pkgs"
INIT = "/proc/1/comm"
APT_ENV = ("env", "DEBIAN_FRONTEND=noninteractive")
KEEP_CONFIG = ("-o", "Dpkg::Options::=--force-confold")

APT_CONFIG = ("apt-config", "dump")
PACKAGES = ("dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev} ${Version}\\n",
            "unattended-upgrades", "python3-apt", "needrestart")
PENDING_ARGV = ("python3", "-c", PENDING, *SECURITY_PATTERNS)
LOCKS_ARGV = ("python3", "-c", LOCKS, *DPKG_LOCKS)
AUDIT = ("dpkg", "--audit")
UNAME = ("uname", "-r")
BOOT_IMAGES = ("find", "/boot", "-maxdepth", "1", "-name", "vmlinuz-*", "-printf", "%f\\n")
NEEDRESTART = ("needrestart", "-b")


def timer_argv(timer: str) -> tuple[str, ...]:
    return ("systemctl", "is-enabled", timer)


def index_argv(directory: str, name: str, minutes: int) -> tuple[str, ...]:
    """The index files' mtimes, each marked fresh or stale against `minutes` (stable output until
    the index ages past it, so a saved plan does not go stale every second)."""
    return ("find", directory, "-maxdepth", "1", "-name", name, "(", "-mmin", f"-{minutes}",
            "-printf", "%T@ fresh %f\\n", ")", "-o", "-printf", "%T@ stale %f\\n")


def apt_index(spec: UpdatesSpec) -> tuple[str, ...]:
    return index_argv("/var/lib/apt/lists", "*Release", spec.max_index_minutes)


def wanted_settings(spec: UpdatesSpec) -> dict[str, str | list[str]]:
    """What apt must show for the declared automatic updates (`automatic` not "off")."""
    wanted: dict[str, str | list[str]] = {key: "1" for key in PERIODIC}
    wanted[PATTERNS] = list(SECURITY_PATTERNS[:2] if spec.automatic == "security" else ALL_PATTERNS)
    wanted[LEGACY] = []
    wanted[REBOOT] = "false" if spec.reboot == "never" else "true"
    if spec.reboot_time:
        wanted[REBOOT_TIME] = spec.reboot_time
    return wanted


def ubuntu_settings(wanted: dict[str, str | list[str]], distribution: str) -> dict[str, str | list[str]]:
    if distribution == "ubuntu" and wanted[PATTERNS] != list(ALL_PATTERNS):
        return {**wanted, PATTERNS: list(SECURITY_PATTERNS[2:])}
    return wanted


def render_drop_in(settings: dict[str, str | list[str]]) -> str:
    lines = [DROP_IN_HEADER]
    for key, value in settings.items():
        if isinstance(value, list):
            lines.append(f"#clear {key};\n")
            if value:
                lines.append(f"{key} {{\n" + "".join(f'    "{item}";\n' for item in value) + "};\n")
        else:
            lines.append(f'{key} "{value}";\n')
    return "".join(lines)


def dump_lines(settings: dict[str, str | list[str]]) -> list[str]:
    """The lines `apt-config dump` prints for `settings` in force."""
    lines = []
    for key, value in settings.items():
        if isinstance(value, list):
            lines += [f'{key}:: "{item}";' for item in value]
        else:
            lines.append(f'{key} "{value}";')
    return lines


# ---- live ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AptLive:
    distribution: str
    config: dict[str, str | list[str]]
    drop_in: str | None
    packages: dict[str, tuple[str, str]]
    systemd: bool
    timers: dict[str, str]
    # None: unknown (the reason in `pending_unknown`).
    pending: list[Pending] | None
    pending_unknown: str | None
    reboot_required: bool
    reboot_packages: list[str]
    running_kernel: str
    newest_kernel: str | None
    stale_services: list[str] = field(default_factory=list)
    index_mtime: int | None = None
    index_fresh: bool = False


def distribution(facts: Facts) -> str:
    for line in (facts.file("/etc/os-release") or "").splitlines():
        key, _, value = line.partition("=")
        if key == "ID":
            return value.strip().strip("'\"")
    return ""


def refuse_busy(facts: Facts) -> None:
    """A held dpkg lock or an interrupted dpkg is an error: nothing may be planned on top of it."""
    holders = parse_lock_holders(facts.command(*LOCKS_ARGV).stdout)
    if holders:
        held = ", ".join(f"{path} (process {pid})" if pid > 0 else path for path, pid in holders.items())
        raise ProviderError(f"the package manager is busy: {held} is locked; plan again when it has finished")
    audit = facts.command(*AUDIT).stdout.strip()
    if audit:
        first = audit.splitlines()[0]
        raise ProviderError(f"dpkg was interrupted or left packages broken (dpkg --audit: {first!r}); "
                            "repair it (dpkg --configure -a) before converge plans updates")


def apt_live(spec: UpdatesSpec, facts: Facts) -> AptLive:
    refuse_busy(facts)
    config = parse_apt_config(facts.command(*APT_CONFIG).stdout)
    systemd = (facts.file(INIT) or "").strip() == "systemd"
    timers = {timer: facts.command(*timer_argv(timer)).stdout.strip() or "not-found" for timer in TIMERS}
    probe = facts.command(*PENDING_ARGV)
    pending = parse_pending(probe.stdout, "the pending-updates probe") if probe.ok else None
    services, _ = parse_needrestart(facts.command(*NEEDRESTART).stdout) if facts.which("needrestart") else ([], None)
    images = facts.command(*BOOT_IMAGES).stdout.split()
    mtime, fresh = parse_index(facts.command(*apt_index(spec)).stdout, "the apt index")
    return AptLive(
        distribution(facts), config, facts.file(DROP_IN), parse_dpkg_query(facts.command(*PACKAGES).stdout), systemd,
        timers, pending, None if probe.ok else probe.failure(), facts.file(REBOOT_REQUIRED) is not None,
        (facts.file(REBOOT_PACKAGES) or "").split(), facts.command(*UNAME).stdout.strip(), newest_kernel(images),
        services, mtime, fresh,
    )


# ---- the provider -------------------------------------------------------------------------------


class UpdatesProvider(Provider[UpdatesSpec, "AptLive | rhel.DnfLive"]):
    name = "updates"
    summary = "automatic updates, pending security updates, required reboots"
    spec_model = UpdatesSpec
    # First: every other layer's packages are what this one keeps current.
    apply_order = 10

    def presence_reads(self) -> Sequence[Read]:
        return [Which("apt-get"), Which("dnf"), Which("needrestart"), ReadFile("/etc/os-release")]

    def reads(self, spec: UpdatesSpec) -> Sequence[Read]:
        commands = [APT_CONFIG, PACKAGES, PENDING_ARGV, LOCKS_ARGV, AUDIT, UNAME, BOOT_IMAGES, NEEDRESTART, apt_index(spec),
                    *(timer_argv(timer) for timer in TIMERS)]
        files = [DROP_IN, INIT, REBOOT_REQUIRED, REBOOT_PACKAGES]
        return [*(RunCommand(argv) for argv in commands), *(ReadFile(path) for path in files), *rhel.reads(spec)]

    # ---- absent ---------------------------------------------------------------------------------

    def absent(self, facts: Facts) -> str | None:
        return None if facts.which("apt-get") or facts.which("dnf") else "neither apt-get nor dnf on this host"

    # ---- live -----------------------------------------------------------------------------------

    def live(self, spec: UpdatesSpec, facts: Facts) -> AptLive | rhel.DnfLive:
        return apt_live(spec, facts) if facts.which("apt-get") else rhel.dnf_live(spec, facts)

    # ---- diff -----------------------------------------------------------------------------------

    def diff(self, spec: UpdatesSpec, live: AptLive | rhel.DnfLive) -> ProviderPlan:
        if isinstance(live, rhel.DnfLive):
            return rhel.diff(self.name, spec, live)
        changes: list[Change] = []
        operations: list[Operation] = []
        if spec.automatic == "off":
            if live.drop_in is not None:
                changes.append(Change(self.name, "drop-in", DROP_IN, "remove", parse_apt_config_file(live.drop_in), None,
                                      ("converge's drop-in only; the distribution's files stay",)))
                operations.append(Remove(DROP_IN, undo=(restore(DROP_IN, live.drop_in),)))
        else:
            self._automatic(spec, live, changes, operations)
        if spec.pending == "install" and live.pending:
            self._install(live, changes, operations)
        return ProviderPlan(changes, operations)

    def _automatic(self, spec: UpdatesSpec, live: AptLive, changes: list[Change], operations: list[Operation]) -> None:
        wanted = ubuntu_settings(wanted_settings(spec), live.distribution)
        if not installed(live.packages, "unattended-upgrades"):
            changes.append(Change(self.name, "installed", "unattended-upgrades", "add", False, True))
            operations.append(Run((*APT_ENV, "apt-get", "install", "-y", "--no-install-recommends", *KEEP_CONFIG,
                                   "unattended-upgrades"), says="installed unattended-upgrades"))
        for key, value in wanted.items():
            current = effective(live.config, key)
            if not same(key, current, value):
                changes.append(Change(self.name, "apt", key, "update" if current not in (None, []) else "add", current, value,
                                      (f"in {DROP_IN}",)))
        content = render_drop_in(wanted)
        if content != live.drop_in:
            if not changes:
                changes.append(Change(self.name, "drop-in", DROP_IN, "update" if live.drop_in else "add",
                                      parse_apt_config_file(live.drop_in or ""), wanted,
                                      ("the values apt shows are right already",)))
            operations.append(Write(DROP_IN, content, undo=(restore(DROP_IN, live.drop_in),)))
            operations.append(Run(("sh", "-c", APT_CONFIG_SHOWS, "converge-apt-config-shows", *dump_lines(wanted)),
                                  says="apt-config dump shows the declared values"))
        disabled = [timer for timer, state in live.timers.items() if state != "enabled"]
        for timer in disabled:
            changes.append(Change(self.name, "timer", timer, "update", live.timers[timer], "enabled"))
        if disabled:
            now = ("--now",) if live.systemd else ()
            undo = tuple(Run(("systemctl", "disable", timer)) for timer in disabled if live.timers[timer] == "disabled")
            operations.append(Run(("systemctl", "enable", *now, *disabled), undo=undo))

    def _install(self, live: AptLive, changes: list[Change], operations: list[Operation]) -> None:
        pending = live.pending or []
        for update in pending:
            changes.append(Change(self.name, "package", update.package, "update", update.installed, update.candidate,
                                  ("security update",), extra={"origin": update.origin}))
        pins = [f"{update.package}={update.candidate}" for update in pending]
        install = ("apt-get", "install", "-y", "--only-upgrade", "--no-install-recommends", *KEEP_CONFIG, *pins)
        names = [update.package for update in pending]
        operations.append(Run(("sh", "-c", ONLY_LISTED, "converge-only-listed", *install[1:], "--", *names),
                              says="apt's simulation changes only the planned packages"))
        operations.append(Run((*APT_ENV, *install), says=f"installed {len(pins)} security update(s)"))
        pairs = [part for update in pending for part in (update.package, update.candidate)]
        operations.append(Run(("sh", "-c", INSTALLED_VERSIONS, "converge-installed-versions", *pairs),
                              says="dpkg shows the planned versions"))

    # ---- capture --------------------------------------------------------------------------------

    def capture_reads(self) -> Sequence[Read]:
        return self.reads(UpdatesSpec())

    def capture_more_reads(self, facts: Facts) -> Sequence[Read]:
        return []

    def capture(self, facts: Facts) -> Captured:
        live = self.live(UpdatesSpec(), facts)
        if isinstance(live, rhel.DnfLive):
            return rhel.captured(live)
        return apt_captured(live.config, installed(live.packages, "unattended-upgrades"), SECURITY_PATTERNS)

    # ---- warnings -------------------------------------------------------------------------------

    def warnings(self, spec: UpdatesSpec, live: AptLive | rhel.DnfLive) -> list[str]:
        if isinstance(live, rhel.DnfLive):
            return rhel.warnings(spec, live)
        found = []
        if live.pending is None:
            found.append(f"pending security updates unknown: {live.pending_unknown}")
        elif live.pending and spec.pending == "report":
            listed = ", ".join(f"{p.package} {p.installed} -> {p.candidate} ({p.origin})" for p in live.pending)
            found.append(f"{len(live.pending)} pending security update(s): {listed}")
        if not live.index_fresh:
            found.append(f"the package index is older than {spec.max_index_age} (apt-get update): pending updates are unknown")
        if live.reboot_required:
            found.append("reboot required" + (f" (by {', '.join(live.reboot_packages)})" if live.reboot_packages else ""))
        if live.newest_kernel and live.newest_kernel != live.running_kernel:
            found.append(f"running kernel {live.running_kernel}, newest installed {live.newest_kernel}: reboot to use it")
        if live.stale_services:
            found.append(f"services still running deleted libraries (needrestart): {', '.join(live.stale_services)}")
        if spec.automatic != "off" and not live.systemd:
            found.append("systemd is not running: its timers start nothing here; the cron job /etc/cron.daily/apt-compat does")
        if spec.automatic == "off" and apt_boolean(config_scalar(without_drop_in(live), PERIODIC[1]), False):
            found.append(f'automatic = "off", but the host\'s own configuration still enables unattended-upgrades '
                         f"({PERIODIC[1]})")
        return found


def effective(config: dict[str, str | list[str]], key: str) -> str | list[str] | None:
    return config_list(config, key) if key in (PATTERNS, LEGACY) else config_scalar(config, key)


def same(key: str, current: str | list[str] | None, wanted: str | list[str]) -> bool:
    if isinstance(wanted, list):
        return current == wanted
    if key in (REBOOT,):
        return apt_boolean(current if isinstance(current, str) else None, False) == apt_boolean(wanted, False)
    return current == wanted


def parse_apt_config_file(text: str) -> dict[str, str | list[str]]:
    """The settings of converge's own drop-in (written in a form close to apt-config dump's)."""
    settings: dict[str, str | list[str]] = {}
    key = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#clear "):
            settings[stripped[7:].rstrip(";")] = []
        elif stripped.endswith("{"):
            key = stripped[:-1].strip()
        elif stripped == "};":
            key = None
        elif key and stripped.startswith('"'):
            current = settings.get(key)
            settings[key] = [*(current if isinstance(current, list) else []), stripped.strip('";')]
        elif '"' in stripped and not stripped.startswith("//"):
            name, _, value = stripped.partition(" ")
            settings[name] = value.strip('";')
    return settings


def without_drop_in(live: AptLive) -> dict[str, str | list[str]]:
    """apt's configuration minus converge's drop-in, as far as scalars go (the drop-in is removed
    by the plan when automatic is off, so its values do not count)."""
    ours = parse_apt_config_file(live.drop_in or "")
    return {key: value for key, value in live.config.items() if key not in ours or ours[key] != value}
