#!/bin/bash
# Issue 21's acceptance, as a newcomer would do it: a minimal Debian 12 root (debootstrap
# minbase) with only git, a clone of this repository, the README's apt line, `make demo`, then
# what `make test` installs and runs (scripts/system-packages.sh test) with a subset of the suite
# (pass pytest arguments to choose it; the whole suite takes long on a small machine).
# Prints ONE JSON object of step times and exit codes. Needs root, debootstrap and a Debian mirror.
#
#   sudo bench/newcomer_chroot.sh [PYTEST_ARGS...]
#   sudo bench/newcomer_chroot.sh --make-test     # the README's `make test` itself, with CI=true
#
# ../shared beside the clone is a bind mount of this checkout's ../shared (the tests' data).
# Behind a proxy that re-signs TLS, set PIP_CERT to its CA bundle: it is copied into the root.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHE=${FACEGATE_CHROOT_CACHE:-/var/cache/facegate-bench}
BASE=$CACHE/bookworm-$(dpkg --print-architecture)-minbase.tar
LOG=${LOG:-/tmp/facegate-newcomer.log}
: > "$LOG"
[ $# -gt 0 ] || set -- tests/test_docs.py tests/test_config.py tests/sync/test_agent.py tests/hub/test_console_browser.py tests/packaging
mkdir -p "$CACHE"
if [ ! -f "$BASE" ]; then
    tmp=$(mktemp -d)
    debootstrap --variant=minbase bookworm "$tmp" "$MIRROR" >>"$LOG" 2>&1
    tar -C "$tmp" -cf "$BASE" .
    rm -rf "$tmp"
fi
ROOT=$(mktemp -d /tmp/facegate-newcomer.XXXXXX)
tar -C "$ROOT" -xf "$BASE"
chmod 0755 "$ROOT"
# The root shares this host's network and name: its name resolves as the host's does.
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp /etc/hosts "$ROOT/etc/hosts"
mkdir -p "$ROOT/mnt/checkout" "$ROOT/src/shared"
cleanup() {
    for m in dev/shm dev/pts dev sys proc src/shared mnt/checkout; do umount "$ROOT/$m" 2>/dev/null || true; done
    rm -rf "$ROOT"
}
trap cleanup EXIT
mount --bind "$REPO" "$ROOT/mnt/checkout" && mount -o remount,bind,ro "$ROOT/mnt/checkout"
[ -d "$REPO/../shared" ] && mount --bind "$REPO/../shared" "$ROOT/src/shared"
mount -t proc proc "$ROOT/proc"
mount -t sysfs sys "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"
mount -t tmpfs tmpfs "$ROOT/dev/shm"  # Chromium and PostgreSQL want a private /dev/shm
cert=""
if [ -n "${PIP_CERT:-}" ]; then cp "$PIP_CERT" "$ROOT/etc/pip-ca.crt"; cert=PIP_CERT=/etc/pip-ca.crt; fi
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive $cert "$@"; }
step() {  # step NAME COMMAND...: its time and exit code, output to the log
    local t0 rc
    t0=$(date +%s.%N)
    echo "== $1" >>"$LOG"
    set +e; in_root bash -c "$2" >>"$LOG" 2>&1; rc=$?; set -e
    echo "\"$1\": {\"s\": $(python3 -c "print(round($(date +%s.%N) - $t0, 1))"), \"rc\": $rc}"
}
{
    echo "{"
    step git "apt-get update -qq && apt-get install -y -qq git"; echo ,
    step clone "git clone -q /mnt/checkout /src/facegate"; echo ,
    step readme_apt "apt-get install -y -qq python3-venv make"; echo ,
    step make_demo "cd /src/facegate && make demo"; echo ,
    step system_packages_test "cd /src/facegate && scripts/system-packages.sh test"; echo ,
    if [ "$*" = --make-test ]; then
        step make_test "cd /src/facegate && CI=true make test"
    else
        step pytest "cd /src/facegate && .venv/bin/python -m pytest -q -p no:cacheprovider $*"
    fi
    echo "}"
} | python3 -c 'import json, sys; print(json.dumps(json.loads(sys.stdin.read())))'
