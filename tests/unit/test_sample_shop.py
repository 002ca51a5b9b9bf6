"""The bundled sample shop over real HTTP on 127.0.0.1, scraped by shazzam.scrape."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from decimal import Decimal

import pytest
from PIL import Image

from shazzam.local.sample_shop import SampleShop, repository_samples_dir
from shazzam.scrape import CATEGORIES, Fetcher, FetchError, extract_products, scrape_shop


@pytest.fixture
def shop() -> Iterator[SampleShop]:
    with SampleShop(limit=5) as running:
        yield running


def test_bundled_samples_are_complete() -> None:
    samples = repository_samples_dir()
    catalog = json.loads((samples / "shop" / "catalog.json").read_text(encoding="utf-8"))
    assert len(catalog) == 300
    assert len({r["sku"] for r in catalog}) == 300
    for record in catalog:
        assert (samples / "shop" / record["image"]).is_file()
    assert (samples / "shop" / "LICENSE").is_file()
    queries = json.loads((samples / "queries" / "queries.json").read_text(encoding="utf-8"))
    assert {q["category"] for q in queries} == {"dress", "shoes", "t-shirt"}
    for query in queries:
        assert (samples / "queries" / query["file"]).is_file()
        assert query["source"].startswith("test/")


def test_scrape_sample_shop(shop: SampleShop) -> None:
    fetcher = Fetcher(local=True, delay_s=0)
    products = list(scrape_shop(shop.base_url, fetcher))
    assert len(products) == 5
    assert [p.sku for p in products] == list(shop.products)
    for product in products:
        assert product.url == shop.product_url(product.sku)
        assert product.category in CATEGORIES
        assert isinstance(product.price, Decimal) and product.price > 0
        assert product.currency == "EUR"
        assert product.brand and product.title
        [image_url] = product.image_urls
        assert image_url.startswith(shop.base_url)
        image = fetcher.get(image_url)
        assert image.status == 200
        assert image.content_type == "image/jpeg"
        with Image.open(io.BytesIO(image.body)) as picture:
            assert picture.format == "JPEG"
            assert max(picture.size) <= 320


def test_robots_sitemap_and_404(shop: SampleShop) -> None:
    fetcher = Fetcher(local=True, delay_s=0)
    assert fetcher.sitemaps(shop.base_url) == [shop.base_url + "sitemap.xml"]
    assert not fetcher.allowed(shop.base_url + "cart")
    with pytest.raises(FetchError, match="robots"):
        fetcher.get(shop.base_url + "cart")
    assert fetcher.get(shop.base_url + "nothing-here").status == 404
    assert fetcher.get(shop.base_url + "images/../catalog.json").status == 404
    home = fetcher.get(shop.base_url)
    assert home.status == 200 and "products/" in home.text()


def test_removed_product_answers_404(shop: SampleShop) -> None:
    fetcher = Fetcher(local=True, delay_s=0)
    sku = next(iter(shop.products))
    page = fetcher.get(shop.product_url(sku))
    assert page.status == 200
    [product] = extract_products(page.text(), page.url)
    assert product.sku == sku

    shop.remove(sku)
    assert fetcher.get(shop.product_url(sku)).status == 404
    assert fetcher.get(shop.image_url(sku)).status == 404
    remaining = list(scrape_shop(shop.base_url, fetcher))
    assert len(remaining) == 4
    assert sku not in {p.sku for p in remaining}


def test_stop_and_base_url() -> None:
    shop = SampleShop(limit=1)
    with pytest.raises(RuntimeError):
        _ = shop.base_url
    shop.start()
    try:
        assert shop.base_url.startswith("http://127.0.0.1:")
    finally:
        shop.stop()
