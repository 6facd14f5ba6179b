"""The policy store read through libsemanage gives exactly what `semanage boolean -l` and `semanage
port -l` list, on a real store with local changes (Debian's reference policy in a test host)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from converge.provider import ParseError
from converge.providers.selinux.parse import parse_boolean_list, parse_port_list
from converge.providers.selinux.provider import SelinuxProvider
from converge.providers.selinux.spec import SelinuxSpec
from converge.providers.selinux.store import BOOLEANS, PORTS, parse_booleans, parse_ports
from tests.testhost import TestHost


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestHost]:
    test_host = TestHost(Path(tmp_path_factory.mktemp("store")) / "host")
    # Local changes of every kind the lists show: booleans set both ways, a port the policy defines
    # too (listed twice), a new port and a new range.
    test_host.run(["setsebool", "-P", "httpd_enable_homedirs=on", "httpd_can_network_connect_db=on"])
    default_on = next(name for name, value in parse_boolean_list(test_host.run(["semanage", "boolean", "-l"]).stdout).items()
                      if value)
    test_host.run(["setsebool", "-P", f"{default_on}=off"])
    test_host.run(["semanage", "import"], input="port -m -t http_port_t -p tcp 8080\nport -a -t http_port_t -p tcp 18080\n"
                                                "port -a -t http_port_t -p udp 19000-19010\n")
    yield test_host
    test_host.close()


def test_booleans_equal_semanage_boolean_l(host: TestHost) -> None:
    listed = parse_boolean_list(host.run(["semanage", "boolean", "-l"]).stdout)
    read = parse_booleans(host.run(list(BOOLEANS.argv)).stdout)
    assert read == listed
    assert read["httpd_enable_homedirs"] and read["httpd_can_network_connect_db"]
    assert len(read) > 100 and False in read.values()


def test_ports_equal_semanage_port_l(host: TestHost) -> None:
    listed = parse_port_list(host.run(["semanage", "port", "-l"]).stdout)
    read = parse_ports(host.run(list(PORTS.argv)).stdout)
    assert read == listed
    assert read[("tcp", "8080")] == 2 and read[("tcp", "18080")] == 1 and read[("udp", "19000-19010")] == 1


def test_a_store_that_cannot_be_read_is_the_tools_error(tmp_path: Path) -> None:
    bare = TestHost(tmp_path / "bare")
    try:
        bare.run(["rm", "-rf", "/var/lib/selinux/default"])
        result = bare.run(list(BOOLEANS.argv), check=False)
        assert result.returncode != 0
        assert "SELinux policy is not managed or store cannot be accessed" in result.stderr
    finally:
        bare.close()


@pytest.mark.parametrize(("parse", "text"), [(parse_booleans, "boolean httpd_x maybe\n"), (parse_booleans, "boolean lonely\n"),
                                             (parse_ports, "port tcp 80\n"), (parse_ports, "port icmp 80 x_port_t\n"),
                                             (parse_ports, "httpd_x 1\n")])
def test_unreadable_lines_are_named(parse: object, text: str) -> None:
    with pytest.raises(ParseError, match=text.strip()):
        parse(text)  # type: ignore[operator]


def test_one_process_reads_both_lists() -> None:
    """libsemanage lets one reader hold the store and makes a second wait a second: a plan
    declaring booleans and ports reads both lists in one process, one command of the batch."""
    spec = SelinuxSpec.model_validate({"booleans": {"httpd_can_network_connect": True},
                                       "ports": [{"port": "8080", "protocol": "tcp", "type": "http_port_t"}]})
    store_reads = {read for read in SelinuxProvider().reads(spec) if "selinux-store" in getattr(read, "argv", ())}
    assert store_reads == {BOOLEANS} and BOOLEANS is PORTS
