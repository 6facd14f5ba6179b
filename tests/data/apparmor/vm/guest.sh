#!/bin/sh
# PID 1 of the guest (after switch_root): mount what AppArmor needs, run the steps, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C NO_COLOR=1
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t securityfs securityfs /sys/kernel/security
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp
echo; echo "=== apparmor enabled: $(cat /sys/module/apparmor/parameters/enabled)"
sh "$2/steps.sh" "$1" "$2" 2>&1
echo "=== guest done"
poweroff -f
