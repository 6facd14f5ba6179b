"""The VM test tier: real AppArmor and SELinux kernels under qemu, reached over SSH."""
