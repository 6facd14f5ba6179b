"""What `converge capture` writes for `[sysctl]`: a pure function of the live state.

Captured: every key the boot configuration sets by name, with its runtime value, when the runtime
value is what boot sets. Left out, with a note: keys this kernel lacks, keys whose runtime value
differs from the boot configuration, values the baseline would refuse (an execution hook in a
place users can write to), and glob lines, which name no key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError

from converge.provider import Captured
from converge.providers.sysctl.parse import displayed
from converge.providers.sysctl.spec import SysctlSpec

if TYPE_CHECKING:
    from converge.providers.sysctl.provider import SysctlLive


def captured(live: SysctlLive, missing: Sequence[str], patterns: Sequence[tuple[str, str, str]]) -> Captured:
    table: dict[str, int | str] = {}
    notes = [f"{key}: configured at boot but absent from this kernel; not captured" for key in missing]
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
    return Captured(dict(sorted(table.items())), notes)
