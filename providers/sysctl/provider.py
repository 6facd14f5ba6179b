"""The sysctl provider: runtime values through `sysctl -w` (read back), persisted in a drop-in."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

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
    ReadGlob,
    Run,
    RunCommand,
    Side,
    Write,
    restore,
    shell_assignments,
)
from converge.providers.sysctl.capture import captured
from converge.providers.sysctl.parse import (
    container_signals,
    displayed,
    is_pattern,
    normalize,
    parse_sysctl_conf,
    read_only_at,
    read_only_mounts,
    unassigned_lines,
)
from converge.providers.sysctl.spec import KEY, WRITE_ONLY_KEYS, SysctlSpec

# ---- constants and reads ------------------------------------------------------------------------

# Sorts after systemd's 99-protect-links.conf and Debian's 99-sysctl.conf, so what converge
# persists is what the kernel gets at boot (files later in name order win).
DROP_IN = "/etc/sysctl.d/99-zz-converge.conf"
# Where systemd-sysctl and `sysctl --system` look, highest priority first: a file name in an
# earlier directory masks the same name in later ones; files apply in file-name order.
BOOT_DIRECTORIES = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")
# Read last by `sysctl --system` (and on Debian through the 99-sysctl.conf link).
SYSCTL_CONF = "/etc/sysctl.conf"
# Applied by an enabled ufw whenever it starts or reloads (IPT_SYSCTL in /etc/default/ufw),
# after systemd-sysctl: on Debian and Ubuntu it sets log_martians=0, among others.
UFW_SYSCTL_CONF = "/etc/ufw/sysctl.conf"
UFW_CONF = "/etc/ufw/ufw.conf"
LATE_FILES = (SYSCTL_CONF, UFW_SYSCTL_CONF, UFW_CONF)
PROC_SYS = "/proc/sys"
OSRELEASE = f"{PROC_SYS}/kernel/osrelease"
MOUNTINFO = "/proc/self/mountinfo"
# Containers (LXC/LXD, systemd-nspawn, docker, podman, a bare network namespace) share the kernel
# of their host. How converge tells it is in one, each signal alone enough (container_signals):
# - its network namespace is not PID 1's (`ip netns exec`, a netns test host). Not enough alone:
#   in a container with a PID namespace, PID 1 is the container's own init, in the same namespace;
# - PID 1's environment has `container=` (systemd-nspawn, LXC, podman set it), or the manager's
#   mark file exists (/run/.containerenv: podman; /.dockerenv: docker).
# A key of INITIAL_NAMESPACE_ONLY missing there (net.core.bpf_jit_*) is one the kernel keeps in
# the initial network namespace: not applicable, it is set on the container's host. Separately, and
# container or not, a key under a read-only mount of /proc/sys (LXC and docker mount it read-only,
# /proc/sys/net excepted; the deepest mount in /proc/self/mountinfo decides) cannot be written
# here: not applicable either. Both are warnings, never errors, and plan leaves the keys alone.
CONTAINER_PROBE = ("sh", "-c", "readlink /proc/self/ns/net /proc/1/ns/net; "
                   "tr '\\0' '\\n' < /proc/1/environ | grep '^container='; "
                   "for mark in /run/.containerenv /.dockerenv; do [ -e \"$mark\" ] && echo \"$mark\"; done; exit 0",
                   "converge-sysctl-container")
ON_THE_HOST = "set on the container's host"
# The net.* keys the kernel has in the initial network namespace only (the rest are per
# namespace): measured as the difference between the root namespace's /proc/sys/net and a new
# namespace's on Linux 6.1 and 6.18, interface directories (conf.IFACE, neigh.IFACE) left out.
# A missing key not in this list stays an error, in a container too (a typo, a missing module).
_GLOBAL_NET_KEYS = {
    "net.core": "bpf_jit_enable bpf_jit_harden bpf_jit_kallsyms bpf_jit_limit busy_poll busy_read default_qdisc "
                "dev_weight dev_weight_rx_bias dev_weight_tx_bias devconf_inherit_init_net fb_tunnels_only_for_init_net "
                "flow_limit_cpu_bitmap flow_limit_table_len gro_normal_batch high_order_alloc_disable max_skb_frags "
                "mem_pcpu_rsv message_burst message_cost netdev_budget netdev_budget_usecs netdev_max_backlog "
                "netdev_rss_key netdev_tstamp_prequeue netdev_unregister_timeout_secs rps_sock_flow_entries "
                "skb_defer_max warnings",
    "net.ipv4": "cipso_cache_bucket_size cipso_cache_enable cipso_rbm_optfmt cipso_rbm_strictvalid fib_sync_mem "
                "inet_peer_maxttl inet_peer_minttl inet_peer_threshold ipfrag_secret_interval tcp_available_ulp "
                "tcp_low_latency tcp_max_orphans tcp_mem udp_mem",
    "net.ipv4.route": "error_burst error_cost gc_elasticity gc_interval gc_min_interval gc_min_interval_ms gc_thresh "
                      "gc_timeout max_size redirect_load redirect_number redirect_silence",
    "net.ipv6": "calipso_cache_bucket_size calipso_cache_enable ip6frag_secret_interval mld_max_msf mld_qrv",
    "net.netfilter": "nf_log_all_netns",
    "net": "nf_conntrack_max",
}
INITIAL_NAMESPACE_ONLY = frozenset(f"{prefix}.{name}" for prefix, names in _GLOBAL_NET_KEYS.items() for name in names.split())
DROP_IN_HEADER = (
    "# Managed by converge: rewritten on every apply, local edits are lost.\n"
    "# Change the baseline instead.\n"
)
# Reads each key back after `sysctl -w`: the kernel may ignore a value and exit 0 (a key that is
# read-only in a container's network namespace). Arguments: key value key value ...
READ_BACK = r"""
fold() { printf '%s' "$*"; }
set -f
status=0
while [ "$#" -ge 2 ]; do
    if ! got=$(sysctl -n -- "$1" 2>&1); then
        printf '%s\n' "$got" >&2; status=1
    elif [ "$(fold $got)" != "$2" ]; then
        printf 'the kernel kept %s = %s, not %s\n' "$1" "$(fold $got)" "$2" >&2; status=1
    fi
    shift 2
done
exit "$status"
"""


def proc_path(key: str) -> str:
    return f"{PROC_SYS}/{key.replace('.', '/')}"


def boot_configuration_reads() -> list[Read]:
    return [ReadFile(DROP_IN), *(ReadFile(path) for path in LATE_FILES),
            *(ReadGlob(f"{directory}/*.conf") for directory in BOOT_DIRECTORIES)]


def render_drop_in(values: dict[str, str]) -> str:
    return DROP_IN_HEADER + "".join(f"{key} = {value}\n" for key, value in values.items())


# ---- live ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SysctlLive:
    runtime: dict[str, str]
    drop_in_text: str | None
    # Boot-time configuration: converge's drop-in, and the last value the files read before
    # and after it set (with the file, for the ones after, which win over the drop-in).
    drop_in: dict[str, str]
    set_before: dict[str, str]
    set_after: dict[str, tuple[str, str]]
    # Keys of the baseline this host cannot have or set (a container), with the reason: left alone.
    not_applicable: dict[str, str] = field(default_factory=dict)

    def persisted(self, key: str) -> str | None:
        """The value `key` gets at boot."""
        if key in self.set_after:
            return self.set_after[key][1]
        return self.drop_in[key] if key in self.drop_in else self.set_before.get(key)

    def persisted_without_drop_in(self, key: str) -> str | None:
        """The value `key` would get at boot were it not in the drop-in."""
        return self.set_after[key][1] if key in self.set_after else self.set_before.get(key)


def boot_files(facts: Facts) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(files read before converge's drop-in, files read after it), in boot order, without it."""
    by_name: dict[str, tuple[str, str]] = {}
    for directory in BOOT_DIRECTORIES:
        for path, text in facts.glob(f"{directory}/*.conf").items():
            by_name.setdefault(os.path.basename(path), (path, text))
    ours = os.path.basename(DROP_IN)
    before = [by_name[name] for name in sorted(by_name) if name < ours]
    after = [by_name[name] for name in sorted(by_name) if name > ours]
    ufw_enabled = shell_assignments(facts.file(UFW_CONF)).get("ENABLED", "").lower() == "yes"
    for path in (SYSCTL_CONF, UFW_SYSCTL_CONF) if ufw_enabled else (SYSCTL_CONF,):
        late = facts.file(path)
        if late is not None:
            after.append((path, late))
    return before, after


def _assignments(files: list[tuple[str, str]], keys: Sequence[str]) -> dict[str, tuple[str, str]]:
    """key -> (file, value) of the last of `files` to set each key (globs in files included)."""
    found: dict[str, tuple[str, str]] = {}
    for path, text in files:
        for pattern, value in parse_sysctl_conf(text).items():
            for key in fnmatch.filter(keys, pattern):
                found[key] = (path, value)
    return found


def runtime_values(facts: Facts, keys: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The runtime value of each of `keys`, and the keys this kernel does not have."""
    runtime: dict[str, str] = {}
    missing = []
    for key in keys:
        text = facts.file(proc_path(key))
        if text is None:
            missing.append(key)
        else:
            runtime[key] = normalize(text)
    return runtime, missing


def not_applicable_keys(facts: Facts, keys: Sequence[str], missing: Sequence[str]) -> dict[str, str]:
    """The keys of `keys` this host cannot set, with the reason; `missing`: the ones it lacks."""
    probe = facts.command(*CONTAINER_PROBE)
    signals = container_signals(probe.stdout) if probe.ok else []
    found = {}
    if signals:
        for key in missing:
            if key in INITIAL_NAMESPACE_ONLY:
                found[key] = (f"not applicable here: this host is a container ({'; '.join(signals)}), whose network "
                              f"namespace has no {key} (the initial namespace's only): {ON_THE_HOST}")
    # Only the mounts at or above /proc/sys or below it can hold a key: a host's other mounts (a
    # container host has hundreds) need not be looked at once per key.
    mounts = {point: read_only for point, read_only in read_only_mounts(facts.file(MOUNTINFO) or "").items()
              if point.startswith(PROC_SYS) or PROC_SYS.startswith(point.rstrip("/") + "/")}
    for key in keys:
        point = read_only_at(mounts, proc_path(key))
        if point is not None and key not in missing:
            found[key] = f"not applicable here: {point} is mounted read-only (a container): {ON_THE_HOST}"
    return found


def live_state(facts: Facts, runtime: dict[str, str]) -> SysctlLive:
    """The boot configuration of the keys of `runtime` around converge's drop-in, with their values."""
    before, after = boot_files(facts)
    keys = list(runtime)
    set_before = {key: value for key, (_, value) in _assignments(before, keys).items()}
    text = facts.file(DROP_IN)
    return SysctlLive(runtime, text, parse_sysctl_conf(text or ""), set_before, _assignments(after, keys))


def drop_in_content(spec: SysctlSpec, live: SysctlLive) -> dict[str, str]:
    """What the drop-in must hold: every key it holds already, and every key the rest of the boot
    configuration does not set to the desired value (it never repeats what the distribution
    already sets; a key a later file overrides is still written, for when that file goes)."""
    kept = {key: value for key, value in live.drop_in.items() if key in live.not_applicable}
    return kept | {key: wanted for key, wanted in spec.root.items()
                   if key in live.drop_in or live.persisted_without_drop_in(key) != wanted}


def applicable(spec: SysctlSpec, live: SysctlLive) -> SysctlSpec:
    """The baseline without the keys this host cannot set (they stay as they are, drop-in included)."""
    if not live.not_applicable:
        return spec
    return SysctlSpec.model_construct({key: value for key, value in spec.root.items() if key not in live.not_applicable})


# ---- the provider -------------------------------------------------------------------------------


class SysctlProvider(Provider[SysctlSpec, SysctlLive]):
    name = "sysctl"
    summary = "kernel parameters: runtime values and a persisted sysctl.d drop-in"
    spec_model = SysctlSpec
    # Last: enabling ufw (and other tools) sets sysctls of its own, which converge then corrects.
    apply_order = 90

    def presence_reads(self) -> Sequence[Read]:
        return [ReadFile(OSRELEASE)]

    def reads(self, spec: SysctlSpec) -> Sequence[Read]:
        return [*boot_configuration_reads(), *(ReadFile(proc_path(key)) for key in spec.root),
                ReadFile(MOUNTINFO), RunCommand(CONTAINER_PROBE)]

    # ---- absent ---------------------------------------------------------------------------------

    def absent(self, facts: Facts) -> str | None:
        return None if facts.file(OSRELEASE) is not None else f"no {PROC_SYS} on this host"

    # ---- live -----------------------------------------------------------------------------------

    def live(self, spec: SysctlSpec, facts: Facts) -> SysctlLive:
        runtime, missing = runtime_values(facts, list(spec.root))
        skipped = not_applicable_keys(facts, list(spec.root), missing)
        missing = [key for key in missing if key not in skipped]
        if missing:
            raise ProviderError(f"no such key on this host: {', '.join(missing)} (nothing under {PROC_SYS})")
        applicable = {key: value for key, value in runtime.items() if key not in skipped}
        state = live_state(facts, applicable)
        return replace(state, not_applicable=skipped)

    # ---- diff -----------------------------------------------------------------------------------

    def diff(self, spec: SysctlSpec, live: SysctlLive) -> ProviderPlan:
        spec = applicable(spec, live)
        content = drop_in_content(spec, live)
        changes = [change for key, wanted in spec.root.items() if (change := self._key_change(key, wanted, live, content))]
        for key, persisted in live.drop_in.items():
            if key not in spec.root and key not in live.not_applicable:
                changes.append(Change(
                    self.name, self.name, key, "remove", displayed(persisted), None,
                    (f"drop from {DROP_IN}; the runtime value stays as it is",),
                    {"persisted": Side(displayed(persisted), displayed(live.persisted_without_drop_in(key)))},
                ))
        return ProviderPlan(changes, self._operations(spec, live, content))

    def _key_change(self, key: str, wanted: str, live: SysctlLive, content: dict[str, str]) -> Change | None:
        runtime = live.runtime[key]
        # In sync when the drop-in holds what it must: a file read after it that sets
        # another value is beyond any change of ours, and is a warning instead.
        persisted_ok = content.get(key) == live.drop_in.get(key)
        if runtime == wanted and persisted_ok:
            return None
        notes: tuple[str, ...] = ()
        if runtime == wanted:
            notes = (f"not persisted: add to {DROP_IN}",)
        elif persisted_ok:
            notes = ("persisted already; runtime differs",)
        after_boot = live.set_after[key][1] if key in live.set_after else wanted
        return Change(
            self.name, self.name, key, "update", displayed(runtime), displayed(wanted), notes,
            {"runtime": Side(displayed(runtime), displayed(wanted)),
             "persisted": Side(displayed(live.persisted(key)), displayed(after_boot))},
        )

    @staticmethod
    def _operations(spec: SysctlSpec, live: SysctlLive, content: dict[str, str]) -> list[Operation]:
        operations: list[Operation] = []
        runtime_keys = [key for key, wanted in spec.root.items() if live.runtime[key] != wanted]
        if runtime_keys:
            undo = Run(("sysctl", "-w", *(f"{key}={live.runtime[key]}" for key in runtime_keys)),
                       says="runtime values put back")
            # sysctl exits 0 on some refusals ("Invalid argument" in a container): its words fail the step.
            operations.append(Run(("sysctl", "-w", *(f"{key}={spec.root[key]}" for key in runtime_keys)),
                                  says=f"set {len(runtime_keys)} runtime value(s)", fails_on=r"^sysctl: .*",
                                  undo=(undo,)))
            pairs = [part for key in runtime_keys for part in (key, spec.root[key])]
            operations.append(Run(("sh", "-c", READ_BACK, "converge-sysctl-read-back", *pairs),
                                  says=f"read back {len(runtime_keys)} runtime value(s)"))
        if content != live.drop_in:
            operations.append(Write(DROP_IN, render_drop_in(content), undo=(restore(DROP_IN, live.drop_in_text),)))
        return operations

    # ---- warnings -------------------------------------------------------------------------------

    def warnings(self, spec: SysctlSpec, live: SysctlLive) -> list[str]:
        return [
            f"{key}: {path} sets {value} and is applied after {DROP_IN} at boot, so {spec.root[key]} will not survive a reboot"
            for key, (path, value) in live.set_after.items() if value != spec.root[key]
        ]

    def not_applicable(self, spec: SysctlSpec, live: SysctlLive) -> dict[str, str]:
        return dict(live.not_applicable)

    # ---- capture -----------------------------------------------------------------------------

    def capture_reads(self) -> Sequence[Read]:
        return boot_configuration_reads()

    def capture_more_reads(self, facts: Facts) -> Sequence[Read]:
        return [ReadFile(proc_path(key)) for key in configured_keys(facts)[0] if key not in WRITE_ONLY_KEYS]

    def capture(self, facts: Facts) -> Captured:
        keys, patterns = configured_keys(facts)
        runtime, missing = runtime_values(facts, [key for key in keys if key not in WRITE_ONLY_KEYS])
        write_only = [key for key in keys if key in WRITE_ONLY_KEYS]
        before, after = boot_files(facts)
        files = [*before, (DROP_IN, facts.file(DROP_IN) or ""), *after]
        setting = _assignments(files, missing)
        unassigned = [(path, number, line) for path, text in files for number, line in unassigned_lines(text)]
        return captured(live_state(facts, runtime), {key: setting[key][0] for key in missing}, patterns, write_only,
                        unassigned)


def configured_keys(facts: Facts) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Keys the boot configuration sets by name (the admin's and the distribution's choices, the
    best record there is of what differs from the kernel's defaults), and the glob lines
    (file, pattern, value), which name no key."""
    before, after = boot_files(facts)
    files = [*before, (DROP_IN, facts.file(DROP_IN) or ""), *after]
    names: set[str] = set()
    patterns = []
    for path, text in files:
        for key, value in parse_sysctl_conf(text).items():
            if is_pattern(key):
                patterns.append((path, key, value))
            elif KEY.fullmatch(key):
                names.add(key)
    return sorted(names), patterns
