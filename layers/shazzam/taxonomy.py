"""The one garment taxonomy: catalogue categories, detector classes, and each data set's labels.

Two levels, because the two models see different things:

- ``CATEGORIES``: what the catalogue is sharded by, what the garment classifier predicts and what
  a search may be filtered to. They are clothing-dataset-small's folder names (its labels map
  onto them one to one), in alphabetical order, the order of the classifier's output.
- ``DETECTOR_CLASSES``: what the detector finds in a photo of a person. Coarser, because a
  worn shirt and a worn t-shirt are hard to tell apart at a glance, and wider, because a
  photo also holds bags, glasses and belts. Index 0 of the detector's output is the
  background, so detector class i is output channel i + 1.

``SEARCHABLE`` says which catalogue categories a detected garment may be searched in; the
classifier picks among them on the crop. Classes with none (bag, eyewear, belt) are still
reported with their boxes but have no shard to search until the catalogue sells them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

CATEGORIES: tuple[str, ...] = (
    "dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt",
)

DETECTOR_CLASSES: tuple[str, ...] = (
    "top", "outerwear", "pants", "dress", "skirt", "footwear", "bag", "hat", "eyewear", "belt",
)

SEARCHABLE: dict[str, tuple[str, ...]] = {
    "top": ("longsleeve", "shirt", "t-shirt"),
    "outerwear": ("outwear",),
    "pants": ("pants", "shorts"),
    "dress": ("dress",),
    "skirt": ("skirt",),
    "footwear": ("shoes",),
    "bag": (),
    "hat": ("hat",),
    "eyewear": (),
    "belt": (),
}

# Each catalogue category's detector class (the inverse of SEARCHABLE).
DETECTOR_CLASS_OF: dict[str, str] = {
    category: detector_class for detector_class, categories in SEARCHABLE.items() for category in categories
}

# clothing-dataset-small: folder name -> catalogue category (identical names).
CLOTHING_SMALL: dict[str, str] = {folder: folder for folder in CATEGORIES}

# CCP (Clothing Co-Parsing, ../shared/data/ccp/labels.json): label name -> detector class.
# Labels not listed (null, skin, hair, jewellery, socks, tights, underwear, scarf, gloves, tie,
# "accessories") are not garments we detect: they count as background.
CCP: dict[str, str] = {
    **dict.fromkeys(
        ("blouse", "bodysuit", "hoodie", "jumper", "shirt", "sweater", "sweatshirt", "t-shirt", "top", "vest"), "top"
    ),
    **dict.fromkeys(("blazer", "cape", "cardigan", "coat", "jacket", "suit"), "outerwear"),
    **dict.fromkeys(("jeans", "leggings", "pants", "shorts"), "pants"),
    **dict.fromkeys(("dress", "romper"), "dress"),
    "skirt": "skirt",
    **dict.fromkeys(
        ("boots", "clogs", "flats", "heels", "loafers", "pumps", "sandals", "shoes", "sneakers", "wedges"), "footwear"
    ),
    **dict.fromkeys(("bag", "purse", "wallet"), "bag"),
    "hat": "hat",
    **dict.fromkeys(("glasses", "sunglasses"), "eyewear"),
    "belt": "belt",
}


# CCP label name -> catalogue category, where one label names one category (a "top" or a
# "blouse" could be a shirt, a t-shirt or a longsleeve, so it has none): used to measure the
# garment model on crops of CCP photos, people the embedder never saw (training/choose_views.py).
CCP_CATEGORY: dict[str, str] = {
    "dress": "dress",
    "hat": "hat",
    **dict.fromkeys(("hoodie", "jumper", "sweater", "sweatshirt"), "longsleeve"),
    **dict.fromkeys(("blazer", "coat", "jacket"), "outwear"),
    **dict.fromkeys(("jeans", "pants"), "pants"),
    "shirt": "shirt",
    **dict.fromkeys(
        ("boots", "clogs", "flats", "heels", "loafers", "pumps", "sandals", "shoes", "sneakers", "wedges"), "shoes"
    ),
    "shorts": "shorts",
    "skirt": "skirt",
    "t-shirt": "t-shirt",
}


def ccp_label_to_channel(label_names: list[str]) -> list[int]:
    """A lookup table from CCP label number to detector output channel (0 = background)."""
    return [DETECTOR_CLASSES.index(CCP[name]) + 1 if name in CCP else 0 for name in label_names]


def category_within(probabilities: Mapping[str, float], allowed: Sequence[str] | None) -> tuple[str, float]:
    """The classifier's best category among `allowed` (all when None or empty, or when it gives
    none of them) and its probability among them (renormalised, so 0.9 means 90% of what the
    classifier gives those categories): how a detected garment's category is chosen."""
    names = [c for c in allowed if c in probabilities] if allowed else []
    names = names or list(probabilities)
    best = max(names, key=lambda c: probabilities[c])
    total = sum(probabilities[c] for c in names)
    return best, float(probabilities[best] / total) if total > 0 else 0.0


def check() -> None:
    """The taxonomy's own invariants; a unit test calls this."""
    assert list(CATEGORIES) == sorted(CATEGORIES)
    assert set(SEARCHABLE) == set(DETECTOR_CLASSES)
    assert sorted(DETECTOR_CLASS_OF) == list(CATEGORIES), "every category belongs to exactly one detector class"
    assert set(CCP.values()) <= set(DETECTOR_CLASSES)
    assert set(CCP_CATEGORY.values()) == set(CATEGORIES)
    # a label's category belongs to the label's detector class
    assert all(DETECTOR_CLASS_OF[category] == CCP[label] for label, category in CCP_CATEGORY.items())
