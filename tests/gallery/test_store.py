"""The encrypted gallery store on real SQLite files: what reaches the disk, erasure, keys, crashes."""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import bench.harness.gallery_crash_worker as crash
from edge.errors import CryptoError, GalleryError, KeyfileError
from edge.gallery import admin
from edge.gallery.crypto import generate_kek_file, kek_id, new_key, read_kek_file
from edge.gallery.store import GALLERY_FILE, GalleryStore, PersonProfile
from tests.conftest import read_rgb

MODEL = "edgeface_xxs_int8"
KNN = "face_recognition/images/knn_examples/train"
# display name → photos; one non-ASCII name so the UTF-8 / UTF-16 scans mean something
REAL_PEOPLE = {
    "Barack Obama": [f"{KNN}/obama/obama.jpg", f"{KNN}/obama/obama2.jpg"],
    "Joe Biden": [f"{KNN}/biden/biden.jpg", f"{KNN}/biden/biden2.jpg"],
    "Kit Harington": [f"{KNN}/kit_harington/john1.jpeg", f"{KNN}/kit_harington/john2.jpeg"],
    "Rose Leslie": [f"{KNN}/rose_leslie/img1.jpg", f"{KNN}/rose_leslie/img2.jpg"],
    "Alex Lacamoire": [f"{KNN}/alex_lacamoire/img1.jpg"],
    "Adrien Brody": ["lfw/images/Adrien_Brody/Adrien_Brody_0002.jpg", "lfw/images/Adrien_Brody/Adrien_Brody_0003.jpg"],
    "Amelia Vega": ["lfw/images/Amelia_Vega/Amelia_Vega_0001.jpg", "lfw/images/Amelia_Vega/Amelia_Vega_0002.jpg"],
    "Allyson Felix": ["lfw/images/Allyson_Felix/Allyson_Felix_0001.jpg"],
    "Abdullah Gul": ["lfw/images/Abdullah_Gul/Abdullah_Gul_0001.jpg", "lfw/images/Abdullah_Gul/Abdullah_Gul_0006.jpg"],
    "Zoë Ørsted-Łukasiewicz": ["lfw/images/Ana_Guevara/Ana_Guevara_0002.jpg"],
}


def _profile(name: str) -> PersonProfile:
    return PersonProfile(name=name, groups=("Night Shift Lobby",), consent_text=f"I, {name}, agree to face access at HQ")


@pytest.fixture(scope="module")
def real_faces(perception, shared_data: Path) -> dict[str, list[np.ndarray]]:
    faces: dict[str, list[np.ndarray]] = {}
    for name, photos in REAL_PEOPLE.items():
        for photo in photos:
            path = shared_data / photo
            if not path.exists():
                pytest.fail(f"{path} missing from the shared data")
            found = perception.faces(read_rgb(path))
            assert found, f"no face in {path}"
            faces.setdefault(name, []).append(found[0].embedding.astype(np.float32))
    return faces


@pytest.fixture
def kek() -> bytes:
    return new_key()


def _enroll_all(store: GalleryStore, faces: dict[str, list[np.ndarray]]) -> None:
    for name, vectors in faces.items():
        store.enroll(_profile(name), vectors, [0.9] * len(vectors), MODEL)


def _dir_bytes(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(data_dir.iterdir()) if p.is_file()}


def _text_needles(texts: list[str]) -> set[bytes]:
    variants = set()
    for text in texts:
        for v in (text, text.casefold(), text.lower(), text.upper(), " ".join(text.casefold().split())):
            variants |= {v} | {word for word in v.replace("-", " ").split() if len(word) >= 5}
    return {v.encode(enc) for v in variants for enc in ("utf-8", "utf-16-le", "utf-16-be")}


def _float_windows(vectors: list[np.ndarray]) -> set[bytes]:
    """Every run of 4 consecutive float32 values (16 bytes) of every vector."""
    out = set()
    for v in vectors:
        raw = v.astype("<f4").tobytes()
        out |= {raw[k : k + 16] for k in range(0, len(raw) - 15, 4)}
    return out


def _leaks(files: dict[str, bytes], needles: set[bytes], windows: set[bytes]) -> list[str]:
    found = [f"{name}: {needle!r}" for name, data in files.items() for needle in needles if needle in data]
    heads = np.unique(np.frombuffer(b"".join(w[:4] for w in windows), dtype="<u4")) if windows else np.zeros(0, "<u4")
    for name, data in files.items():
        for offset in range(4 if len(data) >= 16 else 0):  # a float run may start at any byte
            words = np.frombuffer(data, dtype="<u4", offset=offset, count=(len(data) - offset) // 4)
            for index in np.flatnonzero(np.isin(words, heads)):
                start = offset + 4 * int(index)
                if data[start : start + 16] in windows:
                    found.append(f"{name}: float32 run of an embedding at byte {start}")
    return found


def test_no_name_or_embedding_reaches_disk_in_plaintext(tmp_path: Path, kek: bytes, real_faces) -> None:
    data_dir = tmp_path / "gallery"
    texts = [t for name in real_faces for t in (name, f"I, {name}, agree to face access at HQ")] + ["Night Shift Lobby"]
    needles, windows = _text_needles(texts), _float_windows([v for vs in real_faces.values() for v in vs])
    # the scan itself must see plaintext when it is there
    assert _leaks({"probe": b"x" + "Zoë".encode("utf-16-le") + b"y"}, _text_needles(["Zoë"]), set())
    assert _leaks({"probe": b"abc" + real_faces["Joe Biden"][0][100:104].tobytes()}, set(), windows)
    with GalleryStore.open(data_dir, kek, create=True) as store:
        _enroll_all(store, real_faces)
        store.enroll(_profile("Barack Obama"), real_faces["Barack Obama"][:1], [0.5], MODEL)  # a merge rewrites the profile
        files = _dir_bytes(data_dir)
        assert len(files.get(GALLERY_FILE + "-wal", b"")) > 0, "the WAL should hold the enrollments while open"
        assert _leaks(files, needles, windows) == []
        assert store.find("barack  OBAMA") is not None
    files = _dir_bytes(data_dir)
    assert set(files) == {GALLERY_FILE}
    assert _leaks(files, needles, windows) == []


def test_gallery_files_are_private(tmp_path: Path, kek: bytes) -> None:
    data_dir = tmp_path / "gallery"
    with GalleryStore.open(data_dir, kek, create=True) as store:
        store.enroll(PersonProfile("A"), [np.ones(8, np.float32)], [1.0], MODEL)
        modes = {p.name: p.stat().st_mode & 0o777 for p in data_dir.iterdir()}
    assert data_dir.stat().st_mode & 0o077 == 0
    assert modes and all(mode == 0o600 for mode in modes.values()), modes


def _raw_rows(db_path: Path, person_uid: str) -> tuple[bytes, bytes, bytes, list[bytes]]:
    db = sqlite3.connect(db_path)
    try:
        person_id, tag, wrapped, profile = db.execute("SELECT id, name_tag, wrapped_key, sealed_profile FROM persons WHERE uid=?", (person_uid,)).fetchone()
        sealed = [r[0] for r in db.execute("SELECT sealed FROM templates WHERE person_id=?", (person_id,))]
    finally:
        db.close()
    return tag, wrapped, profile, sealed


def test_remove_destroys_the_person_key_in_the_live_file_and_wal(tmp_path: Path, kek: bytes, real_faces) -> None:
    data_dir, backup = tmp_path / "gallery", tmp_path / "backup"
    a, b = "Rose Leslie", "Kit Harington"
    with GalleryStore.open(data_dir, kek, create=True) as store:
        record_a = store.enroll(_profile(a), real_faces[a], [0.9] * len(real_faces[a]), MODEL)
        store.enroll(_profile(b), real_faces[b], [0.9] * len(real_faces[b]), MODEL)
    shutil.copytree(data_dir, backup)  # closing checkpointed everything into gallery.db
    tag, wrapped, profile, sealed = _raw_rows(backup / GALLERY_FILE, record_a.uid)
    assert len(sealed) == len(real_faces[a])
    with GalleryStore.open(data_dir, kek) as store:
        assert store.remove("rose leslie")
        assert store.find(a) is None and not store.remove(a)
        files = _dir_bytes(data_dir)  # the store is still open: gallery.db, -wal, -shm
        assert admin.integrity_check(store) == []
        assert [p.profile.name for p in store.persons()] == [b]
        _, _, vectors = store.load_embeddings(MODEL)
        assert np.array_equal(vectors, np.stack(real_faces[b]))
    files.update({f"closed {k}": v for k, v in _dir_bytes(data_dir).items()})
    # the whole blobs, and every 32-byte piece of them (a torn copy would count too)
    secret = [tag, wrapped, profile] + sealed
    pieces = {blob[k : k + 32] for blob in secret for k in range(0, len(blob) - 31, 32)} | set(secret)
    assert [name for name, data in files.items() for piece in pieces if piece in data] == []
    assert _leaks(files, _text_needles([a]), _float_windows(real_faces[a])) == []


def test_backup_from_before_a_removal_dies_with_the_old_kek(tmp_path: Path, kek: bytes) -> None:
    data_dir, backup = tmp_path / "gallery", tmp_path / "backup"
    with GalleryStore.open(data_dir, kek, create=True) as store:
        store.enroll(PersonProfile("Erased Person"), [np.ones(16, np.float32)], [1.0], MODEL)
    shutil.copytree(data_dir, backup)
    new = new_key()
    with GalleryStore.open(data_dir, kek) as store:
        store.remove("Erased Person")
        admin.forget_kek(store, admin.rotate_kek(store, new))
    # The backup still holds the person, sealed under a device key only the old KEK unwraps:
    # once the old key file is destroyed, the backup is noise.
    with pytest.raises(CryptoError, match="does not unwrap"):
        GalleryStore.open(backup, new)
    with GalleryStore.open(backup, kek) as old:
        assert old.find("Erased Person") is not None


def test_wrong_kek_is_refused_and_changes_no_byte(tmp_path: Path, kek: bytes) -> None:
    data_dir = tmp_path / "gallery"
    with GalleryStore.open(data_dir, kek, create=True) as store:
        store.enroll(PersonProfile("A"), [np.ones(8, np.float32)], [1.0], MODEL)
    before = _dir_bytes(data_dir)
    wrong = new_key()
    with pytest.raises(CryptoError) as err:
        GalleryStore.open(data_dir, wrong, create=True)
    message = str(err.value)
    assert "does not unwrap this gallery's device key" in message
    assert f"gallery kek id {kek_id(kek)}" in message and f"key file kek id {kek_id(wrong)}" in message
    assert _dir_bytes(data_dir) == before


def test_missing_or_open_key_file_is_refused_before_the_gallery_is_touched(tmp_path: Path, kek: bytes) -> None:
    data_dir, key_path = tmp_path / "gallery", tmp_path / "kek.key"
    kek = generate_kek_file(key_path)
    with GalleryStore.open(data_dir, read_kek_file(key_path), create=True) as store:
        store.enroll(PersonProfile("A"), [np.ones(8, np.float32)], [1.0], MODEL)
    before = _dir_bytes(data_dir)
    key_path.chmod(0o644)
    with pytest.raises(KeyfileError, match=r"chmod 600"):
        GalleryStore.open(data_dir, read_kek_file(key_path))
    key_path.unlink()
    with pytest.raises(KeyfileError, match="not found"):
        GalleryStore.open(data_dir, read_kek_file(key_path))
    with pytest.raises(KeyfileError, match="32 bytes"):
        GalleryStore.open(data_dir, kek[:16])
    with pytest.raises(GalleryError, match="no gallery here"):
        GalleryStore.open(tmp_path / "elsewhere", kek)
    assert _dir_bytes(data_dir) == before
    assert not (tmp_path / "elsewhere").exists()


def _snapshot(store: GalleryStore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return store.load_embeddings(MODEL)


def test_device_key_rotation_keeps_every_template(tmp_path: Path, kek: bytes, real_faces) -> None:
    data_dir = tmp_path / "gallery"
    with GalleryStore.open(data_dir, kek, create=True) as store:
        _enroll_all(store, real_faces)
        before = _snapshot(store)
        qualities = [t.quality for t in store.templates(MODEL)]
        admin.rotate_device_key(store)
        admin.rotate_device_key(store)
        assert store.status()["device_key_version"] == 3
        assert admin.integrity_check(store) == []
    with GalleryStore.open(data_dir, kek) as store:
        after = _snapshot(store)
        assert all(np.array_equal(x, y) for x, y in zip(before, after, strict=True))
        assert [t.quality for t in store.templates(MODEL)] == qualities
        for name, vectors in real_faces.items():
            record = store.find(name.upper())
            assert record is not None and record.profile.name == name and record.n_templates == len(vectors)


def test_kek_rotation_hands_over_to_the_new_key(tmp_path: Path, kek: bytes, real_faces) -> None:
    data_dir = tmp_path / "gallery"
    new = new_key()
    with GalleryStore.open(data_dir, kek, create=True) as store:
        _enroll_all(store, real_faces)
        before = _snapshot(store)
        old_id = admin.rotate_kek(store, new)
        assert old_id == kek_id(kek)
        assert store.status()["kek_ids"] == [kek_id(kek), kek_id(new)]
        # mid-rotation both keys open it; `other` cannot rotate the DK: it never saw the old KEK
        with GalleryStore.open(data_dir, new) as other, pytest.raises(GalleryError, match="rotation is under way"):
            admin.rotate_device_key(other)
        admin.forget_kek(store, old_id)
        with pytest.raises(GalleryError, match="only key"):
            admin.forget_kek(store, kek_id(new))
    with pytest.raises(CryptoError, match=kek_id(kek)):
        GalleryStore.open(data_dir, kek)
    with GalleryStore.open(data_dir, new) as store:
        assert all(np.array_equal(x, y) for x, y in zip(before, _snapshot(store), strict=True))
        assert store.find("Joe Biden") is not None
        assert store.status()["kek_ids"] == [kek_id(new)]


def test_a_store_follows_a_device_key_rotated_by_another_process(tmp_path: Path, kek: bytes) -> None:
    data_dir = tmp_path / "gallery"
    rng = np.random.default_rng(0)
    with GalleryStore.open(data_dir, kek, create=True) as daemon, GalleryStore.open(data_dir, kek) as cli:
        daemon.enroll(PersonProfile("First"), [rng.standard_normal(32)], [1.0], MODEL)
        admin.rotate_device_key(cli)
        daemon.enroll(PersonProfile("Second"), [rng.standard_normal(32)], [1.0], MODEL)  # must wrap with the new DK
        assert cli.find("second") is not None and daemon.find("first") is not None
        assert admin.integrity_check(cli) == []


def test_crash_at_a_random_moment_leaves_every_person_whole_or_absent(tmp_path: Path) -> None:
    data_dir, key_path = tmp_path / "gallery", tmp_path / "kek.key"
    kek = generate_kek_file(key_path)
    with GalleryStore.open(data_dir, kek, create=True) as store:
        store.enroll_many(
            ((PersonProfile(crash.person_name(i)), list(crash.person_vectors(i)), [0.5] * crash.TEMPLATES_PER_PERSON) for i in range(0, crash.N_PEOPLE, 2)),
            crash.MODEL,
        )
    rng = random.Random(20240611)
    persons = crash.N_PEOPLE // 2
    for trial, op in enumerate(("mixed", "enroll", "remove", "rotate", "snapshot", "mixed")):
        result = crash.run_trial(data_dir, key_path, kek, op, rng.uniform(0.05, 0.4), seed=trial, persons_before=persons)
        assert result.problems == (), (op, result)
        persons = result.persons_after


def _tamper(db_path: Path, sql: str, *args: object) -> None:
    db = sqlite3.connect(db_path)
    with db:
        db.execute(sql, args)
    db.close()


def _two_people(data_dir: Path, kek: bytes) -> list[int]:
    rng = np.random.default_rng(1)
    with GalleryStore.open(data_dir, kek, create=True) as store:
        store.enroll(PersonProfile("Ann"), [rng.standard_normal(64) for _ in range(2)], [1.0, 1.0], MODEL)
        store.enroll(PersonProfile("Bob"), [rng.standard_normal(64) for _ in range(2)], [1.0, 1.0], MODEL)
        return store.load_embeddings(MODEL)[0].tolist()


def test_flipped_byte_in_a_template_is_reported_by_id(tmp_path: Path, kek: bytes) -> None:
    data_dir = tmp_path / "gallery"
    ids = _two_people(data_dir, kek)
    db_path = data_dir / GALLERY_FILE
    db = sqlite3.connect(db_path)
    sealed = bytearray(db.execute("SELECT sealed FROM templates WHERE id=?", (ids[2],)).fetchone()[0])
    db.close()
    sealed[100] ^= 0x01
    _tamper(db_path, "UPDATE templates SET sealed=? WHERE id=?", bytes(sealed), ids[2])
    with GalleryStore.open(data_dir, kek) as store:
        with pytest.raises(GalleryError, match=f"template {ids[2]} \\(person 2\\) fails authentication"):
            store.load_embeddings(MODEL)
        with pytest.raises(GalleryError, match=f"template {ids[2]}"):
            list(store.templates(MODEL))
        problems = admin.integrity_check(store)
        assert len(problems) == 1 and f"template {ids[2]}" in problems[0]
        assert store.find("Ann") is not None  # the rest of the gallery still answers


def test_sealed_blobs_swapped_between_people_fail_authentication(tmp_path: Path, kek: bytes) -> None:
    data_dir = tmp_path / "gallery"
    ids = _two_people(data_dir, kek)
    db_path = data_dir / GALLERY_FILE
    db = sqlite3.connect(db_path)
    ann_blob, bob_blob = (db.execute("SELECT sealed FROM templates WHERE id=?", (i,)).fetchone()[0] for i in (ids[0], ids[2]))
    ann_key, bob_key = (r[0] for r in db.execute("SELECT wrapped_key FROM persons ORDER BY id"))
    db.close()
    _tamper(db_path, "UPDATE templates SET sealed=? WHERE id=?", bob_blob, ids[0])
    _tamper(db_path, "UPDATE templates SET sealed=? WHERE id=?", ann_blob, ids[2])
    with GalleryStore.open(data_dir, kek) as store:
        with pytest.raises(GalleryError, match=f"template {ids[0]} \\(person 1\\)"):
            store.load_embeddings(MODEL)
        assert len(admin.integrity_check(store)) == 2
    # moving the keys along with the blobs does not help: the AAD binds the row and person uids
    _tamper(db_path, "UPDATE persons SET wrapped_key=? WHERE id=1", bob_key)
    _tamper(db_path, "UPDATE persons SET wrapped_key=? WHERE id=2", ann_key)
    with GalleryStore.open(data_dir, kek) as store:
        with pytest.raises(GalleryError, match="person 1 key fails authentication"):
            store.load_embeddings(MODEL)
        with pytest.raises(GalleryError, match="person 1 key"):
            store.find("Ann")


def test_integrity_check_lists_broken_invariants(tmp_path: Path, kek: bytes) -> None:
    data_dir = tmp_path / "gallery"
    _two_people(data_dir, kek)
    with GalleryStore.open(data_dir, kek) as store:
        assert admin.integrity_check(store) == []
    db_path = data_dir / GALLERY_FILE
    _tamper(db_path, "DELETE FROM templates WHERE person_id=2")
    _tamper(db_path, "UPDATE persons SET name_tag=randomblob(32) WHERE id=1")
    with GalleryStore.open(data_dir, kek) as store:
        assert admin.integrity_check(store) == ["person 1: name tag does not match the sealed name", "person 2: has no templates"]


def test_altered_device_key_wrap_is_not_mistaken_for_a_wrong_key(tmp_path: Path, kek: bytes) -> None:
    data_dir = tmp_path / "gallery"
    _two_people(data_dir, kek)
    _tamper(data_dir / GALLERY_FILE, "UPDATE device_keys SET dk_version=7")
    with pytest.raises(CryptoError, match="altered or is corrupt"):
        GalleryStore.open(data_dir, kek)


def test_enrolling_the_same_name_again_adds_templates_and_merges_groups(tmp_path: Path, kek: bytes) -> None:
    rng = np.random.default_rng(2)
    with GalleryStore.open(tmp_path, kek, create=True) as store:
        first = store.enroll(PersonProfile("Dana Scully", groups=("lab",), retention_days=30), [rng.standard_normal(8)], [0.7], MODEL)
        again = store.enroll(PersonProfile("  dana   SCULLY ", groups=("night", "lab")), [rng.standard_normal(8) for _ in range(2)], [0.8, 0.9], MODEL)
        assert again.id == first.id and again.n_templates == 3
        assert again.profile.name == "Dana Scully" and again.profile.groups == ("lab", "night")
        assert again.profile.retention_days == 30
        assert [p.n_templates for p in store.persons()] == [3]


def test_enroll_that_fails_midway_leaves_nothing(tmp_path: Path, kek: bytes, monkeypatch) -> None:
    import edge.gallery.records as records

    calls = []
    real = records.template_to_bytes

    def fail_on_third(vector, quality):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk gone")
        return real(vector, quality)

    monkeypatch.setattr(records, "template_to_bytes", fail_on_third)
    with GalleryStore.open(tmp_path, kek, create=True) as store:
        with pytest.raises(OSError):
            store.enroll(PersonProfile("Half"), [np.ones(8) * k for k in range(1, 5)], [1.0] * 4, MODEL)
        assert store.persons() == [] and store.status()["templates"] == {}


def test_enroll_many_commits_whole_persons_per_batch(tmp_path: Path, kek: bytes) -> None:
    items = [(PersonProfile(f"p{i}"), [np.full(8, i + 1.0)] * 3, [1.0] * 3) for i in range(5)]
    items.append((PersonProfile("broken"), [np.full(8, np.nan)], [1.0]))
    with GalleryStore.open(tmp_path, kek, create=True) as store:
        with pytest.raises(GalleryError, match="item 5: .*NaN"):
            store.enroll_many(items, MODEL, batch=4)
        # batches of >= 4 templates in whole persons: p0+p1, p2+p3 committed; p4 pending when item 5 failed
        assert sorted(p.profile.name for p in store.persons()) == ["p0", "p1", "p2", "p3"]
        assert {p.n_templates for p in store.persons()} == {3}


def test_load_embeddings_matches_templates_in_id_order(tmp_path: Path, kek: bytes) -> None:
    rng = np.random.default_rng(3)
    with GalleryStore.open(tmp_path, kek, create=True) as store:
        assert [a.shape for a in store.load_embeddings(MODEL)] == [(0,), (0,), (0, 0)]
        for name in ("a", "b", "a", "c", "b"):  # interleaved: a person's templates are not contiguous
            store.enroll(PersonProfile(name), [rng.standard_normal(16) for _ in range(2)], [0.5, 0.6], MODEL)
        store.enroll(PersonProfile("a"), [rng.standard_normal(128)], [1.0], "dlib_resnet_int8")
        ids, person_ids, vectors = store.load_embeddings(MODEL)
        records = list(store.templates(MODEL))
        assert ids.tolist() == [t.id for t in records] == sorted(ids.tolist())
        assert person_ids.tolist() == [t.person_id for t in records]
        assert vectors.dtype == np.float32 and vectors.flags.c_contiguous and vectors.shape == (10, 16)
        assert np.array_equal(vectors, np.stack([t.embedding for t in records]))
        assert store.load_embeddings("dlib_resnet_int8")[2].shape == (1, 128)
        with pytest.raises(GalleryError, match="have 16 values, these have 32"):
            store.enroll(PersonProfile("d"), [rng.standard_normal(32)], [1.0], MODEL)
        assert store.status()["templates"] == {"dlib_resnet_int8": 1, MODEL: 10}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "  "}, "person name: must not be empty"),
        ({"name": "x", "groups": "staff"}, "profile.groups"),
        ({"name": "x", "retention_days": 0}, "retention_days: must be >= 1"),
        ({"name": "x", "valid_from": 10, "valid_until": 5}, "valid_from: must not be after"),
    ],
)
def test_invalid_profiles_are_refused_naming_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(GalleryError, match=message):
        PersonProfile(**kwargs)
