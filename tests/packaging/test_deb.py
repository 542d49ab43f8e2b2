"""`make deb`: the package builds, holds what docs/operations.md promises, and its venv runs.

Installing it into a clean chroot takes minutes (debootstrap, apt, postinst building the
models), so that lives in `bench/deb_chroot.sh`; this test builds the real .deb and runs the
venv inside it straight from the extracted package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import unavailable

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    if shutil.which("dpkg-deb") is None or not Path("/usr/bin/python3").exists():
        unavailable("dpkg-deb and Debian's /usr/bin/python3 are needed to build the .deb")
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([str(REPO / "packaging" / "build_deb.sh"), str(out)], capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.exists() and path.parent == out
    return path


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True).stdout.strip()


def test_package_metadata_conffile_and_maintainer_scripts(deb: Path, tmp_path: Path) -> None:
    assert field(deb, "Package") == "facegate"
    assert field(deb, "Architecture") == subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    assert "adduser" in field(deb, "Depends") and "python3." in field(deb, "Depends")
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)
    assert (control / "conffiles").read_text().split() == ["/etc/facegate/config.toml"]
    for script in ("postinst", "prerm", "postrm"):
        assert os.access(control / script, os.X_OK)
        assert subprocess.run(["sh", "-n", str(control / script)]).returncode == 0, script
    assert "models build" in (control / "postinst").read_text()


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
    for committed in ("edgeface_xxs.onnx", "minifasnet_v1se.onnx", "thresholds.toml"):
        assert (site / "models" / committed).exists(), committed
    assert any((site / "assets" / "calibration").iterdir())
    assert not list(site.rglob("__pycache__")), "byte code is compiled by postinst for the installed paths"

    python = str(root / "opt/facegate/venv/bin/python3")  # a venv runs from wherever it sits
    version = subprocess.run([python, "-m", "edge.cli.main", "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"facegate {field(deb, 'Version')}"
    # The packaged config is the repository's with state in /var/lib/facegate and the key in
    # /etc/facegate; on this (build) machine only the key, which postinst makes, is missing.
    check = subprocess.run([python, "-m", "edge.cli.main", "config", "check", "--config", str(root / "etc/facegate/config.toml")],
                           capture_output=True, text=True, timeout=60)
    if not Path("/etc/facegate/kek.key").exists():
        assert check.returncode == 1
        assert check.stderr.splitlines()[1:] == ["  gallery.key_file: /etc/facegate/kek.key: no such file"]
    importable = subprocess.run([python, "-c", "import edge.service.systemd, edge.service.metrics, systemd.daemon, prometheus_client, onnxruntime, cv2"],
                                capture_output=True, text=True, timeout=120)
    assert importable.returncode == 0, importable.stderr
