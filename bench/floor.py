"""The floor: one Python process doing a paramiko connect, one exec and a close per host.

`--script FILE` sends FILE to `sh -s` as that one exec instead of running `true`: the floor plus
converge's remote work, without converge.
"""

from __future__ import annotations

import argparse
import os

import paramiko


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--script", help="run this file with sh -s instead of true")
    parser.add_argument("addresses", nargs="+")
    options = parser.parse_args()
    script = open(options.script, "rb").read() if options.script else None  # noqa: SIM115 - read whole
    for address in options.addresses:
        client = paramiko.SSHClient()
        client.load_host_keys(os.path.expanduser("~/.ssh/known_hosts"))
        client.connect(address, username="root", key_filename=os.path.expanduser("~/.ssh/id_ed25519"),
                       look_for_keys=False, allow_agent=False)
        stdin, stdout, _ = client.exec_command("sh -s" if script else "true")
        if script:
            stdin.write(script)
            stdin.channel.shutdown_write()
        stdout.read()
        stdout.channel.recv_exit_status()
        client.close()


if __name__ == "__main__":
    main()
