"""Exact L1 top-k against a brute-force reference, and L2 normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from shazzam import distance
from shazzam.distance import (
    QUANT_STEP,
    choose_step,
    fine_codes,
    join_codes,
    kernel_name,
    l1_distances,
    l1_distances_u8,
    l1_topk,
    l1_topk_u8,
    l2_normalise,
    quantise,
    search_codes,
    split_codes,
    take_rows,
)


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
    assert quantise(values, step=2 * QUANT_STEP)[0, [0, 1, 2, 3, 5, 6]].tolist() == [0, 0, 0, 51, 255, 0]


def test_fine_codes_add_the_quarter_of_the_bin():
    s = QUANT_STEP
    values = np.array([[0.0, 0.3 * s, 0.6 * s, 0.8 * s, 1.1 * s, 1.3 * s, 7.45 * s, 0.2001, 0.9, -0.3]], np.float32)
    # scan code c, quarter r (of [c - 0.5, c + 0.5)): 8c + 2r - 3, the quarter's centre in eighths
    assert fine_codes(values).tolist() == [[0, 0, 8 - 3, 8 - 1, 8 + 1, 8 + 3, 56 + 3, 8 * 204 + 1, 8 * 255 + 3, 0]]
    assert np.all(np.abs(fine_codes(values)[0, 2:7] * s / 8 - values[0, 2:7]) <= s / 8 + 1e-9)
    np.testing.assert_array_equal((fine_codes(values).astype(int) + 4) >> 3, quantise(values))


def test_split_codes_round_trip():
    rng = np.random.default_rng(0)
    values = l2_normalise(np.maximum(rng.normal(size=(9, 19)), 0))  # half zeros, as ReLU features
    fine = fine_codes(values)
    codes, low_bits = split_codes(fine)
    np.testing.assert_array_equal(codes, quantise(values))
    # 2 bits a non-zero code, each row's in whole bytes
    assert low_bits.ndim == 1 and len(low_bits) == sum((2 * np.count_nonzero(row) + 7) // 8 for row in codes)
    np.testing.assert_array_equal(join_codes(codes, low_bits), fine)
    np.testing.assert_array_equal(join_codes(codes, low_bits, rows=np.array([7, 2])), fine[[7, 2]])
    np.testing.assert_array_equal(join_codes(codes, None), 8 * codes.astype(int))


@pytest.mark.parametrize("block_rows", [distance.CHUNK_ROWS, 2], ids=["one-block", "blocks-of-2"])
@pytest.mark.parametrize("rows", [[7, 2, 2, 0], [], list(range(9))], ids=["some-reordered", "none", "all"])
def test_take_rows_moves_each_rows_codes_and_quarter_bits(rows, block_rows, monkeypatch):
    monkeypatch.setattr(distance, "CHUNK_ROWS", block_rows)
    rng = np.random.default_rng(1)
    fine = fine_codes(l2_normalise(np.maximum(rng.normal(size=(9, 19)), 0)))
    fine[4] = 0  # a row without quarter bits
    codes, low_bits = take_rows(*split_codes(fine), np.array(rows, dtype=np.int64))
    expected_codes, expected_bits = split_codes(fine[rows])
    np.testing.assert_array_equal(codes, expected_codes)
    np.testing.assert_array_equal(low_bits, expected_bits)


def test_step_widens_only_when_values_would_clip():
    rng = np.random.default_rng(1)
    spread = l2_normalise(np.abs(rng.normal(size=(100, 256))))  # values well under 0.25
    assert choose_step(spread) == QUANT_STEP
    assert choose_step(spread, current=3 * QUANT_STEP) == 3 * QUANT_STEP  # never narrower than the shard's
    few = l2_normalise(np.abs(rng.normal(size=(2000, 8))))  # 8 dimensions: many values beyond 0.25
    step = choose_step(few)
    assert step > QUANT_STEP and np.mean(few > step * 255) <= 1e-5 + 1e-12
    assert choose_step(np.zeros((0, 8))) == QUANT_STEP
    outlier = spread.copy()
    outlier[0, :3] = 0.3  # one item's few large values: clipped rather than coarsening every code
    assert choose_step(outlier) == QUANT_STEP
    # ... unless the shard already holds enough clipped values for the fraction to count
    assert choose_step(outlier, clipped_before=10, count_before=25600) > QUANT_STEP


@pytest.mark.parametrize("parts", [1, 2])
def test_search_codes_reranks_the_scan_by_the_nine_bit_codes(parts):
    rng = np.random.default_rng(11)
    items = l2_normalise(np.abs(rng.normal(size=(700, 64))))
    queries = l2_normalise(np.abs(rng.normal(size=(5, 64))))
    step = choose_step(items)  # 64 dimensions: values beyond 0.25
    codes, low_bits = split_codes(fine_codes(items, step))
    rows, distances = search_codes(queries, codes, low_bits, step, 10, parts=parts)
    fine = fine_codes(items, step).astype(np.int64)
    for query, got_rows, got_distances in zip(queries, rows, distances):
        full = np.abs(fine - fine_codes(query, step).astype(np.int64)).sum(axis=1)
        order = np.lexsort((np.arange(700), full))[:10]
        np.testing.assert_array_equal(got_rows, order)  # the re-rank top 10 is within the scan's top 50
        np.testing.assert_allclose(got_distances, full[order] * step / 8, rtol=1e-6)
        exact = np.abs(items[got_rows] - query).sum(axis=1)
        clipped = np.maximum(items[got_rows] - 255.5 * step, 0).sum(axis=1) + max(query.max() - 255.5 * step, 0)
        assert np.all(np.abs(got_distances - exact) <= 64 * step / 4 + clipped + 1e-6)  # s/8 each side a value
    with pytest.raises(ValueError):
        search_codes(queries, codes, low_bits, step, 0)
    empty_rows, _ = search_codes(queries, codes[:0], low_bits[:0], step, 3)
    assert empty_rows.shape == (5, 0)


def test_the_nearest_item_is_found_when_the_scan_codes_rank_it_second():
    """The coarse scan only shortlists: an item a whole scan step away by its uint8 code but
    nearer in truth (and by the finer codes) must still be the top-1, so more rows than k are re-ranked."""
    step = QUANT_STEP
    query = np.array([[10.45 * step]], np.float32)
    items = np.array([[9.55 * step], [10.55 * step]], np.float32)  # scan codes 10 and 11; query's 10
    assert list(quantise(items, step)[:, 0]) == [10, 11] and quantise(query, step)[0, 0] == 10
    codes, low_bits = split_codes(fine_codes(items, step))
    rows, _ = search_codes(query, codes, low_bits, step, 1)
    assert rows.tolist() == [[1]]  # 0.1 step away, not the scan's pick 0.9 step away


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


@pytest.mark.parametrize("kind", ["normal", "ties", "sorted", "reversed"])
def test_the_sampled_kth_smallest_is_exact(kind):
    rng = np.random.default_rng(3)
    values = {
        "normal": rng.normal(3000, 300, 70_000).astype(np.uint32),
        "ties": rng.integers(0, 5, 70_000).astype(np.uint32),
        "sorted": np.arange(70_000, dtype=np.uint32),
        "reversed": np.arange(70_000, dtype=np.uint32)[::-1].copy(),
    }[kind]
    for k in (1, 2, 10, 30, 100, 1000):
        assert distance._kth_smallest(values, k) == np.sort(values)[k - 1]
        rows = distance._topk_of(values, k)
        np.testing.assert_array_equal(rows, np.lexsort((np.arange(len(values)), values))[:k])
