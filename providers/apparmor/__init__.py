"""apparmor: profiles in /etc/apparmor.d, their modes on disk and, with a kernel, as loaded.

A profile is installed from the baseline (`source` or inline `content`) or, without either,
only its mode is managed. Modes are written the way AppArmor's own tools write them:
`aa-complain` sets `flags=(complain)` on every profile header of the file, `aa-enforce` drops it
(and any `force-complain/` link), `aa-disable` links the file into `disable/`. Both on-disk forms
of complain mode (the flag and the `force-complain/` link) are read as complain.

The plan's operations, in order: every text to be written compiled by `apparmor_parser -Q -K`
against the host's own includes (on stdin, before anything is written); the file writes; the
disable/ and force-complain/ links; then, only on a kernel with AppArmor, the loads and unloads
(`kernel.py`, the seam). A step that fails undoes every step before it (a refused load puts the
previous file back). Without AppArmor in the kernel the on-disk state is managed and the plan
says the load is pending. `converge capture` is in `capture.py`.
"""

from converge.providers.apparmor.provider import AppArmorProvider

__all__ = ["AppArmorProvider"]
