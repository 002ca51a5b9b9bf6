"""The one taxonomy: its invariants, and every committed model and data mapping agreeing with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shazzam import taxonomy

MODELS = Path(__file__).resolve().parents[2] / "layers" / "models"


def test_invariants_hold():
    taxonomy.check()


def test_every_garment_model_predicts_the_catalogue_categories_in_order():
    manifests = [json.loads(p.read_text()) for p in sorted(MODELS.glob("garment_v*.json"))]
    assert manifests
    for manifest in manifests:
        assert manifest["outputs"]["probabilities"]["categories"] == list(taxonomy.CATEGORIES), manifest["name"]


def test_the_detector_outputs_background_then_the_detector_classes():
    for path in MODELS.glob("detector_v*.json"):
        classes = json.loads(path.read_text())["outputs"]["probabilities"]["classes"]
        assert classes == ["background", *taxonomy.DETECTOR_CLASSES], path.name


def test_ccp_labels_map_into_the_detector_classes_and_skin_is_background():
    names = ["null", "skin", "hair", "jeans", "sunglasses", "sneakers", "blazer", "romper"]
    assert taxonomy.ccp_label_to_channel(names) == [
        0, 0, 0,
        taxonomy.DETECTOR_CLASSES.index("pants") + 1,
        taxonomy.DETECTOR_CLASSES.index("eyewear") + 1,
        taxonomy.DETECTOR_CLASSES.index("footwear") + 1,
        taxonomy.DETECTOR_CLASSES.index("outerwear") + 1,
        taxonomy.DETECTOR_CLASSES.index("dress") + 1,
    ]


def test_each_catalogue_category_is_searched_under_exactly_one_detector_class():
    assert {c: taxonomy.DETECTOR_CLASS_OF[c] for c in ("t-shirt", "shorts", "shoes")} == {
        "t-shirt": "top", "shorts": "pants", "shoes": "footwear"}


def test_category_within_a_detector_class():
    from shazzam.taxonomy import category_within

    scores = {"dress": 0.6, "pants": 0.1, "shorts": 0.3}
    assert category_within(scores, ("pants", "shorts")) == ("shorts", pytest.approx(0.75))  # renormalised within
    assert category_within(scores, None) == ("dress", pytest.approx(0.6))  # no class: any category
    assert category_within(scores, ("hat",)) == ("dress", pytest.approx(0.6))  # none it scores: any category
