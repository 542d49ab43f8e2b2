"""The encrypted index snapshot (edge/gallery/snapshot.py): a warm open answers exactly as a cold
one, and a snapshot is never read once the gallery changed, was tampered with, or lost a person
(whose snapshot key must then be gone from the file and its WAL)."""

from __future__ import annotations

import errno
import logging
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge.gallery import admin
from edge.gallery import snapshot as index_snapshot
from edge.gallery.changes import SyncChange, SyncPerson
from edge.gallery.crypto import new_key
from edge.gallery.index import VectorIndex
from edge.gallery.search import Gallery
from edge.gallery.store import GALLERY_FILE, GalleryStore, PersonProfile
from edge.gallery.sync_apply import apply_change

MODEL = "edgeface_xxs_int8"
DIM = 32
NAMES = ("Ann", "Bob", "Cy", "Di", "Ed", "Flo")


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(autouse=True)
def snapshot_small_galleries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_snapshot, "MIN_TEMPLATES", 1)


@pytest.fixture
def people(tmp_path: Path) -> tuple[Path, bytes, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    centres = {name: _unit(rng.standard_normal(DIM)) for name in NAMES}
    kek = new_key()
    with GalleryStore.open(tmp_path, kek, create=True) as store:
        for name, centre in centres.items():
            noisy = _unit(centre + 0.2 * rng.standard_normal((2, DIM)))
            store.enroll(PersonProfile(name), list(noisy), [1.0, 1.0], MODEL)
    return tmp_path, kek, centres


def _open(data_dir: Path, kek: bytes, snapshot: bool = True) -> Gallery:
    return Gallery.open(data_dir, kek, MODEL, DIM, threshold=0.5, snapshot=snapshot)


def _answers(gallery: Gallery, probes: np.ndarray) -> list[list[tuple[str, float]]]:
    return [[(c.person, round(c.score, 6)) for c in gallery.identify(p, k=6).candidates] for p in probes]


def _snapshots(data_dir: Path) -> list[Path]:
    return sorted(data_dir.glob("index-*.snap*"))


def _snapshot_rows(data_dir: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(data_dir / GALLERY_FILE)
    try:
        return db.execute("SELECT key, value FROM meta WHERE key LIKE 'index_snapshot:%'").fetchall()
    finally:
        db.close()


def test_a_warm_open_answers_exactly_as_the_cold_one(people) -> None:
    data_dir, kek, centres = people
    probes = _unit(np.stack(list(centres.values())) + 0.1 * np.random.default_rng(4).standard_normal((len(centres), DIM)))
    with _open(data_dir, kek) as cold:
        assert cold.opened_from == "templates"
        expected = _answers(cold, probes)
    assert len(_snapshots(data_dir)) == 1 and len(_snapshot_rows(data_dir)) == 1
    with _open(data_dir, kek) as warm:
        assert warm.opened_from == "snapshot"
        assert _answers(warm, probes) == expected
        assert len(warm) == len(NAMES)
        assert [c.person for c in (warm.identify(centres["Di"]),)] == ["Di"]
    with _open(data_dir, kek, snapshot=False) as plain:  # [gallery] index_snapshot = false
        assert plain.opened_from == "templates"
        assert _answers(plain, probes) == expected
    # Turning it off leaves no copy of the index behind: file and key are gone.
    assert _snapshots(data_dir) == [] and _snapshot_rows(data_dir) == []


def test_the_snapshot_holds_no_plaintext(people) -> None:
    data_dir, kek, _ = people
    # Names long enough not to turn up by chance in kilobytes of ciphertext (two-letter ones do).
    long_names = ("Bartholomew Featherstonehaugh", "Philippa Wolstenholme-Cartwright")
    rng = np.random.default_rng(12)
    with GalleryStore.open(data_dir, kek) as store:
        for name in long_names:
            store.enroll(PersonProfile(name), list(_unit(rng.standard_normal((2, DIM)))), [1.0, 1.0], MODEL)
    with _open(data_dir, kek):
        pass
    raw = b"".join(p.read_bytes() for p in _snapshots(data_dir))
    assert raw
    with GalleryStore.open(data_dir, kek) as store:
        _ids, _persons, vectors = store.load_embeddings(MODEL)
    for vector in vectors:
        assert vector.tobytes()[:16] not in raw
    for name in long_names:
        assert name.encode() not in raw and name.encode("utf-16-le") not in raw


def test_removal_destroys_the_snapshot_key_and_file(people, tmp_path_factory) -> None:
    data_dir, kek, centres = people
    with _open(data_dir, kek):
        pass
    [(_key, value)] = _snapshot_rows(data_dir)
    copy = tmp_path_factory.mktemp("copy") / "old.snap"
    shutil.copy(_snapshots(data_dir)[0], copy)  # a copy the flash or a backup kept
    with _open(data_dir, kek) as gallery:
        assert gallery.opened_from == "snapshot"
        assert gallery.remove("Bob")
    assert _snapshots(data_dir) == [] and _snapshot_rows(data_dir) == []
    wrapped = value.split('"key": "')[1].split('"')[0]
    for leftover in data_dir.iterdir():  # gallery.db, -wal, -shm: the wrapped key is gone
        assert wrapped.encode() not in leftover.read_bytes(), leftover.name
    with _open(data_dir, kek) as reopened:
        assert reopened.opened_from == "templates"
        assert "Bob" not in {c.person for c in reopened.identify(centres["Bob"], k=10).candidates}
        assert reopened.identify(centres["Ann"]).person == "Ann"


def test_a_hub_update_replacing_templates_drops_the_snapshot_key(people) -> None:
    data_dir, kek, centres = people
    with _open(data_dir, kek):
        pass
    replacement = SyncPerson(uid="0" * 31 + "c", profile=PersonProfile("Cy"), model=MODEL, embeddings=(centres["Cy"],), qualities=(1.0,))
    with GalleryStore.open(data_dir, kek) as store:
        apply_change(store, SyncChange(scope="site", seq=1, expect_seq=0, full=False, upserts=(replacement,)))
    assert _snapshot_rows(data_dir) == [] and _snapshots(data_dir) == []
    with _open(data_dir, kek) as gallery:
        assert gallery.opened_from == "templates"
        assert gallery.identify(centres["Cy"]).score == pytest.approx(1.0, abs=1e-5)


def test_an_enrollment_elsewhere_makes_the_snapshot_stale(people) -> None:
    data_dir, kek, _ = people
    with _open(data_dir, kek):
        pass
    newcomer = _unit(np.random.default_rng(9).standard_normal(DIM))
    with GalleryStore.open(data_dir, kek) as store:  # another process: the CLI while the daemon runs
        store.enroll(PersonProfile("Gus"), [newcomer], [1.0], MODEL)
    with _open(data_dir, kek) as gallery:
        assert gallery.opened_from == "templates"
        assert gallery.identify(newcomer).person == "Gus"
    with _open(data_dir, kek) as gallery:
        assert gallery.opened_from == "snapshot"
        assert gallery.identify(newcomer).person == "Gus"


def test_a_snapshot_taken_before_a_change_is_not_recorded(people) -> None:
    data_dir, kek, _ = people
    with GalleryStore.open(data_dir, kek) as store:
        with store.embedding_blocks(MODEL) as loaded:
            stamp = loaded.fingerprint
            list(loaded.blocks)
        store.enroll(PersonProfile("Gus"), [_unit(np.ones(DIM))], [1.0], MODEL)
        assert not store.record_index_snapshot(MODEL, stamp, new_key())
        assert store.index_snapshot_key(MODEL) is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "swap-key", "empty"])
def test_a_damaged_snapshot_falls_back_to_the_templates(people, damage: str, caplog) -> None:
    data_dir, kek, centres = people
    with _open(data_dir, kek):
        pass
    [path] = _snapshots(data_dir)
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[-40] ^= 0x01
        path.write_bytes(bytes(raw))
    elif damage == "truncate":
        path.write_bytes(bytes(raw[:-10]))
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a snapshot sealed under another key (another gallery's file copied in)
        with GalleryStore.open(data_dir, kek) as store:
            key, stamp = store.index_snapshot_key(MODEL)
            arrays = index_snapshot.read(path, MODEL, stamp, key)
        assert index_snapshot.write(path, MODEL, stamp, arrays) is not None
    with caplog.at_level(logging.WARNING), _open(data_dir, kek) as gallery:
        assert gallery.opened_from == "templates"
        assert gallery.identify(centres["Ed"]).person == "Ed"
    assert "refused" in caplog.text
    with _open(data_dir, kek) as again:  # the cold open left a good snapshot
        assert again.opened_from == "snapshot"


def test_a_full_disk_costs_the_snapshot_only(people, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    data_dir, kek, centres = people

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(index_snapshot.os, "fsync", full)
    with caplog.at_level(logging.WARNING), _open(data_dir, kek) as gallery:
        assert gallery.identify(centres["Flo"]).person == "Flo"
    assert "not written" in caplog.text
    assert _snapshots(data_dir) == [] and _snapshot_rows(data_dir) == []


def test_key_rotation_drops_the_snapshot_key(people) -> None:
    data_dir, kek, _ = people
    with _open(data_dir, kek):
        pass
    with GalleryStore.open(data_dir, kek) as store:
        admin.rotate_device_key(store)
    assert _snapshot_rows(data_dir) == []
    with _open(data_dir, kek) as gallery:
        assert gallery.opened_from == "templates"


@pytest.mark.parametrize("prefilter", ["faiss", "numpy", "sqlite-vec"])
@pytest.mark.parametrize("exact_max", [0, 10_000])
def test_index_export_and_restore_round_trip(prefilter: str, exact_max: int) -> None:
    rng = np.random.default_rng(5)
    vectors = _unit(rng.standard_normal((600, DIM)))
    ids = np.arange(10, 610, dtype=np.int64)
    index = VectorIndex(DIM, exact_max=exact_max, shortlist=100, prefilter=prefilter)
    index.build(ids, vectors)
    copy = VectorIndex(DIM, exact_max=exact_max, shortlist=100, prefilter=prefilter)
    copy.restore({k: np.array(v) for k, v in index.export().items()})
    assert copy.regime == index.regime and np.array_equal(copy.ids, ids)
    for probe in vectors[::50]:
        assert copy.search(probe, k=3) == index.search(probe, k=3)
    with pytest.raises(Exception, match="do not make a 64-d index"):
        VectorIndex(64).restore(index.export())


@pytest.mark.parametrize("crash", ["mid-write", "before-the-key", "file-lost"])
def test_every_state_a_crash_can_leave_opens_right(people, crash: str) -> None:
    """A kill while the snapshot is written (a .tmp file), after the rename but before the key
    is recorded (a file no key opens), or a file lost after its key was recorded: the open
    decrypts the templates, answers right, and leaves one good snapshot."""
    data_dir, kek, centres = people
    with _open(data_dir, kek):
        pass
    [path] = _snapshots(data_dir)
    if crash == "mid-write":
        half = path.read_bytes()[:1000]
        with GalleryStore.open(data_dir, kek) as store:
            store.drop_index_snapshots()  # no finished file, no key
        path.with_name(path.name + ".tmp").write_bytes(half)
    elif crash == "before-the-key":
        with GalleryStore.open(data_dir, kek) as store:
            store.drop_index_snapshots()
        path.write_bytes(b"x" * 100)  # stands for a complete file whose key never made it
    else:
        path.unlink()
    with _open(data_dir, kek) as gallery:
        assert gallery.opened_from == "templates"
        assert gallery.identify(centres["Cy"]).person == "Cy"
    assert [p.name for p in _snapshots(data_dir)] == [path.name] and len(_snapshot_rows(data_dir)) == 1
    with _open(data_dir, kek) as gallery:
        assert gallery.opened_from == "snapshot"
