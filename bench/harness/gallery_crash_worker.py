"""Crash-safety harness for the gallery: a worker that writes until it is SIGKILLed, and the check.

    python -m bench.harness.gallery_crash_worker DATA_DIR KEYFILE OP [--seed N]

OP is `enroll`, `remove`, `rotate`, `snapshot` or `mixed`. The worker opens the gallery, prints
`ready`, then loops bulk enrollments (several transactions per call), removals, device-key
rotations, in `snapshot` daemon-style opens (the index from its encrypted snapshot or the
templates, a new snapshot written after a cold open) between enrollments and removals, and in
`mixed` all of these plus KEK add/forget rounds, forever. Person i is always named `crash person NNNN` with
TEMPLATES_PER_PERSON templates seeded by i, so `check` can tell a whole person from a torn one.
Used by tests/gallery/test_store.py (a few trials) and bench/gallery_crash.py (many).
"""

from __future__ import annotations

import argparse
import os
import random
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.gallery import admin
from edge.gallery import snapshot as index_snapshot
from edge.gallery.crypto import kek_id, new_key, read_kek_file
from edge.gallery.search import Gallery
from edge.gallery.store import GALLERY_FILE, GalleryStore, PersonProfile

REPO = Path(__file__).resolve().parents[2]
MODEL = "crash_test"
N_PEOPLE = 48
TEMPLATES_PER_PERSON = 3
DIM = 512
OPS = ("enroll", "remove", "rotate", "snapshot", "mixed")


def person_name(i: int) -> str:
    return f"crash person {i:04d}"


def person_vectors(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal((TEMPLATES_PER_PERSON, DIM)).astype(np.float32)


def _enroll(store: GalleryStore, rng: random.Random, present: set[int]) -> None:
    absent = sorted(set(range(N_PEOPLE)) - present)
    chosen = rng.sample(absent, min(len(absent), rng.randint(1, 8)))
    items = [(PersonProfile(name=person_name(i), groups=("crash",)), list(person_vectors(i)), [0.5] * TEMPLATES_PER_PERSON) for i in chosen]
    # batch of two persons' worth of templates: one call commits several transactions
    store.enroll_many(items, MODEL, batch=2 * TEMPLATES_PER_PERSON)
    present.update(chosen)


def _remove(store: GalleryStore, rng: random.Random, present: set[int]) -> None:
    for i in rng.sample(sorted(present), min(len(present), rng.randint(1, 3))):
        store.remove(person_name(i))
        present.discard(i)


def _rotate_kek(store: GalleryStore) -> None:
    # The key file never changes, so the second key is added and forgotten again: both
    # transactions of a KEK rotation run, and a crash between them leaves a gallery the
    # key file still opens.
    new = new_key()
    admin.rotate_kek(store, new)
    admin.forget_kek(store, kek_id(new))


def _open_index(store: GalleryStore) -> Gallery:
    """What a daemon start does: the index from the snapshot, or from the templates and then a
    snapshot written (this harness's galleries are small: any size gets one)."""
    return Gallery(store, MODEL, DIM, threshold=0.5)


def work(data_dir: Path, keyfile: Path, op: str, seed: int) -> None:
    index_snapshot.MIN_TEMPLATES = 1
    kek = read_kek_file(keyfile)
    rng = random.Random(seed)
    with GalleryStore.open(data_dir, kek) as store:
        for stale in store.status()["kek_ids"]:
            if stale != kek_id(kek):
                admin.forget_kek(store, stale)  # finish a KEK round that a previous kill interrupted
        present = {int(p.profile.name.rsplit(" ", 1)[1]) for p in store.persons()}
        print("ready", flush=True)
        while True:
            if op == "snapshot":
                step = rng.choice(("enroll", "remove", "open", "open"))
            else:
                step = op if op != "mixed" else rng.choice(("enroll", "enroll", "remove", "rotate", "kek", "open"))
            if step == "enroll" and len(present) == N_PEOPLE:
                step = "remove"
            if step == "remove" and not present:
                step = "enroll"
            if step == "enroll":
                _enroll(store, rng, present)
            elif step == "remove":
                _remove(store, rng, present)
            elif step == "rotate":
                admin.rotate_device_key(store)
            elif step == "open":
                _open_index(store)  # not closed: closing a Gallery closes its store
            else:
                _rotate_kek(store)


def check(data_dir: Path, kek: bytes) -> tuple[list[str], int]:
    """(problems, persons present): integrity_check, every person whole or absent, and the
    index a daemon would open (from a snapshot or the templates) holding exactly those people,
    each found by their own template — twice, so the second open meets the snapshot the first
    one may have written."""
    with GalleryStore.open(data_dir, kek) as store:
        problems = admin.integrity_check(store)
        names = {p.id: p.profile.name for p in store.persons()}
        found: dict[int, list[np.ndarray]] = {}
        for t in store.templates(MODEL):
            found.setdefault(t.person_id, []).append(t.embedding)
    for person_id, name in names.items():
        i = int(name.rsplit(" ", 1)[1])
        vectors = found.get(person_id, [])
        if len(vectors) != TEMPLATES_PER_PERSON or not np.array_equal(np.stack(vectors), person_vectors(i)):
            problems.append(f"{name}: {len(vectors)} of {TEMPLATES_PER_PERSON} templates, or not the ones enrolled")
    smallest, index_snapshot.MIN_TEMPLATES = index_snapshot.MIN_TEMPLATES, 1
    try:
        for attempt in ("first", "second"):
            with GalleryStore.open(data_dir, kek) as store:
                gallery = _open_index(store)
                indexed = set(np.unique(gallery._template_persons).tolist())
                if indexed != set(names):
                    problems.append(f"{attempt} open from {gallery.opened_from}: index holds persons {sorted(indexed ^ set(names))} wrongly")
                for name in names.values():
                    match = gallery.identify(person_vectors(int(name.rsplit(" ", 1)[1]))[0])
                    if match.person != name:
                        problems.append(f"{attempt} open from {gallery.opened_from}: {name} identified as {match.person}")
    finally:
        index_snapshot.MIN_TEMPLATES = smallest
    return problems, len(names)


@dataclass(frozen=True, slots=True)
class Trial:
    kill_ms: float
    wal_bytes_at_kill: int
    snapshot_half_written: bool  # killed while an index snapshot was being written
    persons_before: int
    persons_after: int
    problems: tuple[str, ...]


def run_trial(data_dir: Path, keyfile: Path, kek: bytes, op: str, delay_s: float, seed: int, persons_before: int) -> Trial:
    """Starts a worker, SIGKILLs it `delay_s` after it is ready, then checks the gallery."""
    log = data_dir.parent / f"worker-{seed}.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.harness.gallery_crash_worker", str(data_dir), str(keyfile), op, "--seed", str(seed)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=stderr,
        )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60.0)
        line = proc.stdout.readline() if ready and proc.stdout else b""
        if line.strip() != b"ready":
            proc.kill()
            proc.wait()
            raise RuntimeError(f"crash worker did not start: {log.read_text(errors='replace')[-2000:]}")
        started = time.perf_counter()
        time.sleep(delay_s)
        if proc.poll() is not None:
            raise RuntimeError(f"crash worker exited by itself ({proc.returncode}): {log.read_text(errors='replace')[-2000:]}")
        os.kill(proc.pid, signal.SIGKILL)
        kill_ms = (time.perf_counter() - started) * 1000.0
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
    wal = data_dir / (GALLERY_FILE + "-wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    half_written = any(data_dir.glob("index-*.snap.tmp"))
    problems, after = check(data_dir, kek)
    return Trial(kill_ms, wal_bytes, half_written, persons_before, after, tuple(problems))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("keyfile", type=Path)
    parser.add_argument("op", choices=OPS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work(args.data_dir, args.keyfile, args.op, args.seed)


if __name__ == "__main__":
    main()
