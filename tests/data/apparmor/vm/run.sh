#!/bin/sh
# Runs the apparmor provider against a real AppArmor kernel, by hand, until the project has a VM
# tier: Debian's own kernel under qemu (TCG), booted with apparmor=1, whose root is this
# machine's / shared read-only over 9p with a tmpfs overlay (nothing reaches the machine).
# The guest runs steps.sh (converge plan/apply with the repository's .venv) and powers off;
# the console is printed. Needs: qemu-system-x86 busybox-static cpio kmod (apt), ~3.5 min.
# Usage (as root, from anywhere): sh tests/data/apparmor/vm/run.sh [WORKDIR]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../../.." && pwd)
work=${1:-$(mktemp -d /tmp/converge-apparmor-vm.XXXXXX)}
cd "$work"
[ -f kernel.deb ] || { apt-get download -q "$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | sort -V | tail -1 | cut -d' ' -f1)"; mv linux-image-*.deb kernel.deb; }
[ -d k ] || dpkg -x kernel.deb k
version=$(ls k/lib/modules)
depmod -b k "$version"
rm -rf ir && mkdir -p ir/bin ir/lib/modules ir/proc ir/sys ir/dev ir/lower ir/rw ir/newroot
cp /bin/busybox ir/bin/busybox
for module in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci 9pnet 9pnet_virtio netfs fscache 9p overlay; do
    file=$(grep -E "/$module\.ko:" "k/lib/modules/$version/modules.dep" | cut -d: -f1)
    cp "k/lib/modules/$version/$file" ir/lib/modules/ && echo "$(basename "$file")" >> ir/lib/modules/order
done
cat > ir/init <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
while read file; do insmod /lib/modules/\$file; done < /lib/modules/order
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /lower
mount -t tmpfs tmpfs /rw && mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot
umount /proc /sys; mount --move /dev /newroot/dev
exec switch_root /newroot /bin/sh $here/guest.sh $repo $here
INIT
chmod +x ir/init
(cd ir && find . | cpio -o -H newc 2>/dev/null | gzip -1) > initrd.gz
timeout 900 qemu-system-x86_64 -accel tcg -m 2048 -smp 2 -nographic -no-reboot \
    -kernel "k/boot/vmlinuz-$version" -initrd initrd.gz \
    -append "console=ttyS0 apparmor=1 security=apparmor quiet panic=-1" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    | tr -d '\r' | sed -e 's/\x1bc//g' -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' | sed -n '/=== apparmor enabled/,$p'
