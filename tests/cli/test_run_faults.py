"""A real `facegate run` whose events observer fails on every decision (issue 19): `--events
/dev/full` answers every write with ENOSPC. The failure is contained and counted, the run goes
on to the end of the clip, every decision is still made and printed, and the end is no crash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "assets" / "demo" / "video" / "short_hamilton_clip.mp4"
LMM = REPO / "assets" / "demo" / "gallery" / "Lin_Manuel_Miranda" / "lin-manuel-miranda.jpg"


def test_an_observer_failing_on_every_decision_neither_ends_the_run_nor_silences_it(model_store, tmp_path: Path) -> None:
    data = tmp_path / "data"
    enrolled = subprocess.run([sys.executable, "-m", "edge.cli.main", "gallery", "enroll", "--data-dir", str(data), "--person", "Lin Manuel Miranda", str(LMM)],
                              cwd=REPO, capture_output=True, text=True, timeout=180)
    assert enrolled.returncode == 0, enrolled.stderr
    config = tmp_path / "config.toml"
    config.write_text("[liveness]\nenabled = false\n[metrics]\nenabled = false\n")
    summary = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "--config", str(config), "run", "--data-dir", str(data), "--source", str(CLIP),
         "--events", "/dev/full", "--summary-json", str(summary)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    decisions = json.loads(summary.read_text())["decisions"]
    assert decisions.get("grant", 0) >= 1 and sum(decisions.values()) >= 2  # decisions kept coming after the first failure
    assert len(proc.stdout.splitlines()) == sum(decisions.values())  # one human line each, the JSON sink failing beside it
    assert "observer events failed in on_decision (1 errors so far); the daemon goes on" in proc.stderr
    assert proc.stderr.count("Traceback") == 1  # the contained one, logged once; nothing at the end
    assert "--events: the last decision lines could not be written (No space left on device)" in proc.stderr


def test_a_summary_that_cannot_be_written_is_one_line_not_a_traceback(model_store, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[liveness]\nenabled = false\n[metrics]\nenabled = false\n")
    made = subprocess.run([sys.executable, "-m", "edge.cli.main", "keys", "init", "--data-dir", str(tmp_path / "data")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "--config", str(config), "run", "--data-dir", str(tmp_path / "data"), "--source", str(CLIP),
         "--max-seconds", "1", "--summary-json", "/dev/full"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--summary-json /dev/full: cannot write (No space left on device)" in proc.stderr
