"""Stage 1 of a large-gallery search: the rows whose sign codes are nearest in Hamming distance.

Three engines keep the codes of the index's rows (row r of the index = code r) and answer
`shortlist(code, size)`; `engine("auto")` picks faiss when it is installed, else numpy:

- `FaissCodes`: codes row-major, `(rows, bytes)` uint8; faiss's `hammings` computes every row's
  distance in one compiled loop (xor + popcount kept in registers), then `nearest` cuts the
  shortlist. Measured on one core at 100k rows × 512 bits, same process: 0.39 ms against
  1.48 ms for `NumpyCodes` (numpy runs xor, popcount and add as separate passes over memory).
  faiss's own top-k (`IndexBinaryFlat.search`, `hammings_knn_mc`) costs 1.27 / 0.62 ms for
  k = 1,000: its heap is built for small k.
- `NumpyCodes`: codes held column-major, `(words, rows)` uint64, so a scan is a few long vector
  operations per 64-bit word (xor, popcount, add) over blocks that stay in cache. The fallback
  where no faiss wheel exists (32-bit ARM).
- `SqliteVecCodes`: the same codes in an in-memory sqlite-vec `vec0` table (`bit[...]` column,
  KNN `MATCH ... AND k = ?`), as DESIGN.md describes.

Why not sqlite-vec, though DESIGN.md names it: measured with sqlite-vec 0.1.9 on one core
(512-bit codes, `bench/gallery.py --compare-sqlite-vec`), a shortlist of 2,000 takes ~300 ms at
100k rows and ~3 s at 1M, against ~1 ms and ~12 ms with numpy; even k = 1 costs 3.3 ms per 100k
rows. Two causes, both in vec0: the PyPI wheel is built without hardware popcount (or AVX), and
each 1,024-row chunk's k best are picked by k passes over the chunk, O(k · rows). 0.1.10a4 adds
an AVX2 popcount but keeps that top-k by default (k = 200 at 100k: 34 ms). `SqliteVecCodes`
stays for that comparison and for a sqlite-vec release that fixes the top-k.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edge.errors import GalleryError
from edge.gallery.sqlite_ext import connect_with_extensions

# Rows per scan block: 32,768 rows keep the xor temporary (256 KB) in the core's L2 cache.
# Measured on one core at 100k rows × 512 bits: 0.74–0.82 ms against 0.99 ms with 131,072-row
# blocks (a 1 MB temporary).
SCAN_BLOCK = 32_768
# Popcounts of up to this many 64-bit words are summed in uint8 (3 × 64 = 192 < 256) before one
# widening add into the uint16 distances: uint8 adds move an eighth of the bytes of uint64 ones.
_WORDS_PER_UINT8 = 3
# The shortlist's cut-off distance is estimated from a strided sample in which about this many
# rows fall under the cut-off: enough that twice the expected count rarely falls short.
_SAMPLE_UNDER_CUTOFF = 64
PREFILTERS = ("auto", "faiss", "numpy", "sqlite-vec")


class CodeStore(Protocol):
    name: str  # the PREFILTERS name of the engine
    def __len__(self) -> int: ...
    def append(self, codes: np.ndarray) -> None: ...
    def move(self, src: np.ndarray, dst: np.ndarray) -> None: ...
    def truncate(self, n: int) -> None: ...
    def shortlist(self, code: np.ndarray, size: int) -> np.ndarray: ...
    def rows(self) -> np.ndarray: ...
    @property
    def nbytes(self) -> int: ...


def grown(array: np.ndarray, needed: int, axis: int = 0) -> np.ndarray:
    """`array` with room for `needed` entries along `axis`. Grows by 1/16: enrolments add a few
    rows at a time, and a 1M-row index (557 MiB) must stay inside its memory budget, so a copy
    every 62k added rows beats doubling. The copy briefly holds old and new arrays."""
    have = array.shape[axis]
    if needed <= have:
        return array
    shape = list(array.shape)
    shape[axis] = max(needed, have + have // 16, 64)
    out = np.empty(shape, dtype=array.dtype)
    index = [slice(None)] * array.ndim
    index[axis] = slice(0, have)
    out[tuple(index)] = array
    return out


def nearest_by_histogram(distances: np.ndarray, size: int) -> np.ndarray:
    """Indices of the `size` smallest distances (small non-negative integers), in index order.

    A histogram finds the cut-off distance; rows tied at the cut-off fill the remaining places
    in index order. Cheaper than argpartition on 1M rows (1.7 vs 3.1 ms measured).
    """
    if len(distances) <= size:
        return np.arange(len(distances))
    counts = np.cumsum(np.bincount(distances))
    cutoff = int(np.searchsorted(counts, size))
    inside = np.flatnonzero(distances < cutoff)
    tied = np.flatnonzero(distances == cutoff)[: size - len(inside)]
    return np.concatenate([inside, tied])


def nearest(distances: np.ndarray, size: int) -> np.ndarray:
    """Exactly `nearest_by_histogram(distances, size)`, without a histogram of every row.

    A strided sample's histogram gives a distance bound that, with a margin, lies at or above the
    true cut-off; the rows within it (a few times `size`, in index order) hold every row the full
    histogram would pick, so choosing among them gives the same rows. When the bound falls short
    (an unlucky sample) the full histogram decides. 0.08 ms instead of 0.2–0.3 ms at 100k rows.
    """
    n, step = len(distances), size // _SAMPLE_UNDER_CUTOFF
    if step < 4 or n <= 4 * size:
        return nearest_by_histogram(distances, size)
    sample = distances[::step]
    # Twice the expected count of sample rows: the bound holds unless the sample is far off.
    bound = int(np.searchsorted(np.cumsum(np.bincount(sample)), 2 * size * len(sample) // n))
    candidates = np.flatnonzero(distances <= bound)
    if len(candidates) < size:
        return nearest_by_histogram(distances, size)
    return candidates[nearest_by_histogram(distances[candidates], size)]


def faiss_module():
    """faiss, imported on first use (0.2 s: only large galleries need it), or None when absent.

    Its OpenMP pool is held to one thread: one query's scan is one loop, and an idle OpenMP team
    spin-waits on the other core after every parallel region.
    """
    try:
        import faiss
    except ImportError:
        return None
    faiss.omp_set_num_threads(1)
    return faiss


def engine(prefilter: str, words: int) -> CodeStore:
    """The code store for a `PREFILTERS` name; "auto" is faiss when importable, else numpy."""
    if prefilter in ("auto", "faiss"):
        faiss = faiss_module()
        if faiss is not None:
            return FaissCodes(words, faiss)
        if prefilter == "faiss":
            raise GalleryError("prefilter 'faiss' needs the faiss-cpu package; install it or use 'auto'")
        return NumpyCodes(words)
    if prefilter == "sqlite-vec":
        return SqliteVecCodes(words)
    return NumpyCodes(words)


class _ArrayCodes:
    """Codes in one numpy array (`_codes`) of which the first `_n` rows are live; subclasses
    lay the array out for their scan and compute `distances`."""

    _codes: np.ndarray
    _n: int

    def __len__(self) -> int:
        return self._n

    def truncate(self, n: int) -> None:
        self._n = n

    def distances(self, code: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def shortlist(self, code: np.ndarray, size: int) -> np.ndarray:
        return nearest(self.distances(code), size)

    @property
    def nbytes(self) -> int:
        return self._codes.nbytes


class FaissCodes(_ArrayCodes):
    name = "faiss"

    def __init__(self, words: int, faiss) -> None:
        self._faiss = faiss
        self._codes = np.empty((0, words * 8), dtype=np.uint8)
        self._n = 0

    def append(self, codes: np.ndarray) -> None:
        self._codes = grown(self._codes, self._n + len(codes))
        self._codes[self._n : self._n + len(codes)] = codes.view(np.uint8).reshape(len(codes), -1)
        self._n += len(codes)

    def move(self, src: np.ndarray, dst: np.ndarray) -> None:
        self._codes[dst] = self._codes[src]

    def rows(self) -> np.ndarray:
        """The codes, (rows, words) uint64 (a view)."""
        return self._codes[: self._n].view(np.uint64)

    def distances(self, code: np.ndarray) -> np.ndarray:
        """Hamming distance of every row to `code`, int32."""
        out = np.empty(self._n, dtype=np.int32)
        if self._n:
            query = np.ascontiguousarray(code, dtype=np.uint64).view(np.uint8)
            ptr = self._faiss.swig_ptr
            self._faiss.hammings(ptr(query), ptr(self._codes), 1, self._n, self._codes.shape[1], ptr(out))
        return out


class NumpyCodes(_ArrayCodes):
    name = "numpy"

    def __init__(self, words: int) -> None:
        self._codes = np.empty((words, 0), dtype=np.uint64)
        self._n = 0

    def append(self, codes: np.ndarray) -> None:
        self._codes = grown(self._codes, self._n + len(codes), axis=1)
        self._codes[:, self._n : self._n + len(codes)] = codes.T
        self._n += len(codes)

    def move(self, src: np.ndarray, dst: np.ndarray) -> None:
        self._codes[:, dst] = self._codes[:, src]

    def rows(self) -> np.ndarray:
        """The codes, (rows, words) uint64 (a copy)."""
        return np.ascontiguousarray(self._codes[:, : self._n].T)

    def distances(self, code: np.ndarray) -> np.ndarray:
        """Hamming distance of every row to `code`, uint16, accumulated word by word."""
        words, n = self._codes.shape[0], self._n
        out = np.empty(n, dtype=np.uint16)
        block = min(SCAN_BLOCK, max(n, 1))
        xor = np.empty(block, dtype=np.uint64)
        bits = np.empty(block, dtype=np.uint8)
        group = np.empty(block, dtype=np.uint8)
        for start in range(0, n, block):
            stop = min(n, start + block)
            x, c, g, acc = xor[: stop - start], bits[: stop - start], group[: stop - start], out[start:stop]
            for w in range(words):
                np.bitwise_xor(self._codes[w, start:stop], code[w], out=x)
                if w % _WORDS_PER_UINT8 == 0:
                    np.bitwise_count(x, out=g)
                else:
                    np.bitwise_count(x, out=c)
                    np.add(g, c, out=g)
                if w % _WORDS_PER_UINT8 == _WORDS_PER_UINT8 - 1 or w == words - 1:
                    if w < _WORDS_PER_UINT8:
                        np.copyto(acc, g)
                    else:
                        np.add(acc, g, out=acc)
        return out


class SqliteVecCodes:
    """Codes in a private in-memory sqlite-vec database; vec0 rowid = index row."""

    name = "sqlite-vec"

    def __init__(self, words: int) -> None:
        self._bytes = words * 8
        self._db = connect_with_extensions(":memory:")
        self._db.execute(f"CREATE VIRTUAL TABLE codes USING vec0(code bit[{words * 64}])")
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def _insert(self, rows: np.ndarray, codes: np.ndarray) -> None:
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT INTO codes(rowid, code) VALUES (?, vec_bit(?))",
            ((int(r), c.tobytes()) for r, c in zip(rows, codes, strict=True)),
        )
        self._db.execute("COMMIT")

    def _delete(self, rows: np.ndarray) -> None:
        self._db.execute("BEGIN")
        self._db.executemany("DELETE FROM codes WHERE rowid = ?", ((int(r),) for r in rows))
        self._db.execute("COMMIT")

    def append(self, codes: np.ndarray) -> None:
        self._insert(np.arange(self._n, self._n + len(codes)), codes)
        self._n += len(codes)

    def move(self, src: np.ndarray, dst: np.ndarray) -> None:
        if not len(src):
            return
        blobs = [self._db.execute("SELECT code FROM codes WHERE rowid = ?", (int(r),)).fetchall()[0][0] for r in src]
        self._delete(dst)
        self._insert(dst, np.stack([np.frombuffer(b, dtype=np.uint64) for b in blobs]))

    def truncate(self, n: int) -> None:
        self._delete(np.arange(n, self._n))
        self._n = n

    def shortlist(self, code: np.ndarray, size: int) -> np.ndarray:
        if self._n == 0:
            return np.empty(0, dtype=np.int64)
        rows = self._db.execute(
            "SELECT rowid FROM codes WHERE code MATCH vec_bit(?) AND k = ?", (code.tobytes(), min(size, self._n))
        ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def rows(self) -> np.ndarray:
        blobs = self._db.execute("SELECT code FROM codes ORDER BY rowid").fetchall()
        return np.array([np.frombuffer(b[0], dtype=np.uint64) for b in blobs], dtype=np.uint64).reshape(self._n, -1)

    @property
    def nbytes(self) -> int:
        """Pages of the in-memory database (the page cache's own bookkeeping is not counted)."""
        pages = self._db.execute("PRAGMA page_count").fetchall()[0][0]
        return int(pages) * int(self._db.execute("PRAGMA page_size").fetchall()[0][0])
