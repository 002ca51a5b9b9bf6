"""Which image: a 256-bit difference hash (dHash) and a 4 x 4 grid of mean colours. (Whether the
bytes are an image at all is shazzam.images.image_format's to say, from the signatures of the
formats load_image reads: one list, for the scraper and detect alike.)

Two downloads are the same picture when their bytes hash alike (sha256), or, re-encoded or
resized by a CDN, when their dHashes differ in at most ``NEAR_DUPLICATE_BITS`` bits and their
colour grids by at most ``COLOUR_TOLERANCE`` in every cell. Measured on the 300 sample-shop
photos: re-encoded and resized copies (0.5x-1.5x, JPEG quality 60-90) stay within 15 bits of the
original, while the closest two different photos are 45 bits apart. A 64-bit (8x8) dHash was not
enough: product shots on plain backgrounds collided within 2 bits. The dHash sees only grey
levels, so the same tee shot in red and in navy (a shop's colour variants, 2-7 bits apart) took
one for a copy of the other, and the second colour was never searchable: on 120 sample-shop
photos, copies as above stay within 7.7 of the original's grid in every cell (of 255, the mean
of the three channels), while nine in ten hue-shifted ones differ by over 15 in some cell and
every one darkened to 0.6 by over 40.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Mapping

import numpy as np
from PIL import Image

from shazzam.images import to_rgb

HASH_SIDE = 16  # a 16x16 grid of horizontal gradients: 256 bits
NEAR_DUPLICATE_BITS = 24
COLOUR_SIDE = 4  # a 4x4 grid of mean RGB: 48 bytes, 96 hex digits
COLOUR_TOLERANCE = 10
MAX_HASH_PIXELS = 64_000_000  # decoding bigger images for a hash is not worth the memory
# A progressive JPEG holds every coefficient of its full size while it decodes, whatever the scale:
# 64 megapixels of CMYK peak at about 540 MB, more than the scrape function's 512.
MAX_PROGRESSIVE_HASH_PIXELS = 40_000_000

def _thumbnail(data: bytes, mode: str, size: tuple[int, int], resample: Image.Resampling, draft: int) -> Image.Image | None:
    """The image in `mode` resized to `size` (a JPEG decoded at a reduced scale, at least `draft`
    pixels a side: much faster); None when Pillow cannot decode it, or it is too big to be worth it.
    Its colours are those detect sees (to_rgb): Pillow's own convert clips 16-bit grey to white, so
    different pictures of it hashed alike."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > (MAX_PROGRESSIVE_HASH_PIXELS if image.info.get("progressive") else MAX_HASH_PIXELS):
                    return None
                image.draft(mode, (draft, draft))
                return to_rgb(image).convert(mode).resize(size, resample)
    except (OSError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError):
        return None


def dhash(data: bytes) -> str | None:
    """256-bit difference hash as 64 hex digits; None when Pillow cannot decode the image."""
    small = _thumbnail(data, "L", (HASH_SIDE + 1, HASH_SIDE), Image.Resampling.LANCZOS, 4 * HASH_SIDE)
    if small is None:
        return None
    pixels = small.tobytes()  # mode L: one byte per pixel, row by row
    bits = 0
    width = HASH_SIDE + 1
    for row in range(HASH_SIDE):
        for column in range(HASH_SIDE):
            bits = bits << 1 | (pixels[row * width + column] > pixels[row * width + column + 1])
    return f"{bits:0{HASH_SIDE * HASH_SIDE // 4}x}"


def colour_grid(data: bytes) -> str | None:
    """The mean colour of each cell of a 4x4 grid over the image, as 96 hex digits (RGB per cell,
    row by row); None when Pillow cannot decode the image."""
    small = _thumbnail(data, "RGB", (COLOUR_SIDE, COLOUR_SIDE), Image.Resampling.BOX, 16 * COLOUR_SIDE)
    return None if small is None else small.tobytes().hex()


def same_colours(a: str, b: str) -> bool:
    """Whether two colour grids differ by at most COLOUR_TOLERANCE in every cell (the mean of the
    three channels' differences)."""
    first, second = bytes.fromhex(a), bytes.fromhex(b)
    return len(first) == len(second) and all(
        sum(abs(x - y) for x, y in zip(first[i : i + 3], second[i : i + 3])) <= 3 * COLOUR_TOLERANCE for i in range(0, len(first), 3)
    )


_BITS_SET = np.array([bin(byte).count("1") for byte in range(256)], np.uint8)


class PictureHashes:
    """The dHash and colour grid of each stored picture, searched for near-duplicates of a new one
    in one numpy pass (a Python loop over 70,000 pictures took 200 ms for each new one)."""

    def __init__(self, entries: Mapping[str, tuple[str, str | None]] | None = None) -> None:
        entries = dict(entries or {})
        self._ids = list(entries)
        self._row = {image_id: row for row, image_id in enumerate(self._ids)}
        self._colours = [colours for _, colours in entries.values()]
        hashes = "".join(phash for phash, _ in entries.values())
        self._bits = np.frombuffer(bytes.fromhex(hashes), np.uint8).reshape(len(self._ids), HASH_SIDE * HASH_SIDE // 8).copy()
        self._live = np.ones(len(self._ids), bool)

    def __len__(self) -> int:
        return int(self._live.sum())

    def add(self, image_id: str, phash: str, colours: str | None) -> None:
        bits = np.frombuffer(bytes.fromhex(phash), np.uint8)
        row = self._row.get(image_id)
        if row is None:
            row = self._row[image_id] = len(self._ids)
            self._ids.append(image_id)
            self._colours.append(colours)
            if row == len(self._bits):  # grown by doubling: appends stay cheap
                self._bits = np.concatenate([self._bits, np.zeros((max(row, 64), bits.size), np.uint8)])
                self._live = np.concatenate([self._live, np.zeros(max(row, 64), bool)])
        self._bits[row], self._colours[row], self._live[row] = bits, colours, True

    def discard(self, image_id: str) -> None:
        if (row := self._row.get(image_id)) is not None:
            self._live[row] = False

    def near(self, phash: str, colours: str, other_than: str | None = None) -> Iterator[str]:
        """The pictures within NEAR_DUPLICATE_BITS of the dHash whose colour grid is alike (or not
        kept: stored before grids were), in the order they were added."""
        count = len(self._ids)
        query = np.frombuffer(bytes.fromhex(phash), np.uint8)
        distances = _BITS_SET[self._bits[:count] ^ query].sum(axis=1, dtype=np.uint16)
        for row in np.flatnonzero((distances <= NEAR_DUPLICATE_BITS) & self._live[:count]):
            other, other_colours = self._ids[row], self._colours[row]
            if other != other_than and (other_colours is None or same_colours(colours, other_colours)):
                yield other
