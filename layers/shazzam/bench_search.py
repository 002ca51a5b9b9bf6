"""`shazzam bench search`: exact L1 search on synthetic shards, ours against the original and FAISS.

For each size, one process, one core for every method:
- original: the seed's method, float32 vectors, `np.sum(np.abs(E - q), axis=1)` and a full argsort
  (skipped where its two n x d float32 temporaries would not fit in memory comfortably);
- faiss:    `IndexFlat(d, METRIC_L1)` on float32, one thread (faiss-cpu, a benchmark-only
            dependency: `pip install faiss-cpu`; skipped when absent);
- ours:     `Shard.search_many`, the serving code: the shard built as publish builds it
            (`Shard.from_vectors`), its uint8 codes scanned by the compiled kernel, the nearest
            re-ranked by the 9-bit codes, ids looked up;
- ours-numpy: the same without the kernel (the fallback), at the smaller sizes.
Figures: queries per second (one query at a time, and in batches of 16), p50/p99 latency, bytes per
item (the encoded shard file over its items: codes, low bits, packed ids, HDF5 overhead), recall@10
against exact float32 L1, the scan rate next to this machine's memory copy bandwidth measured in
the same process, and the time to load a shard from the object store and answer a first query.
The dimension defaults to the serving model's (its manifest's outputs.embedding.dim).

Data (`GENERATORS`): "garment-like", a shard of one category as garment_v1 embeds one: every item
is 1.5 tanh(ReLU(profile + style + noise) / 1.5), L2-normalised, with one category profile
~ N(-0.3, 1) per dimension, one style ~ N(0, 0.2) per 64 items and noise ~ N(0, 0.25); queries are
held-out draws (new photos of catalogued styles, not copies of catalogue items). The parameters
were fitted to garment_v1 on clothing-dataset-small, one class (~320 items) against that class's
test images (real figures in brackets): 61% zeros (58%); non-zero values at the 10/50/90/99th
percentiles 0.014/0.078/0.163/0.205 (0.010/0.073/0.156/0.191), 99.9th 0.21 (0.20), largest 0.23
(0.28); nearest/10th-nearest distance 0.91 (0.88); 10th-nearest/median 0.74 (0.77); median L1 3.9
(3.6); gap between 10th and 11th neighbour 0.40% of the distance (0.40%). Its recall is the
target's. "uniform" is the worst case, shown for reference: independent ReLU(N(0, 1)) vectors, no
clusters, held-out queries, every item nearly equidistant from a query (and values up to ~0.45:
a coarser step). How the data scales from 320 items to 1M (denser styles? more of them?) is a
guess: 64 items per style at every size.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from shazzam.distance import BLOCK_ROWS, kernel_name, l2_normalise
from shazzam.index import Shard, ShardReader, decode_shard, encode_shard, publish
from shazzam.storage import LocalFolderStore

K = 10
BATCH = 16
RECALL_QUERIES = 200  # recall of ours is measured over this many queries (half at 1M), timing over --queries
ORIGINAL_MAX_BYTES = 4 << 30  # the original's temporaries: two more copies of the float32 matrix


def serving_dim(model_dir: str | None = None) -> int:
    """The embedding dimension of the model the service runs (shazzam.vision's manifest, in
    `model_dir` when given: the command's --model-dir)."""
    import json

    from shazzam.vision import manifest_path

    return int(json.loads(manifest_path(model_dir).read_text())["outputs"]["embedding"]["dim"])


SATURATION = 1.5  # activations saturate softly, as garment_v1's bounded features do


def garment_like_embeddings(n: int, rng: np.random.Generator, dim: int, per_style: int = 64) -> np.ndarray:
    """One category's embeddings as garment_v1 makes them (see the module's docstring)."""
    profile = rng.normal(-0.3, 1.0, size=dim).astype(np.float32)
    styles = profile + rng.normal(scale=0.2, size=(max(1, n // per_style), dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 65536):
        stop = min(n, start + 65536)
        noise = rng.normal(scale=0.25, size=(stop - start, dim)).astype(np.float32)
        activations = np.maximum(styles[rng.integers(len(styles), size=stop - start)] + noise, 0)
        out[start:stop] = l2_normalise(SATURATION * np.tanh(activations / SATURATION))
    return out


def uniform_embeddings(n: int, rng: np.random.Generator, dim: int) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 65536):
        stop = min(n, start + 65536)
        out[start:stop] = l2_normalise(np.maximum(rng.normal(size=(stop - start, dim)), 0))
    return out


GENERATORS = {"garment-like": garment_like_embeddings, "uniform": uniform_embeddings}


def items_and_queries(generator: str, n: int, queries: int, rng: np.random.Generator, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """n catalogue items and `queries` held-out draws of the same generator."""
    every = GENERATORS[generator](n + queries, rng, dim)
    return every[:n], every[n:]


def bench_ids(n: int) -> list[str]:
    """Detection-id-shaped ids (40 hex digits and an index), in row order; row_of_id reverses them."""
    return [f"{i:040x}-000" for i in range(n)]


def row_of_id(item_id: str) -> int:
    return int(item_id[:40], 16)


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


def timed(searches: dict[str, Callable], queries: np.ndarray, block: int = 8) -> dict[str, tuple[np.ndarray, list[float]]]:
    """Each search's answers and latencies over the queries. The methods take turns a block of
    queries at a time (their order rotating), so that a slow spell of this shared machine falls on
    each alike; each block starts with an untimed query, so that a method is timed in its steady
    state (a 100k shard's codes live in the CPU's cache, until another method's scan evicts them)
    and not in the wake of the others'."""
    results = {name: [] for name in searches}
    latencies = {name: [] for name in searches}
    names = list(searches)
    for turn, start in enumerate(range(0, len(queries), block)):
        chunk = queries[start : start + block]
        for name in names[turn % len(names):] + names[: turn % len(names)]:
            searches[name](chunk[:1])
            for query in chunk:
                started = time.perf_counter()
                results[name].append(searches[name](query[np.newaxis]))
                latencies[name].append(time.perf_counter() - started)
    return {name: (np.vstack(results[name]), latencies[name]) for name in searches}


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
    recall_count = max(queries_count, RECALL_QUERIES if n < 1_000_000 else RECALL_QUERIES // 2)
    items, recall_queries = items_and_queries("garment-like", n, recall_count, rng, dim)
    recall_truth = exact_float_topk(items, recall_queries)
    queries, truth = recall_queries[:queries_count], recall_truth[:queries_count]  # the timed ones
    encoded = encode_shard(Shard.from_vectors("bench", bench_ids(n), items, model="bench"))  # as publish codes them
    shard = decode_shard(encoded)  # as a reader serves it (its re-rank offsets made at load)
    codes = shard.codes
    shard_bytes = len(encoded)
    del encoded
    result: dict = {"items": n, "queries": queries_count, "dim": dim, "data": "garment-like", "methods": {}}
    result["shard"] = {
        "bytes": shard_bytes,
        "bytes_per_item": round(shard_bytes / n, 1),
        "per_item": {"codes": dim, "quarter_bits": round(len(shard.low_bits) / n, 1), "id": 22},
        "step": shard.step,
    }

    def ours_search(query):
        return [row_of_id(item_id) for item_id, _ in shard.search_many(query, K)[0]]

    searches = {"ours": ours_search}
    if 3 * items.nbytes <= ORIGINAL_MAX_BYTES:
        searches["original"] = lambda query: np.argsort(np.sum(np.abs(items - query), axis=1))[:K]
    else:
        result["methods"]["original"] = {"skipped": f"needs {3 * items.nbytes / 2**30:.0f} GiB"}
    flat = None
    try:
        import faiss
    except ImportError:
        result["methods"]["faiss"] = {"skipped": "faiss-cpu is not installed (pip install faiss-cpu)"}
    else:
        if 5 * items.nbytes <= ORIGINAL_MAX_BYTES:  # its copy, beside the original's
            faiss.omp_set_num_threads(1)
            flat = faiss.IndexFlat(dim, faiss.METRIC_L1)
            flat.add(items)
            searches["faiss"] = lambda query: flat.search(query, K)[1][0]
        else:
            result["methods"]["faiss"] = {"skipped": f"its copy needs {items.nbytes / 2**30:.0f} GiB more"}
    log(f"{n:,} x {dim}: {', '.join(searches)} in turn (ours: {kernel_name()})")
    answers = timed(searches, queries)
    bandwidth = max(bandwidth, memory_copy_bandwidth())  # measured beside the scan too, not only minutes before
    del flat
    for name in ("original", "faiss"):
        if name in answers:
            result["methods"][name] = summary(answers[name][1], answers[name][0], truth, dim * 4)
    found, latencies = answers["ours"]
    ours = summary(latencies, found, truth, shard_bytes / n)
    ours["kernel"] = kernel_name()
    ours["scan_gb_per_s"] = round(codes.nbytes / float(np.median(latencies)) / 1e9, 2)
    ours["scan_vs_copy_bandwidth"] = round(codes.nbytes / float(np.median(latencies)) / bandwidth, 3)
    started = time.perf_counter()
    batched = shard.search_many(queries[: min(BATCH, len(queries))], K)
    batch_s = time.perf_counter() - started
    ours["batched_qps"] = round(len(batched) / batch_s, 2)
    split = shard.search_rows(queries, K, parts=4)[0]
    ours["split_4_parts_same_answer"] = bool(np.array_equal(split, found))
    every = [[row_of_id(item_id) for item_id, _ in hits] for hits in shard.search_many(recall_queries, K)]
    ours["recall_at_10"], ours["recall_queries"] = recall_at_10(every, recall_truth), recall_count
    result["methods"]["ours"] = ours

    if n <= 100_000:
        log(f"{n:,} x {dim}: ours without the kernel")
        os.environ["SHAZZAM_L1_KERNEL"] = "numpy"
        try:
            some = queries[: max(3, queries_count // 5)]
            found_np, latencies = timed({"ours-numpy": ours_search}, some)["ours-numpy"]
        finally:
            del os.environ["SHAZZAM_L1_KERNEL"]
        result["methods"]["ours-numpy"] = summary(latencies, found_np, truth[: len(some)], shard_bytes / n)
        result["methods"]["ours-numpy"]["same_answer_as_kernel"] = bool(np.array_equal(found_np, found[: len(some)]))

    if n <= 100_000:
        result["cold_load"] = cold_load(items, queries[0])
    # Unrounded (to 3 places): the targets are judged on them; the report prints one decimal.
    original_qps = result["methods"]["original"].get("qps")
    if original_qps:
        result["speedup_vs_original"] = round(ours["qps"] / original_qps, 3)
    if "qps" in result["methods"]["faiss"]:
        result["speedup_vs_faiss"] = round(ours["qps"] / result["methods"]["faiss"]["qps"], 3)
    del items, shard, codes
    result["uniform"] = uniform_recall(n, dim, recall_count, rng, log)
    return result


def uniform_recall(n: int, dim: int, queries_count: int, rng: np.random.Generator, log) -> dict:
    """Recall@10 of the serving search on the worst case: an unclustered cloud."""
    log(f"{n:,} x {dim}: uniform data")
    items, queries = items_and_queries("uniform", n, queries_count, rng, dim)
    truth = exact_float_topk(items, queries)
    shard = Shard.from_vectors("bench", bench_ids(n), items)
    found = [[row_of_id(item_id) for item_id, _ in hits] for hits in shard.search_many(queries, K)]
    return {"recall_at_10": recall_at_10(found, truth), "recall_queries": queries_count}


def recall_at_10(found, truth) -> float:
    return round(float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth)])), 4)


def cold_load(items: np.ndarray, query: np.ndarray) -> dict:
    """Publish the items as one shard, then time a fresh reader: manifest, shard, checksum, first query."""
    with tempfile.TemporaryDirectory() as folder:
        store = LocalFolderStore(Path(folder) / "objects")
        entry = publish(store, "bench", add=dict(zip(bench_ids(len(items)), items)))  # detection-id-shaped ids
        shard_bytes = store.head(entry["key"]).size
        started = time.perf_counter()
        ShardReader(store).search("bench", query, K)
        elapsed = time.perf_counter() - started
    return {"items": len(items), "seconds": round(elapsed, 3), "shard_bytes": shard_bytes, "bytes_per_item": round(shard_bytes / len(items), 1)}


DATA_NOTE = (
    "garment-like: one category's embeddings, 1.5 tanh(ReLU(profile + style + noise) / 1.5) L2-normalised, fitted "
    "to garment_v1 on clothing-dataset-small, 64 items a style; queries held out. uniform: unclustered "
    "ReLU(N(0,1)) vectors, the worst case."
)


def run(sizes: list[int], queries: int, dim: int | None = None, seed: int = 0, log=None, model_dir: str | None = None) -> dict:
    log = log or (lambda message: print(message, file=sys.stderr))
    dim = dim or serving_dim(model_dir)
    rng = np.random.default_rng(seed)
    bandwidth = memory_copy_bandwidth()
    log(f"memory copy bandwidth, one core: {bandwidth / 1e9:.1f} GB/s")
    report = {
        "memory_copy_gb_per_s": round(bandwidth / 1e9, 2),
        "kernel": kernel_name(),
        "k": K,
        "data": DATA_NOTE,
        "sizes": [bench_size(n, dim, queries if n < 1_000_000 else max(5, queries // 4), rng, bandwidth, log) for n in sizes],
    }
    report["targets"] = targets(report["sizes"])
    return report


def targets(sizes: list[dict]) -> list[dict]:
    """The index issue's targets, each with the figure measured (None where the run had no such size)."""
    by_items = {size["items"]: size for size in sizes}
    at_100k, at_1m = by_items.get(100_000), by_items.get(1_000_000)

    def ours(size, key):
        return size["methods"]["ours"][key] if size else None

    checks = [
        ("speed-up over the original's method at 100k", at_100k and at_100k.get("speedup_vs_original"), 20.0, ">="),
        ("speed-up over FAISS flat L1 at 100k", at_100k and at_100k.get("speedup_vs_faiss"), 1.0, ">"),
        ("recall@10 against exact float32 L1, worst size", min(ours(size, "recall_at_10") for size in sizes) if sizes else None, 0.99, ">="),
        ("scan rate / memory copy bandwidth at 1M, one core", ours(at_1m, "scan_vs_copy_bandwidth"), 0.5, ">="),
        ("bytes per item, largest of any size", max(size["shard"]["bytes_per_item"] for size in sizes) if sizes else None, 256.0, "<="),
        ("100k shard cold load + first query, s", at_100k and at_100k.get("cold_load", {}).get("seconds"), 0.5, "<="),
    ]
    compare = {">=": lambda v, t: v >= t, ">": lambda v, t: v > t, "<=": lambda v, t: v <= t}
    return [{"name": name, "value": value, "target": target, "op": op,
             "met": None if value is None else bool(compare[op](value, target))} for name, value, target, op in checks]


def format_report(report: dict) -> str:
    lines = [f"memory copy bandwidth (one core): {report['memory_copy_gb_per_s']} GB/s; kernel: {report['kernel']}"]
    lines.append(f"data: {report['data']}")
    for size in report["sizes"]:
        shard = size["shard"]
        lines.append(
            f"\n{size['items']:,} items x {size['dim']} dims, {size['queries']} queries, {size['data']} data; shard "
            f"{shard['bytes_per_item']} B/item ({shard['per_item']['codes']} codes + {shard['per_item']['quarter_bits']} "
            f"quarter bits + {shard['per_item']['id']} id + file overhead), step {shard['step']:.3g}"
        )
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
                lines.append(f"  {key.replace('_', ' ')}: {size[key]:.1f}x")
        if "cold_load" in size:
            cold = size["cold_load"]
            lines.append(f"  cold load of the shard ({cold['shard_bytes']:,} bytes) + first query: {cold['seconds']} s")
        lines.append(
            f"  ours' recall@10 over {size['methods']['ours']['recall_queries']} queries (the timed ones are the first "
            f"{size['queries']}); uniform (unclustered) data, same size: {size['uniform']['recall_at_10']}"
        )
    lines.append("\ntargets:")
    for check in report.get("targets", []):
        met = "not measured" if check["met"] is None else ("met" if check["met"] else "NOT MET")
        lines.append(f"  {check['name']:<52} {check['value']!s:>8} {check['op']} {check['target']:<6} {met}")
    return "\n".join(lines)
