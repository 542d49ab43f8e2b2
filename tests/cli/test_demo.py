"""`make demo` end to end: bundled gallery and probes, default config, real models."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_identifies_the_enrolled_people_and_not_the_stranger(model_store) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "demo", "--fast"], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] and line.split()[0].endswith(".jpg")]
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row[0], []).append(" ".join(row[3:5]))
    assert "Alex Lacamoire" in found["alex_lacamoire1.jpg"]
    assert "Kit Harington" in found["johnsnow_test1.jpg"]
    assert {"Kit Harington", "Rose Leslie"} <= set(found["kit_with_rose.jpg"])
    assert "Barack Obama" in found["obama1.jpg"]
    assert "Barack Obama" in found["obama-240p.jpg"]
    assert "Barack Obama" in found["obama_and_biden.jpg"]
    # The woman from Intel's head-pose clip is not enrolled: never matched to anyone.
    assert all(person.startswith("unknown") for person in found["intel_head_pose_woman.jpg"])
    assert "summary:" in proc.stdout
    # The daemon on the bundled Hamilton clip: Lin-Manuel Miranda (enrolled from one photo)
    # is granted on stage; nobody else in the clip (the opening singer, the audience) is.
    decisions = re.findall(r"^cam0 .* track \d+ +(\w+) +(.+?) +score", proc.stdout, flags=re.M)
    grants = [person for decision, person in decisions if decision == "grant"]
    assert grants == ["Lin Manuel Miranda"], decisions
    assert len(decisions) >= 3
    assert "decisions: grant 1, unknown" in proc.stdout
