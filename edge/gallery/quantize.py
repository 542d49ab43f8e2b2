"""Compact forms of unit embeddings for large galleries: sign codes and int8 rows.

Both are taken relative to a mean vector fitted when the index is built. Sign codes of raw
embeddings lose recall when the dimensions are not centred — every code then shares the bits
of the mean. Measured on the 3,811 LFW images (true nearest neighbour inside a Hamming
shortlist of 50): dlib's 128-d embeddings, whose mean vector has norm 0.91, keep it for 85 % of
probes raw and 99 % centred; EdgeFace-XXS (mean norm 0.12) keeps it for 99.9 % either way.

The int8 rows use one scale per dimension (the largest centred magnitude seen at fit time over
127), so a similarity is `(q * scale) · row + q · mean`: one matrix-vector product, no
dequantised copy of the gallery (`EncodedQuery`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from edge.errors import GalleryError

WORD_BITS = 64
# Rows per block when a whole gallery is converted: 1,024 × 512 floats (2 MB) keep each pass's
# temporaries near the cache and never make a second copy of a 2 GB input; measured for a 100k
# build 0.36–0.40 s against 0.43–0.57 s with 4,096-row blocks and more with 65,536.
BLOCK_ROWS = 1_024
FIT_ROWS = 32_768
FIT_MARGIN = 1.05


def words_for(dim: int) -> int:
    return -(-dim // WORD_BITS)


def sign_codes(centred: np.ndarray) -> np.ndarray:
    """(n, dim) → (n, words) uint64: bit set where the component is > 0; padding bits are 0."""
    n, dim = centred.shape
    packed = np.packbits(centred > 0, axis=1)
    pad = words_for(dim) * (WORD_BITS // 8) - packed.shape[1]
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(np.uint64).reshape(n, -1)


def normalised_blocks(vectors: np.ndarray, block: int = BLOCK_ROWS, ids: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """float32 copies of `vectors`' rows scaled to unit length, `block` rows at a time.

    A zero or non-finite row raises GalleryError naming it (by `ids[row]` when given): checked
    here, on norms computed anyway, rather than in a separate pass over the whole input.
    """
    for start in range(0, len(vectors), block):
        rows = np.asarray(vectors[start : start + block], dtype=np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))  # 3x faster than linalg.norm here
        if not np.all(np.isfinite(norms) & (norms > 0)):
            # float32 squares overflow past ~1e19 and underflow below ~1e-23: decide in float64.
            norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
            bad = np.flatnonzero(~(np.isfinite(norms) & (norms > 0)))
            if len(bad):
                row = start + int(bad[0])
                raise GalleryError(f"template {int(ids[row]) if ids is not None else row}: vector is zero or not finite")
        yield (rows / norms[:, None]).astype(np.float32, copy=False)


@dataclass(frozen=True, slots=True, eq=False)
class EncodedQuery:
    """A unit query against int8 rows: row r scores `(r · weights) * step + offset`.

    The weights are the query scaled per dimension, quantised to int16 (measured: at most 7e-6
    of a cosine at 512-d, 1e-5 at 64-d, against the int8 rows' own 5e-4): integer products
    summed in int32 skip the float32 copy of the shortlisted rows that a float product needs
    (0.42 vs 0.50 ms for 1,000 rows).
    """

    weights: np.ndarray  # (dim,) int16
    step: float
    offset: float
    code: np.ndarray  # (words,) uint64 sign code of the centred query

    def scores(self, int8_rows: np.ndarray) -> np.ndarray:
        return np.einsum("ij,j->i", int8_rows, self.weights, dtype=np.int32) * self.step + self.offset


@dataclass(frozen=True, slots=True, eq=False)
class Int8Codec:
    """`row ≈ int8 * scale + mean` per dimension; sign codes are the signs of `row - mean`."""

    mean: np.ndarray  # (dim,) float32; zeros when centring is off
    scale: np.ndarray  # (dim,) float32, > 0

    @classmethod
    def fit(cls, vectors: np.ndarray, centre: bool = True, ids: np.ndarray | None = None) -> Int8Codec:
        """Fitted on at most FIT_ROWS evenly spaced rows of `vectors` (see `fit_blocks`)."""
        step = max(1, -(-len(vectors) // FIT_ROWS))
        return cls.fit_blocks([(None if ids is None else ids[::step], vectors[::step])], centre=centre, dim=vectors.shape[1])

    @classmethod
    def fit_blocks(cls, blocks: Iterable[tuple[np.ndarray | None, np.ndarray]], centre: bool, dim: int) -> Int8Codec:
        """Fitted on every row of the (ids, vectors) blocks, normalised here block by block.

        The mean and per-dimension peaks of a face-embedding gallery are settled long before
        FIT_ROWS rows, and fitting on all of 1M rows cost a third of the build. One pass: the
        peak distance from the mean is the larger of max - mean and mean - min. It gets
        FIT_MARGIN headroom so rows outside the sample rarely clip (a clipped component only
        loses precision, never the row). `ids` name a zero or non-finite row in the error.
        """
        total = np.zeros(dim, dtype=np.float64)
        high = np.full(dim, -np.inf, dtype=np.float32)
        low = np.full(dim, np.inf, dtype=np.float32)
        n = 0
        for ids, vectors in blocks:
            for rows in normalised_blocks(vectors, ids=ids):
                total += rows.sum(axis=0, dtype=np.float64)
                np.maximum(high, rows.max(axis=0), out=high)
                np.minimum(low, rows.min(axis=0), out=low)
                n += len(rows)
        mean = (total / max(1, n)).astype(np.float32) if centre else np.zeros(dim, dtype=np.float32)
        peak = np.maximum(high - mean, mean - low) if n else np.zeros(dim, dtype=np.float32)
        # A dimension that never varies still needs a usable scale (any positive value works).
        scale = np.where(peak > 0, peak * FIT_MARGIN / 127.0, 1.0 / 127.0).astype(np.float32)
        return cls(mean, scale)

    def encode_into(self, unit_rows: np.ndarray, int8_out: np.ndarray, codes_out: np.ndarray) -> None:
        """Unit rows → int8 rows and sign codes, written to the given arrays; `unit_rows` is
        used as scratch space (callers pass the copies `normalised_blocks` makes). Rows added
        after the fit may clip at ±127."""
        centred = np.subtract(unit_rows, self.mean, out=unit_rows)
        codes_out[...] = sign_codes(centred)
        # In place: each full-size temporary costs ~0.1 s per 100k 512-d rows.
        np.multiply(centred, 1.0 / self.scale, out=centred)
        np.rint(centred, out=centred)
        np.clip(centred, -127, 127, out=centred)
        np.copyto(int8_out, centred, casting="unsafe")

    def query(self, unit_query: np.ndarray) -> EncodedQuery:
        """The query in the form `EncodedQuery.scores` takes, with its sign code."""
        weights = unit_query * self.scale
        # int16 weights summed in int32 cannot overflow: dim × 127 × peak ≤ 2^31 - 1.
        peak = min(32_767, (2**31 - 1) // (127 * len(weights)))
        largest = float(np.abs(weights).max()) or 1.0
        return EncodedQuery(
            weights=np.rint(weights * (peak / largest)).astype(np.int16),
            step=largest / peak,
            offset=float(unit_query @ self.mean),
            code=sign_codes((unit_query - self.mean)[None, :])[0],
        )

    @property
    def nbytes(self) -> int:
        return self.mean.nbytes + self.scale.nbytes
