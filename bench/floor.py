"""The floor: one Python process doing a paramiko connect, one exec and a close per host."""

from __future__ import annotations

import os
import sys

import paramiko


def main(addresses: list[str]) -> None:
    for address in addresses:
        client = paramiko.SSHClient()
        client.load_host_keys(os.path.expanduser("~/.ssh/known_hosts"))
        client.connect(address, username="root", key_filename=os.path.expanduser("~/.ssh/id_ed25519"),
                       look_for_keys=False, allow_agent=False)
        _, stdout, _ = client.exec_command("true")
        stdout.channel.recv_exit_status()
        client.close()


if __name__ == "__main__":
    main(sys.argv[1:])
