"""What a garment's result list holds (pipeline.nearest_items) on both databases: k distinct live
items that pass the filters, however the shard's rows crowd them out."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import numpy as np
import pytest

from shazzam import catalogue, ids, pipeline
from shazzam.db import Database
from shazzam.index import ShardReader, publish
from shazzam.scrape import ScrapedProduct
from shazzam.storage import LocalFolderStore

MODEL = "test_model"
DIM = 16
QUERY = np.linspace(1.0, 2.0, DIM, dtype=np.float32)


@pytest.fixture
def app(db_url, tmp_path):
    db = Database(db_url).open_connection()
    store = LocalFolderStore(tmp_path / "objects")
    yield SimpleNamespace(db=db, store=store, shards=ShardReader(store), garment_model=SimpleNamespace(name=MODEL))
    db.close()


def near(distance: float, salt: int) -> np.ndarray:
    """A vector about `distance` (L1, before normalising) from QUERY."""
    direction = np.random.default_rng(salt).random(DIM).astype(np.float32)
    return QUERY + distance * direction / direction.sum()


def add_items(app, shop_url: str, distances: list[float], pictures: int = 1, shop_name: str | None = None, salt: int = 0) -> list[str]:
    """One product per distance, each with `pictures` indexed pictures near it; returns product ids."""
    shop_id = catalogue.add_shop(app.db, shop_url, name=shop_name)
    vectors, product_ids = {}, []
    for n, distance in enumerate(distances):
        url = f"{shop_url}p/{salt}-{n}"
        product = ScrapedProduct(url=url, title=f"dress {n}", price=Decimal("20"), currency="EUR", category="dress",
                                 brand=None, sku=f"{salt}-{n}", image_urls=())
        product_ids.append(catalogue.save_product(app.db, shop_id, product))
        for picture in range(pictures):
            image_id = ids.image_id(f"{url}/{picture}.jpg")
            catalogue.save_image(app.db, image_id, f"{url}/{picture}.jpg", product_ids[-1])
            detection_id = ids.detection_id(image_id, 0)
            catalogue.save_detections(app.db, image_id, [{"id": detection_id, "box": [0, 0, 10, 10], "label": "dress", "score": 0.9}])
            vectors[detection_id] = near(distance + picture * 0.01, salt * 100_000 + n * 10 + picture)
    publish(app.store, "dress", add=vectors, model=MODEL)
    return product_ids


def search(app, k: int = 5, **filters) -> list[dict]:
    return pipeline.nearest_items(app, "dress", QUERY, k, pipeline.SearchFilters(**filters))


def test_an_item_with_several_pictures_is_one_result(app):
    add_items(app, "https://shop.example/", [0.1, 1.0, 2.0, 3.0], pictures=3)
    results = search(app, k=3)
    assert [r["title"] for r in results] == ["dress 0", "dress 1", "dress 2"]
    assert results[0]["distance"] == min(r["distance"] for r in results)  # at its nearest picture


def test_dead_items_still_in_the_shard_do_not_shorten_the_list(app):
    dead = add_items(app, "https://shop.example/", [0.1 + 0.01 * n for n in range(12)], salt=1)
    add_items(app, "https://shop.example/", [2.0 + 0.1 * n for n in range(8)], salt=2)
    for product_id in dead:  # marked dead by a scrape; revalidate has not dropped their vectors yet
        catalogue.mark_product_dead(app.db, product_id, "out-of-stock")
    assert len(search(app, k=5)) == 5


def test_a_filter_that_only_far_items_pass_still_finds_them(app):
    add_items(app, "https://big.example/", [0.1 + 0.001 * n for n in range(1100)], shop_name="Big", salt=3)
    add_items(app, "https://small.example/", [3.0, 3.1, 3.2], shop_name="Small", salt=4)
    assert [r["shop"] for r in search(app, k=5, shop="Small")] == ["Small"] * 3


def test_a_shop_is_found_by_its_accented_name_in_any_case(app):
    add_items(app, "https://elan.example/", [0.5], shop_name="Élan Boutique")
    assert catalogue.shop_exists(app.db, "élan boutique") and catalogue.shop_exists(app.db, "ÉLAN BOUTIQUE")
    assert [r["shop"] for r in search(app, shop="élan BOUTIQUE")] == ["Élan Boutique"]
    assert not catalogue.shop_exists(app.db, "Elan Boutique")  # another name
    # The same letters composed otherwise ("E" and a combining acute accent, as macOS may type it) look alike, and match.
    assert [r["shop"] for r in search(app, shop="E\u0301lan boutique")] == ["Élan Boutique"]
    add_items(app, "https://cafe.example/", [0.6], shop_name="Cafe\u0301 Mode", salt=7)
    assert catalogue.shop_exists(app.db, "Café Mode") and catalogue.shop_exists(app.db, "ＣＡＦÉ ＭＯＤＥ")


def test_a_shop_taken_off_leaves_search_and_revalidation_and_comes_back_when_added(app):
    off = add_items(app, "https://closing.example/", [0.1, 0.2], shop_name="Closing", salt=5)
    add_items(app, "https://open.example/", [1.0], shop_name="Open", salt=6)
    assert catalogue.take_shop_off(app.db, "https://Closing.example")  # any spelling of its address
    assert [r["shop"] for r in search(app)] == ["Open"]
    assert catalogue.get_item(app.db, off[0])["is_dead"]
    assert {p["shop_id"] for p in catalogue.products_to_revalidate(app.db)} == {ids.shop_id("https://open.example/")}
    assert not catalogue.take_shop_off(app.db, "https://unknown.example/")
    catalogue.add_shop(app.db, "https://closing.example/")
    assert [r["shop"] for r in search(app)] == ["Closing", "Closing", "Open"]
    assert not catalogue.get_item(app.db, off[0])["is_dead"]



def test_a_shop_taken_off_does_not_crowd_the_others_out_of_search(app, monkeypatch):
    # Its pictures stay in the shard, so that `shops add` brings it back at once, and here they are
    # the nearest, more than a search reads: those of the shops not taken off must still be found.
    monkeypatch.setattr(pipeline, "MAX_CANDIDATES", 40)
    closing = add_items(app, "https://closing.example/", [0.1 + 0.001 * n for n in range(60)], shop_name="Closing", salt=8)
    open_ = add_items(app, "https://open.example/", [2.0, 2.1, 2.2], shop_name="Open", salt=9)
    seller = add_items(app, "https://seller.example/", [3.0], shop_name="Seller", salt=10)
    assert catalogue.link_image(app.db, seller[0], ids.image_id("https://closing.example/p/8-0/0.jpg"))  # a product shot both sell
    assert catalogue.take_shop_off(app.db, "https://closing.example/")
    results = search(app)
    assert results[0]["item_id"] == seller[0] and results[0]["distance"] < 1  # at the shot it shares, still Seller's
    assert {r["item_id"] for r in results[1:]} == set(open_)
    catalogue.add_shop(app.db, "https://closing.example/")
    assert {r["item_id"] for r in search(app)} < {*closing, *seller}  # back at once
