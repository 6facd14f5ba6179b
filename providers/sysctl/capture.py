"""What `converge capture` writes for `[sysctl]`: a pure function of the live state.

Captured: every key the boot configuration sets by name, with its runtime value, when the runtime
value is what boot sets. Left out, with a note: keys this kernel lacks, keys whose runtime value
differs from the boot configuration, write-only triggers (`net.ipv4.route.flush`), values the
baseline would refuse (an execution hook in a place users can write to), and glob lines, which
name no key. A boot file's line that is no assignment is named, as sysctl names it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError

from converge.provider import Captured
from converge.providers.sysctl.parse import displayed
from converge.providers.sysctl.spec import WRITE_ONLY_REASON, SysctlSpec

if TYPE_CHECKING:
    from converge.providers.sysctl.provider import SysctlLive


def captured(live: SysctlLive, missing: Mapping[str, str], patterns: Sequence[tuple[str, str, str]],
             write_only: Sequence[str] = (), unassigned: Sequence[tuple[str, int, str]] = ()) -> Captured:
    """`missing`: the keys this kernel lacks, each with the boot file that sets it; `unassigned`:
    (file, line number, line) of the boot files' lines that are no assignment."""
    table: dict[str, int | str] = {}
    notes = [f"{key}: configured at boot (in {path}) but absent from this kernel; not captured" for key, path in missing.items()]
    notes += [f"{key}: {WRITE_ONLY_REASON}; not captured" for key in write_only]
    for key, runtime in live.runtime.items():
        persisted = live.persisted(key)
        if runtime != persisted:
            notes.append(f"{key}: runtime {runtime} differs from the boot configuration ({persisted}); not captured")
            continue
        try:
            SysctlSpec.model_validate({key: runtime})
        except ValidationError as error:
            notes.append(f"{key} = {runtime}: not captured: {error.errors()[0]['msg'].removeprefix('Value error, ')}")
            continue
        value = displayed(runtime)
        table[key] = value if value is not None else runtime
    notes += [f"{pattern} = {value} in {path}: a glob line names no key; not captured"
              for path, pattern, value in patterns]
    notes += [f"{path} line {number}: {line!r} is no KEY = VALUE assignment; sysctl skips it (invalid syntax)"
              for path, number, line in unassigned]
    return Captured(dict(sorted(table.items())), notes)
