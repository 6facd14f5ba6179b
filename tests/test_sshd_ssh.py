"""The sshd provider over real SSH: converge in a controller namespace manages a second sshd that runs
from Debian's own /etc/ssh/sshd_config and sshd_config.d (port 2222), and connects through that sshd,
so what it changes is what lets it in."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.sshnet import SSHNetwork, SSHTestHost

DROP_IN = "/etc/ssh/sshd_config.d/00-converge.conf"
LAB_DROP_IN = "/etc/ssh/sshd_config.d/50-lab.conf"
PORT = 2222
# The lab's own drop-in: another port and pidfile than the test host's own sshd, and one host key.
LAB = "Port 2222\nPidFile /run/sshd-debian.pid\nHostKey /etc/ssh/ssh_host_ed25519_key\n"
HARDENING = """\
[sshd]
PermitRootLogin = "prohibit-password"
PasswordAuthentication = false
KbdInteractiveAuthentication = false
X11Forwarding = false
MaxAuthTries = 3
LoginGraceTime = "30s"
ClientAliveInterval = 300
AllowGroups = ["root", "admin"]
Ciphers = ["chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com"]
MACs = ["hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com"]
"""
EFFECTIVE = {
    "permitrootlogin": "without-password", "passwordauthentication": "no", "kbdinteractiveauthentication": "no",
    "x11forwarding": "no", "maxauthtries": "3", "logingracetime": "30", "clientaliveinterval": "300",
    "ciphers": "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com",
    "macs": "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com",
}


def start_debian_sshd(network: SSHNetwork, host: SSHTestHost, lab: str = LAB) -> str:
    """Debian's sshd on port 2222 of `host`, trusted by the controller; returns the target."""
    host.write(LAB_DROP_IN, lab)
    host.run(["mkdir", "-p", "-m", "0700", "/root/.ssh"])
    host.write("/root/.ssh/authorized_keys", network.public_key)
    host.run(["/usr/sbin/sshd", "-E", "/var/log/sshd-debian.log"])
    listening(host)
    known = network.controller.read("/root/.ssh/known_hosts") or ""
    network.controller.write("/root/.ssh/known_hosts", known + f"[{host.address}]:{PORT} {host.host_key}\n")
    return f"root@{host.address}:{PORT}"


def listening(host: SSHTestHost) -> bool:
    return f":{PORT} " in host.run(["ss", "-Hltn"]).stdout


def effective(host: SSHTestHost, user: str = "root") -> dict[str, str]:
    """`sshd -T` for converge's connection; keywords printed on several lines are joined by spaces."""
    out = host.run(["/usr/sbin/sshd", "-T", "-C", f"user={user},host=198.18.0.1,addr=198.18.0.1"]).stdout
    values: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        values[key] = f"{values[key]} {value}" if key in values else value
    return values


def etc_changes(host: SSHTestHost) -> list[str]:
    return [path for path in host.changed_files() if path.startswith("/etc/")]


def baseline(tmp_path: Path, text: str, name: str = "baseline") -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def host(network: SSHNetwork) -> SSHTestHost:
    return network.add_host()


@pytest.fixture
def target(network: SSHNetwork, host: SSHTestHost) -> str:
    return start_debian_sshd(network, host)


def test_plan_apply_plan_of_a_hardening_baseline(network: SSHNetwork, host: SSHTestHost, target: str, tmp_path: Path) -> None:
    hardening = baseline(tmp_path, HARDENING)
    plan = network.converge("plan", hardening, "-H", target, "--json")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    changes = {change["name"]: change for change in json.loads(plan.stdout)["hosts"][0]["changes"]}
    assert changes["PasswordAuthentication"]["before"] is True and changes["PasswordAuthentication"]["after"] is False
    assert changes["MaxAuthTries"]["effective"] == {"before": 6, "after": 3}
    # Debian's sshd already uses prohibit-password: not a change, and not repeated in the drop-in.
    assert "PermitRootLogin" not in changes
    assert changes["X11Forwarding"]["drop-in"] == {"before": None, "after": False}

    applied = network.converge("apply", hardening, "-H", target, "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "sshd -t: the new configuration is valid" in applied.stdout
    assert "reloaded sshd (SIGHUP" in applied.stdout
    now = effective(host)
    assert {key: now[key] for key in EFFECTIVE} == EFFECTIVE
    assert now["allowgroups"] == "root admin"

    again = network.converge("apply", hardening, "-H", target, "--yes")
    assert again.returncode == 0, again.stdout
    assert "in sync" in again.stdout and "wrote" not in again.stdout


def test_a_keyword_set_first_elsewhere_and_a_match_override_are_reported(
        network: SSHNetwork, host: SSHTestHost, tmp_path: Path) -> None:
    target = start_debian_sshd(network, host, LAB + "Match User root\n    X11Forwarding yes\n")
    config = host.read("/etc/ssh/sshd_config") or ""
    host.write("/etc/ssh/sshd_config", config.replace("Include /etc/ssh/sshd_config.d/*.conf",
                                                      "MaxAuthTries 5\nInclude /etc/ssh/sshd_config.d/*.conf"))
    plan = network.converge("plan", baseline(tmp_path, "[sshd]\nX11Forwarding = false\nMaxAuthTries = 3\n"), "-H", target)
    assert plan.returncode == 2, plan.stdout
    assert ("X11Forwarding: sshd will use yes, not no: a Match block (User root) in /etc/ssh/sshd_config.d/50-lab.conf "
            "line 5 overrides it for converge's connection (user=root,host=198.18.0.1,addr=198.18.0.1)") in plan.stdout
    # MaxAuthTries 5 comes before the Include: converge adds its Include at the top, so 3 wins then.
    assert re.search(r"~ MaxAuthTries +5 -> 3", plan.stdout), plan.stdout
    assert "include:/etc/ssh/sshd_config" in plan.stdout
    applied = network.converge("apply", baseline(tmp_path, "[sshd]\nMaxAuthTries = 3\n", "max"), "-H", target, "--yes")
    assert applied.returncode == 0, applied.stdout
    assert (host.read("/etc/ssh/sshd_config") or "").startswith("# Added by converge")
    assert (host.read("/etc/ssh/sshd_config") or "").endswith(config.split("Include /etc/ssh/sshd_config.d/*.conf")[1])
    assert effective(host)["maxauthtries"] == "3"


def test_a_value_sshd_refuses_is_a_plan_error_and_changes_nothing(
        network: SSHNetwork, host: SSHTestHost, target: str, tmp_path: Path) -> None:
    before = etc_changes(host)
    refused = network.converge("apply", baseline(tmp_path, '[sshd]\nMaxStartups = "10:30:5"\n'), "-H", target, "--yes")
    assert refused.returncode == 1
    assert "sshd refuses the configuration this baseline makes" in refused.stdout
    assert "/etc/ssh/sshd_config.d/00-converge.conf line 3: Invalid MaxStartups spec." in refused.stdout
    assert host.read(DROP_IN) is None and etc_changes(host) == before and listening(host)


def test_root_login_refused_over_ssh_is_a_refused_lockout(
        network: SSHNetwork, host: SSHTestHost, target: str, tmp_path: Path) -> None:
    refused = network.converge("apply", baseline(tmp_path, '[sshd]\nPermitRootLogin = "no"\n'), "-H", target, "--yes")
    print(refused.stdout)
    assert refused.returncode == 1
    assert "refusing" in refused.stdout and "converge's own SSH connection" in refused.stdout
    assert host.read(DROP_IN) is None
    assert network.converge("plan", baseline(tmp_path, "[sshd]\n", "empty"), "-H", target).returncode == 0


def test_allow_groups_without_the_users_group_is_refused(
        network: SSHNetwork, host: SSHTestHost, target: str, tmp_path: Path) -> None:
    groups = baseline(tmp_path, '[sshd]\nAllowGroups = ["sshusers", "admin"]\n')
    refused = network.converge("apply", groups, "-H", target, "--yes")
    assert refused.returncode == 1 and "refusing" in refused.stdout
    assert host.read(DROP_IN) is None


def test_prohibit_password_is_allowed_for_root_with_a_key(
        network: SSHNetwork, host: SSHTestHost, target: str, tmp_path: Path) -> None:
    # prohibit-password is Debian's default already: X11Forwarding makes it a change to apply.
    keys_only = baseline(tmp_path, '[sshd]\nPermitRootLogin = "prohibit-password"\nX11Forwarding = false\n')
    allowed = network.converge("apply", keys_only, "-H", target, "--yes")
    assert allowed.returncode == 0, allowed.stdout
    assert "confirmed over a new connection" in allowed.stdout
    assert effective(host)["permitrootlogin"] == "without-password"


def test_allow_lockout_applies_then_the_host_rolls_back_by_itself(
        network: SSHNetwork, host: SSHTestHost, target: str, tmp_path: Path) -> None:
    locked_out = network.converge("apply", baseline(tmp_path, '[sshd]\nPermitRootLogin = "no"\n'), "-H", target, "--yes",
                                  "--allow-lockout", "--confirm-timeout", "10")
    print(locked_out.stdout)
    assert locked_out.returncode == 1
    assert "reloaded sshd" in locked_out.stdout  # it was applied for real
    assert "rolled back: the host is reachable again" in locked_out.stdout
    assert host.read(DROP_IN) is None
    assert effective(host)["permitrootlogin"] == "without-password"
    assert network.converge("plan", baseline(tmp_path, "[sshd]\n", "empty"), "-H", target).returncode == 0


@pytest.mark.parametrize(("table", "message"), [
    ("PermitRootLogn = \"no\"", "unknown key; did you mean 'PermitRootLogin'?"),
    ("Banner = \"/etc/issue net\"", 'expected an absolute path, or "none" (one word: no spaces, quotes or newlines)'),
    ("MaxStartups = \"10\\n\"", 'expected a number or "start:rate:full" (one word: no spaces, quotes or newlines)'),
    ("PasswordAuthentication = \"no\"", "expected true or false (written yes/no)"),
    ("Match = \"User bob\"", "match blocks are out of scope for the sshd provider"),
])
def test_bad_input_names_file_line_and_key(  # noqa: PLR0917 - pytest passes fixtures positionally
        network: SSHNetwork, host: SSHTestHost, target: str, tmp_path: Path, table: str, message: str) -> None:
    path = baseline(tmp_path, f"[sshd]\nMaxAuthTries = 3\n{table}\n")
    result = network.converge("apply", path, "-H", target, "--yes")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    key = table.split(" =", maxsplit=1)[0]
    assert f"{path}:3: sshd.{key}: {message}" in output, output
    assert host.read(DROP_IN) is None


def test_an_unsupported_algorithm_is_a_plan_error_naming_the_key(
        network: SSHNetwork, host: SSHTestHost, target: str, tmp_path: Path) -> None:
    result = network.converge("apply", baseline(tmp_path, '[sshd]\nCiphers = ["aes256-gcm@openssh.com", "aes512-ctr"]\n'),
                              "-H", target, "--yes")
    assert result.returncode == 1
    assert "sshd: Ciphers: not supported by this host's OpenSSH (ssh -Q cipher): aes512-ctr" in result.stdout
    assert host.read(DROP_IN) is None
