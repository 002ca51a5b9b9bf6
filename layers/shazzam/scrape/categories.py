"""The ten garment categories and the mapping of a shop's wording onto them."""

from __future__ import annotations

import re

CATEGORIES = (
    "dress",
    "hat",
    "longsleeve",
    "outwear",
    "pants",
    "shirt",
    "shoes",
    "shorts",
    "skirt",
    "t-shirt",
)

# Most specific first: compounds ("dress shirt"), "long sleeve" before "t-shirt", "t-shirt"
# before "shirt", "shorts" before "jeans". Each entry is (phrase, category); a phrase matches
# whole words of the text lower-cased with every run of punctuation turned into one space.
_CATEGORY_PHRASES: tuple[tuple[str, str], ...] = (
    # compounds whose first word names another category
    ("dress shirts", "shirt"),
    ("dress shirt", "shirt"),
    ("dress pants", "pants"),
    ("dress trousers", "pants"),
    ("dress shoes", "shoes"),
    # longsleeve wording that may also say "t-shirt"
    ("long sleeves", "longsleeve"),
    ("long sleeve", "longsleeve"),
    ("long sleeved", "longsleeve"),
    ("longsleeves", "longsleeve"),
    ("longsleeve", "longsleeve"),
    # t-shirt
    ("t shirts", "t-shirt"),
    ("t shirt", "t-shirt"),
    ("tshirts", "t-shirt"),
    ("tshirt", "t-shirt"),
    ("tees", "t-shirt"),
    ("tee", "t-shirt"),
    # longsleeve
    ("sweatshirts", "longsleeve"),
    ("sweatshirt", "longsleeve"),
    ("sweaters", "longsleeve"),
    ("sweater", "longsleeve"),
    ("jumpers", "longsleeve"),
    ("jumper", "longsleeve"),
    ("pullovers", "longsleeve"),
    ("pullover", "longsleeve"),
    ("hoodies", "longsleeve"),
    ("hoodie", "longsleeve"),
    ("cardigans", "longsleeve"),
    ("cardigan", "longsleeve"),
    ("knitwear", "longsleeve"),
    # outwear
    ("outerwear", "outwear"),
    ("outwear", "outwear"),
    ("coats", "outwear"),
    ("coat", "outwear"),
    ("jackets", "outwear"),
    ("jacket", "outwear"),
    ("parkas", "outwear"),
    ("parka", "outwear"),
    ("blazers", "outwear"),
    ("blazer", "outwear"),
    ("anoraks", "outwear"),
    ("anorak", "outwear"),
    ("gilets", "outwear"),
    ("gilet", "outwear"),
    # shorts (before pants: "jean shorts" is shorts)
    ("shorts", "shorts"),
    ("bermudas", "shorts"),
    ("bermuda", "shorts"),
    # skirt
    ("skirts", "skirt"),
    ("skirt", "skirt"),
    # dress
    ("dresses", "dress"),
    ("dress", "dress"),
    ("gowns", "dress"),
    ("gown", "dress"),
    # pants
    ("pants", "pants"),
    ("trousers", "pants"),
    ("trouser", "pants"),
    ("jeans", "pants"),
    ("chinos", "pants"),
    ("leggings", "pants"),
    ("joggers", "pants"),
    # shoes
    ("shoes", "shoes"),
    ("shoe", "shoes"),
    ("sneakers", "shoes"),
    ("sneaker", "shoes"),
    ("trainers", "shoes"),
    ("boots", "shoes"),
    ("boot", "shoes"),
    ("sandals", "shoes"),
    ("sandal", "shoes"),
    ("loafers", "shoes"),
    ("heels", "shoes"),
    ("footwear", "shoes"),
    # hat
    ("hats", "hat"),
    ("hat", "hat"),
    ("caps", "hat"),
    ("cap", "hat"),
    ("beanies", "hat"),
    ("beanie", "hat"),
    ("headwear", "hat"),
    # shirt
    ("shirts", "shirt"),
    ("shirt", "shirt"),
    ("blouses", "shirt"),
    ("blouse", "shirt"),
)


def _normalise_words(text: str) -> str:
    """Lower-case, turn every run of non-alphanumerics into one space, pad with spaces."""
    return " " + re.sub(r"[^0-9a-z]+", " ", text.lower()).strip() + " "


def normalise_category(text: str | None) -> str | None:
    """Map a shop's category wording ("T-Shirts", "Coats & Jackets") to one of CATEGORIES.

    Matches whole words, most specific phrase first; unknown wording gives None.
    """
    if not text:
        return None
    words = _normalise_words(str(text))
    if words.strip() == "":
        return None
    for phrase, category in _CATEGORY_PHRASES:
        if f" {phrase} " in words:
            return category
    return None
