"""The VM image: Debian's own kernel package and a small initramfs, built from this machine's packages.

The kernel is the newest `linux-image-6.1.0-N-amd64` apt knows (it has AppArmor and SELinux built
in); the initramfs holds busybox-static, the stage-1 init and the modules that reach the machine's
root over virtio 9p and the network over virtio-net. The package's whole module tree, indexed by
depmod, is kept too: the guest mounts it as its /lib/modules/VERSION, so modprobe works there as on
an installed system. All of it is cached under CACHE_ROOT, keyed by the kernel package and a digest
of what goes into the initramfs, so a second session boots at once.
"""

from __future__ import annotations

import graphlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE_ROOT = Path(os.environ.get("CONVERGE_VM_CACHE", "/var/cache/converge-vm"))
KERNEL_PACKAGE = re.compile(r"^(linux-image-6\.1\.0-(\d+)-amd64) ")
BUSYBOX = Path("/bin/busybox")  # busybox-static: the initramfs has no libraries
INIT_SCRIPT = Path(__file__).with_name("initramfs-init.sh")
# What stage 1 needs: virtio PCI transport, 9p over virtio (the machine's root), overlayfs and
# virtio-net. Their own dependencies come from modules.dep.
NEEDED_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_net")


@dataclass(frozen=True)
class Image:
    kernel: Path
    initramfs: Path
    modules: Path  # the package's lib/modules/VERSION, depmod run: the guest's /lib/modules/VERSION
    version: str  # the kernel release, e.g. 6.1.0-56-amd64


def newest_kernel_package(apt_cache_search: str) -> str:
    """The newest ABI of `apt-cache search --names-only` output (package - description lines)."""
    found = [(int(match[2]), match[1]) for line in apt_cache_search.splitlines() if (match := KERNEL_PACKAGE.match(line))]
    if not found:
        raise RuntimeError("apt knows no linux-image-6.1.0-N-amd64 package; run apt-get update")
    return max(found)[1]


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep (`path: dependency paths`) as {module name: [dependency names]}."""
    dependencies: dict[str, list[str]] = {}
    for line in text.splitlines():
        path, separator, needs = line.partition(":")
        if separator:
            dependencies[module_name(path)] = [module_name(dependency) for dependency in needs.split()]
    return dependencies


def module_name(path: str) -> str:
    """`kernel/net/9p/9pnet_virtio.ko` → `9pnet_virtio` (compressed modules keep their name)."""
    return Path(path).name.split(".ko")[0].replace("-", "_")


def load_order(dependencies: dict[str, list[str]], wanted: tuple[str, ...]) -> list[str]:
    """Every wanted module and what it needs, each after all of its dependencies."""
    graph: dict[str, list[str]] = {}
    pending = list(wanted)
    while pending:
        name = pending.pop()
        if name in graph:
            continue
        if name not in dependencies:
            raise RuntimeError(f"module {name} is not in modules.dep")
        graph[name] = dependencies[name]
        pending.extend(dependencies[name])
    return list(graphlib.TopologicalSorter(graph).static_order())


def _run(argv: list[str], cwd: Path | None = None) -> str:
    completed = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"building the VM image: {' '.join(argv)} failed ({completed.returncode}): {completed.stderr.strip()}")
    return completed.stdout


def _module_paths(modules_dep: str) -> dict[str, str]:
    return {module_name(path): path for line in modules_dep.splitlines() if (path := line.partition(":")[0])}


def _digest() -> str:
    """Changes whenever the image would: its init, busybox, the module list or the cache's layout."""
    digest = hashlib.sha256(b"layout 2: vmlinuz, initramfs.cpio, modules/\n")
    digest.update(INIT_SCRIPT.read_bytes())
    digest.update(BUSYBOX.read_bytes())
    digest.update(" ".join(NEEDED_MODULES).encode())
    return digest.hexdigest()[:12]


def build_image(cache_root: Path = CACHE_ROOT) -> Image:
    """The cached image for the newest kernel package, built first if it is not there yet."""
    package = newest_kernel_package(_run(["apt-cache", "search", "--names-only", r"^linux-image-6\.1\.0-[0-9]+-amd64$"]))
    version = package.removeprefix("linux-image-")
    image_dir = cache_root / f"{package}-{_digest()}"
    image = Image(image_dir / "vmlinuz", image_dir / "initramfs.cpio", image_dir / "modules", version)
    if image.kernel.exists() and image.initramfs.exists() and image.modules.is_dir():
        return image
    cache_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root, prefix=".build-") as scratch:
        work = Path(scratch)
        # apt's download sandbox user cannot write a root-owned temporary directory.
        os.chmod(work, 0o755)
        _run(["apt-get", "download", "-q", package], cwd=work)
        (deb,) = work.glob("*.deb")
        tree = work / "tree"
        _run(["dpkg", "-x", str(deb), str(tree)])
        _run(["depmod", "-b", str(tree), version])
        modules_root = tree / "lib/modules" / version
        modules_dep = (modules_root / "modules.dep").read_text()
        order = load_order(parse_modules_dep(modules_dep), NEEDED_MODULES)
        staging = work / "initramfs"
        for directory in ("bin", "modules", "proc", "sys", "dev"):
            (staging / directory).mkdir(parents=True)
        shutil.copy2(BUSYBOX, staging / "bin/busybox")
        shutil.copy2(INIT_SCRIPT, staging / "init")
        (staging / "init").chmod(0o755)
        paths = _module_paths(modules_dep)
        for name in order:
            shutil.copy2(modules_root / paths[name], staging / "modules" / Path(paths[name]).name)
        (staging / "modules/order").write_text("".join(Path(paths[name]).name + "\n" for name in order))
        files = sorted(str(path.relative_to(staging)) for path in staging.rglob("*"))
        with (work / "initramfs.cpio").open("wb") as archive:
            subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=staging, input="\n".join(files).encode(),
                           stdout=archive, check=True)
        built = work / "image"
        built.mkdir()
        shutil.move(tree / "boot" / f"vmlinuz-{version}", built / "vmlinuz")
        shutil.move(work / "initramfs.cpio", built / "initramfs.cpio")
        shutil.move(modules_root, built / "modules")
        # Another session may have finished the same image meanwhile; either copy is good.
        try:
            built.rename(image_dir)
        except OSError:
            if not image.initramfs.exists():
                raise
    return image
