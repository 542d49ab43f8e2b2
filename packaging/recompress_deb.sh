#!/bin/bash
# Recompresses a .deb written with `dpkg-deb -Znone`: control.tar with xz -9, data.tar with xz -9
# behind the branch/call filter (BCJ) of the package's architecture. Machine code is most of
# facegate's package and compresses ~5 % better with it (amd64: 120.8 MB data.tar.xz instead of
# 123.2 MB at plain xz -9). dpkg-deb cannot set xz filters, hence this step; dpkg reads any
# filter chain (the ARM64 filter needs liblzma >= 5.4: Debian 12 has 5.4.1), and unpacking needs
# ~65 MiB of memory, as any xz -9 package does.
#
#   packaging/recompress_deb.sh PLAIN.deb OUT.deb ARCH      (ARCH: amd64 | arm64)
set -euo pipefail
PLAIN=$(realpath "$1")
OUT=$(realpath -m "$2")
case "$3" in
    amd64) BCJ=--x86 ;;
    arm64) BCJ=--arm64 ;;
    *) echo "recompress_deb.sh: no BCJ filter for $3" >&2; exit 2 ;;
esac
TMP=$(mktemp -d "${TMPDIR:-/tmp}/facegate-xz.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
cd "$TMP"
ar x "$PLAIN"
# The members dpkg-deb -Znone writes, in the order dpkg requires them.
test "$(ar t "$PLAIN" | paste -sd' ')" = "debian-binary control.tar data.tar"
xz -9 control.tar
xz "$BCJ" --lzma2=preset=9 -T0 data.tar
rm -f "$OUT"
ar rcD "$OUT" debian-binary control.tar.xz data.tar.xz
dpkg-deb --info "$OUT" >/dev/null  # dpkg reads it back
