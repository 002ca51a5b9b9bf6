"""The detector's input: one function, shared by training (training/train_detector.py) and serving.

A photo of any shape is letterboxed into a portrait 256 x 384 canvas (the shape of a full-length
street photo, CCP's 2:3): scaled to fit, keeping its aspect, centred, the rest filled with grey
127 (which the model's (x - 127) / 128 normalisation turns into zero). `Letterbox` maps points
back to the original image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

INPUT_WIDTH = 256
INPUT_HEIGHT = 384
FILL = 127


@dataclass(frozen=True)
class Letterbox:
    scale: float  # canvas pixels per original pixel
    pad_x: int
    pad_y: int
    width: int  # the original image's size
    height: int

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        """A canvas point in the original image's pixel coordinates (not clipped)."""
        return (x - self.pad_x) / self.scale, (y - self.pad_y) / self.scale


def letterbox_geometry(width: int, height: int) -> tuple[Letterbox, tuple[int, int]]:
    scale = min(INPUT_WIDTH / width, INPUT_HEIGHT / height)
    new_size = (max(1, min(INPUT_WIDTH, round(width * scale))), max(1, min(INPUT_HEIGHT, round(height * scale))))
    pad_x, pad_y = (INPUT_WIDTH - new_size[0]) // 2, (INPUT_HEIGHT - new_size[1]) // 2
    return Letterbox(scale, pad_x, pad_y, width, height), new_size


def letterbox_image(image: Image.Image, resample: int = Image.Resampling.BILINEAR) -> tuple[Image.Image, Letterbox]:
    """`image` (RGB, or a label map with resample=NEAREST) on the 256 x 384 canvas."""
    geometry, new_size = letterbox_geometry(image.width, image.height)
    fill = (FILL, FILL, FILL) if image.mode == "RGB" else 0
    canvas = Image.new(image.mode, (INPUT_WIDTH, INPUT_HEIGHT), fill)
    canvas.paste(image.resize(new_size, resample), (geometry.pad_x, geometry.pad_y))
    return canvas, geometry


def detector_input(image: Image.Image) -> tuple[np.ndarray, Letterbox]:
    """The model's input tensor, float32 [1, 384, 256, 3] raw RGB 0..255, and how to map back."""
    canvas, geometry = letterbox_image(image)
    return np.asarray(canvas, dtype=np.float32)[None], geometry
