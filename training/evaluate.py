"""Evaluate the exported garment model on clothing-dataset-small.

Runs in the ordinary runtime venv (numpy, Pillow, ai-edge-litert, tqdm; no torch):

    .venv/bin/python training/evaluate.py --data ../shared/data/clothing-dataset-small [--json]

Every image of train, validation and test is embedded with `shazzam.vision.GarmentModel`
(the exact code path the service uses); embeddings are cached in an .npz under `--cache`
keyed by the model's sha256 and the file list. Figures:

- precision@10, L1 on L2-normalised embeddings: each test image queries train+validation with
  `shazzam.distance.l1_topk`; a hit is a neighbour of the same class (the folder name);
- the same with raw (un-normalised) embeddings;
- accuracy of the model's classifier head on test (and validation).

`evaluate(data_dir, model)` is the importable core; `precision_at_k` is shared with
`training/export_embedder.py` and `training/finetune.py` so they report the same metric.

`shazzam eval` (`shazzam.evaluation`) supersedes this script's command line: it measures on the
index's uint8 codes, adds precision@1/5, mAP@10, the confusion matrix, the re-photographed
robustness figure, speed against VGG16 and the issue's targets, baseline beside the model.
`list_split` and `SPLITS` come from there, so training and evaluation list the same files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

import shazzam.images
from shazzam.distance import l1_topk, l2_normalise

from shazzam.evaluation import IMAGE_SUFFIXES, SPLITS, list_split  # noqa: F401 (imported by the training scripts)

K = 10


def precision_at_k(
    queries: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray, k: int = K
) -> float:
    """Mean fraction of each query's k nearest gallery rows (L1) that share its label."""
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    gallery_labels = np.asarray(gallery_labels)
    hits = []
    for query, label in zip(np.asarray(queries, dtype=np.float32), query_labels):
        indices, _ = l1_topk(query, gallery, k)
        hits.append(float(np.mean(gallery_labels[indices] == label)))
    return float(np.mean(hits)) if hits else float("nan")


def retrieval_metrics(embeddings: dict[str, np.ndarray], labels: dict[str, np.ndarray], k: int = K) -> dict:
    """precision@k of test against train+validation, on L2-normalised and on raw embeddings."""
    gallery = np.concatenate([embeddings["train"], embeddings["validation"]])
    gallery_labels = np.concatenate([labels["train"], labels["validation"]])
    return {
        f"precision_at_{k}_l1_normalised": precision_at_k(
            l2_normalise(embeddings["test"]), labels["test"], l2_normalise(gallery), gallery_labels, k
        ),
        f"precision_at_{k}_l1_raw": precision_at_k(embeddings["test"], labels["test"], gallery, gallery_labels, k),
    }


def _cache_key(model, items: dict[str, list[tuple[Path, str]]]) -> str:
    digest = hashlib.sha256(str(getattr(model, "sha256", "") or id(model)).encode())
    digest.update(Path(shazzam.images.__file__).read_bytes())  # the preprocessing is part of the cache key
    for split in SPLITS:
        for path, label in items[split]:
            stat = path.stat()
            digest.update(f"{split}\0{path}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def embed_splits(
    data_dir: str | Path, model, cache: str | Path | None = None, progress: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Raw embeddings, class probabilities and labels of every split, from cache when it matches."""
    from shazzam.images import load_image

    items = {split: list_split(data_dir, split) for split in SPLITS}
    cache_file = None
    if cache is not None:
        cache_file = Path(cache) / f"shazzam-eval-{_cache_key(model, items)}.npz"
        if cache_file.is_file():
            with np.load(cache_file) as stored:
                return (
                    {s: stored[f"emb_{s}"] for s in SPLITS},
                    {s: stored[f"prob_{s}"] for s in SPLITS},
                    {s: np.array([label for _, label in items[s]]) for s in SPLITS},
                )
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a runtime dependency
        tqdm = None
    total = sum(len(v) for v in items.values())
    bar = tqdm(total=total, unit="img", file=sys.stderr, disable=not progress) if tqdm else None
    embeddings, probabilities, labels = {}, {}, {}
    for split in SPLITS:
        embs, probs = [], []
        for path, _ in items[split]:
            embedding, probability = model.infer(load_image(path.read_bytes()))
            embs.append(embedding)
            probs.append(probability)
            if bar is not None:
                bar.update(1)
        embeddings[split] = np.stack(embs).astype(np.float32)
        probabilities[split] = np.stack(probs).astype(np.float32)
        labels[split] = np.array([label for _, label in items[split]])
    if bar is not None:
        bar.close()
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            **{f"emb_{s}": embeddings[s] for s in SPLITS},
            **{f"prob_{s}": probabilities[s] for s in SPLITS},
        )
        tmp.replace(cache_file)
    return embeddings, probabilities, labels


def evaluate(data_dir: str | Path, model, *, cache: str | Path | None = None, progress: bool = False) -> dict:
    """All figures for `model` (a shazzam.vision.GarmentModel) on the dataset at data_dir."""
    embeddings, probabilities, labels = embed_splits(data_dir, model, cache=cache, progress=progress)
    categories = np.array(model.categories)
    result = {
        "images": {split: int(len(labels[split])) for split in SPLITS},
        "k": K,
        **retrieval_metrics(embeddings, labels, K),
    }
    for split in ("validation", "test"):
        predicted = categories[np.argmax(probabilities[split], axis=1)]
        result[f"classifier_accuracy_{split}"] = float(np.mean(predicted == labels[split]))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/clothing-dataset-small", help="dataset root")
    parser.add_argument("--model-dir", default=None, help="folder holding garment_v0.json (default: shazzam's)")
    parser.add_argument("--cache", default="/tmp", help="folder for the embeddings cache ('' to disable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)

    from shazzam.vision import load_garment_model

    started = time.perf_counter()
    model = load_garment_model(args.model_dir)
    result = evaluate(args.data, model, cache=args.cache or None, progress=True)
    result["model"] = model.name
    result["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"model {model.name}; images {result['images']}")
        print(f"precision@{K}, L1 on L2-normalised embeddings: {result[f'precision_at_{K}_l1_normalised']:.4f}")
        print(f"precision@{K}, L1 on raw embeddings:           {result[f'precision_at_{K}_l1_raw']:.4f}")
        print(f"classifier accuracy, validation:            {result['classifier_accuracy_validation']:.4f}")
        print(f"classifier accuracy, test:                  {result['classifier_accuracy_test']:.4f}")
        print(f"{result['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
