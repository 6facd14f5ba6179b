#!/bin/sh
# Stage 2, PID 1 on the overlaid root: the few things systemd would do for an sshd, the MAC
# policy for SELinux, and sshd with the session's keys. Reports on the console, which the
# fixture watches.
set -u
sshd_context=""
say() { echo "converge-vm: $*" > /dev/console; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t securityfs securityfs /sys/kernel/security
# The kernel package's own modules (this machine's root has none for this kernel), read-only:
# modprobe, modinfo and depmod's indexes work as on an installed system.
mkdir -p "/lib/modules/$(uname -r)"
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose modules "/lib/modules/$(uname -r)" || say "modules mount failed"
say "lsm $(cat /sys/kernel/security/lsm)"
case ",$(cat /sys/kernel/security/lsm)," in
*,selinux,*)
    # The kernel boots permissive with no policy; Debian's selinux-policy-default is on the
    # machine's root (its /etc/selinux/config says permissive, SELINUXTYPE=default).
    mount -t selinuxfs selinuxfs /sys/fs/selinux
    if load_policy -i; then say "selinux policy loaded, $(getenforce)"; else say "load_policy failed"; fi
    # Nothing here is labelled (9p without xattrs: unlabeled_t), so sshd cannot run in sshd_t.
    # It runs where Debian puts root's logins, unconfined_t, and libselinux is told that a login
    # from there stays there: otherwise sshd, in enforcing mode, refuses every session because
    # it finds no default context for root.
    sshd_context=unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023
    echo "unconfined_r:unconfined_t:s0 unconfined_r:unconfined_t:s0" >> /etc/selinux/default/contexts/users/unconfined_u
    # In enforcing mode a new file inherits its directory's type, and unlabeled_t may not live
    # on the overlay's tmpfs: label /etc (small, and its files' types matter: shadow_t) and the
    # directories under /var/lib and /var/log (the bulk of their files only needs reading), so
    # converge and the admin tools can create files in enforcing mode too.
    restorecon -R /etc
    find /var/lib /var/log -xdev -type d -exec restorecon {} +
    restorecon /root
    # devtmpfs made its nodes before the policy loaded (/dev/null reads as event_device_t).
    restorecon -R /dev
    say "relabelled /etc and the directories of /var/lib, /var/log"
    ;;
esac
hostname converge-vm
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
mkdir -p /root/.ssh /run/sshd /etc/ssh/converge-vm
chmod 0700 /root/.ssh
cp /converge-vm/authorized_keys /root/.ssh/authorized_keys
cp /converge-vm/ssh_host_ed25519_key /etc/ssh/converge-vm/
chmod 0600 /root/.ssh/authorized_keys /etc/ssh/converge-vm/ssh_host_ed25519_key
# The machine's own /root/.bashrc must not shape what commands see over SSH.
printf '# converge VM: neutral\n' > /root/.bashrc
if ${sshd_context:+runcon "$sshd_context"} /usr/sbin/sshd -f /converge-vm/sshd_config -E /var/log/sshd.log; then say "sshd started"; else say "sshd failed"; fi
# PID 1 must not exit (the kernel would panic). Nothing in the tier leaves orphans running long
# enough for unreaped zombies to matter; they go with the VM.
exec sleep infinity
