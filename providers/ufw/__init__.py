"""ufw: enabled state, logging, default policies and rules, read from ufw's own files.

State is read from /etc/ufw/ufw.conf, /etc/default/ufw, /etc/ufw/user.rules and user6.rules (the
rule tuples ufw itself keeps) plus `ufw status` for whether the rules are loaded in the kernel;
every change is a `ufw` command of the plan, which checks each rule before it writes or loads it.
If one fails, ufw's files are put back as the plan read them and the kernel's rules reloaded
from them.

Rule order is kept by appending: declared rules already in place in the declared order stay where
they are; from the first declared rule that is missing or out of order on, the rest are deleted
and appended again in order. A rule that only differs in action or comment is updated in place.

Capture writes the whole state (it is small) and every rule the baseline format can name, each
checked to plan in sync; `exclusive` is set only when no rule had to be left out.
"""

from converge.providers.ufw.provider import UfwProvider

__all__ = ["UfwProvider"]
