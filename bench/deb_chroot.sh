#!/bin/bash
# Installs a facegate .deb into a clean Debian 12 chroot (debootstrap minbase) and uses it as an
# operator would; prints ONE JSON object. Needs root, debootstrap and a Debian mirror.
#
#   sudo bench/deb_chroot.sh dist/facegate_0.1.0_amd64.deb
#
# Steps, each timed: a fresh root file system (extracted from a cached debootstrap tarball, made
# on first use), `apt-get install ./facegate.deb` (dependencies from the mirror; postinst makes
# the user, key, gallery and verifies the shipped models), `facegate models build` (checks, builds
# nothing), every model choice on a photo (tests/packaging/every_model.py), `facegate --version`, `facegate config check`,
# enroll + identify as root (the gallery key is root's, docs/operations.md), then `apt-get purge`
# and what it leaves behind.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DEB=$(realpath "$1")
ARCH=$(dpkg-deb -f "$DEB" Architecture)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHE=${FACEGATE_CHROOT_CACHE:-/var/cache/facegate-bench}
BASE=$CACHE/bookworm-$ARCH-minbase.tar
LOG=${LOG:-/tmp/facegate-deb-chroot.log}
: > "$LOG"
now() { date +%s.%N; }
secs() { python3 -c "print(round($2 - $1, 1))"; }

mkdir -p "$CACHE"
t0=$(now)
if [ ! -f "$BASE" ]; then
    tmp=$(mktemp -d)
    debootstrap --variant=minbase --arch="$ARCH" bookworm "$tmp" "$MIRROR" >>"$LOG" 2>&1
    tar -C "$tmp" -cf "$BASE" .
    rm -rf "$tmp"
fi
ROOT=$(mktemp -d /tmp/facegate-chroot.XXXXXX)
cleanup() { umount "$ROOT/proc" 2>/dev/null || true; rm -rf "$ROOT"; }
trap cleanup EXIT
tar -C "$ROOT" -xf "$BASE"
chmod 0755 "$ROOT"  # mktemp's 0700 (also stored in the base tarball): the service user could not reach /usr
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
mount -t proc proc "$ROOT/proc"
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }
t1=$(now)

cp "$DEB" "$ROOT/tmp/facegate.deb"
in_root apt-get update -qq >>"$LOG" 2>&1
in_root apt-get install -y -qq --no-install-recommends /tmp/facegate.deb >>"$LOG" 2>&1
t2=$(now)
version=$(in_root facegate --version)
check=$(in_root facegate config check 2>&1)
models=$(in_root facegate models list | wc -l)
cp -r "$REPO/assets/demo/gallery/Barack_Obama" "$REPO/assets/demo/probes/obama1.jpg" "$REPO/assets/demo/probes/alex_lacamoire1.jpg" \
    "$REPO/tests/packaging/every_model.py" "$ROOT/tmp/"
prebuilt=$(in_root facegate models build 2>&1 | grep -c "prebuilt, verified" || true)
every_model=$(in_root /opt/facegate/venv/bin/python3 /tmp/every_model.py /tmp/obama1.jpg | python3 -c 'import json, sys; r = json.load(sys.stdin); print(len(r["perception"]) + len(r["liveness"]))')
chmod -R a+rX "$ROOT/tmp"
in_root facegate gallery enroll --person "Barack Obama" /tmp/Barack_Obama/obama.jpg >>"$LOG" 2>&1
t3=$(now)
obama=$(in_root facegate gallery identify /tmp/obama1.jpg --json)
t4=$(now)
alex=$(in_root facegate gallery identify /tmp/alex_lacamoire1.jpg --json)
installed_mb=$(du -sm "$ROOT/opt/facegate" | cut -f1)
key_mode=$(in_root stat -c '%a %U' /etc/facegate/kek.key)
in_root apt-get purge -y -qq facegate >>"$LOG" 2>&1
left=$(cd "$ROOT" && ls -d opt/facegate var/lib/facegate etc/facegate 2>/dev/null | tr '\n' ' ' || true)

python3 - "$prebuilt" "$every_model" "$(stat -c %s "$DEB")" "$version" "$check" "$models" "$obama" "$alex" "$installed_mb" "$key_mode" "$left" \
    "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")" "$(secs "$t3" "$t4")" "$DEB" "$ARCH" <<'PY'
import json, sys
(prebuilt, every_model, deb_bytes, version, check, models, obama, alex, mb, key_mode, left, root_s, install_s, identify_s, deb, arch) = sys.argv[1:]
first = lambda out: json.loads(out).get("person")
print(json.dumps({
    "deb": deb, "deb_bytes": int(deb_bytes), "arch": arch, "version": version,
    "models_build_prebuilt_verified": int(prebuilt), "model_choices_loaded": int(every_model), "config_check": check, "models_listed": int(models),
    "identify_obama1": first(obama), "identify_alex_lacamoire1": first(alex),
    "opt_facegate_mb": int(mb), "kek_key": key_mode, "left_after_purge": left.split(),
    "chroot_s": float(root_s), "apt_install_incl_postinst_s": float(install_s), "identify_cli_s": float(identify_s),
}))
PY
