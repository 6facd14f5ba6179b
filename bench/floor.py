"""The floor: one Python process doing, for every host at once (a thread each), a paramiko connect,
one exec and a close.

`--script FILE` sends FILE to `sh -s` as that one exec instead of running `true`: the floor plus
converge's remote work, without converge.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

import paramiko


def one_host(address: str, script: bytes | None, failures: list[str]) -> None:
    try:
        client = paramiko.SSHClient()
        client.load_host_keys(os.path.expanduser("~/.ssh/known_hosts"))
        # converge's fleet runs get --timeout 60: the floor waits as long (200 handshakes at once on
        # 2 shared cores outlast paramiko's 15 s banner timeout)
        client.connect(address, username="root", key_filename=os.path.expanduser("~/.ssh/id_ed25519"),
                       look_for_keys=False, allow_agent=False, timeout=60, banner_timeout=60, auth_timeout=60)
        stdin, stdout, _ = client.exec_command("sh -s" if script else "true")
        if script:
            stdin.write(script)
            stdin.channel.shutdown_write()
        stdout.read()
        if stdout.channel.recv_exit_status() != 0:
            failures.append(f"{address}: exit status {stdout.channel.recv_exit_status()}")
        client.close()
    except Exception as error:  # reported, and the run fails
        failures.append(f"{address}: {error!r}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--script", help="run this file with sh -s instead of true")
    parser.add_argument("addresses", nargs="+")
    options = parser.parse_args()
    script = open(options.script, "rb").read() if options.script else None  # noqa: SIM115 - read whole
    failures: list[str] = []
    threads = [threading.Thread(target=one_host, args=(address, script, failures)) for address in options.addresses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        sys.exit("\n".join(failures))


if __name__ == "__main__":
    main()
