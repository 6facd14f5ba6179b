"""sshd: OpenSSH server keywords, in a drop-in converge owns that sshd reads first.

What is compared is sshd's own effective configuration (`sshd -T` for converge's connection, every
include, default and Match block resolved), so a keyword another file sets first, or a Match block
overrides, is reported. Apply writes the drop-in (and the `Include` line when sshd_config lacks it),
validates the whole configuration with `sshd -t`, undoing the writes if sshd refuses it, and reloads
sshd. The provider is a `ConnectionGuard`: a baseline that would refuse converge's own connection is
refused before anything changes.
"""

from converge.providers.sshd.provider import SshdProvider

__all__ = ["SshdProvider"]
