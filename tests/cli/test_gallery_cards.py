"""`facegate gallery enroll --card / --pin-stdin` and `gallery list`: cards and PINs as sealed
person attributes, one person per card, PINs never on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "assets" / "demo" / "gallery"


def facegate(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli.main", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300, input=stdin)


def test_enroll_with_a_card_and_a_pin_then_a_duplicate_card_is_refused(tmp_path, model_store) -> None:
    data = str(tmp_path / "g")
    proc = facegate("gallery", "enroll", "--data-dir", data, "--person", "Barack Obama", "--card", "173:48213",
                    "--card", "9001", "--pin-stdin", str(DEMO / "Barack_Obama/obama.jpg"), stdin="482190\n")
    assert proc.returncode == 0, proc.stderr
    proc = facegate("gallery", "enroll", "--data-dir", data, "--person", "Joe Biden", "--card", "173:48213", str(DEMO / "Joe_Biden/biden.jpg"))
    assert proc.returncode != 0
    assert "card 173:48213 already belongs to another person" in proc.stderr and "Traceback" not in proc.stderr
    proc = facegate("gallery", "enroll", "--data-dir", data, "--person", "Joe Biden", "--pin-stdin", str(DEMO / "Joe_Biden/biden.jpg"), stdin="12\n")
    assert proc.returncode != 0 and "PIN: must be 4 to 12 digits" in proc.stderr

    listed = json.loads(facegate("gallery", "list", "--data-dir", data, "--json").stdout)
    assert [(p["person"], p["cards"], p["pin"]) for p in listed] == [("Barack Obama", 2, True)]  # Biden was never written
    shown = json.loads(facegate("gallery", "list", "--data-dir", data, "--json", "--cards").stdout)
    assert shown[0]["cards"] == ["173:48213", "0:9001"]
    raw = b"".join(p.read_bytes() for p in (tmp_path / "g").glob("gallery.db*"))
    assert b"48213" not in raw and b"482190" not in raw


def test_bad_card_numbers_are_refused_by_the_parser(tmp_path) -> None:
    proc = facegate("gallery", "enroll", "--data-dir", str(tmp_path), "--person", "X", "--card", "70000:1", "x.jpg")
    assert proc.returncode == 2 and "a card is FACILITY:NUMBER" in proc.stderr
