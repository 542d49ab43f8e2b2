"""`facegate gallery` / `facegate keys` end to end: real processes, real files, bundled photos."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "assets" / "demo"


def facegate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli.main", *args], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_enroll_identify_verify_rotate_remove(tmp_path, model_store) -> None:
    data = tmp_path / "gallery"
    proc = facegate("gallery", "enroll", "--data-dir", str(data), "--from-dir", str(DEMO / "gallery"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "generated key" in proc.stderr  # a new data dir says where its key is
    assert stat.S_IMODE(os.stat(data / "kek.key").st_mode) == 0o600
    report = {entry["person"]: entry for entry in json.loads(proc.stdout)}
    assert report["Barack Obama"]["enrolled"] and report["Barack Obama"]["templates"] == 2

    listed = json.loads(facegate("gallery", "list", "--data-dir", str(data), "--json").stdout)
    assert sorted(p["person"] for p in listed) == ["Alex Lacamoire", "Barack Obama", "Joe Biden", "Kit Harington", "Lin Manuel Miranda", "Rose Leslie"]

    proc = facegate("gallery", "identify", "--data-dir", str(data), str(DEMO / "probes/obama1.jpg"), "--json")
    result = json.loads(proc.stdout)
    assert result["person"] == "Barack Obama" and result["score"] >= result["threshold"]
    assert result["candidates"][0]["person"] == "Barack Obama"
    stranger = json.loads(facegate("gallery", "identify", "--data-dir", str(data), str(DEMO / "probes/intel_head_pose_woman.jpg"), "--json").stdout)
    assert stranger["person"] is None
    # Many images in one call: a list in order, one object per image; a broken one is reported in
    # its own entry (exit 1) and the others still answered.
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    proc = facegate("gallery", "identify", "--data-dir", str(data), str(DEMO / "probes/obama1.jpg"), str(broken),
                    str(DEMO / "probes/johnsnow_test1.jpg"), "--json")
    batch = json.loads(proc.stdout)
    assert proc.returncode == 1 and [r["file"] for r in batch] == [str(DEMO / "probes/obama1.jpg"), str(broken), str(DEMO / "probes/johnsnow_test1.jpg")]
    assert batch[0]["person"] == "Barack Obama" and "error" in batch[1] and batch[2]["person"] == "Kit Harington"

    assert facegate("gallery", "verify", "--data-dir", str(data), "--person", "Barack Obama", str(DEMO / "probes/obama-240p.jpg")).returncode == 0
    assert facegate("gallery", "verify", "--data-dir", str(data), "--person", "Joe Biden", str(DEMO / "probes/obama-240p.jpg")).returncode == 1

    old_key = (data / "kek.key").read_bytes()
    proc = facegate("keys", "rotate", "--kek", "--data-dir", str(data))
    assert proc.returncode == 0, proc.stderr
    assert (data / "kek.key").read_bytes() != old_key
    status = json.loads(facegate("keys", "status", "--data-dir", str(data)).stdout)
    assert status["persons"] == 6 and status["kek_rotation_pending"] is False

    proc = facegate("gallery", "remove", "--data-dir", str(data), "--person", "barack  obama")  # case/space-insensitive
    assert proc.returncode == 0, proc.stderr
    after = json.loads(facegate("gallery", "identify", "--data-dir", str(data), str(DEMO / "probes/obama1.jpg"), "--json").stdout)
    assert after["person"] is None
    assert all(c["person"] != "Barack Obama" for c in after["candidates"])


def test_bad_photos_are_rejected_with_a_reason(tmp_path, model_store) -> None:
    blank = tmp_path / "blank.jpg"
    blank.write_bytes((DEMO / "probes/obama1.jpg").read_bytes()[:3000])  # truncated JPEG
    group = DEMO / "probes/kit_with_rose.jpg"  # two faces of similar size
    proc = facegate("gallery", "enroll", "--data-dir", str(tmp_path / "g"), "--person", "Nobody", str(blank), str(group), "--json")
    assert proc.returncode == 1
    (entry,) = json.loads(proc.stdout)
    assert entry["enrolled"] is False
    reasons = {Path(p["file"]).name: p["reason"] for p in entry["photos"]}
    assert "truncated JPEG" in reasons["blank.jpg"]
    assert "2 faces" in reasons["kit_with_rose.jpg"]


def test_wrong_key_is_refused_and_touches_nothing(tmp_path, model_store) -> None:
    data = tmp_path / "g"
    assert facegate("gallery", "enroll", "--data-dir", str(data), "--person", "Ada", str(DEMO / "gallery/Barack_Obama/obama.jpg")).returncode == 0
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    (data / "kek.key").write_text(os.urandom(32).hex() + "\n")
    proc = facegate("gallery", "list", "--data-dir", str(data))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "does not unwrap" in proc.stderr
    after = {p.name: p.read_bytes() for p in data.iterdir()}
    assert {k: v for k, v in after.items() if k != "kek.key"} == {k: v for k, v in before.items() if k != "kek.key"}


def test_switching_embedder_refuses_a_gallery_enrolled_with_another(tmp_path, model_store) -> None:
    data = tmp_path / "g"
    assert facegate("gallery", "enroll", "--data-dir", str(data), "--person", "Ada", str(DEMO / "gallery/Barack_Obama/obama.jpg")).returncode == 0
    other = tmp_path / "xs.toml"
    other.write_text('[embed]\nmodel = "edgeface_xs"\n')
    proc = facegate("--config", str(other), "gallery", "identify", "--data-dir", str(data), str(DEMO / "probes/obama1.jpg"))
    assert proc.returncode == 2
    assert "none of edgeface_xs_int8" in proc.stderr and "re-enroll" in proc.stderr


def test_identify_on_an_empty_gallery_is_valid_json(tmp_path, model_store) -> None:
    data = tmp_path / "g"
    assert facegate("keys", "init", "--data-dir", str(data)).returncode == 0
    proc = facegate("gallery", "identify", "--data-dir", str(data), str(DEMO / "probes/obama1.jpg"), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["person"] is None and result["score"] is None and result["candidates"] == []


def test_an_interrupted_key_file_rotation_is_finished_by_the_next_rotate(tmp_path, model_store) -> None:
    from edge.gallery import admin
    from edge.gallery.crypto import generate_kek_file, read_kek_file
    from edge.gallery.store import GalleryStore

    data = tmp_path / "g"
    assert facegate("gallery", "enroll", "--data-dir", str(data), "--person", "Ada", str(DEMO / "gallery/Barack_Obama/obama.jpg")).returncode == 0
    key = read_kek_file(data / "kek.key")
    new = generate_kek_file(data / "kek.key.new")
    with GalleryStore.open(data, key) as store:
        admin.rotate_kek(store, new)  # ...and the process dies before the key file is swapped
        assert store.status()["kek_rotation_pending"] is True
    proc = facegate("keys", "rotate", "--data-dir", str(data))
    assert proc.returncode == 0, proc.stderr
    assert "interrupted key rotation" in proc.stderr
    status = json.loads(proc.stdout)
    assert status["kek_rotation_pending"] is False and len(status["kek_ids"]) == 1
    assert not (data / "kek.key.new").exists()
    assert json.loads(facegate("gallery", "list", "--data-dir", str(data), "--json").stdout)[0]["person"] == "Ada"
