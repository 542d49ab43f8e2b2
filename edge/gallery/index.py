"""The in-memory 1:N index over a gallery's templates: `search(q) -> [(template id, cosine)]`.

Two regimes, chosen by size (figures from `bench/gallery.py`, one core, 512-d, README):

- **exact** (at most `exact_max` rows): unit float32 rows, one matrix-vector product; the answer
  is the true top k.
- **two-stage** (larger): a Hamming shortlist of `shortlist` rows over sign codes of the centred
  rows (`edge.gallery.prefilter`), then those rows rescored with int8 copies (`edge.gallery.quantize`) and the k
  best returned. For 1M × 512 the index holds 64 MB of codes, 512 MB of int8 rows and 8 MB of
  ids (557 MB); the float32 rows alone would be 2 GB. Returned similarities are the int8
  estimates (error std 5e-4 of a cosine, max ~2e-3).

The default shortlist (1,000 rows below 500k templates, 2,000 above) is measured: on face-like
synthetic galleries (bench/gallery.py, 20 % of probes from strangers) recall@1 against exact
float search is, for shortlists of 200 / 1,000 / 2,000 rows, 0.97 / 0.99–0.997 / 0.994 at 100k
and 0.966 / 0.986 / 0.994 at 1M.
Enrolled probes are found with any of them; the misses are strangers, whose best match is a
near-tie (top-2 margin often < 0.002) that Hamming distance cannot rank (an exhaustive int8
search reaches 0.996 at 100k: the int8 error costs the other 0.4 %). 512-bit codes suit 512-d
embedders; for 128-d ones (dlib) the 128-bit codes recall only ~0.94 at 100k, so raise
`exact_max` there.

Where a 100k search's time goes (one core, per-stage timers over 300 fresh queries, medians):
the Hamming scan 0.27–0.32 ms with faiss (1.5 ms as numpy passes), the shortlist cut 0.09–0.15,
the gather of 1,000 int8 rows 0.04–0.09, their rescore 0.17–0.24, query encoding and the final
top-k ~0.08 ms. Tried and measured not to pay: fewer bits (256 sign bits, raw or PCA-rotated,
need a 2,000-row shortlist for the same recall, and a rotation costs 0.34 s of build per 100k),
a second scan stage on the survivors of a half-width first one (the gather of their codes costs
what the skipped words save), faiss's top-k (`IndexBinaryFlat` 1.3 ms, `hammings_knn_mc`
0.6 ms for k = 1,000), OpenCV's `batchDistance` (1.5 ms), simsimd's `cdist` (no faster than
numpy without AVX-512), a float32 BLAS rescore (the int8 → float32 copy costs what BLAS saves).

The regime is decided by `build`; `add` switches exact → two-stage when the gallery outgrows
`exact_max`, and `remove` never switches back (the float rows are gone; the next `build`
decides again). Nothing here touches the disk: the default prefilter is faiss (numpy where faiss
is not installed), and the optional sqlite-vec one uses a private `:memory:` database with
temp_store=MEMORY.

Row r of every array is the same template; removal moves the last rows into the holes, so rows
stay dense and a removed id can never come back from a search. An index is not safe for a write
concurrent with anything else; the daemon serialises gallery changes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np

from edge.errors import GalleryError
from edge.gallery.prefilter import PREFILTERS, CodeStore, engine, grown
from edge.gallery.quantize import BLOCK_ROWS, FIT_ROWS, Int8Codec, normalised_blocks, words_for

METRICS = ("cosine",)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, highest first (ties keep index order)."""
    if k < len(scores):
        part = np.argpartition(-scores, k - 1)[:k]
        part.sort()
    else:
        part = np.arange(len(scores))
    return part[np.argsort(-scores[part], kind="stable")]


def _repeats(ids: np.ndarray) -> bool:
    """True when an id occurs twice. Ids loaded from the store come sorted: checking that costs
    0.1 ms, np.unique 17 ms at 100k."""
    return len(ids) > 1 and not np.all(ids[1:] > ids[:-1]) and len(np.unique(ids)) != len(ids)


class VectorIndex:
    """Build once from the decrypted templates, then `search`; `add` / `remove` keep it current."""

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        exact_max: int = 20_000,
        shortlist: int | None = None,
        *,
        prefilter: str = "auto",
        centre: bool = True,
    ) -> None:
        if dim < 1:
            raise GalleryError(f"index dim must be >= 1 (got {dim})")
        if metric not in METRICS:
            raise GalleryError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
        if prefilter not in PREFILTERS:
            raise GalleryError(f"unknown prefilter {prefilter!r}; valid: {', '.join(PREFILTERS)}")
        if exact_max < 0 or (shortlist is not None and shortlist < 1):
            raise GalleryError(f"exact_max must be >= 0 and shortlist >= 1 (got {exact_max}, {shortlist})")
        self.dim = dim
        self.metric = metric
        self.exact_max = exact_max
        self.shortlist = shortlist
        self.prefilter = prefilter
        self.centre = centre
        self._clear()

    def _clear(self) -> None:
        self._n = 0
        self._ids = np.empty(0, dtype=np.int64)
        self._exact: np.ndarray | None = np.empty((0, self.dim), dtype=np.float32)
        self._int8: np.ndarray | None = None
        self._codec: Int8Codec | None = None
        self._codes: CodeStore | None = None

    def __len__(self) -> int:
        return self._n

    @property
    def regime(self) -> str:
        return "exact" if self._exact is not None else "two-stage"

    @property
    def scan_engine(self) -> str | None:
        """The shortlist engine in use ("faiss", "numpy", "sqlite-vec"); None in the exact regime."""
        return None if self._codes is None else self._codes.name

    @property
    def memory_bytes(self) -> int:
        """Bytes of the arrays (and, for sqlite-vec, database pages) the index holds."""
        held = [self._ids, self._exact, self._int8]
        total = sum(a.nbytes for a in held if a is not None)
        if self._codec is not None and self._codes is not None:
            total += self._codec.nbytes + self._codes.nbytes
        return total

    # -- changes ------------------------------------------------------------------------------

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replaces the content. `vectors` (n, dim) are normalised here; the input is not kept.
        A bad input raises GalleryError and leaves the index as it was."""
        ids, vectors = self._checked(ids, vectors)
        codec = Int8Codec.fit(vectors, centre=self.centre, ids=ids) if len(ids) > self.exact_max else None
        self._fill(len(ids), codec, [(ids, vectors)])  # already checked

    def build_from_blocks(self, n: int, blocks: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """`build` from (ids, vectors) blocks totalling `n` rows, each block encoded as it comes:
        the gallery's open decrypts into one reused block buffer, so its templates never exist
        in clear all at once (and a 100k × 512 float32 array's first-touch page faults, 0.4 s,
        are never paid). A block's arrays may be overwritten once the next block is drawn.

        In the two-stage regime the codec is fitted on the first FIT_ROWS rows (copies held
        until the fit), not on rows spread over the whole gallery: enrollment order says
        nothing about the embeddings' mean and spread.
        """
        checked = (self._checked(*block) for block in blocks)
        held: list[tuple[np.ndarray, np.ndarray]] = []
        codec = None
        if n > self.exact_max:
            count = 0
            while count < FIT_ROWS:
                block = next(checked, None)
                if block is None:
                    break
                held.append((block[0].copy(), block[1].copy()))
                count += len(block[0])
            codec = Int8Codec.fit_blocks(held, centre=self.centre, dim=self.dim)
        self._fill(n, codec, itertools.chain(held, checked))

    def _fill(self, n: int, codec: Int8Codec | None, blocks: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """The index's arrays for `n` rows filled from the blocks (already `_checked`): float32
        rows when `codec` is None (exact regime), else int8 rows and sign codes. Replaces the
        content only once every block is in; a bad block raises GalleryError and leaves the
        index as it was."""
        all_ids = np.empty(n, dtype=np.int64)
        exact = np.empty((n, self.dim), dtype=np.float32) if codec is None else None
        int8 = np.empty((n, self.dim), dtype=np.int8) if codec is not None else None
        codes = np.empty((n, words_for(self.dim)), dtype=np.uint64) if codec is not None else None
        filled = 0
        for ids, vectors in blocks:
            end = filled + len(ids)
            if end > n:
                raise GalleryError(f"more than the {n} templates announced")
            all_ids[filled:end] = ids
            if codec is None:
                for start, rows in zip(range(filled, end, BLOCK_ROWS), normalised_blocks(vectors, ids=ids), strict=True):
                    exact[start : start + len(rows)] = rows
            else:
                self._encode_into(codec, ids, vectors, int8[filled:end], codes[filled:end])
            filled = end
        if filled != n:
            raise GalleryError(f"{filled} templates for the {n} announced")
        if _repeats(all_ids):
            raise GalleryError("template ids repeat")
        self._clear()
        if codec is not None:
            store = engine(self.prefilter, words_for(self.dim))
            store.append(codes)
            self._exact, self._codec, self._codes, self._int8 = None, codec, store, int8
        else:
            self._exact = exact
        self._ids = all_ids
        self._n = n

    def export(self) -> dict[str, np.ndarray]:
        """The arrays that are the index (views where possible), for `restore`: ids and float32
        rows in the exact regime; ids, int8 rows, sign codes and the codec's mean and scale in
        the two-stage one."""
        n = self._n
        if self._exact is not None:
            return {"ids": self._ids[:n], "exact": self._exact[:n]}
        assert self._codec is not None and self._codes is not None and self._int8 is not None
        return {"ids": self._ids[:n], "int8": self._int8[:n], "codes": self._codes.rows(), "mean": self._codec.mean, "scale": self._codec.scale}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Replaces the content with `export`'s arrays (taken over, not copied); GalleryError when
        they do not describe an index of this dimension, leaving the index as it was."""
        ids = arrays.get("ids")
        n = -1 if ids is None else len(ids)
        words = words_for(self.dim)
        expected = {"ids": ((n,), np.int64), "exact": ((n, self.dim), np.float32)}
        if "exact" not in arrays:
            expected = {"ids": ((n,), np.int64), "int8": ((n, self.dim), np.int8), "codes": ((n, words), np.uint64),
                        "mean": ((self.dim,), np.float32), "scale": ((self.dim,), np.float32)}
        if n < 0 or set(arrays) != set(expected) or any(arrays[k].shape != shape or arrays[k].dtype != dtype for k, (shape, dtype) in expected.items()):
            raise GalleryError(f"index arrays {sorted(arrays)} do not make a {self.dim}-d index")
        if "exact" in arrays:
            self._clear()
            self._exact = arrays["exact"]
        else:
            store = engine(self.prefilter, words)
            store.append(arrays["codes"])
            self._clear()
            self._exact, self._int8 = None, arrays["int8"]
            self._codec, self._codes = Int8Codec(arrays["mean"], arrays["scale"]), store
        self._ids, self._n = ids, n

    @property
    def ids(self) -> np.ndarray:
        """The template ids held, in row order."""
        return self._ids[: self._n]

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = self._checked(ids, vectors)
        if not len(ids):
            return
        known = ids[np.isin(ids, self._ids[: self._n])]
        if len(known):
            raise GalleryError(f"template ids already indexed: {known[:5].tolist()}")
        n, m = self._n, len(ids)
        if self._exact is not None:
            rows = np.concatenate(list(normalised_blocks(vectors, ids=ids)))
            if n + m > self.exact_max:
                self.build(np.concatenate([self._ids[:n], ids]), np.concatenate([self._exact[:n], rows]))
                return
            self._exact = grown(self._exact, n + m)
            self._exact[n : n + m] = rows
        else:
            assert self._codec is not None and self._codes is not None and self._int8 is not None
            int8, codes = self._encoded(self._codec, ids, vectors)
            self._int8 = grown(self._int8, n + m)
            self._int8[n : n + m] = int8
            self._codes.append(codes)
        self._ids = grown(self._ids, n + m)
        self._ids[n : n + m] = ids
        self._n = n + m

    def remove(self, ids: Iterable[int]) -> None:
        """Drops the rows of these template ids; unknown ids are ignored."""
        gone = np.fromiter((int(i) for i in ids), dtype=np.int64)
        n = self._n
        rows = np.flatnonzero(np.isin(self._ids[:n], gone))
        if not len(rows):
            return
        keep = n - len(rows)
        holes = rows[rows < keep]
        tail = np.arange(keep, n)
        fillers = tail[~np.isin(tail, rows)]
        for array in (self._ids, self._exact, self._int8):
            if array is not None:
                array[holes] = array[fillers]
        if self._codes is not None:
            self._codes.move(fillers, holes)
            self._codes.truncate(keep)
        self._n = keep

    def _encoded(self, codec: Int8Codec, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(int8 rows, sign codes) of `vectors`, in arrays allocated once."""
        int8 = np.empty((len(vectors), self.dim), dtype=np.int8)
        codes = np.empty((len(vectors), words_for(self.dim)), dtype=np.uint64)
        self._encode_into(codec, ids, vectors, int8, codes)
        return int8, codes

    @staticmethod
    def _encode_into(codec: Int8Codec, ids: np.ndarray, vectors: np.ndarray, int8: np.ndarray, codes: np.ndarray) -> None:
        """`vectors` normalised and encoded block by block into `int8` and `codes` (same rows)."""
        for start, rows in zip(range(0, len(vectors), BLOCK_ROWS), normalised_blocks(vectors, ids=ids), strict=True):
            codec.encode_into(rows, int8[start : start + len(rows)], codes[start : start + len(rows)])

    # -- search -------------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
        """The k most similar templates, best first: [(template id, cosine similarity)]."""
        q, k = self._query(query), self._k(k)
        if self._n == 0:
            return []
        if self._exact is not None:
            return self._exhaustive(q, k)
        assert self._codec is not None and self._codes is not None and self._int8 is not None
        encoded = self._codec.query(q)
        # Sorted rows: the gather then walks memory forwards (measured ~20 % faster at 2,000 rows).
        rows = np.sort(self._codes.shortlist(encoded.code, max(self._shortlist_size(), k)))
        scores = encoded.scores(np.take(self._int8, rows, axis=0))
        best = top_k(scores, k)
        return self._pairs(rows[best], scores[best])

    def _shortlist_size(self) -> int:
        """The configured shortlist, else 1,000 rows below 500k templates and 2,000 above:
        the smallest that keeps recall@1 ≥ 0.99 at each size (see the module docstring)."""
        if self.shortlist is not None:
            return self.shortlist
        return 1_000 if self._n < 500_000 else 2_000

    def search_exact(self, query: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
        """Every row scored, no shortlist: the reference that `search` is measured against
        (in the two-stage regime, exact over the int8 rows the index holds)."""
        q, k = self._query(query), self._k(k)
        if self._n == 0:
            return []
        return self._exhaustive(q, k)

    def _exhaustive(self, q: np.ndarray, k: int) -> list[tuple[int, float]]:
        if self._exact is not None:
            scores = self._exact[: self._n] @ q
            best = top_k(scores, k)
            return self._pairs(best, scores[best])
        assert self._codec is not None and self._int8 is not None
        encoded = self._codec.query(q)
        rows, scores = [], []
        for start in range(0, self._n, BLOCK_ROWS):
            block = encoded.scores(self._int8[start : min(self._n, start + BLOCK_ROWS)])
            best = top_k(block, k)
            rows.append(best + start)
            scores.append(block[best])
        all_rows, all_scores = np.concatenate(rows), np.concatenate(scores)
        best = top_k(all_scores, k)
        return self._pairs(all_rows[best], all_scores[best])

    def _pairs(self, rows: np.ndarray, scores: np.ndarray) -> list[tuple[int, float]]:
        # int8 estimates can stray just past ±1; a cosine outside that range would confuse callers.
        return list(zip(self._ids[rows].tolist(), np.clip(scores, -1.0, 1.0).astype(np.float64).tolist(), strict=True))

    # -- input checks -------------------------------------------------------------------------

    def _k(self, k: int) -> int:
        if k < 1:
            raise GalleryError(f"k must be >= 1 (got {k})")
        return min(k, self._n)

    def _query(self, query: np.ndarray) -> np.ndarray:
        q = np.asarray(query, dtype=np.float32)
        if q.ndim == 2 and q.shape[0] == 1:
            q = q[0]
        if q.shape != (self.dim,):
            raise GalleryError(f"query has shape {q.shape}; this index holds {self.dim}-d vectors")
        norm = float(np.linalg.norm(q))
        if not np.isfinite(norm) or norm == 0.0:
            raise GalleryError("query vector is zero or not finite")
        return q / norm

    def _checked(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(ids)
        if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or len(ids) == 0):
            raise GalleryError(f"template ids must be a 1-d integer array (got {ids.dtype} {ids.shape})")
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise GalleryError(f"vectors have shape {vectors.shape}; this index holds {self.dim}-d vectors")
        if len(vectors) != len(ids):
            raise GalleryError(f"{len(ids)} template ids for {len(vectors)} vectors")
        if _repeats(ids):
            raise GalleryError("template ids repeat within one call")
        return ids.astype(np.int64), vectors
