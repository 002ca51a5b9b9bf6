"""Scrape and revalidation passes against the quirky shop, on the embedded runtime (and MariaDB):
what is fetched, stored, deduplicated, tombstoned and revived, read from the shop's request log."""

from __future__ import annotations

import io
import json
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from PIL import Image

from shazzam import catalogue, ids, pipeline
from shazzam.db import Database, metadata, migrate
from shazzam.local.runtime import LocalRuntime
from shazzam.local.sample_shop import SampleShop
from shazzam.scrape import ShopSource
from shazzam.scrape import crawl as crawl_module
from shazzam.scrape.dedup import PictureHashes
from shazzam.scrape.passes import SourcePass, Summary, reembed_pass, revalidate_products
from tests.support.plain_shop import plain_shop  # noqa: F401 - a fixture
from tests.support.quirky_shop import QuirkyShop, jpeg
from tests.support.raw_shop import HANG_UP, RawShop, answer

FAST = {"timeout_s": 1.0, "total_timeout_s": 0.3, "retries": 1, "backoff_s": 0.01, "max_bytes": 2_000_000, "max_retry_after_s": 5}


@pytest.fixture
def shop():
    with QuirkyShop(endless_s=2) as running:
        yield running


@pytest.fixture
def runtime(tmp_path):
    runtime = LocalRuntime(tmp_path / "data")
    yield runtime
    runtime.close()


def register(runtime, shop, **settings) -> str:
    source = ShopSource(base_url=shop.base_url, name="quirky", local=True, delay_s=0, fetch=FAST, **settings)
    return catalogue.save_source(runtime.db, source)


def product(runtime, shop, slug) -> dict:
    return catalogue.products_of_shop(runtime.db, ids.shop_id(shop.base_url))[shop.url(f"products/{slug}.html")]


def image(runtime, shop, name) -> dict:
    return catalogue.get_image(runtime.db, ids.image_id(shop.url(f"images/{name}")))


def incoming(runtime) -> set[str]:
    return {info.key for info in runtime.store.list("incoming/")}


def test_a_pass_over_the_quirky_shop(runtime, shop):
    register(runtime, shop)
    report = pipeline.scrape(runtime.app)
    assert report["shops"] == 1 and report["skipped_by_robots"] == 2  # private/secret.html, private/other.html
    assert report["products_new"] == 15 and report["products_dead"] == 1  # out of stock
    assert report["images_duplicate"] == 2 and report["images_failed"] == 5
    assert {k: v for k, v in report.items() if k.startswith("errors.")} == {
        "errors.host-not-allowed": 2,  # localhost:<port> and 169.254.169.254
        "errors.not-an-image": 1,
        "errors.timeout": 1,  # the endless page
        "errors.too-large": 2,  # the 50 MB images
        "errors.too-many-redirects": 1,
    }
    # Zero requests to disallowed paths or other hosts; one honest user agent.
    paths = shop.paths()
    assert not [p for p in paths if p.startswith("/private/")]
    assert {entry.host for entry in shop.log} == {f"127.0.0.1:{shop.port}"}
    assert paths.count("/robots.txt") == 1 and "/images/other.jpg" not in paths and "/images/logo.png" not in paths
    # Extraction through the quirks.
    entities = product(runtime, shop, "entities")
    assert runtime.db.run_query("SELECT title, price FROM products WHERE id = :id", {"id": entities["id"]})[0] == {"title": 'Café & Co "Midi" dress', "price": 1299}
    assert product(runtime, shop, "out-of-stock")["dead_reason"] == "out-of-stock"
    # The same picture is stored once and linked to every product that shows it.
    shared = image(runtime, shop, "shared.jpg")
    assert image(runtime, shop, "shared-copy.jpg")["duplicate_of"] == shared["id"]  # same bytes
    assert image(runtime, shop, "shared-small.jpg")["duplicate_of"] == shared["id"]  # resized: dHash
    linked = runtime.db.run_query("SELECT product_id FROM product_images WHERE image_id = :id", {"id": shared["id"]})
    assert len(linked) == 4  # twin-a, twin-b, same-bytes, resized
    assert len(incoming(runtime)) == report["images_uploaded"] == 8
    assert image(runtime, shop, "fake.jpg")["status"] == "failed" and ids.incoming_key(image(runtime, shop, "fake.jpg")["id"]) not in incoming(runtime)


def test_a_second_pass_over_an_unchanged_shop_downloads_and_parses_nothing(runtime, shop, monkeypatch):
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    before, uploaded = len(shop.log), incoming(runtime)
    parsed = []
    original = crawl_module.parse_page
    monkeypatch.setattr(crawl_module, "parse_page", lambda html, url: parsed.append(url) or original(html, url))
    report = pipeline.scrape(runtime.app)
    again = [entry.path for entry in shop.log[before:]]
    assert not [p for p in again if p.startswith("/images/")]
    assert parsed == []
    assert report["images_uploaded"] == 0 and report["products_new"] == report["products_changed"] == 0
    assert report["products_unchanged"] == 15 and incoming(runtime) == uploaded


def test_changes_between_passes(runtime, shop):
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    shop.set_price("twin-a", "9.00")  # changed; its image is known (a 304)
    shop.remove("microdata")  # 404
    shop.soft_remove("og")  # 200 "page not found"
    shop.set_stock("out-of-stock", True)  # back in stock: revived, its image fetched now
    before = len(shop.log)
    report = pipeline.scrape(runtime.app)
    # twin-a's price and the other's availability changed; it is revived, two pages are gone
    assert report["products_changed"] == 2 and report["products_revived"] == 1 and report["products_dead"] == 2
    assert report["images_uploaded"] == 1 and report["images_unchanged"] >= 1
    assert [e.path for e in shop.log[before:] if e.path.startswith("/images/")] == ["/images/shared.jpg", "/images/oos.jpg"]
    assert not product(runtime, shop, "twin-a")["is_dead"]
    assert product(runtime, shop, "microdata")["dead_reason"] == "http-404"
    assert product(runtime, shop, "og")["dead_reason"] == "soft-404"
    assert not product(runtime, shop, "out-of-stock")["is_dead"]
    assert ids.incoming_key(image(runtime, shop, "oos.jpg")["id"]) in incoming(runtime)


def test_a_product_page_the_shops_robots_txt_shuts_leaves_search_until_it_opens_again(runtime, shop, monkeypatch):
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    allowing = shop.robots
    monkeypatch.setattr(shop, "robots", lambda: allowing().replace("Disallow: /private/", "Disallow: /private/\nDisallow: /products/og.html"))
    report = pipeline.revalidate(runtime.app)
    og = product(runtime, shop, "og")
    assert og["is_dead"] and og["dead_reason"] == "robots" and report["products_dead"] == 1
    assert not product(runtime, shop, "microdata")["is_dead"]
    monkeypatch.setattr(shop, "robots", allowing)
    assert pipeline.revalidate(runtime.app)["products_revived"] == 1 and not product(runtime, shop, "og")["is_dead"]


def test_a_robots_txt_that_cannot_be_read_keeps_the_crawler_out_but_kills_no_product(runtime, plain_shop):
    """A shop whose robots.txt answers 503 for a while is kept out of (RFC 9309), but its products
    are still on sale: they stay in search, unlike those its robots.txt shuts."""
    shop, answers = one_page_shop(plain_shop, ["img/red.jpg"], lambda n: (200, jpeg(Image.new("RGB", (64, 64), (200, 30, 30))),
                                                                        {"Content-Type": "image/jpeg"}))
    catalogue.save_source(runtime.db, ShopSource(base_url=shop.base_url, name="s", strategy="sitemap", local=True, delay_s=0, fetch=FAST))
    assert pipeline.scrape(runtime.app)["products_new"] == 1
    answers["/robots.txt"] = (503, b"busy")
    report = pipeline.revalidate(runtime.app)
    assert report["errors.robots-unreadable"] == 1 and report["products_dead"] == 0
    assert "/p/tee.html" not in shop.asked[shop.asked.index("/robots.txt", 1):]  # kept out
    [tee] = catalogue.products_of_shop(runtime.db, ids.shop_id(shop.base_url)).values()
    assert not tee["is_dead"] and tee["dead_reason"] is None


def test_a_sold_out_product_stays_dead_while_its_page_is_unchanged(runtime, shop):
    """An unchanged page revives a product only if the page itself had gone: one whose page says
    "sold out" is still sold out while the page says so, and stays out of search."""
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    assert product(runtime, shop, "out-of-stock")["dead_reason"] == "out-of-stock"
    for again in (pipeline.scrape, pipeline.revalidate):  # a 304, then the same bytes in full
        report = again(runtime.app)
        assert report["products_revived"] == 0, again.__name__
        sold_out = product(runtime, shop, "out-of-stock")
        assert sold_out["is_dead"] and sold_out["dead_reason"] == "out-of-stock", again.__name__


def test_revalidate_tombstones_keeps_shared_images_and_revives(runtime, shop):
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    shop.remove("twin-b")
    shop.soft_remove("og")
    report = pipeline.revalidate(runtime.app)
    assert report["products_dead"] == 2 and report["products_revived"] == 0
    twin_b = product(runtime, shop, "twin-b")
    assert twin_b["is_dead"] and twin_b["dead_reason"] == "http-404"
    dead_at = runtime.db.run_query("SELECT dead_at FROM products WHERE id = :id", {"id": twin_b["id"]})[0]["dead_at"]
    assert dead_at is not None
    shared = image(runtime, shop, "shared.jpg")
    assert not shared["is_dead"] and shared["product_id"] != twin_b["id"]  # twin-a still shows it
    assert image(runtime, shop, "og.jpg")["is_dead"]

    for key in incoming(runtime):  # as the pipeline would have consumed them
        runtime.store.delete(key)
        catalogue.update_image(runtime.db, ids.key_stem(key), status="detected")
    shop.restore("og")
    report = pipeline.revalidate(runtime.app)
    assert report["products_revived"] == 1 and not product(runtime, shop, "og")["is_dead"]
    og_image = image(runtime, shop, "og.jpg")
    assert not og_image["is_dead"] and incoming(runtime) == {ids.incoming_key(og_image["id"])}  # ingested again


def _dead_past_the_pruning_age(runtime, shop, slug: str, take_off) -> None:
    """The quirky shop scraped, then `take_off(slug)`; revalidate finds the product dead, and its
    death is dated back past the pruning age."""
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    take_off(slug)
    assert pipeline.revalidate(runtime.app)["products_dead"] == 1
    runtime.db.run_query("UPDATE products SET dead_at = :at WHERE id = :id",
                         {"at": catalogue.utcnow() - catalogue.PRUNE_DEAD_AFTER - timedelta(days=1), "id": product(runtime, shop, slug)["id"]})


def test_a_tombstone_half_a_year_old_is_pruned_and_a_shop_that_lists_it_again_has_it_anew(runtime, shop):
    _dead_past_the_pruning_age(runtime, shop, "og", shop.soft_remove)
    report = pipeline.revalidate(runtime.app)
    assert (report["products_pruned"], report["images_pruned"]) == (1, 1)
    assert shop.url("products/og.html") not in catalogue.products_of_shop(runtime.db, ids.shop_id(shop.base_url))
    assert image(runtime, shop, "og.jpg") is None

    for key in incoming(runtime):  # as the pipeline would have consumed them
        runtime.store.delete(key)
    shop.restore("og")  # its page as it was: without its validators, read as new
    report = pipeline.scrape(runtime.app, force=True)
    assert report["products_new"] == 1
    assert not product(runtime, shop, "og")["is_dead"]
    assert incoming(runtime) == {ids.incoming_key(ids.image_id(shop.url("images/og.jpg")))}


def test_a_tombstone_that_showed_a_copy_is_pruned_in_its_turn(runtime, shop):
    # same-bytes showed shared-copy.jpg, the same bytes as shared.jpg
    _dead_past_the_pruning_age(runtime, shop, "same-bytes", shop.remove)
    report = pipeline.revalidate(runtime.app)
    assert (report["products_pruned"], report["tombstones_kept"]) == (1, 0)
    assert image(runtime, shop, "shared-copy.jpg") is None and not image(runtime, shop, "shared.jpg")["is_dead"]


def _look(base: str, colours: list[str]) -> bytes:
    """A page showing a look: one schema.org Product per colour, each with its own address."""
    data = [{**product_data(base, f"{colour} tee", [f"img/{colour}.jpg"]), "url": f"{base}p/{colour}.html"} for colour in colours]
    return f'<html><head><title>Look</title><script type="application/ld+json">{json.dumps(data)}</script></head></html>'.encode()


def test_a_page_of_two_products_pruned_in_two_runs_brings_both_back(runtime, plain_shop):
    answers = {"/robots.txt": (200, b"")}
    shop = plain_shop(answers)
    base = shop.base_url
    look = (200, _look(base, ["red", "blue"]), {"Content-Type": "text/html"})
    answers["/p/look.html"] = look
    answers["/sitemap.xml"] = (200, f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{base}p/look.html</loc></url></urlset>'.encode())
    for n, colour in enumerate(["red", "blue"]):
        answers[f"/img/{colour}.jpg"] = (200, jpeg(Image.new("RGB", (64, 64), (200, 30 + 100 * n, 30))), {"Content-Type": "image/jpeg"})
    catalogue.save_source(runtime.db, ShopSource(base_url=base, name="looks", strategy="sitemap", local=True, delay_s=0, fetch=FAST))
    assert pipeline.scrape(runtime.app)["products_new"] == 2
    del answers["/p/look.html"]  # taken down: both die
    assert pipeline.scrape(runtime.app, force=True)["products_dead"] == 2
    runtime.db.run_query("UPDATE products SET dead_at = :at", {"at": catalogue.utcnow() - catalogue.PRUNE_DEAD_AFTER - timedelta(days=1)})
    # A run's batch ends between the two (limit 1 stands for the thousandth tombstone).
    assert catalogue.prune_dead_products(runtime.db, catalogue.utcnow() - catalogue.PRUNE_DEAD_AFTER, limit=1)["products_pruned"] == 1
    answers["/p/look.html"] = look  # back exactly as it was
    report = pipeline.scrape(runtime.app, force=True)
    assert (report["products_new"], report["products_revived"]) == (1, 1)
    left = catalogue.products_of_shop(runtime.db, ids.shop_id(base))
    assert len(left) == 2 and not any(row["is_dead"] for row in left.values())


def two_pages_of_a_dress(plain_shop, first: str, listing: dict | None = None) -> tuple:
    """(answers, base): a shop whose sitemap lists `first`, then the dress's own page /p/dress.html
    (category Dresses); `first` shows the dress too, as `listing` (JSON-LD) or as its own page's copy."""
    answers = {"/robots.txt": (200, b"")}
    shop = plain_shop(answers)
    base = shop.base_url
    data = {**product_data(base, "Red dress", ["img/dress.jpg"]), "url": f"{base}p/dress.html", "category": "Dresses"}
    own = (f'<html><head><link rel="canonical" href="{base}p/dress.html"><script type="application/ld+json">{json.dumps(data)}'
           f"</script></head></html>").encode()
    answers["/p/dress.html"] = (200, own, {"Content-Type": "text/html"})
    shown = own if listing is None else f'<html><head><script type="application/ld+json">{json.dumps(listing)}</script></head></html>'.encode()
    answers[first] = (200, shown, {"Content-Type": "text/html"})
    answers["/sitemap.xml"] = (200, f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{base}{first[1:]}</loc></url>'
                                    f"<url><loc>{base}p/dress.html</loc></url></urlset>".encode())
    answers["/img/dress.jpg"] = (200, jpeg(Image.new("RGB", (64, 64), (200, 30, 30))), {"Content-Type": "image/jpeg"})
    return answers, base


def the_dress(runtime, base) -> dict:
    (row,) = runtime.db.run_query("SELECT url, page_url, category, is_dead, dead_reason FROM products")
    assert row["url"] == f"{base}p/dress.html"
    return row


def test_a_product_killed_with_another_page_that_listed_it_comes_back_by_its_own(runtime, plain_shop):
    answers, base = two_pages_of_a_dress(plain_shop, "/sale/dress.html")  # the same page, canonical to its own
    catalogue.save_source(runtime.db, ShopSource(base_url=base, name="sale", strategy="sitemap", local=True, delay_s=0, fetch=FAST))
    assert pipeline.scrape(runtime.app)["products_new"] == 1  # filed under the page read first, its sale address
    del answers["/sale/dress.html"]  # out of the sale: its sale address is gone, and it dies with it
    assert pipeline.scrape(runtime.app, force=True)["products_dead"] == 1
    # Its own page, unchanged, says nothing to a scrape; revalidate reads it (before: the sale 404, for good).
    assert pipeline.revalidate(runtime.app)["products_revived"] == 1
    row = the_dress(runtime, base)
    assert not row["is_dead"] and row["page_url"] == f"{base}p/dress.html"
    assert pipeline.scrape(runtime.app, force=True)["products_dead"] == 0 and not the_dress(runtime, base)["is_dead"]


def test_a_product_a_collection_stopped_listing_comes_back_by_its_own_page_with_its_fields(runtime, plain_shop):
    entry = {"@type": "ItemList", "itemListElement": [
        {"@type": "ListItem", "position": 1, "item": {**product_data("", "Red dress", []), "image": "/img/dress.jpg", "url": "/p/dress.html"}}]}
    answers, base = two_pages_of_a_dress(plain_shop, "/new-in.html", listing={"@context": "https://schema.org", **entry})
    catalogue.save_source(runtime.db, ShopSource(base_url=base, name="new-in", strategy="sitemap", local=True, delay_s=0, fetch=FAST))
    pipeline.scrape(runtime.app)
    tee = {"@context": "https://schema.org", **product_data("", "Tee", []), "image": "/img/dress.jpg", "url": "/p/tee.html"}
    answers["/new-in.html"] = (200, f'<script type="application/ld+json">{json.dumps(tee)}</script>'.encode(), {"Content-Type": "text/html"})
    assert pipeline.scrape(runtime.app, force=True)["products_dead"] == 1  # "removed": the collection moved on
    assert pipeline.revalidate(runtime.app)["products_revived"] == 1
    (row,) = [row for row in runtime.db.run_query("SELECT url, category, is_dead FROM products") if row["url"].endswith("/p/dress.html")]
    assert not row["is_dead"] and row["category"] == "dress"  # its own page's category, which the collection lacked


def test_a_product_address_sent_on_to_a_collection_is_gone_not_the_collections_products(runtime, plain_shop):
    def page(data):
        return 200, f'<html><head><script type="application/ld+json">{json.dumps(data)}</script></head></html>'.encode(), {"Content-Type": "text/html"}

    answers = {"/robots.txt": (200, b"")}
    base = plain_shop(answers).base_url
    tee = {**product_data(base, "Blue tee", ["img/tee.jpg"]), "url": f"{base}p/tee.html", "category": "T-shirts"}
    answers["/p/dress.html"] = page({**product_data(base, "Red dress", ["img/dress.jpg"]), "url": f"{base}p/dress.html", "category": "Dresses"})
    answers["/p/tee.html"] = page(tee)
    answers["/sitemap.xml"] = (200, (f"<urlset xmlns='http://www.sitemaps.org/schemas/sitemap/0.9'><url><loc>{base}p/dress.html</loc></url>"
                                     f"<url><loc>{base}p/tee.html</loc></url></urlset>").encode())
    for name, colour in (("dress", (200, 30, 30)), ("tee", (30, 30, 200))):
        answers[f"/img/{name}.jpg"] = (200, jpeg(Image.new("RGB", (64, 64), colour)), {"Content-Type": "image/jpeg"})
    catalogue.save_source(runtime.db, ShopSource(base_url=base, name="s", strategy="sitemap", local=True, delay_s=0, fetch=FAST))
    pipeline.scrape(runtime.app)
    # The shop removes the dress: its address now sends visitors to the tops, which list the tee (without a category).
    answers["/p/dress.html"] = (301, b"", {"Location": f"{base}collections/tops.html"})
    answers["/collections/tops.html"] = page({"@context": "https://schema.org", "@type": "ItemList", "itemListElement": [
        {"@type": "ListItem", "position": 1, "item": {**tee, "category": None}}]})
    report = pipeline.scrape(runtime.app, force=True)
    pipeline.revalidate(runtime.app)
    rows = {row["url"].rsplit("/", 1)[1]: row for row in runtime.db.run_query("SELECT url, page_url, category, is_dead, dead_reason FROM products")}
    assert (rows["dress.html"]["is_dead"], rows["dress.html"]["dead_reason"]) == (1, "soft-404")
    assert (rows["tee.html"]["page_url"], rows["tee.html"]["category"], rows["tee.html"]["is_dead"]) == (f"{base}p/tee.html", "t-shirt", 0)
    assert report["images_uploaded"] == 0


def test_listing_and_shopify_sources(runtime, shop):
    register(runtime, shop, strategy="listing", listing_urls=("/collections/all",))
    report = pipeline.scrape(runtime.app)
    assert report["products_new"] == 2 and report["images_uploaded"] == 2
    feed = ShopSource(base_url=shop.base_url, strategy="shopify", currency="EUR", local=True, delay_s=0, fetch=FAST)
    catalogue.save_source(runtime.db, feed)  # the same shop, now read through its feed
    report = pipeline.scrape(runtime.app)
    assert report["products_new"] == 1 and report["images_uploaded"] == 1
    assert pipeline.scrape(runtime.app)["products_unchanged"] == 1  # the feed page answers 304
    shop.remove("feed-tee")  # the feed no longer lists it
    # Revalidation leaves feeds to the scrape: only a round over the whole feed can tell a product
    # removed from one pushed onto the next page.
    assert pipeline.revalidate(runtime.app)["products_dead"] == 0
    assert pipeline.scrape(runtime.app, force=True)["products_dead"] == 1
    assert catalogue.products_of_shop(runtime.db, ids.shop_id(shop.base_url))[shop.url("products/feed-tee")]["dead_reason"] == "removed"
    assert pipeline.scrape(runtime.app, force=True)["products_revived"] == 0  # the feed, unchanged since, still leaves it out
    assert catalogue.products_of_shop(runtime.db, ids.shop_id(shop.base_url))[shop.url("products/feed-tee")]["is_dead"]


def feed_state(runtime, shop) -> tuple[dict, dict]:
    """The feed's products, live ({handle: the feed page it is filed under}) and dead ({handle: why})."""
    rows = catalogue.products_of_shop(runtime.db, ids.shop_id(shop.base_url)).values()
    handle = lambda row: row["url"].rsplit("/", 1)[1]  # noqa: E731
    return ({handle(row): row["page_url"] and row["page_url"].rsplit("=", 1)[1] for row in rows if not row["is_dead"]},
            {handle(row): row["dead_reason"] for row in rows if row["is_dead"]})


def one_a_page(runtime, shop, monkeypatch, handles):
    """A Shopify source whose feed lists `handles`, one a page."""
    monkeypatch.setattr(crawl_module, "SHOPIFY_PAGE_SIZE", 1)
    shop.feed_handles = []
    for handle in reversed(handles):
        shop.add_to_feed(handle)
    register(runtime, shop, strategy="shopify", currency="EUR")


def test_a_product_pushed_onto_the_next_feed_page_is_not_removed(db_url, tmp_path, shop, monkeypatch):
    monkeypatch.setattr(crawl_module, "SHOPIFY_PAGE_SIZE", 1)  # one product a feed page
    runtime = LocalRuntime(tmp_path / "data", db_url=db_url)
    try:
        register(runtime, shop, strategy="shopify", currency="EUR")
        shop.add_to_feed("feed-polo")  # page 1: polo, page 2: tee

        def live() -> dict[str, str | None]:
            return feed_state(runtime, shop)[0]

        assert pipeline.scrape(runtime.app)["products_new"] == 2
        assert live() == {"feed-polo": "1", "feed-tee": "2"}
        shop.add_to_feed("feed-vest")  # each moves a page down: vest, polo, tee
        report = pipeline.scrape(runtime.app, force=True)
        assert (report["products_new"], report["products_dead"], report["products_revived"], report["images_uploaded"]) == (1, 0, 0, 1)
        assert live() == {"feed-vest": "1", "feed-polo": "2", "feed-tee": "3"}
        # A pass that stops after the first page: the product it no longer lists is unfiled, not removed.
        shop.add_to_feed("feed-coat")
        report = pipeline.scrape(runtime.app, force=True, limit=1)
        assert (report["products_new"], report["products_dead"]) == (1, 0)
        assert live() == {"feed-coat": "1", "feed-vest": None, "feed-polo": "2", "feed-tee": "3"}
        report = pipeline.scrape(runtime.app, force=True)
        assert (report["products_dead"], report["products_revived"], report["images_uploaded"]) == (0, 0, 0)
        assert live() == {"feed-coat": "1", "feed-vest": "2", "feed-polo": "3", "feed-tee": "4"}
        # Removed from the shop: the others move up a page, and it is found on none by the round's end.
        shop.remove("feed-vest")
        report = pipeline.scrape(runtime.app, force=True)
        assert (report["products_dead"], report["products_revived"], report["images_uploaded"]) == (1, 0, 0)
        assert live() == {"feed-coat": "1", "feed-polo": "2", "feed-tee": "3"}
        assert catalogue.products_of_shop(runtime.db, ids.shop_id(shop.base_url))[shop.url("products/feed-vest")]["dead_reason"] == "removed"
    finally:
        runtime.close()


def test_a_product_listed_on_two_feed_pages_is_filed_under_the_later(runtime, shop, monkeypatch):
    one_a_page(runtime, shop, monkeypatch, ["a", "x", "b"])
    monkeypatch.setattr(crawl_module, "SHOPIFY_PAGE_SIZE", 2)
    served = shop.feed

    def feed(page, limit=250):  # the shop adds "c" just after serving page 1 (a, x)
        answer = served(page, limit)
        if page == 1 and "c" not in shop.feed_handles:
            shop.add_to_feed("c")
        return answer

    monkeypatch.setattr(shop, "feed", feed)
    pipeline.scrape(runtime.app)  # page 2 (x, b) lists x again
    assert feed_state(runtime, shop) == ({"a": "1", "x": "2", "b": "2"}, {})
    report = pipeline.scrape(runtime.app, force=True)  # page 1 (c, a) changed; page 2 the same bytes
    assert report["products_dead"] == 0 and feed_state(runtime, shop) == ({"c": "1", "a": "1", "x": "2", "b": "2"}, {})


def test_a_feed_that_fails_before_its_end_leaves_removals_to_the_products_own_pages(runtime, shop, monkeypatch):
    one_a_page(runtime, shop, monkeypatch, ["a", "b", "c"])
    pipeline.scrape(runtime.app)
    shop.failing_feed_pages = {3, 4, 5}
    shop.remove("a")
    shop.add_to_feed("d")
    shop.add_to_feed("e")  # e | d | b | c: a on no page, b pushed onto the failing page 3
    report = pipeline.scrape(runtime.app, force=True)
    assert report["products_dead"] == 0 and report["errors"] > 0  # no whole round: nothing removed
    assert feed_state(runtime, shop) == ({"e": "1", "d": "2", "a": None, "b": None, "c": "3"}, {})
    report = pipeline.revalidate(runtime.app)  # the unfiled ones' own pages: a's is gone, b's is there
    assert report["products_dead"] == 1
    assert feed_state(runtime, shop) == ({"e": "1", "d": "2", "b": None, "c": "3"}, {"a": "http-404"})


def test_a_feed_page_of_products_without_pictures_is_not_its_end(runtime, shop, monkeypatch):
    one_a_page(runtime, shop, monkeypatch, ["a", "b", "c"])
    pipeline.scrape(runtime.app)
    shop.feed_handles = ["a", "draft", "b", "c"]
    described = shop._feed_product
    monkeypatch.setattr(shop, "_feed_product", lambda handle: {**described(handle), "images": []} if handle == "draft" else described(handle))
    report = pipeline.scrape(runtime.app, force=True)
    assert report["products_dead"] == 0 and feed_state(runtime, shop) == ({"a": "1", "b": "3", "c": "4"}, {})


def test_an_answer_that_is_no_feed_removes_nothing(runtime, shop, monkeypatch):
    one_a_page(runtime, shop, monkeypatch, ["a", "b"])
    pipeline.scrape(runtime.app)
    monkeypatch.setattr(shop, "feed", lambda page, limit=250: {"errors": "Not Found"})
    report = pipeline.scrape(runtime.app, force=True)
    assert report["errors.bad-feed"] == 1 and report["products_dead"] == 0
    assert feed_state(runtime, shop) == ({"a": "1", "b": "2"}, {})


def test_a_shop_saved_under_another_spelling_is_found_by_any(runtime, shop):
    legacy = shop.base_url.rstrip("/")  # as a row from before addresses were made canonical holds it
    runtime.db.run_query("INSERT INTO shops (id, base_url, name, active, created_at, is_local, strategy, settings) "
                         "VALUES (:id, :url, 'quirky', 1, '2026-01-01', 1, 'listing', :settings)",
                         {"id": ids.shop_id(legacy), "url": legacy, "settings": '{"listing_urls": ["/collections/all"]}'})
    assert pipeline.scrape(runtime.app, source=shop.base_url)["shops"] == 1


def test_sources_are_scraped_on_their_schedule(runtime, shop):
    register(runtime, shop, strategy="listing", listing_urls=("/collections/all",), schedule="rate(1 day)")
    assert pipeline.scrape(runtime.app)["shops"] == 1
    assert pipeline.scrape(runtime.app)["shops"] == 0  # not due for a day
    assert pipeline.scrape(runtime.app, force=True)["shops"] == 1
    assert pipeline.scrape(runtime.app, source="quirky")["shops"] == 1
    # `shazzam ingest --shop URL` names the shop: it is scraped now, not skipped as not yet due.
    assert pipeline.scrape(runtime.app, shop_url=shop.base_url)["shops"] == 1
    assert pipeline.scrape(runtime.app, source=shop.base_url.rstrip("/"))["shops"] == 1  # any spelling of its address
    with pytest.raises(ValueError, match="no active shop"):
        pipeline.scrape(runtime.app, source="someone else")


def test_the_scrape_works_on_both_databases(db_url, tmp_path):
    runtime = LocalRuntime(tmp_path / "data", db_url=db_url)
    try:
        with SampleShop(limit=3) as sample:
            catalogue.add_shop(runtime.db, sample.base_url)  # a loopback URL: a local source
            assert pipeline.scrape(runtime.app)["images_uploaded"] == 3
            assert pipeline.scrape(runtime.app)["images_unchanged"] == 3
            sample.remove(next(iter(sample.products)))
            assert pipeline.revalidate(runtime.app)["products_dead"] == 1
    finally:
        runtime.close()


def test_later_migrations_upgrade_a_version_1_database(db_url):
    """A database made by migration 1 alone (before the later versions' columns existed) gains them by ALTER."""
    from shazzam.db import _V2_COLUMNS

    engine = sa.create_engine(db_url)
    old = sa.MetaData()
    for name in ("shops", "products", "images", "detections"):
        table = metadata.tables[name]
        later = {"detections": {"embedded_by"}, "products": {"checked_at"}, "shops": {"attempted_at"},  # versions 3 to 5
                 "images": {"colour_grid"}}.get(name, set())
        added = {column for column, _ in _V2_COLUMNS.get(name, ())} | later
        columns = [sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable) for c in table.columns if c.name not in added]
        sa.Table(name, old, *columns)
    with engine.begin() as connection:
        old.create_all(connection)
        connection.execute(sa.text("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description VARCHAR(255) NOT NULL, applied_at DATETIME NOT NULL)"))
        connection.execute(sa.text("INSERT INTO schema_migrations VALUES (1, 'v1', '2026-01-01 00:00:00')"))
        connection.execute(sa.text("INSERT INTO shops (id, base_url, name, active, created_at) VALUES ('s', 'https://shop.example/', 'x', 1, '2026-01-01 00:00:00')"))
        connection.execute(sa.text("INSERT INTO shops (id, base_url, name, active, created_at) VALUES ('t', 'http://127.0.0.1:8765/', 'y', 1, '2026-01-01 00:00:00')"))
    engine.dispose()
    database = Database(db_url, migrate=False).open_connection()
    assert migrate(database.engine) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert "embedded_by" in {column["name"] for column in sa.inspect(database.engine).get_columns("detections")}
    assert "colour_grid" in {column["name"] for column in sa.inspect(database.engine).get_columns("images")}
    columns = {column["name"] for column in sa.inspect(database.engine).get_columns("products")}
    assert {"availability", "dead_reason", "dead_at", "fingerprint", "checked_at"} <= columns
    local, public = catalogue.active_shops(database)  # ordered by base URL: http://127... first
    assert not public["is_local"] and catalogue.source_of_shop(public).strategy == "auto"
    assert local["is_local"] and catalogue.source_of_shop(local).local  # the demo's shop stays reachable
    database.close()


def test_a_shop_cannot_take_over_another_shops_product(runtime):
    import dataclasses
    from decimal import Decimal

    from shazzam.scrape import Fetcher, ScrapedProduct
    from shazzam.scrape.passes import SourcePass, Summary

    first = catalogue.add_shop(runtime.db, "https://shop.example/")
    second = catalogue.add_shop(runtime.db, "https://shop.example/outlet/")  # two shops on one host
    listed = ScrapedProduct(url="https://shop.example/p/1", title="Coat", price=Decimal("99"), currency="EUR",
                            category="outwear", brand=None, sku="1", image_urls=("https://shop.example/c.jpg",))
    product_id = catalogue.save_product(runtime.db, first, listed)
    summary = Summary()
    source = ShopSource(base_url="https://shop.example/outlet/", local=True)
    outlet = SourcePass(runtime.app, second, source, Fetcher(local=True, delay_s=0, **FAST), summary, PictureHashes())
    outlet.product(dataclasses.replace(listed, title="Taken", price=Decimal("0.01")), "https://shop.example/outlet/x")
    assert summary.errors["product-of-another-shop"] == 1
    kept = catalogue.get_item(runtime.db, product_id)
    assert (kept["title"], kept["price"]) == ("Coat", Decimal("99"))
    assert catalogue.product_shop(runtime.db, product_id) == first


def test_a_shop_row_no_scrape_can_use_is_skipped_and_the_others_are_scraped(runtime, shop):
    from shazzam.db import shops, utcnow

    register(runtime, shop)
    with runtime.db.transaction() as connection:  # saved by an older version, before settings were checked
        connection.execute(sa.insert(shops).values(id="broken", base_url="shop.example.com", name="broken", active=True,
                                                   created_at=utcnow(), is_local=False))
    assert pipeline.scrape(runtime.app)["products"] > 0


def test_an_image_whose_download_failed_for_a_passing_reason_is_fetched_again(runtime, shop):
    register(runtime, shop)
    shop.unavailable_images.add("final.jpg")
    pipeline.scrape(runtime.app)
    assert image(runtime, shop, "final.jpg")["status"] == "failed"
    shop.unavailable_images.clear()
    before = len(shop.log)
    report = pipeline.scrape(runtime.app)  # its page has not changed
    assert image(runtime, shop, "final.jpg")["status"] == "new" and report["images_uploaded"] == 1
    assert ids.incoming_key(image(runtime, shop, "final.jpg")["id"]) in incoming(runtime)
    assert "/images/fake.jpg" not in [e.path for e in shop.log[before:]]  # not an image: not asked for again


def embedded_by_an_older_model(runtime, shop, *names) -> list[dict]:
    """Give the pictures `names` a vector of a model since replaced; what a re-embed pass is given."""
    for name in names:
        image_id = image(runtime, shop, name)["id"]
        catalogue.save_detections(runtime.db, image_id, [{"id": ids.detection_id(image_id, 0), "box": (0, 0, 1, 1), "label": "top", "score": 0.9}])
        catalogue.update_detection(runtime.db, ids.detection_id(image_id, 0), embedding_status="indexed", embedded_by="garment_old")
    return catalogue.images_embedded_by_other_models(runtime.db, runtime.app.garment_model.name)


def test_a_picture_that_fails_to_download_for_re_embedding_is_left_stored_and_fetched_again_next_time(runtime, shop):
    """Marked failed, it was never fetched again, and its item stayed out of search for good."""
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    stored = image(runtime, shop, "final.jpg")
    stale = embedded_by_an_older_model(runtime, shop, "final.jpg")
    picture = shop.images.pop("final.jpg")  # a 404 for now
    assert reembed_pass(runtime.app, stale)["images_failed"] == 1
    assert image(runtime, shop, "final.jpg")["status"] == stored["status"] == "new"
    shop.images["final.jpg"] = picture
    assert [row["id"] for row in embedded_by_an_older_model(runtime, shop)] == [stored["id"]]  # the next run fetches it again
    assert reembed_pass(runtime.app, stale)["images_uploaded"] == 1


def test_a_picture_whose_re_embedding_fetch_keeps_failing_goes_behind_the_others(runtime, shop):
    # Left stale, it headed every run's batch: the pictures after it were never fetched.
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    embedded_by_an_older_model(runtime, shop, "final.jpg", "proto.jpg")
    model = runtime.app.garment_model.name
    first, second = catalogue.images_embedded_by_other_models(runtime.db, model)
    failing = next(name for name in ("final.jpg", "proto.jpg") if image(runtime, shop, name)["id"] == first["id"])
    shop.images.pop(failing)  # a 404 at every run
    assert reembed_pass(runtime.app, catalogue.images_embedded_by_other_models(runtime.db, model, 1))["images_failed"] == 1
    assert [row["id"] for row in catalogue.images_embedded_by_other_models(runtime.db, model, 1)] == [second["id"]]


def test_a_picture_that_became_a_copy_of_another_is_not_re_embedded_and_leaves_the_shards(runtime, shop):
    """Stale for ever, it was fetched again at every index run, and the rollout never ended."""
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    stale = embedded_by_an_older_model(runtime, shop, "final.jpg")
    shop.images["final.jpg"] = shop.images["main.jpg"]  # the shop shows another product's picture there now
    reembed_pass(runtime.app, stale)
    copy = image(runtime, shop, "final.jpg")
    assert copy["duplicate_of"] == image(runtime, shop, "main.jpg")["id"]
    assert embedded_by_an_older_model(runtime, shop) == []
    assert catalogue.dead_indexed_detections(runtime.db) == {None: {ids.detection_id(copy["id"], 0)}}  # as a scrape leaves it


def test_a_picture_re_embedded_keeps_its_place_among_its_products_pictures(runtime, shop):
    """Fetched again at place 0, it became its product's main photo."""
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    picture = image(runtime, shop, "final.jpg")
    catalogue.link_image(runtime.db, picture["product_id"], picture["id"], 2)  # its product's third picture
    assert reembed_pass(runtime.app, embedded_by_an_older_model(runtime, shop, "final.jpg"))["images_uploaded"] == 1
    assert runtime.db.run_query(f"SELECT position FROM product_images WHERE image_id = '{picture['id']}' "
                                f"AND product_id = '{picture['product_id']}'") == [{"position": 2}]


@pytest.fixture
def raw_one_page_shop(runtime):
    """A shop (raw bytes: answers http.server will not send) of one product page showing img/p.jpg,
    registered; `picture()` gives the picture's answer, [(pause_s, bytes or HANG_UP), ...], at
    each request for it, and `title()` the product's title."""
    shops = []

    def start(picture, title=lambda: "Tee") -> RawShop:
        def script(number, path):
            if path == "/img/p.jpg":
                return picture()
            if path == "/sitemap.xml":
                return [(0, answer(200, f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{shop.base_url}p/tee.html'
                                        f"</loc></url></urlset>".encode(), {"Content-Type": "text/xml"}))]
            if path == "/p/tee.html":
                return [(0, answer(200, product_html(shop.base_url, title(), ["img/p.jpg"]), {"Content-Type": "text/html"}))]
            return [(0, answer(404, b"not here"))]

        shop = RawShop(script)
        shops.append(shop)
        catalogue.save_source(runtime.db, ShopSource(base_url=shop.base_url, name="s", strategy="sitemap", local=True, delay_s=0, fetch=FAST))
        return shop

    yield start
    for shop in shops:
        shop.close()


def test_a_picture_cut_short_in_transfer_is_not_stored_and_is_fetched_again_at_the_next_pass(runtime, raw_one_page_shop):
    """The CDN hangs up halfway through the bytes it declared: half a JPEG starts like one, and was
    stored, then refused by detect as truncated, for good (its page stays the same)."""
    picture = jpeg(Image.new("RGB", (64, 64), (200, 30, 30)))
    cut = [True]
    shop = raw_one_page_shop(lambda: [(0, answer(200, picture[: len(picture) // 2] if cut[0] else picture, {"Content-Type": "image/jpeg"},
                                                 length=len(picture))), (0, HANG_UP)])
    report = pipeline.scrape(runtime.app)
    stored = catalogue.get_image(runtime.db, ids.image_id(shop.base_url + "img/p.jpg"))
    assert report["images_uploaded"] == 0 and report["errors.network"] == 1 and stored["status"] == "failed" and not incoming(runtime)
    cut[0] = False
    report = pipeline.scrape(runtime.app)  # its page has not changed
    stored = catalogue.get_image(runtime.db, ids.image_id(shop.base_url + "img/p.jpg"))
    assert report["images_uploaded"] == 1 and stored["status"] == "new"
    assert runtime.store.get(ids.incoming_key(stored["id"])) == picture


@pytest.mark.parametrize("content_type", ["binary/octet-stream", None, "text/plain"], ids=["s3-default", "no-type", "nginx-default"])
def test_a_picture_is_known_by_its_bytes_whatever_its_content_type(runtime, raw_one_page_shop, content_type):
    """S3 labels an object it was not told the type of binary/octet-stream; such pictures were
    refused as of the wrong type before their bytes were read, and never fetched again."""
    picture = jpeg(Image.new("RGB", (64, 64), (200, 30, 30)))
    shop = raw_one_page_shop(lambda: [(0, answer(200, picture, {"Content-Type": content_type} if content_type else {}))])
    report = pipeline.scrape(runtime.app)
    stored = catalogue.get_image(runtime.db, ids.image_id(shop.base_url + "img/p.jpg"))
    assert report["images_uploaded"] == 1 and stored["status"] == "new" and runtime.store.get(ids.incoming_key(stored["id"])) == picture


@pytest.mark.parametrize("fmt", ["TIFF", "AVIF", "HEIF"])
def test_a_picture_in_any_format_detect_reads_is_stored_and_detected(runtime, raw_one_page_shop, fmt):
    """The scraper's list of formats was its own: a TIFF was refused as no image, and an AVIF
    stored and then refused by detect, for good."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, fmt)
    shop = raw_one_page_shop(lambda: [(0, answer(200, buffer.getvalue(), {"Content-Type": f"image/{fmt.lower()}"}))])
    assert pipeline.scrape(runtime.app)["images_uploaded"] == 1
    runtime.drain()
    assert catalogue.get_image(runtime.db, ids.image_id(shop.base_url + "img/p.jpg"))["status"] == "detected"


@pytest.mark.parametrize("fmt, stored", [("JPEG", True), ("PNG", False)])
def test_a_picture_over_the_pixel_limit_is_detected_smaller_or_refused_by_the_scraper(runtime, raw_one_page_shop, monkeypatch, fmt, stored):
    """Such a picture was stored, then refused by detect, and never fetched again: its product had
    none. A JPEG is decoded smaller; another format is refused where the scrape's report says so."""
    from shazzam import images

    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 100)  # a small picture stands for a 48-megapixel one
    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), (200, 30, 30)).save(buffer, fmt)
    shop = raw_one_page_shop(lambda: [(0, answer(200, buffer.getvalue(), {"Content-Type": f"image/{fmt.lower()}"}))])
    report = pipeline.scrape(runtime.app)
    runtime.drain()
    picture = catalogue.get_image(runtime.db, ids.image_id(shop.base_url + "img/p.jpg"))
    if stored:
        assert report["images_uploaded"] == 1 and picture["status"] == "detected" and (picture["width"], picture["height"]) == (100, 100)
    else:
        assert report["images_uploaded"] == 0 and report["errors.too-large"] == 1 and not incoming(runtime)
        assert picture["status"] == "failed" and "pixels" in picture["error"]


ERROR_PAGE = answer(200, b"<html><body>Something went wrong</body></html>", {"Content-Type": "text/html"})


def test_an_error_page_where_a_picture_was_expected_is_no_picture(runtime, raw_one_page_shop):
    shop = raw_one_page_shop(lambda: [(0, ERROR_PAGE)])
    report = pipeline.scrape(runtime.app)
    refused = catalogue.get_image(runtime.db, ids.image_id(shop.base_url + "img/p.jpg"))
    assert report["errors.not-an-image"] == 1 and refused["status"] == "failed" and not incoming(runtime)


def test_an_error_page_where_a_stored_picture_was_at_revalidate_keeps_the_picture(runtime, raw_one_page_shop):
    picture = [(0, answer(200, jpeg(Image.new("RGB", (64, 64), (200, 30, 30))), {"Content-Type": "image/jpeg"}))]
    shop = raw_one_page_shop(lambda: picture)
    assert pipeline.scrape(runtime.app)["images_uploaded"] == 1
    picture[:] = [(0, ERROR_PAGE)]  # the CDN's bad minute, when revalidate checks the picture
    report = revalidate_products(runtime.app, Summary())
    kept = catalogue.get_image(runtime.db, ids.image_id(shop.base_url + "img/p.jpg"))
    assert report["images_checked"] == 1 and report["images_replaced"] == 0 and kept["status"] == "new" and kept["content_sha256"]


def test_an_error_page_where_a_stored_picture_was_at_a_changed_page_keeps_the_picture(runtime, raw_one_page_shop):
    """The page changed during the CDN's bad minute: the picture, fetched again with it, is an error
    page; the stored picture stays as it was, and is not failed for good."""
    picture = [(0, answer(200, jpeg(Image.new("RGB", (64, 64), (200, 30, 30))), {"Content-Type": "image/jpeg"}))]
    title = ["Tee"]
    shop = raw_one_page_shop(lambda: picture, lambda: title[0])
    assert pipeline.scrape(runtime.app)["images_uploaded"] == 1
    runtime.drain()
    picture[:], title[0] = [(0, ERROR_PAGE)], "Tee, now cheaper"
    report = pipeline.scrape(runtime.app, force=True)
    kept = catalogue.get_image(runtime.db, ids.image_id(shop.base_url + "img/p.jpg"))
    assert report["errors.not-an-image"] == 1 and kept["status"] == "detected", kept


def test_a_stored_picture_whose_fetch_again_failed_is_ingested_once_it_answers(runtime, shop):
    # Re-filed by the shop, a product's picture is fetched again to be embedded in its new category;
    # a CDN's bad minute then must not leave it taken for stored (and never re-embedded) for good.
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    shop.set_category("final", "Skirts")
    shop.unavailable_images.add("final.jpg")
    pipeline.scrape(runtime.app)
    assert image(runtime, shop, "final.jpg")["status"] == "failed"
    shop.unavailable_images.clear()
    report = pipeline.scrape(runtime.app)  # its page has not changed
    assert image(runtime, shop, "final.jpg")["status"] == "new" and report["images_uploaded"] == 1


def test_an_image_a_stopped_run_never_fetched_is_fetched_by_the_next(runtime, shop):
    from shazzam.db import images, product_images

    register(runtime, shop)
    pipeline.scrape(runtime.app)
    lost = image(runtime, shop, "final.jpg")["id"]
    with runtime.db.transaction() as connection:  # as a run stopped after saving the product, before the fetch
        connection.execute(sa.delete(product_images).where(product_images.c.image_id == lost))
        connection.execute(sa.update(images).where(images.c.id == lost).values(status="new", content_sha256=None, phash=None))
    runtime.store.delete(ids.incoming_key(lost))
    report = pipeline.scrape(runtime.app)  # its page has not changed
    assert report["images_uploaded"] == 1 and image(runtime, shop, "final.jpg")["content_sha256"]
    assert ids.incoming_key(lost) in incoming(runtime)
    assert pipeline.scrape(runtime.app)["images_uploaded"] == 0


def test_a_picture_a_run_recorded_but_never_put_in_incoming_is_fetched_by_the_next(runtime, shop, monkeypatch):
    """Killed between committing the picture's row and putting its bytes: a run an hour on sees
    that detect never had it, and fetches it again."""
    register(runtime, shop)
    put = runtime.store.put

    def killed_at_final(key, *args, **kwargs):
        if key == ids.incoming_key(ids.image_id(shop.url("images/final.jpg"))):
            raise KeyboardInterrupt  # the process dies here
        return put(key, *args, **kwargs)

    monkeypatch.setattr(runtime.store, "put", killed_at_final)
    with pytest.raises(KeyboardInterrupt):
        pipeline.scrape(runtime.app)
    monkeypatch.setattr(runtime.store, "put", put)
    lost = image(runtime, shop, "final.jpg")
    assert lost["status"] == "new" and lost["content_sha256"] and ids.incoming_key(lost["id"]) not in incoming(runtime)
    waiting, put_again = incoming(runtime), []
    monkeypatch.setattr(runtime.store, "put", lambda key, *args, **kwargs: put_again.append(key) or put(key, *args, **kwargs))
    pipeline.scrape(runtime.app)  # within the hour: it may yet be detected
    assert ids.incoming_key(lost["id"]) not in put_again and not waiting & set(put_again)
    monkeypatch.setattr(catalogue, "UNDETECTED_AFTER", timedelta(0))
    for key in waiting:  # detected meanwhile
        catalogue.update_image(runtime.db, ids.key_stem(key), status="detected")
    pipeline.scrape(runtime.app)
    assert ids.incoming_key(lost["id"]) in put_again and not waiting & set(put_again)
    monkeypatch.setattr(catalogue, "UNDETECTED_AFTER", timedelta(hours=1))
    assert pipeline.scrape(runtime.app)["images_uploaded"] == 0


@pytest.mark.parametrize("stage", ["standardise", "embed"])
def test_a_garment_whose_stage_gave_up_is_fetched_again_once_its_object_is_gone(runtime, shop, monkeypatch, stage):
    """standardise (the database down for minutes) or the write of embed's vector (S3 throttled)
    failed every retry, and the object the stage would start again from has since expired: the
    picture is fetched again a day on, and its garment indexed."""
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    stuck = image(runtime, shop, "final.jpg")["id"]
    method = "get_with_etag" if stage == "standardise" else "put"
    original = getattr(runtime.store, method)

    def failing(key, *args, **kwargs):
        if key == ids.detections_key(stuck) if stage == "standardise" else key.startswith("vectors/pending/") and stuck in key:
            raise ConnectionError("the database is down" if stage == "standardise" else "SlowDown")
        return original(key, *args, **kwargs)

    monkeypatch.setattr(runtime.store, method, failing)
    assert runtime.drain().failed >= 1
    monkeypatch.setattr(runtime.store, method, original)
    expired = [ids.detections_key(stuck)] if stage == "standardise" else [info.key for info in runtime.store.list("standard/")]
    for key in expired:  # the bucket's lifecycle, a day on
        runtime.store.delete(key)
    status = lambda: {row["embedding_status"] for row in runtime.db.run_query(  # noqa: E731
        "SELECT embedding_status FROM detections WHERE image_id = :id", {"id": stuck})}
    assert status() == {"pending"}
    assert pipeline.scrape(runtime.app)["images_uploaded"] == 0  # within the day: a redrive may yet finish it
    monkeypatch.setattr(catalogue, "UNFINISHED_AFTER", timedelta(0))
    # The other garments' vectors wait for an index run, however late: only the stuck one is fetched.
    assert pipeline.scrape(runtime.app)["images_uploaded"] == 1
    runtime.drain()
    runtime.fire_schedule("index")
    assert status() == {"indexed"}


def test_a_picture_the_page_no_longer_shows_is_unlinked(runtime, shop):
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    shop.replaced_images["final"] = ["/images/other.jpg"]  # the shop replaced the product's photo
    pipeline.scrape(runtime.app)
    links = runtime.db.run_query("SELECT image_id FROM product_images WHERE product_id = :id", {"id": product(runtime, shop, "final")["id"]})
    assert links == [{"image_id": image(runtime, shop, "other.jpg")["id"]}]
    assert not image(runtime, shop, "final.jpg")["is_dead"]  # another live page shows it still


def test_a_picture_the_page_shows_again_after_dropping_it_is_ingested_again(runtime, shop):
    register(runtime, shop)
    shop.set_stock("out-of-stock", True)
    pipeline.scrape(runtime.app, force=True)
    shop.replaced_images["out-of-stock"] = ["/images/other.jpg"]
    pipeline.scrape(runtime.app, force=True)
    assert image(runtime, shop, "oos.jpg")["is_dead"]  # no live page shows it: it left the shards
    del shop.replaced_images["out-of-stock"]
    report = pipeline.scrape(runtime.app, force=True)
    revived = image(runtime, shop, "oos.jpg")
    assert not revived["is_dead"] and revived["status"] == "new" and report["images_uploaded"] >= 1
    assert ids.incoming_key(revived["id"]) in incoming(runtime)  # detected, embedded and indexed again


def test_revalidate_ingests_again_a_picture_replaced_behind_the_same_address(runtime, shop):
    from tests.support.quirky_shop import jpeg, picture

    register(runtime, shop)
    pipeline.scrape(runtime.app)
    stored = image(runtime, shop, "final.jpg")
    shop.images["final.jpg"] = jpeg(picture(30))  # the page itself is unchanged
    report = pipeline.revalidate(runtime.app)
    assert report["images_replaced"] == 1 and report["images_queued"] == 1
    assert image(runtime, shop, "final.jpg")["content_sha256"] != stored["content_sha256"]
    assert runtime.store.get(ids.incoming_key(stored["id"])) == shop.images["final.jpg"]
    assert pipeline.revalidate(runtime.app)["images_replaced"] == 0


def test_when_an_original_picture_is_gone_its_copies_stand_in(runtime, shop):
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    copy, resized = image(runtime, shop, "shared-copy.jpg"), image(runtime, shop, "shared-small.jpg")
    assert copy["duplicate_of"] == resized["duplicate_of"] == image(runtime, shop, "shared.jpg")["id"]
    del shop.images["shared.jpg"]  # the twins' picture address now answers 404; the copies' do not
    assert pipeline.revalidate(runtime.app)["images_dead"] == 1
    first, second = sorted((image(runtime, shop, "shared-copy.jpg"), image(runtime, shop, "shared-small.jpg")), key=lambda row: row["id"])
    assert not first["duplicate_of"] and first["status"] == "new" and ids.incoming_key(first["id"]) in incoming(runtime)
    assert second["duplicate_of"] == first["id"]  # the first copy is the original now
    for slug, shown in (("same-bytes", "shared-copy.jpg"), ("resized", "shared-small.jpg")):  # the gone one unlinked
        assert catalogue.get_item(runtime.db, product(runtime, shop, slug)["id"])["image_urls"] == [shop.url(f"images/{shown}")]


def test_copies_of_a_picture_an_older_version_let_die_stand_in_once_upgraded(runtime, shop):
    """An older revalidate marked a gone picture dead and no more: the products that showed it
    through copies (one of them its owner, since its own products died) kept linking it, and were
    out of search for good."""
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    shared = image(runtime, shop, "shared.jpg")["id"]
    twins = [product(runtime, shop, slug)["id"] for slug in ("twin-a", "twin-b")]
    for slug in ("twin-a", "twin-b"):
        shop.remove(slug)
    del shop.images["shared.jpg"]
    # What the older version left: the twins dead, their picture passed to a product showing a copy of it, then found gone.
    db = runtime.db
    for twin in twins:
        db.run_query("UPDATE products SET is_dead = 1, dead_reason = 'http-404', dead_at = :now WHERE id = :id", {"now": catalogue.utcnow(), "id": twin})
    db.run_query("UPDATE images SET is_dead = 1, product_id = :owner WHERE id = :id", {"owner": product(runtime, shop, "same-bytes")["id"], "id": shared})
    db.run_query("UPDATE detections SET embedding_status = 'removed' WHERE image_id = :id", {"id": shared})
    assert pipeline.scrape(runtime.app)["images_uploaded"] == 0
    db.run_query("DELETE FROM schema_migrations WHERE version = 11")  # the upgrade
    assert migrate(db.engine) == [11]
    report = pipeline.scrape(runtime.app)
    assert report["images_uploaded"] == 1 and report["images_duplicate"] == 1  # the first copy is the original now
    for slug, shown in (("same-bytes", "shared-copy.jpg"), ("resized", "shared-small.jpg")):  # the gone one unlinked
        assert catalogue.get_item(db, product(runtime, shop, slug)["id"])["image_urls"] == [shop.url(f"images/{shown}")]


def test_when_an_original_picture_is_gone_its_copy_in_another_shop_stands_in(runtime, shop):
    # Each shop's pass kept its own list of stored pictures, and the other shop's still held the gone
    # original: its copy was filed as a copy of it again, and unlinked, leaving its product no picture.
    with QuirkyShop(endless_s=2) as other:
        register(runtime, shop)
        catalogue.save_source(runtime.db, ShopSource(base_url=other.base_url, name="other", local=True, delay_s=0, fetch=FAST))
        pipeline.scrape(runtime.app, force=True)
        original = catalogue.get_image(runtime.db, ids.image_id(shop.url("images/final.jpg")))
        copy_id = ids.image_id(other.url("images/final.jpg"))  # the same bytes: the same seed
        assert catalogue.get_image(runtime.db, copy_id)["duplicate_of"] == original["id"] or original["duplicate_of"] == copy_id
        gone_shop, standing_in = (shop, other) if original["duplicate_of"] is None else (other, shop)
        del gone_shop.images["final.jpg"]
        pipeline.revalidate(runtime.app)
        stand_in = catalogue.get_image(runtime.db, ids.image_id(standing_in.url("images/final.jpg")))
        assert stand_in["duplicate_of"] is None and stand_in["status"] == "new"
        shown = catalogue.get_item(runtime.db, catalogue.products_of_shop(runtime.db, ids.shop_id(standing_in.base_url))[
            standing_in.url("products/final.html")]["id"])["image_urls"]
        assert shown == [standing_in.url("images/final.jpg")]


def test_a_picture_one_shop_stops_showing_stays_another_shops_at_its_own_address(runtime, shop):
    # The picture passed to the other shop's product at the first shop's address: checked under a
    # policy that does not reach that host it never died, and was shown from the first shop's CDN.
    with QuirkyShop(endless_s=2) as other:
        register(runtime, shop)
        catalogue.save_source(runtime.db, ShopSource(base_url=other.base_url, name="other", local=True, delay_s=0, fetch=FAST))
        pipeline.scrape(runtime.app, force=True)
        first_is_original = catalogue.get_image(runtime.db, ids.image_id(shop.url("images/final.jpg")))["duplicate_of"] is None
        leaving, staying = (shop, other) if first_is_original else (other, shop)
        leaving.removed |= {"final", "broken-jsonld"}  # both of its products that show the picture
        pipeline.revalidate(runtime.app)
        pipeline.scrape(runtime.app, force=True)
        assert catalogue.get_image(runtime.db, ids.image_id(leaving.url("images/final.jpg")))["is_dead"]
        kept = catalogue.get_image(runtime.db, ids.image_id(staying.url("images/final.jpg")))
        assert kept["duplicate_of"] is None and kept["content_sha256"] and not kept["is_dead"]
        products = catalogue.products_of_shop(runtime.db, ids.shop_id(staying.base_url))
        for slug in ("final", "broken-jsonld"):
            shown = catalogue.get_item(runtime.db, products[staying.url(f"products/{slug}.html")]["id"])["image_urls"]
            assert shown == [staying.url("images/final.jpg")], slug


def test_a_copy_whose_address_shows_another_picture_is_stored_as_its_own(runtime, shop):
    from tests.support.quirky_shop import jpeg, picture

    register(runtime, shop)
    pipeline.scrape(runtime.app)
    shop.images["shared-copy.jpg"] = jpeg(picture(31))  # no longer a copy of shared.jpg
    shop.set_price("same-bytes", "11.50")  # its page changes
    assert pipeline.scrape(runtime.app, force=True)["images_uploaded"] == 1
    copy = image(runtime, shop, "shared-copy.jpg")
    assert not copy["duplicate_of"] and ids.incoming_key(copy["id"]) in incoming(runtime)
    links = runtime.db.run_query("SELECT image_id FROM product_images WHERE product_id = :id", {"id": product(runtime, shop, "same-bytes")["id"]})
    assert links == [{"image_id": copy["id"]}]


def test_a_pass_out_of_time_leaves_the_rest_of_the_round_to_the_next(runtime, shop, monkeypatch):
    from shazzam.scrape.crawl import Crawl
    from shazzam.scrape.passes import SourcePass

    shop_id = register(runtime, shop)
    visits: list[list[str]] = []
    saving = SourcePass.page
    monkeypatch.setattr(SourcePass, "page", lambda self, outcome: visits[-1].append(outcome.url) or saving(self, outcome))

    visits.append([])
    with monkeypatch.context() as clock:
        clock.setattr(Crawl, "out_of_time", lambda self: len(visits[-1]) >= 5)  # the budget runs out after five pages
        first = pipeline.scrape(runtime.app)
    assert len(visits[0]) == 5 and first["shops_unfinished"] == 1 and first["pages_left"] > 0
    assert catalogue.active_shops(runtime.db)[0]["last_scraped_at"] is None  # still due

    visits.append([])
    second = pipeline.scrape(runtime.app)
    assert second["shops_unfinished"] == second["pages_left"] == 0
    assert not set(visits[0]) & set(visits[1]) and len(visits[1]) == first["pages_left"]  # the pages the first did not reach
    assert catalogue.active_shops(runtime.db)[0]["last_scraped_at"] is not None  # the round is done
    assert first["products_new"] + second["products_new"] == 15  # as one whole pass finds (test_a_pass_over_the_quirky_shop)

    visits.append([])
    pipeline.scrape(runtime.app)  # a new round: every page, those visited longest ago first
    assert set(visits[2]) == set(visits[0]) | set(visits[1]) and set(visits[2][:5]) == set(visits[0])
    assert catalogue.shops_by_id(runtime.db)[shop_id]["last_scraped_at"] is not None


def test_the_round_after_a_revalidation_reads_the_pages_it_checked(runtime, shop):
    """Revalidate's visits are no scrape round's: the next round reads every page again, so that a
    price cut or a removal after revalidate's run waits for the next scrape, not for the one after."""
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    assert pipeline.revalidate(runtime.app)["products_checked"] == 15
    shop.set_price("twin-a", "9.00")
    shop.remove("microdata")
    report = pipeline.scrape(runtime.app)
    assert report["products_changed"] == 1 and report["products_dead"] == 1
    assert product(runtime, shop, "microdata")["dead_reason"] == "http-404"
    assert catalogue.active_shops(runtime.db)[0]["last_scraped_at"] is not None


def test_runs_with_a_limit_go_on_with_the_pages_the_last_did_not_reach(runtime, shop):
    register(runtime, shop)
    runs = [pipeline.scrape(runtime.app, limit=6) for _ in range(4)]  # 6 pages a run
    assert [run["shops_unfinished"] for run in runs] == [1, 1, 1, 0]  # the fourth finds none left: the round ends
    assert [run["products_new"] for run in runs] == [6, 5, 4, 0]  # 15, as one whole pass finds (test_a_pass_over_the_quirky_shop)
    assert [run["pages_left"] for run in runs] == [13, 7, 1, 0]  # of the 19 pages found, those no run has reached yet
    assert catalogue.active_shops(runtime.db)[0]["last_scraped_at"] is not None


def test_a_pass_with_no_time_left_reaches_no_shop_and_leaves_them_due(runtime, shop):
    register(runtime, shop)
    report = pipeline.scrape(runtime.app, budget_s=0)
    assert report["shops"] == 0 and report["shops_left"] == 1 and report["pages_fetched"] == 0 and shop.log == []
    assert pipeline.scrape(runtime.app)["shops"] == 1


def test_a_product_the_database_refuses_is_counted_and_the_others_are_saved(runtime, shop, monkeypatch):
    import sqlalchemy as sa

    register(runtime, shop)
    saving = catalogue.save_product

    def refuse_one(db, shop_id, product, **options):
        if product.url.endswith("/twin-a.html"):
            raise sa.exc.DataError("INSERT", {}, Exception("1406 Data too long"))
        return saving(db, shop_id, product, **options)

    monkeypatch.setattr(catalogue, "save_product", refuse_one)
    report = pipeline.scrape(runtime.app)
    assert report["errors.unstorable"] == 1 and report["products_new"] == 14  # the other 14 of the 15
    assert catalogue.active_shops(runtime.db)[0]["last_scraped_at"] is not None  # the round ended


def test_urls_longer_than_a_sitemap_allows_are_not_taken():
    from decimal import Decimal

    from shazzam.scrape import ScrapedProduct
    from shazzam.scrape.extract import MAX_URL_LENGTH

    long = "https://shop.example/i/" + "x" * MAX_URL_LENGTH
    product = ScrapedProduct(url="https://shop.example/p/1", title="Dress \ud83d", price=Decimal("1"), currency="EUR", category=None,
                             brand=None, sku=None, image_urls=(long, "https://shop.example/i/1.jpg"), sizes=("S\udc00",))
    assert product.image_urls == ("https://shop.example/i/1.jpg",) and product.title == "Dress \ufffd" and product.sizes == ("S\ufffd",)


def test_a_product_the_shop_refiles_is_detected_and_embedded_again_in_its_new_category(runtime, shop):
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    runtime.drain()
    before = len(shop.log)
    shop.set_category("twin-a", "Women > Skirts")  # same page otherwise, same picture
    report = pipeline.scrape(runtime.app)
    assert report["products_changed"] == 1 and product(runtime, shop, "twin-a")["category"] == "skirt"
    # its picture goes through detect again (fetched in full), which crops the skirt and re-files it
    assert "/images/shared.jpg" in [entry.path for entry in shop.log[before:]]
    assert ids.incoming_key(image(runtime, shop, "shared.jpg")["id"]) in incoming(runtime)


def test_due_shops_take_turns_so_one_too_large_for_a_pass_starves_none(runtime, shop, monkeypatch):
    import time

    from shazzam.scrape.passes import SourcePass

    with SampleShop(limit=3) as small:
        register(runtime, shop)
        catalogue.add_shop(runtime.db, small.base_url)
        saving = SourcePass.page
        monkeypatch.setattr(SourcePass, "page", lambda self, outcome: time.sleep(0.2) or saving(self, outcome))  # slow pages
        reached = []
        for _ in range(2):
            report = pipeline.scrape(runtime.app, budget_s=0.5)  # spent on the first shop's first pages
            assert report["shops"] == 1 and report["shops_left"] == 1
            reached.append({row["id"] for row in catalogue.active_shops(runtime.db) if row["attempted_at"]})
        assert len(reached[0]) == 1 and len(reached[1]) == 2  # the second pass began with the other shop


def tee(colour: tuple[int, int, int]):
    """A product shot of a tee on white, as a shop shoots each colour of it."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (128, 128), "white")
    draw = ImageDraw.Draw(image)
    draw.polygon([(40, 20), (88, 20), (112, 44), (96, 56), (92, 110), (36, 110), (32, 56), (16, 44)], fill=colour)
    return image


def test_colour_variants_are_two_pictures_and_a_resized_copy_is_one(runtime, shop):
    # The dHash sees grey levels only: the navy tee's picture was taken for a copy of the red one's,
    # and the navy tee was never searchable.
    shop.images |= {"red.jpg": jpeg(tee((200, 30, 30))), "navy.jpg": jpeg(tee((20, 30, 90))),
                    "red-small.jpg": jpeg(tee((200, 30, 30)).resize((90, 90)), quality=70)}
    shop.replaced_images |= {"final": ["/images/red.jpg"], "slow": ["/images/navy.jpg"], "flaky": ["/images/red-small.jpg"]}
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    red, navy, small = (image(runtime, shop, name) for name in ("red.jpg", "navy.jpg", "red-small.jpg"))
    assert red["duplicate_of"] is None and navy["duplicate_of"] is None and red["status"] == navy["status"] == "new"
    assert small["duplicate_of"] == red["id"]


def product_data(base_url: str, title: str, pictures: list[str]) -> dict:
    return {"@context": "https://schema.org", "@type": "Product", "name": title, "image": [base_url + p for p in pictures],
            "offers": {"@type": "Offer", "price": "19.99", "priceCurrency": "EUR", "availability": "https://schema.org/InStock"}}


def product_html(base_url: str, title: str, pictures: list[str]) -> bytes:
    data = product_data(base_url, title, pictures)
    return f'<html><head><title>{title}</title><script type="application/ld+json">{json.dumps(data)}</script></head></html>'.encode()


def one_page_shop(plain_shop, pictures: list[str], picture_answer) -> tuple:
    answers = {"/robots.txt": (200, b"")}
    shop = plain_shop(answers)
    answers["/p/tee.html"] = (200, product_html(shop.base_url, "Tee", pictures), {"Content-Type": "text/html"})
    answers["/sitemap.xml"] = (200, f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{shop.base_url}p/tee.html</loc>'
                                    f"</url></urlset>".encode())
    for n, path in enumerate(pictures):
        answers["/" + path] = picture_answer(n)
    return shop, answers


def test_revalidate_keeps_to_its_budget_when_a_host_asks_to_retry_later(runtime, plain_shop):
    shop, answers = one_page_shop(plain_shop, ["img/red.jpg"], lambda n: (200, jpeg(Image.new("RGB", (64, 64), (200, 30, 30))),
                                                                        {"Content-Type": "image/jpeg"}))
    catalogue.save_source(runtime.db, ShopSource(base_url=shop.base_url, name="s", strategy="sitemap", local=True, delay_s=0,
                                                 fetch={**FAST, "retries": 3, "max_retry_after_s": 60}))
    assert pipeline.scrape(runtime.app)["products_new"] == 1
    answers["/p/tee.html"] = answers["/img/red.jpg"] = (503, b"busy", {"Retry-After": "2"})
    started = time.monotonic()
    revalidate_products(runtime.app, Summary(), budget_s=1.0)
    assert time.monotonic() - started < 1.5  # not 3 retries x 2 s for one page, then as long for its picture


def test_a_shop_sending_its_pages_to_a_bot_challenge_or_a_maintenance_page_for_a_while_keeps_its_products(runtime, plain_shop):
    shop, answers = one_page_shop(plain_shop, ["img/red.jpg"], lambda n: (200, jpeg(Image.new("RGB", (64, 64), (200, 30, 30))),
                                                                        {"Content-Type": "image/jpeg"}))
    catalogue.save_source(runtime.db, ShopSource(base_url=shop.base_url, name="s", strategy="sitemap", local=True, delay_s=0, fetch=FAST))
    assert pipeline.scrape(runtime.app)["products_new"] == 1
    html = {"Content-Type": "text/html"}
    answers["/p/tee.html"] = (307, b"", {"Location": "/challenge?return=/p/tee.html"})
    answers["/challenge"] = (200, b"<html><title>Just a moment...</title><h1>Checking your browser</h1></html>", html)
    report = pipeline.scrape(runtime.app, force=True)
    assert report["products_dead"] == 0 and report["errors.no-product"] == 1
    answers["/p/tee.html"] = (302, b"", {"Location": "/maintenance.html"})
    answers["/maintenance.html"] = (200, b"<html><title>Maintenance</title><h1>We are down for maintenance</h1></html>", html)
    report = pipeline.revalidate(runtime.app)
    assert report["products_dead"] == 0 and report["errors.no-product"] == 1
    [tee] = catalogue.products_of_shop(runtime.db, ids.shop_id(shop.base_url)).values()
    assert not tee["is_dead"]


def test_the_page_in_hand_when_the_scrape_budget_ends_fetches_its_pictures(runtime, plain_shop, monkeypatch):
    pictures = [f"img/{n}.jpg" for n in range(3)]
    shop, answers = one_page_shop(plain_shop, pictures, lambda n: (200, jpeg(Image.new("RGB", (64, 64), (80 * n, 30, 30))),
                                                                 {"Content-Type": "image/jpeg"}))
    catalogue.save_source(runtime.db, ShopSource(base_url=shop.base_url, name="s", strategy="sitemap", local=True, delay_s=0, fetch=FAST))
    page = SourcePass.page

    def slow_page(visit, outcome):  # the budget runs out while the page is saved, before its pictures
        time.sleep(1.1)
        return page(visit, outcome)

    monkeypatch.setattr(SourcePass, "page", slow_page)
    report = pipeline.scrape(runtime.app, budget_s=1.0)
    assert report["images_uploaded"] == 3 and report["images_failed"] == 0


def test_a_shop_that_answers_with_no_products_yet_was_read_and_its_round_ends(runtime, plain_shop):
    shop = plain_shop({"/robots.txt": (200, b""), "/": (200, b"<html><body>Opening soon</body></html>", {"Content-Type": "text/html"})})
    shop_id = catalogue.save_source(runtime.db, ShopSource(base_url=shop.base_url, name="s", strategy="auto", local=True, delay_s=0,
                                                           fetch=FAST))
    report = pipeline.scrape(runtime.app)
    assert report["errors.http-404"] == 1 and report["shops_failed"] == 0  # no sitemap, and a home page without products
    pipeline.check_scrape(report)
    assert catalogue.shops_by_id(runtime.db)[shop_id]["last_scraped_at"] is not None


def test_a_product_filed_by_a_feed_dies_with_its_page_after_the_source_leaves_shopify(runtime, plain_shop):
    answers = {"/robots.txt": (200, b"")}
    shop = plain_shop(answers)
    picture = (200, jpeg(Image.new("RGB", (64, 64), (30, 90, 200))), {"Content-Type": "image/jpeg"})
    feed = {"products": [{"title": f"Tee {h}", "handle": h, "images": [{"src": f"/img/{h}.jpg"}], "variants": [{"price": "10.00", "available": True}]}
                         for h in ("a", "b")]}
    answers.update({"/products.json": (200, json.dumps(feed).encode()), "/img/a.jpg": picture, "/img/b.jpg": picture})
    shopify = ShopSource(base_url=shop.base_url, name="s", strategy="shopify", local=True, delay_s=0, currency="EUR", fetch=FAST)
    catalogue.save_source(runtime.db, shopify)
    assert pipeline.scrape(runtime.app)["products_new"] == 2
    # The source moves to the sitemap, and the shop removes tee b: its own page is gone (the old feed
    # still answers, and is no product page).
    catalogue.save_source(runtime.db, ShopSource(base_url=shop.base_url, name="s", strategy="sitemap", local=True, delay_s=0, fetch=FAST))
    answers["/products/a"] = (200, product_html(shop.base_url, "Tee a", ["img/a.jpg"]), {"Content-Type": "text/html"})
    answers["/sitemap.xml"] = (200, f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{shop.base_url}products/a</loc>'
                                    f"</url></urlset>".encode())
    pipeline.scrape(runtime.app, force=True)
    revalidate_products(runtime.app, Summary())
    rows = catalogue.products_of_shop(runtime.db, ids.shop_id(shop.base_url)).values()
    assert {row["url"].rsplit("/", 1)[-1]: bool(row["is_dead"]) for row in rows} == {"a": False, "b": True}
    assert not any(row["page_url"] and "products.json" in row["page_url"] for row in rows)  # unfiled for good


def test_a_shop_row_saved_before_todays_checks_is_skipped_by_revalidate_and_can_be_taken_off(runtime, shop):
    register(runtime, shop)
    pipeline.scrape(runtime.app)
    runtime.db.run_query("INSERT INTO shops (id, base_url, name, active, created_at, is_local) "
                         "VALUES ('old', 'https://user:pw@old.example/', 'Old', 1, '2026-01-01 00:00:00', 0)")
    runtime.db.run_query("INSERT INTO products (id, shop_id, url, title, category, is_dead, last_seen_at, created_at) "
                         "VALUES ('p-old', 'old', 'https://user:pw@old.example/p/1', 'Tee', 't-shirt', 0, '2026-01-01 00:00:00', "
                         "'2026-01-01 00:00:00')")
    report = revalidate_products(runtime.app, Summary())  # the other shop's products are checked; the old row is skipped
    assert report["products_checked"] > 0
    assert catalogue.take_shop_off(runtime.db, "https://user:pw@old.example/")
    assert [row["name"] for row in catalogue.active_shops(runtime.db)] == ["quirky"]


def test_a_shop_row_no_scrape_could_use_is_skipped_counted_and_logged_and_the_others_scraped(runtime, shop, caplog):
    register(runtime, shop)
    runtime.db.run_query("INSERT INTO shops (id, base_url, name, active, created_at, is_local, strategy) "
                         "VALUES ('old', 'https://old.example/', 'Old', 1, '2026-01-01 00:00:00', 0, 'crawl-all')")
    report = pipeline.scrape(runtime.app)
    assert report["shops"] == 1 and report["products_new"] > 0 and report["shops_skipped"] == 1  # the good shop scraped
    assert [record.levelname for record in caplog.records if "https://old.example/ is skipped: unknown strategy 'crawl-all'"
            in record.getMessage()] == ["ERROR"]
    # Named, it is skipped too, and counted: not a pass over nothing that reads as a success.
    assert pipeline.scrape(runtime.app, source="Old")["shops_skipped"] == 1
    assert pipeline.scrape(runtime.app, shop_url="https://old.example/")["shops_skipped"] == 1


def test_a_shop_saved_with_fetch_settings_now_refused_is_still_scraped(runtime, shop):
    """[source.fetch] delay_s and concurrency were once accepted (and overridden by the source's
    own); a row saved then keeps its shop scraped, without them."""
    register(runtime, shop)
    settings = json.loads(runtime.db.run_query("SELECT settings FROM shops")[0]["settings"])
    settings["fetch"].update(delay_s=2.0, concurrency=2)
    runtime.db.run_query("UPDATE shops SET settings = :settings", {"settings": json.dumps(settings)})
    source = catalogue.source_of_shop(catalogue.active_shops(runtime.db)[0])
    assert "delay_s" not in source.fetch and source.fetch["retries"] == FAST["retries"] and source.policy().delay_s == 0
    assert pipeline.scrape(runtime.app)["products_new"] > 0


def test_a_sources_file_does_not_bring_back_a_shop_taken_off(runtime, shop):
    register(runtime, shop)
    catalogue.take_shop_off(runtime.db, shop.base_url)
    register(runtime, shop, strategy="sitemap")  # the same source saved again, as `scrape --sources FILE` does
    assert catalogue.active_shops(runtime.db) == []
    catalogue.add_shop(runtime.db, shop.base_url)
    assert [row["name"] for row in catalogue.active_shops(runtime.db)] == ["quirky"]


def test_a_shop_taken_off_during_a_pass_is_crawled_no_further(runtime, shop, monkeypatch):
    # `shops remove` during the shop's scrape: the pass had read the active shops at its start, and
    # went on fetching its pages and pictures, then marked its round finished.
    from shazzam.scrape import passes

    shop_id = register(runtime, shop)
    monkeypatch.setattr(passes, "TAKEN_OFF_CHECK_S", 0)  # asked at every page: the shop's few pages take well under a second
    visited: list[str] = []
    saving = SourcePass.page

    def page(self, outcome):
        visited.append(outcome.url)
        saving(self, outcome)
        if len(visited) == 3:
            catalogue.take_shop_off(runtime.db, shop.base_url)
            asked.append(len(shop.log))

    monkeypatch.setattr(SourcePass, "page", page)
    asked: list[int] = []
    report = pipeline.scrape(runtime.app)
    assert len(visited) == 3 and report["shops_unfinished"] == 0 and report["products_new"] < 15
    assert len(shop.log) - asked[0] <= 2  # at most the pages fetched ahead of the one in hand (concurrency 1, one ahead)
    assert catalogue.shops_by_id(runtime.db)[shop_id]["last_scraped_at"] is None  # no round finished
    assert runtime.db.run_query("SELECT url FROM discovery WHERE shop_id = :id", {"id": shop_id}) == []  # brought back, it discovers afresh

    catalogue.add_shop(runtime.db, shop.base_url)
    pipeline.scrape(runtime.app)
    visited.clear()
    report = revalidate_products(runtime.app, Summary())  # taken off at its third page too
    assert len(visited) == 3 and report["products_checked"] == 3 and report["images_checked"] == 0

    # Taken off while its discovery reads its first document: nothing more is read, and nothing of it is kept.
    catalogue.add_shop(runtime.db, shop.base_url)
    recording = passes.ShopDiscoveryLog.record

    def record(self, read, documents, pages):
        if read is not None:  # taken off while the document was fetched: what it named is kept after take_shop_off
            catalogue.take_shop_off(runtime.db, shop.base_url)
        recording(self, read, documents, pages)

    monkeypatch.setattr(passes.ShopDiscoveryLog, "record", record)
    visited.clear()
    report = pipeline.scrape(runtime.app, force=True)
    assert visited == [] and report["shops_unfinished"] == 0 and report["shops_failed"] == 0
    assert runtime.db.run_query("SELECT url FROM discovery WHERE shop_id = :id", {"id": shop_id}) == []


def test_a_shop_taken_off_at_its_last_page_does_not_finish_its_round(runtime, shop, monkeypatch):
    # The catalogue is asked at most once a second between pages: asked the same way before the
    # round was marked finished, a shop taken off while its last page was in hand had its round finished.
    shop_id = register(runtime, shop)
    visited: list[str] = []
    saving = SourcePass.page

    def page(self, outcome):
        visited.append(outcome.url)
        saving(self, outcome)
        if len(visited) == last:
            catalogue.take_shop_off(runtime.db, shop.base_url)

    monkeypatch.setattr(SourcePass, "page", page)
    last = 0
    pipeline.scrape(runtime.app)  # how many pages a round visits
    last, visited[:] = len(visited), []
    runtime.db.run_query("UPDATE shops SET last_scraped_at = NULL WHERE id = :id", {"id": shop_id})
    pipeline.scrape(runtime.app, force=True)
    assert len(visited) == last > 1 and catalogue.shops_by_id(runtime.db)[shop_id]["last_scraped_at"] is None


def test_a_sitemap_index_read_whose_sitemaps_all_fail_did_not_reach_the_shop(runtime, plain_shop):
    shop = plain_shop({"/robots.txt": (200, b""), "/sitemap.xml": (200, b'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                                                                      b"<sitemap><loc>/products-1.xml</loc></sitemap></sitemapindex>"),
                       "/products-1.xml": (503, b"")})
    catalogue.save_source(runtime.db, ShopSource(base_url=shop.base_url, name="s", strategy="sitemap", local=True, delay_s=0, fetch=FAST))
    assert pipeline.scrape(runtime.app)["shops_failed"] == 1


@pytest.mark.parametrize("then", ["replaced", "gone"])
def test_a_copy_of_a_picture_is_checked_at_its_own_address(runtime, plain_shop, then):
    answers = {"/robots.txt": (200, b"")}
    shop = plain_shop(answers)
    red = (200, jpeg(Image.new("RGB", (64, 64), (200, 30, 30))), {"Content-Type": "image/jpeg"})
    answers.update({"/img/a.jpg": red, "/img/copy.jpg": red,  # b shows a's picture, at an address of its own
                    "/p/a": (200, product_html(shop.base_url, "A dress", ["img/a.jpg"]), {"Content-Type": "text/html"}),
                    "/p/b": (200, product_html(shop.base_url, "B dress", ["img/copy.jpg"]), {"Content-Type": "text/html"}),
                    "/sitemap.xml": (200, f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{shop.base_url}p/a</loc></url>'
                                          f"<url><loc>{shop.base_url}p/b</loc></url></urlset>".encode())})
    catalogue.save_source(runtime.db, ShopSource(base_url=shop.base_url, name="s", strategy="sitemap", local=True, delay_s=0, fetch=FAST))
    assert pipeline.scrape(runtime.app)["images_duplicate"] == 1
    b, copy = ids.product_id(shop.base_url + "p/b"), ids.image_id(shop.base_url + "img/copy.jpg")
    linked = lambda: {row["image_id"] for row in runtime.db.run_query("SELECT image_id FROM product_images WHERE product_id = :p", {"p": b})}  # noqa: E731
    assert linked() == {ids.image_id(shop.base_url + "img/a.jpg")}
    if then == "replaced":  # another picture at the copy's address: now b's own
        answers["/img/copy.jpg"] = (200, jpeg(Image.new("RGB", (64, 64), (20, 40, 220))), {"Content-Type": "image/jpeg"})
    else:
        answers["/img/copy.jpg"] = (404, b"")
    report = revalidate_products(runtime.app, Summary())
    if then == "replaced":
        assert report["images_replaced"] == 1 and linked() == {copy}
        assert catalogue.get_image(runtime.db, copy)["duplicate_of"] is None
    else:  # b shows a's picture no more: out of search, its page read again
        assert report["images_dead"] == 1 and copy not in linked() and ids.image_id(shop.base_url + "img/a.jpg") not in linked()
        assert catalogue.get_item(runtime.db, b)["image_urls"] == []


def test_a_shop_whose_listing_pages_take_longer_than_a_pass_finishes_its_round_reading_each_once(runtime, plain_shop, monkeypatch):
    answers = {"/robots.txt": (200, b""), "/img/tee.jpg": (200, jpeg(tee((200, 30, 30))), {"Content-Type": "image/jpeg"})}
    shop = plain_shop(answers)
    for n in range(1, 9):
        answers[f"/products/{n}.html"] = (200, product_html(shop.base_url, f"Tee {n}", ["img/tee.jpg"]), {"Content-Type": "text/html"})
        next_page = f'<a rel="next" href="/list/page/{n + 1}">next</a>' if n < 8 else ""
        answers[f"/list/page/{n}"] = (200, f'<html><a href="/products/{n}.html">tee</a>{next_page}</html>'.encode(),
                                      {"Content-Type": "text/html"})
    source = ShopSource(base_url=shop.base_url, name="s", strategy="listing", local=True, delay_s=0, listing_urls=("/list/page/1",), fetch=FAST)
    shop_id = catalogue.save_source(runtime.db, source)
    reading = crawl_module.Crawl._read_listing
    monkeypatch.setattr(crawl_module.Crawl, "_read_listing", lambda crawl, document: time.sleep(0.25) or reading(crawl, document))
    reports = []
    while not catalogue.shops_by_id(runtime.db)[shop_id]["last_scraped_at"] and len(reports) < 10:
        reports.append(pipeline.scrape(runtime.app, budget_s=0.6))  # two or three listing pages a pass
    assert len(reports) > 2 and reports[0]["shops_unfinished"] == 1 and reports[0]["products_new"] == 0
    assert catalogue.shops_by_id(runtime.db)[shop_id]["last_scraped_at"] is not None  # the round ended
    assert sorted(path for path in shop.asked if path.startswith("/list/")) == sorted(f"/list/page/{n}" for n in range(1, 9))
    assert sum(report["products_new"] for report in reports) == 8
    assert catalogue.shop_discovery(runtime.db, shop_id, source.discovery_key()) == []  # gone with the round


def look_photo_shop(runtime, plain_shop, pictures: tuple[str, str] = ("img/look.jpg", "img/look.jpg")):
    """A shop whose dress and skirt pages show one look photo (or, given two addresses, each the
    same bytes at its own), scraped and ingested; `file_under(slug, category, price)` writes a
    product's page anew. Returns the first picture's id too."""
    answers = {"/robots.txt": (200, b"")}
    for path in pictures:
        answers["/" + path] = (200, jpeg(tee((30, 30, 200))), {"Content-Type": "image/jpeg"})
    shop = plain_shop(answers)
    shown = dict(zip(("dress", "skirt"), pictures))

    def file_under(slug: str, category: str, price: str = "19.99") -> None:
        data = {**product_data(shop.base_url, slug.title(), [shown[slug]]), "category": category}
        data["offers"]["price"] = price
        answers[f"/p/{slug}.html"] = (200, f'<script type="application/ld+json">{json.dumps(data)}</script>'.encode(),
                                      {"Content-Type": "text/html"})

    file_under("dress", "Dresses")
    file_under("skirt", "Skirts")
    answers["/sitemap.xml"] = (200, f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{shop.base_url}p/dress.html</loc>'
                                    f'</url><url><loc>{shop.base_url}p/skirt.html</loc></url></urlset>'.encode())
    catalogue.save_source(runtime.db, ShopSource(base_url=shop.base_url, name="s", strategy="sitemap", local=True, delay_s=0, fetch=FAST))
    pipeline.scrape(runtime.app)
    runtime.drain()
    return shop, answers, file_under, ids.image_id(shop.base_url + pictures[0])


def look_photo_products(runtime, shop, picture) -> tuple[dict, dict]:
    """The look photo's owner and the other product that shows it."""
    rows = catalogue.products_of_shop(runtime.db, ids.shop_id(shop.base_url)).values()
    owner = next(row for row in rows if row["id"] == catalogue.get_image(runtime.db, picture)["product_id"])
    return owner, next(row for row in rows if row is not owner)


def test_a_picture_handed_over_to_a_product_of_another_category_is_indexed_anew_in_its_category(runtime, plain_shop):
    # A dress and a skirt show one picture: its garment was indexed with its owner's category, and
    # when the owner went, the picture passed to the other and stayed there, where search showed
    # neither.
    shop, answers, file_under, picture = look_photo_shop(runtime, plain_shop)
    owner, heir = look_photo_products(runtime, shop, picture)

    def garment_category() -> str:
        (row,) = runtime.db.run_query("SELECT category FROM detections WHERE image_id = :id", {"id": picture})
        return row["category"]

    assert garment_category() == owner["category"]
    answers[urlsplit(owner["url"]).path] = (404, b"gone")
    pipeline.revalidate(runtime.app)  # the owner is gone: its picture passes to the other
    assert catalogue.get_image(runtime.db, picture)["product_id"] == heir["id"]
    # The heir's next visit (this revalidation's, or the next round's) fetches its picture again.
    pipeline.scrape(runtime.app, force=True)
    assert ids.incoming_key(picture) in incoming(runtime)
    runtime.drain()
    assert garment_category() == heir["category"] and ids.incoming_key(picture) not in incoming(runtime)
    pipeline.scrape(runtime.app, force=True)  # filed where it belongs now: not fetched again
    assert ids.incoming_key(picture) not in incoming(runtime)


def test_a_picture_fetched_again_for_a_product_its_shop_refiles_stays_its_live_owners(runtime, plain_shop):
    # The other product, re-filed, took the look photo over: its owner, still showing it, was then
    # a product of another category than the picture's, an answer to no search.
    shop, answers, file_under, picture = look_photo_shop(runtime, plain_shop)
    owner, other = look_photo_products(runtime, shop, picture)
    file_under(urlsplit(other["url"]).path.removeprefix("/p/").removesuffix(".html"), "Shirts")
    pipeline.scrape(runtime.app, force=True)
    runtime.drain()
    assert catalogue.get_image(runtime.db, picture)["product_id"] == owner["id"]
    d0 = ids.detection_id(picture, 0)
    assert [item["product_id"] for item in catalogue.items_for_detections(runtime.db, [d0])[d0]] == [owner["id"]]


def test_a_product_a_deletion_moves_onto_a_feed_page_read_at_an_earlier_pass_is_not_removed(runtime, shop, monkeypatch):
    one_a_page(runtime, shop, monkeypatch, ["feed-coat", "feed-vest", "feed-polo"])
    pipeline.scrape(runtime.app)
    assert feed_state(runtime, shop)[0] == {"feed-coat": "1", "feed-vest": "2", "feed-polo": "3"}
    first = pipeline.scrape(runtime.app, limit=2)  # the next round's first pass reads pages 1 and 2
    shop.remove("feed-coat")  # before its second: the others move up a page (vest, polo)
    shop.feed_handles.remove("feed-coat")
    second = pipeline.scrape(runtime.app)  # reads page 3 (now past the end): the round ends
    assert (first["shops_unfinished"], second["shops_unfinished"], second["products_dead"]) == (1, 0, 0)
    live, dead = feed_state(runtime, shop)
    # The polo, now on page 2 (read before it moved there), was on no page this round: it was taken
    # as removed, and its pictures fetched again when the next round found it.
    assert "feed-polo" in live and live["feed-polo"] is None and "feed-polo" not in dead
    assert pipeline.revalidate(runtime.app)["products_dead"] == 0  # its own page says it is sold


def test_a_picture_handed_over_is_indexed_anew_at_a_changed_visit_of_its_new_owner_too(runtime, plain_shop):
    # Only an unchanged visit fetched it again: a page whose price moves at every visit never did.
    shop, answers, file_under, picture = look_photo_shop(runtime, plain_shop)
    owner, heir = look_photo_products(runtime, shop, picture)
    catalogue.mark_product_dead(runtime.db, owner["id"])  # the owner is gone: its picture passes to the other
    heir_slug = urlsplit(heir["url"]).path.removeprefix("/p/").removesuffix(".html")
    file_under(heir_slug, {"dress": "Dresses", "skirt": "Skirts"}[heir_slug], price="17.99")  # its page changed, not its category
    report = pipeline.scrape(runtime.app, force=True)
    assert report["products_changed"] == 1 and ids.incoming_key(picture) in incoming(runtime)
    runtime.drain()
    (row,) = runtime.db.run_query("SELECT category FROM detections WHERE image_id = :id", {"id": picture})
    assert row["category"] == heir["category"]


def test_an_original_a_changed_page_shows_through_its_copy_is_fetched_again_when_misfiled(runtime, plain_shop):
    # The skirt shows a copy of the dress's picture (the same bytes at its own address); the dress
    # goes, and the picture, still indexed with the dresses, is the skirt's. A changed visit of the
    # skirt fetched only the address its page shows, never the original's.
    shop, answers, file_under, original = look_photo_shop(runtime, plain_shop, pictures=("img/dress.jpg", "img/skirt.jpg"))
    assert catalogue.get_image(runtime.db, ids.image_id(shop.base_url + "img/skirt.jpg"))["duplicate_of"] == original
    answers["/p/dress.html"] = (404, b"gone")
    catalogue.mark_product_dead(runtime.db, ids.product_id(shop.base_url + "p/dress.html"))  # its picture passes to the skirt
    file_under("skirt", "Skirts", price="17.99")  # and the skirt's page changes
    assert pipeline.scrape(runtime.app, force=True)["products_changed"] == 1
    assert ids.incoming_key(original) in incoming(runtime)


def test_a_scrape_stopped_between_a_product_and_its_pictures_fetches_them_at_the_next(runtime, plain_shop, monkeypatch):
    colours = [(200, 30, 30), (30, 30, 200)]
    shop, _answers = one_page_shop(plain_shop, ["img/red.jpg", "img/blue.jpg"],
                                   lambda n: (200, jpeg(Image.new("RGB", (64, 64), colours[n])), {"Content-Type": "image/jpeg"}))
    catalogue.save_source(runtime.db, ShopSource(base_url=shop.base_url, name="s", strategy="sitemap", local=True, delay_s=0, fetch=FAST))
    image = SourcePass.image

    def stopped_at_its_first_picture(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C, a kill, a full disk

    monkeypatch.setattr(SourcePass, "image", stopped_at_its_first_picture)
    with pytest.raises(KeyboardInterrupt):
        pipeline.scrape(runtime.app)
    monkeypatch.setattr(SourcePass, "image", image)
    report = pipeline.scrape(runtime.app, force=True)
    assert report["images_uploaded"] == 2  # not taken for unchanged, its pictures never fetched
    assert pipeline.scrape(runtime.app, force=True)["images_uploaded"] == 0


def ld_page(data, canonical):
    link = f'<link rel="canonical" href="{canonical}">' if canonical else ""
    return 200, f'<html><head>{link}<script type="application/ld+json">{json.dumps(data)}</script></head></html>'.encode(), {"Content-Type": "text/html"}


def test_a_redirected_page_whose_json_ld_spells_its_canonical_with_a_slash_is_its_product(runtime, plain_shop):
    answers = {"/robots.txt": (200, b"")}
    base = plain_shop(answers).base_url
    # A stale sitemap address (http://, no www., an old path) the shop sends on to the page.
    answers["/sitemap.xml"] = (200, f"<urlset xmlns='http://www.sitemaps.org/schemas/sitemap/0.9'><url><loc>{base}item/7</loc></url></urlset>".encode())
    answers["/img/dress.jpg"] = (200, jpeg(Image.new("RGB", (64, 64), (200, 30, 30))), {"Content-Type": "image/jpeg"})
    answers["/item/7"] = (301, b"", {"Location": f"{base}p/dress"})
    answers["/p/dress"] = ld_page({**product_data(base, "Red dress", ["img/dress.jpg"]), "url": f"{base}p/dress/"}, f"{base}p/dress")
    catalogue.save_source(runtime.db, ShopSource(base_url=base, name="s", strategy="sitemap", local=True, delay_s=0, fetch=FAST))
    report = pipeline.scrape(runtime.app)
    rows = runtime.db.run_query("SELECT url, page_url, is_dead, dead_reason FROM products")
    assert report["products_new"] == 1 and not rows[0]["is_dead"]
    # Nor is a product whose address is its page's with a size's query ("?variant=7", as some themes write it).
    answers["/p/dress"] = ld_page({**product_data(base, "Red dress", ["img/dress.jpg"]), "url": f"{base}p/dress?variant=7"}, None)
    report = pipeline.scrape(runtime.app, force=True)
    assert report["products_new"] == 1 and report.get("errors.soft-404", 0) == 0  # read, not taken for gone
    assert not catalogue.products_of_shop(runtime.db, ids.shop_id(base))[f"{base}p/dress?variant=7"]["is_dead"]


def test_a_revival_stopped_before_its_pictures_ingests_them_at_the_next_pass(runtime, plain_shop, monkeypatch):
    from shazzam.db import detections, images

    shop, answers = one_page_shop(plain_shop, ["img/red.jpg"], lambda n: (200, jpeg(Image.new("RGB", (64, 64), (200, 30, 30))), {"Content-Type": "image/jpeg"}))
    catalogue.save_source(runtime.db, ShopSource(base_url=shop.base_url, name="s", strategy="sitemap", local=True, delay_s=0, fetch=FAST))
    assert pipeline.scrape(runtime.app)["images_uploaded"] == 1
    image_id = ids.image_id(shop.base_url + "img/red.jpg")
    page = answers["/p/tee.html"]
    answers["/p/tee.html"] = (404, b"gone")
    pipeline.scrape(runtime.app, force=True)
    # As the pipeline and an index run leave a dead product's picture: detected, its garment out of the shards.
    with runtime.db.transaction() as c:
        c.execute(sa.update(images).where(images.c.id == image_id).values(status="detected"))
        c.execute(sa.insert(detections).values(id=image_id + "-000", image_id=image_id, box_left=0, box_top=0, box_right=9, box_bottom=9,
                                               score=0.9, label="dress", embedding_status="removed", created_at=catalogue.utcnow(),
                                               updated_at=catalogue.utcnow() - timedelta(hours=2)))
    answers["/p/tee.html"] = page  # back exactly as it was
    image = SourcePass.image

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(SourcePass, "image", stopped)
    with pytest.raises(KeyboardInterrupt):
        pipeline.scrape(runtime.app, force=True)
    monkeypatch.setattr(SourcePass, "image", image)
    report = pipeline.scrape(runtime.app, force=True)
    assert report["images_uploaded"] == 1  # its picture ingested again, as the revival would have


def two_shops_one_picture(runtime, plain_shop) -> tuple:
    """Two shops, each selling a tee at /p/tee.html shown at /img/tee.jpg, the same bytes: one
    picture, stored once, the other shop's a copy of it. Returns the shops, the original's first,
    and `stock(shop, in_stock, picture)`, which writes the shop's tee page anew."""
    shops = []
    for name in ("a", "b"):
        answers = {"/robots.txt": (200, b""), "/img/tee.jpg": (200, jpeg(tee((30, 30, 200))), {"Content-Type": "image/jpeg"})}
        shop = plain_shop(answers)
        answers["/sitemap.xml"] = (200, f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{shop.base_url}p/tee.html'
                                        f"</loc></url></urlset>".encode())
        catalogue.save_source(runtime.db, ShopSource(base_url=shop.base_url, name=name, strategy="sitemap", local=True, delay_s=0, fetch=FAST))
        shops.append(shop)

    def stock(shop, in_stock: bool, picture: str = "img/tee.jpg") -> None:
        data = product_data(shop.base_url, "Tee", [picture])
        data["offers"]["availability"] = "https://schema.org/" + ("InStock" if in_stock else "OutOfStock")
        shop.answers["/p/tee.html"] = (200, f'<script type="application/ld+json">{json.dumps(data)}</script>'.encode(), {"Content-Type": "text/html"})

    for shop in shops:
        stock(shop, True)
    pipeline.scrape(runtime.app, force=True)
    if catalogue.get_image(runtime.db, ids.image_id(shops[0].base_url + "img/tee.jpg"))["duplicate_of"]:
        shops.reverse()
    assert catalogue.get_image(runtime.db, ids.image_id(shops[1].base_url + "img/tee.jpg"))["duplicate_of"] == \
        ids.image_id(shops[0].base_url + "img/tee.jpg")
    return shops, stock


@pytest.mark.parametrize("found_by", ["scrape", "revalidate", "scrape of another picture"])
def test_a_picture_that_dies_with_its_owner_is_fetched_at_once_by_another_shop_that_shows_a_copy(runtime, plain_shop, found_by):
    # The picture died with its owner (sold out, or showing it no more), and the other shop's copy
    # went back to never fetched: that shop's tee had no searchable picture until its own page's
    # next visit, days away in a big shop.
    (first, second), stock = two_shops_one_picture(runtime, plain_shop)
    if found_by == "scrape of another picture":  # the owner lives on, showing a picture of another tee
        first.answers["/img/other.jpg"] = (200, jpeg(tee((200, 30, 30))), {"Content-Type": "image/jpeg"})
        stock(first, True, "img/other.jpg")
    else:
        stock(first, False)
    if found_by != "revalidate":
        pipeline.scrape(runtime.app, shop_url=first.base_url, force=True)
    else:  # the other shop's tee checked first, while its copy stood for the picture
        with runtime.db.transaction() as c:
            c.execute(sa.text("UPDATE products SET last_seen_at = :then WHERE id = :id"),
                      {"then": catalogue.utcnow() - timedelta(days=1), "id": ids.product_id(second.base_url + "p/tee.html")})
        revalidate_products(runtime.app, Summary())
    assert catalogue.get_image(runtime.db, ids.image_id(first.base_url + "img/tee.jpg"))["is_dead"]
    kept = catalogue.get_image(runtime.db, ids.image_id(second.base_url + "img/tee.jpg"))
    assert kept["duplicate_of"] is None and kept["content_sha256"] and not kept["is_dead"]
    assert ids.incoming_key(kept["id"]) in incoming(runtime)  # on its way to search, a picture of its own
    assert catalogue.get_item(runtime.db, ids.product_id(second.base_url + "p/tee.html"))["image_urls"] == [second.base_url + "img/tee.jpg"]


def test_the_pages_read_again_for_a_dead_picture_are_counted_in_the_scrape_summary(runtime, plain_shop):
    # The other shop's tee page was fetched, but the summary left it out of pages_fetched.
    (first, second), stock = two_shops_one_picture(runtime, plain_shop)
    stock(first, False)
    before = {shop: len(shop.asked) for shop in (first, second)}
    report = pipeline.scrape(runtime.app, shop_url=first.base_url, force=True)
    asked = {shop: shop.asked[before[shop]:] for shop in (first, second)}
    assert asked[second] == ["/robots.txt", "/p/tee.html", "/img/tee.jpg"]  # read again at once
    documents = [path for paths in asked.values() for path in paths if path.startswith(("/p/", "/sitemap"))]
    assert report["pages_fetched"] == len(documents)


def test_a_scrape_cut_by_limit_leaves_the_pages_of_a_dead_picture_for_their_next_visit(runtime, plain_shop):
    # `--limit N` promises N product pages per source; reading other shops' pages too broke it.
    (first, second), stock = two_shops_one_picture(runtime, plain_shop)
    stock(first, False)
    asked_before = len(second.asked)
    pipeline.scrape(runtime.app, shop_url=first.base_url, force=True, limit=1)
    assert second.asked[asked_before:] == []
    kept = catalogue.get_image(runtime.db, ids.image_id(second.base_url + "img/tee.jpg"))
    assert kept["content_sha256"] is None  # never fetched: its page's next visit fetches it
