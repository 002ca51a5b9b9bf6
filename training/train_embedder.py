"""Train garment_v5: EfficientNet-Lite0 fine-tuned into a compact (192-d) garment embedder + classifier.

Runs in the training venv (torch, efficientnet-lite-pytorch; litert-torch for --export); `make
finetune` runs both steps:

    python training/train_embedder.py --data ../shared/data/clothing-dataset-small --run-dir build/garment_v5
    python training/train_embedder.py --run-dir build/garment_v5 --export layers/models

The first trains and writes `<run-dir>/checkpoint.pt` and `summary.json`; the second exports the
checkpoint (`export_garment.py`). The defaults are the committed model's recipe, made for a CPU:

- Input: raw RGB 0..255 NHWC; the model normalises with (x - 127) / 128 itself. Every image's
  clean view is exactly `shazzam.images.to_model_input(load_image(bytes))`, the serving path;
  augmented views come from `shazzam.rephotograph.phone_photo` (random resized crop, flip, rotation, colour and
  light, blur, JPEG) or, for --rephotograph-share of them, the whole picture through
  `shazzam.rephotograph.rephotograph` (background, rotation, perspective, colour cast, blur, noise,
  JPEG) and the centre view of `standardise_img`. The service averages the exported model's
  outputs over two views of each image (export_garment.SERVING_VIEWS); training sees one.
- Network: the stem and MBConv blocks 0..F-1 keep their ImageNet weights (frozen, batch norm in
  eval mode); blocks F..15, the 1x1 head conv and its BN are trained; global average pool -> linear
  1280 -> D -> ReLU is the embedding (non-negative, for the index's uint8 codes) and a cosine
  classifier over the L2-normalised embedding gives the 10 categories of `shazzam.taxonomy`.
- Views (F = 8, --cache-views 0, the defaults): every step decodes and augments two fresh views
  of each of B images and runs them through the whole network (about 40 minutes on 2 cores; on a
  GPU, `--device cuda`, bf16). --cache-views N is garment_v3's faster recipe (there with F = 12):
  the frozen part runs once per view and its output is cached (the clean view of every image, N
  augmented views of each train image) in `<run-dir>/prefix-cache/`, which later runs with the
  same frozen part and views reuse; each step pairs two different cached views of each of B
  images, with a feature-map flip. Its few views are learnt by heart.
- Loss: cross-entropy with label smoothing on both views + supervised contrastive loss over the 2B
  unit vectors (class positives) + an instance term (NT-Xent: each view's positive is the other
  view of the same photo, which is what finding a re-photographed item needs) + a penalty on unit
  components above the uint8 code range.
- AdamW, cosine schedule with a warm-up, fixed seeds, 10 epochs. The committed model trains on
  train + validation and keeps the last epoch (the epoch count was chosen by garment_v2's
  validation run); `--no-fit-validation` trains on train alone and keeps the epoch with the best
  validation precision@10 + accuracy (validation queries against train, L1 on L2-normalised
  embeddings). The test split is never trained on or chosen by.
- `--ccp ROOT` adds the garments of CCP photos 0001-0700 (street photos of people), cut out by
  their masks' boxes (`shazzam.ccp.CCP.garment_crops`); `--init-from CHECKPOINT` starts from an
  earlier run instead of the ImageNet weights (a second stage). Neither is in the committed
  model's recipe; the model card has what they gave.
- Unreadable images are refused, counted in the log, and training carries on without them.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BACKBONES, MEAN, STD, add_export_arguments, autocast, load_backbone, log, package_versions, run, warmup_cosine  # noqa: E402

import shazzam.images  # noqa: E402
import shazzam.rephotograph  # noqa: E402
from shazzam.images import ImageError, centre_view, load_image, model_input, standardise_img, to_model_input  # noqa: E402
from shazzam.rephotograph import phone_photo, rephotograph  # noqa: E402
from shazzam.taxonomy import CATEGORIES  # noqa: E402

SPLITS = ("train", "validation", "test")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
SEED = 20261128
CODE_MAX = 0.25  # unit components above this clip in the index's uint8 codes (shazzam.distance)
# the code every cached view goes through (decoding, preprocessing, augmentation)
VIEW_CODE_FINGERPRINT = hashlib.sha256(
    "".join(inspect.getsource(module) for module in (shazzam.images, shazzam.rephotograph)).encode()).hexdigest()



def list_split(data: Path, split: str) -> list[tuple[Path, int]]:
    """(path, category index) of every image in one split; the folder name is the category (the
    images of folders the taxonomy does not name are left out, counted in the log)."""
    items, ignored = [], {}
    for folder in sorted((data / split).iterdir()):
        if not folder.is_dir():
            continue
        images = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        if folder.name in CATEGORIES:
            items += [(p, CATEGORIES.index(folder.name)) for p in images]
        else:
            ignored[folder.name] = len(images)
    if ignored:
        log(f"{split}: ignored {sum(ignored.values())} images in folders not in the taxonomy: {', '.join(ignored)}")
    return items


def street_garments(ccp_root: Path, photos: range, folder: Path) -> list[tuple[Path, int]]:
    """(path, category index) of the garment crops of these CCP photos (shazzam.ccp.CCP.garment_crops),
    cut once into `folder` as JPEG (category folders, as the data set's)."""
    from shazzam.ccp import CCP

    what = f"{ccp_root.resolve()} {photos.start}-{photos.stop - 1}"
    done = folder / "complete"
    if not done.is_file() or done.read_text() != what:
        shutil.rmtree(folder, ignore_errors=True)
        for number, category, crop in CCP(ccp_root).garment_crops(photos):
            (folder / category).mkdir(parents=True, exist_ok=True)
            crop.save(folder / category / f"{number:04d}.jpg", quality=95)
        folder.mkdir(parents=True, exist_ok=True)
        done.write_text(what)
    items = list_split(folder.parent, folder.name)
    log(f"street garments: {len(items)} crops of CCP photos {photos.start:04d}-{photos.stop - 1:04d} from {ccp_root}")
    return items


def photo_range(text: str) -> range:
    """FIRST-LAST as the range of those CCP photo numbers."""
    first, last = (int(n) for n in text.split("-"))
    return range(first, last + 1)


def ccp_photos(text: str) -> str:
    """FIRST-LAST, CCP photo numbers within the training photos (the held-out ones are refused)."""
    from shazzam.ccp import training_photos

    try:
        photos = training_photos(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return f"{photos.start}-{photos.stop - 1}"


def readable(items: list[tuple[Path, int]], split: str) -> list[tuple[Path, int]]:
    kept, refused = [], []
    for path, label in items:
        try:
            load_image(path.read_bytes())
            kept.append((path, label))
        except (ImageError, OSError) as exc:
            refused.append(f"{path.name}: {exc}")
    if refused:
        log(f"{split}: refused {len(refused)} unreadable image(s), training without them: {refused[:5]}")
    return kept


def check_batch(fitted: int, batch: int) -> None:
    """Refuse a run with fewer fitted images than --batch: an epoch drops its last, incomplete
    batch, so no step would run and the untrained network would be saved as if trained."""
    if fitted < batch:
        raise SystemExit(f"{fitted} fitted image(s), fewer than --batch {batch}: no training step would run "
                         f"(a smaller --batch, or more images)")


# ------------------------------------------------------------------------------------------- model



class GarmentNet(nn.Module):
    """Raw RGB NHWC [N, 224, 224, 3] -> (embedding [N, D] >= 0, unit embedding, class logits)."""

    def __init__(self, backbone: nn.Module, dim: int, frozen_blocks: int, classes: int = len(CATEGORIES)):
        super().__init__()
        self.stem, self.bn0, self.act = backbone._conv_stem, backbone._bn0, backbone._swish
        self.blocks = nn.ModuleList(backbone._blocks)
        self.conv_head, self.bn1 = backbone._conv_head, backbone._bn1
        self.project = nn.Linear(1280, dim)
        self.classifier = nn.Linear(dim, classes)
        self.scale = nn.Parameter(torch.tensor(16.0))
        self.frozen_blocks = frozen_blocks
        self.frozen = [self.stem, self.bn0, *self.blocks[:frozen_blocks]]
        for module in self.frozen:
            for p in module.parameters():
                p.requires_grad_(False)
        nn.init.xavier_uniform_(self.project.weight)
        nn.init.constant_(self.project.bias, 0.01)

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.frozen:  # frozen batch norms keep their ImageNet statistics
            module.eval()
        return self

    def prefix(self, x_nhwc: torch.Tensor) -> torch.Tensor:
        """The frozen part: raw RGB NHWC -> the feature map after block frozen_blocks - 1."""
        x = ((x_nhwc - MEAN) * (1.0 / STD)).permute(0, 3, 1, 2)
        x = self.act(self.bn0(self.stem(x)))
        for block in self.blocks[: self.frozen_blocks]:
            x = block(x)
        return x

    def forward(self, x_nhwc: torch.Tensor):
        return self.suffix(self.prefix(x_nhwc))

    def suffix(self, x: torch.Tensor):
        for block in self.blocks[self.frozen_blocks :]:
            x = block(x)
        x = self.act(self.bn1(self.conv_head(x))).mean(dim=(2, 3))
        embedding = F.relu(self.project(x))
        unit = embedding / torch.sqrt(torch.sum(embedding * embedding, dim=1, keepdim=True) + 1e-12)
        weight = F.normalize(self.classifier.weight, dim=1)
        return embedding, unit, self.scale * unit @ weight.t() + self.classifier.bias


def build_model(dim: int, frozen_blocks: int, backbone: str = "lite0") -> GarmentNet:
    torch.manual_seed(SEED)
    return GarmentNet(load_backbone(backbone), dim, frozen_blocks)


# -------------------------------------------------------------------------------------------- data


class Views(torch.utils.data.Dataset):
    """Two phone-photo views of one training image, seeded by (seed, epoch, index)."""

    def __init__(self, items, seed: int, rephotograph_share: float):
        self.items, self.seed, self.epoch = items, seed, 0
        self.rephotograph_share = rephotograph_share

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        path, label = self.items[index]
        image = load_image(path.read_bytes())
        rng = np.random.default_rng([self.seed, self.epoch, index])
        views = [model_input(self.view(image, rng))[0].astype(np.uint8) for _ in range(2)]  # integral: lossless
        return torch.from_numpy(np.stack(views)), label, index


    def view(self, image, rng):
        """A phone-photo crop of the garment, or (a share of the time) the whole picture
        re-photographed: on a background, in perspective, through a phone's JPEG."""
        if rng.random() < self.rephotograph_share:
            return centre_view(standardise_img(rephotograph(image, rng)))
        return phone_photo(image, rng)


class Serving(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        path, label = self.items[index]
        return torch.from_numpy(to_model_input(load_image(path.read_bytes()))[0].astype(np.uint8)), label


# ---------------------------------------------------------------------------------------- training


def supcon(unit: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out); positives share `labels`."""
    n = len(unit)
    eye = torch.eye(n, dtype=torch.bool, device=unit.device)
    similarity = (unit @ unit.t() / temperature).masked_fill(eye, -1e9)
    log_prob = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~eye
    counts = positives.sum(1).clamp(min=1)
    return -((log_prob * positives).sum(1) / counts).mean()


def objective(unit: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, args,
              teacher_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, list[float]]:
    """The training loss over 2B samples (the two views of each image adjacent) and its terms; with
    a teacher's logits, a distillation term too (Hinton et al. 2015: KL between the softened
    distributions, times T squared so that its gradients keep their scale)."""
    ce = F.cross_entropy(logits, y, label_smoothing=0.1)
    sc = supcon(unit, y, args.temperature)
    instance = supcon(unit, torch.arange(len(y), device=unit.device) // 2, args.temperature)
    clip = F.relu(unit - (CODE_MAX - 0.05)).pow(2).sum(1).mean() * 100
    loss = ce + args.supcon_weight * sc + args.instance_weight * instance + clip
    terms = [ce.item(), sc.item(), instance.item(), clip.item()]
    if teacher_logits is not None:
        t = args.distill_temperature
        distill = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                           log_target=True, reduction="batchmean") * t * t
        loss = loss + args.distill_weight * distill
        terms.append(distill.item())
    return loss, terms


def embed(model: GarmentNet, loader, device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    model.eval()
    embeddings, logits, labels = [], [], []
    with torch.inference_mode(), autocast(device):
        for x, y in loader:
            embedding, _, logit = model(x.to(device, non_blocking=True).float())
            embeddings.append(embedding.float().cpu().numpy())
            logits.append(logit.float().cpu().numpy())
            labels.append(y.numpy())
    return np.concatenate(embeddings), np.concatenate(logits), np.concatenate(labels)



def precision_at_10(queries, query_labels, gallery, gallery_labels) -> float:
    """Share of same-category items among each query's 10 nearest (L1, L2-normalised), averaged."""
    def unit(v):
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    q, g = torch.from_numpy(unit(queries)), torch.from_numpy(unit(gallery))
    hits = []
    for start in range(0, len(q), 256):
        distances = torch.cdist(q[start : start + 256], g, p=1)
        nearest = torch.topk(distances, 10, largest=False).indices.numpy()
        hits.append(gallery_labels[nearest] == query_labels[start : start + 256, None])
    return float(np.concatenate(hits).mean())


def score(model, loaders, device, query: str, gallery: tuple[str, ...]) -> dict:
    out = {s: embed(model, loaders[s], device) for s in {query, *gallery}}
    g = np.concatenate([out[s][0] for s in gallery])
    gl = np.concatenate([out[s][2] for s in gallery])
    q, logits, ql = out[query]
    units = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return {
        "precision_at_10": precision_at_10(q, ql, g, gl),
        "accuracy": float(np.mean(logits.argmax(1) == ql)),
        "max_component": float(units.max()),
        "clipped_fraction": float(np.mean(units > CODE_MAX)),
    }


class Fit:
    """What both recipes share: AdamW over the trained blocks and the heads, the warm-up cosine
    schedule, one record per epoch, and keeping the epoch with the best validation precision@10 +
    accuracy; `save` writes the run's checkpoint and summary."""

    def __init__(self, model: GarmentNet, args, steps_per_epoch: int):
        head = [model.project.weight, model.project.bias, model.classifier.weight, model.classifier.bias, model.scale]
        head_ids = {id(p) for p in head}
        body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
        self.optimiser = torch.optim.AdamW([{"params": body, "lr": args.lr_body}, {"params": head, "lr": args.lr_head}],
                                           weight_decay=args.weight_decay)
        self.bases = [g["lr"] for g in self.optimiser.param_groups]
        self.model, self.args, self.steps_per_epoch = model, args, steps_per_epoch
        self.total = args.epochs * steps_per_epoch
        self.step, self.best, self.history = 0, {"criterion": -1.0}, []

    def update(self, loss: torch.Tensor) -> None:
        factor = warmup_cosine(self.step, self.steps_per_epoch, self.total)  # one epoch of warm-up
        for group, base in zip(self.optimiser.param_groups, self.bases):
            group["lr"] = base * factor
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        self.step += 1

    def end_epoch(self, epoch: int, started: float, sums: np.ndarray, score_validation) -> None:
        losses = dict(zip(("ce", "supcon", "instance", "clip", "distill"), (sums / self.steps_per_epoch).round(4).tolist()))
        record = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - started, 1), **losses}
        if epoch + 1 >= self.args.score_from or epoch + 1 == self.args.epochs:
            record.update(score_validation())
            criterion = record["precision_at_10"] + record["accuracy"]
            if criterion > self.best["criterion"]:
                self.best = {"criterion": criterion, "epoch": epoch + 1,
                             "state": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}}
        self.history.append(record)
        log(json.dumps(record))

    def restore_best(self) -> None:
        self.model.load_state_dict(self.best["state"])

    def save(self, test: dict, **facts) -> dict:
        summary = {"best_epoch": self.best["epoch"], "test": test, "history": self.history, **facts,
                   "torch": torch.__version__, "packages": package_versions(), "args": vars(self.args)}
        run_dir = Path(self.args.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"state": self.best["state"], "dim": self.args.dim, "frozen_blocks": self.args.frozen_blocks,
                    "backbone": self.args.backbone, "summary": summary}, run_dir / "checkpoint.pt")
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def fitted_splits(args) -> tuple[str, ...]:
    """The splits trained on. With validation among them no epoch can be chosen by it: the last is kept."""
    if not args.fit_validation:
        return ("train",)
    args.score_from = args.epochs
    log("training on train + validation for a fixed number of epochs; the validation figures are not held out")
    return ("train", "validation")


def load_teacher(manifest: str, student: GarmentNet) -> GarmentNet:
    """An exported garment model, its weights read back from its .tflite (soup_embedder), as a
    frozen network whose frozen part is the student's: both keep the ImageNet stem and blocks, so
    the teacher runs on the student's prefix output and costs only its trained blocks."""
    import copy

    from soup_embedder import ingredient

    state, _summary, shape = ingredient(Path(manifest))
    if shape["frozen_blocks"] != student.frozen_blocks:
        raise SystemExit(f"{manifest} froze {shape['frozen_blocks']} blocks, the student {student.frozen_blocks}: "
                         "their frozen parts must be the same")
    teacher = copy.deepcopy(student)
    teacher.project = nn.Linear(1280, shape["dim"])
    teacher.classifier = nn.Linear(shape["dim"], len(CATEGORIES))
    teacher.load_state_dict(state)
    for p in teacher.parameters():
        p.requires_grad_(False)
    log(f"distilling from {manifest}")
    return teacher.eval()


def train(args) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    data = Path(args.data)
    items = {s: readable(list_split(data, s), s) for s in SPLITS}
    model = build_model(args.dim, args.frozen_blocks, args.backbone)
    if args.init_from:  # a second stage: start from an earlier run's weights
        model.load_state_dict(torch.load(args.init_from, weights_only=False)["state"])
        log(f"starting from {args.init_from}")
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    fitted = [item for split in fitted_splits(args) for item in items[split]]
    if args.ccp:
        fitted += street_garments(Path(args.ccp), photo_range(args.ccp_photos), Path(args.run_dir) / "ccp-garments")
    check_batch(len(fitted), args.batch)
    views = Views(fitted, args.seed, args.rephotograph_share)
    generator = torch.Generator().manual_seed(args.seed)
    train_loader = torch.utils.data.DataLoader(
        views, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=args.workers,
        generator=generator, persistent_workers=False, pin_memory=device.type == "cuda")
    loaders = {s: torch.utils.data.DataLoader(Serving(items[s]), batch_size=128, num_workers=args.workers)
               for s in ("train", "validation", "test")}

    teacher = load_teacher(args.teacher, model).to(device) if args.teacher else None
    fit = Fit(model, args, len(train_loader))
    started = time.perf_counter()
    for epoch in range(args.epochs):
        views.epoch = epoch
        model.train()
        t0 = time.perf_counter()
        sums = np.zeros(5 if teacher is not None else 4)
        for x, y, _ in train_loader:
            x = x.to(device, non_blocking=True).flatten(0, 1).float()  # [B, 2, H, W, 3] -> [2B, ...], views adjacent
            y = y.to(device).repeat_interleave(2)
            teacher_logits = None
            with autocast(device):
                prefix = model.prefix(x)  # frozen: no gradient, shared with the teacher
                _, unit, logits = model.suffix(prefix)
                if teacher is not None:
                    with torch.no_grad():
                        teacher_logits = teacher.suffix(prefix)[2].float()
            unit, logits = unit.float(), logits.float()
            loss, terms = objective(unit, logits, y, args, teacher_logits)
            fit.update(loss)
            sums += terms
        fit.end_epoch(epoch, t0, sums, lambda: score(model, loaders, device, "validation", ("train",)))
    train_seconds = time.perf_counter() - started
    fit.restore_best()
    test = score(model, loaders, device, "test", ("train", "validation"))
    log(f"best epoch {fit.best['epoch']}; test {test}; {train_seconds:.0f} s")
    return fit.save(test, seconds=round(train_seconds), device=str(device),
                    images={s: len(v) for s, v in items.items()}, fitted_images=len(fitted))


# ------------------------------------------------------------------------- cached frozen part (CPU)


class PrefixInputs(torch.utils.data.Dataset):
    """The model input of `view(index, image)` for each item (decoding and augmenting in workers)."""

    def __init__(self, items, view):
        self.items, self.view = items, view

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        image = load_image(self.items[index][0].read_bytes())
        return torch.from_numpy(model_input(self.view(index, image))[0].astype(np.uint8))  # integral: lossless


def cache_prefix(model: GarmentNet, items, view, path: Path, workers: int, what: str = "") -> np.ndarray:
    """fp16 feature maps of the frozen part for `view(index, image)` of every item, kept in `path`
    so that another run with the same frozen part, views and data skips the slowest step. The file
    beside it lists the images (with each file's size and modification time, so that an image
    changed in place is seen too) and fingerprints the code that makes the views, so that a change to
    the images, the augmentation or the preprocessing remakes the cache instead of reusing stale views."""
    names = "\n".join([VIEW_CODE_FINGERPRINT, *(f"{p}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}" for p, _ in items)])
    if path.exists() and path.with_suffix(".txt").read_text() == names:
        log(f"{what}: cached in {path}")
        return np.load(path)
    chunks, done = [], 0
    started = time.perf_counter()
    loader = torch.utils.data.DataLoader(PrefixInputs(items, view), batch_size=32, num_workers=workers)
    with torch.inference_mode():
        for x in loader:
            chunks.append(model.prefix(x.float()).to(torch.float16).numpy())
            done += len(x)
            if len(chunks) % 20 == 1:
                log(f"{what}: {done}/{len(items)} ({(time.perf_counter() - started) / done * 1000:.0f} ms/img)")
    features = np.concatenate(chunks)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, features)
    path.with_suffix(".txt").write_text(names)
    return features


def train_cached(args) -> dict:
    """The CPU recipe: the frozen part (stem + blocks 0..F-1) is run once per view and cached
    (view 0 = the serving input of every image; views 1..N = augmented views of each train image,
    `Views.view`); each step pairs two different cached views of each of B images (a feature-map
    flip p 0.5 on top) and trains the rest with the same losses as the end-to-end recipe."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    data = Path(args.data)
    items = {s: readable(list_split(data, s), s) for s in SPLITS}
    model = build_model(args.dim, args.frozen_blocks, args.backbone).eval()
    fitted = fitted_splits(args)
    fit_items = [item for s in fitted for item in items[s]]
    check_batch(len(fit_items), args.batch)
    augment = Views(fit_items, args.seed, args.rephotograph_share)
    # the file names carry everything a view depends on besides the images (listed beside each file)
    # Lite0's and Lite1's prefixes have the same shape at some depths: the backbone names the cache too.
    cache = Path(args.run_dir) / "prefix-cache" / f"{args.backbone}-frozen{args.frozen_blocks}"
    serving = {s: cache_prefix(model, items[s], lambda i, im: centre_view(standardise_img(im)), cache / f"{s}-serving.npy",
                               args.workers, what=f"{s} view 0") for s in SPLITS}
    views = [np.concatenate([serving[s] for s in fitted])]
    for k in range(1, args.cache_views + 1):
        def view(index, image, k=k):
            return augment.view(image, np.random.default_rng([args.seed, k, index]))
        path = cache / f"{'-'.join(fitted)}-seed{args.seed}-rephotograph{args.rephotograph_share}-view{k}.npy"
        views.append(cache_prefix(model, fit_items, view, path, args.workers, what=f"{'+'.join(fitted)} view {k}"))
    labels = {s: np.array([label for _, label in items[s]]) for s in SPLITS}

    n = len(fit_items)
    steps_per_epoch = n // args.batch
    fit = Fit(model, args, steps_per_epoch)

    def embed_cached(features):
        model.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(features), 256):
                embedding, _, logits = model.suffix(torch.from_numpy(features[start : start + 256].astype(np.float32)))
                out.append((embedding.numpy(), logits.numpy()))
        return np.concatenate([e for e, _ in out]), np.concatenate([lg for _, lg in out])

    def score(query, gallery):
        q, logits = embed_cached(serving[query])
        g = np.concatenate([embed_cached(serving[s])[0] for s in gallery])
        gl = np.concatenate([labels[s] for s in gallery])
        units = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        return {"precision_at_10": precision_at_10(q, labels[query], g, gl),
                "accuracy": float(np.mean(logits.argmax(1) == labels[query])),
                "max_component": float(units.max()), "clipped_fraction": float(np.mean(units > CODE_MAX))}

    started = time.perf_counter()
    train_labels = torch.from_numpy(np.concatenate([labels[s] for s in fitted]))
    for epoch in range(args.epochs):
        model.train()
        t0 = time.perf_counter()
        sums = np.zeros(4)
        order = rng.permutation(n)
        for b in range(steps_per_epoch):
            index = order[b * args.batch : (b + 1) * args.batch]
            first = rng.integers(0, len(views), len(index))
            second = (first + rng.integers(1, len(views), len(index))) % len(views)
            pairs = np.stack([np.stack([views[a][i], views[c][i]]) for a, c, i in zip(first, second, index)])
            x = torch.from_numpy(pairs.astype(np.float32)).flatten(0, 1)
            flips = torch.from_numpy(rng.random(len(x)) < 0.5)
            x[flips] = x[flips].flip(-1)
            y = train_labels[index].repeat_interleave(2)
            _, unit, logits = model.suffix(x)
            loss, terms = objective(unit, logits, y, args)
            fit.update(loss)
            sums += terms
        fit.end_epoch(epoch, t0, sums, lambda: score("validation", ("train",)))
    fit.restore_best()
    test = score("test", ("train", "validation"))
    log(f"best epoch {fit.best['epoch']}; test {test}")
    return fit.save(test, seconds=round(time.perf_counter() - started), device="cpu",
                    images={s: len(v) for s, v in items.items()})


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/clothing-dataset-small")
    parser.add_argument("--run-dir", default="build/garment_v5")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--backbone", choices=BACKBONES, default="lite0",
                        help="EfficientNet-Lite size (lite1 has 21 blocks: --frozen-blocks 11 freezes what 8 does in lite0)")
    parser.add_argument("--frozen-blocks", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--score-from", type=int, default=5, help="score validation from this epoch on")
    parser.add_argument("--batch", type=int, default=48, help="images per batch (two views each)")
    parser.add_argument("--lr-body", type=float, default=3e-4)
    parser.add_argument("--lr-head", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--supcon-weight", type=float, default=1.0)
    parser.add_argument("--instance-weight", type=float, default=0.5)
    parser.add_argument("--rephotograph-share", type=float, default=0.3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--cache-views", type=int, default=0,
                        help="0: augment every step afresh, end to end (the committed model's recipe); N: cache the "
                             "frozen part's output for N augmented views of each image and train on those "
                             "(garment_v3's, twice as fast, learnt by heart)")
    parser.add_argument("--fit-validation", action=argparse.BooleanOptionalAction, default=True,
                        help="train on train + validation for --epochs, keeping the last epoch (--no-fit-validation: "
                             "train on train, and keep the epoch with the best validation figures)")
    parser.add_argument("--ccp", default=None,
                        help="CCP root: also train on the garment crops of its photos --ccp-photos (street photos of "
                             "people; the fresh-views recipe only)")
    parser.add_argument("--init-from", default=None,
                        help="an earlier run's checkpoint.pt to start from instead of the ImageNet weights "
                             "(the same --dim and --frozen-blocks; fresh-views recipe only)")
    parser.add_argument("--ccp-photos", type=ccp_photos, default="1-700",
                        help="the CCP photos --ccp trains on, FIRST-LAST within 1-700 (default all of them)")
    parser.add_argument("--teacher", default=None,
                        help="an exported garment model's manifest (its weights read back from its .tflite) whose "
                             "class probabilities the model also learns (knowledge distillation; fresh-views recipe only)")
    parser.add_argument("--distill-weight", type=float, default=1.0)
    parser.add_argument("--distill-temperature", type=float, default=2.0)
    add_export_arguments(parser, "garment_v5")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if (args.ccp or args.init_from or args.teacher) and args.cache_views:
        raise SystemExit("--ccp, --init-from and --teacher need the fresh-views recipe (--cache-views 0)")
    return run(args, train_cached if args.cache_views else train, exporter="export_garment")


if __name__ == "__main__":
    raise SystemExit(main())
