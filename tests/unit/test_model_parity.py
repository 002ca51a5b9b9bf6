"""Each committed model with a parity file still computes what PyTorch computed at export.

The export scripts (training/export_detector.py, training/train_embedder.py --export) fold batch
norms and round weights to fp16 in PyTorch, convert, and store the PyTorch reference's outputs for
bundled sample photos; the .tflite through the service's own preprocessing must match them to a
relative error under 1e-3 (the issue's bound for float32 arithmetic). No torch needed here.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from shazzam.images import load_image
from shazzam.vision import TFLiteModel

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "layers" / "models"
WITH_PARITY = sorted(p for p in MODELS.glob("*.json") if "parity" in json.loads(p.read_text()))


def preprocess(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_the_serving_models_have_parity_files():
    assert {p.stem for p in WITH_PARITY} >= {"detector_v1", "garment_v3"}


@pytest.mark.parametrize("manifest_path", WITH_PARITY, ids=lambda p: p.stem)
def test_tflite_matches_the_pytorch_reference(manifest_path):
    manifest = json.loads(manifest_path.read_text())
    reference = np.load(MODELS / manifest["parity"]["file"])
    model = TFLiteModel(MODELS / manifest["file"], num_threads=1)
    to_input = preprocess(manifest["input"]["preprocessing"])
    for row, sample in enumerate(reference["samples"]):
        x = to_input(load_image((REPO / str(sample)).read_bytes()))
        x = x[0] if isinstance(x, tuple) else x
        outputs = model.run(x)
        for name, spec in manifest["outputs"].items():
            got, want = outputs[spec["index"]][0], reference[name][row]
            error = np.linalg.norm(got - want) / np.linalg.norm(want)
            assert error < 1e-3, f"{manifest_path.stem} {name} on {sample}: relative error {error:.2e}"
