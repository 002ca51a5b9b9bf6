"""The check every exported model passes: its .tflite, fed through the service's own preprocessing,
computes what the PyTorch reference computed at export (stored in the model's parity file)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np

from shazzam.images import load_image
from shazzam.vision import TFLiteModel

REPO = Path(__file__).resolve().parents[2]
# the bound for float32 arithmetic
MAX_RELATIVE_ERROR = 1e-3


def preprocess(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def assert_matches_pytorch(manifest_path: Path) -> None:
    manifest = json.loads(manifest_path.read_text())
    reference = np.load(manifest_path.parent / manifest["parity"]["file"])
    model = TFLiteModel(manifest_path.parent / manifest["file"], num_threads=1)
    to_input = preprocess(manifest["input"]["preprocessing"])
    for row, sample in enumerate(reference["samples"]):
        x = to_input(load_image((REPO / str(sample)).read_bytes()))
        x = x[0] if isinstance(x, tuple) else x
        outputs = model.run(x)
        for name, spec in manifest["outputs"].items():
            got, want = outputs[spec["index"]][0], reference[name][row]
            error = np.linalg.norm(got - want) / np.linalg.norm(want)
            assert error < MAX_RELATIVE_ERROR, f"{manifest_path.stem} {name} on {sample}: relative error {error:.2e}"
