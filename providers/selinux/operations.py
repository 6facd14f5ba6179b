"""The plan's operations, built from spec and live: everything apply runs, in order, with its undo.

Modules are built first (checkmodule refuses a broken .te before anything changes), then the mode,
the booleans (one `setsebool -P`), the file contexts and ports (one `semanage import`) and the
modules (one `semodule` transaction). Nothing here reads the host: every value comes from the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from converge.provider import Change, Operation, Remove, Run, Write, restore

from .kernel import runtime_mode_operations
from .parse import edit_config, parse_config
from .spec import FILE_TYPE_FLAG, Module, SelinuxSpec

if TYPE_CHECKING:
    from .provider import SelinuxLive

# The files apply writes (provider.py reads them).
CONFIG = "/etc/selinux/config"
AUTORELABEL = "/.autorelabel"
# What converge installed for each module: the source's hash and the store's checksum of the result,
# so a changed source and a module replaced behind converge's back are both noticed.
MODULE_RECORDS = "/var/lib/converge/selinux/modules"
# Where apply builds modules (root's, unlike /tmp: its fixed names cannot be planted).
BUILD_DIR = "/var/lib/converge/selinux/build"

# Records what `semodule -l -m` says of each installed module: NAME SOURCE_HASH pairs follow the directory.
RECORD_SCRIPT = """set -eu
records=$1; shift
listed=$(semodule -l -m)
mkdir -p "$records"
while [ "$#" -gt 1 ]; do
    sum=$(printf '%s\\n' "$listed" | awk -v name="$1" '$1 == name { print $2 }')
    [ -n "$sum" ] || { echo "semodule -l -m does not list $1" >&2; exit 1; }
    printf 'source %s\\nmodule %s\\n' "$2" "$sum" > "$records/$1.sha256"
    shift 2
done
"""


def change_name(kind: str, key: tuple[str, str]) -> str:
    """A change's name for a file context or port key: `tcp/8080`, `/srv/www(/.*)?`, `/x (file)`."""
    name, variant = key
    if kind == "port":
        return f"{name}/{variant}"
    return name + ("" if variant == "all" else f" ({variant})")


def plan_operations(spec: SelinuxSpec, live: SelinuxLive, booleans: Sequence[Change], records: Sequence[Change],
                    modules: Sequence[Change]) -> list[Operation]:
    """The operations that carry out the changes, in the order apply runs them."""
    wanted_modules = {m.name: m for m in spec.modules}
    changed_modules = [(wanted_modules[change.name], change.action) for change in modules]
    return [
        *_module_builds(changed_modules), *_mode_operations(spec, live), *_boolean_operations(booleans, live),
        *_record_operations(spec, live, records), *_module_operations(changed_modules, live),
    ]


def _mode_operations(spec: SelinuxSpec, live: SelinuxLive) -> list[Operation]:
    # The runtime first: if the kernel refuses it, the config still says what it said.
    operations = runtime_mode_operations(live.kernel, spec.mode) if spec.mode else []
    settings = {key: value for key, value in (("SELINUX", spec.mode), ("SELINUXTYPE", spec.policy)) if value}
    if any(parse_config(live.config).get(key) != value for key, value in settings.items()):
        operations.append(Write(CONFIG, edit_config(live.config, settings), undo=(restore(CONFIG, live.config),)))
    if spec.mode and spec.mode != "disabled" and live.config_mode == "disabled" and not live.autorelabel_scheduled:
        operations.append(Write(AUTORELABEL, "", says=f"scheduled a full relabel at the next boot ({AUTORELABEL})",
                                undo=(Remove(AUTORELABEL),)))
    return operations


def _module_builds(modules: Sequence[tuple[Module, str]]) -> list[Operation]:
    """Each installed module's file in BUILD_DIR: a .te compiled (and so checked) by checkmodule
    and semodule_package, a .cil as it is. semodule names a module after its file."""
    operations: list[Operation] = []
    for module, action in modules:
        if action == "remove":
            continue
        source = f"{BUILD_DIR}/{module.name}.{module.kind}"
        cleanup = () if operations else (Run(("rm", "-rf", "--", BUILD_DIR)),)
        operations.append(Write(source, module.text, mode=0o600, undo=cleanup))
        if module.kind == "te":
            compiled = f"{BUILD_DIR}/{module.name}.mod"
            operations += [Run(("checkmodule", "-M", "-m", "-o", compiled, source)),
                           Run(("semodule_package", "-o", f"{BUILD_DIR}/{module.name}.pp", "-m", compiled))]
    return operations


def _installed_file(module: Module) -> str:
    return f"{BUILD_DIR}/{module.name}.{'pp' if module.kind == 'te' else module.kind}"


def _boolean_operations(changes: Sequence[Change], live: SelinuxLive) -> list[Operation]:
    """One `setsebool -P` for every boolean that changes, undone by one putting back the persisted values."""
    if not changes:
        return []
    wanted = [f"{change.name}={int(change.after)}" for change in changes]
    previous = [f"{change.name}={int(live.booleans[change.name])}" for change in changes]
    return [Run(("setsebool", "-P", *wanted), says=f"set {len(changes)} boolean(s) persistently (setsebool -P)",
                undo=(Run(("setsebool", "-P", *previous)),))]


def _record_operations(spec: SelinuxSpec, live: SelinuxLive, changes: Sequence[Change]) -> list[Operation]:
    """Every file-context and port change in one `semanage import` transaction (all or nothing),
    then `restorecon -R` of the roots of the file contexts that changed."""
    fcontexts = {change_name("fcontext", f.key): f for f in spec.fcontexts}
    ports = {change_name("port", p.key): p for p in spec.ports}
    lines: list[list[str]] = []
    for change in changes:
        if change.kind == "fcontext":
            fc = fcontexts[change.name]
            where = ["-f", FILE_TYPE_FLAG[fc.file_type]]
            if change.action == "remove":
                lines.append(["fcontext", "-d", *where, fc.path])
            else:
                verb = "-a" if change.action == "add" and fc.key not in live.policy_fcontexts else "-m"
                lines.append(["fcontext", verb, *where, "-t", str(fc.type), fc.path])
        else:
            port = ports[change.name]
            where = ["-p", port.protocol, port.port]
            if change.action == "remove":
                lines.append(["port", "-d", *where])
            else:
                verb = "-a" if change.action == "add" and port.key not in live.defined_ports else "-m"
                lines.append(["port", verb, "-t", str(port.type), *where])
    if not lines:
        return []
    counts = (sum(c.kind == "fcontext" for c in changes), sum(c.kind == "port" for c in changes))
    # Every token was matched against a pattern without whitespace or quotes, so semanage's
    # whitespace split gives back exactly these argv lists.
    says = f"semanage import: {counts[0]} file context(s), {counts[1]} port(s) in one transaction"
    operations: list[Operation] = [Run(("semanage", "import"), input="".join(" ".join(line) + "\n" for line in lines), says=says)]
    roots = sorted({fcontexts[c.name].relabel_root() for c in changes if c.kind == "fcontext"})
    if roots:
        # -i: a path that does not exist yet has nothing to relabel.
        operations.append(Run(("restorecon", "-R", "-v", "-i", *roots), says=f"restorecon -R {' '.join(roots)}"))
    return operations


def _module_operations(modules: Sequence[tuple[Module, str]], live: SelinuxLive) -> list[Operation]:
    """One semodule transaction, then converge's records of what it installed, and the build's cleanup."""
    if not modules:
        return []
    installed = [module for module, action in modules if action != "remove"]
    removed = [module for module, action in modules if action == "remove"]
    arguments = [*(part for m in installed for part in ("-i", _installed_file(m))),
                 *(part for m in removed for part in ("-r", m.name))]
    operations: list[Operation] = [Run(("semodule", *arguments), says=f"semodule: {len(installed)} module(s) installed, "
                                                                       f"{len(removed)} removed in one transaction")]

    def record(name: str) -> str:
        return f"{MODULE_RECORDS}/{name}.sha256"

    if installed:
        pairs = [part for m in installed for part in (m.name, m.source_hash)]
        undo = tuple(restore(record(m.name), live.module_records.get(m.name)) for m in installed)
        operations += [Run(("sh", "-c", RECORD_SCRIPT, "sh", MODULE_RECORDS, *pairs),
                           says=f"recorded {len(installed)} module(s) in {MODULE_RECORDS}", undo=undo),
                       Run(("rm", "-rf", "--", BUILD_DIR), says=f"removed {BUILD_DIR}")]
    operations += [Remove(record(m.name), undo=(restore(record(m.name), live.module_records[m.name]),))
                   for m in removed if m.name in live.module_records]
    return operations
