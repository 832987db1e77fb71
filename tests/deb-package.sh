#!/usr/bin/env bash
# The Debian package (built by scripts/build-deb): lintian finds no error, the file list is the
# expected one, and it installs into a throwaway root (dpkg --root, maintainer scripts run
# chrootless with DPKG_ROOT) where mtctl runs on the installed example config, nothing is
# enabled, the modes are right, the man page renders and the bash completion loads; `remove`
# keeps the data, `purge` deletes it.
#
# Usage (as root, from the repository): tests/deb-package.sh
# Needs: lintian, dpkg, man (man-db), bash-completion is not needed.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "deb-package: FAILED: $*" >&2; exit 1; }
step() { printf '\n-- %s\n' "$*"; }

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
deb="target/debian/magic-transit_${version}-1_amd64.deb"
[ -f "$deb" ] || fail "$deb not found (run scripts/build-deb; the package version is the workspace version $version)"

step "lintian (no errors; every override has a reason in packaging/lintian-overrides)"
lintian --fail-on error --info "$deb" || fail "lintian reports errors"
echo "ok: no lintian errors"

step "file list"
dpkg-deb -c "$deb" | awk '{print $1, $6}' | sort -k2 > target/debian/files.txt
diff -u packaging/expected-files.txt target/debian/files.txt || fail "the package's files differ from packaging/expected-files.txt"
echo "ok: $(wc -l < target/debian/files.txt) entries as expected"

step "install into a throwaway root"
root=$(mktemp -d /tmp/mt-deb-root.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/log" "$root/etc"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
dpkg --root="$root" --force-script-chrootless --force-depends -i "$deb"

"$root/usr/bin/mtctl" --version | grep -qx "mtctl $version" || fail "mtctl --version"
"$root/usr/bin/mtctl" --config "$root/etc/magic-transit/config.toml" check-config > /dev/null \
  || fail "mtctl check-config on the installed example"
echo "ok: $("$root/usr/bin/mtctl" --version); check-config accepts the installed /etc/magic-transit/config.toml"

gid=$(grep '^magic-transit:' "$root/etc/group" | cut -d: -f3)
uid=$(grep '^magic-transit:' "$root/etc/passwd" | cut -d: -f3)
[ -n "$uid" ] && [ -n "$gid" ] || fail "postinst did not create the magic-transit user and group"
expect_mode() { [ "$(stat -c '%a %u %g' "$root$1")" = "$2" ] || fail "$1 is $(stat -c '%a %u %g' "$root$1"), expected $2"; }
expect_mode /var/lib/magic-transit "2770 $uid $gid"
expect_mode /var/lib/magic-transit/webhooks "2770 $uid $gid"
expect_mode /etc/magic-transit "750 0 $gid"
expect_mode /etc/magic-transit/config.toml "640 0 $gid"
expect_mode /etc/magic-transit/credentials "700 0 0"
echo "ok: user magic-transit ($uid), state directory 2770, config 0640 root:magic-transit, credentials 0700"

if [ -d "$root/etc/systemd/system" ] && find "$root/etc/systemd/system" -name '*.wants' | grep -q .; then
  fail "the package enabled a unit: $(find "$root/etc/systemd/system" -name '*.wants')"
fi
echo "ok: no unit enabled or started"

MANWIDTH=80 man -l "$root/usr/share/man/man1/mtctl.1.gz" 2>/dev/null | grep -q "cloudflare" || fail "man mtctl does not render"
for bin in mt-webhook-receiver mt-autowithdraw mt-network-analytics mt-dashboard; do
  MANWIDTH=80 man -l "$root/usr/share/man/man1/$bin.1.gz" 2>/dev/null | grep -q -- "--config" || fail "man $bin does not render"
done
for page in mtctl-status mtctl-cloudflare-check; do
  [ -f "$root/usr/share/man/man1/$page.1.gz" ] || fail "man $page (referred to by man mtctl) is missing"
done
echo "ok: man pages render, the subcommands' pages are there"
bash -c "source '$root/usr/share/bash-completion/completions/mtctl' && complete -p mtctl" \
  || fail "the bash completion does not load"

step "remove keeps the data, purge deletes it"
echo "database" > "$root/var/lib/magic-transit/magic_transit.db"
dpkg --root="$root" --force-script-chrootless --force-depends -r magic-transit
[ -f "$root/var/lib/magic-transit/magic_transit.db" ] || fail "remove deleted the database"
[ -f "$root/etc/magic-transit/config.toml" ] || fail "remove deleted the conffile"
dpkg --root="$root" --force-script-chrootless --force-depends -P magic-transit
[ ! -e "$root/var/lib/magic-transit" ] || fail "purge kept /var/lib/magic-transit"
echo "ok: remove kept the database and config; purge deleted the data"

echo
echo "deb-package: ok ($deb)"
