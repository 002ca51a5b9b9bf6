"""The garment model at runtime: a LiteRT (TFLite) interpreter behind a small, thread-safe API.

Imports only numpy, Pillow, ai_edge_litert and the standard library (no torch), so it fits a
Lambda layer. The model and its manifest (`garment_v5.json` unless $SHAZZAM_MODEL names another; see
`layers/models/garment_v5.md`) live in `default_model_dir()`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from shazzam.distance import l2_normalise
from shazzam.images import VIEWS, model_views, standardise_img

# The model the service runs; vectors of two models never share a shard (shazzam.index).
DEFAULT_MODEL = "garment_v5"
MODEL_ENV = "SHAZZAM_MODEL"
LAMBDA_MODEL_DIR = Path("/opt/models")
MODEL_DIR_ENV = "SHAZZAM_MODEL_DIR"


class ModelError(RuntimeError):
    """The model files are missing, corrupt or disagree with their manifest."""


def _default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def read_manifest(path: str | Path, *, what: str = "model", verify: bool = True) -> tuple[dict, Path]:
    """A model's manifest and the path of the .tflite it names (beside it), after checking the
    file's sha256 against the manifest's (when `verify` and the manifest has one)."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"no {what} manifest at {path}") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable {what} manifest {path}: {exc}") from exc
    if manifest.get("name", path.stem) != path.stem:
        # A model is known by its name (shards, re-embedding, /health): a manifest copied under
        # another file name would serve other vectors under the first one's name.
        raise ModelError(f"{path} names its {what} {manifest['name']!r}: its file must be {manifest['name']}.json")
    model_path = path.parent / manifest["file"]
    if verify and manifest.get("sha256"):
        try:
            digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
        except FileNotFoundError:
            raise ModelError(f"no {what} file at {model_path}") from None
        if digest != manifest["sha256"]:
            raise ModelError(f"{model_path} has sha256 {digest}, the manifest says {manifest['sha256']}")
    return manifest, model_path


class TFLiteModel:
    """One .tflite file and its interpreter; `run` is safe to call from several threads."""

    def __init__(self, model_path: str | Path, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(model_path)
        if not self.path.is_file():
            raise ModelError(f"no model file at {self.path}")
        self._interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads or _default_threads())
        self._interpreter.allocate_tensors()
        inputs = self._interpreter.get_input_details()
        if len(inputs) != 1:
            raise ModelError(f"{self.path.name} has {len(inputs)} inputs, expected 1")
        self._input = inputs[0]
        self._outputs = self._interpreter.get_output_details()
        self._lock = threading.Lock()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self._input["shape"])

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self._input["dtype"])

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(int(v) for v in detail["shape"]) for detail in self._outputs]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs, in the model's output order, for a batch; invoked one model-batch at a time."""
        batch = np.asarray(batch, dtype=self.input_dtype)
        expected = self.input_shape
        if batch.ndim != len(expected) or batch.shape[1:] != expected[1:]:
            raise ValueError(f"input of shape {batch.shape} does not fit the model's {expected}")
        step = expected[0]
        if len(batch) == 0 or len(batch) % step:
            raise ValueError(f"batch of {len(batch)} is not a positive multiple of the model's batch {step}")
        pieces: list[list[np.ndarray]] = [[] for _ in self._outputs]
        for start in range(0, len(batch), step):
            chunk = np.ascontiguousarray(batch[start : start + step])
            with self._lock:
                self._interpreter.set_tensor(self._input["index"], chunk)
                self._interpreter.invoke()
                results = [self._interpreter.get_tensor(detail["index"]).copy() for detail in self._outputs]
            for piece, result in zip(pieces, results):
                piece.append(result)
        return [np.concatenate(piece) if len(piece) > 1 else piece[0] for piece in pieces]


@dataclass
class GarmentPrediction:
    """One image's embedding (float32, L2-normalised; 192-d for garment_v5) and its most likely category."""

    embedding: np.ndarray
    category: str
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)


class GarmentModel:
    """Embedding + 10-way category of a garment image, from the manifest's .tflite."""

    def __init__(self, model: TFLiteModel, manifest: dict):
        self.model = model
        self.manifest = manifest
        self.name: str = manifest.get("name", model.path.stem)
        self.sha256: str | None = manifest.get("sha256")
        outputs = manifest["outputs"]
        self._embedding_index = int(outputs["embedding"]["index"])
        self._probabilities_index = int(outputs["probabilities"]["index"])
        self.embedding_dim = int(outputs["embedding"]["dim"])
        self._categories = tuple(outputs["probabilities"]["categories"])
        shapes = model.output_shapes
        try:
            embedding_shape = shapes[self._embedding_index]
            probabilities_shape = shapes[self._probabilities_index]
        except IndexError:
            raise ModelError(f"manifest output indices do not exist in {model.path.name} ({shapes})") from None
        if embedding_shape[-1] != self.embedding_dim or probabilities_shape[-1] != len(self._categories):
            raise ModelError(
                f"{model.path.name} outputs {shapes} disagree with the manifest "
                f"(embedding {self.embedding_dim}, {len(self._categories)} categories)"
            )
        # A model may be served with several views of each image (input.views, see
        # shazzam.images.VIEWS); its outputs are averaged over them. Manifests without it take one.
        self.views: tuple[str, ...] = tuple(manifest.get("input", {}).get("views") or ("centre",))
        if unknown := [name for name in self.views if name not in VIEWS]:
            raise ModelError(f"manifest of {model.path.name} names unknown views {unknown} (known: {sorted(VIEWS)})")
        declared = manifest.get("input", {}).get("shape")
        if declared is not None and tuple(declared) != model.input_shape:
            raise ModelError(f"{model.path.name} input {model.input_shape} disagrees with the manifest {declared}")

    @classmethod
    def from_manifest(cls, path: str | Path, *, num_threads: int | None = None, verify: bool = True) -> "GarmentModel":
        """Load the manifest at `path` and the .tflite it names (beside it), checking its sha256."""
        manifest, model_path = read_manifest(path, verify=verify)
        return cls(TFLiteModel(model_path, num_threads=num_threads), manifest)

    @property
    def categories(self) -> tuple[str, ...]:
        return self._categories

    def infer(self, image: Image.Image, *, standardised: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The raw (un-normalised) embedding and the class probabilities of one image, each the
        mean over the model's views.

        `standardised=True` says the image already went through standardise_img (the ingest
        pipeline stores it so), which is then not run again: on the 256 x 256 square it would give
        the same square back, so the flag only spares the work.
        """
        embeddings, probabilities = self.outputs(model_views(image if standardised else standardise_img(image), self.views))
        return embeddings.mean(axis=0), probabilities.mean(axis=0)

    def outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The raw embeddings [n, D] and probabilities [n, C] of a batch of model inputs, one row a view."""
        results = self.model.run(batch)
        return (np.asarray(results[self._embedding_index], dtype=np.float32),
                np.asarray(results[self._probabilities_index], dtype=np.float32))

    def predict(self, image: Image.Image, *, standardised: bool = False) -> GarmentPrediction:
        embedding, probabilities = self.infer(image, standardised=standardised)
        best = int(np.argmax(probabilities))
        return GarmentPrediction(
            embedding=l2_normalise(embedding),
            category=self._categories[best],
            confidence=float(probabilities[best]),
            probabilities={c: float(p) for c, p in zip(self._categories, probabilities)},
        )


def default_model_dir() -> Path:
    """$SHAZZAM_MODEL_DIR, else /opt/models (the Lambda layer) when present, else the repo's layers/models."""
    configured = os.environ.get(MODEL_DIR_ENV)
    if configured:
        return Path(configured)
    if LAMBDA_MODEL_DIR.is_dir():
        return LAMBDA_MODEL_DIR
    return Path(__file__).resolve().parents[1] / "models"


def manifest_path(model_dir: str | None = None) -> Path:
    """The manifest of the model the service runs: $SHAZZAM_MODEL (default garment_v5) in the model folder."""
    directory = Path(model_dir) if model_dir else default_model_dir()
    return directory / f"{os.environ.get(MODEL_ENV) or DEFAULT_MODEL}.json"


def load_garment_model(model_dir: str | None = None) -> GarmentModel:
    """The garment model the service runs (see manifest_path), loaded once per process."""
    return _load_manifest(manifest_path(model_dir))


@functools.cache
def _load_manifest(path: Path) -> GarmentModel:
    return GarmentModel.from_manifest(path)
