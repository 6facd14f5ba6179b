"""The commit-confirm watchdog, run for real in a test host: it outlives the command that armed
it, restores files and directories exactly when not confirmed, and does nothing when confirmed."""

from __future__ import annotations

import time

from converge.safeguard import ARM_SCRIPT, CONFIRM_SCRIPT
from tests.testhost import TestHost

DIRECTORY = "/var/lib/converge/rollback/test"


def _arm(host: TestHost, timeout: str, *paths: str, commands: tuple[str, ...] = ()) -> None:
    host.run(["sh", "-c", ARM_SCRIPT, "sh", DIRECTORY, timeout, *paths, "--", *commands])


def _wait_for(host: TestHost, path: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while host.read(path) is None:
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_unconfirmed_changes_are_rolled_back(test_host: TestHost) -> None:
    test_host.write("/etc/fw/rules.conf", "allow 22\n")
    test_host.write("/etc/fw/zones/public.xml", "<zone/>\n")
    test_host.write("/etc/fw.conf", "ENABLED=no\n")
    _arm(test_host, "1", "/etc/fw", "/etc/fw.conf", "/etc/fw-new.conf",
         commands=("sh -c 'echo reloaded > /run/fw-reloaded'",))
    # The change the watchdog guards: edit, add, remove, create.
    test_host.write("/etc/fw/rules.conf", "deny 22\n")
    test_host.write("/etc/fw/zones/added.xml", "<zone/>\n")
    test_host.run(["rm", "/etc/fw/zones/public.xml"])
    test_host.write("/etc/fw.conf", "ENABLED=yes\n")
    test_host.write("/etc/fw-new.conf", "new\n")

    _wait_for(test_host, f"{DIRECTORY}/rolled-back")
    assert test_host.read("/etc/fw/rules.conf") == "allow 22\n"
    assert test_host.read("/etc/fw/zones/public.xml") == "<zone/>\n"
    assert test_host.read("/etc/fw/zones/added.xml") is None
    assert test_host.read("/etc/fw.conf") == "ENABLED=no\n"
    assert test_host.read("/etc/fw-new.conf") is None
    assert test_host.read("/run/fw-reloaded") == "reloaded\n"


def test_confirmed_changes_stay(test_host: TestHost) -> None:
    test_host.write("/etc/fw.conf", "ENABLED=no\n")
    _arm(test_host, "1", "/etc/fw.conf", commands=("touch /run/fw-reloaded",))
    test_host.write("/etc/fw.conf", "ENABLED=yes\n")
    test_host.run(["sh", "-c", CONFIRM_SCRIPT, "sh", DIRECTORY])
    time.sleep(1.5)  # past the deadline: a live watchdog would have restored the file by now
    assert test_host.read("/etc/fw.conf") == "ENABLED=yes\n"
    assert test_host.read(f"{DIRECTORY}/rolled-back") is None
    assert test_host.read("/run/fw-reloaded") is None
    # The watchdog's process group is gone (killed, at most waiting to be reaped).
    states = test_host.run(["sh", "-c", f"ps -o stat= -g $(cat {DIRECTORY}/pid) || true"]).stdout.split()
    assert all(state.startswith("Z") for state in states)


def test_a_confirmation_never_interrupts_a_restore_that_began(test_host: TestHost) -> None:
    """Security finding 4: a confirmation arriving while the watchdog restores reports the restore
    and lets it finish, instead of killing it half-way (which left ufw inactive)."""
    test_host.write("/etc/fw.conf", "ENABLED=no\n")
    # A slow reactivation, as `ufw-init force-stop; start` is.
    _arm(test_host, "0.2", "/etc/fw.conf", commands=("sleep 2", "touch /run/fw-reloaded"))
    test_host.write("/etc/fw.conf", "ENABLED=yes\n")
    _wait_for(test_host, f"{DIRECTORY}/restoring")
    answer = test_host.run(["sh", "-c", CONFIRM_SCRIPT, "sh", DIRECTORY]).stdout.strip()
    assert answer == "restoring"
    _wait_for(test_host, f"{DIRECTORY}/rolled-back")
    assert test_host.read("/etc/fw.conf") == "ENABLED=no\n"
    assert test_host.read("/run/fw-reloaded") is not None
    assert test_host.read(f"{DIRECTORY}/confirmed") is None


def test_confirmation_says_confirmed_only_once_the_watchdog_is_gone(test_host: TestHost) -> None:
    _arm(test_host, "30", "/etc/fw.conf")
    assert test_host.run(["sh", "-c", CONFIRM_SCRIPT, "sh", DIRECTORY]).stdout.strip() == "confirmed"
    pid = (test_host.read(f"{DIRECTORY}/pid") or "").strip()
    states = test_host.run(["sh", "-c", f"ps -o stat= -p {pid} || true"]).stdout.split()
    assert all(state.startswith("Z") for state in states)


def test_two_runs_in_the_same_second_never_share_a_directory() -> None:
    """Security finding 8: backups and rollback snapshots are per run, with a random part."""
    from converge.hosts.local import LocalHost

    first, second = LocalHost(), LocalHost()
    assert first.backup_dir != second.backup_dir
    assert first.run_id.rsplit("-", 1)[1] != second.run_id.rsplit("-", 1)[1]  # not the timestamp alone
