#!/bin/bash
# Debian system packages facegate needs, per purpose; installs the missing ones when it can.
#
#   scripts/system-packages.sh [--dry-run] PURPOSE...
#
#   run   `make setup` / `make demo`: Debian's python3 with venv (the wheels bring the rest)
#   deb   `make deb`: system pip for the wheel, readelf and ar (binutils: the package's library
#         dependencies, its archive) and xz (its compression); nothing is compiled
#   test  `make test` (includes run and deb): the binaries the tests start — mosquitto (broker
#         fixtures), postgresql (initdb/pg_ctl for the hub), chromium + chromium-driver (the hub
#         console, driven by selenium),
#         systemd (systemd-analyze on the units), lintian (checks the .deb)
#   list  print every purpose's packages and exit
#
# As root with apt-get: installs what is missing (apt-get update only then). Not root: prints
# the `sudo apt-get install ...` line of what is missing and exits 1. Nothing missing: exits 0
# at once. Not a dpkg/apt system: prints what it would need and exits 0 (install the
# equivalents with your distribution's tools). --dry-run: print the commands, run none.
# Optional, not installed here: python3-systemd (Debian's prebuilt systemd-python; the Makefile
# links it into the venv, giving journald fields without a compiler).
set -euo pipefail

run_pkgs="python3 python3-venv ca-certificates make"
deb_pkgs="python3-pip binutils xz-utils"
test_pkgs="mosquitto postgresql chromium chromium-driver systemd lintian"

dry=0
wanted=""
for arg in "$@"; do
    case "$arg" in
        --dry-run|-n) dry=1 ;;
        run) wanted="$wanted $run_pkgs" ;;
        deb) wanted="$wanted $deb_pkgs" ;;
        test) wanted="$wanted $run_pkgs $deb_pkgs $test_pkgs" ;;
        list) printf 'run: %s\ndeb: %s\ntest: %s %s %s\n' "$run_pkgs" "$deb_pkgs" "$run_pkgs" "$deb_pkgs" "$test_pkgs"; exit 0 ;;
        *) echo "usage: $0 [--dry-run] run|deb|test|list..." >&2; exit 2 ;;
    esac
done
if [ -z "$wanted" ]; then
    echo "usage: $0 [--dry-run] run|deb|test|list..." >&2
    exit 2
fi
# Unique, in order.
wanted=$(printf '%s\n' $wanted | awk '!seen[$0]++' | paste -sd' ')

if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
    echo "system-packages: not a Debian/apt system; facegate expects the equivalents of: $wanted" >&2
    exit 0
fi

missing=""
for pkg in $wanted; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = installed ] || missing="$missing $pkg"
done
missing=${missing# }
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "system-packages: missing Debian packages; install them with:" >&2
    echo "  sudo apt-get install --no-install-recommends $missing" >&2
    exit 1
fi
echo "system-packages: installing $missing" >&2
if [ "$dry" = 1 ]; then
    echo "apt-get update -qq"
    echo "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
