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
import itertools
import warnings
from collections.abc import Iterable, Iterator

import numpy as np
from PIL import Image

from shazzam.ids import MAX_ID_LENGTH
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
_HASH_BYTES = HASH_SIDE * HASH_SIDE // 8
_COLOUR_BYTES = COLOUR_SIDE * COLOUR_SIDE * 3
_NO_COLOURS = "00" * _COLOUR_BYTES  # the place of a grid not kept (told apart by PictureHashes._coloured)
_ID = f"S{MAX_ID_LENGTH}"  # an image id's bytes: only scraped pictures have hashes, and their ids are SHA-1 hex
_ROWS_PER_BATCH = 10_000


class PictureHashes:
    """The dHash and colour grid of each stored picture, searched for near-duplicates of a new one
    in one numpy pass (a Python loop over 70,000 pictures took 200 ms for each new one). Ids too are
    kept in arrays, found by a binary search: as strings in a dict and lists, 600,000 pictures took
    312 MB of the scrape function's 512."""

    def __init__(self, stored: Iterable[tuple[str, str, str | None]] = ()) -> None:
        """`stored`: (image id, dHash, colour grid, None when not kept) of each picture, read a batch at a time."""
        self._ids = np.empty(0, _ID)
        self._bits = np.empty((0, _HASH_BYTES), np.uint8)
        self._colours = np.empty((0, _COLOUR_BYTES), np.uint8)
        self._coloured = np.empty(0, bool)
        self._live = np.empty(0, bool)
        self._count = 0
        stored = iter(stored)
        while batch := list(itertools.islice(stored, _ROWS_PER_BATCH)):
            batch_ids, hashes, grids = zip(*batch)
            rows = self._new_rows(len(batch))
            self._ids[rows] = batch_ids
            self._bits[rows] = np.frombuffer(bytes.fromhex("".join(hashes)), np.uint8).reshape(len(batch), _HASH_BYTES)
            self._colours[rows] = np.frombuffer(bytes.fromhex("".join(grid or _NO_COLOURS for grid in grids)), np.uint8).reshape(len(batch), _COLOUR_BYTES)
            self._coloured[rows] = [grid is not None for grid in grids]
            self._live[rows] = True
        self._stored = self._count
        self._stored_order = np.argsort(self._ids[: self._stored])  # the stored pictures' rows by id, for the binary search
        self._added: dict[str, int] = {}  # the row of each picture added since

    def __len__(self) -> int:
        return int(self._live.sum())

    def _new_rows(self, count: int) -> slice:
        """`count` rows more, the arrays grown by an eighth, one at a time, when they are all taken:
        appends stay cheap, and the first one after 600,000 stored pictures does not double their 80 MB."""
        if self._count + count > len(self._ids):
            extra = max(len(self._ids) // 8, count, 64)
            self._ids = _grown(self._ids, extra)
            self._bits = _grown(self._bits, extra)
            self._colours = _grown(self._colours, extra)
            self._coloured = _grown(self._coloured, extra)
            self._live = _grown(self._live, extra)
        self._count += count
        return slice(self._count - count, self._count)

    def _row(self, image_id: str) -> int | None:
        if image_id in self._added:
            return self._added[image_id]
        key = np.array(image_id, _ID)
        index = int(np.searchsorted(self._ids[: self._stored], key, sorter=self._stored_order))
        if index < self._stored and self._ids[self._stored_order[index]] == key:
            return int(self._stored_order[index])
        return None

    def add(self, image_id: str, phash: str, colours: str | None) -> None:
        row = self._row(image_id)
        if row is None:
            row = self._added[image_id] = self._new_rows(1).start
            self._ids[row] = image_id
        self._bits[row] = np.frombuffer(bytes.fromhex(phash), np.uint8)
        self._colours[row] = np.frombuffer(bytes.fromhex(colours or _NO_COLOURS), np.uint8)
        self._coloured[row], self._live[row] = colours is not None, True

    def discard(self, image_id: str) -> None:
        if (row := self._row(image_id)) is not None:
            self._live[row] = False

    def near(self, phash: str, colours: str, other_than: str | None = None) -> Iterator[str]:
        """The pictures within NEAR_DUPLICATE_BITS of the dHash whose colour grid is alike (or not
        kept: stored before grids were), in the order they were added."""
        count = self._count
        query = np.frombuffer(bytes.fromhex(phash), np.uint8)
        distances = _BITS_SET[self._bits[:count] ^ query].sum(axis=1, dtype=np.uint16)
        for row in np.flatnonzero((distances <= NEAR_DUPLICATE_BITS) & self._live[:count]):
            other = self._ids[row].decode()
            if other != other_than and (not self._coloured[row] or same_colours(colours, self._colours[row].tobytes().hex())):
                yield other


def _grown(array: np.ndarray, rows: int) -> np.ndarray:
    return np.concatenate([array, np.zeros((rows, *array.shape[1:]), array.dtype)])
