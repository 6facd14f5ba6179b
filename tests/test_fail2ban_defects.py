"""fail2ban on other people's files (issue 16 defects 11, 12, 19): fail2ban's own grammar in the
baseline, jails of other files seen by capture and diff, a file laid out differently that fail2ban
reads the same."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from converge.providers.fail2ban.spec import JAIL_FILE, JailOptions
from tests.testhost import TestHost

# Values Debian 12's own /etc/fail2ban/jail.conf (fail2ban 1.0.2) uses.
JAIL_CONF_VALUES = [
    {"port": "0:65535"},
    {"backend": "%(sshd_backend)s"},
    {"filter": "%(__name__)s[mode=%(mode)s]"},
    {"filter": 'recidive[_jailname="recidivist"]'},
    {"sendername": "Fail2Ban"},
    {"banaction": "%(banaction_allports)s"},
    {"banaction": "nftables[blocktype=reject]"},
]


@pytest.mark.parametrize("options", JAIL_CONF_VALUES, ids=lambda options: "-".join(options.values()))
def test_values_of_fail2bans_own_jail_conf_are_accepted(options: dict[str, str]) -> None:
    assert JailOptions.model_validate(options).section() == options


def _refusal(options: dict[str, str]) -> str:
    with pytest.raises(ValidationError) as error:
        JailOptions.model_validate(options)
    return str(error.value)


def test_a_ban_action_parameter_with_spaces_is_refused_saying_why() -> None:
    message = _refusal({"banaction": "nftables[blocktype=counter drop, table=f2b]"})
    assert "unescaped into root shell commands" in message and "finding 3" in message


def test_bantime_formula_is_refused_because_fail2ban_evaluates_it() -> None:
    message = _refusal({"bantime.formula": "ban.Time * (1<<(ban.Count if ban.Count<20 else 20)) * banFactor"})
    assert "Python expression fail2ban evaluates" in message and "did you mean" not in message


def test_port_zero_is_only_a_range_start() -> None:
    assert "out of range" in _refusal({"port": "0"})


@pytest.fixture
def host(test_host: TestHost) -> Iterator[TestHost]:
    test_host.run(["rm", "-rf", "/run/systemd/system"])
    test_host.write("/var/log/auth.log", "")
    test_host.write("/var/log/extra.log", "")
    yield test_host


def test_a_jail_file_laid_out_differently_that_fail2ban_reads_the_same_is_in_sync(host: TestHost, tmp_path: Path) -> None:
    baseline = tmp_path / "b.toml"
    baseline.write_text('[fail2ban]\nstart_server = true\n[fail2ban.defaults]\nignoreip = ["127.0.0.1/8", "::1", "192.0.2.7"]\n'
                        '[fail2ban.jails.sshd]\nenabled = true\nmaxretry = 3\n')
    apply = host.converge("apply", str(baseline), "--yes")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    text = host.read(JAIL_FILE) or ""
    # The same values, ignoreip over several lines (continuation lines), other spacing.
    relaid = text.replace("ignoreip = 127.0.0.1/8 ::1 192.0.2.7", "ignoreip = 127.0.0.1/8\n           ::1\n    192.0.2.7")
    relaid = relaid.replace("maxretry = 3", "maxretry=3")
    assert relaid != text
    host.write(JAIL_FILE, relaid)
    assert host.run(["fail2ban-client", "-t"], check=False).returncode == 0
    host.run(["fail2ban-client", "reload"])
    plan = host.converge("plan", str(baseline), "--json")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert json.loads(plan.stdout)["hosts"][0]["changes"] == []


def _capture(host: TestHost, out: Path) -> dict[str, object]:
    result = host.converge("capture", "-H", "local", "--only", "fail2ban", "-o", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    import tomllib
    return tomllib.loads(out.read_text())


def test_capture_and_diff_see_the_jails_other_files_enable(host: TestHost, tmp_path: Path) -> None:
    other = TestHost(tmp_path / "other", "other")
    try:
        for each in (host, other):
            each.run(["rm", "-rf", "/run/systemd/system"])
            each.write("/var/log/auth.log", "")
            each.run(["rm", "-f", "/etc/fail2ban/jail.d/defaults-debian.conf"])
        host.write("/etc/fail2ban/jail.d/site.conf",
                   "[sshd]\nenabled = true\n[recidive]\nenabled = true\n[nginx-http-auth]\nenabled = true\n"
                   "logpath = /var/log/auth.log\n")
        other.write("/etc/fail2ban/jail.d/site.conf", "[sshd]\nenabled = true\n")
        for each in (host, other):
            each.write("/var/log/fail2ban.log", "")
            each.run(["fail2ban-client", "-x", "start"])
        assert len(host.run(["fail2ban-client", "status"]).stdout.split("Jail list:")[1].split(",")) == 3
        left, right = _capture(host, tmp_path / "left.toml"), _capture(other, tmp_path / "right.toml")
        assert left != right
        assert left["fail2ban"]["enabled_elsewhere"] == ["nginx-http-auth", "recidive", "sshd"]  # type: ignore[index]
        # diff compares the captured tables: the two hosts run different jails.
        diff = host.converge("diff", str(tmp_path / "left.toml"), str(tmp_path / "right.toml"))
        assert diff.returncode == 2 and "no differences" not in diff.stdout, diff.stdout + diff.stderr
        # The captured baseline plans clean on its own host, and warns on the other one.
        plan = host.converge("plan", str(tmp_path / "left.toml"))
        assert plan.returncode == 0, plan.stdout + plan.stderr
        elsewhere = other.converge("plan", str(tmp_path / "left.toml"), "--json")
        warnings = json.loads(elsewhere.stdout)["hosts"][0]["warnings"]
        assert any("nginx-http-auth" in w and "recidive" in w for w in warnings), warnings
    finally:
        for each in (host, other):
            each.run(["fail2ban-client", "stop"], check=False)
        other.close()
