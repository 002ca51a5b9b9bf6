"""`shazzam eval`: how good a garment model is, measured the way the service uses it.

Data: clothing-dataset-small's `{train,validation,test}/<class>/*.jpg`. The gallery is
train + validation, the queries are test. Every image goes through the service's code path
(`shazzam.images.load_image`, `GarmentModel.infer`), and retrieval is the index's own: the gallery
is coded as one shard (`shazzam.index.Shard.from_vectors`: L2-normalised, the shard's code step,
its uint8 codes and re-rank bits) and searched with `Shard.search_rows` (L1 over the codes, then
the re-rank), exactly as a search runs in a category shard. (With an index that has no
`from_vectors`, the format-2 path: `shazzam.distance.quantise` + `l1_topk_u8`.) The figures are
over the whole gallery, every category at once: the served search looks only in the shard of the classifier's category, where every result
shares the category, so there precision@k would just repeat the classifier's accuracy.

Definitions (a query's relevant items are the gallery items of its class; `rel_i` is 1 when the
i-th nearest gallery item is relevant, else 0):

- precision@k: the mean over queries of (1/k) * sum_{i<=k} rel_i;
- mAP@10: the mean over queries of AP@10 = (1 / min(10, R)) * sum_{i<=10} precision@i * rel_i,
  where R is how many relevant items the gallery holds (so a query whose 10 nearest are all
  relevant scores 1, and misses anywhere in the top 10 cost more the higher they rank);
- classifier top-1 accuracy: the fraction of test images whose most probable class is their
  folder's; the confusion matrix counts [true class, predicted class];
- re-photographed recall@k: `robustness` gallery images (seeded, without replacement) are each
  re-photographed (`shazzam.rephotograph.rephotograph_jpeg`: crop, background, rotation,
  perspective, colour, blur, noise, JPEG) and searched against the whole gallery; recall@k is
  the fraction whose original (the same file content) is among the k nearest;
- ms per image: the median time to embed one image, one interpreter invocation (batch of 1, one
  thread) for each of the views its manifest names, preprocessing excluded, after a warm-up, the
  models timed in turn on the same images in one process; the VGG16 fc7 baseline
  (`training/export_vgg16_baseline.py`) the same way, on the centre view;
- bytes per stored vector: what the gallery shard holds per item for its vector, ids aside (the
  uint8 codes, one per dimension, plus the re-rank bits where the index stores them; the mean over
  items); the original system stored 4096 float32 (16,384 bytes).

With `--ccp`, street crops too (not a target of the issue; the service's real queries are photos of
people): every garment of CCP's held-out photos 0701-0800 whose CCP label names one catalogue
category, cut out by its mask's box as the detector would cut it (`shazzam.ccp.CCP.garment_crops`),
searched against the same gallery (precision@1/10, mAP@10) and classified (accuracy). And the same
garments as the service finds them: each held-out photo through the serving detector
(`shazzam.detector.load_detector`, the boxes it shows), each garment matched to the shown box
overlapping its mask's box most, at IoU >= 0.5, among those a search looks for (not bags, glasses,
belts; `street_look_found`: the share matched), that box
cut out and classified among its detector class's categories as a search does
(`shazzam.taxonomy.category_within`; `street_look_named`: the share of all the garments whose
category comes out right, so the served search would look in the right shard).

Before measuring, the evaluation refuses (EvaluationError) when a test image's content is also in
the gallery (sha256 of the file bytes), when a model file does not match its manifest's sha256, when
the cache or picture folder cannot be made or written in, when a class folder is not one of the
models' categories, or when `--ccp` holds no photo 0701-0800 with its mask (those without are
counted in the report).
Embeddings are cached in .npz files keyed by the model file's sha256, its views, the
preprocessing code and the dataset's file contents, so a rerun only re-times the models.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from shazzam.distance import QUANT_STEP, l1_topk_u8, l2_normalise, quantise

if TYPE_CHECKING:
    from PIL import Image

SPLITS = ("train", "validation", "test")
GALLERY_SPLITS = ("train", "validation")
QUERY_SPLIT = "test"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
PRECISION_KS = (1, 5, 10)
MAP_K = 10
RECALL_KS = (1, 10)
DEFAULT_ROBUSTNESS = 500
DEFAULT_SEED = 20261128
DEFAULT_TIMING_IMAGES = 20
ORIGINAL_BYTES_PER_VECTOR = 4096 * 4  # VGG16 fc7, float32


class EvaluationError(ValueError):
    """The evaluation cannot be trusted as asked: overlapping splits, a model unlike its manifest."""


@dataclass(frozen=True)
class Target:
    key: str
    title: str
    limit: float
    at_most: bool = False  # True: the figure must be <= limit; else >= limit

    def met(self, value: float | None) -> bool | None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return value <= self.limit if self.at_most else value >= self.limit

    def describe(self) -> str:
        limit = f"{self.limit:,.0f}" if self.limit >= 100 else f"{self.limit:g}"
        return f"{'<=' if self.at_most else '>='} {limit}"


# The targets (#3). "8 MB" is taken as 8,000,000 bytes.
TARGETS = (
    Target("precision_at_10", "precision@10", 0.95),
    Target("map_at_10", "mAP@10", 0.94),
    Target("classifier_accuracy_test", "classifier top-1 accuracy, test", 0.96),
    Target("rephotographed_recall_at_1", "re-photographed recall@1", 0.95),
    Target("rephotographed_recall_at_10", "re-photographed recall@10", 0.99),
    Target("ms_per_image_1_thread", "ms per image, 1 thread", 12.0, at_most=True),
    Target("model_file_bytes", "model file bytes", 8_000_000, at_most=True),
    Target("bytes_per_vector", "bytes per stored vector", 256, at_most=True),
)


# --- the metrics: pure functions over arrays ---


def precision_at_k(relevant: np.ndarray, k: int) -> float:
    """Mean over queries of the fraction of the first k results that are relevant.

    `relevant` is (queries, >= k) booleans, nearest first."""
    relevant = np.asarray(relevant, dtype=bool)
    if relevant.shape[1] < k:
        raise ValueError(f"precision@{k} needs at least {k} results per query, got {relevant.shape[1]}")
    return float(relevant[:, :k].mean(axis=1).mean()) if len(relevant) else float("nan")


def average_precision_at_k(relevant: np.ndarray, relevant_total: np.ndarray | int, k: int = MAP_K) -> np.ndarray:
    """AP@k of each query: (1 / min(k, R)) * sum_{i<=k} precision@i * rel_i (0 when R is 0).

    `relevant` is (queries, >= k) booleans, nearest first; `relevant_total` is R, how many
    relevant items the gallery holds for each query (an int for all, or one per query)."""
    relevant = np.asarray(relevant, dtype=bool)
    if relevant.shape[1] < k:
        raise ValueError(f"AP@{k} needs at least {k} results per query, got {relevant.shape[1]}")
    hits = relevant[:, :k].astype(np.float64)
    precision_at_i = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    denominator = np.minimum(k, np.broadcast_to(np.asarray(relevant_total), (len(relevant),))).astype(np.float64)
    summed = (precision_at_i * hits).sum(axis=1)
    return np.divide(summed, denominator, out=np.zeros(len(relevant)), where=denominator > 0)


def mean_average_precision_at_k(relevant: np.ndarray, relevant_total: np.ndarray | int, k: int = MAP_K) -> float:
    """mAP@k: the mean over queries of average_precision_at_k."""
    values = average_precision_at_k(relevant, relevant_total, k)
    return float(values.mean()) if len(values) else float("nan")


def recall_at_k(found: np.ndarray, k: int) -> float:
    """Fraction of queries with at least one True among their first k results ((queries, >= k) booleans)."""
    found = np.asarray(found, dtype=bool)
    if found.shape[1] < k:
        raise ValueError(f"recall@{k} needs at least {k} results per query, got {found.shape[1]}")
    return float(found[:, :k].any(axis=1).mean()) if len(found) else float("nan")


def confusion_matrix(true: Iterable[str], predicted: Iterable[str], categories: Iterable[str]) -> np.ndarray:
    """Counts [true category, predicted category], in the order of `categories`."""
    categories = list(categories)
    position = {name: index for index, name in enumerate(categories)}
    matrix = np.zeros((len(categories), len(categories)), dtype=np.int64)
    for t, p in zip(true, predicted):
        if t not in position or p not in position:
            raise ValueError(f"category {t if t not in position else p!r} is not one of {categories}")
        matrix[position[t], position[p]] += 1
    return matrix


class GalleryIndex:
    """Raw gallery embeddings coded and searched as one shard of the index (shazzam.index.Shard)."""

    def __init__(self, embeddings: np.ndarray):
        from shazzam import index

        embeddings = np.asarray(embeddings, dtype=np.float32)
        self.size, self.dim = embeddings.shape
        if self.uses_shard():
            self.shard = index.Shard.from_vectors("gallery", [str(row) for row in range(self.size)], embeddings)
            self.codes, self.step = self.shard.codes, float(self.shard.step)
            low_bits = getattr(self.shard, "low_bits", None)
            stored = self.codes.nbytes + (low_bits.nbytes if low_bits is not None else 0)
        else:  # format-2 shards: uint8 codes of the fixed step, searched by l1_topk_u8
            self.shard = None
            self.codes, self.step = quantise(l2_normalise(embeddings)), QUANT_STEP
            stored = self.codes.nbytes
        self.bytes_per_vector = stored / max(1, self.size)
        normalised = l2_normalise(embeddings)
        self.clipped = float(np.mean((normalised > 255 * self.step) | (normalised < 0))) if normalised.size else 0.0

    @staticmethod
    def uses_shard() -> bool:
        from shazzam import index

        return hasattr(index.Shard, "from_vectors") and hasattr(index.Shard, "search_rows")

    def nearest(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(queries, k) gallery rows nearest to each raw query embedding, as a shard search ranks them."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if self.shard is not None:
            rows, _ = self.shard.search_rows(queries, k)
        else:
            rows, _ = l1_topk_u8(quantise(l2_normalise(queries)), self.codes, k)
        return np.asarray(rows)


def nearest(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """(queries, k) gallery rows nearest to each query, searched as the index does (ties by row)."""
    return GalleryIndex(gallery).nearest(queries, k)


def retrieval_figures(query_embeddings, query_labels, gallery_embeddings, gallery_labels,
                      index: GalleryIndex | None = None) -> dict:
    """precision@1/5/10 and mAP@10 of the queries against the gallery, searched as the index does."""
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    k = max(max(PRECISION_KS), MAP_K)
    rows = (index or GalleryIndex(gallery_embeddings)).nearest(query_embeddings, k)
    relevant = gallery_labels[rows] == query_labels[:, None]
    totals = np.array([int(np.sum(gallery_labels == label)) for label in query_labels])
    figures = {f"precision_at_{n}": precision_at_k(relevant, n) for n in PRECISION_KS}
    figures[f"map_at_{MAP_K}"] = mean_average_precision_at_k(relevant, totals, MAP_K)
    return figures


def classifier_figures(probabilities: np.ndarray, labels, categories) -> dict:
    categories = list(categories)
    predicted = np.array(categories)[np.argmax(probabilities, axis=1)]
    labels = np.asarray(labels)
    return {
        "accuracy": float(np.mean(predicted == labels)) if len(labels) else float("nan"),
        "confusion": confusion_matrix(labels, predicted, categories),
    }


# --- the data and its checks ---


@dataclass(frozen=True)
class Item:
    path: Path
    label: str
    sha256: str


def list_split(data_dir: str | Path, split: str) -> list[tuple[Path, str]]:
    """(path, label) for every image of one split, sorted; the label is the class folder's name."""
    root = Path(data_dir) / split
    if not root.is_dir():
        raise FileNotFoundError(f"no {split} split under {data_dir}")
    return [
        (path, path.parent.name)
        for path in sorted(root.glob("*/*"))
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    ]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_dataset(data_dir: str | Path, categories: Iterable[str] | None = None) -> dict[str, list[Item]]:
    """Every split's items with their content hashes; EvaluationError when a split is missing or
    empty, or when a class folder is not one of `categories` (the models'; None: any name)."""
    data_dir = Path(data_dir)
    listed = {}
    for split in SPLITS:
        try:
            listed[split] = list_split(data_dir, split)
        except FileNotFoundError as exc:
            raise EvaluationError(f"{exc} (expected {data_dir}/{{{','.join(SPLITS)}}}/<class>/*.jpg)") from None
        if not listed[split]:
            raise EvaluationError(f"the {split} split under {data_dir} holds no images")
    if categories is not None:
        # Said now, before hashing and embedding: the confusion matrix would refuse them only at the end.
        categories = list(categories)
        unknown = sorted({label for split in SPLITS for _, label in listed[split]} - set(categories))
        if unknown:
            raise EvaluationError(f"class folder(s) under {data_dir} that are not the model's categories: {', '.join(unknown)} "
                                  f"(it classifies {', '.join(categories)}); rename or remove them")
    return {split: [Item(path, label, file_sha256(path)) for path, label in listed[split]] for split in SPLITS}


def check_disjoint(queries: list[Item], gallery: list[Item]) -> None:
    """Refuse when any query image's content is also in the gallery (a leak that flatters every figure)."""
    in_gallery: dict[str, Item] = {item.sha256: item for item in gallery}
    shared = [(item, in_gallery[item.sha256]) for item in queries if item.sha256 in in_gallery]
    if shared:
        examples = "; ".join(f"{q.path} = {g.path}" for q, g in shared[:5])
        raise EvaluationError(
            f"{len(shared)} test image(s) are also in the gallery (same content, by sha256): {examples}"
            f"{' ...' if len(shared) > 5 else ''}. Remove them from one side and run again."
        )


def verify_manifest(manifest_path: str | Path) -> dict:
    """The manifest, once the model file it names is there and matches its sha256; else EvaluationError."""
    from shazzam.vision import ModelError, read_manifest

    manifest_path = Path(manifest_path)
    try:
        manifest, model_path = read_manifest(manifest_path, verify=False)  # the checks below say more
    except ModelError as exc:
        raise EvaluationError(str(exc)) from None
    except KeyError:  # no "file"
        manifest = {}
    if not manifest.get("file") or not manifest.get("sha256"):
        raise EvaluationError(f"{manifest_path} names no model file and sha256 to check it against")
    if not model_path.is_file():
        raise EvaluationError(f"no model file at {model_path} (named by {manifest_path})")
    digest = file_sha256(model_path)
    if digest != manifest["sha256"]:
        raise EvaluationError(
            f"{model_path} does not match its manifest: its sha256 is {digest}, {manifest_path.name} says "
            f"{manifest['sha256']}. Refusing to evaluate a model file other than the one the manifest describes."
        )
    return manifest


def manifest_categories(manifest: dict) -> list[str] | None:
    """The categories a manifest's classifier names, in its order; None when it names none."""
    named = ((manifest.get("outputs") or {}).get("probabilities") or {}).get("categories")
    return list(named) if named else None


def writable_folder(path: str | Path, option: str) -> Path:
    """`path`, made a folder now (before minutes of measuring that would end in writing there);
    EvaluationError, naming `option`, when it cannot be one (under a file, no permission)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvaluationError(f"{option} {path}: cannot make that folder ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise EvaluationError(f"{option} {path}: this user cannot write in that folder")
    return path


def resolve_manifest(name: str | None, model_dir: str | Path | None = None) -> Path:
    """A model's manifest: a path to a .json, else NAME.json in the model folder; None = the serving model."""
    from shazzam.vision import default_model_dir, manifest_path

    if not name:
        return manifest_path(str(model_dir) if model_dir else None)
    if name.endswith(".json") or "/" in name:
        return Path(name)
    return Path(model_dir or default_model_dir()) / f"{name}.json"


# --- embedding, with a cache ---


def _preprocessing_fingerprint() -> bytes:
    import shazzam.images

    return inspect.getsource(shazzam.images).encode()


class EmbeddingCache:
    """Arrays in <dir>/shazzam-eval-<key>.npz; a None dir caches nothing."""

    def __init__(self, directory: str | Path | None):
        self.directory = Path(directory) if directory else None

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        if self.directory is None:
            return None
        path = self.directory / f"shazzam-eval-{key}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path) as stored:
                return {name: stored[name] for name in stored.files}
        except Exception:  # a cache: damaged anyhow (a copy cut short, a disk fault), it is computed again
            return None

    def store(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"shazzam-eval-{key}.npz"
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)


def _key(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def _progress(total: int, description: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="img", file=sys.stderr, disable=not enabled, leave=False)


def embed_items(model, images: list[Callable[[], "object"]], description: str, progress: bool):
    """Raw embeddings and probabilities of the images each callable returns (decoded PIL images)."""
    embeddings = np.zeros((len(images), model.embedding_dim), np.float32)
    probabilities = np.zeros((len(images), len(model.categories)), np.float32)
    with _progress(len(images), description, progress) as bar:
        for row, image in enumerate(images):
            embeddings[row], probabilities[row] = model.infer(image())
            bar.update(1)
    return embeddings, probabilities


def _loader(path: Path):
    from shazzam.images import ImageError, load_image

    def load():
        try:
            return load_image(path.read_bytes())
        except (ImageError, OSError) as exc:  # which of thousands of images it is
            raise EvaluationError(f"{path}: {exc}") from exc

    return load


def embed_dataset(model, sha256: str, dataset: dict[str, list[Item]], cache: EmbeddingCache, progress: bool = False):
    """{split: (raw embeddings, probabilities)} of every image, through the service's code path."""
    items = [item for split in SPLITS for item in dataset[split]]
    key = _key("dataset", sha256, *model.views, _preprocessing_fingerprint(),
               *(f"{split}/{item.label}/{item.sha256}" for split in SPLITS for item in dataset[split]))
    stored = cache.load(key)
    if stored is None:
        embeddings, probabilities = embed_items(model, [_loader(item.path) for item in items],
                                                f"embed {model.name}", progress)
        stored = {"embeddings": embeddings, "probabilities": probabilities}
        cache.store(key, stored)
    out, start = {}, 0
    for split in SPLITS:
        stop = start + len(dataset[split])
        out[split] = (stored["embeddings"][start:stop], stored["probabilities"][start:stop])
        start = stop
    return out


def robustness_sample(gallery: list[Item], count: int, seed: int) -> np.ndarray:
    """The gallery rows re-photographed for the robustness figure (seeded, without replacement, sorted)."""
    count = min(count, len(gallery))
    return np.sort(np.random.default_rng(seed).choice(len(gallery), size=count, replace=False))


class Rephotographs:
    """The re-photographed JPEG of each sampled gallery row, made once per run and shared by the models."""

    def __init__(self, gallery: list[Item], rows: np.ndarray, seed: int):
        self.gallery, self.rows, self.seed = gallery, rows, seed
        self._made: dict[int, bytes] = {}

    def jpeg(self, row: int) -> bytes:
        from shazzam.images import load_image
        from shazzam.rephotograph import rephotograph_jpeg

        if row not in self._made:
            original = load_image(self.gallery[row].path.read_bytes())
            self._made[row] = rephotograph_jpeg(original, np.random.default_rng([self.seed, row]))
        return self._made[row]

    def loaders(self):
        from shazzam.images import load_image

        return [(lambda row=int(row): load_image(self.jpeg(row))) for row in self.rows]

    def fingerprint(self) -> list[str]:
        import shazzam.rephotograph

        return [inspect.getsource(shazzam.rephotograph), f"seed{self.seed}",
                *(self.gallery[row].sha256 for row in self.rows)]


def robustness_figures(model, sha256: str, gallery: list[Item], gallery_index: GalleryIndex,
                       rephotographs: Rephotographs, cache: EmbeddingCache, progress: bool = False) -> dict:
    """recall@1/10 of finding each re-photographed gallery image's original in the whole gallery."""
    if len(rephotographs.rows) == 0:
        return {"rephotographed_queries": 0, **{f"rephotographed_recall_at_{k}": None for k in RECALL_KS}}
    key = _key("rephotographed", sha256, *model.views, _preprocessing_fingerprint(), *rephotographs.fingerprint())
    stored = cache.load(key)
    if stored is None:
        embeddings, _ = embed_items(model, rephotographs.loaders(), f"re-photographed {model.name}", progress)
        stored = {"embeddings": embeddings}
        cache.store(key, stored)
    rows = gallery_index.nearest(stored["embeddings"], max(RECALL_KS))
    hashes = np.array([item.sha256 for item in gallery])
    found = hashes[rows] == hashes[rephotographs.rows][:, None]
    return {"rephotographed_queries": int(len(rephotographs.rows)),
            **{f"rephotographed_recall_at_{k}": recall_at_k(found, k) for k in RECALL_KS}}


class StreetCrops:
    """The garment crops of CCP's held-out photos (shazzam.ccp.VALIDATION), cut once per run."""

    def __init__(self, ccp_dir: str | Path):
        from shazzam.ccp import CCP, VALIDATION
        from shazzam.images import get_subsection_of_image

        self.ccp = ccp = CCP(ccp_dir)
        self.photos = f"{VALIDATION.start:04d}-{VALIDATION.stop - 1:04d}"
        # Refused here, before any embedding: with no crop to search, the street figures cannot be had.
        present = ccp.numbers(VALIDATION)
        if not present:
            raise EvaluationError(f"no CCP photos {self.photos} under {ccp_dir} (each needs photos/NNNN.jpg and masks/NNNN.png)")
        self.skipped = len(VALIDATION) - len(present)  # without a photo or a mask
        garments = list(ccp.garments(VALIDATION))
        if not garments:
            raise EvaluationError(f"no garment of a catalogue category in CCP photos {self.photos} under {ccp_dir}")
        self.numbers = [number for number, _, _, _ in garments]
        self.boxes = [box for _, _, box, _ in garments]
        self.crops = [get_subsection_of_image(photo, box) for _, _, box, photo in garments]
        self.labels = np.array([category for _, category, _, _ in garments])
        photos = {number: f"{file_sha256(ccp.photo_path(number))}/{file_sha256(ccp.mask_path(number))}"
                  for number in dict.fromkeys(self.numbers)}
        self._fingerprint = [f"{number}/{category}/{photos[number]}" for number, category in zip(self.numbers, self.labels)]

    def fingerprint(self) -> list[str]:
        import shazzam.ccp

        return [inspect.getsource(shazzam.ccp), *self._fingerprint]


def street_figures(model, sha256: str, gallery_labels: np.ndarray, gallery_index: GalleryIndex,
                   street: StreetCrops, cache: EmbeddingCache, progress: bool = False) -> dict:
    """The street crops searched against the whole gallery, and classified."""
    key = _key("street", sha256, *model.views, _preprocessing_fingerprint(), *street.fingerprint())
    stored = cache.load(key)
    if stored is None:
        embeddings, probabilities = embed_items(model, [(lambda crop=crop: crop) for crop in street.crops],
                                                f"street crops {model.name}", progress)
        stored = {"embeddings": embeddings, "probabilities": probabilities}
        cache.store(key, stored)
    rows = gallery_index.nearest(stored["embeddings"], max(PRECISION_KS))
    relevant = gallery_labels[rows] == street.labels[:, None]
    totals = np.array([np.sum(gallery_labels == label) for label in street.labels])
    predicted = np.array(model.categories)[stored["probabilities"].argmax(axis=1)]
    return {"street_crops": len(street.crops), "street_photos": street.photos, "street_photos_skipped": street.skipped,
            "street_precision_at_1": precision_at_k(relevant, 1), "street_precision_at_10": precision_at_k(relevant, 10),
            "street_map_at_10": mean_average_precision_at_k(relevant, totals, MAP_K),
            "street_accuracy": float(np.mean(predicted == street.labels))}


class DetectedGarments:
    """The street garments as the service finds them (see the module's docstring): for each, the
    crop of the box the detector shows that overlaps it most, at IoU >= MATCH_IOU, among those a
    search looks for (not bags, glasses, belts), and that box's detector class; None where no such
    box does. One detector pass per photo, once per run."""

    MATCH_IOU = 0.5

    def __init__(self, street: StreetCrops, detector):
        from shazzam.images import get_subsection_of_image
        from shazzam.regions import iou
        from shazzam.taxonomy import SEARCHABLE

        self.detector = detector.name
        self.matches: list[tuple[Image.Image, str | None] | None] = [None] * len(street.numbers)
        for number in dict.fromkeys(street.numbers):
            photo = street.ccp.photo(number)
            shown = [d for d in detector.detect(photo, masks=False) if d.label is None or SEARCHABLE.get(d.label)]
            for row in (row for row, n in enumerate(street.numbers) if n == number):
                overlaps = [(iou(d.box.as_list(), street.boxes[row]), d) for d in shown]
                best_iou, best = max(overlaps, key=lambda pair: pair[0], default=(0.0, None))
                if best is not None and best_iou >= self.MATCH_IOU:
                    self.matches[row] = (get_subsection_of_image(photo, best.box), best.label)


def street_look_figures(model, street: StreetCrops, detected: DetectedGarments, progress: bool = False) -> dict:
    """Of the street garments, the share the detector finds and the share then named right."""
    from shazzam.taxonomy import SEARCHABLE, category_within

    rows = [row for row, match in enumerate(detected.matches) if match is not None]
    _, probabilities = embed_items(model, [(lambda crop=detected.matches[row][0]: crop) for row in rows],
                                   f"detected street garments {model.name}", progress)
    named = 0
    for row, scores in zip(rows, probabilities):
        label = detected.matches[row][1]
        allowed = SEARCHABLE[label] if label is not None else None
        category, _ = category_within(dict(zip(model.categories, scores.tolist())), allowed)
        named += category == street.labels[row]
    total = len(detected.matches)
    return {"street_look_detector": detected.detector,
            "street_look_found": len(rows) / total if total else None,
            "street_look_named": named / total if total else None}


# --- speed ---


def timing_inputs(items: list[Item], count: int) -> list[Image.Image]:
    """The standardised images (shazzam.images.standardise_img) of `count` items spread over the list."""
    from shazzam.images import load_image, standardise_img

    step = max(1, len(items) // max(1, count))
    return [standardise_img(load_image(item.path.read_bytes())) for item in items[::step][:count]]


def time_models(models: dict[str, tuple[Path, tuple[str, ...]]], images: list, threads: int = 1,
                warmup: int = 2) -> dict[str, float]:
    """Median ms to embed one of the standardised images with each (.tflite, views), one
    invocation per view, one thread, the models taking turns; cutting the views out is not timed."""
    from shazzam.images import model_views
    from shazzam.vision import TFLiteModel

    loaded = {name: TFLiteModel(path, num_threads=threads) for name, (path, _) in models.items()}
    batches = {name: [model_views(image, views) for image in images] for name, (_, views) in models.items()}
    for name, model in loaded.items():
        for batch in batches[name][:warmup]:
            model.run(batch)
    times: dict[str, list[float]] = {name: [] for name in loaded}
    for row in range(len(images)):
        for name, model in loaded.items():
            started = time.perf_counter()
            model.run(batches[name][row])
            times[name].append(time.perf_counter() - started)
    return {name: float(np.median(values) * 1000) for name, values in times.items()}


# --- the t-SNE picture ---


def tsne_plot(embeddings: np.ndarray, labels, categories, path: Path, title: str, seed: int = DEFAULT_SEED) -> Path:
    """A PNG of the 2-d t-SNE (L1 on L2-normalised embeddings) of `embeddings`, coloured by category."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    points = l2_normalise(embeddings)
    perplexity = float(min(30, max(2, (len(points) - 1) / 3)))
    xy = TSNE(n_components=2, metric="manhattan", init="pca", perplexity=perplexity,
              random_state=seed).fit_transform(points)
    labels = np.asarray(labels)
    figure, axes = plt.subplots(figsize=(8, 7), dpi=110)
    colours = plt.get_cmap("tab10")
    for index, category in enumerate(categories):
        mask = labels == category
        if mask.any():
            axes.scatter(xy[mask, 0], xy[mask, 1], s=12, color=colours(index % 10), label=f"{category} ({mask.sum()})")
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(loc="best", fontsize=8, markerscale=1.5)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def misclassified_sheet(items: list[Item], probabilities: np.ndarray, categories, path: Path,
                        limit: int = 48, tile: int = 160, columns: int = 8) -> tuple[Path, int]:
    """A PNG of the test images the classifier got wrong, the most confident mistakes first (where
    label noise shows), each captioned "true -> predicted confidence"; and how many were wrong."""
    from PIL import Image, ImageDraw

    categories = list(categories)
    predicted = np.argmax(probabilities, axis=1)
    wrong = [row for row, item in enumerate(items) if categories[predicted[row]] != item.label]
    wrong.sort(key=lambda row: -float(probabilities[row, predicted[row]]))
    shown = wrong[:limit]
    caption = 14
    rows = max(1, -(-len(shown) // columns))
    sheet = Image.new("RGB", (columns * tile, rows * (tile + caption)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for n, row in enumerate(shown):
        x, y = (n % columns) * tile, (n // columns) * (tile + caption)
        with Image.open(items[row].path) as image:
            thumbnail = image.convert("RGB")
            thumbnail.thumbnail((tile, tile))
        sheet.paste(thumbnail, (x + (tile - thumbnail.width) // 2, y + (tile - thumbnail.height) // 2))
        text = f"{items[row].label} -> {categories[predicted[row]]} {probabilities[row, predicted[row]]:.2f}"
        draw.text((x + 2, y + tile), text, fill=(0, 0, 0))
    if not shown:
        draw.text((4, 4), "no test image misclassified", fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path, len(wrong)


# --- one model, then the whole run ---


def evaluate_model(manifest_path: Path, dataset: dict[str, list[Item]], *, cache: EmbeddingCache,
                   rephotographs: Rephotographs | None, street: StreetCrops | None = None,
                   detected: DetectedGarments | None = None, threads: int | None = None, progress: bool = False):
    """All figures of one model but its speed; returns (figures, test embeddings, model)."""
    from shazzam.vision import GarmentModel, ModelError

    manifest = verify_manifest(manifest_path)
    try:
        model = GarmentModel.from_manifest(manifest_path, num_threads=threads, verify=False)
    except ModelError as exc:
        raise EvaluationError(str(exc)) from None
    sha256 = manifest["sha256"]
    splits = embed_dataset(model, sha256, dataset, cache, progress)
    gallery_items = [item for split in GALLERY_SPLITS for item in dataset[split]]
    gallery = np.concatenate([splits[split][0] for split in GALLERY_SPLITS])
    gallery_labels = np.array([item.label for item in gallery_items])
    test_embeddings, test_probabilities = splits[QUERY_SPLIT]
    test_labels = np.array([item.label for item in dataset[QUERY_SPLIT]])
    index = GalleryIndex(gallery)
    figures = {
        "model": model.name,
        "manifest": str(manifest_path),
        "sha256": sha256,
        "embedding_dim": model.embedding_dim,
        "views": list(model.views),
        **retrieval_figures(test_embeddings, test_labels, gallery, gallery_labels, index),
    }
    test = classifier_figures(test_probabilities, test_labels, model.categories)
    validation = classifier_figures(splits["validation"][1], [item.label for item in dataset["validation"]], model.categories)
    figures["classifier_accuracy_test"] = test["accuracy"]
    # A model trained on the validation split (train_embedder.py --fit-validation) has no held-out
    # validation figure: it would read 1.0 and mean nothing.
    figures["trained_on_validation"] = bool(((manifest.get("training") or {}).get("args") or {}).get("fit_validation"))
    figures["classifier_accuracy_validation"] = None if figures["trained_on_validation"] else validation["accuracy"]
    figures["confusion_test"] = {"categories": list(model.categories), "rows_true_columns_predicted": test["confusion"].tolist()}
    figures["code_step"] = index.step
    figures["clipped_by_codes"] = index.clipped
    if rephotographs is not None:
        figures.update(robustness_figures(model, sha256, gallery_items, index, rephotographs, cache, progress))
    if street is not None:
        figures.update(street_figures(model, sha256, gallery_labels, index, street, cache, progress))
    if street is not None and detected is not None:
        figures.update(street_look_figures(model, street, detected, progress))
    model_file = manifest_path.parent / manifest["file"]
    figures["model_file"] = str(model_file)
    figures["model_file_bytes"] = model_file.stat().st_size
    figures["bytes_per_vector"] = round(index.bytes_per_vector, 1)  # ids aside
    return figures, (test_embeddings, test_labels, test_probabilities), model


def targets_report(figures: dict) -> list[dict]:
    return [{"figure": t.key, "title": t.title, "target": t.describe(), "value": figures.get(t.key),
             "met": t.met(figures.get(t.key))} for t in TARGETS]


def run_evaluation(data_dir: str | Path, model_manifest: Path, baseline_manifest: Path | None = None, *,
                   robustness: int = DEFAULT_ROBUSTNESS, seed: int = DEFAULT_SEED, cache_dir: str | Path | None = None,
                   vgg16: str | Path | None = None, timing_images: int = DEFAULT_TIMING_IMAGES,
                   out_dir: str | Path | None = None, threads: int | None = None, progress: bool = False,
                   ccp_dir: str | Path | None = None, model_dir: str | Path | None = None,
                   log: Callable[[str], None] | None = None) -> dict:
    """Every figure `shazzam eval` prints, as one JSON-ready dict (see the module's docstring).
    model_dir: where the detector that finds the street garments is (the service's default if None)."""
    started = time.perf_counter()
    say = log or (lambda message: None)
    # Refuse early, before minutes of embedding: the models' checksums, then the splits' overlap.
    manifests = {"model": Path(model_manifest)}
    if baseline_manifest is not None:
        manifests["baseline"] = Path(baseline_manifest)
    classified = [manifest_categories(verify_manifest(manifest)) for manifest in manifests.values()]
    for folder, option in ((cache_dir, "--cache"), (out_dir, "--out")):
        if folder is not None:
            writable_folder(folder, option)
    known = [named for named in classified if named is not None]
    categories = [c for c in known[0] if all(c in named for named in known)] if known else None  # every model's
    dataset = load_dataset(data_dir, categories)
    gallery_items = [item for split in GALLERY_SPLITS for item in dataset[split]]
    check_disjoint(dataset[QUERY_SPLIT], gallery_items)
    cache = EmbeddingCache(cache_dir)
    rows = robustness_sample(gallery_items, robustness, seed)
    rephotographs = Rephotographs(gallery_items, rows, seed) if robustness > 0 else None
    if ccp_dir is not None and not (Path(ccp_dir) / "labels.json").is_file():
        raise EvaluationError(f"no CCP data set at {ccp_dir} (photos/, masks/, labels.json)")
    street = StreetCrops(ccp_dir) if ccp_dir is not None else None
    detected = None
    if street is not None:
        from shazzam.detector import load_detector

        detected = DetectedGarments(street, load_detector(model_dir))
    report: dict = {
        "data": {
            "path": str(data_dir),
            "images": {split: len(dataset[split]) for split in SPLITS},
            "queries": QUERY_SPLIT,
            "gallery": list(GALLERY_SPLITS),
            "gallery_size": len(gallery_items),
            "metric": ("the index's search: L2-normalised embeddings coded as one shard (shazzam.index.Shard.from_vectors), "
                       "L1 over the codes (Shard.search_rows)") if GalleryIndex.uses_shard() else
                      "L1 on the index's uint8 codes of L2-normalised embeddings (shazzam.distance.quantise, l1_topk_u8)",
            "robustness_seed": seed,
        },
    }
    loaded = {}
    for role, manifest in manifests.items():
        say(f"{role}: {manifest}")
        figures, test, model = evaluate_model(manifest, dataset, cache=cache, rephotographs=rephotographs,
                                              street=street, detected=detected, threads=threads, progress=progress)
        report[role] = figures
        loaded[role] = (test, model)
    # Speed: the garment models and the VGG16 fc7 baseline, in turn, on one thread.
    say(f"timing on 1 thread over {timing_images} test images")
    inputs = timing_inputs(dataset[QUERY_SPLIT], timing_images)
    to_time = {role: (Path(report[role]["model_file"]), tuple(report[role]["views"])) for role in manifests}
    vgg16_path = Path(vgg16) if vgg16 else None
    if vgg16_path is not None and vgg16_path.is_file():
        to_time["vgg16_fc7"] = (vgg16_path, ("centre",))
    timed = time_models(to_time, inputs, threads=1)
    for role in manifests:
        report[role]["ms_per_image_1_thread"] = timed[role]
    report["timing"] = {"images": len(inputs), "threads": 1,
                        "statistic": "median ms to embed one image: one interpreter invocation per view, preprocessing excluded"}
    if "vgg16_fc7" in timed:
        report["vgg16_fc7"] = {"file": str(vgg16_path), "file_bytes": vgg16_path.stat().st_size,
                               "ms_per_image_1_thread": timed["vgg16_fc7"],
                               "bytes_per_vector": ORIGINAL_BYTES_PER_VECTOR}
        for role in manifests:
            report[role]["speedup_vs_vgg16_fc7"] = timed["vgg16_fc7"] / timed[role]
    else:
        report["vgg16_fc7"] = {"file": str(vgg16_path) if vgg16_path else None, "measured": False,
                               "how": "make vgg16-baseline (training/export_vgg16_baseline.py writes build/vgg16_fc7.tflite), "
                                      "then shazzam eval --vgg16 build/vgg16_fc7.tflite"}
    for role in manifests:
        report[role]["targets"] = targets_report(report[role])
    # The pictures.
    if out_dir is not None:
        report["tsne"], report["misclassified"] = {}, {}
        for role, ((embeddings, labels, probabilities), model) in loaded.items():
            path, count = misclassified_sheet(dataset[QUERY_SPLIT], probabilities, model.categories,
                                              Path(out_dir) / f"misclassified-{model.name}.png")
            report["misclassified"][model.name] = {"picture": str(path), "test_images": count}
            path = Path(out_dir) / f"tsne-{model.name}.png"
            try:
                tsne_plot(embeddings, labels, model.categories, path,
                          f"{model.name}: t-SNE of {len(labels)} test embeddings (L1, L2-normalised)", seed)
                report["tsne"][model.name] = str(path)
            except ImportError as exc:
                report["tsne"][model.name] = None
                report["tsne_skipped"] = f"{exc.name} is not installed: pip install 'shazzam[eval]'"
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


# --- the text form ---


def beside_target(value: float, text: str, limit: float, at_most: bool = False) -> str:
    """`text` (value as a report prints it), with more decimals where rounding would carry it across
    the limit: 0.94996 against ">= 0.95" reads 0.94996, not 0.9500 beside a "not met"."""
    met = value <= limit if at_most else value >= limit
    digits = len(text.rsplit(".", 1)[1]) if "." in text else 0
    while digits < 12:
        shown = float(text.replace(",", ""))
        if (shown <= limit if at_most else shown >= limit) == met:
            break
        digits += 1
        text = f"{value:,.{digits}f}"
    return text


def _fmt(value, key: str) -> str:
    if value is None:
        return "-"
    if key in ("model_file_bytes", "embedding_dim", "rephotographed_queries", "street_crops") or (key == "bytes_per_vector" and float(value).is_integer()):
        return f"{int(value):,}"
    if key == "bytes_per_vector":
        return f"{value:,.1f}"
    if key.startswith("ms_"):
        return f"{value:.1f}"
    if key.startswith("speedup"):
        return f"{value:.1f}x"
    if key == "clipped_by_codes":
        return f"{value:.5f}"
    return f"{value:.4f}"


ROWS = (
    ("embedding dimension", "embedding_dim"),
    ("precision@1", "precision_at_1"),
    ("precision@5", "precision_at_5"),
    ("precision@10", "precision_at_10"),
    ("mAP@10", "map_at_10"),
    ("classifier top-1 accuracy, test", "classifier_accuracy_test"),
    ("classifier accuracy, validation", "classifier_accuracy_validation"),
    ("re-photographed queries", "rephotographed_queries"),
    ("re-photographed recall@1", "rephotographed_recall_at_1"),
    ("re-photographed recall@10", "rephotographed_recall_at_10"),
    ("street crops (CCP 0701-0800)", "street_crops"),
    ("street crops: precision@1", "street_precision_at_1"),
    ("street crops: precision@10", "street_precision_at_10"),
    ("street crops: mAP@10", "street_map_at_10"),
    ("street crops: classifier accuracy", "street_accuracy"),
    ("street garments a box of the detector finds (IoU >= 0.5)", "street_look_found"),
    ("street garments found, then named right", "street_look_named"),
    ("ms per image, 1 thread", "ms_per_image_1_thread"),
    ("faster than VGG16 fc7 (same interpreter, 1 thread)", "speedup_vs_vgg16_fc7"),
    ("model file bytes", "model_file_bytes"),
    ("bytes per stored vector (mean, ids aside)", "bytes_per_vector"),
    ("components clipped by the codes", "clipped_by_codes"),
)


def format_report(report: dict) -> str:
    model, baseline = report["model"], report.get("baseline")
    targets = {t.key: t for t in TARGETS}
    data = report["data"]
    lines = [
        f"{model['model']} (sha256 {model['sha256'][:12]}..., checked)"
        + (f" vs baseline {baseline['model']}" if baseline else "")
        + f" on {data['path']}",
        f"queries: {data['images']['test']} test images; gallery: train + validation, {data['gallery_size']} images "
        f"(no test image in it, by sha256); distance: {data['metric']}",
        *(f"{figures['model']}: outputs averaged over the views {', '.join(figures['views'])} of each image"
          for figures in filter(None, (model, baseline)) if len(figures.get("views", ())) > 1),
        "",
    ]
    header = ["figure", model["model"]] + ([baseline["model"]] if baseline else []) + ["target", "met"]
    table = [header]
    for title, key in ROWS:
        if key.startswith("street_") and "street_crops" not in model:
            continue
        target = targets.get(key)
        met = target.met(model.get(key)) if target else None
        row = [title] + [_fmt(figures.get(key), key) if target is None or figures.get(key) is None
                         else beside_target(figures[key], _fmt(figures[key], key), target.limit, target.at_most)
                         for figures in filter(None, (model, baseline))]
        row += [target.describe() if target else "", "" if target is None else {True: "yes", False: "NO", None: "-"}[met]]
        table.append(row)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for index, row in enumerate(table):
        lines.append("  ".join(cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in enumerate(zip(row, widths))).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    for figures in filter(None, (model, baseline)):
        if figures.get("trained_on_validation"):
            lines.append(f"{figures['model']} was trained on train + validation: no validation figure (the test split is held out)")
    if model.get("street_photos_skipped"):
        lines.append(f"street crops: {model['street_photos_skipped']} of the CCP photos {model['street_photos']} skipped "
                     "(no photo or no mask)")
    if model.get("street_look_detector"):
        lines.append(f"street garments found by {model['street_look_detector']}: a box it shows overlaps the garment's "
                     "(IoU >= 0.5); named right: that box's crop classified among its detector class's categories, as a search does")
    met = [t for t in model["targets"] if t["met"]]
    measured = [t for t in model["targets"] if t["met"] is not None]
    lines.append(f"\ntargets met by {model['model']}: {len(met)} of {len(TARGETS)}"
                 + (f" ({len(TARGETS) - len(measured)} not measured)" if len(measured) < len(TARGETS) else ""))
    timing = report["timing"]
    vgg = report["vgg16_fc7"]
    if vgg.get("measured") is False:
        lines.append(f"VGG16 fc7 ratio not measured: no baseline file at {vgg['file'] or '(none given)'}; build it with {vgg['how']}")
    else:
        lines.append(f"VGG16 fc7 (4096-d, random weights, {vgg['file_bytes']:,} bytes): {vgg['ms_per_image_1_thread']:.1f} ms per image; "
                     f"{model['model']} {model['ms_per_image_1_thread']:.1f} ms = {model['speedup_vs_vgg16_fc7']:.1f}x faster")
    lines.append(f"speed: {timing['statistic']}, {timing['images']} images, {timing['threads']} thread, models in turn")
    lines.append(f"bytes per stored vector: what the gallery shard holds per item (codes, and re-rank bits where stored), "
                 f"ids aside; the original stored {ORIGINAL_BYTES_PER_VECTOR:,}")
    for figures in filter(None, (model, baseline)):
        confusion = figures["confusion_test"]
        names = confusion["categories"]
        cells = confusion["rows_true_columns_predicted"]
        width = max(4, *(len(n) for n in names))
        lines.append(f"\nconfusion matrix, {figures['model']}, test (rows: true class, columns: predicted)")
        lines.append(" " * width + " " + " ".join(n[:6].rjust(6) for n in names))
        for name, row in zip(names, cells):
            lines.append(name.ljust(width) + " " + " ".join(str(v).rjust(6) for v in row))
    tsne = report.get("tsne")
    if tsne:
        for name, path in tsne.items():
            lines.append(f"t-SNE of {name}'s test embeddings: {path or 'not drawn'}")
    if report.get("tsne_skipped"):
        lines.append(f"t-SNE skipped: {report['tsne_skipped']}")
    for name, sheet in (report.get("misclassified") or {}).items():
        lines.append(f"{name}'s {sheet['test_images']} misclassified test images, most confident first: {sheet['picture']}")
    lines.append(f"{report['seconds']} s")
    return "\n".join(lines)
