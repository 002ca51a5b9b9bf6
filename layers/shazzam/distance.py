"""Exact Manhattan (L1) nearest neighbours over L2-normalised embeddings."""

from __future__ import annotations

import numpy as np

# Rows per block: keeps the |V - q| temporary near a few MB whatever the shard size.
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


def l1_topk(query: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and distances of the k rows nearest to query, nearest first (ties by index)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    if len(vectors) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    distances = l1_distances(query, vectors)
    k = min(k, len(distances))
    if k < len(distances):
        # Every row tied with the k-th distance is a candidate, so ties at the cut go by index
        # (argpartition alone keeps an arbitrary subset of them).
        kth = np.partition(distances, k - 1)[k - 1]
        candidates = np.flatnonzero(distances <= kth)
    else:
        candidates = np.arange(len(distances))
    order = np.lexsort((candidates, distances[candidates]))[:k]
    chosen = candidates[order]
    return chosen, distances[chosen]
