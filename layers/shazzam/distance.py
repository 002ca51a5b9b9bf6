"""Exact Manhattan (L1) nearest neighbours: over float embeddings, and over the codes shards hold.

A shard codes each L2-normalised embedding with one step for every dimension (a per-dimension
scale would re-weight L1): the uint8 scan code `c = round(x / step)` (one byte a dimension, what
the C kernel scans) and, where c > 0, two more bits saying which quarter of c's bin x is in (a
quarter of a byte per non-zero value; garment embeddings are ReLU features, over half of them 0).
Search scans the uint8 codes for the `rerank_candidates` nearest, then re-ranks those by the L1
distance of the finer codes (`fine_codes`, in eighths of a step), which is what it reports. The
step is the shard's, recorded in its attributes (`choose_step`): 0.25 / 255 unless more than
CLIP_TOLERANCE of the values exceed 0.25, then wide enough for all but CLIP_QUANTILE of them.
Why the quarter bits: the 10th and 11th neighbours of a garment_v1 query are typically 0.01 apart
in L1 (for 10% of queries under 0.0015), while rounding each of an item's ~110 non-zero values to
a 0.25/255 step moves its distance by about 0.003; on clothing-dataset-small (372 test queries,
3,409 items) the uint8 codes alone give recall@10 0.986 against exact float32 L1, the re-ranked
codes 0.997 (`shazzam bench search` measures it on synthetic data).
Code distances come from a small C kernel (`_l1kernel.c`, SSE2/AVX2 sum of absolute
differences) when it was built, else from numpy: same answers, slower.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    from shazzam import _l1kernel
except ImportError:  # built without a C compiler: numpy does the same sums
    _l1kernel = None

QUANT_CLIP = 0.25
QUANT_STEP = QUANT_CLIP / 255
# choose_step widens the step past QUANT_STEP only when more than this fraction of values would
# clip, and then leaves at most CLIP_QUANTILE of them above the new clip
# (and more than CLIP_MIN_COUNT values: one item's outlier does not set a shard's step).
CLIP_TOLERANCE = 1e-4
CLIP_QUANTILE = 1e-5
CLIP_MIN_COUNT = 8
FINE_MAX = 8 * 255 + 3  # the largest re-rank code (fine_codes)
# Rows per pass of the uint8 search: bounds the distance buffer at queries x 64k x 4 bytes.
CHUNK_ROWS = 1 << 16

# Rows per block of the numpy paths: keeps temporaries near a few MB whatever the shard size.
BLOCK_ROWS = 4096


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero); float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def l1_distances(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Manhattan distance from one query (d,) to every row of vectors (n, d)."""
    query = np.asarray(query, dtype=np.float32)
    out = np.empty(len(vectors), dtype=np.float32)
    scratch = np.empty((min(BLOCK_ROWS, len(vectors)), vectors.shape[1]), dtype=np.float32)
    for start in range(0, len(vectors), BLOCK_ROWS):
        block = vectors[start : start + BLOCK_ROWS]
        diff = scratch[: len(block)]
        np.subtract(block, query, out=diff)
        np.abs(diff, out=diff)
        diff.sum(axis=1, out=out[start : start + len(block)])
    return out


def _kth_smallest(values: np.ndarray, k: int):
    """The k-th smallest value (k >= 1). On long arrays, first a threshold from a sample (every
    (k // 2)-th value's 8th smallest: about 4k values are at or under it), then an exact partition
    of the values under it; a full partition only if fewer than k are."""
    stride = max(1, k // 2)
    if len(values) >= 64 * stride * 8:
        sample = values[::stride]
        threshold = np.partition(sample, 7)[7]
        under = values[values <= threshold]
        if len(under) >= k:
            return np.partition(under, k - 1)[k - 1]
    return np.partition(values, k - 1)[k - 1]


def _topk_of(distances: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k smallest distances, nearest first, ties by position."""
    k = min(k, len(distances))
    if k < len(distances):
        # Every row tied with the k-th distance is a candidate, so ties at the cut go by index
        # (argpartition alone keeps an arbitrary subset of them).
        kth = _kth_smallest(distances, k)
        candidates = np.flatnonzero(distances <= kth)
    else:
        candidates = np.arange(len(distances))
    order = np.lexsort((candidates, distances[candidates]))[:k]
    return candidates[order]


def l1_topk(query: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and distances of the k rows nearest to query, nearest first (ties by index)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    if len(vectors) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    distances = l1_distances(query, vectors)
    chosen = _topk_of(distances, k)
    return chosen, distances[chosen]


def quantise(vectors: np.ndarray, step: float = QUANT_STEP) -> np.ndarray:
    """The uint8 scan codes of L2-normalised embeddings: round(x / step), clipped to 0..255."""
    return np.clip(np.rint(np.asarray(vectors, dtype=np.float32) / np.float32(step)), 0, 255).astype(np.uint8)


def fine_codes(vectors: np.ndarray, step: float = QUANT_STEP) -> np.ndarray:
    """The re-rank codes, in eighths of a step (uint16): 8c + 2r - 3 where the scan code c =
    round(x / step) > 0 and r = floor(4 (x / step - c) + 2), 0..3, is the quarter of c's bin that x
    is in (the centre of that quarter); 0 where c = 0."""
    vectors = np.asarray(vectors, dtype=np.float32)
    flat = vectors.reshape(-1, vectors.shape[-1]) if vectors.ndim else vectors.reshape(1, 1)
    out = np.empty(flat.shape, np.uint16)
    for start in range(0, len(flat), BLOCK_ROWS):  # blocks: the temporaries stay in cache
        scaled = flat[start : start + BLOCK_ROWS] * np.float32(1 / step)
        codes = np.rint(scaled)
        np.clip(codes, 0, 255, out=codes)
        scaled -= codes
        scaled *= 4
        scaled += 2
        np.floor(scaled, out=scaled)
        np.clip(scaled, 0, 3, out=scaled)  # the quarter r
        fine = 8 * codes + 2 * scaled - 3
        fine[codes == 0] = 0
        out[start : start + BLOCK_ROWS] = fine
    return out.reshape(vectors.shape)


def split_codes(fine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank codes (n, d) to what a shard stores: the uint8 scan codes (n, d), and one stream of
    bytes holding, row by row, the two quarter bits of each non-zero scan code in order, each
    row's bits padded to whole bytes (`low_bit_offsets` finds a row's bytes)."""
    fine = np.asarray(fine, dtype=np.uint16)
    codes = ((fine + np.uint16(4)) >> 3).astype(np.uint8)
    pieces = []
    for start in range(0, len(fine), CHUNK_ROWS):
        block, block_codes = fine[start : start + CHUNK_ROWS], codes[start : start + CHUNK_ROWS]
        nonzero = block_codes > 0
        rows, columns = np.nonzero(nonzero)
        quarters = ((block[rows, columns] + np.uint16(3) - 8 * block_codes[rows, columns].astype(np.uint16)) >> 1).astype(np.uint8)
        rank = (np.cumsum(nonzero, axis=1, dtype=np.int32) - 1)[rows, columns]
        bits = np.zeros((len(block), 2 * fine.shape[1]), np.uint8)  # each row's bits first, then zeros
        bits[rows, 2 * rank], bits[rows, 2 * rank + 1] = np.minimum(quarters, 3) >> 1, quarters & 1
        packed = np.packbits(bits, axis=1)
        pieces.append(packed[np.arange(packed.shape[1]) < _row_bytes(np.count_nonzero(nonzero, axis=1))[:, None]])
    return codes, np.concatenate(pieces) if pieces else np.zeros(0, np.uint8)


def _row_bytes(nonzero_counts: np.ndarray) -> np.ndarray:
    return (np.asarray(nonzero_counts, np.int64) + 3) // 4  # two bits a non-zero code, whole bytes


def low_bit_offsets(codes: np.ndarray) -> np.ndarray:
    """Where each row's quarter bits start in the stream, in bytes (n + 1,)."""
    sizes = np.zeros(len(codes) + 1, np.int64)
    for start in range(0, len(codes), CHUNK_ROWS):
        block = codes[start : start + CHUNK_ROWS]
        sizes[start + 1 : start + 1 + len(block)] = _row_bytes(np.count_nonzero(block, axis=1))
    return np.cumsum(sizes)


def take_rows(codes: np.ndarray, low_bits: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scan codes and the quarter-bit stream (split_codes) of `rows`, in that order: each row's
    whole bytes of the stream move with it, so no code is joined or split again."""
    rows = np.asarray(rows, np.int64)
    offsets = low_bit_offsets(codes)
    pieces = [low_bits[:0]]
    # A block of rows at a time: the byte positions are int64, 8 times the stream they index.
    for start in range(0, len(rows), CHUNK_ROWS):
        block = rows[start : start + CHUNK_ROWS]
        starts, sizes = offsets[block], offsets[block + 1] - offsets[block]
        # Byte i of the new stream, in its row's bytes at b: that row's start in the old stream + b.
        at = np.repeat(starts - (np.cumsum(sizes) - sizes), sizes) + np.arange(int(sizes.sum()))
        pieces.append(low_bits[at])
    return codes[rows], np.concatenate(pieces)


def join_codes(codes: np.ndarray, low_bits: np.ndarray | None, offsets: np.ndarray | None = None, rows: np.ndarray | None = None) -> np.ndarray:
    """Re-rank codes (int32) of `rows` (all if None) from the scan codes and the quarter-bit stream;
    without a stream (format 2 shards) 8 x code, the centre of each bin."""
    if rows is None:
        if low_bits is None:
            return 8 * codes.astype(np.int32)
        offsets = low_bit_offsets(codes) if offsets is None else offsets
        out = np.empty(codes.shape, np.int32)
        for start in range(0, len(codes), CHUNK_ROWS):
            chunk = np.arange(start, min(len(codes), start + CHUNK_ROWS))
            out[chunk] = join_codes(codes, low_bits, offsets, chunk)
        return out
    rows = np.asarray(rows)
    chosen = codes[rows]
    fine = 8 * chosen.astype(np.int32)
    if low_bits is None or len(rows) == 0 or len(low_bits) == 0:
        return fine
    offsets = low_bit_offsets(codes) if offsets is None else offsets
    dim = codes.shape[1]
    window = offsets[rows][:, None] + np.arange((2 * dim + 7) // 8)  # each row's bytes, and some after
    bits = np.unpackbits(low_bits[np.minimum(window, len(low_bits) - 1)], axis=1)
    quarters = (bits[:, 0 : 2 * dim : 2] << 1) | bits[:, 1 : 2 * dim : 2]  # in order of the non-zero codes
    nonzero = chosen > 0
    rank = np.cumsum(nonzero, axis=1, dtype=np.int32)  # the j-th non-zero code of a row takes its j-th quarter
    rank += (np.arange(len(rows), dtype=np.int32) * dim - 1)[:, None]
    np.maximum(rank, 0, out=rank)
    fine += np.where(nonzero, 2 * quarters.ravel().take(rank).astype(np.int32) - 3, 0)
    return fine


def choose_step(vectors: np.ndarray, current: float | None = None, clipped_before: int = 0, count_before: int = 0) -> float:
    """The code step for a shard that gets these L2-normalised values: `current` (QUANT_STEP if
    None) while at most CLIP_TOLERANCE of all its values (these, and `count_before` already coded,
    `clipped_before` of them at the top code) exceed 255 steps, or fewer than CLIP_MIN_COUNT; else
    wide enough for all but CLIP_QUANTILE of them (rounded up to 1/1024 of clip). Never narrower
    than `current`: the codes a shard holds stay comparable."""
    step = float(current or QUANT_STEP)
    values = np.asarray(vectors, dtype=np.float32).ravel()
    above = values[values > step * 255]
    total = values.size + count_before
    if len(above) == 0 or len(above) + clipped_before <= max(CLIP_TOLERANCE * total, CLIP_MIN_COUNT):
        return step
    allowed = int(CLIP_QUANTILE * total)
    needed = float(np.sort(above)[max(0, len(above) - 1 - allowed)])
    return max(step, float(np.ceil(needed * 1024)) / 1024 / 255)


def rerank_candidates(k: int, rows: int) -> int:
    """How many scan-code neighbours are re-ranked by the finer codes for a top-k."""
    return min(rows, k + max(k, 10))  # on the bench's data (k = 10) 20 candidates re-rank as well as 110


def search_codes(
    queries: np.ndarray,
    codes: np.ndarray,
    low_bits: np.ndarray | None,
    step: float,
    k: int,
    parts: int = 1,
    offsets: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Shard search: (m, k) rows and float32 L1 distances for L2-normalised float queries (m, d).

    Scans the uint8 codes for rerank_candidates(k) rows per query (l1_topk_u8), then orders those
    by the L1 distance of their re-rank codes to the query's (fine_codes), ties by row; distances
    are that code distance times step / 8. `parts` splits the scan across threads (same answer).
    Without low_bits (format 2 shards) both sides are 8 x scan code.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    k = min(k, len(codes))
    if k == 0:
        return np.empty((len(queries), 0), np.int64), np.empty((len(queries), 0), np.float32)
    if low_bits is None:
        scan = quantise(queries, step)
        query_fine = 8 * scan.astype(np.int32)
    else:
        query_fine = fine_codes(queries, step).astype(np.int32)
        scan = ((query_fine + 4) >> 3).astype(np.uint8)  # = quantise(queries, step)
    if low_bits is not None and offsets is None:
        offsets = low_bit_offsets(codes)
    candidates, _ = l1_topk_u8(scan, codes, rerank_candidates(k, len(codes)), parts=parts)
    rows = np.empty((len(queries), k), np.int64)
    distances = np.empty((len(queries), k), np.float32)
    for i, (query, found) in enumerate(zip(query_fine, candidates)):
        fine_distances = np.abs(join_codes(codes, low_bits, offsets, found) - query).sum(axis=1)
        order = np.lexsort((found, fine_distances))[:k]
        rows[i], distances[i] = found[order], fine_distances[order] * np.float32(step / 8)
    return rows, distances


def kernel_name() -> str:
    """Which implementation computes code distances: avx2, sse2, scalar (C) or numpy."""
    if _l1kernel is None or os.environ.get("SHAZZAM_L1_KERNEL") == "numpy":
        return "numpy"
    return _l1kernel.INSTRUCTIONS


def l1_distances_u8(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """uint32 L1 distances, queries (m, d) x codes (n, d), both uint8."""
    queries = np.ascontiguousarray(queries, dtype=np.uint8).reshape(-1, codes.shape[1])
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    out = np.empty((len(queries), len(codes)), dtype=np.uint32)
    if kernel_name() != "numpy":
        _l1kernel.l1_u8(codes, queries, codes.shape[1], out)
        return out
    for start in range(0, len(codes), BLOCK_ROWS):
        block = codes[start : start + BLOCK_ROWS].astype(np.int16)
        for row, query in enumerate(queries):
            out[row, start : start + len(block)] = np.abs(block - query.astype(np.int16)).sum(axis=1)
    return out


def l1_topk_u8(queries: np.ndarray, codes: np.ndarray, k: int, parts: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by code L1 for each query: (m, k) row indices and uint32 distances, ties by index.

    `parts` > 1 splits the rows into that many parts searched on threads (the kernel releases
    the GIL) and merges their top-k: the same answer, as a shard split across workers gives.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    queries = np.asarray(queries, dtype=np.uint8).reshape(-1, codes.shape[1])
    k = min(k, len(codes))
    if k == 0:
        return np.empty((len(queries), 0), np.int64), np.empty((len(queries), 0), np.uint32)
    if parts <= 1 and len(codes) <= CHUNK_ROWS:  # one chunk: no merging
        all_distances = l1_distances_u8(queries, codes)
        indices = np.stack([_topk_of(row, k) for row in all_distances])
        return indices, np.take_along_axis(all_distances, indices, axis=1)
    bounds = np.linspace(0, len(codes), max(1, parts) + 1).astype(int)

    def search_part(bounds_pair):
        """Top-k of a row range, chunk by chunk: after the first chunk, only rows nearer than the
        k-th best so far are candidates (a compare, not a partition, of each later chunk)."""
        lo, hi = bounds_pair
        best = [(np.empty(0, np.int64), np.empty(0, np.uint32)) for _ in queries]
        for start in range(lo, hi, CHUNK_ROWS):
            chunk_distances = l1_distances_u8(queries, codes[start : min(start + CHUNK_ROWS, hi)])
            for query, row in enumerate(chunk_distances):
                best_rows, best_distances = best[query]
                if len(best_distances) == k:  # earlier rows win ties: only strictly nearer rows
                    picked = np.flatnonzero(row < best_distances[-1])
                    if len(picked) > k:
                        picked = picked[_topk_of(row[picked], k)]
                else:
                    picked = _topk_of(row, k)
                if len(picked):
                    rows = np.concatenate((best_rows, start + picked))
                    found_distances = np.concatenate((best_distances, row[picked]))
                    order = np.lexsort((rows, found_distances))[:k]
                    best[query] = (rows[order], found_distances[order])
        return best

    pairs = list(zip(bounds[:-1], bounds[1:]))
    if parts > 1:
        with ThreadPoolExecutor(parts) as pool:
            found = list(pool.map(search_part, pairs))
    else:
        found = [search_part(pair) for pair in pairs]
    indices = np.empty((len(queries), k), np.int64)
    distances = np.empty((len(queries), k), np.uint32)
    for row in range(len(queries)):
        candidate_rows = np.concatenate([part[row][0] for part in found])
        candidate_distances = np.concatenate([part[row][1] for part in found])
        order = np.lexsort((candidate_rows, candidate_distances))[:k]
        indices[row], distances[row] = candidate_rows[order], candidate_distances[order]
    return indices, distances
