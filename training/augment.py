"""Phone-photo augmentation for garment images, with PIL only (torchvision is not available).

`phone_photo(image, rng)` returns a 224x224 RGB image, like `shazzam.images.standardise_img` does,
but from a random view of the garment: a random resized crop (scale 0.45-1 of the area, aspect
3/4-4/3), a horizontal flip (p 0.5), a small rotation (+-12 degrees, p 0.5, filled by stretching the
edge colour), colour jitter (brightness/contrast/saturation +-25 %, a small hue shift), a slight
blur (p 0.3) and JPEG re-compression (p 0.3). Every draw comes from `rng` (a numpy Generator), so a
fixed seed gives the same views.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from shazzam.images import MODEL_INPUT_SIZE, to_rgb


def random_resized_crop(image: Image.Image, rng: np.random.Generator, size: int = MODEL_INPUT_SIZE,
                        scale: tuple[float, float] = (0.45, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Image.Image:
    width, height = image.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = float(np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]))))
        w = int(round(np.sqrt(target * aspect)))
        h = int(round(np.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h),
                                reducing_gap=None)
    # fallback: the centre square (the evaluation crop, without the 0.875 margin)
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side),
                        reducing_gap=None)


def colour_jitter(image: Image.Image, rng: np.random.Generator, strength: float = 0.25,
                  hue: float = 0.03) -> Image.Image:
    ops = [
        lambda im: ImageEnhance.Brightness(im).enhance(rng.uniform(1 - strength, 1 + strength)),
        lambda im: ImageEnhance.Contrast(im).enhance(rng.uniform(1 - strength, 1 + strength)),
        lambda im: ImageEnhance.Color(im).enhance(rng.uniform(1 - strength, 1 + strength)),
    ]
    for index in rng.permutation(len(ops)):
        image = ops[index](image)
    if hue > 0:
        shift = int(round(rng.uniform(-hue, hue) * 255))
        if shift:
            h, s, v = image.convert("HSV").split()
            h = h.point(lambda p: (p + shift) % 256)
            image = Image.merge("HSV", (h, s, v)).convert("RGB")
    return image


def phone_photo(image: Image.Image, rng: np.random.Generator, size: int = MODEL_INPUT_SIZE) -> Image.Image:
    """One random phone-photo-like view of a decoded image, size x size RGB."""
    image = to_rgb(image)
    view = random_resized_crop(image, rng, size)
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:
        angle = float(rng.uniform(-12, 12))
        # rotate a slightly larger context would be better; zoom in a little so no corner is empty
        zoom = 1 + abs(np.sin(np.radians(angle))) * 1.1
        rotated = view.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False)
        margin = int(round(size * (1 - 1 / zoom) / 2))
        view = rotated.resize((size, size), Image.Resampling.BILINEAR,
                              box=(margin, margin, size - margin, size - margin), reducing_gap=None)
    view = colour_jitter(view, rng)
    if rng.random() < 0.3:
        view = view.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2))))
    if rng.random() < 0.3:
        buffer = io.BytesIO()
        view.save(buffer, format="JPEG", quality=int(rng.integers(40, 91)))
        buffer.seek(0)
        view = Image.open(buffer).convert("RGB")
    return view
