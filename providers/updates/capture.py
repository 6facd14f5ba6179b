"""`converge capture` of a host's updates: the automatic-update settings apt shows, as a table."""

from __future__ import annotations

from collections.abc import Sequence

from converge.provider import Captured
from converge.providers.updates.parse import apt_boolean, config_list, config_scalar


def apt_captured(config: dict[str, str | list[str]], installed: bool, security: Sequence[str]) -> Captured:
    """Captured from live's parsed `apt-config dump`: "security" when only security origins are
    allowed, "all" for `origin=*`, "off" when unattended-upgrades is missing or not run."""
    patterns = config_list(config, "Unattended-Upgrade::Origins-Pattern")
    enabled = installed and apt_boolean(config_scalar(config, "APT::Periodic::Unattended-Upgrade"), False)
    notes: list[str] = []
    if not enabled:
        automatic = "off"
    elif patterns == ["origin=*"]:
        automatic = "all"
    elif patterns and set(patterns) <= set(security) and not config_list(config, "Unattended-Upgrade::Allowed-Origins"):
        automatic = "security"
    else:
        # Neither converge's security origins nor every origin: no value of `automatic` plans in
        # sync with them, so the table is left out rather than captured as something else.
        return Captured({}, [f"origins {patterns} are neither only the security origins nor every origin "
                             "(origin=*): automatic updates are not captured"])
    reboot = "never"
    if apt_boolean(config_scalar(config, "Unattended-Upgrade::Automatic-Reboot"), False):
        time = config_scalar(config, "Unattended-Upgrade::Automatic-Reboot-Time") or "now"
        reboot = "when-required" if time == "now" else time
    return Captured({"automatic": automatic, "reboot": reboot, "pending": "report", "max_index_age": "1d"}, notes)
