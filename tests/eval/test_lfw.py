"""The real pipeline on real LFW pairs: a broken model, converter or alignment cannot land.

CI runs fold 1 (600 pairs, ~1,100 images) with the default embedder at int8; the full
5-fold figures are measured with `facegate eval lfw` and stated in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fold1(shared_data, tmp_path_factory) -> Path:
    lines = (shared_data / "lfw/pairs.txt").read_text().splitlines()
    per_fold = int(lines[0].split()[1])
    path = tmp_path_factory.mktemp("lfw") / "fold1.txt"
    path.write_text("\n".join([f"1\t{per_fold}", *lines[1 : 1 + 2 * per_fold]]) + "\n")
    return path


def test_default_pipeline_on_lfw_fold1(fold1, shared_data, model_store, tmp_path) -> None:
    report = tmp_path / "lfw.html"
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "eval", "lfw", "--images", str(shared_data / "lfw/images"),
         "--pairs", str(fold1), "--json", "--report", str(report)],
        capture_output=True, text=True, cwd=REPO, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n_pairs"] == 600 and result["precision"] == "int8" and result["model"] == "edgeface_xxs"
    assert result["detect_failures"] <= 3
    assert result["accuracy"] >= 0.985
    assert result["tar_at_far_1e-3"] >= 0.95
    assert {"accuracy_std", "threshold", "ms_per_image"} <= set(result)
    assert report.read_text().count("data:image/png;base64") >= 3
