"""fail2ban: jails declared in one jail.d file converge owns, tested by fail2ban, verified live.

converge writes `[fail2ban.defaults]` and `[fail2ban.jails.NAME]` into `JAIL_FILE`. The plan's
operations test the new file in a staged copy of /etc/fail2ban with `fail2ban-client -t`, put it
in place only if fail2ban accepts it, then reload the running server (or start it when the
baseline says so); a failure puts the previous file back. When the server runs, plan also
compares the live jails (`fail2ban-client status` and `get JAIL OPTION`) with the baseline.
"""

from converge.providers.fail2ban.provider import Fail2banProvider
from converge.providers.fail2ban.spec import JAIL_FILE, Fail2banSpec

__all__ = ["JAIL_FILE", "Fail2banProvider", "Fail2banSpec"]
