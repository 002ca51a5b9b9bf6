"""Build the demo's bundled sample shop and query photos from clothing-dataset-small.

Run once, from the repository root, with the project's virtual environment:

    .venv/bin/python samples/make_samples.py [--data ../shared/data/clothing-dataset-small]

It (re)writes, deterministically:

* ``samples/shop/images/<class>-<NN>.jpg``: 30 images per class (300 in all) from the dataset's
  ``train`` split, chosen spread over the sorted file names (every Nth), downscaled so the longer
  side is at most 320 px, JPEG quality 85, without EXIF or other metadata;
* ``samples/shop/catalog.json``: one record per image with an invented title, shop-style
  category wording, price, currency, brand, the image path and the original file name;
* ``samples/queries/``: three photos from the ``test`` split (never ``train``), kept full size,
  with ``queries.json`` recording their category and original file name;
* copies of the dataset's CC0 LICENSE in ``samples/shop/`` and ``samples/queries/``.

The dataset is Alexey Grigorev's clothing-dataset-small (CC0 1.0); see samples/ATTRIBUTION.md.
Only Pillow is needed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from PIL import Image, ImageOps

from shazzam.scrape import CATEGORIES

HERE = Path(__file__).resolve().parent
PER_CLASS = 30
MAX_SIDE = 320
QUALITY = 85

CLASSES = CATEGORIES

# Shop wording per class, varied so that shazzam.scrape.normalise_category is exercised.
CATEGORY_WORDING = {
    "dress": ("Dresses", "Summer Dresses", "Dress"),
    "hat": ("Hats & Caps", "Beanies", "Hats"),
    "longsleeve": ("Long Sleeve Tops", "Sweaters", "Knitwear & Jumpers"),
    "outwear": ("Coats & Jackets", "Outerwear", "Jackets"),
    "pants": ("Trousers", "Jeans", "Pants"),
    "shirt": ("Shirts", "Blouses", "Shirts & Blouses"),
    "shoes": ("Sneakers & Shoes", "Boots", "Footwear"),
    "shorts": ("Shorts", "Bermuda Shorts", "Denim Shorts"),
    "skirt": ("Skirts", "Midi Skirts", "Skirt"),
    "t-shirt": ("T-Shirts", "Tees", "T-Shirts & Tops"),
}

# The garment noun in titles, position-aligned with CATEGORY_WORDING ("Boots" -> "boots").
NOUNS = {
    "dress": ("dress", "midi dress", "shift dress"),
    "hat": ("cap", "beanie", "bucket hat"),
    "longsleeve": ("long sleeve top", "sweater", "jumper"),
    "outwear": ("jacket", "coat", "parka"),
    "pants": ("trousers", "jeans", "chinos"),
    "shirt": ("shirt", "blouse", "oxford shirt"),
    "shoes": ("sneakers", "boots", "loafers"),
    "shorts": ("shorts", "bermuda shorts", "denim shorts"),
    "skirt": ("skirt", "midi skirt", "pleated skirt"),
    "t-shirt": ("t-shirt", "tee", "crew neck t-shirt"),
}

ADJECTIVES = (
    "Linen", "Cotton", "Classic", "Relaxed", "Everyday", "Vintage", "Organic", "Soft",
    "Slim", "Urban", "Weekend", "Essential", "Striped", "Lightweight", "Heritage",
)
MATERIALS = ("Linen", "Cotton", "Organic")  # not used for shoes
SEASONS = ("summer", "autumn", "city", "travel", "studio", "")
BRANDS = ("Northbay", "Atelier Lumo", "Kestrel & Co", "Vireo", "Maple Thread", "Odd Sock")
CURRENCY = "EUR"

# Three clear query photos from the test split: (class folder = category, file name).
QUERIES = (
    ("dress", "28b09463-6bbb-491d-9ffc-f36df5c6b211.jpg"),
    ("shoes", "20209905-0830-4a6d-a1cf-7382051f8f18.jpg"),
    ("t-shirt", "05d01bf9-6ff5-4c5e-b946-b4ca004a125b.jpg"),
)


def spread(names: list[str], count: int) -> list[str]:
    """`count` names spread over the sorted list: every Nth, N = len // count."""
    names = sorted(names)
    if len(names) < count:
        raise SystemExit(f"need {count} images, found {len(names)}")
    step = len(names) // count
    return names[::step][:count]


def save_small(source: Path, target: Path) -> None:
    """Downscale (longer side <= MAX_SIDE), RGB, JPEG quality 85, no EXIF/ICC/comments."""
    with Image.open(source) as image:
        image = ImageOps.exif_transpose(image)
        image = image.convert("RGB")
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        clean = Image.new("RGB", image.size)
        clean.paste(image)
        clean.save(target, "JPEG", quality=QUALITY, optimize=True)


def record(cls: str, index: int, file_name: str, source: str) -> dict[str, str]:
    """A deterministic, plausible catalogue record for image `index` (1-based) of class `cls`."""
    class_no = CLASSES.index(cls)
    seed = class_no * PER_CLASS + index
    adjectives = [a for a in ADJECTIVES if cls != "shoes" or a not in MATERIALS]
    adjective = adjectives[(seed * 7) % len(adjectives)]
    season = SEASONS[(seed * 5 + class_no) % len(SEASONS)]
    wording = (index + class_no) % len(CATEGORY_WORDING[cls])
    noun = NOUNS[cls][wording]
    title = " ".join(part for part in (adjective, season, noun) if part)
    price = 9 + (seed * 37) % 140
    return {
        "sku": f"{cls}-{index:02d}",
        "title": title[0].upper() + title[1:],
        "category": CATEGORY_WORDING[cls][wording],
        "price": f"{price}.99",
        "currency": CURRENCY,
        "brand": BRANDS[(seed * 3 + index // 4) % len(BRANDS)],
        "image": f"images/{file_name}",
        "source": source,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("../shared/data/clothing-dataset-small"),
        help="clothing-dataset-small folder (with train/, test/ and LICENSE)",
    )
    parser.add_argument("--out", type=Path, default=HERE, help="samples folder to write")
    args = parser.parse_args(argv)
    data: Path = args.data
    out: Path = args.out
    if not (data / "train").is_dir() or not (data / "test").is_dir():
        parser.error(f"{data} has no train/ and test/ folders")

    shop = out / "shop"
    images = shop / "images"
    queries = out / "queries"
    shutil.rmtree(images, ignore_errors=True)
    shutil.rmtree(queries, ignore_errors=True)
    images.mkdir(parents=True)
    queries.mkdir(parents=True)

    catalog: list[dict[str, str]] = []
    for cls in CLASSES:
        names = [p.name for p in (data / "train" / cls).glob("*.jpg")]
        for index, name in enumerate(spread(names, PER_CLASS), start=1):
            file_name = f"{cls}-{index:02d}.jpg"
            save_small(data / "train" / cls / name, images / file_name)
            catalog.append(record(cls, index, file_name, name))
    (shop / "catalog.json").write_text(json.dumps(catalog, indent=1) + "\n", encoding="utf-8")

    entries = []
    for category, name in QUERIES:
        source = data / "test" / category / name
        target = f"{category}-query.jpg"
        shutil.copyfile(source, queries / target)
        entries.append({"file": target, "category": category, "source": f"test/{category}/{name}"})
    (queries / "queries.json").write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")

    for folder in (shop, queries):
        shutil.copyfile(data / "LICENSE", folder / "LICENSE")

    print(f"wrote {len(catalog)} products to {shop} and {len(entries)} queries to {queries}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
