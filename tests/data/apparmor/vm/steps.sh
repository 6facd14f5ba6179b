# converge against the real kernel: the nginx example in complain then enforce mode, real
# confinement checks, mode-only management of Debian's shipped profiles, removal.
repo=$1
cd /tmp
baseline=$repo/baselines/apparmor/nginx.toml
printf '[baseline]\nextends = ["%s"]\n[apparmor.profiles."usr.sbin.nginx"]\nmode = "enforce"\n' "$baseline" > enforce.toml
printf '[apparmor.profiles."bin.ping"]\nmode = "enforce"\n[apparmor.profiles."usr.sbin.dnsmasq"]\nmode = "complain"\n[apparmor.profiles."usr.bin.man"]\nmode = "complain"\n' > modes.toml
printf '[apparmor.profiles."bin.ping"]\nmode = "enforce"\n[apparmor.profiles."usr.sbin.dnsmasq"]\nmode = "disabled"\n[apparmor.profiles."usr.bin.man"]\nmode = "enforce"\n' > modes2.toml
printf '[apparmor.profiles."usr.sbin.nginx"]\nensure = "absent"\n' > absent.toml
run() {
    echo "\$ converge $*"; start=$(date +%s)
    "$repo/.venv/bin/python" -m converge "$@" > out.txt; code=$?
    cat out.txt
    echo "# exit $code, $(( $(date +%s) - start )) s"
}
loaded() { echo "=== /sys/kernel/security/apparmor/profiles:"; cat /sys/kernel/security/apparmor/profiles; echo "==="; }
# A stand-in nginx binary: cat, run from the path the profile attaches to.
cp /bin/cat /usr/sbin/nginx; mkdir -p /var/www; echo "hello from the web root" > /var/www/index.html
echo "not for nginx" > /srv/elsewhere.txt  # neither allowed nor denied by the profile
run plan "$baseline"
run apply "$baseline" --yes
loaded
run plan "$baseline"
echo "--- complain: confined nginx reads /etc/shadow:"; /usr/sbin/nginx /etc/shadow > /dev/null && echo allowed || echo refused
echo "--- complain: confined nginx reads /srv/elsewhere.txt:"; /usr/sbin/nginx /srv/elsewhere.txt > /dev/null && echo allowed || echo refused
run apply enforce.toml --yes
loaded
echo "--- enforce: confined nginx reads /etc/shadow:"; /usr/sbin/nginx /etc/shadow > /dev/null && echo allowed || echo refused
echo "--- enforce: confined nginx reads /srv/elsewhere.txt:"; /usr/sbin/nginx /srv/elsewhere.txt > /dev/null && echo allowed || echo refused
echo "--- enforce: confined nginx reads the web root:"; /usr/sbin/nginx /var/www/index.html
echo "--- unconfined cat reads /etc/shadow:"; cat /etc/shadow > /dev/null && echo allowed || echo refused
run apply enforce.toml --yes
run apply modes.toml --yes
loaded
run apply modes2.toml --yes
loaded
run plan modes2.toml
run apply absent.toml --yes
loaded
run plan absent.toml
