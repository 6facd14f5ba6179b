"""Issue 23, finding 12: an atomic replace keeps the file's extended attributes (SELinux label,
ACLs, user attributes), locally and over SSH.

Test hosts' /etc is an overlay whose upper layer is on the tests' filesystem (ext4 here), which
keeps `user.*` attributes and POSIX ACLs; tmpfs would do too on Linux 6.6 and later.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

from converge.providers.sysctl import DROP_IN
from tests.sshnet import SSHNetwork
from tests.testhost import TestHost

BASELINE = "[sysctl]\nnet.ipv4.conf.all.log_martians = 1\n"
# A POSIX ACL as the kernel stores it: user::rw- user:65534:r-- group::r-- mask::r-- other::r--.
ACL = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in (
    (0x01, 6, 0xFFFFFFFF), (0x02, 4, 65534), (0x04, 4, 0xFFFFFFFF), (0x10, 4, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)))
ACCESS_ACL = "system.posix_acl_access"
SET = (f"import os, sys; os.setxattr(sys.argv[1], 'user.test', b'kept'); "
       f"os.setxattr(sys.argv[1], '{ACCESS_ACL}', bytes.fromhex(sys.argv[2]))")
GET = f"import os, sys; print(os.getxattr(sys.argv[1], 'user.test').decode(), os.getxattr(sys.argv[1], '{ACCESS_ACL}').hex())"


def _prepare(host: TestHost) -> None:
    host.write(DROP_IN, "# before\n")
    host.run([sys.executable, "-c", SET, DROP_IN, ACL.hex()])


def _attributes(host: TestHost) -> list[str]:
    return host.run([sys.executable, "-c", GET, DROP_IN], check=False).stdout.split()


def test_a_local_write_keeps_extended_attributes(test_host: TestHost, tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.toml"
    baseline.write_text(BASELINE)
    _prepare(test_host)
    assert _attributes(test_host) == ["kept", ACL.hex()]
    applied = test_host.converge("apply", "--yes", str(baseline))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "log_martians = 1" in (test_host.read(DROP_IN) or "")
    assert _attributes(test_host) == ["kept", ACL.hex()]


def test_a_write_over_ssh_keeps_extended_attributes(network: SSHNetwork, tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.toml"
    baseline.write_text(BASELINE)
    host = network.add_host()
    _prepare(host)
    applied = network.converge("apply", "--yes", str(baseline), "-H", f"root@{host.address}")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "log_martians = 1" in (host.read(DROP_IN) or "")
    assert _attributes(host) == ["kept", ACL.hex()]
