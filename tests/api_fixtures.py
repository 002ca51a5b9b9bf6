"""A small served catalogue for the API and browser tests: sample-shop items put straight into the
pipeline (no scrape), so the tests exercise the search API, not the scraper."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from shazzam import catalogue, ids
from shazzam.local.runtime import LocalRuntime
from shazzam.local.sample_shop import SampleShop

SHOPS = ("Vireo Store", "Northbay Outlet")


def build_catalogue(runtime: LocalRuntime, shop: SampleShop, per_category: int = 3) -> list[dict]:
    """Index the first `per_category` sample items of each category, spread over two shops whose
    pictures the sample shop serves on 127.0.0.1; returns the products as saved."""
    shop_ids = [catalogue.add_shop(runtime.db, f"{shop.base_url}{suffix}", name=name) for suffix, name in zip(("", "outlet/"), SHOPS, strict=True)]
    taken: dict[str, int] = {}
    saved = []
    for sku, record in shop.products.items():
        category = sku.rsplit("-", 1)[0]
        if taken.get(category, 0) >= per_category:
            continue
        taken[category] = taken.get(category, 0) + 1
        product = SimpleNamespace(
            url=shop.product_url(sku),
            title=record["title"],
            price=Decimal(record["price"]),
            currency=record["currency"],
            category=category,
            brand=record["brand"],
            sku=sku,
            image_urls=(shop.image_url(sku),),
        )
        product_id = catalogue.save_product(runtime.db, shop_ids[len(saved) % 2], product)
        image_id = ids.image_id(product.image_urls[0])
        catalogue.save_image(runtime.db, image_id, product.image_urls[0], product_id)
        runtime.store.put(ids.incoming_key(image_id), (shop.catalog_dir / record["image"]).read_bytes(), content_type="image/jpeg")
        saved.append({"id": product_id, "sku": sku, "category": category, "price": product.price, "shop": SHOPS[len(saved) % 2]})
    report = runtime.drain()
    assert report.failed == 0, report
    runtime.fire_schedule("index")
    return saved
