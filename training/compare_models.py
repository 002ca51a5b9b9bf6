"""Compare garment models side by side, as the service runs them (runtime venv, no torch).

    .venv/bin/python training/compare_models.py --data ../shared/data/clothing-dataset-small \
        layers/models/garment_v0.json layers/models/garment_v1.json [--json]

For each manifest (loaded with `shazzam.vision.GarmentModel.from_manifest`, sha256 checked):
- precision@10, L1 on L2-normalised embeddings (each test image queries train+validation; what
  search uses), on raw embeddings, and on the uint8 codes the index shards hold
  (`shazzam.distance.quantise` + `l1_topk_u8`), plus the fraction of normalised components the codes
  clip (> 0.25 or < 0);
- the classifier's accuracy on validation and test;
- ms per image on one thread (TFLite Interpreter num_threads=1, median of `--timing-images`
  invocations after a warm-up; preprocessing excluded), and the file size.
Embeddings are cached like training/evaluate.py does (keyed by the model's sha256).

`shazzam eval` (`make eval`; `make compare-models` runs it too) measures all of this and more
(precision@1/5/10, mAP@10, robustness, VGG16 speed ratio, the issue's targets) for a model and
its baseline in one run; this script stays for side-by-side tables of any number of manifests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate import embed_splits, list_split, retrieval_metrics  # noqa: E402

from shazzam.distance import QUANT_CLIP, l1_topk_u8, l2_normalise, quantise  # noqa: E402
from shazzam.images import load_image, to_model_input  # noqa: E402
from shazzam.vision import GarmentModel  # noqa: E402


def latency_ms(manifest: Path, data: Path, images: int) -> float:
    model = GarmentModel.from_manifest(manifest, num_threads=1)
    paths = [p for p, _ in list_split(data, "test")][:: max(1, 372 // images)][:images]
    inputs = [to_model_input(load_image(p.read_bytes())) for p in paths]
    model.model.run(inputs[0])  # warm-up
    times = []
    for x in inputs:
        started = time.perf_counter()
        model.model.run(x)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def compare(manifest: Path, data: Path, cache: str | None, threads: int, timing_images: int) -> dict:
    model = GarmentModel.from_manifest(manifest, num_threads=threads)
    embeddings, probabilities, labels = embed_splits(data, model, cache=cache, progress=True)
    result = {"model": model.name, "embedding_dim": model.embedding_dim, **retrieval_metrics(embeddings, labels, 10)}
    gallery = l2_normalise(np.concatenate([embeddings["train"], embeddings["validation"]]))
    gallery_labels = np.concatenate([labels["train"], labels["validation"]])
    queries = l2_normalise(embeddings["test"])
    rows, _ = l1_topk_u8(quantise(queries), quantise(gallery), 10)
    result["precision_at_10_uint8_codes"] = float(np.mean(gallery_labels[rows] == labels["test"][:, None]))
    every = np.concatenate([queries, gallery])
    result["clipped_by_codes"] = float(np.mean((every > QUANT_CLIP) | (every < 0)))
    categories = np.array(model.categories)
    for split in ("validation", "test"):
        predicted = categories[np.argmax(probabilities[split], axis=1)]
        result[f"classifier_accuracy_{split}"] = float(np.mean(predicted == labels[split]))
    result["ms_per_image_1_thread"] = latency_ms(manifest, data, timing_images)
    model_file = manifest.parent / model.manifest["file"]
    result["file_bytes"] = model_file.stat().st_size
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifests", nargs="+", type=Path)
    parser.add_argument("--data", default="../shared/data/clothing-dataset-small", type=Path)
    parser.add_argument("--cache", default="/tmp", help="embeddings cache folder ('' to disable)")
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads for embedding the dataset")
    parser.add_argument("--timing-images", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = [compare(m, args.data, args.cache or None, args.threads, args.timing_images) for m in args.manifests]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    rows = [
        ("embedding dimension", "embedding_dim", "{}"),
        ("precision@10, L1 on L2-normalised (search)", "precision_at_10_l1_normalised", "{:.4f}"),
        ("precision@10, L1 on raw", "precision_at_10_l1_raw", "{:.4f}"),
        ("precision@10, uint8 index codes", "precision_at_10_uint8_codes", "{:.4f}"),
        ("components clipped by the codes", "clipped_by_codes", "{:.5f}"),
        ("classifier accuracy, validation", "classifier_accuracy_validation", "{:.4f}"),
        ("classifier accuracy, test", "classifier_accuracy_test", "{:.4f}"),
        ("ms per image, 1 thread", "ms_per_image_1_thread", "{:.1f}"),
        ("file bytes", "file_bytes", "{}"),
    ]
    print("| figure | " + " | ".join(r["model"] for r in results) + " |")
    print("|---|" + "---|" * len(results))
    for title, key, fmt in rows:
        print(f"| {title} | " + " | ".join(fmt.format(r[key]) for r in results) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
