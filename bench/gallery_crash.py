"""Crash safety of the gallery under SIGKILL at random moments; prints one JSON object.

    .venv/bin/python bench/gallery_crash.py [--trials 100] [--seed 0] [--max-delay-ms 400]

Each trial starts bench/harness/gallery_crash_worker.py on the same gallery (bulk enrollments, removals,
device-key rotations, KEK add/forget rounds, daemon-style opens that write the encrypted index
snapshot; the operation mix rotates over trials), SIGKILLs it a random 5..max-delay-ms after it
is ready, reopens the gallery and checks it: integrity_check() must be clean, every person whole
(all its templates, bit-identical) or absent, and the index a daemon opens (twice: from the
templates or a snapshot) must hold exactly the persons present, each found by their template.
`kills_with_wal` counts trials where the worker died with a non-empty WAL, i.e. with frames
that recovery had to keep or drop; `kills_mid_snapshot` counts trials where it died writing an
index snapshot (a `.tmp` file left behind); `persons_changed` counts trials whose kill found the gallery
changed since the previous trial (the worker was mid-stream, not idle).
SIGKILL tests process crashes; power loss additionally depends on the disk honouring fsync.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the harness lives beside the tests, which are not an installed package

import bench.harness.gallery_crash_worker as crash
from edge.gallery.crypto import generate_kek_file
from edge.gallery.store import GalleryStore, PersonProfile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay-ms", type=float, default=400.0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.perf_counter()
    trials: list[crash.Trial] = []
    failures: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, key_path = Path(tmp) / "gallery", Path(tmp) / "kek.key"
        kek = generate_kek_file(key_path)
        with GalleryStore.open(data_dir, kek, create=True) as store:
            seed_people = range(0, crash.N_PEOPLE, 2)
            store.enroll_many(
                ((PersonProfile(crash.person_name(i)), list(crash.person_vectors(i)), [0.5] * crash.TEMPLATES_PER_PERSON) for i in seed_people),
                crash.MODEL,
            )
        persons = len(seed_people)
        for n in range(args.trials):
            op = crash.OPS[n % len(crash.OPS)]
            delay = rng.uniform(0.005, args.max_delay_ms / 1000.0)
            trial = crash.run_trial(data_dir, key_path, kek, op, delay, seed=args.seed * 100_000 + n, persons_before=persons)
            trials.append(trial)
            if trial.problems:
                failures.append({"trial": n, "op": op, "problems": list(trial.problems[:5])})
            persons = trial.persons_after
    kill_ms = [t.kill_ms for t in trials]
    print(json.dumps({
        "trials": len(trials),
        "consistent": sum(not t.problems for t in trials),
        "inconsistent": len(failures),
        "mean_kill_ms": round(statistics.fmean(kill_ms), 1),
        "min_kill_ms": round(min(kill_ms), 1),
        "max_kill_ms": round(max(kill_ms), 1),
        "kills_with_wal": sum(t.wal_bytes_at_kill > 0 for t in trials),
        "kills_mid_snapshot": sum(t.snapshot_half_written for t in trials),
        "persons_changed": sum(t.persons_after != t.persons_before for t in trials),
        "ops": list(crash.OPS),
        "people": crash.N_PEOPLE,
        "templates_per_person": crash.TEMPLATES_PER_PERSON,
        "seconds": round(time.perf_counter() - started, 1),
        "failures": failures,
    }))


if __name__ == "__main__":
    main()
