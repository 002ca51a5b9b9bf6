"""`shazzam bench search`: exact L1 search on synthetic shards, ours against the original and FAISS.

For each size, one process, one core for every method:
- original: the seed's method, float32 vectors, `np.sum(np.abs(E - q), axis=1)` and a full argsort
  (skipped where its two n x d float32 temporaries would not fit in memory comfortably);
- faiss:    `IndexFlat(d, METRIC_L1)` on float32, one thread (faiss-cpu, a benchmark-only
            dependency: `pip install faiss-cpu`; skipped when absent);
- ours:     uint8 codes scanned by the compiled kernel, top-k with ties by index (shard search);
- ours-numpy: the same without the kernel (the fallback), at the smaller sizes.
Figures: queries per second (one query at a time, and in batches of 16), p50/p99 latency, bytes per
item, recall@10 against exact float32 L1, the scan rate next to this machine's memory copy
bandwidth measured in the same process, and the time to load a shard from the object store and
answer a first query. Synthetic embeddings imitate the model's: non-negative, about half zeros,
clustered, L2-normalised; queries are perturbed catalogue items.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from shazzam.distance import BLOCK_ROWS, kernel_name, l1_topk_u8, l2_normalise, quantise
from shazzam.index import ShardReader, publish
from shazzam.storage import LocalFolderStore

DIM = 256  # garment_v1's embedding (garment_v0's was 1280: --dim 1280)
K = 10
BATCH = 16
ORIGINAL_MAX_BYTES = 4 << 30  # the original's temporaries: two more copies of the float32 matrix


def synthetic_embeddings(n: int, rng: np.random.Generator, dim: int = DIM, clusters: int = 512) -> np.ndarray:
    centres = np.maximum(rng.normal(size=(clusters, dim)), 0).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 65536):
        stop = min(n, start + 65536)
        noise = rng.normal(scale=0.7, size=(stop - start, dim)).astype(np.float32)
        out[start:stop] = l2_normalise(np.maximum(centres[rng.integers(clusters, size=stop - start)] + noise, 0))
    return out


def perturbed_queries(items: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    picked = items[rng.choice(len(items), size=count, replace=False)]
    return l2_normalise(np.maximum(picked + rng.normal(scale=0.01, size=picked.shape).astype(np.float32), 0))


def exact_float_topk(items: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Ground truth: float32 L1, computed in blocks (any size fits), ties by index."""
    truth = np.empty((len(queries), K), np.int64)
    for row, query in enumerate(queries):
        distances = np.empty(len(items), np.float32)
        for start in range(0, len(items), BLOCK_ROWS):
            distances[start : start + BLOCK_ROWS] = np.abs(items[start : start + BLOCK_ROWS] - query).sum(axis=1)
        candidates = np.argpartition(distances, K)[: K * 4]
        truth[row] = candidates[np.lexsort((candidates, distances[candidates]))][:K]
    return truth


def memory_copy_bandwidth(size: int = 512 << 20) -> float:
    """Bytes moved per second (read + write, as STREAM's copy counts them) by one core."""
    source, target = np.ones(size, np.uint8), np.empty(size, np.uint8)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return 2 * size / best


def timed(search, queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    results, latencies = [], []
    for query in queries:
        started = time.perf_counter()
        results.append(search(query[np.newaxis]))
        latencies.append(time.perf_counter() - started)
    return np.vstack(results), latencies


def summary(latencies: list[float], found: np.ndarray, truth: np.ndarray, bytes_per_item: float) -> dict:
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth)])
    return {
        "qps": round(len(latencies) / sum(latencies), 2),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1e3, 3),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1e3, 3),
        "bytes_per_item": round(bytes_per_item, 1),
        "recall_at_10": round(float(recall), 4),
    }


def bench_size(n: int, dim: int, queries_count: int, rng: np.random.Generator, bandwidth: float, log) -> dict:
    log(f"{n:,} items x {dim}: generating")
    items = synthetic_embeddings(n, rng, dim)
    queries = perturbed_queries(items, queries_count, rng)
    truth = exact_float_topk(items, queries)
    codes = quantise(items)
    result: dict = {"items": n, "queries": queries_count, "dim": dim, "methods": {}}

    if 3 * items.nbytes <= ORIGINAL_MAX_BYTES:
        log(f"{n:,} x {dim}: original")

        def original(query):
            return np.argsort(np.sum(np.abs(items - query), axis=1))[:K]

        found, latencies = timed(original, queries)
        result["methods"]["original"] = summary(latencies, found, truth, dim * 4)
    else:
        result["methods"]["original"] = {"skipped": f"needs {3 * items.nbytes / 2**30:.0f} GiB"}

    try:
        import faiss
    except ImportError:
        result["methods"]["faiss"] = {"skipped": "faiss-cpu is not installed (pip install faiss-cpu)"}
    else:
        if 2 * items.nbytes <= ORIGINAL_MAX_BYTES:
            log(f"{n:,} x {dim}: faiss")
            faiss.omp_set_num_threads(1)
            flat = faiss.IndexFlat(dim, faiss.METRIC_L1)
            flat.add(items)
            found, latencies = timed(lambda query: flat.search(query, K)[1][0], queries)
            result["methods"]["faiss"] = summary(latencies, found, truth, dim * 4)
            del flat
        else:
            result["methods"]["faiss"] = {"skipped": f"its copy needs {items.nbytes / 2**30:.0f} GiB more"}

    log(f"{n:,} x {dim}: ours ({kernel_name()})")
    coded_queries = quantise(queries)
    found, latencies = timed(lambda query: l1_topk_u8(query, codes, K)[0][0], coded_queries)
    ours = summary(latencies, found, truth, dim)  # the codes; cold_load measures the whole shard file
    ours["kernel"] = kernel_name()
    ours["scan_gb_per_s"] = round(codes.nbytes / float(np.median(latencies)) / 1e9, 2)
    ours["scan_vs_copy_bandwidth"] = round(codes.nbytes / float(np.median(latencies)) / bandwidth, 3)
    started = time.perf_counter()
    batched = l1_topk_u8(coded_queries[: min(BATCH, len(coded_queries))], codes, K)[0]
    batch_s = time.perf_counter() - started
    ours["batched_qps"] = round(len(batched) / batch_s, 2)
    split = l1_topk_u8(coded_queries, codes, K, parts=4)[0]
    ours["split_4_parts_same_answer"] = bool(np.array_equal(split, found))
    result["methods"]["ours"] = ours

    if n <= 100_000:
        log(f"{n:,} x {dim}: ours without the kernel")
        os.environ["SHAZZAM_L1_KERNEL"] = "numpy"
        try:
            some = coded_queries[: max(3, queries_count // 5)]
            found_np, latencies = timed(lambda query: l1_topk_u8(query, codes, K)[0][0], some)
        finally:
            del os.environ["SHAZZAM_L1_KERNEL"]
        result["methods"]["ours-numpy"] = summary(latencies, found_np, truth[: len(some)], dim)
        result["methods"]["ours-numpy"]["same_answer_as_kernel"] = bool(np.array_equal(found_np, found[: len(some)]))

    if n <= 100_000:
        result["cold_load"] = cold_load(items, queries[0])
        result["methods"]["ours"]["bytes_per_item"] = result["cold_load"]["bytes_per_item"]
    original_qps = result["methods"]["original"].get("qps")
    if original_qps:
        result["speedup_vs_original"] = round(ours["qps"] / original_qps, 1)
    if "qps" in result["methods"]["faiss"]:
        result["speedup_vs_faiss"] = round(ours["qps"] / result["methods"]["faiss"]["qps"], 1)
    return result


def cold_load(items: np.ndarray, query: np.ndarray) -> dict:
    """Publish the items as one shard, then time a fresh reader: manifest, shard, checksum, first query."""
    with tempfile.TemporaryDirectory() as folder:
        store = LocalFolderStore(Path(folder) / "objects")
        ids = [f"{i:040x}-000" for i in range(len(items))]  # the length of real detection ids
        entry = publish(store, "bench", add=dict(zip(ids, items)))
        shard_bytes = store.head(entry["key"]).size
        started = time.perf_counter()
        ShardReader(store).search("bench", query, K)
        elapsed = time.perf_counter() - started
    return {"items": len(items), "seconds": round(elapsed, 3), "shard_bytes": shard_bytes, "bytes_per_item": round(shard_bytes / len(items), 1)}


def run(sizes: list[int], queries: int, dim: int = DIM, seed: int = 0, log=None) -> dict:
    log = log or (lambda message: print(message, file=sys.stderr))
    rng = np.random.default_rng(seed)
    bandwidth = memory_copy_bandwidth()
    log(f"memory copy bandwidth, one core: {bandwidth / 1e9:.1f} GB/s")
    return {
        "memory_copy_gb_per_s": round(bandwidth / 1e9, 2),
        "kernel": kernel_name(),
        "k": K,
        "sizes": [bench_size(n, dim, queries if n < 1_000_000 else max(5, queries // 4), rng, bandwidth, log) for n in sizes],
    }


def format_report(report: dict) -> str:
    lines = [f"memory copy bandwidth (one core): {report['memory_copy_gb_per_s']} GB/s; kernel: {report['kernel']}"]
    for size in report["sizes"]:
        lines.append(f"\n{size['items']:,} items x {size['dim']} dims, {size['queries']} queries")
        for name, figures in size["methods"].items():
            if "skipped" in figures:
                lines.append(f"  {name:<11} skipped: {figures['skipped']}")
                continue
            extra = ""
            if name == "ours":
                extra = (
                    f"  batched {figures['batched_qps']} q/s, scan {figures['scan_gb_per_s']} GB/s "
                    f"= {figures['scan_vs_copy_bandwidth']:.0%} of copy bandwidth, split==whole: {figures['split_4_parts_same_answer']}"
                )
            lines.append(
                f"  {name:<11} {figures['qps']:>9} q/s  p50 {figures['p50_ms']:>9} ms  p99 {figures['p99_ms']:>9} ms  "
                f"{figures['bytes_per_item']:>7} B/item  recall@10 {figures['recall_at_10']}{extra}"
            )
        for key in ("speedup_vs_original", "speedup_vs_faiss"):
            if key in size:
                lines.append(f"  {key.replace('_', ' ')}: {size[key]}x")
        if "cold_load" in size:
            cold = size["cold_load"]
            lines.append(f"  cold load of the shard ({cold['shard_bytes']:,} bytes) + first query: {cold['seconds']} s")
    return "\n".join(lines)
