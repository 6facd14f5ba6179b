"""firewalld: the default zone and, per zone, services, ports, rich rules, sources, interfaces
and target, in the permanent configuration and (with the daemon running) at runtime.

The permanent configuration is read with `firewall-offline-cmd --list-all-zones`, which reads
firewalld's files whether or not the daemon runs; the runtime with `firewall-cmd`. With the daemon
running, changes go to the permanent configuration (`firewall-cmd --permanent`), are checked with
`--check-config` and made live with `--reload`; a zone whose runtime differs from its permanent
configuration is drift that a reload removes. Without the daemon, `firewall-offline-cmd` edits the
files. Each kind of change of a zone is one call (the tools refuse to mix kinds in one call). If
a call fails, firewalld.conf and the zone files are put back as the plan read them, and reloaded.
"""

from converge.providers.firewalld.provider import FirewalldProvider

__all__ = ["FirewalldProvider"]
