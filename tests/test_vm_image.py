"""The VM image builder's parsers, on output captured from apt-cache and a real kernel package's modules.dep."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.vm.image import NEEDED_MODULES, load_order, module_name, newest_kernel_package, parse_modules_dep

DATA = Path(__file__).parent / "data" / "vm"


@pytest.fixture(scope="module")
def modules_dep() -> dict[str, list[str]]:
    return parse_modules_dep(gzip.decompress((DATA / "modules.dep-6.1.0-56-amd64.gz").read_bytes()).decode())


def test_newest_kernel_package_compares_abi_numbers_not_strings() -> None:
    search = (DATA / "apt-cache-search-linux-image.txt").read_text()
    assert "linux-image-6.1.0-47-amd64" in search.splitlines()[0]
    assert newest_kernel_package(search) == "linux-image-6.1.0-56-amd64"
    two_digit = "linux-image-6.1.0-9-amd64 - x\nlinux-image-6.1.0-10-amd64 - y\n"
    assert newest_kernel_package(two_digit) == "linux-image-6.1.0-10-amd64"


def test_no_kernel_package_is_an_error_that_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match="apt-get update"):
        newest_kernel_package("linux-image-6.1.0-56-cloud-amd64 - Linux 6.1 for x86-64 cloud\n")


def test_module_names_drop_directories_suffixes_and_dashes() -> None:
    assert module_name("kernel/net/9p/9pnet_virtio.ko") == "9pnet_virtio"
    assert module_name("kernel/drivers/char/hw_random/virtio-rng.ko.xz") == "virtio_rng"


def test_load_order_puts_every_module_after_its_dependencies(modules_dep: dict[str, list[str]]) -> None:
    order = load_order(modules_dep, NEEDED_MODULES)
    # Exactly the set measured by hand on this kernel (notes/vm-lab.md), nothing more.
    assert set(order) == {
        "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "9pnet", "9pnet_virtio",
        "netfs", "fscache", "9p", "overlay", "failover", "net_failover", "virtio_net",
    }
    for position, name in enumerate(order):
        assert set(modules_dep[name]) <= set(order[:position]), f"{name} loaded before {modules_dep[name]}"


def test_a_module_missing_from_modules_dep_is_named(modules_dep: dict[str, list[str]]) -> None:
    with pytest.raises(RuntimeError, match=r"module virtiofs_typo is not in modules\.dep"):
        load_order(modules_dep, ("overlay", "virtiofs_typo"))
