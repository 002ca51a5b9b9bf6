"""Pipeline rules that need no store or database: which garment a product image shows."""

from __future__ import annotations

from PIL import Image

from shazzam.detector import Detection
from shazzam.images import Box
from shazzam.pipeline import product_garment

PHOTO = Image.new("RGB", (400, 400), "white")


def test_a_product_image_shows_the_best_scored_garment_of_its_category():
    # a shirt's photo with two tops found: the surer one is the shirt, the other a guess
    unsure = Detection(Box(0, 0, 300, 300), "top", 0.4)
    sure = Detection(Box(50, 50, 200, 200), "top", 0.9)
    assert product_garment([unsure, sure], "shirt", PHOTO) is sure


def test_a_product_image_of_no_known_category_shows_its_largest_searchable_garment():
    # the model carries a bag larger than the trousers sold: the bag has no shard to be found in
    top = Detection(Box(100, 0, 200, 80), "top", 0.9)
    bag = Detection(Box(0, 0, 400, 300), "bag", 0.8)
    pants = Detection(Box(50, 100, 350, 400), "pants", 0.7)
    assert bag.box.area > pants.box.area > top.box.area
    assert product_garment([top, bag, pants], None, PHOTO) is pants
