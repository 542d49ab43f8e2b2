"""1:N identification through the encrypted gallery on real LFW identities (a subset in CI;
`bench/identify.py` runs all 2,086 people and reports the figures)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_lfw_identification_through_the_gallery(shared_data, model_store) -> None:
    proc = subprocess.run(
        [sys.executable, "bench/identify.py", "--lfw", str(shared_data / "lfw/images"), "--max-people", "500",
         "--target-fmr", "1e-4", "1e-6"],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["gallery_identities"] >= 400 and result["probes"] >= 100 and result["stranger_probes"] >= 30
    assert result["top1_rate"] >= 0.95
    strict, loose = result["open_set"][1], result["open_set"][0]
    assert strict["threshold"] > loose["threshold"]
    assert strict["fpir"] <= loose["fpir"] and strict["tpir"] <= loose["tpir"]
    assert strict["fpir"] <= 0.02
