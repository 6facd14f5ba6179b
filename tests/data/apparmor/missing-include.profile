abi <abi/3.0>,
include <tunables/global>

profile broken /usr/bin/broken {
  include <abstractions/no-such-abstraction>
  /etc/hostname r,
}
