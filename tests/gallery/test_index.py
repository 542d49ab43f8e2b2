"""VectorIndex: exact answers, two-stage recall, changes, and input errors. No timing here."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import GalleryError
from edge.gallery.index import VectorIndex
from edge.gallery.prefilter import NumpyCodes, engine, nearest, nearest_by_histogram


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def face_like(n: int, dim: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gallery of identities + noisy re-samples of some of them (cosine ~0.6, as for one person)
    and of strangers; anisotropic and off-centre like real embeddings (see bench/gallery.py)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    mix = (np.sqrt(np.exp(-np.arange(dim) / (dim * 70 / 512)))[:, None] * basis.T).astype(np.float32)
    offset = rng.standard_normal(dim).astype(np.float32) * 0.02
    centres = rng.standard_normal((n, dim), dtype=np.float32)
    gallery = unit(offset + (centres + 0.8 * rng.standard_normal((n, dim), dtype=np.float32)) @ mix)
    own = np.concatenate([centres[rng.choice(n, n_queries * 4 // 5, replace=False)], rng.standard_normal((n_queries - n_queries * 4 // 5, dim), dtype=np.float32)])
    queries = unit(offset + (own + 0.8 * rng.standard_normal(own.shape, dtype=np.float32)) @ mix)
    return gallery, queries


def brute_top(gallery: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    scores = gallery @ unit(query)
    return ids[np.argsort(-scores, kind="stable")[:k]].tolist()


@pytest.fixture(scope="module")
def small() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gallery, queries = face_like(3_000, 64, 40, seed=1)
    ids = np.arange(len(gallery), dtype=np.int64) * 10 + 5
    return ids, gallery, queries


def test_exact_search_equals_numpy_brute_force(small) -> None:
    ids, gallery, queries = small
    index = VectorIndex(64)
    index.build(ids, gallery)
    assert index.regime == "exact"
    for q in queries:
        found = index.search(q, k=7)
        assert [i for i, _ in found] == brute_top(gallery, ids, q, 7)
        expected = np.sort(gallery @ unit(q))[::-1][:7]
        np.testing.assert_allclose([s for _, s in found], expected, atol=1e-5)
        assert found == index.search_exact(q, k=7)


def test_scores_are_cosines_even_for_unnormalised_input(small) -> None:
    ids, gallery, queries = small
    index = VectorIndex(64)
    index.build(ids, gallery * 3.0)
    (best_id, best), *_ = index.search(queries[0] * 0.1, k=1)
    assert best_id == brute_top(gallery, ids, queries[0], 1)[0]
    assert best == pytest.approx(float(np.max(gallery @ unit(queries[0]))), abs=1e-5)


def test_two_stage_recall_at_1_on_50k_face_like_gallery() -> None:
    gallery, queries = face_like(50_000, 512, 200, seed=2)
    ids = np.arange(len(gallery), dtype=np.int64) + 1_000
    index = VectorIndex(512, exact_max=10_000)
    index.build(ids, gallery)
    assert index.regime == "two-stage"
    truth = ids[np.argmax(queries @ gallery.T, axis=1)]
    found = np.array([index.search(q, k=1)[0][0] for q in queries])
    assert (found == truth).mean() >= 0.99


def test_two_stage_scores_approximate_cosines(small) -> None:
    ids, gallery, queries = small
    index = VectorIndex(64, exact_max=100)
    index.build(ids, gallery)
    for q in queries[:10]:
        for template_id, score in index.search(q, k=5):
            row = int(np.flatnonzero(ids == template_id)[0])
            assert score == pytest.approx(float(gallery[row] @ unit(q)), abs=0.01)


@pytest.mark.parametrize("exact_max", [100_000, 100])
def test_removed_ids_never_come_back(small, exact_max: int) -> None:
    ids, gallery, queries = small
    index = VectorIndex(64, exact_max=exact_max)
    index.build(ids, gallery)
    gone = {int(index.search(q, k=1)[0][0]) for q in queries} | set(ids[::3].tolist())
    index.remove(sorted(gone) + [123_456_789])  # an unknown id is ignored
    assert len(index) == len(ids) - len(gone)
    for q in np.concatenate([queries, gallery[:: len(gallery) // 50]]):
        assert not gone & {i for i, _ in index.search(q, k=20)}
        assert not gone & {i for i, _ in index.search_exact(q, k=20)}


def assert_finds_best(index: VectorIndex, ids: np.ndarray, gallery: np.ndarray, queries: np.ndarray) -> None:
    """Each answer's id names a vector whose true cosine is the returned score and (within the
    int8 error) the best: catches ids and rows falling out of step."""
    for q in queries:
        found, score = index.search(q, k=1)[0]
        cosines = gallery @ unit(q)
        true = float(cosines[np.flatnonzero(ids == found)[0]])
        assert score == pytest.approx(true, abs=0.01)
        assert true >= float(cosines.max()) - 0.01


@pytest.mark.parametrize("prefilter", ["faiss", "numpy", "sqlite-vec"])
def test_add_and_remove_keep_two_stage_answers_right(small, prefilter: str) -> None:
    ids, gallery, queries = small
    index = VectorIndex(64, exact_max=100, shortlist=400, prefilter=prefilter)
    index.build(ids[:2_000], gallery[:2_000])
    index.add(ids[2_000:], gallery[2_000:])
    index.remove(ids[:500])
    assert len(index) == len(ids) - 500
    assert_finds_best(index, ids[500:], gallery[500:], np.concatenate([queries, gallery[600:3000:100]]))
    index.add(ids[:1], gallery[:1])
    assert index.search(gallery[0], k=1)[0][0] == ids[0]


def test_both_prefilters_give_the_same_answers(small) -> None:
    ids, gallery, queries = small
    found = {}
    for prefilter in ("faiss", "numpy", "sqlite-vec"):
        index = VectorIndex(64, exact_max=0, shortlist=300, prefilter=prefilter)
        index.build(ids, gallery)
        index.remove(ids[::7])
        found[prefilter] = [[i for i, _ in index.search(q, k=3)] for q in queries]
    # faiss and numpy compute the same distances and cut them with the same `nearest`.
    assert found["faiss"] == found["numpy"]
    agree = np.mean([a == b for a, b in zip(found["numpy"], found["sqlite-vec"], strict=True)])
    assert agree >= 0.9  # ties at the shortlist's edge may be cut differently


@pytest.mark.parametrize("words", [1, 2, 8, 9])
def test_faiss_and_numpy_scans_count_the_same_bits(words: int) -> None:
    rng = np.random.default_rng(words)
    codes = rng.integers(0, 2**63, (5_000, words), dtype=np.uint64) | rng.integers(0, 2, (5_000, words), dtype=np.uint64) << 63
    query = codes[17] ^ np.uint64(0b1011)
    faiss_codes = engine("faiss", words)
    numpy_codes = NumpyCodes(words)
    for store in (faiss_codes, numpy_codes):
        store.append(codes[:3_000])
        store.append(codes[3_000:])
        store.move(np.array([4_999]), np.array([2]))
        store.truncate(4_999)
    expected = np.bitwise_count(np.bitwise_xor(np.concatenate([codes[:2], codes[4_999:], codes[3:4_999]]), query)).sum(axis=1)
    assert np.array_equal(faiss_codes.distances(query), expected)
    assert np.array_equal(numpy_codes.distances(query), expected)
    assert expected[17] == 3 * words  # the probe differs from row 17 in three bits per word


def test_add_past_exact_max_switches_to_two_stage(small) -> None:
    ids, gallery, queries = small
    index = VectorIndex(64, exact_max=1_000)
    index.build(ids[:900], gallery[:900])
    assert index.regime == "exact"
    index.add(ids[900:], gallery[900:])
    assert index.regime == "two-stage" and len(index) == len(ids)
    assert_finds_best(index, ids, gallery, queries)


def test_empty_index_answers_nothing() -> None:
    index = VectorIndex(16)
    assert len(index) == 0
    assert index.search(np.ones(16, dtype=np.float32)) == []
    index.build(np.empty(0, dtype=np.int64), np.empty((0, 16), dtype=np.float32))
    assert index.search_exact(np.ones(16, dtype=np.float32)) == []
    index.add(np.empty(0, dtype=np.int64), np.empty((0, 16), dtype=np.float32))
    index.add(np.array([7]), np.ones((1, 16), dtype=np.float32))
    index.remove([7])
    assert index.search(np.ones(16, dtype=np.float32)) == []


def test_k_larger_than_gallery_returns_everything() -> None:
    index = VectorIndex(8)
    index.build(np.array([1, 2, 3]), np.eye(8, dtype=np.float32)[:3])
    assert [i for i, _ in index.search(np.eye(8)[1], k=10)] == [2, 1, 3]


def test_dimension_mismatch_is_a_gallery_error() -> None:
    index = VectorIndex(32)
    with pytest.raises(GalleryError, match="32-d"):
        index.build(np.arange(4), np.ones((4, 16), dtype=np.float32))
    index.build(np.arange(4), np.ones((4, 32), dtype=np.float32))
    with pytest.raises(GalleryError, match="32-d"):
        index.search(np.ones(31, dtype=np.float32))
    with pytest.raises(GalleryError, match="32-d"):
        index.add(np.array([9]), np.ones((1, 64), dtype=np.float32))


@pytest.mark.parametrize(
    ("ids", "vectors", "message"),
    [
        (np.array([1, 1]), np.ones((2, 4)), "repeat"),
        (np.array([1, 2, 3]), np.ones((2, 4)), "3 template ids for 2 vectors"),
        (np.array([1.5, 2.5]), np.ones((2, 4)), "integer"),
        (np.array([1, 2]), np.array([[1, 0, 0, 0], [0, 0, 0, 0]]), "template 2: vector is zero"),
        (np.array([1, 2]), np.array([[1, 0, 0, 0], [np.nan, 0, 0, 0]]), "not finite"),
    ],
)
def test_bad_input_is_a_gallery_error(ids: np.ndarray, vectors: np.ndarray, message: str) -> None:
    with pytest.raises(GalleryError, match=message):
        VectorIndex(4).build(ids, vectors)


def test_adding_a_known_id_is_refused() -> None:
    index = VectorIndex(4)
    index.build(np.array([1, 2]), np.eye(4)[:2])
    with pytest.raises(GalleryError, match=r"already indexed: \[2\]"):
        index.add(np.array([3, 2]), np.eye(4)[2:4])
    assert len(index) == 2


def test_unknown_options_list_the_valid_ones() -> None:
    with pytest.raises(GalleryError, match="valid: cosine"):
        VectorIndex(4, metric="l2")
    with pytest.raises(GalleryError, match="valid: auto, faiss, numpy, sqlite-vec"):
        VectorIndex(4, prefilter="annoy")


def test_centring_is_what_rescues_off_centre_embeddings() -> None:
    """dlib-like embeddings (mean vector norm ~0.9): sign codes of the raw rows are nearly all
    alike, so a small shortlist misses the nearest neighbour; centred codes keep it."""
    rng = np.random.default_rng(3)
    raw = unit(rng.standard_normal(64)) * 16.0 + rng.standard_normal((5_000, 64), dtype=np.float32)
    gallery = unit(raw)
    assert np.linalg.norm(gallery.mean(axis=0)) > 0.85
    queries = unit(raw[:100] + rng.standard_normal((100, 64), dtype=np.float32) * 0.7)
    truth = np.argmax(queries @ gallery.T, axis=1)
    recall = {}
    for centre in (True, False):
        index = VectorIndex(64, exact_max=0, shortlist=20, centre=centre)
        index.build(np.arange(5_000), gallery)
        recall[centre] = np.mean([index.search(q, k=1)[0][0] == t for q, t in zip(queries, truth, strict=True)])
    assert recall[True] >= 0.97 > recall[False]


def test_memory_is_what_the_arrays_hold(small) -> None:
    ids, gallery, _ = small
    exact, quantised = VectorIndex(64), VectorIndex(64, exact_max=0)
    exact.build(ids, gallery)
    quantised.build(ids, gallery)
    assert exact.memory_bytes >= gallery.nbytes
    # int8 row (64 B) + one 64-bit code word + the id, per template.
    assert quantised.memory_bytes < len(ids) * (64 + 8 + 8) * 1.3


@pytest.mark.parametrize(("n", "size"), [(100_000, 1_000), (50_000, 2_000), (5_000, 300), (20_000, 100)])
def test_sampled_cut_off_picks_the_rows_the_full_histogram_picks(n: int, size: int) -> None:
    rng = np.random.default_rng(n + size)
    cases = [
        rng.binomial(512, 0.45, n).astype(np.uint16),
        np.full(n, 7, dtype=np.uint16),  # every row tied
        np.where(np.arange(n) % 97 == 0, 1, 300).astype(np.uint16),  # near rows the stride misses
    ]
    for distances in cases:
        assert np.array_equal(nearest(distances, size), nearest_by_histogram(distances, size))


def test_failed_build_leaves_the_index_as_it_was(small) -> None:
    ids, gallery, queries = small
    for exact_max in (100_000, 100):
        index = VectorIndex(64, exact_max=exact_max)
        index.build(ids, gallery)
        before = [index.search(q, k=3) for q in queries[:5]]
        broken = gallery.copy()
        broken[-1] = np.nan
        with pytest.raises(GalleryError, match=f"template {ids[-1]}: vector is zero or not finite"):
            index.build(ids, broken)
        assert len(index) == len(ids) and [index.search(q, k=3) for q in queries[:5]] == before


def test_int8_scores_are_the_float_product_of_the_stored_rows(small) -> None:
    ids, gallery, queries = small
    index = VectorIndex(64, exact_max=0)
    index.build(ids, gallery)
    codec = index._codec
    rows = index._int8[: len(ids)]
    for q in queries[:10]:
        encoded = codec.query(unit(q))
        expected = rows.astype(np.float64) @ (unit(q) * codec.scale) + unit(q) @ codec.mean
        np.testing.assert_allclose(encoded.scores(rows), expected, atol=3e-5)  # int16 query: ~1e-5, int8 rows: 5e-4
