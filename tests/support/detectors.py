"""Detectors for tests: fixed boxes in known places, and where the real detector_v2 lives.

`FixedDetector` stands in for the garment detector when a test is about what the pipeline or
the API does with several garments, not about the model. Tests of the model itself use the
detector_v2 in layers/models (`real_detector_manifest`): they skip while it is absent, except in
CI, where they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

from shazzam.detector import Detection
from shazzam.images import Box
from tests.conftest import REPO, unavailable

# $SHAZZAM_TEST_DETECTOR points these tests at another manifest (a stand-in made by
# tests/support/make_standin_detector.py, or a candidate model) while developing.
REAL_DETECTOR = Path(os.environ.get("SHAZZAM_TEST_DETECTOR") or REPO / "layers" / "models" / "detector_v2.json")

# (label, score, (left, top, right, bottom) as fractions of the photo)
OUTFIT = (
    ("bag", 0.99, (0.05, 0.40, 0.30, 0.60)),
    ("top", 0.90, (0.20, 0.12, 0.80, 0.50)),
    ("pants", 0.80, (0.25, 0.45, 0.75, 0.86)),
    ("footwear", 0.70, (0.25, 0.84, 0.75, 1.00)),
)


class FixedDetector:
    """Answers the same garments, placed by fractions of the photo, best score first."""

    name = "fixed-test-boxes"

    def __init__(self, garments=OUTFIT):
        self.garments = garments

    def detect(self, image, *, masks: bool = True) -> list[Detection]:
        found = [
            Detection(
                Box(round(l * image.width), round(t * image.height), round(r * image.width), round(b * image.height)),
                label,
                score,
            )
            for label, score, (l, t, r, b) in self.garments
        ]
        return sorted(found, key=lambda d: -d.score)


def serve_real_detector(monkeypatch) -> None:
    """Make load_detector() load the real detector as the service would (see real_detector_manifest)."""
    from shazzam import detector

    if os.environ.get("SHAZZAM_TEST_DETECTOR"):
        monkeypatch.setenv(detector.DETECTOR_ENV, str(REAL_DETECTOR))
    else:
        monkeypatch.delenv(detector.DETECTOR_ENV, raising=False)
    detector._load.cache_clear()


def use_detector(monkeypatch, detector) -> None:
    """Make App.detector answer `detector` for the test (App calls shazzam.detector.load_detector)."""
    monkeypatch.setattr("shazzam.detector.load_detector", lambda *args, **kwargs: detector)


def real_detector_manifest():
    """layers/models/detector_v2.json when its model is committed; skip (fail in CI) otherwise."""
    import json

    if not REAL_DETECTOR.is_file() or not (REAL_DETECTOR.parent / json.loads(REAL_DETECTOR.read_text())["file"]).is_file():
        unavailable(f"no detector model at {REAL_DETECTOR.parent / 'detector_v2.tflite'} (the training issue adds it)")
    return REAL_DETECTOR
