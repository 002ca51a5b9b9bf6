"""Exact L1 top-k against a brute-force reference, and L2 normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from shazzam import distance
from shazzam.distance import QUANT_STEP, kernel_name, l1_distances, l1_distances_u8, l1_topk, l1_topk_u8, l2_normalise, quantise


def brute_force(query: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    dists = np.abs(vectors.astype(np.float64) - query.astype(np.float64)).sum(axis=1)
    order = sorted(range(len(vectors)), key=lambda i: (dists[i], i))[:k]
    return np.array(order, dtype=np.int64), dists[order]


def random_data(n: int, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return l2_normalise(rng.normal(size=d)), l2_normalise(rng.normal(size=(n, d)))


@pytest.mark.parametrize("k", [1, 3, 10, 57, 200])
@pytest.mark.parametrize("n", [1, 5, 200, 513])
def test_topk_matches_brute_force(n, k):
    query, vectors = random_data(n, seed=n * 1000 + k)
    rows, dists = l1_topk(query, vectors, k)
    expected_rows, expected_dists = brute_force(query, vectors, k)
    assert len(rows) == min(n, k)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_allclose(dists, expected_dists, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(dists) >= 0)
    assert dists.dtype == np.float32


@pytest.mark.parametrize("block_rows", [1, 7, 64, 100])
@pytest.mark.parametrize("n", [63, 64, 65, 200, 301])
def test_topk_across_block_boundaries(monkeypatch, block_rows, n):
    monkeypatch.setattr(distance, "BLOCK_ROWS", block_rows)
    query, vectors = random_data(n, seed=n + block_rows)
    expected_rows, expected_dists = brute_force(query, vectors, 10)
    rows, dists = l1_topk(query, vectors, 10)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_allclose(dists, expected_dists, rtol=1e-5, atol=1e-5)
    # Every row's distance, not just the top ones, is filled in by its block.
    full = np.abs(vectors.astype(np.float64) - query).sum(axis=1)
    np.testing.assert_allclose(l1_distances(query, vectors), full, rtol=1e-5, atol=1e-5)


def test_ties_are_ordered_by_index():
    vectors = np.array([[3.0, 0], [1.0, 0], [2.0, 0], [1.0, 0], [0.0, 1.0], [1.0, 0], [2.0, 0]], np.float32)
    query = np.array([1.0, 0], np.float32)
    # distances: 2, 0, 1, 0, 2, 0, 1
    rows, dists = l1_topk(query, vectors, 7)
    assert rows.tolist() == [1, 3, 5, 2, 6, 0, 4]
    assert dists.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    assert l1_topk(query, vectors, 4)[0].tolist() == [1, 3, 5, 2]  # 2 and 6 tie at the cut
    assert l1_topk(query, vectors, 6)[0].tolist() == [1, 3, 5, 2, 6, 0]


@pytest.mark.parametrize("seed", range(8))
def test_ties_at_the_cut_are_resolved_by_index(seed):
    # Small integer coordinates: hundreds of rows share each distance, so the k-th is a tie.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(100, 2000))
    vectors = rng.integers(0, 4, size=(n, 3)).astype(np.float32)
    query = np.zeros(3, np.float32)
    for k in (1, 7, n // 3, n - 1):
        rows, dists = l1_topk(query, vectors, k)
        expected_rows, expected_dists = brute_force(query, vectors, k)
        np.testing.assert_array_equal(rows, expected_rows)
        np.testing.assert_array_equal(dists, expected_dists)


def test_all_equal_rows_come_back_in_index_order():
    vectors = np.ones((50, 4), np.float32)
    rows, _ = l1_topk(np.zeros(4, np.float32), vectors, 20)
    assert rows.tolist() == list(range(20))


@pytest.mark.parametrize("k", [0, -1])
def test_k_below_one_raises(k):
    query, vectors = random_data(5)
    with pytest.raises(ValueError):
        l1_topk(query, vectors, k)


def test_empty_vectors_give_empty_results():
    rows, dists = l1_topk(np.zeros(8, np.float32), np.zeros((0, 8), np.float32), 5)
    assert rows.shape == (0,) and dists.shape == (0,)
    assert rows.dtype == np.int64


def test_k_larger_than_n_returns_all_sorted():
    query, vectors = random_data(4)
    rows, dists = l1_topk(query, vectors, 100)
    assert sorted(rows.tolist()) == [0, 1, 2, 3]
    assert np.all(np.diff(dists) >= 0)


def test_l2_normalise_gives_unit_rows_and_keeps_zero_rows_zero():
    vectors = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]])
    with np.errstate(all="raise"):  # no division-by-zero warnings on the zero row
        out = l2_normalise(vectors)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]], rtol=1e-6)
    assert not np.isnan(out).any()


def test_l2_normalise_single_vector():
    out = l2_normalise(np.array([0.0, 5.0, 0.0]))
    np.testing.assert_allclose(out, [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(l2_normalise(np.zeros(3)), np.zeros(3, np.float32))


# -- uint8 codes -----------------------------------------------------------------------------

def test_quantise_rounds_to_steps_and_clips():
    values = np.array([[0.0, QUANT_STEP * 0.49, QUANT_STEP * 0.51, 0.1, 0.25, 0.9, -0.3]], np.float32)
    assert quantise(values).tolist() == [[0, 0, 1, 102, 255, 255, 0]]


@pytest.mark.parametrize("dim", [1, 15, 16, 31, 33, 64, 100, 1280])
def test_code_distances_match_integer_arithmetic(dim, monkeypatch):
    rng = np.random.default_rng(dim)
    codes = rng.integers(0, 256, (70, dim), dtype=np.uint8)
    queries = rng.integers(0, 256, (3, dim), dtype=np.uint8)
    expected = np.abs(queries[:, None, :].astype(np.int64) - codes[None].astype(np.int64)).sum(axis=2)
    np.testing.assert_array_equal(l1_distances_u8(queries, codes), expected)
    monkeypatch.setenv("SHAZZAM_L1_KERNEL", "numpy")
    assert kernel_name() == "numpy"
    np.testing.assert_array_equal(l1_distances_u8(queries, codes), expected)


def test_the_compiled_kernel_is_in_use_where_built():
    # CI builds it (a C compiler is on every machine of this project); numpy is only the fallback.
    assert kernel_name() in ("avx2", "sse2", "scalar")


@pytest.mark.parametrize("parts", [1, 3])
def test_code_topk_is_exact_with_ties_by_index_across_chunks(parts, monkeypatch):
    monkeypatch.setattr(distance, "CHUNK_ROWS", 37)
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 3, (500, 4), dtype=np.uint8)  # few values: many ties
    queries = rng.integers(0, 3, (4, 4), dtype=np.uint8)
    rows, distances = l1_topk_u8(queries, codes, 25, parts=parts)
    for query, got_rows, got_distances in zip(queries, rows, distances):
        full = np.abs(codes.astype(int) - query.astype(int)).sum(axis=1)
        order = np.lexsort((np.arange(500), full))[:25]
        np.testing.assert_array_equal(got_rows, order)
        np.testing.assert_array_equal(got_distances, full[order])


def test_code_topk_with_k_beyond_the_rows_and_bad_k():
    codes = np.zeros((3, 8), np.uint8)
    rows, _ = l1_topk_u8(np.ones((1, 8), np.uint8), codes, 10)
    assert rows.tolist() == [[0, 1, 2]]
    with pytest.raises(ValueError):
        l1_topk_u8(np.ones((1, 8), np.uint8), codes, 0)
