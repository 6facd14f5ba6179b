abi <abi/3.0>,
include <tunables/global>

profile nginx /usr/sbin/nginx {
  include <abstractions/base>
  /var/www/** rz,
}
