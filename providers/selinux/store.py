"""The policy store's booleans and ports, read through libsemanage itself instead of `semanage`.

`semanage boolean -l` and `semanage port -l` take ~0.8 s each of the host's CPU, most of it
importing seobject and sepolicy. The values they print come from libsemanage's
`semanage_bool_list` (the persistent value, policy default or local change) and
`semanage_port_list` (the policy's ports, local ones included): this reads the same lists with the
same library, through its Python binding, run by the interpreter `semanage` itself runs (the one
whose binding is installed), in ~0.1 s. tests/test_selinux_store.py checks both equal semanage's.
"""

from __future__ import annotations

from collections import Counter

from converge.provider import ParseError, RunCommand

# Both lists in one process: libsemanage's store lock admits one reader at a time and makes a
# second one wait a whole second (semanage_get_lock sleeps 1 s between tries), so two reads of the
# store in parallel lanes of a batch cost a plan a second.
_PYTHON = """\
import sys
import semanage
handle = semanage.semanage_handle_create()
if semanage.semanage_is_managed(handle) != 1 or semanage.semanage_connect(handle) < 0:
    sys.exit("SELinux policy is not managed or store cannot be accessed")
status, booleans = semanage.semanage_bool_list(handle)
if status < 0:
    sys.exit("could not list the booleans of the policy store")
for boolean in booleans:
    print("boolean", semanage.semanage_bool_get_name(boolean), semanage.semanage_bool_get_value(boolean))
status, ports = semanage.semanage_port_list(handle)
if status < 0:
    sys.exit("could not list the ports of the policy store")
for port in ports:
    low, high = semanage.semanage_port_get_low(port), semanage.semanage_port_get_high(port)
    protocol = semanage.semanage_port_get_proto_str(semanage.semanage_port_get_proto(port))
    kind = semanage.semanage_context_get_type(semanage.semanage_port_get_con(port))
    print("port", protocol, low if low == high else f"{low}-{high}", kind)
"""
# semanage's own interpreter (its #! line, options included: `/usr/bin/python3 -Es`).
_SHELL = 'interpreter=$(sed -n "1s/^#! *//p" "$(command -v semanage)"); exec ${interpreter:-python3} -c "$1"'

LISTS = RunCommand(("sh", "-c", _SHELL, "selinux-store", _PYTHON))
BOOLEANS = PORTS = LISTS  # one read answers both
_PROTOCOLS = {"tcp", "udp", "sctp", "dccp"}


def _lines(text: str, kind: str) -> list[tuple[str, list[str]]]:
    """The fields of each `KIND ...` line (the line itself, for errors); other kinds are skipped
    and a line of no kind is an error."""
    found = []
    for line in text.splitlines():
        if not line.strip():
            continue
        head, *fields = line.split()
        if head not in ("boolean", "port"):
            raise ParseError("the policy store's lists", "not `boolean ...` or `port ...`", line)
        if head == kind:
            found.append((line, fields))
    return found


def parse_booleans(text: str) -> dict[str, bool]:
    """`boolean NAME 0|1` lines: each boolean of the policy and its persistent value."""
    booleans = {}
    for line, fields in _lines(text, "boolean"):
        if len(fields) != 2 or fields[1] not in ("0", "1"):
            raise ParseError("the policy store's booleans", "not `boolean name 0|1`", line)
        booleans[fields[0]] = fields[1] == "1"
    return booleans


def parse_ports(text: str) -> Counter[tuple[str, str]]:
    """`port PROTOCOL PORT[-PORT] TYPE` lines: as `parse_port_list`, each (protocol, port or range)
    with how many times the policy lists it (a local port the policy defines too: twice)."""
    defined: Counter[tuple[str, str]] = Counter()
    for line, fields in _lines(text, "port"):
        if len(fields) != 3 or fields[0] not in _PROTOCOLS:
            raise ParseError("the policy store's ports", "not `port protocol port type`", line)
        defined[(fields[0], fields[1])] += 1
    return defined
