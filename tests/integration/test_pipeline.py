"""Pipeline behaviours that span stages, on the embedded runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from shazzam import catalogue, ids
from shazzam.local.runtime import LocalRuntime
from shazzam.scrape import ScrapedProduct

REPO = Path(__file__).resolve().parents[2]
IMAGE = (REPO / "samples" / "shop" / "images" / "skirt-02.jpg").read_bytes()


@pytest.fixture
def runtime(tmp_path):
    runtime = LocalRuntime(tmp_path / "data")
    yield runtime
    runtime.close()


def upload_product(runtime, category: str) -> str:
    shop_id = catalogue.add_shop(runtime.db, "https://shop.example/")
    product = ScrapedProduct(
        url="https://shop.example/p/1", title="A skirt", price=None, currency=None, category=category,
        brand=None, sku="1", image_urls=("https://shop.example/i/1.jpg",),
    )
    product_id = catalogue.save_product(runtime.db, shop_id, product)
    image_id = ids.image_id(product.image_urls[0])
    catalogue.save_image(runtime.db, image_id, product.image_urls[0], product_id)
    runtime.store.put(ids.incoming_key(image_id), IMAGE)
    runtime.drain()
    return runtime.fire_schedule("index")


def test_an_item_that_changes_category_moves_shard(runtime):
    assert upload_product(runtime, "dress") == {"dress": {"added": 1, "removed": 0, "total": 1}}
    report = upload_product(runtime, "skirt")  # the shop re-files the product
    assert report == {"dress": {"added": 0, "removed": 1, "total": 0}, "skirt": {"added": 1, "removed": 0, "total": 1}}
    runtime.app.shards.manifest_ttl_s = 0
    assert runtime.app.shards.categories() == {"dress": 0, "skirt": 1}


def test_the_product_category_wins_over_the_classifier(runtime):
    upload_product(runtime, "hat")  # a skirt photo, filed by the shop as a hat
    (row,) = runtime.db.run_query("SELECT category, embedding_status FROM detections")
    assert row == {"category": "hat", "embedding_status": "indexed"}


def test_without_a_product_category_the_classifier_decides(runtime):
    runtime.store.put("incoming/upload-1", IMAGE)
    runtime.drain()
    runtime.fire_schedule("index")
    (row,) = runtime.db.run_query("SELECT category, category_confidence FROM detections")
    assert row["category"] == "skirt" and row["category_confidence"] > 0.5


def test_ingest_and_search_preprocess_a_photo_identically(runtime):
    """The catalogue vector (crop -> PNG -> embed) equals the query vector and the training input's."""
    import numpy as np

    from shazzam.distance import quantise
    from shazzam.images import load_image, standardise_img, to_model_input

    runtime.store.put("incoming/upload-1", IMAGE)
    runtime.drain()
    runtime.fire_schedule("index")
    shard = runtime.app.shards.shard(runtime.db.run_query("SELECT category FROM detections")[0]["category"])
    stored = runtime.app.garment_model.predict(load_image(IMAGE)).embedding
    np.testing.assert_array_equal(shard.codes[0], quantise(stored))
    # what training fed the model is what the standardise stage stores (lossless PNG)
    np.testing.assert_array_equal(to_model_input(load_image(IMAGE))[0], np.asarray(standardise_img(load_image(IMAGE)), np.float32))
    ((detection_id, distance),) = runtime.app.shards.search(shard.category, stored, 1)
    assert detection_id == "upload-1-000" and distance == pytest.approx(0.0, abs=1e-4)
