"""Garment detection. v0 answers one box, the whole image, until the detector issue lands."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from PIL import Image

from shazzam.images import Box


@dataclass(frozen=True)
class Detection:
    box: Box
    label: str | None  # a garment category when the detector knows one
    score: float


class WholeImageDetector:
    """Treats the image as one garment: right for product photos, a stand-in for outfit photos."""

    name = "whole-image-v0"

    def detect(self, image: Image.Image) -> list[Detection]:
        return [Detection(box=Box.whole(image), label=None, score=1.0)]


@functools.cache
def load_detector() -> WholeImageDetector:
    return WholeImageDetector()
