"""Garment detection: every garment in a photo, as a box, a detector class and a score.

`load_detector()` answers the `GarmentDetector` of the model folder's detector_v2 (a LiteRT
segmentation model: per-pixel class probabilities at stride 4, see its manifest), or the v0
`WholeImageDetector` (one box, the whole photo) when that model is not there. $SHAZZAM_DETECTOR
names another manifest in the model folder, or the path of one; `whole-image` forces v0.

How boxes are made, the same way shazzam.ccp makes the ground truth from CCP's masks
(shazzam.regions): the model's probabilities, averaged with those of the mirrored photo when the
manifest says `mirror` and upsampled bilinearly by `upsample` (box edges may fall between the
model's cells; the end-to-end training recipe scored its upsampled logits against the
full-resolution masks, the cached one scores the cell centres); their argmax label map (cells outside the
letterboxed photo count as background); per class, its connected pieces smaller than
`min_area_fraction` of the photo are dropped as specks, and so are pieces smaller than
`min_share_of_largest` of the class's largest (stray blobs that would stretch the box); the box is
the extent of the rest, mapped back to the photo's pixels through the letterbox and clipped to it. The score is the class's mean probability over the
cells it won (how sure the model is of the pixels it calls that garment); boxes scoring under
`score_threshold` are dropped. One box per class: two shoes are one footwear box. Last, a photo
whose largest garment covers much of it and holds most of the garment cells is a product shot
(`product_box_fraction`, `product_cell_share`): that garment alone is returned.

Those are the boxes the service shows. `candidate_detections` is the model's whole ranked list of
guesses, which the detector's mAP is measured on (as detectors' mAP is, over every scored box):
every class's box from the argmax map whatever its score and without the product-shot rule, then,
for each of `hypothesis_levels`, each class's box from the cells where its own probability reaches
that level (its second guesses: a skirt the argmax calls a dress, a top half hidden under a coat),
scored by that probability's mean over them times `hypothesis_weight`, unless the class already
has a box overlapping it by HYPOTHESIS_OVERLAP or more.

Imports numpy, Pillow, ai_edge_litert and the standard library only: it runs in the Lambda layer.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from shazzam.detector_input import INPUT_HEIGHT, INPUT_WIDTH, Letterbox, detector_input, letterbox_geometry
from shazzam.images import Box
from shazzam.regions import iou, label_map_regions
from shazzam.taxonomy import DETECTOR_CLASSES
from shazzam.vision import ModelError, TFLiteModel, default_model_dir, read_manifest

log = logging.getLogger(__name__)

DEFAULT_DETECTOR = "detector_v2"
DETECTOR_ENV = "SHAZZAM_DETECTOR"
WHOLE_IMAGE = "whole-image"
CLASSES = ("background", *DETECTOR_CLASSES)
# Used when the manifest's "postprocess" does not say. A speck here is a piece under 0.04% of
# the photo: 2.5 cells of the 6,144 a 2:3 photo fills at stride 4 (a sunglasses lens is 3-4).
DEFAULT_MIN_AREA_FRACTION = 0.0004
# Mean probability over the class's cells; a class that wins cells only narrowly scores ~0.3.
DEFAULT_SCORE_THRESHOLD = 0.35
# A second guess whose box overlaps a box of its class already listed by this IoU is that box again.
HYPOTHESIS_OVERLAP = 0.7


@dataclass(frozen=True)
class Detection:
    box: Box
    label: str | None  # a detector class (shazzam.taxonomy.DETECTOR_CLASSES), None when unknown
    score: float
    # Which of the box's pixels are the garment: bool, (box height, box width). None from v0.
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


class WholeImageDetector:
    """Treats the image as one garment: right for product photos, a stand-in for outfit photos."""

    name = "whole-image-v0"

    def detect(self, image: Image.Image, *, masks: bool = False) -> list[Detection]:
        """One box, the whole image; it has no mask to give, whatever `masks` asks."""
        return [Detection(box=Box.whole(image), label=None, score=1.0)]


@dataclass(frozen=True)
class Postprocess:
    min_area_fraction: float = DEFAULT_MIN_AREA_FRACTION
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    min_share_of_largest: float = 0.0
    stride: int = 4  # canvas pixels per cell of the model's output
    # Cells per output cell along each axis before the argmax: a finer grid for the box edges
    # (a pair of glasses is 5 x 2 cells at stride 4). Must divide `stride`.
    upsample: int = 1
    mirror: bool = False  # average the probabilities with those of the mirrored photo
    # A product shot: when the largest garment's box covers at least `product_box_fraction` of
    # the photo and its cells are at least `product_cell_share` of all the kept garments' cells,
    # that garment alone is returned (the rest are the model's second guesses about the same
    # garment or specks of the backdrop). 0 turns the rule off. In 9 of 10 full-length photos of
    # people (CCP), the largest garment's box covers under a quarter of the photo.
    product_box_fraction: float = 0.0
    product_cell_share: float = 1.0
    # candidate_detections only: the probability levels that give each class's second guesses,
    # and the factor on their scores (below 1 ranks them after the argmax boxes of equal mean).
    hypothesis_levels: tuple[float, ...] = ()
    hypothesis_weight: float = 1.0

    def __post_init__(self):
        if self.upsample < 1 or self.stride % self.upsample:
            raise ValueError(f"postprocess upsample {self.upsample} does not divide the stride {self.stride}")
        # Written so that NaN fails too (every comparison with it is false).
        if not (0 <= self.score_threshold <= 1 and 0 <= self.min_area_fraction < 1 and 0 <= self.min_share_of_largest <= 1):
            raise ValueError("postprocess score_threshold and min_share_of_largest are fractions (0..1), min_area_fraction one below 1")
        if not (0 <= self.product_box_fraction <= 1 and 0 <= self.product_cell_share <= 1):
            raise ValueError("postprocess product_box_fraction and product_cell_share are fractions (0..1)")
        object.__setattr__(self, "hypothesis_levels", tuple(float(level) for level in self.hypothesis_levels))
        if not all(0 < level < 1 for level in self.hypothesis_levels) or not 0 < self.hypothesis_weight <= 1:
            raise ValueError("postprocess hypothesis_levels are probabilities (0..1, exclusive) and hypothesis_weight is in (0, 1]")


def upsample_bilinear(probabilities: np.ndarray, factor: int) -> np.ndarray:
    """[rows, cols, channels] -> [rows * factor, cols * factor, channels], bilinear with pixel
    centres aligned (torch's interpolate(..., mode="bilinear", align_corners=False)), as two
    small matrix products."""
    if factor == 1:
        return probabilities
    rows, cols, channels = probabilities.shape
    vertical, horizontal = _interpolation_matrix(rows, factor), _interpolation_matrix(cols, factor)
    tall = (vertical @ probabilities.reshape(rows, cols * channels)).reshape(rows * factor, cols, channels)
    return np.matmul(horizontal, tall)


def _interpolation_matrix(size: int, factor: int) -> np.ndarray:
    """[size * factor, size]: each output sample's weights on the two input samples around it."""
    source = np.clip((np.arange(size * factor) + 0.5) / factor - 0.5, 0, size - 1)
    below = np.floor(source).astype(int)
    above = np.minimum(below + 1, size - 1)
    weight = (source - below).astype(np.float32)
    matrix = np.zeros((size * factor, size), np.float32)
    np.add.at(matrix, (np.arange(size * factor), below), 1 - weight)
    np.add.at(matrix, (np.arange(size * factor), above), weight)
    return matrix


def detections_from_probabilities(
    probabilities: np.ndarray,
    geometry: Letterbox,
    settings: Postprocess = Postprocess(),
    classes: tuple[str, ...] = CLASSES,
    masks: bool = True,
) -> list[Detection]:
    """The garments of one photo from the model's output: `probabilities` [rows, cols, classes]
    (softmax, stride `settings.stride` on the letterboxed canvas), `geometry` from detector_input.
    Best score first."""
    grid = _Grid(probabilities, geometry, settings, classes)
    found = grid.argmax_boxes(masks, min_score=settings.score_threshold)
    if len(found) > 1 and settings.product_box_fraction > 0:
        cells, largest = max(found, key=lambda pair: pair[0])
        box_fraction = largest.box.area / (geometry.width * geometry.height)
        if box_fraction >= settings.product_box_fraction and cells >= settings.product_cell_share * sum(c for c, _ in found):
            return [largest]
    return sorted((detection for _, detection in found), key=lambda detection: -detection.score)


def candidate_detections(
    probabilities: np.ndarray,
    geometry: Letterbox,
    settings: Postprocess = Postprocess(),
    classes: tuple[str, ...] = CLASSES,
) -> list[Detection]:
    """Every box the model's output supports, best score first, without masks (see the module's
    docstring): what the detector's mAP is measured on. The service shows
    detections_from_probabilities, the confident top of this list."""
    grid = _Grid(probabilities, geometry, settings, classes)
    listed = [detection for _, detection in grid.argmax_boxes(masks=False)]
    guesses = []
    for level in settings.hypothesis_levels:
        for channel in range(1, len(classes)):
            for _, detection in grid.boxes(np.where(grid.probabilities[..., channel] >= level, channel, 0), [channel], masks=False):
                guesses.append(replace(detection, score=detection.score * settings.hypothesis_weight))
    for guess in sorted(guesses, key=lambda detection: -detection.score):
        if all(d.label != guess.label or iou(d.box.as_list(), guess.box.as_list()) < HYPOTHESIS_OVERLAP for d in listed):
            listed.append(guess)
    return sorted(listed, key=lambda detection: -detection.score)


class _Grid:
    """The model's output for one photo, upsampled, with what turning cells into photo boxes needs."""

    def __init__(self, probabilities: np.ndarray, geometry: Letterbox, settings: Postprocess, classes: tuple[str, ...]):
        probabilities = np.asarray(probabilities, dtype=np.float32)
        if probabilities.ndim == 4:
            probabilities = probabilities[0]
        channels = probabilities.shape[-1]
        if channels != len(classes):
            raise ValueError(f"{channels} output channels, expected {len(classes)} ({', '.join(classes)})")
        self.probabilities = upsample_bilinear(probabilities, settings.upsample)
        self.geometry, self.settings, self.classes = geometry, settings, classes
        rows, cols, _ = self.probabilities.shape
        self.stride = settings.stride // settings.upsample
        # The photo's part of the canvas, in pixels and in cells (a cell belongs if its centre does).
        _, (content_w, content_h) = letterbox_geometry(geometry.width, geometry.height)
        self.x0, self.y0 = geometry.pad_x, geometry.pad_y
        self.x1, self.y1 = self.x0 + content_w, self.y0 + content_h
        centres_x = np.arange(cols) * self.stride + self.stride / 2
        centres_y = np.arange(rows) * self.stride + self.stride / 2
        self.inside = ((centres_y >= self.y0) & (centres_y < self.y1))[:, None] & ((centres_x >= self.x0) & (centres_x < self.x1))[None, :]
        self.min_cells = max(1.0, settings.min_area_fraction * content_w * content_h / self.stride**2)

    def argmax_boxes(self, masks: bool, min_score: float = 0.0) -> list[tuple[int, Detection]]:
        """Each class's box from the argmax label map: (its cells, the detection)."""
        return self.boxes(self.probabilities.argmax(axis=-1), range(1, len(self.classes)), masks, min_score)

    def boxes(self, labels: np.ndarray, channels, masks: bool, min_score: float = 0.0) -> list[tuple[int, Detection]]:
        """Each of `channels`' box in the label map `labels` (cells outside the letterboxed photo
        count as background), scored by the channel's mean probability over its cells; those
        scoring under `min_score` are left out before their masks are cut."""
        labels = np.where(self.inside, labels, 0)
        geometry, stride = self.geometry, self.stride
        found = []
        for region in label_map_regions(labels, channels, self.min_cells, self.settings.min_share_of_largest):
            score = float(self.probabilities[..., region.label][region.mask].mean())
            if score < min_score:
                continue
            # The cells' extent on the canvas, within the photo's part of it, back to the photo's pixels.
            left, top = geometry.to_original(max(region.left * stride, self.x0), max(region.top * stride, self.y0))
            right, bottom = geometry.to_original(min(region.right * stride, self.x1), min(region.bottom * stride, self.y1))
            box = Box(
                max(0, int(np.floor(left + 1e-6))),
                max(0, int(np.floor(top + 1e-6))),
                min(geometry.width, int(np.ceil(right - 1e-6))),
                min(geometry.height, int(np.ceil(bottom - 1e-6))),
            )
            if box.right <= box.left or box.bottom <= box.top:
                continue
            mask = None
            if masks:
                # Each pixel of the box takes the cell its centre falls in.
                rows, cols = region.mask.shape
                cx = np.clip(((np.arange(box.left, box.right) + 0.5) * geometry.scale + self.x0) // stride, 0, cols - 1).astype(int)
                cy = np.clip(((np.arange(box.top, box.bottom) + 0.5) * geometry.scale + self.y0) // stride, 0, rows - 1).astype(int)
                mask = region.mask[np.ix_(cy, cx)]
            found.append((region.area, Detection(box=box, label=self.classes[region.label], score=score, mask=mask)))
        return found


class GarmentDetector:
    """detector_v2 and kin: a .tflite from a manifest (see the module's docstring)."""

    def __init__(self, model: TFLiteModel, manifest: dict):
        self.model = model
        self.manifest = manifest
        self.name: str = manifest.get("name", model.path.stem)
        self.sha256: str | None = manifest.get("sha256")
        output = manifest["outputs"]["probabilities"]
        self._index = int(output.get("index", 0))
        classes = tuple(output.get("classes") or CLASSES)
        if classes != CLASSES:
            raise ModelError(f"{model.path.name} classes {list(classes)} are not shazzam.taxonomy's {list(CLASSES)}")
        self.classes = classes
        shapes = model.output_shapes
        try:
            shape = shapes[self._index]
        except IndexError:
            raise ModelError(f"manifest output index {self._index} does not exist in {model.path.name} ({shapes})") from None
        if len(shape) != 4 or shape[-1] != len(classes):
            raise ModelError(f"{model.path.name} output {shape} is not [1, rows, cols, {len(classes)}]")
        if model.input_shape != (1, INPUT_HEIGHT, INPUT_WIDTH, 3):
            raise ModelError(f"{model.path.name} input {model.input_shape} is not [1, {INPUT_HEIGHT}, {INPUT_WIDTH}, 3]")
        stride = int(output.get("stride", INPUT_HEIGHT // shape[1]))
        if shape[1] * stride != INPUT_HEIGHT or shape[2] * stride != INPUT_WIDTH:
            raise ModelError(f"{model.path.name} output {shape} at stride {stride} does not cover the {INPUT_WIDTH}x{INPUT_HEIGHT} input")
        post = manifest.get("postprocess") or {}
        try:
            self.settings = Postprocess(
                min_area_fraction=float(post.get("min_area_fraction", DEFAULT_MIN_AREA_FRACTION)),
                score_threshold=float(post.get("score_threshold", DEFAULT_SCORE_THRESHOLD)),
                min_share_of_largest=float(post.get("min_share_of_largest", 0.0)),
                stride=stride,
                upsample=int(post.get("upsample", 1)),
                mirror=bool(post.get("mirror", False)),
                product_box_fraction=float(post.get("product_box_fraction", 0.0)),
                product_cell_share=float(post.get("product_cell_share", 1.0)),
                hypothesis_levels=tuple(post.get("hypothesis_levels", ())),
                hypothesis_weight=float(post.get("hypothesis_weight", 1.0)),
            )
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{model.path.name}: postprocess {exc}") from None

    @classmethod
    def from_manifest(cls, path: str | Path, *, num_threads: int | None = None, verify: bool = True) -> "GarmentDetector":
        """Load the manifest at `path` and the .tflite it names (beside it), checking its sha256."""
        manifest, model_path = read_manifest(path, what="detector", verify=verify)
        return cls(TFLiteModel(model_path, num_threads=num_threads), manifest)

    def probabilities(self, image: Image.Image) -> tuple[np.ndarray, Letterbox]:
        """The model's output for one upright RGB photo, [rows, cols, classes], and its letterbox."""
        batch, geometry = detector_input(image)
        probabilities = self.model.run(batch)[self._index][0]
        if self.settings.mirror:
            # The mirrored canvas's output, mirrored back: the same cells, seen the other way round.
            mirrored = self.model.run(np.ascontiguousarray(batch[:, :, ::-1]))[self._index][0][:, ::-1]
            probabilities = (probabilities + mirrored) / 2
        return probabilities, geometry

    def detect(self, image: Image.Image, *, masks: bool = True) -> list[Detection]:
        """Every garment found, best score first; [] when there is none."""
        probabilities, geometry = self.probabilities(image)
        return detections_from_probabilities(probabilities, geometry, self.settings, self.classes, masks=masks)

    def candidates(self, image: Image.Image) -> list[Detection]:
        """Every box the model supports, best score first (candidate_detections): for evaluation."""
        probabilities, geometry = self.probabilities(image)
        return candidate_detections(probabilities, geometry, self.settings, self.classes)


def detector_manifest_path(model_dir: str | Path | None = None) -> Path | None:
    """The manifest of the detector to run: $SHAZZAM_DETECTOR (a name in the model folder, or a
    path to a manifest), default detector_v2; None when told `whole-image`."""
    configured = os.environ.get(DETECTOR_ENV) or DEFAULT_DETECTOR
    if configured == WHOLE_IMAGE:
        return None
    if configured.endswith(".json") or os.sep in configured:
        return Path(configured)
    return (Path(model_dir) if model_dir else default_model_dir()) / f"{configured}.json"


def load_detector(model_dir: str | Path | None = None):
    """The detector the service runs, loaded once per process: the GarmentDetector of
    detector_manifest_path(), or the WholeImageDetector when that manifest or its model is absent.
    A model that is there but broken (checksum, shapes) raises ModelError rather than degrade, and
    so does a detector that $SHAZZAM_DETECTOR names but is not there (a typo must not go unseen)."""
    path = detector_manifest_path(model_dir)
    if path is not None and os.environ.get(DETECTOR_ENV) and not path.is_file():
        raise ModelError(f"{DETECTOR_ENV}={os.environ[DETECTOR_ENV]!r}: no detector manifest at {path} "
                         f"(name one in the model folder, a manifest path, or {WHOLE_IMAGE!r})")
    return _load(path)


@functools.cache
def _load(path: Path | None):
    if path is None:
        log.info("detector: %s (as %s says)", WholeImageDetector.name, DETECTOR_ENV)
        return WholeImageDetector()
    if not path.is_file() or not _model_file_of(path).is_file():
        log.info("detector: no model at %s; using %s, one box per photo", path, WholeImageDetector.name)
        return WholeImageDetector()
    detector = GarmentDetector.from_manifest(path)
    log.info("detector: %s from %s", detector.name, path)
    return detector


def _model_file_of(manifest: Path) -> Path:
    try:
        return manifest.parent / json.loads(manifest.read_text())["file"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"unreadable detector manifest {manifest}: {exc}") from exc
