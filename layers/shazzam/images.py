"""Image loading, validation and the one preprocessing both training and serving use.

Scraped and uploaded images come in every shape: huge, truncated, rotated by EXIF, palette,
CMYK, 16-bit, with alpha. `load_image` turns untrusted bytes into a plain RGB `PIL.Image` or
raises `ImageError` with a reason; `standardise_img` makes the square that the models' views
(`model_views`) are cut from, exactly as the models were trained and exported (see
`layers/models/*.md`).
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
# A shop's picture over MAX_PIXELS, up to this, is decoded for the catalogue at half its size or
# less (load_catalogue_image): the 45 to 61 megapixel photos of today's cameras. More would not fit
# detect's memory: a progressive JPEG keeps every coefficient of the full-size picture while it
# decodes, whatever the scale (81 megapixels at half size took 560 MB).
CATALOGUE_SHRINKABLE_PIXELS = 64_000_000
MODEL_INPUT_SIZE = 224
STANDARD_SIZE = 256  # MODEL_INPUT_SIZE / 0.875: the ImageNet evaluation crop keeps the centre 87.5 %
PAD_COLOUR = (255, 255, 255)
# standardise_img resizes only the centre square of an image whose longer side is more than this many times its shorter.
MAX_ASPECT = 4

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "HEIF", "AVIF"})
READABLE_FORMATS = "JPEG, PNG, WebP, HEIC/HEIF, AVIF, GIF, BMP, TIFF"
# How our formats begin (image_format): a file that starts so but does not open is broken, not
# foreign, and a download that does not is no picture (the scraper's test).
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"BM", "BMP"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))
# HEIF and AVIF files name their brand after "ftyp" at byte 4: what phones and image CDNs write.
# mif1 and msf1 are either's (pillow-heif and Pillow's AVIF plugin both try them).
_FTYP_BRANDS = {**dict.fromkeys((b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"), "HEIF"),
                b"avif": "AVIF", b"avis": "AVIF"}

# Phones send HEIC: pillow-heif teaches Pillow to open it like any other format.
pillow_heif.register_heif_opener()


class ImageError(ValueError):
    """The bytes are not an image we accept; the message says why, `kind` says which way:
    `empty`, `too_large` (bytes or pixels), `unsupported` (not an image, or a format we do not
    read) or `corrupt` (one of our formats, but broken or truncated)."""

    def __init__(self, message: str, kind: str = "corrupt"):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Box:
    """A pixel box, left/top inclusive, right/bottom exclusive (PIL's crop convention)."""

    left: int
    top: int
    right: int
    bottom: int

    @classmethod
    def whole(cls, image: Image.Image) -> "Box":
        return cls(0, 0, image.width, image.height)

    def as_list(self) -> list[int]:
        return [self.left, self.top, self.right, self.bottom]

    @property
    def area(self) -> int:
        return (self.right - self.left) * (self.bottom - self.top)


# What Pillow's parsers raise on broken data.
PILLOW_DATA_ERRORS = (OSError, SyntaxError, ValueError, EOFError, RuntimeError, struct.error, IndexError, TypeError, KeyError)


def _check_length(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise ImageError(f"file is {len(data)} bytes, more than the {max_bytes} allowed", "too_large")


def load_image(data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS, shrinkable_pixels: int = 0) -> Image.Image:
    """Decode untrusted bytes into an upright RGB image, or raise ImageError. A JPEG of more than
    max_pixels, up to shrinkable_pixels, is decoded at 1/2, 1/4 or 1/8 of its size, the largest
    within max_pixels (libjpeg scales as it decodes: the full-size pixels never exist)."""
    if not data:
        raise ImageError("empty file (0 bytes)", "empty")
    _check_length(data, max_bytes)
    try:
        with warnings.catch_warnings():
            # Pillow warns, then errors, on bombs past its own limit; ours applies before decoding.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ALLOWED_FORMATS:
                raise ImageError(f"{image.format} is not a format we read ({READABLE_FORMATS})", "unsupported")
            width, height = image.size
            if width < 1 or height < 1:
                raise ImageError("image has no pixels")
            if (scale := _decoding_scale(image, max_pixels, shrinkable_pixels)) > 1:
                image.draft(image.mode, (width // scale, height // scale))
                if image.width * image.height > max_pixels:  # Pillow could not scale this one
                    raise _too_many_pixels(width, height, max_pixels)
            # load() decodes the first frame of an animation or a multi-page file, and a HEIF's
            # primary image: the picture a viewer shows. Counting frames (n_frames) would parse
            # every frame, which is slow for many and fails on a broken one after the first.
            image.load()
            image = to_rgb(_upright(image))
    except ImageError:
        raise
    except UnidentifiedImageError:
        if image_format(data) is not None:
            raise ImageError("corrupt or truncated image (its header is broken)") from None
        raise ImageError(f"not an image in a format we read ({READABLE_FORMATS})", "unsupported") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"too many pixels: {exc}", "too_large") from exc
    except PILLOW_DATA_ERRORS as exc:
        raise ImageError(f"corrupt or truncated image: {exc}") from exc
    return image


def load_catalogue_image(data: bytes) -> Image.Image:
    """A shop's picture as detect and standardise both decode it (detect's boxes are in its pixels,
    and standardise crops them from the same): over MAX_PIXELS, a JPEG up to
    CATALOGUE_SHRINKABLE_PIXELS is decoded at a reduced scale. A search's photo keeps its 413."""
    return load_image(data, max_pixels=MAX_PIXELS, shrinkable_pixels=CATALOGUE_SHRINKABLE_PIXELS)


def check_catalogue_size(data: bytes) -> None:
    """Raise ImageError (too_large) when load_catalogue_image would refuse the bytes for their size,
    from their header alone: the scraper says so, rather than storing a picture detect refuses for
    good. What is broken or foreign is load_image's to say."""
    _check_length(data, MAX_BYTES)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError(f"too many pixels: {exc}", "too_large") from exc
    except PILLOW_DATA_ERRORS:
        return  # broken or foreign (UnidentifiedImageError is an OSError)
    with image:
        _decoding_scale(image, MAX_PIXELS, CATALOGUE_SHRINKABLE_PIXELS)


def _decoding_scale(image: Image.Image, max_pixels: int, shrinkable_pixels: int) -> int:
    """1 when the image (opened, not decoded) fits max_pixels; else the scale (2, 4 or 8) at which
    a JPEG of at most shrinkable_pixels fits it. ImageError (too_large) when neither."""
    width, height = image.size
    if width * height <= max_pixels:
        return 1
    if image.format in ("JPEG", "MPO") and width * height <= shrinkable_pixels:
        for scale in (2, 4, 8):
            if -(-width // scale) * -(-height // scale) <= max_pixels:  # libjpeg rounds a scaled side up
                return scale
    raise _too_many_pixels(width, height, max_pixels)


def _too_many_pixels(width: int, height: int, max_pixels: int) -> ImageError:
    return ImageError(f"image is {width}x{height} = {width * height} pixels, more than the {max_pixels} allowed", "too_large")


def _upright(image: Image.Image) -> Image.Image:
    """The image as its EXIF orientation says it is seen; as stored when its EXIF is unreadable."""
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError, KeyError):
        log.warning("unreadable EXIF: the image is used as stored")
        return image


def image_format(data: bytes) -> str | None:
    """Which of our formats the bytes start like (as ALLOWED_FORMATS names it), whatever a
    Content-Type said; None if none."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":  # not a WAV or an AVI, which are RIFF files too
        return "WEBP"
    if data[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(bytes(data[8:12]))
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """Any colour mode to 8-bit RGB; transparency (an alpha channel, or the transparent colour or
    palette entries of a PNG or GIF) is flattened on white. Integer arithmetic and one full-size
    copy at a time: a 40-megapixel image must fit the functions' memory."""
    key = image.info.get("transparency")
    if image.mode in WIDE_GREY_MODES:
        array = np.asarray(image)
        opaque = None if key is None or isinstance(key, bytes) else array != key
        image = Image.fromarray(_eight_bit_grey(array, image.mode), "L")
        if opaque is not None:
            image.putalpha(Image.fromarray(opaque.astype(np.uint8) * 255, "L"))
    elif key is not None and image.mode in ("RGB", "L", "P"):
        image = image.convert("RGBA")  # the transparent colour or palette entries become alpha
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, PAD_COLOUR)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


# Rows of a wide grey image converted at a time: each step makes full-size temporaries (NaN-free
# copy, scaled, clipped), and a 40-megapixel float image's took about 800 MB at once.
_BAND_PIXELS = 1 << 20


def _bands(array: np.ndarray) -> Iterator[slice]:
    rows = max(1, _BAND_PIXELS // max(1, array.shape[1]))
    return (slice(start, start + rows) for start in range(0, len(array), rows))


def _eight_bit_grey(array: np.ndarray, mode: str) -> np.ndarray:
    """16-bit (or 32-bit int) grey to 8 bits as the eye sees it (value / 257), float 0..1 to 0..255.
    A 32-bit image whose values all fit 8 bits is taken as 8-bit. Converted a band of rows at a
    time, so the temporaries are a band's, not the image's."""
    grey = np.empty(array.shape, np.uint8)
    if mode == "F":
        tops = [np.nanmax(array[rows]) for rows in _bands(array) if not np.isnan(array[rows]).all()]
        scale = 255.0 if not tops or max(tops) <= 1.0 else 1.0
        for rows in _bands(array):
            grey[rows] = np.clip(np.nan_to_num(array[rows], nan=0.0) * scale, 0, 255).astype(np.uint8)
    elif mode == "I" and (not array.size or array.max() <= 255):
        for rows in _bands(array):
            grey[rows] = np.clip(array[rows], 0, 255).astype(np.uint8)
    else:
        for rows in _bands(array):
            grey[rows] = (np.clip(array[rows], 0, 65535) // 257).astype(np.uint8)
    return grey


def get_subsection_of_image(image: Image.Image, box: Box | list[int] | tuple[int, int, int, int]) -> Image.Image:
    """Crop `box` out of `image`, clamped to the image; raises ImageError for an empty box."""
    if not isinstance(box, Box):
        box = Box(*(int(round(v)) for v in box))
    left, top = max(0, box.left), max(0, box.top)
    right, bottom = min(image.width, box.right), min(image.height, box.bottom)
    if right <= left or bottom <= top:
        raise ImageError(f"box {box.as_list()} is empty inside a {image.width}x{image.height} image")
    return image.crop((left, top, right, bottom))


def standardise_img(image: Image.Image) -> Image.Image:
    """The standardised image: RGB, shorter side resized to 256 (224 / 0.875), the centre square.

    What the ingest pipeline stores and the garment model's views are cut from (`model_views`).
    Centre-cropping beats padding or squashing: measured on clothing-dataset-small (precision@10,
    L1 on L2-normalised embeddings), the ImageNet crop gave 0.751, against 0.708 when padding to a
    square on white and 0.701 when squashing to a square (see layers/models/garment_v0.md).
    """
    image = to_rgb(image)
    scale = STANDARD_SIZE / min(image.width, image.height)
    size = (max(STANDARD_SIZE, round(image.width * scale)), max(STANDARD_SIZE, round(image.height * scale)))
    left, top = (size[0] - STANDARD_SIZE) // 2, (size[1] - STANDARD_SIZE) // 2
    if max(size) > MAX_ASPECT * STANDARD_SIZE:
        # A sliver resized whole would be a huge strip (a 100000 x 1 box: 25.6 million x 256 pixels):
        # resize only the part of it that becomes the square. The same pixels, but for rounding (at
        # most 1 level), so it is kept to slivers: every other image stays byte for byte what the
        # models were trained and exported on.
        sx, sy = image.width / size[0], image.height / size[1]
        box = (left * sx, top * sy, (left + STANDARD_SIZE) * sx, (top + STANDARD_SIZE) * sy)
        return image.resize((STANDARD_SIZE, STANDARD_SIZE), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
    resized = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
    return resized.crop((left, top, left + STANDARD_SIZE, top + STANDARD_SIZE))


def _check_standardised(standardised: Image.Image) -> None:
    if standardised.size != (STANDARD_SIZE, STANDARD_SIZE) or standardised.mode != "RGB":
        raise ValueError(
            f"a standardised image is a {STANDARD_SIZE}x{STANDARD_SIZE} RGB image from standardise_img, "
            f"got {standardised.size[0]}x{standardised.size[1]} {standardised.mode}"
        )


def centre_view(standardised: Image.Image) -> Image.Image:
    """The centre 224 x 224 of a standardised image: the ImageNet evaluation crop, every model's input."""
    _check_standardised(standardised)
    margin = (STANDARD_SIZE - MODEL_INPUT_SIZE) // 2
    return standardised.crop((margin, margin, margin + MODEL_INPUT_SIZE, margin + MODEL_INPUT_SIZE))


def whole_view(standardised: Image.Image) -> Image.Image:
    """The whole standardised square resized to 224 x 224: the garment's full width or height, its edges too."""
    _check_standardised(standardised)
    return standardised.resize((MODEL_INPUT_SIZE, MODEL_INPUT_SIZE), Image.Resampling.BILINEAR)


# The views a model manifest may name (input.views); a model averages its outputs over them.
VIEWS = {"centre": centre_view, "whole": whole_view}


def model_input(view: Image.Image) -> np.ndarray:
    """One 224 x 224 RGB view as the float32 NHWC batch of one, raw 0..255, that the models take."""
    if view.size != (MODEL_INPUT_SIZE, MODEL_INPUT_SIZE) or view.mode != "RGB":
        raise ValueError(
            f"model input must be a {MODEL_INPUT_SIZE}x{MODEL_INPUT_SIZE} RGB view of a standardised image, "
            f"got {view.size[0]}x{view.size[1]} {view.mode}"
        )
    return np.asarray(view, dtype=np.float32)[np.newaxis]


def model_views(standardised: Image.Image, views: tuple[str, ...] = ("centre",)) -> np.ndarray:
    """The named views of a standardised image as a float32 batch [len(views), 224, 224, 3]."""
    unknown = [name for name in views if name not in VIEWS]
    if unknown or not views:
        raise ValueError(f"unknown model views {unknown or list(views)}: choose from {sorted(VIEWS)}")
    return np.concatenate([model_input(VIEWS[name](standardised)) for name in views])


def to_model_input(image: Image.Image) -> np.ndarray:
    """Any decoded image to the model's single input: standardise_img exactly once, its centre view."""
    return model_input(centre_view(standardise_img(image)))


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
