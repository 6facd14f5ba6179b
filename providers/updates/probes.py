"""Read-only scripts the plan runs on the host (python3 with python3-apt, as unattended-upgrades).

`PENDING` asks libapt-pkg, through python3-apt (which unattended-upgrades itself is built on and
depends on), for every installed package the newest version that a package file matching one of the
given Origins-Pattern strings offers, matched exactly as unattended-upgrades matches them
(`match_whitelist_string`: o/l/a/c/n/site with fnmatch, `${distro_id}`/`${distro_codename}`
substituted), skipping held packages and the Package-Blacklist. `apt-get -s upgrade` would instead
show apt's default candidates from every origin, and `unattended-upgrade --dry-run` takes locks,
writes its log and only knows the origins already configured.
"""

PENDING = r"""
import fnmatch, json, re, sys
try:
    import apt_pkg
except ImportError:
    sys.exit("python3-apt is not installed, so apt's candidates cannot be asked for")
apt_pkg.init()
release = {}
try:
    for line in open("/etc/os-release", encoding="utf-8"):
        key, _, value = line.strip().partition("=")
        release[key] = value.strip("'\"")
except OSError:
    pass
distro_id = {"debian": "Debian", "ubuntu": "Ubuntu"}.get(release.get("ID", ""), release.get("NAME", "").split(" ")[0])
codename = release.get("VERSION_CODENAME", "")
FIELDS = {"o": "origin", "origin": "origin", "l": "label", "label": "label", "a": "archive", "suite": "archive",
          "archive": "archive", "c": "component", "component": "component", "site": "site", "n": "codename",
          "codename": "codename"}
def matches(pattern, where):
    for token in pattern.replace("\\,", "%2C").split(","):
        what, _, value = token.partition("=")
        value = value.strip().replace("%2C", ",").replace("${distro_id}", distro_id).replace("${distro_codename}", codename)
        field = FIELDS.get(what.strip())
        if field is None or not fnmatch.fnmatch(getattr(where, field) or "", value):
            return False
    return True
blacklist = apt_pkg.config.value_list("Unattended-Upgrade::Package-Blacklist")
cache = apt_pkg.Cache(None)
found = []
for package in cache.packages:
    current = package.current_ver
    if current is None or package.selected_state == apt_pkg.SELSTATE_HOLD:
        continue
    name = package.get_fullname(True)
    if any(re.match(entry, name) for entry in blacklist):
        continue
    best = None
    for version in package.version_list:
        if apt_pkg.version_compare(version.ver_str, current.ver_str) <= 0:
            continue
        for where, _ in version.file_list:
            if any(matches(pattern, where) for pattern in sys.argv[1:]):
                if best is None or apt_pkg.version_compare(version.ver_str, best[0]) > 0:
                    origin = f"o={where.origin},a={where.archive},n={where.codename},l={where.label}"
                    best = (version.ver_str, origin)
    if best:
        found.append({"package": name, "installed": current.ver_str, "candidate": best[0], "origin": best[1]})
print(json.dumps(sorted(found, key=lambda item: item["package"])))
"""

# F_GETLK on each lock file: prints `PATH PID` for every one a process holds (apt and dpkg
# lock with fcntl, which flock(1) would not see).
LOCKS = r"""
import fcntl, os, struct, sys
for path in sys.argv[1:]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        continue
    answer = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
    kind, _, _, _, pid = struct.unpack("hhqqi4x", answer)
    if kind != fcntl.F_UNLCK:
        print(path, pid)
"""

# Apply's check that the drop-in's values are the ones apt now uses: each argument is a line
# `apt-config dump` must print.
APT_CONFIG_SHOWS = r"""
dump=$(apt-config dump) || exit 1
status=0
for line in "$@"; do
    printf '%s\n' "$dump" | grep -qxF -- "$line" || { printf 'apt-config dump does not show %s\n' "$line" >&2; status=1; }
done
exit "$status"
"""

# Apply's guard before installing: apt's own simulation of the exact install must touch only
# the packages listed (arguments: the apt-get arguments, then --, then the package names).
ONLY_LISTED = r"""
set -f
args=""; while [ "$1" != "--" ]; do args="$args $1"; shift; done; shift
out=$(apt-get -s $args) || { printf '%s\n' "$out" >&2; exit 1; }
status=0
for name in $(printf '%s\n' "$out" | sed -n 's/^\(Inst\|Remv\) \([^ ]*\).*/\2/p'); do
    case " $* " in
        *" $name "*) ;;
        *) printf 'apt would also change %s, which the plan did not list\n' "$name" >&2; status=1;;
    esac
done
exit "$status"
"""

# Apply's check after installing: each argument pair is a package and the version dpkg must show.
INSTALLED_VERSIONS = r"""
status=0
while [ "$#" -ge 2 ]; do
    got=$(dpkg-query -W -f '${Version}' "$1" 2>&1)
    [ "$got" = "$2" ] || { printf '%s is at %s, not %s\n' "$1" "$got" "$2" >&2; status=1; }
    shift 2
done
exit "$status"
"""
