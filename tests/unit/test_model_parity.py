"""Each committed model with a parity file still computes what PyTorch computed at export.

The export scripts (training/export_detector.py, training/export_garment.py) fold batch norms and
round weights to fp16 in PyTorch, convert, and store the PyTorch reference's outputs for bundled
sample photos; the .tflite through the service's own preprocessing must match them to a relative
error under 1e-3 (the issue's bound for float32 arithmetic). No torch needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.parity import assert_matches_pytorch

MODELS = Path(__file__).resolve().parents[2] / "layers" / "models"
WITH_PARITY = sorted(p for p in MODELS.glob("*.json") if "parity" in json.loads(p.read_text()))


def test_the_serving_models_have_parity_files():
    assert {p.stem for p in WITH_PARITY} >= {"detector_v2", "garment_v5"}


@pytest.mark.parametrize("manifest_path", WITH_PARITY, ids=lambda p: p.stem)
def test_tflite_matches_the_pytorch_reference(manifest_path):
    assert_matches_pytorch(manifest_path)
