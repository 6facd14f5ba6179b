"""The `[updates]` table."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

from converge.provider import StrictModel, choice, matching

_REBOOT = re.compile(r"never|when-required|(?:[01][0-9]|2[0-3]):[0-5][0-9]")
_AGE = re.compile(r"[1-9][0-9]{0,4}[mhd]")
_SECONDS = {"m": 60, "h": 3600, "d": 86400}


class UpdatesSpec(StrictModel):
    automatic: Annotated[str, choice("off", "security", "all")] = Field(
        default="security",
        description='"security": unattended-upgrades (Debian, Ubuntu) or dnf-automatic (RHEL family) installed, its '
        'timers enabled, and only the security origins allowed; "all": every origin; "off": converge removes its '
        "own drop-in and manages nothing else (the distribution's files are never edited).",
    )
    reboot: Annotated[str, matching(_REBOOT, 'never, when-required or a time such as "03:30"')] = Field(
        default="never",
        description='When the automatic updater may reboot a host that needs it: "never", "when-required" (right '
        'after the updates that need it) or a time "HH:MM". converge itself never reboots.',
    )
    pending: Annotated[str, choice("report", "install")] = Field(
        default="report",
        description='Pending security updates: "report" lists them as a warning; "install" makes each one a change, '
        "installed by apply at exactly the planned version (never anything the plan did not list).",
    )
    max_index_age: Annotated[str, matching(_AGE, 'an age such as "90m", "12h" or "1d"')] = Field(
        default="1d", description="The plan warns when the package index is older than this: pending updates are then unknown.",
    )

    @property
    def max_index_minutes(self) -> int:
        return int(self.max_index_age[:-1]) * _SECONDS[self.max_index_age[-1]] // 60

    @property
    def reboot_time(self) -> str | None:
        return self.reboot if ":" in self.reboot else None
