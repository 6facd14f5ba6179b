"""updates: patch management, the layer every other layer depends on.

Automatic updates as declared (unattended-upgrades on Debian and Ubuntu, dnf-automatic on the RHEL
family: installed, enabled, configured through a converge-owned drop-in), the pending security
updates the package manager itself computes against the host's current index (reported, or
installed at exactly the planned versions), whether a reboot is required, which services still
run deleted libraries, and the index's age. A busy or interrupted package manager is an error.
"""

from converge.providers.updates.provider import UpdatesProvider

__all__ = ["UpdatesProvider"]
