"""The plan's operations, built from spec and live: everything apply runs, in order, with its undo.

Modules are built first (checkmodule refuses a broken .te before anything changes), then the mode,
the booleans (one `setsebool -P`), the file contexts and ports (one `semanage import`) and the
modules (one `semodule` transaction). Nothing here reads the host: every value comes from the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from converge.provider import Change, Operation, Remove, Run, Write, restore

from .kernel import relabel_argv, runtime_mode_operations
from .parse import edit_config, parse_config
from .spec import FILE_TYPE_FLAG, FileContext, Module, Port, SelinuxSpec

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

PREVIOUS_DIR = f"{BUILD_DIR}/previous"
# selinux-policy-dev's (Fedora: selinux-policy-devel) Makefile for reference-policy modules.
DEVEL_MAKEFILE = "/usr/share/selinux/devel/Makefile"
# Writes a prebuilt .pp, carried in the plan as base64, where semodule installs it from.
DECODE_SCRIPT = """set -eu
mkdir -p -m 700 -- "$(dirname -- "$1")"
umask 077
base64 -d > "$1"
"""
# semodule's default priority, where `semodule -i` installs and `semodule -r` removes.
PRIORITY = "400"
# A local file context or port with no context (`<<none>>`) is put back as one.
NO_CONTEXT = "<<none>>"

# Extracts modules from the store at a priority into a directory (semodule -E writes NAME.KIND there).
EXTRACT_SCRIPT = """set -eu
dir=$1; priority=$2; shift 2
rm -rf -- "$dir"
mkdir -p -m 700 -- "$dir"
cd -- "$dir"
for name; do semodule -X "$priority" -E "$name"; done
"""

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
    return _undone_once_done([
        *_module_builds(changed_modules), *_mode_operations(spec, live), *_boolean_operations(booleans, live),
        *_record_operations(spec, live, records), *_module_operations(changed_modules, live),
    ])


def _transaction(operation: Operation) -> bool:
    return isinstance(operation, Run) and (operation.argv[:2] == ("semanage", "import") or operation.argv[0] == "semodule")


def _undone_once_done(operations: Sequence[Operation]) -> list[Operation]:
    """`semanage import` and `semodule` are transactions: refused, they change nothing, and their undo
    (which would then fail, deleting what was never added) must not run. The engine also undoes the
    operation that failed, so each transaction's undo travels with the operation after it, undone
    once that one is tried; the last operation's has nothing after it that can fail."""
    moved: list[Operation] = []
    carried: tuple[Operation, ...] = ()
    for operation in operations:
        if _transaction(operation):
            moved.append(replace(operation, undo=carried))
            carried = operation.undo
        else:
            moved.append(replace(operation, undo=(*operation.undo, *carried)))
            carried = ()
    return moved


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
    """Each installed module's file in BUILD_DIR: a plain .te compiled (and so checked) by checkmodule
    and semodule_package, a reference-policy .te (with its .if and .fc) by selinux-policy-dev's
    Makefile, a .cil as it is, a .pp decoded from the plan. semodule names a .cil after its file."""
    operations: list[Operation] = []
    for module, action in modules:
        if action == "remove":
            continue
        cleanup = () if operations else (Run(("rm", "-rf", "--", BUILD_DIR)),)
        if module.kind == "pp":
            operations.append(Run(("sh", "-c", DECODE_SCRIPT, "sh", _installed_file(module)), input=module.text,
                                  says=f"wrote {_installed_file(module)}", undo=cleanup))
        elif module.kind == "refpolicy":
            directory = f"{BUILD_DIR}/{module.name}"
            operations.append(Write(f"{directory}/{module.name}.te", module.text, mode=0o600, undo=cleanup))
            operations += [Write(f"{directory}/{module.name}{suffix}", text, mode=0o600)
                           for suffix, text in sorted(module.beside.items())]
            operations.append(Run(("make", "-C", directory, "-f", DEVEL_MAKEFILE, f"{module.name}.pp"),
                                  says=f"built {module.name}.pp with {DEVEL_MAKEFILE}"))
        else:
            source = f"{BUILD_DIR}/{module.name}.{module.kind}"
            operations.append(Write(source, module.text, mode=0o600, undo=cleanup))
            if module.kind == "te":
                compiled = f"{BUILD_DIR}/{module.name}.mod"
                operations += [Run(("checkmodule", "-M", "-m", "-o", compiled, source)),
                               Run(("semodule_package", "-o", f"{BUILD_DIR}/{module.name}.pp", "-m", compiled))]
    return operations


def _installed_file(module: Module) -> str:
    if module.kind == "refpolicy":
        return f"{BUILD_DIR}/{module.name}/{module.name}.pp"
    return f"{BUILD_DIR}/{module.name}.{'pp' if module.kind == 'te' else module.kind}"


def _boolean_operations(changes: Sequence[Change], live: SelinuxLive) -> list[Operation]:
    """One `setsebool -P` for every boolean that changes, undone by one putting back the persisted
    values, then (without -P) the runtime values that differed from them."""
    if not changes:
        return []
    wanted = [f"{change.name}={int(change.after)}" for change in changes]
    previous = [f"{change.name}={int(live.booleans[change.name])}" for change in changes]
    runtime = [f"{change.name}={int(value)}" for change in changes
               if (value := live.kernel.booleans.get(change.name)) is not None and value != live.booleans[change.name]]
    undo = (Run(("setsebool", "-P", *previous)), *([Run(("setsebool", *runtime))] if runtime else []))
    return [Run(("setsebool", "-P", *wanted), says=f"set {len(changes)} boolean(s) persistently (setsebool -P)",
                undo=undo)]


def _fcontext_lines(fc: FileContext, action: str, live: SelinuxLive) -> tuple[list[str], list[str]]:
    """The `semanage import` line for one file-context change, and the line that puts back what was
    local before (`-a` only where the policy has no such entry: semanage refuses to add one it has)."""
    where, before = ["-f", FILE_TYPE_FLAG[fc.file_type]], live.fcontexts.get(fc.key) or NO_CONTEXT
    verb = "-m" if fc.key in live.policy_fcontexts else "-a"
    if action == "remove":
        return ["fcontext", "-d", *where, fc.path], ["fcontext", verb, *where, "-t", before, fc.path]
    if action == "add":
        return ["fcontext", verb, *where, "-t", str(fc.type), fc.path], ["fcontext", "-d", *where, fc.path]
    return ["fcontext", "-m", *where, "-t", str(fc.type), fc.path], ["fcontext", "-m", *where, "-t", before, fc.path]


def _port_lines(port: Port, action: str, live: SelinuxLive) -> tuple[list[str], list[str]]:
    """The same for one port change."""
    where, before = ["-p", port.protocol, port.port], live.ports.get(port.key) or NO_CONTEXT
    verb = "-m" if port.key in live.policy_ports else "-a"
    if action == "remove":
        return ["port", "-d", *where], ["port", verb, "-t", before, *where]
    if action == "add":
        return ["port", verb, "-t", str(port.type), *where], ["port", "-d", *where]
    return ["port", "-m", "-t", str(port.type), *where], ["port", "-m", "-t", before, *where]


def _permissive_lines(domain: str, action: str) -> tuple[list[str], list[str]]:
    """The same for one permissive domain."""
    add, delete = ["permissive", "-a", domain], ["permissive", "-d", domain]
    return (add, delete) if action == "add" else (delete, add)


def _record_operations(spec: SelinuxSpec, live: SelinuxLive, changes: Sequence[Change]) -> list[Operation]:
    """Every file-context, port and permissive-domain change in one `semanage import` transaction (all or nothing),
    then `restorecon -R` of the roots of the file contexts that changed. Undone by one import of the
    inverse lines (what was local before, from live), then the same restorecon under the old rules."""
    fcontexts = {change_name("fcontext", f.key): f for f in spec.fcontexts}
    ports = {change_name("port", p.key): p for p in spec.ports}
    lines = [_fcontext_lines(fcontexts[change.name], change.action, live) if change.kind == "fcontext"
             else _port_lines(ports[change.name], change.action, live) if change.kind == "port"
             else _permissive_lines(change.name, change.action) for change in changes]
    if not lines:
        return []
    counts = (sum(c.kind == "fcontext" for c in changes), sum(c.kind == "port" for c in changes))
    permissive = sum(c.kind == "permissive" for c in changes)
    roots = sorted({fcontexts[c.name].relabel_root() for c in changes if c.kind == "fcontext"})
    # -i: a path that does not exist yet has nothing to relabel.
    # (restorecon where the kernel has SELinux, else setfiles: kernel.relabel_argv)
    relabel = [Run(relabel_argv(live.kernel, live.policy, roots), says=f"restorecon -R {' '.join(roots)}")] if roots else []
    # Every token was matched against a pattern without whitespace or quotes, so semanage's
    # whitespace split gives back exactly these argv lists.
    says = (f"semanage import: {counts[0]} file context(s), {counts[1]} port(s)"
            + (f", {permissive} permissive domain(s)" if permissive else "") + " in one transaction")
    inverse = Run(("semanage", "import"), input="".join(" ".join(back) + "\n" for _, back in reversed(lines)))
    return [Run(("semanage", "import"), input="".join(" ".join(line) + "\n" for line, _ in lines), says=says,
                undo=(inverse, *relabel)), *relabel]


def _module_operations(modules: Sequence[tuple[Module, str]], live: SelinuxLive) -> list[Operation]:
    """One semodule transaction, then converge's records of what it installed, and the build's cleanup.
    Before it, the store's modules it replaces or removes at semodule's priority are extracted
    (`semodule -E`), so its undo can put them back and remove the ones that were not there."""
    if not modules:
        return []
    installed = [module for module, action in modules if action != "remove"]
    removed = [module for module, action in modules if action == "remove"]
    arguments = [*(part for m in installed for part in ("-i", _installed_file(m))),
                 *(part for m in removed for part in ("-r", m.name))]
    saved = [m.name for m, _ in modules if m.name in live.module_kinds]
    back = [*(part for name in saved for part in ("-i", f"{PREVIOUS_DIR}/{name}.{live.module_kinds[name]}")),
            *(part for m in installed if m.name not in live.module_kinds for part in ("-r", m.name))]
    operations: list[Operation] = []
    if saved:
        operations.append(Run(("sh", "-c", EXTRACT_SCRIPT, "sh", PREVIOUS_DIR, PRIORITY, *saved),
                              says=f"saved {len(saved)} module(s) from the store in {PREVIOUS_DIR}",
                              undo=(Run(("rm", "-rf", "--", PREVIOUS_DIR)),)))
    operations.append(Run(("semodule", *arguments), says=f"semodule: {len(installed)} module(s) installed, "
                                                         f"{len(removed)} removed in one transaction",
                          undo=(Run(("semodule", "-X", PRIORITY, *back)),) if back else ()))

    def record(name: str) -> str:
        return f"{MODULE_RECORDS}/{name}.sha256"

    if installed:
        pairs = [part for m in installed for part in (m.name, m.source_hash)]
        undo = tuple(restore(record(m.name), live.module_records.get(m.name)) for m in installed)
        operations.append(Run(("sh", "-c", RECORD_SCRIPT, "sh", MODULE_RECORDS, *pairs),
                              says=f"recorded {len(installed)} module(s) in {MODULE_RECORDS}", undo=undo))
    operations += [Remove(record(m.name), undo=(restore(record(m.name), live.module_records[m.name]),))
                   for m in removed if m.name in live.module_records]
    # Last: until here, the transaction's undo may need the modules saved in it.
    if installed or saved:
        operations.append(Run(("rm", "-rf", "--", BUILD_DIR), says=f"removed {BUILD_DIR}"))
    return operations
