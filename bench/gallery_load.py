"""Gallery open time: `GalleryStore.open` + `load_embeddings` on synthetic templates; one JSON object.

    .venv/bin/python bench/gallery_load.py [--templates 100000] [--per-person 1 10] [--dim 512] [--repeat 5]

For each templates-per-person layout, a gallery of `--templates` random unit vectors is built in
a temporary directory (bulk `enroll_many`), closed, then opened `--repeat` times from the page
cache. Pinned to one CPU core. Reported per layout: build time, file size, `open_ms` (key check +
connection) and `load_ms` (decrypt every template into one array): median, min and max wall
time, and the median CPU time. `aesgcm_floor_ms` is the bare cost of `--templates` AES-GCM
decryptions of one template-sized blob, measured in the same run: the floor under `load_ms` on
this machine at this moment, to compare figures from noisy or throttled hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.gallery.crypto import new_key
from edge.gallery.store import GALLERY_FILE, GalleryStore, PersonProfile

MODEL = "synthetic_512"


def build(data_dir: Path, kek: bytes, n_templates: int, per_person: int, dim: int) -> float:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n_templates, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = (
        (PersonProfile(name=f"person {i:07d}"), list(vectors[i * per_person : (i + 1) * per_person]), [1.0] * per_person)
        for i in range(n_templates // per_person)
    )
    started = time.perf_counter()
    with GalleryStore.open(data_dir, kek, create=True) as store:
        store.enroll_many(items, MODEL, batch=2000)
    return time.perf_counter() - started


def measure(data_dir: Path, kek: bytes, repeat: int, expected: int) -> dict[str, float]:
    opens, loads, cpu = [], [], []
    for _ in range(repeat):
        started = time.perf_counter()
        store = GalleryStore.open(data_dir, kek)
        opened, cpu_started = time.perf_counter(), time.process_time()
        ids, _, vectors = store.load_embeddings(MODEL)
        loaded, cpu_loaded = time.perf_counter(), time.process_time()
        store.close()
        if len(ids) != expected:
            raise SystemExit(f"loaded {len(ids)} templates, expected {expected}")
        opens.append((opened - started) * 1000.0)
        loads.append((loaded - opened) * 1000.0)
        cpu.append((cpu_loaded - cpu_started) * 1000.0)
        del vectors
    return {
        "open_ms_p50": round(statistics.median(opens), 1),
        "load_ms_p50": round(statistics.median(loads), 1),
        "load_ms_min": round(min(loads), 1),
        "load_ms_max": round(max(loads), 1),
        "load_cpu_ms_p50": round(statistics.median(cpu), 1),
    }


def crypto_floor_ms(n: int, dim: int) -> float:
    aead = AESGCM(new_key())
    nonce, plain = os.urandom(12), os.urandom(4 * (dim + 1))
    sealed, out = aead.encrypt(nonce, plain, b"aad"), bytearray(len(plain))
    started = time.perf_counter()
    for _ in range(n):
        aead.decrypt_into(nonce, sealed, b"aad", out)
    return (time.perf_counter() - started) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=int, default=100_000)
    parser.add_argument("--per-person", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    kek = new_key()
    layouts = {}
    for per_person in args.per_person:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp)
            build_s = build(data_dir, kek, args.templates, per_person, args.dim)
            layouts[f"{per_person}_per_person"] = {
                "persons": args.templates // per_person,
                "build_s": round(build_s, 1),
                "file_mb": round((data_dir / GALLERY_FILE).stat().st_size / 2**20, 1),
                **measure(data_dir, kek, args.repeat, args.templates // per_person * per_person),
                "aesgcm_floor_ms": round(crypto_floor_ms(args.templates, args.dim), 1),
            }
    print(json.dumps({
        "templates": args.templates,
        "dim": args.dim,
        "cpu": platform.processor() or platform.machine(),
        "cores_used": 1,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "layouts": layouts,
    }))


if __name__ == "__main__":
    main()
