"""The polite fetcher against the quirky shop: every guard, seen from the shop's request log."""

from __future__ import annotations

import time

import pytest

from shazzam.scrape import Crawl, Fetcher, FetchError, RobotsDisallowed, ShopSource
from shazzam.scrape.fetch import is_private_host
from tests.support.quirky_shop import QuirkyShop

# Tiny times: the tests take a second or two, not minutes.
FAST = {"timeout_s": 1.0, "total_timeout_s": 0.4, "retries": 1, "backoff_s": 0.01, "max_bytes": 2_000_000, "max_retry_after_s": 5}


@pytest.fixture
def shop():
    with QuirkyShop(endless_s=3, slow_s=0.2) as running:
        yield running


@pytest.fixture
def fetcher(shop):
    return Fetcher(local=True, delay_s=0, allowed_hosts=frozenset({"127.0.0.1"}), **FAST)


def test_robots_disallow_is_obeyed_and_never_requested(shop, fetcher):
    with pytest.raises(RobotsDisallowed):
        fetcher.get(shop.url("private/secret.html"))
    assert fetcher.sitemaps(shop.base_url) == [shop.url("sitemap_index.xml")]
    assert shop.paths() == ["/robots.txt"]
    assert {entry.user_agent for entry in shop.log} == {fetcher.user_agent}
    assert "ShazzamBot" in fetcher.user_agent and "+http" in fetcher.user_agent


def test_private_addresses_and_other_hosts_are_refused_before_connecting(shop):
    public = Fetcher(delay_s=0, **FAST)
    for url in (shop.url("robots.txt"), "http://localhost/", "http://10.1.2.3/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/"):
        with pytest.raises(FetchError) as error:
            public.get(url)
        assert error.value.kind == "blocked-address"
    local = Fetcher(local=True, delay_s=0, allowed_hosts=frozenset({"127.0.0.1"}), **FAST)
    with pytest.raises(FetchError) as error:
        local.get(f"http://localhost:{shop.port}/robots.txt")  # the same server under another name
    assert error.value.kind == "host-not-allowed"
    assert shop.log == []
    assert is_private_host("127.0.0.1") and is_private_host("fd00::1") and not is_private_host("shop.example")


def test_redirect_chain_is_followed_and_a_loop_is_capped(shop, fetcher):
    result = fetcher.get(shop.url("products/redirect.html"))
    assert result.status == 200 and result.url == shop.url("products/final.html")
    with pytest.raises(FetchError) as error:
        fetcher.get(shop.url("products/loop.html"))
    assert error.value.kind == "too-many-redirects"
    assert shop.paths().count("/products/loop-17") == fetcher.policy.max_redirects - 1


def test_retry_after_on_429_and_backoff_on_500(shop, fetcher):
    started = time.monotonic()
    assert fetcher.get(shop.url("products/rate-limited.html")).status == 200
    assert time.monotonic() - started >= 0.9  # Retry-After: 1
    assert fetcher.get(shop.url("products/flaky.html")).status == 200
    assert shop.paths().count("/products/rate-limited.html") == 2 and shop.paths().count("/products/flaky.html") == 2


def test_a_too_long_retry_after_gives_up(shop):
    fetcher = Fetcher(local=True, delay_s=0, **{**FAST, "max_retry_after_s": 0.5})
    with pytest.raises(FetchError) as error:
        fetcher.get(shop.url("products/rate-limited.html"))
    assert error.value.kind == "rate-limited"


def test_slow_page_is_waited_for_and_an_endless_one_is_cut(shop, fetcher):
    assert fetcher.get(shop.url("products/slow.html")).status == 200
    started = time.monotonic()
    with pytest.raises(FetchError) as error:
        fetcher.get(shop.url("products/endless.html"))
    assert error.value.kind == "timeout"
    assert time.monotonic() - started < 2.5  # two attempts of 0.4 s, not the shop's 3 s


def test_byte_cap_with_and_without_content_length_and_content_type_check(shop, fetcher):
    for path in ("images/huge.jpg", "images/huge-stream.jpg"):
        with pytest.raises(FetchError) as error:
            fetcher.get(shop.url(path))
        assert error.value.kind == "too-large"
    with pytest.raises(FetchError) as error:
        fetcher.get(shop.url("images/main.jpg"), accept=("text/html",))
    assert error.value.kind == "content-type"


def test_conditional_requests(shop, fetcher):
    first = fetcher.get(shop.url("products/final.html"))
    assert first.etag and first.last_modified
    assert fetcher.get(shop.url("products/final.html"), etag=first.etag).not_modified
    assert fetcher.get(shop.url("products/final.html"), last_modified=first.last_modified).status == 304
    shop.set_price("final", "21.00")
    assert fetcher.get(shop.url("products/final.html"), etag=first.etag).status == 200


def test_per_host_delay_paces_requests(shop):
    fetcher = Fetcher(local=True, delay_s=0.1, **FAST)
    started = time.monotonic()
    for _ in range(4):
        fetcher.get(shop.url("products/final.html"))
    assert time.monotonic() - started >= 0.4  # robots.txt + 4 pages, 0.1 s apart


def test_listing_pagination_loop_and_shopify_feed(shop, fetcher):
    listing = ShopSource(base_url=shop.base_url, strategy="listing", listing_urls=("/collections/all",), local=True)
    assert Crawl(listing, fetcher).listing_urls() == [shop.url("products/listed-1.html"), shop.url("products/listed-2.html")]
    assert shop.paths().count("/collections/all?page=2") == 1  # the loop back to page 1 ends there
    assert "/private/secret.html" not in shop.paths()
    feed = ShopSource(base_url=shop.base_url, strategy="shopify", local=True, currency="EUR")
    outcomes = list(Crawl(feed, fetcher).pages())
    assert [p.title for o in outcomes for p in o.products] == ["Feed tee"]
    assert outcomes[0].products[0].image_urls == (shop.url("images/feed-1.jpg"),)
