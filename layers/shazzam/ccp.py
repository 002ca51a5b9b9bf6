"""CCP (Clothing Co-Parsing, ../shared/data/ccp) as detector data: label maps and ground-truth boxes.

Shared by training (the per-pixel target) and evaluation (the boxes). numpy and Pillow only.

- `channel_map(mask)`: CCP's 59 labels mapped through shazzam.taxonomy.CCP onto the detector's
  output channels (0 = background, i + 1 = DETECTOR_CLASSES[i]); what the model is trained on.
- `ground_truth(mask)`: one box per detector class present in the photo, the extent of all its
  pixels after dropping specks, its connected pieces (8-connected) smaller than
  shazzam.regions.MIN_AREA_FRACTION (0.02%) of the photo's area. Two shoes are one footwear box.
- `CCP.garments(numbers)`: each garment whose CCP label names one catalogue category
  (shazzam.taxonomy.CCP_CATEGORY), with its mask's box; `CCP.garment_crops(numbers)` cuts each out
  of its photo, as the detector's box would cut it: street-photo queries for the garment model,
  and extra training images.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from shazzam.images import ImageError, get_subsection_of_image, load_image
from shazzam.regions import MIN_AREA_FRACTION, label_map_regions
from shazzam.taxonomy import CCP_CATEGORY, DETECTOR_CLASSES, ccp_label_to_channel

VALIDATION = range(701, 801)  # photos 0701..0800: never trained on
TRAINING = range(1, 701)


def training_photos(text: str) -> range:
    """FIRST-LAST as a range of CCP photo numbers within TRAINING, else ValueError: 0701-0800 judge
    the models and are held out, so nothing is trained or chosen on them."""
    try:
        first, last = (int(n) for n in text.split("-"))
    except ValueError:
        raise ValueError(f"expected FIRST-LAST, got {text!r}") from None
    photos = range(first, last + 1)
    if not (photos and TRAINING.start <= photos.start and photos.stop <= TRAINING.stop):
        raise ValueError(f"CCP photos {text} are not within the training photos "
                         f"{TRAINING.start}-{TRAINING.stop - 1} (0701-0800 are held out)")
    return photos
# a garment crop: all the pixels of one catalogue category in the photo, if they cover at least
# this share of it, and a box at least MIN_CROP_SIDE pixels on its short side
MIN_CROP_AREA_FRACTION = 0.01
MIN_CROP_SIDE = 32


@dataclass(frozen=True)
class GroundTruth:
    label: str  # a detector class
    box: tuple[int, int, int, int]  # left, top, right (exclusive), bottom (exclusive), photo pixels
    area: int  # pixels kept


class CCP:
    """The data set's folder: photos/NNNN.jpg, masks/NNNN.png, labels.json."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.labels: list[str] = json.loads((self.root / "labels.json").read_text())
        self.lut = np.asarray(ccp_label_to_channel(self.labels), dtype=np.uint8)

    def photo_path(self, number: int) -> Path:
        return self.root / "photos" / f"{number:04d}.jpg"

    def mask_path(self, number: int) -> Path:
        return self.root / "masks" / f"{number:04d}.png"

    def numbers(self, numbers: range = VALIDATION) -> list[int]:
        """The photo numbers of `numbers` that have both a photo and a mask."""
        return [n for n in numbers if self.photo_path(n).is_file() and self.mask_path(n).is_file()]

    def photo(self, number: int) -> Image.Image:
        """The photo upright, as the service sees it; ImageError when it does not line up with its
        mask (CCP's masks are drawn on the photos as stored: an EXIF rotation would turn one away)."""
        photo = load_image(self.photo_path(number).read_bytes())
        with Image.open(self.mask_path(number)) as mask:
            if photo.size != mask.size:
                raise ImageError(f"CCP photo {number:04d} is {photo.size[0]}x{photo.size[1]} upright but its mask is "
                                 f"{mask.size[0]}x{mask.size[1]}: an EXIF rotation? (the masks are drawn on the photos as stored)")
        return photo

    def channel_map(self, number: int) -> np.ndarray:
        return channel_map(np.asarray(Image.open(self.mask_path(number))), self.lut)

    def ground_truth(self, number: int, min_area_fraction: float = MIN_AREA_FRACTION) -> list[GroundTruth]:
        return ground_truth(self.channel_map(number), min_area_fraction)

    def garments(self, numbers: range) -> Iterator[tuple[int, str, list[int], Image.Image]]:
        """(photo number, catalogue category, box, photo) of every garment CCP_CATEGORY names, in
        photo then category order; the box [left, top, right, bottom) holds all that category's pixels."""
        label_ids: dict[str, list[int]] = {}
        for index, name in enumerate(self.labels):
            if name in CCP_CATEGORY:
                label_ids.setdefault(CCP_CATEGORY[name], []).append(index)
        for number in self.numbers(numbers):
            mask = np.asarray(Image.open(self.mask_path(number)))
            try:
                photo = self.photo(number)
            except ImageError:  # a street crop fewer; a judge of boxes (detection_eval) refuses instead
                continue
            for category, ids in sorted(label_ids.items()):
                ys, xs = np.nonzero(np.isin(mask, ids))
                if len(ys) < MIN_CROP_AREA_FRACTION * mask.size:
                    continue
                box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
                if min(box[2] - box[0], box[3] - box[1]) < MIN_CROP_SIDE:
                    continue
                yield number, category, box, photo

    def garment_crops(self, numbers: range) -> Iterator[tuple[int, str, Image.Image]]:
        """(photo number, catalogue category, crop) of each of garments(numbers), cut out by its box."""
        for number, category, box, photo in self.garments(numbers):
            yield number, category, get_subsection_of_image(photo, box)


def channel_map(mask: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """A CCP label map (uint8, label numbers) as detector channels (uint8, 0 = background)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a label map is 2-D, got shape {mask.shape}")
    return np.asarray(lut, dtype=np.uint8)[mask]


def ground_truth(channels: np.ndarray, min_area_fraction: float = MIN_AREA_FRACTION) -> list[GroundTruth]:
    """One box per detector class in a channel map (see channel_map), specks dropped; class order."""
    min_pixels = max(1.0, min_area_fraction * channels.size)
    return [
        GroundTruth(DETECTOR_CLASSES[region.label - 1], region.box(), region.area)
        for region in label_map_regions(channels, range(1, len(DETECTOR_CLASSES) + 1), min_pixels)
    ]
