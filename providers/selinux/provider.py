"""The provider: reads, absent, live, diff (the changes; their operations are operations.py's), warnings, capture."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from converge.provider import (
    Captured,
    Change,
    CommandResult,
    Facts,
    Host,
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
    Which,
    execute,
    output_or_raise,
)
from converge.suggest import Suggestion

from . import capture, store
from .kernel import (
    ENFORCE,
    KernelState,
    boolean_path,
    kernel_reads,
    parse_kernel_state,
    relabel_argv,
    relabel_check,
    runtime_mode_operations,
)
from .operations import AUTORELABEL, CONFIG, DEVEL_MAKEFILE, MODULE_RECORDS, PRIORITY, change_name, plan_operations
from .parse import (
    count_relabelled,
    parse_config,
    parse_file_contexts,
    parse_module_kinds,
    parse_module_list,
    parse_module_record,
    parse_ports_local,
)
from .spec import FileContext, Port, SelinuxSpec

# ---- constants and reads
# libselinux's policy when the config names none (selinux_config.c, SELINUXDEFAULT).
DEFAULT_POLICY = "targeted"
# Each policy's store (managed by semodule/semanage) and installed files (read by the labelling tools).
STORE_GLOB = "/var/lib/selinux/*/active/seusers"
PORTS_LOCAL_GLOB = "/var/lib/selinux/*/active/ports.local"
BOOLEANS_LOCAL_GLOB = "/var/lib/selinux/*/active/booleans.local"
FILE_CONTEXTS_GLOB = "/etc/selinux/*/contexts/files/file_contexts"
FILE_CONTEXTS_LOCAL_GLOB = "/etc/selinux/*/contexts/files/file_contexts.local"
MODULE_RECORDS_GLOB = f"{MODULE_RECORDS}/*.sha256"
TOOLS = ("semanage", "semodule", "setsebool", "checkmodule", "semodule_package", "restorecon")

# The booleans' persistent values and the policy's ports, as `semanage boolean -l` and `semanage
# port -l` list them, read from the store with libsemanage (store.py: a tenth of their host CPU).
BOOLEANS_LIST = store.BOOLEANS
PORTS_LIST = store.PORTS
MODULES_LIST = RunCommand(("semodule", "-l", "-m"))
# Capture only: every local customisation, every module's priority.
EXPORT = RunCommand(("semanage", "export"))
MODULES_FULL_LIST = RunCommand(("semodule", "--list-modules=full"))

def _store_of(paths: Mapping[str, str], policy: str, root: str) -> str | None:
    """The text of the glob match belonging to `policy` (the glob's * is the policy name)."""
    return next((text for path, text in paths.items() if path.startswith(f"{root}/{policy}/")), None)


def installed_policies(facts: Facts) -> set[str]:
    """The policies with a store: `/var/lib/selinux/<policy>/active/seusers`."""
    return {Path(path).parts[4] for path in facts.glob(STORE_GLOB) if len(Path(path).parts) == 7}


@dataclass(frozen=True)
class SelinuxLive:
    config: str
    policy: str  # the policy the rest of the state was read from (the desired one, else the configured one)
    kernel: KernelState
    autorelabel_scheduled: bool
    booleans: dict[str, bool]  # persisted values, as `semanage boolean -l` lists them (store.py)
    fcontexts: dict[tuple[str, str], str | None]  # the local ones
    policy_fcontexts: set[tuple[str, str]]
    ports: dict[tuple[str, str], str | None]  # the local ones
    policy_ports: set[tuple[str, str]]  # defined by the policy itself, not (only) locally
    modules: dict[str, str]  # name -> the store's checksum
    module_records: dict[str, str]  # name -> the text of converge's record
    module_kinds: dict[str, str] = field(default_factory=dict)  # name -> pp or cil, at semodule's priority
    devel_makefile: bool = False  # selinux-policy-dev's Makefile, which builds reference-policy modules
    permissive: set[str] = field(default_factory=set)  # the local permissive domains
    # relabel root -> its files whose label differs from the policy's: (path, current, expected)
    label_drift: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    @property
    def config_mode(self) -> str | None:
        return parse_config(self.config).get("SELINUX")

    @property
    def config_policy(self) -> str | None:
        return parse_config(self.config).get("SELINUXTYPE")


class SelinuxProvider(Provider[SelinuxSpec, SelinuxLive]):
    name = "selinux"
    summary = "SELinux mode and policy, booleans, file contexts, ports and policy modules"
    spec_model = SelinuxSpec

    def presence_reads(self) -> Sequence[Read]:
        return [ReadFile(CONFIG), *map(Which, TOOLS), ReadGlob(STORE_GLOB)]

    def reads(self, spec: SelinuxSpec) -> Sequence[Read]:
        reads: list[Read] = [ReadFile(AUTORELABEL), *kernel_reads(spec.booleans)]
        if spec.booleans:
            reads.append(BOOLEANS_LIST)
        if spec.fcontexts:
            reads += [ReadGlob(FILE_CONTEXTS_GLOB), ReadGlob(FILE_CONTEXTS_LOCAL_GLOB)]
            if drift_roots(spec):
                reads.append(relabel_check(spec.policy, drift_roots(spec)))
        if spec.ports:
            reads += [ReadGlob(PORTS_LOCAL_GLOB), PORTS_LIST]
        if spec.modules:
            reads += [MODULES_LIST, MODULES_FULL_LIST, ReadGlob(MODULE_RECORDS_GLOB)]
        if spec.permissive_domains is not None and not spec.modules:
            reads.append(MODULES_FULL_LIST)
        if any(module.kind == "refpolicy" for module in spec.modules):
            reads.append(ReadFile(DEVEL_MAKEFILE))
        return reads

    def capture_reads(self) -> Sequence[Read]:
        """What is local, by kind; the second round reads what live needs for it."""
        return [ReadGlob(BOOLEANS_LOCAL_GLOB), ReadGlob(FILE_CONTEXTS_LOCAL_GLOB), ReadGlob(PORTS_LOCAL_GLOB),
                EXPORT, MODULES_FULL_LIST]

    def capture_more_reads(self, facts: Facts) -> Sequence[Read]:
        _, policy = self._captured_policy(facts)
        return self.reads(self._probe(facts, policy, second_round=False).spec) if policy else []

    # ---- absent
    def absent(self, facts: Facts) -> str | None:
        missing = [tool for tool in TOOLS if facts.which(tool) is None]
        if missing:
            return f"SELinux tools not installed (no {', '.join(missing)})"
        if facts.file(CONFIG) is None:
            return f"no SELinux policy installed (no {CONFIG})"
        if not installed_policies(facts):
            return "no SELinux policy store under /var/lib/selinux"
        return None

    # ---- live
    def live(self, spec: SelinuxSpec, facts: Facts) -> SelinuxLive:
        config = facts.file(CONFIG) or ""
        policy = spec.policy or parse_config(config).get("SELINUXTYPE") or DEFAULT_POLICY
        if policy not in installed_policies(facts):
            named = "" if spec.policy or parse_config(config).get("SELINUXTYPE") else \
                f"{CONFIG} sets no SELINUXTYPE=, so the SELinux tools use {DEFAULT_POLICY!r}, but "
            raise ProviderError(f"{named}policy {policy!r} is not installed (no store /var/lib/selinux/{policy})")
        booleans = store.parse_booleans(output_or_raise(facts, BOOLEANS_LIST.argv)) if spec.booleans else {}
        unknown = sorted(set(spec.booleans) - set(booleans))
        if unknown:
            raise ProviderError(f"no such boolean in policy {policy!r}: {', '.join(unknown)}")
        runtime_booleans = {path: text for path in map(boolean_path, spec.booleans) if (text := facts.file(path)) is not None}
        return SelinuxLive(
            config, policy, parse_kernel_state(facts.file(ENFORCE), runtime_booleans), facts.file(AUTORELABEL) is not None,
            booleans, *self._live_fcontexts(spec, facts, policy), *self._live_ports(spec, facts, policy),
            *self._live_modules(spec, facts),
            any(m.kind == "refpolicy" for m in spec.modules) and facts.file(DEVEL_MAKEFILE) is not None,
            self._live_permissive(spec, facts), live_label_drift(spec, facts))

    @staticmethod
    def _live_fcontexts(spec: SelinuxSpec, facts: Facts, policy: str) -> tuple[dict[tuple[str, str], str | None],
                                                                               set[tuple[str, str]]]:
        if not spec.fcontexts:
            return {}, set()
        local_path = f"/etc/selinux/{policy}/contexts/files/file_contexts.local"
        local = parse_file_contexts(_store_of(facts.glob(FILE_CONTEXTS_LOCAL_GLOB), policy, "/etc/selinux") or "", local_path)
        stock_path = f"/etc/selinux/{policy}/contexts/files/file_contexts"
        stock = set(parse_file_contexts(_store_of(facts.glob(FILE_CONTEXTS_GLOB), policy, "/etc/selinux") or "", stock_path))
        if not stock:
            raise ProviderError(f"no file contexts installed for policy {policy!r} ({stock_path})")
        return local, stock

    @staticmethod
    def _live_ports(spec: SelinuxSpec, facts: Facts, policy: str) -> tuple[dict[tuple[str, str], str | None],
                                                                          set[tuple[str, str]]]:
        if not spec.ports:
            return {}, set()
        local_text = _store_of(facts.glob(PORTS_LOCAL_GLOB), policy, "/var/lib/selinux") or ""
        local = parse_ports_local(local_text, f"/var/lib/selinux/{policy}/active/ports.local")
        # `semanage port -l` lists a local port and the policy's entry for the same port both.
        listed = store.parse_ports(output_or_raise(facts, PORTS_LIST.argv))
        return local, {key for key, count in listed.items() if count > (key in local)}

    @staticmethod
    def _live_permissive(spec: SelinuxSpec, facts: Facts) -> set[str]:
        """`semanage permissive -a DOMAIN` installs a CIL module `permissive_DOMAIN` at semodule's priority."""
        if spec.permissive_domains is None:
            return set()
        kinds = parse_module_kinds(output_or_raise(facts, MODULES_FULL_LIST.argv), int(PRIORITY))
        return {name.removeprefix("permissive_") for name in kinds if name.startswith("permissive_")}

    @staticmethod
    def _live_modules(spec: SelinuxSpec, facts: Facts) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        if not spec.modules:
            return {}, {}, {}
        records = {Path(path).stem: text for path, text in facts.glob(MODULE_RECORDS_GLOB).items()}
        kinds = parse_module_kinds(output_or_raise(facts, MODULES_FULL_LIST.argv), int(PRIORITY))
        return parse_module_list(output_or_raise(facts, MODULES_LIST.argv)), records, kinds

    # ---- diff: changes and operations
    def diff(self, spec: SelinuxSpec, live: SelinuxLive) -> ProviderPlan:
        booleans = self._boolean_changes(spec, live)
        records = [*self._record_changes("fcontext", spec.fcontexts, live.fcontexts),
                   *self._record_changes("port", spec.ports, live.ports), *self._permissive_changes(spec, live)]
        modules = self._module_changes(spec, live)
        wanted = {module.name: module for module in spec.modules}
        unbuildable = [c.name for c in modules if c.action != "remove" and wanted[c.name].kind == "refpolicy"]
        if unbuildable and not live.devel_makefile:
            raise ProviderError(
                f"{', '.join(unbuildable)}: a reference-policy module (policy_module) is built with {DEVEL_MAKEFILE}, "
                "which this host lacks: install selinux-policy-dev (Debian, Ubuntu; selinux-policy-devel on Fedora, "
                "RHEL), or declare the module's prebuilt .pp")
        drift = drift_changes(spec, live, records)
        changes = [*self._mode_changes(spec, live), *booleans, *records, *modules, *drift]
        return ProviderPlan(changes, [*plan_operations(spec, live, booleans, records, modules),
                                      *drift_operations(live, drift)])

    def _mode_changes(self, spec: SelinuxSpec, live: SelinuxLive) -> list[Change]:
        changes = []
        runtime, persisted, wanted = live.kernel.mode, live.config_mode, spec.mode
        setenforce = bool(wanted and runtime_mode_operations(live.kernel, wanted))
        if wanted and (persisted != wanted or setenforce):
            notes = []
            if persisted != wanted:
                notes.append(f"SELINUX={wanted} in {CONFIG}")
                if runtime != wanted and "disabled" in (runtime, wanted):
                    notes.append("reboot required: SELinux cannot be turned on or off at runtime")
                elif setenforce:
                    notes.append("runtime too (setenforce)")
                if wanted != "disabled" and persisted == "disabled" and not live.autorelabel_scheduled:
                    notes.append(f"schedules a full relabel at the next boot ({AUTORELABEL})")
            else:
                notes.append("runtime only (setenforce)")
            sides = {"runtime": Side(runtime, wanted if setenforce else runtime), "persisted": Side(persisted, wanted)}
            changes.append(Change(self.name, self.name, "mode", "update", persisted, wanted, tuple(notes), sides))
        if spec.policy and live.config_policy != spec.policy:
            changes.append(Change(self.name, self.name, "policy", "update", live.config_policy, spec.policy,
                                  (f"SELINUXTYPE={spec.policy} in {CONFIG}", "reboot required to load it")))
        return changes

    def _boolean_changes(self, spec: SelinuxSpec, live: SelinuxLive) -> list[Change]:
        changes = []
        for name, wanted in spec.booleans.items():
            persisted, runtime = live.booleans[name], live.kernel.booleans.get(name)
            if persisted == wanted and runtime in (None, wanted):
                continue
            notes = ("persistent already; runtime differs",) if persisted == wanted else ()
            # setsebool -P sets the runtime value too, where the kernel has SELinux (None: it has not).
            sides = {"runtime": Side(runtime, None if runtime is None else wanted), "persisted": Side(persisted, wanted)}
            changes.append(Change(self.name, "boolean", name, "update", persisted, wanted, notes, sides))
        return changes

    def _record_changes(
        self, kind: str, declared: Sequence[FileContext | Port], local: Mapping[tuple[str, str], str | None]
    ) -> list[Change]:
        changes = []
        for item in declared:
            current, name = local.get(item.key), change_name(kind, item.key)
            if item.ensure == "absent":
                if item.key in local:
                    changes.append(Change(self.name, kind, name, "remove", current, None, ("local customisation removed",)))
            elif item.key not in local:
                changes.append(Change(self.name, kind, name, "add", None, item.type))
            elif current != item.type:
                changes.append(Change(self.name, kind, name, "update", current, item.type))
        return changes

    def _permissive_changes(self, spec: SelinuxSpec, live: SelinuxLive) -> list[Change]:
        if spec.permissive_domains is None:
            return []
        wanted = set(spec.permissive_domains)
        return [*(Change(self.name, "permissive", domain, "add", None, "permissive", ("semanage permissive -a",))
                  for domain in spec.permissive_domains if domain not in live.permissive),
                *(Change(self.name, "permissive", domain, "remove", "permissive", None,
                         ("not declared: enforcing again (semanage permissive -d)",))
                  for domain in sorted(live.permissive - wanted))]

    def _module_changes(self, spec: SelinuxSpec, live: SelinuxLive) -> list[Change]:
        changes = []
        for module in spec.modules:
            installed = live.modules.get(module.name)
            where = f"{MODULE_RECORDS}/{module.name}.sha256"
            record = parse_module_record(live.module_records.get(module.name, ""), where)
            if module.ensure == "absent":
                if installed:
                    changes.append(Change(self.name, "module", module.name, "remove", installed, None, ("semodule -r",)))
            elif installed is None:
                changes.append(Change(self.name, "module", module.name, "add", None, module.source_hash,
                                      (f"from {module.kind} source",)))
            elif record.get("source") != module.source_hash:
                notes = ("source changed",) if record else ("installed, but not by converge",)
                changes.append(Change(self.name, "module", module.name, "update", record.get("source"), module.source_hash,
                                      notes))
            elif record.get("module") != installed:
                changes.append(Change(self.name, "module", module.name, "update", installed, module.source_hash,
                                      ("module in the store was replaced since converge installed it",)))
        return changes

    # ---- warnings
    def warnings(self, spec: SelinuxSpec, live: SelinuxLive) -> list[str]:
        if spec.mode and spec.mode != "disabled" and live.kernel.mode == "disabled" and live.config_mode == spec.mode:
            return [f"SELinux is disabled in the running kernel: {spec.mode} takes effect after a reboot with SELinux enabled"]
        if spec.mode == "disabled" and live.kernel.mode != "disabled" and live.config_mode == "disabled":
            return ["SELinux is still enabled in the running kernel: it is disabled at the next reboot"]
        return []

    # ---- apply: the plan's operations, with restorecon's count added to what it says
    def apply(self, host: Host, plan: ProviderPlan) -> list[str]:
        counting = _RelabelCount(host)
        done = execute(counting, plan.operations)
        return [f"{line}: relabelled {counting.relabelled} file(s)" if line.startswith("restorecon -R") else line
                for line in done]

    # ---- capture (the choices are capture.py's, on what live reads)
    @staticmethod
    def _captured_policy(facts: Facts) -> tuple[str, str | None]:
        """The policy the tools use (the config's, else libselinux's default), and it again if installed."""
        policy = parse_config(facts.file(CONFIG) or "").get("SELINUXTYPE") or DEFAULT_POLICY
        return policy, capture.configured_policy(policy, installed_policies(facts))

    @staticmethod
    def _probe(facts: Facts, policy: str, *, second_round: bool) -> capture.Probe:
        def local(glob: str) -> str:
            return _store_of(facts.glob(glob), policy, glob.split("/*/", maxsplit=1)[0]) or ""

        first = capture.probe(local(BOOLEANS_LOCAL_GLOB), local(FILE_CONTEXTS_LOCAL_GLOB), local(PORTS_LOCAL_GLOB), None, True)
        if not second_round:
            return first
        listed = output_or_raise(facts, BOOLEANS_LIST.argv) if first.spec.booleans else ""
        stock = local(FILE_CONTEXTS_GLOB) if first.spec.fcontexts else ""
        return capture.probe(local(BOOLEANS_LOCAL_GLOB), local(FILE_CONTEXTS_LOCAL_GLOB), local(PORTS_LOCAL_GLOB),
                             store.parse_booleans(listed), bool(stock.strip()))

    def capture(self, facts: Facts) -> Captured:
        policy, installed = self._captured_policy(facts)
        if installed is None:
            return capture.uninstalled(policy, bool(parse_config(facts.file(CONFIG) or "").get("SELINUXTYPE")))
        probe = self._probe(facts, installed, second_round=True)
        exported, modules = facts.command(*EXPORT.argv), facts.command(*MODULES_FULL_LIST.argv)
        return capture.captured_table(self.live(probe.spec, facts), probe, exported.stdout if exported.ok else None,
                                      modules.stdout if modules.ok else None)

    # suggest (converge.suggest.Suggesting): proposals from AVC denials, in providers/selinux/suggest.py
    def suggest_reads(self, spec: SelinuxSpec) -> Sequence[Read]:
        from . import suggest

        return suggest.suggest_reads()

    def suggest(self, spec: SelinuxSpec, facts: Facts, since: float | None) -> list[Suggestion]:
        from . import suggest

        policy = spec.policy or parse_config(facts.file(CONFIG) or "").get("SELINUXTYPE") or DEFAULT_POLICY
        return suggest.suggest(policy, dict(spec.booleans), facts, since, "")


# ---- label drift: files under a managed file context whose label is not the policy's. A change of
# its own (`relabel N files`) for each relabel root whose file contexts this plan leaves as they are
# (a changed one is relabelled after its import); the kernel part (restorecon, else setfiles) is kernel.py's.
WOULD_RELABEL = re.compile(r"^Would relabel (.+) from (\S+) to (\S+)$")
SHOWN_FILES = 3


def drift_roots(spec: SelinuxSpec) -> list[str]:
    return sorted({fcontext.relabel_root() for fcontext in spec.fcontexts if fcontext.ensure == "present"})


def live_label_drift(spec: SelinuxSpec, facts: Facts) -> dict[str, list[tuple[str, str, str]]]:
    roots = drift_roots(spec)
    if not spec.fcontexts or not roots:
        return {}
    check = relabel_check(spec.policy, roots)
    result = facts.command(*check.argv)
    if not result.ok:
        reason = result.stderr.strip() or result.stdout.strip()
        raise ProviderError(f"checking the labels under {', '.join(roots)} failed: {reason}")
    drift: dict[str, list[tuple[str, str, str]]] = {}
    for line in result.stdout.split("\n"):
        found = WOULD_RELABEL.match(line.strip())
        if found:
            path = found.group(1)
            root = max((r for r in roots if path == r or path.startswith(r.rstrip("/") + "/")), key=len, default=None)
            if root is not None:
                drift.setdefault(root, []).append((path, found.group(2), found.group(3)))
    return drift


def drift_changes(spec: SelinuxSpec, live: SelinuxLive, records: Sequence[Change]) -> list[Change]:
    changed = {c.name for c in records if c.kind == "fcontext"}
    # the import's own restorecon relabels these
    relabelled = {f.relabel_root() for f in spec.fcontexts if change_name("fcontext", f.key) in changed}
    changes = []
    for root, files in sorted(live.label_drift.items()):
        if root in relabelled:
            continue
        shown = [f"{path}: {_type_of(now)} -> {_type_of(then)}" for path, now, then in files[:SHOWN_FILES]]
        more = [f"... and {len(files) - SHOWN_FILES} more"] if len(files) > SHOWN_FILES else []
        changes.append(Change("selinux", "relabel", root, "update", len(files), 0,
                              (f"relabel {len(files)} file(s) whose label is not the policy's", *shown, *more)))
    return changes


def _type_of(context: str) -> str:
    parts = context.split(":")
    return parts[2] if len(parts) > 2 else context


def drift_operations(live: SelinuxLive, drift: Sequence[Change]) -> list[Operation]:
    """One relabel of every drifted root, last; nothing to undo (it puts the policy's labels back)."""
    roots = [change.name for change in drift]
    if not roots:
        return []
    count = sum(len(live.label_drift[root]) for root in roots)
    return [Run(relabel_argv(live.kernel, live.policy, roots), says=f"relabelled {count} file(s) under {', '.join(roots)}")]


class _RelabelCount(Host):
    """The host apply runs on, counting the files restorecon says it relabelled; nothing else changes."""

    def __init__(self, host: Host) -> None:
        super().__init__(host.name, host.target)
        self._host, self.relabelled = host, 0

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True) -> CommandResult:
        result = self._host.run(argv, input=input, check=check)
        if list(argv[:1]) in (["restorecon"], ["setfiles"]):
            self.relabelled += count_relabelled(result.stdout)
        return result

    def gather(self, reads: Iterable[Read]) -> Facts:
        return self._host.gather(reads)

    def read_file(self, path: str) -> str | None:
        return self._host.read_file(path)

    def write_file(self, path: str, content: str, *, mode: int = 0o644) -> str | None:
        return self._host.write_file(path, content, mode=mode)

    def remove_file(self, path: str) -> str | None:
        return self._host.remove_file(path)

    def lock(self, holder: str, wait: float = 0.0) -> None:
        self._host.lock(holder, wait)
