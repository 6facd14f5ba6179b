"""The provider: reads, live state, diff and apply."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from converge.errors import ProviderError
from converge.hosts import Host
from converge.plan import Change
from converge.provider import Captured, Provider
from converge.providers.selinux.capture import CaptureInputs, captured_table
from converge.providers.selinux.kernel import (
    SELINUXFS,
    KernelState,
    boolean_path,
    kernel_reads,
    parse_kernel_state,
    set_runtime_mode,
)
from converge.providers.selinux.parse import (
    edit_config,
    parse_boolean_list,
    parse_booleans_local,
    parse_config,
    parse_export,
    parse_file_contexts,
    parse_module_list,
    parse_module_priorities,
    parse_module_record,
    parse_port_list,
    parse_ports_local,
)
from converge.providers.selinux.spec import FILE_TYPE_FLAG, POLICY_NAME, FileContext, Module, Port, SelinuxSpec
from converge.reads import Facts, Read, ReadFile, ReadGlob, RunCommand, Which

CONFIG = "/etc/selinux/config"
# Each policy's store (managed by semodule/semanage) and installed files (read by the labelling tools).
STORE_GLOB = "/var/lib/selinux/*/active/seusers"
PORTS_LOCAL_GLOB = "/var/lib/selinux/*/active/ports.local"
FILE_CONTEXTS_GLOB = "/etc/selinux/*/contexts/files/file_contexts"
FILE_CONTEXTS_LOCAL_GLOB = "/etc/selinux/*/contexts/files/file_contexts.local"
# What converge installed for each module: the source's hash and the store's checksum of the result,
# so a changed source and a module replaced behind converge's back are both noticed.
MODULE_RECORDS = "/var/lib/converge/selinux/modules"
AUTORELABEL = "/.autorelabel"
TOOLS = ("semanage", "semodule", "setsebool", "checkmodule", "semodule_package", "restorecon")

BOOLEANS_LIST = RunCommand(("semanage", "boolean", "-l"))
PORTS_LIST = RunCommand(("semanage", "port", "-l"))
MODULES_LIST = RunCommand(("semodule", "-l", "-m"))
# Every policy store, listed by a command: an SSH host's ReadGlob takes wildcards only in the last component.
STORES_LIST = RunCommand(("find", "/var/lib/selinux", "-mindepth", "3", "-maxdepth", "3", "-type", "f", "-path", STORE_GLOB))
# Capture only: the store's local booleans, every local customisation, every module's priority.
BOOLEANS_LOCAL_GLOB = "/var/lib/selinux/*/active/booleans.local"
EXPORT = RunCommand(("semanage", "export"))
MODULES_FULL_LIST = RunCommand(("semodule", "--list-modules=full"))


def _installed_policies(facts: Facts) -> set[str]:
    """The policies with a store, from STORES_LIST's `/var/lib/selinux/<policy>/active/seusers` lines."""
    return {Path(line).parts[4] for line in facts.command(*STORES_LIST.argv).stdout.splitlines() if len(Path(line).parts) == 7}


def _store_of(paths: Mapping[str, str], policy: str, root: str) -> str | None:
    """The text of the glob match belonging to `policy` (the glob's * is the policy name)."""
    return next((text for path, text in paths.items() if path.startswith(f"{root}/{policy}/")), None)


@dataclass(frozen=True)
class SelinuxLive:
    config: str
    policy: str  # the policy the rest of the state was read from (the desired one, else the configured one)
    kernel: KernelState
    autorelabel_scheduled: bool
    booleans: dict[str, bool]
    fcontexts: dict[tuple[str, str], str | None]
    policy_fcontexts: set[tuple[str, str]]
    ports: dict[tuple[str, str], str | None]
    defined_ports: set[tuple[str, str]]
    modules: dict[str, str]
    module_records: dict[str, dict[str, str]]

    @property
    def config_mode(self) -> str | None:
        return parse_config(self.config).get("SELINUX")

    @property
    def config_policy(self) -> str | None:
        return parse_config(self.config).get("SELINUXTYPE")


def _command_output(facts: Facts, read: RunCommand) -> str:
    result = facts.command(*read.argv)
    if not result.ok:
        raise ProviderError(f"`{' '.join(read.argv)}` failed: {result.failure()}")
    return result.stdout


def _resource(kind: str, key: tuple[str, str]) -> str:
    name, variant = key
    if kind == "port":
        return f"port:{name}/{variant}"
    return f"fcontext:{name}" + ("" if variant == "all" else f" ({variant})")


class SelinuxProvider(Provider[SelinuxSpec, SelinuxLive]):
    name = "selinux"
    summary = "SELinux mode and policy, booleans, file contexts, ports and policy modules"
    spec_model = SelinuxSpec

    def reads(self, spec: SelinuxSpec) -> Sequence[Read]:
        reads: list[Read] = [ReadFile(CONFIG), ReadGlob(STORE_GLOB), ReadFile(AUTORELABEL), *map(Which, TOOLS),
                             *kernel_reads(spec.booleans)]
        if spec.booleans:
            reads.append(BOOLEANS_LIST)
        if spec.fcontexts:
            reads += [ReadGlob(FILE_CONTEXTS_GLOB), ReadGlob(FILE_CONTEXTS_LOCAL_GLOB)]
        if spec.ports:
            reads += [ReadGlob(PORTS_LOCAL_GLOB), PORTS_LIST]
        if spec.modules:
            reads += [MODULES_LIST, ReadGlob(f"{MODULE_RECORDS}/*.sha256")]
        return reads

    def presence_reads(self) -> Sequence[Read]:
        return [ReadFile(CONFIG), *map(Which, TOOLS), STORES_LIST]

    def absent(self, facts: Facts) -> str | None:
        missing = [tool for tool in TOOLS if facts.which(tool) is None]
        if missing:
            return f"SELinux tools not installed (no {', '.join(missing)})"
        if facts.file(CONFIG) is None:
            return f"no SELinux policy installed (no {CONFIG})"
        if not _installed_policies(facts):
            return "no SELinux policy store under /var/lib/selinux"
        return None

    def live(self, spec: SelinuxSpec, facts: Facts) -> SelinuxLive:
        config = facts.file(CONFIG) or ""
        policy = spec.policy or parse_config(config).get("SELINUXTYPE") or ""
        if _store_of(facts.glob(STORE_GLOB), policy, "/var/lib/selinux") is None:
            raise ProviderError(f"policy {policy!r} is not installed (no store /var/lib/selinux/{policy})")
        booleans = parse_boolean_list(_command_output(facts, BOOLEANS_LIST)) if spec.booleans else {}
        unknown = sorted(set(spec.booleans) - set(booleans))
        if unknown:
            raise ProviderError(f"no such boolean in policy {policy!r}: {', '.join(unknown)}")
        fcontexts, policy_fcontexts, ports, defined_ports, modules, records = {}, set(), {}, set(), {}, {}
        if spec.fcontexts:
            etc = f"/etc/selinux/{policy}"
            fcontexts = parse_file_contexts(_store_of(facts.glob(FILE_CONTEXTS_LOCAL_GLOB), policy, "/etc/selinux") or "")
            policy_fcontexts = set(parse_file_contexts(_store_of(facts.glob(FILE_CONTEXTS_GLOB), policy, "/etc/selinux") or ""))
            if not policy_fcontexts:
                raise ProviderError(f"no file contexts installed for policy {policy!r} ({etc}/contexts/files/file_contexts)")
        if spec.ports:
            ports = parse_ports_local(_store_of(facts.glob(PORTS_LOCAL_GLOB), policy, "/var/lib/selinux") or "")
            defined_ports = parse_port_list(_command_output(facts, PORTS_LIST))
        if spec.modules:
            modules = parse_module_list(_command_output(facts, MODULES_LIST))
            record_files = facts.glob(f"{MODULE_RECORDS}/*.sha256")
            records = {Path(path).stem: parse_module_record(text) for path, text in record_files.items()}
        runtime_booleans = {path: text for path in map(boolean_path, spec.booleans) if (text := facts.file(path)) is not None}
        kernel = parse_kernel_state(facts.file(f"{SELINUXFS}/enforce"), runtime_booleans)
        return SelinuxLive(config, policy, kernel, facts.file(AUTORELABEL) is not None, booleans,
                           fcontexts, policy_fcontexts, ports, defined_ports, modules, records)

    can_capture = True

    def capture_reads(self) -> Sequence[Read]:
        # Which booleans are set locally is known only in the second round: a capture (rare, unlike
        # a plan) reads every runtime boolean once.
        return [*kernel_reads(()), ReadGlob(f"{SELINUXFS}/booleans/*"), EXPORT, MODULES_FULL_LIST]

    @staticmethod
    def _captured_policy(facts: Facts) -> str | None:
        """The configured policy, if its name is safe to put in a path and its store exists."""
        policy = parse_config(facts.file(CONFIG) or "").get("SELINUXTYPE") or ""
        return policy if POLICY_NAME.fullmatch(policy) and policy in _installed_policies(facts) else None

    @staticmethod
    def _exported_kinds(facts: Facts) -> dict[str, list[str]] | None:
        """Local customisations by kind (`semanage export`); None when it failed."""
        exported = facts.command(*EXPORT.argv)
        return parse_export(exported.stdout) if exported.ok else None

    def capture_more_reads(self, facts: Facts) -> Sequence[Read]:
        """The configured policy's local state, by exact path (an SSH host globs only the last
        component); its boolean listing and stock file contexts only when there is something local."""
        policy = self._captured_policy(facts)
        if policy is None:
            return []
        kinds = self._exported_kinds(facts)
        local_files = (BOOLEANS_LOCAL_GLOB, FILE_CONTEXTS_LOCAL_GLOB, PORTS_LOCAL_GLOB)
        more: list[Read] = [ReadFile(path.replace("*", policy)) for path in local_files]
        if kinds is None or kinds.get("boolean"):
            more.append(BOOLEANS_LIST)
        if kinds is None or kinds.get("fcontext"):
            more.append(ReadFile(FILE_CONTEXTS_GLOB.replace("*", policy)))
        return more

    def capture(self, facts: Facts) -> Captured:
        config = parse_config(facts.file(CONFIG) or "")
        policy = self._captured_policy(facts)
        if policy is None:
            unknown_kernel = KernelState("disabled", {})  # not read: nothing is captured without the policy
            return captured_table(CaptureInputs(config.get("SELINUX"), config.get("SELINUXTYPE"), False, unknown_kernel))

        def local(pattern: str) -> str:
            return facts.file(pattern.replace("*", policy)) or ""

        kinds, modules = self._exported_kinds(facts), facts.command(*MODULES_FULL_LIST.argv)
        local_booleans = parse_booleans_local(local(BOOLEANS_LOCAL_GLOB))
        local_fcontexts = parse_file_contexts(local(FILE_CONTEXTS_LOCAL_GLOB))
        # Read in the second round only when `semanage export` showed something local to check them against.
        listed = facts.command(*BOOLEANS_LIST.argv) if kinds is None or kinds.get("boolean") else None
        stock_fcontexts = local(FILE_CONTEXTS_GLOB) if kinds is None or kinds.get("fcontext") else ""
        return captured_table(CaptureInputs(
            mode=config.get("SELINUX"),
            policy=policy,
            policy_installed=True,
            kernel=parse_kernel_state(facts.file(f"{SELINUXFS}/enforce"), facts.glob(f"{SELINUXFS}/booleans/*")),
            local_booleans=local_booleans,
            listed_booleans=parse_boolean_list(listed.stdout) if listed and listed.ok else None,
            local_fcontexts=local_fcontexts,
            policy_has_fcontexts=bool(parse_file_contexts(stock_fcontexts)),
            local_ports=parse_ports_local(local(PORTS_LOCAL_GLOB)),
            exported=kinds,
            module_priorities=parse_module_priorities(modules.stdout) if modules.ok else None,
        ))

    def diff(self, spec: SelinuxSpec, live: SelinuxLive) -> list[Change]:
        return [*self._mode_changes(spec, live), *self._boolean_changes(spec, live),
                *self._record_changes("fcontext", spec.fcontexts, live.fcontexts),
                *self._record_changes("port", spec.ports, live.ports), *self._module_changes(spec, live)]

    def _mode_changes(self, spec: SelinuxSpec, live: SelinuxLive) -> list[Change]:
        changes = []
        runtime, persistent, wanted = live.kernel.mode, live.config_mode, spec.mode
        if wanted and persistent != wanted:
            notes = [f"SELINUX={wanted} in {CONFIG}"]
            if wanted == "disabled" or runtime == "disabled":
                notes.append("reboot required: SELinux cannot be turned on or off at runtime")
            elif runtime != wanted:
                notes.append("runtime too (setenforce)")
            if wanted != "disabled" and persistent == "disabled" and not live.autorelabel_scheduled:
                notes.append(f"schedules a full relabel at the next boot ({AUTORELABEL})")
            changes.append(Change(self.name, "mode", "update", persistent, wanted, tuple(notes), extra={"runtime": runtime}))
        elif wanted and "disabled" not in (runtime, wanted) and runtime != wanted:
            changes.append(Change(self.name, "mode", "update", runtime, wanted, ("runtime only (setenforce)",),
                                  extra={"persistent": persistent}))
        if spec.policy and live.config_policy != spec.policy:
            changes.append(Change(self.name, "policy", "update", live.config_policy, spec.policy,
                                  (f"SELINUXTYPE={spec.policy} in {CONFIG}", "reboot required to load it")))
        return changes

    def _boolean_changes(self, spec: SelinuxSpec, live: SelinuxLive) -> list[Change]:
        changes = []
        for name, wanted in spec.booleans.items():
            persistent, runtime = live.booleans[name], live.kernel.booleans.get(name)
            if persistent == wanted and runtime in (None, wanted):
                continue
            notes = ("persistent already; runtime differs",) if persistent == wanted else ()
            changes.append(Change(self.name, f"boolean:{name}", "update", persistent, wanted, notes, extra={"runtime": runtime}))
        return changes

    def _record_changes(
        self, kind: str, declared: Sequence[FileContext | Port], local: Mapping[tuple[str, str], str | None]
    ) -> list[Change]:
        changes = []
        for item in declared:
            current = local.get(item.key)
            resource = _resource(kind, item.key)
            if item.ensure == "absent":
                if item.key in local:
                    changes.append(Change(self.name, resource, "remove", current, None, ("local customisation removed",)))
            elif item.key not in local:
                changes.append(Change(self.name, resource, "add", None, item.type))
            elif current != item.type:
                changes.append(Change(self.name, resource, "update", current, item.type))
        return changes

    def _module_changes(self, spec: SelinuxSpec, live: SelinuxLive) -> list[Change]:
        changes = []
        for module in spec.modules:
            installed, record = live.modules.get(module.name), live.module_records.get(module.name, {})
            resource = f"module:{module.name}"
            if module.ensure == "absent":
                if installed:
                    changes.append(Change(self.name, resource, "remove", installed, None, ("semodule -r",)))
            elif installed is None:
                changes.append(Change(self.name, resource, "add", None, module.source_hash, (f"from {module.kind} source",)))
            elif record.get("source") != module.source_hash:
                changes.append(Change(self.name, resource, "update", record.get("source", "(not installed by converge)"),
                                      module.source_hash, ("source changed",)))
            elif record.get("module") != installed:
                changes.append(Change(self.name, resource, "update", installed, module.source_hash,
                                      ("module in the store was replaced since converge installed it",)))
        return changes

    def warnings(self, spec: SelinuxSpec, live: SelinuxLive) -> list[str]:
        if spec.mode and spec.mode != "disabled" and live.kernel.mode == "disabled" and live.config_mode == spec.mode:
            return [f"SELinux is disabled in the running kernel: {spec.mode} takes effect after a reboot with SELinux enabled"]
        if spec.mode == "disabled" and live.kernel.mode != "disabled" and live.config_mode == "disabled":
            return ["SELinux is still enabled in the running kernel: it is disabled at the next reboot"]
        return []

    def apply(self, host: Host, spec: SelinuxSpec, live: SelinuxLive, changes: Sequence[Change]) -> list[str]:
        by_kind: dict[str, list[Change]] = {}
        for change in changes:
            by_kind.setdefault(change.resource.split(":", 1)[0], []).append(change)
        done = []
        module_changes = by_kind.get("module", [])
        work = host.run(["mktemp", "-d", "/tmp/converge-selinux.XXXXXX"]).stdout.strip() if module_changes else None
        try:
            # Modules are built first: checkmodule refuses a broken .te before anything changes.
            semodule_arguments, installed = self._build_modules(host, spec, module_changes, work) if work else ([], [])
            if "mode" in by_kind or "policy" in by_kind:
                done += self._apply_mode(host, spec, live)
            if "boolean" in by_kind:
                assignments = [f"{c.resource.split(':', 1)[1]}={'1' if c.after else '0'}" for c in by_kind["boolean"]]
                host.run(["setsebool", "-P", *assignments])
                done.append(f"set {len(assignments)} boolean(s) persistently (setsebool -P)")
            if "fcontext" in by_kind or "port" in by_kind:
                done += self._apply_records(host, spec, live, by_kind.get("fcontext", []), by_kind.get("port", []))
            if module_changes:
                done += self._install_modules(host, semodule_arguments, installed, module_changes)
        finally:
            if work:
                host.run(["rm", "-rf", "--", work], check=False)
        return done

    def _apply_mode(self, host: Host, spec: SelinuxSpec, live: SelinuxLive) -> list[str]:
        done = []
        runtime = live.kernel.mode
        # The runtime first: if the kernel refuses it, the config still says what it said.
        if spec.mode and "disabled" not in (runtime, spec.mode) and runtime != spec.mode:
            done.append(set_runtime_mode(host, spec.mode))
        elif spec.mode and runtime == "disabled" and live.config_mode != spec.mode:
            done.append(f"runtime unchanged: SELinux is disabled in the running kernel; {spec.mode} after a reboot")
        settings = {key: value for key, value in (("SELINUX", spec.mode), ("SELINUXTYPE", spec.policy)) if value}
        if any(parse_config(live.config).get(key) != value for key, value in settings.items()):
            backup = host.write_file(CONFIG, edit_config(live.config, settings))
            done.append(f"wrote {CONFIG}" + (f" (previous version in {backup})" if backup else ""))
        if spec.mode and spec.mode != "disabled" and live.config_mode == "disabled" and not live.autorelabel_scheduled:
            host.write_file(AUTORELABEL, "")
            done.append(f"scheduled a full relabel at the next boot ({AUTORELABEL})")
        return done

    def _apply_records(self, host: Host, spec: SelinuxSpec, live: SelinuxLive,
                       fcontext_changes: list[Change], port_changes: list[Change]) -> list[str]:
        """Every file-context and port change in one `semanage import` transaction: all or nothing."""
        wanted_fc = {_resource("fcontext", f.key): f for f in spec.fcontexts}
        wanted_ports = {_resource("port", p.key): p for p in spec.ports}
        lines = []
        for change in fcontext_changes:
            fc = wanted_fc[change.resource]
            where = ["-f", FILE_TYPE_FLAG[fc.file_type]]
            if change.action == "remove":
                lines.append(["fcontext", "-d", *where, fc.path])
            else:
                verb = "-a" if change.action == "add" and fc.key not in live.policy_fcontexts else "-m"
                lines.append(["fcontext", verb, *where, "-t", str(fc.type), fc.path])
        for change in port_changes:
            port = wanted_ports[change.resource]
            where = ["-p", port.protocol, str(port.port)]
            if change.action == "remove":
                lines.append(["port", "-d", *where])
            else:
                verb = "-a" if change.action == "add" and port.key not in live.defined_ports else "-m"
                lines.append(["port", verb, "-t", str(port.type), *where])
        # Every token was matched against a pattern without whitespace or quotes, so semanage's
        # whitespace split gives back exactly these argv lists.
        host.run(["semanage", "import"], input="".join(" ".join(line) + "\n" for line in lines))
        done = [f"semanage import: {len(fcontext_changes)} file context(s), {len(port_changes)} port(s) in one transaction"]
        roots = sorted({wanted_fc[c.resource].relabel_root() for c in fcontext_changes})
        if roots:
            # -i: a path that does not exist yet has nothing to relabel.
            result = host.run(["restorecon", "-R", "-v", "-i", *roots])
            relabelled = sum(1 for line in result.stdout.splitlines() if line.startswith("Relabeled"))
            done.append(f"restorecon -R {' '.join(roots)}: relabelled {relabelled} file(s)")
        return done

    def _build_modules(self, host: Host, spec: SelinuxSpec, changes: list[Change], work: str) -> tuple[list[str], list[Module]]:
        """semodule's arguments for the changed modules: .te sources compiled (and so validated)
        with checkmodule and semodule_package, .cil sources as they are, removals as -r."""
        modules = {m.name: m for m in spec.modules}
        arguments, installed = [], []
        for change in changes:
            module = modules[change.resource.split(":", 1)[1]]
            if change.action == "remove":
                arguments += ["-r", module.name]
                continue
            source = f"{work}/{module.name}.{module.kind}"
            host.write_file(source, module.text, mode=0o600)
            if module.kind == "te":
                host.run(["checkmodule", "-M", "-m", "-o", f"{work}/{module.name}.mod", source])
                host.run(["semodule_package", "-o", f"{work}/{module.name}.pp", "-m", f"{work}/{module.name}.mod"])
                source = f"{work}/{module.name}.pp"
            arguments += ["-i", source]
            installed.append(module)
        return arguments, installed

    def _install_modules(self, host: Host, arguments: list[str], installed: list[Module], changes: list[Change]) -> list[str]:
        """One semodule transaction, then the records of what it installed."""
        host.run(["semodule", *arguments])
        checksums = parse_module_list(host.run(["semodule", "-l", "-m"]).stdout)
        for module in installed:
            record = f"source {module.source_hash}\nmodule {checksums.get(module.name, 'missing')}\n"
            host.write_file(f"{MODULE_RECORDS}/{module.name}.sha256", record)
        for change in changes:
            if change.action == "remove":
                host.remove_file(f"{MODULE_RECORDS}/{change.resource.split(':', 1)[1]}.sha256")
        return [f"semodule: {len(installed)} module(s) installed, {len(changes) - len(installed)} removed in one transaction"]
