"""Phone-photo views of a garment image, with Pillow and numpy only (seeded, deterministic).

Two transforms share the pieces here:

- `phone_photo(image, rng)`: the training augmentation of the garment models
  (training/train_embedder.py): a 224x224 random view (random resized crop of 45-100 % of the
  area, aspect 3/4-4/3, horizontal flip p 0.5, +-12 degree rotation p 0.5, colour jitter, blur p 0.3, JPEG
  p 0.3). A seed gives the same views.
- `rephotograph(image, rng)`: what `shazzam eval` uses for its robustness figure: the whole
  image as if someone photographed it (a printed or on-screen picture of the garment) with a
  phone. In order, every parameter drawn from `rng`:
  1. random crop keeping 80-100 % of each side;
  2. pasted on a background (a random colour with a linear shading gradient and noise), the
     picture taking 70-90 % of each side of the new frame, at a random place;
  3. rotation by -15..15 degrees (corners filled with the background colour);
  4. perspective: each corner of the frame moved by up to 8 % of its side;
  5. colour: brightness, contrast and saturation x0.75-1.25 in random order, a hue shift of up to
     +-3 % of the circle, a white-balance cast (each channel x0.92-1.08);
  6. Gaussian blur of radius 0.3-1.5 (p 0.7), sensor noise (sigma 0-5 grey levels);
  7. resized so the longer side is 320-800 pixels, then JPEG quality 40-92.
  The result is JPEG bytes (`rephotograph_jpeg`) or their decoded image (`rephotograph`), to be
  fed to the model through the same path as an uploaded photo (`shazzam.images.load_image`,
  `standardise_img`).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from shazzam.images import MODEL_INPUT_SIZE, to_rgb

# --- phone_photo: the training augmentation ---


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


# --- rephotograph: a re-photographed copy of the whole image (the robustness queries) ---

CROP_KEEP = (0.80, 1.0)  # fraction of each side the random crop keeps
PICTURE_FRACTION = (0.70, 0.90)  # fraction of each side of the new frame the picture takes
MAX_ROTATION = 15.0  # degrees
MAX_CORNER_SHIFT = 0.08  # fraction of the side each corner may move (perspective)
WHITE_BALANCE = 0.08  # each channel x (1 +- this)
BLUR = (0.7, 0.3, 1.5)  # probability, radius range
MAX_NOISE = 5.0  # grey levels (sigma)
LONG_SIDE = (320, 800)
JPEG_QUALITY = (40, 92)


def _background(size: tuple[int, int], rng: np.random.Generator) -> tuple[Image.Image, tuple[int, int, int]]:
    """A plain surface: a random colour, a linear shading gradient and a little noise."""
    width, height = size
    colour = rng.uniform(20, 235, size=3)
    direction = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (xs / max(width, 1) - 0.5) * np.cos(direction) + (ys / max(height, 1) - 0.5) * np.sin(direction)
    shade = 1 + rng.uniform(0.1, 0.4) * ramp
    pixels = colour[None, None, :] * shade[:, :, None] + rng.normal(0, 4, size=(height, width, 3))
    fill = tuple(int(c) for c in np.clip(colour, 0, 255))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB"), fill


def perspective_coefficients(source: list[tuple[float, float]], target: list[tuple[float, float]]) -> list[float]:
    """PIL's 8 PERSPECTIVE coefficients mapping each output point `target[i]` to input `source[i]`."""
    rows, rhs = [], []
    for (sx, sy), (tx, ty) in zip(source, target):
        rows.append([tx, ty, 1, 0, 0, 0, -sx * tx, -sx * ty])
        rows.append([0, 0, 0, tx, ty, 1, -sy * tx, -sy * ty])
        rhs += [sx, sy]
    return np.linalg.solve(np.array(rows, dtype=np.float64), np.array(rhs, dtype=np.float64)).tolist()


def rephotograph_jpeg(image: Image.Image, rng: np.random.Generator) -> bytes:
    """JPEG bytes of one re-photographed copy of `image` (see the module's docstring)."""
    image = to_rgb(image)
    width, height = image.size
    # 1. random crop
    keep_w, keep_h = (max(1, int(round(side * rng.uniform(*CROP_KEEP)))) for side in (width, height))
    left = int(rng.integers(0, width - keep_w + 1))
    top = int(rng.integers(0, height - keep_h + 1))
    picture = image.crop((left, top, left + keep_w, top + keep_h))
    # 2. on a background
    fraction = rng.uniform(*PICTURE_FRACTION)
    frame_w, frame_h = int(round(keep_w / fraction)), int(round(keep_h / fraction))
    frame, fill = _background((frame_w, frame_h), rng)
    frame.paste(picture, (int(rng.integers(0, frame_w - keep_w + 1)), int(rng.integers(0, frame_h - keep_h + 1))))
    # 3. rotation
    frame = frame.rotate(float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)), resample=Image.Resampling.BILINEAR,
                         fillcolor=fill)
    # 4. perspective: the frame's corners land on a jittered quadrilateral
    corners = [(0, 0), (frame_w, 0), (frame_w, frame_h), (0, frame_h)]
    shift = rng.uniform(-MAX_CORNER_SHIFT, MAX_CORNER_SHIFT, size=(4, 2)) * [frame_w, frame_h]
    moved = [(x + dx, y + dy) for (x, y), (dx, dy) in zip(corners, shift)]
    frame = frame.transform((frame_w, frame_h), Image.Transform.PERSPECTIVE, perspective_coefficients(corners, moved),
                            resample=Image.Resampling.BILINEAR, fillcolor=fill)
    # 5. colour
    frame = colour_jitter(frame, rng)
    cast = rng.uniform(1 - WHITE_BALANCE, 1 + WHITE_BALANCE, size=3)
    pixels = np.asarray(frame, dtype=np.float32) * cast[None, None, :]
    # 6. blur and noise
    blur_p, *radius = BLUR
    blurred = rng.random() < blur_p
    blur_radius = float(rng.uniform(*radius))
    noise = rng.uniform(0, MAX_NOISE)
    frame = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    if blurred:
        frame = frame.filter(ImageFilter.GaussianBlur(radius=blur_radius))
    pixels = np.asarray(frame, dtype=np.float32) + rng.normal(0, 1, size=(frame_h, frame_w, 3)) * noise
    frame = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    # 7. the phone's resolution and its JPEG
    long_side = int(rng.integers(LONG_SIDE[0], LONG_SIDE[1] + 1))
    scale = long_side / max(frame_w, frame_h)
    frame = frame.resize((max(1, round(frame_w * scale)), max(1, round(frame_h * scale))), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    frame.save(buffer, format="JPEG", quality=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)))
    return buffer.getvalue()


def rephotograph(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One re-photographed copy of `image`, decoded (RGB)."""
    return Image.open(io.BytesIO(rephotograph_jpeg(image, rng))).convert("RGB")
