"""1:N search latency, recall and memory of `edge.vector_index.VectorIndex`; prints one JSON object.

    .venv/bin/python bench/gallery.py --size N [--dim 512] [--queries 500] [--seed 0]
        [--prefilter auto|faiss|numpy|sqlite-vec] [--compare-sqlite-vec Q] [--no-centre]
        [--encrypted [--per-person N] [--open-repeats R]]

One core: the process is pinned to one CPU (`--cpu`, default the highest) and BLAS / OpenMP run
one thread.

Synthetic gallery, shaped like real face embeddings rather than uniform noise (figures measured on
EdgeFace-XXS embeddings of the 3,811 LFW images in ../shared/data):
- Variation lives in a random orthonormal basis with variances exp(-j / (dim * 70 / 512)) for
  component j — LFW: ~1.3 % of the variance in each top component, 76 % in the top 100, a
  participation ratio of ~140, so impostor cosines spread with std ~0.08, not 1/sqrt(dim).
- Every vector shares a mean direction; its size is set so the unit embeddings' mean has norm
  `--mean-norm` (default 0.12 as measured; dlib's 128-d embeddings: 0.91).
- `--size` identities, one template each: template = normalise(mean + centre + s * noise), centre
  and noise drawn from that spectrum, s uniform in [0.6, 1.0] per sample.
- Queries: 80 % are a fresh sample (own noise) of a random enrolled identity — cosine to its
  template ~0.6, like same-person pairs (LFW: 0.61 ± 0.12) — and 20 % are identities never
  enrolled. `genuine_cos_p50` and `impostor_cos_std` in the output check the resemblance.

Reported: `search_p50_ms` / `search_p95_ms` over all queries after a warm-up; `brute_numpy_p50_ms`,
`gallery @ q` + argmax on the float32 gallery (on min(queries, 50) queries: it is slow at 1M);
`search_cpu_p50_ms` / `search_cpu_p95_ms`: the same searches in CPU time of the searching thread
(what a search costs when it has the core; on a shared machine the wall figures also hold the
time other processes took the core away);
`recall_at_1`: share of queries whose top-1 id equals exact float32 search's (also split by
enrolled / stranger queries); `build_ms`; `open_ms`: with `--encrypted`, the gallery is enrolled
into an encrypted `GalleryStore` in a temporary directory and opened as the daemon opens it from
its templates, `Gallery(GalleryStore.open(...), snapshot=False)` (every template decrypted, the
index built), `--open-repeats` times: the median (each in `open_ms_runs`), `open_cpu_ms` the
same in CPU time, split once into `open_decrypt_ms` (`load_embeddings`) and `open_index_ms`
(`build`); one thread (`open_threads`). Then with the index snapshot on (edge/gallery/snapshot.py):
`open_first_ms` (a cold open that then writes the snapshot, `snapshot_mb`) and `open_warm_ms`
(median of `--open-repeats` opens from the snapshot: a restart with an unchanged gallery).
Null without `--encrypted`. `rss_mb`: peak RSS of the process (the bench holds the float32 gallery too:
2 GB at 1M × 512); `index_mb`: `VectorIndex.memory_bytes`. `--compare-sqlite-vec Q` adds the same
index with the sqlite-vec prefilter, timed on Q queries (slow: O(shortlist · rows) per query).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import platform
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.gallery.index import VectorIndex
from edge.gallery.prefilter import PREFILTERS

ENROLLED_SHARE = 0.8
BLOCK = 65_536


@dataclass(frozen=True, slots=True)
class Synthetic:
    gallery: np.ndarray  # (size, dim) float32, unit rows; row i = identity i
    queries: np.ndarray  # (n, dim) float32, unit rows
    identity: np.ndarray  # (n,) enrolled identity of each query, -1 for strangers


def synthetic(size: int, dim: int, n_queries: int, mean_norm: float, seed: int) -> Synthetic:
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    variances = np.exp(-np.arange(dim) / (dim * 70 / 512))
    mix = (np.sqrt(variances / variances.sum())[:, None] * basis.T).astype(np.float32)  # z @ mix
    direction = rng.standard_normal(dim)
    direction /= np.linalg.norm(direction)
    # |mean + v| ≈ sqrt(a² + 1 + s²) with E s² ≈ 0.65, so the unit vectors' mean has norm ≈ mean_norm.
    offset = (direction * mean_norm * np.sqrt(1.65 / (1 - mean_norm**2))).astype(np.float32)

    def sample(centres: np.ndarray) -> np.ndarray:
        noise = rng.uniform(0.6, 1.0, (len(centres), 1)).astype(np.float32)
        v = offset + (centres + noise * rng.standard_normal(centres.shape, dtype=np.float32)) @ mix
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    n_enrolled = min(size, round(n_queries * ENROLLED_SHARE))
    identity = np.full(n_queries, -1, dtype=np.int64)
    identity[:n_enrolled] = rng.choice(size, n_enrolled, replace=False)
    queries = np.empty((n_queries, dim), dtype=np.float32)
    gallery = np.empty((size, dim), dtype=np.float32)
    for start in range(0, size, BLOCK):
        centres = rng.standard_normal((min(BLOCK, size - start), dim), dtype=np.float32)
        gallery[start : start + len(centres)] = sample(centres)
        mine = np.flatnonzero((identity >= start) & (identity < start + len(centres)))
        queries[mine] = sample(centres[identity[mine] - start])
    strangers = np.flatnonzero(identity < 0)
    queries[strangers] = sample(rng.standard_normal((len(strangers), dim), dtype=np.float32))
    order = rng.permutation(n_queries)
    return Synthetic(gallery, queries[order], identity[order])


def exact_top1(gallery: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and cosine of each query's nearest gallery row, float32 brute force in blocks."""
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    rows = np.zeros(len(queries), dtype=np.int64)
    for start in range(0, len(gallery), BLOCK):
        scores = gallery[start : start + BLOCK] @ queries.T
        top = scores.argmax(axis=0)
        value = scores[top, np.arange(len(queries))]
        better = value > best
        best[better], rows[better] = value[better], top[better] + start
    return rows, best


def percentiles(samples_ms: list[float]) -> tuple[float, float]:
    return round(float(np.percentile(samples_ms, 50)), 3), round(float(np.percentile(samples_ms, 95)), 3)


def timed_searches(index: VectorIndex, queries: np.ndarray) -> tuple[list[float], list[float], np.ndarray]:
    """(wall ms, CPU ms of this thread, top-1 id) per query, after a warm-up. The CPU time leaves
    out the time the thread waited for the core: on a shared machine it shows the cost of the
    search itself when the wall time is inflated by other processes."""
    for q in queries[: min(10, len(queries))]:
        index.search(q, 5)
    wall, cpu, top = [], [], np.empty(len(queries), dtype=np.int64)
    for i, q in enumerate(queries):
        started, started_cpu = time.perf_counter(), time.thread_time()
        found = index.search(q, 5)
        cpu.append((time.thread_time() - started_cpu) * 1000.0)
        wall.append((time.perf_counter() - started) * 1000.0)
        top[i] = found[0][0]
    return wall, cpu, top


def recall(found: np.ndarray, truth: np.ndarray, identity: np.ndarray) -> dict[str, float | None]:
    hit = found == truth
    enrolled = identity >= 0
    return {
        "recall_at_1": round(float(hit.mean()), 4),
        "recall_at_1_enrolled": round(float(hit[enrolled].mean()), 4) if enrolled.any() else None,
        "recall_at_1_strangers": round(float(hit[~enrolled].mean()), 4) if (~enrolled).any() else None,
    }


@dataclass(frozen=True, slots=True)
class OpenFigures:
    open_ms: list[float]  # whole cold opens, `Gallery(GalleryStore.open(...), snapshot=False)`, one per repeat
    open_cpu_ms: list[float]  # the same opens in CPU time of this process
    first_ms: float  # the first open with the snapshot on: a cold open, then the snapshot written
    warm_ms: list[float]  # opens from the index snapshot, one per repeat
    snapshot_mb: float
    decrypt_ms: float  # `load_embeddings` alone (read + unwrap + decrypt), last repeat
    index_ms: float  # `VectorIndex.build` on what it returned, last repeat
    template_ids: np.ndarray  # in gallery row order


def encrypted_open(gallery: np.ndarray, index: VectorIndex, per_person: int, repeats: int) -> OpenFigures:
    """Enrolls the gallery into an encrypted store, `per_person` consecutive rows per person,
    then times what the daemon does at start, `repeats` times: `Gallery(GalleryStore.open(...))`
    — open the file, unwrap each person's key, decrypt every template, build the index (its
    own). Then once more in two timed parts (decrypt, index build), the index being `index`,
    which the search figures use. One template per person is the worst case (a key unwrap and
    a cipher per template). Everything runs in this thread: the open uses one core.
    """
    from edge.gallery.crypto import new_key
    from edge.gallery.search import Gallery
    from edge.gallery.store import GalleryStore, PersonProfile

    model, kek = f"synthetic_{gallery.shape[1]}", new_key()
    n = len(gallery)
    with tempfile.TemporaryDirectory() as tmp:
        items = (
            (PersonProfile(name=f"person {p:07d}"), list(gallery[p * per_person : (p + 1) * per_person]), [1.0] * len(gallery[p * per_person : (p + 1) * per_person]))
            for p in range(-(-n // per_person))
        )
        with GalleryStore.open(Path(tmp), kek, create=True) as store:
            store.enroll_many(items, model, batch=2000)
        def timed_open(snapshot: bool, expect: str) -> tuple[float, float]:
            started, started_cpu = time.perf_counter(), time.process_time()
            with Gallery(GalleryStore.open(Path(tmp), kek), model, gallery.shape[1], threshold=0.0, snapshot=snapshot) as opened:
                took = (time.perf_counter() - started) * 1000.0, (time.process_time() - started_cpu) * 1000.0
                assert opened.opened_from == expect, opened.opened_from
            return took

        opens, opens_cpu = zip(*(timed_open(False, "templates") for _ in range(repeats)), strict=True)
        first = timed_open(True, "templates")[0]
        warm = [timed_open(True, "snapshot")[0] for _ in range(repeats)]
        snapshot_mb = sum(f.stat().st_size for f in Path(tmp).glob("index-*.snap")) / 2**20
        with GalleryStore.open(Path(tmp), kek) as store:
            started = time.perf_counter()
            template_ids, _person_ids, vectors = store.load_embeddings(model)
            decrypted = time.perf_counter()
            index.build(template_ids, vectors)
            built = time.perf_counter()
    # Template ids grow in enrollment order, which is gallery row order.
    return OpenFigures(list(opens), list(opens_cpu), first, warm, snapshot_mb, (decrypted - started) * 1000.0, (built - decrypted) * 1000.0, template_ids)


def sqlite_vec_figures(args: argparse.Namespace, data: Synthetic, truth: np.ndarray, ids: np.ndarray) -> dict[str, object]:
    index = VectorIndex(args.dim, exact_max=args.exact_max, shortlist=args.shortlist, prefilter="sqlite-vec", centre=not args.no_centre)
    started = time.perf_counter()
    index.build(ids, data.gallery)
    build_ms = (time.perf_counter() - started) * 1000.0
    n = min(args.compare_sqlite_vec, len(data.queries))
    times, _cpu, top = timed_searches(index, data.queries[:n])
    p50, p95 = percentiles(times)
    return {
        "queries": n,
        "build_ms": round(build_ms, 1),
        "search_p50_ms": p50,
        "search_p95_ms": p95,
        **recall(top, ids[truth[:n]], data.identity[:n]),
        "index_mb": round(index.memory_bytes / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mean-norm", type=float, default=0.12)
    parser.add_argument("--exact-max", type=int, default=20_000)
    parser.add_argument("--shortlist", type=int, default=None, help="default: the index's own (by size)")
    parser.add_argument("--prefilter", choices=PREFILTERS, default="auto")
    parser.add_argument("--no-centre", action="store_true", help="sign codes of the raw rows")
    parser.add_argument("--compare-sqlite-vec", type=int, default=0, metavar="Q")
    parser.add_argument("--cpu", type=int, help="core to pin to (default: the highest this process may use)")
    parser.add_argument("--encrypted", action="store_true", help="open_ms through an encrypted GalleryStore")
    parser.add_argument("--per-person", type=int, default=1, help="with --encrypted: templates per enrolled person")
    parser.add_argument("--open-repeats", type=int, default=3, help="with --encrypted: opens timed (open_ms is their median)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))})

    data = synthetic(args.size, args.dim, args.queries, args.mean_norm, args.seed)
    truth, truth_cos = exact_top1(data.gallery, data.queries)
    index = VectorIndex(args.dim, exact_max=args.exact_max, shortlist=args.shortlist, prefilter=args.prefilter, centre=not args.no_centre)
    ids = np.arange(args.size, dtype=np.int64) * 7 + 3  # template ids are not row numbers
    started = time.perf_counter()
    index.build(ids, data.gallery)
    build_ms = (time.perf_counter() - started) * 1000.0
    opened = None
    if args.encrypted:
        opened = encrypted_open(data.gallery, index, args.per_person, args.open_repeats)
        ids = opened.template_ids

    times, cpu_times, top = timed_searches(index, data.queries)
    brute = []
    for q in data.queries[: min(50, len(data.queries))]:
        started = time.perf_counter()
        int(np.argmax(data.gallery @ q))
        brute.append((time.perf_counter() - started) * 1000.0)
    p50, p95 = percentiles(times)
    enrolled = data.identity >= 0
    genuine = np.einsum("ij,ij->i", data.gallery[data.identity[enrolled]], data.queries[enrolled])
    sample = data.gallery[: min(2000, args.size)]
    impostor = (sample @ sample.T)[np.triu_indices(len(sample), 1)]
    out: dict[str, object] = {
        "size": args.size,
        "dim": args.dim,
        "regime": index.regime,
        "prefilter": index.scan_engine or args.prefilter,
        "shortlist": index._shortlist_size(),
        "centre": not args.no_centre,
        "queries": args.queries,
        "search_p50_ms": p50,
        "search_p95_ms": p95,
        "search_cpu_p50_ms": percentiles(cpu_times)[0],
        "search_cpu_p95_ms": percentiles(cpu_times)[1],
        "brute_numpy_p50_ms": percentiles(brute)[0],
        **recall(top, ids[truth], data.identity),
        "build_ms": round(build_ms, 1),
        "open_ms": None if opened is None else round(float(np.median(opened.open_ms)), 1),
        "open_ms_runs": None if opened is None else [round(t, 1) for t in opened.open_ms],
        "open_cpu_ms": None if opened is None else round(float(np.median(opened.open_cpu_ms)), 1),
        "open_decrypt_ms": None if opened is None else round(opened.decrypt_ms, 1),
        "open_index_ms": None if opened is None else round(opened.index_ms, 1),
        "open_threads": 1 if opened is not None else None,
        "open_first_ms": None if opened is None else round(opened.first_ms, 1),
        "open_warm_ms": None if opened is None else round(float(np.median(opened.warm_ms)), 1),
        "open_warm_ms_runs": None if opened is None else [round(t, 1) for t in opened.warm_ms],
        "snapshot_mb": None if opened is None else round(opened.snapshot_mb, 1),
        "templates_per_person": args.per_person if args.encrypted else None,
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "index_mb": round(index.memory_bytes / 2**20, 1),
        "genuine_cos_p50": round(float(np.median(genuine)), 3) if enrolled.any() else None,
        "impostor_cos_std": round(float(impostor.std()), 3),
        "mean_norm": round(float(np.linalg.norm(sample.mean(axis=0))), 3),
        "exact_top1_cos_p50": round(float(np.median(truth_cos)), 3),
        "cpu": platform.processor() or platform.machine(),
        "threads": 1,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if args.compare_sqlite_vec:
        del index
        out["sqlite_vec"] = sqlite_vec_figures(args, data, truth, ids)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
