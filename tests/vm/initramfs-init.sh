#!/bin/busybox sh
# Stage 1, PID 1 in the initramfs: load the drivers, mount the machine's root read-only over 9p
# under a tmpfs overlay (the guest may change anything; nothing reaches the machine), then hand
# over to the session's boot script, shared read-only by the test fixture.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r module; do
    insmod "/modules/$module" || echo "converge-vm: insmod $module failed" > /dev/console
done < /modules/order
mkdir -p /lower /rw /newroot
# cache=loose: the machine's root does not change under a test session, and TCG makes every
# uncached 9p round trip (each library an sshd or shell loads) expensive.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /lower
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot
mkdir -p /newroot/converge-vm
mount -t 9p -o trans=virtio,version=9p2000.L,ro session /newroot/converge-vm
umount /proc /sys /dev
exec switch_root /newroot /bin/sh /converge-vm/boot.sh
echo "converge-vm: switch_root failed" > /dev/console
poweroff -f
