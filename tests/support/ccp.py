"""A CCP-shaped folder (photos/NNNN.jpg, masks/NNNN.png, labels.json) written from arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_ccp(root: Path, labels: list[str], photos: dict[int, tuple[Image.Image, np.ndarray]]) -> Path:
    """`photos` maps a photo number to its picture and its label map (uint8 label numbers, H x W)."""
    (root / "photos").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "labels.json").write_text(json.dumps(labels))
    for number, (picture, mask) in photos.items():
        picture.convert("RGB").save(root / "photos" / f"{number:04d}.jpg", quality=95)
        Image.fromarray(np.asarray(mask, dtype=np.uint8)).save(root / "masks" / f"{number:04d}.png")
    return root
