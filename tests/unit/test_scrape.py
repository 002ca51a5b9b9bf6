"""shazzam.scrape: category normalisation, JSON-LD extraction, the polite fetcher, discovery."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shazzam.scrape import (
    CATEGORIES,
    USER_AGENT,
    Fetcher,
    FetchError,
    ScrapedProduct,
    discover_product_urls,
    extract_products,
    normalise_category,
    scrape_shop,
)

# --------------------------------------------------------------------------------------------
# normalise_category
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        *[(name, name) for name in CATEGORIES],
        ("T-Shirts", "t-shirt"),
        ("tee", "t-shirt"),
        ("Graphic Tees", "t-shirt"),
        ("Tee-shirt", "t-shirt"),  # French spelling: not a shirt
        ("T-shirt à manches longues", "longsleeve"),  # its sleeves, after the preposition, still count
        ("Camiseta de manga larga", "longsleeve"),
        ("T-shirt with long sleeves", "longsleeve"),
        ("Dress with long sleeves", "dress"),
        ("Tee-shirts homme", "t-shirt"),
        ("T-Shirts & Tops", "t-shirt"),
        ("Jeans", "pants"),
        ("Trousers", "pants"),
        ("coat", "outwear"),
        ("Coats & Jackets", "outwear"),
        ("Sneakers & Shoes", "shoes"),
        ("boots", "shoes"),
        ("cap", "hat"),
        ("Beanies", "hat"),
        ("Sweater", "longsleeve"),
        ("Long Sleeve Tops", "longsleeve"),
        ("long-sleeve t-shirt", "longsleeve"),
        ("Sweatshirts", "longsleeve"),
        ("Blouse", "shirt"),
        ("Shirts", "shirt"),
        ("Dress shirts", "shirt"),
        ("Summer Dresses", "dress"),
        ("Denim Shorts", "shorts"),
        ("Midi Skirts", "skirt"),
        ("Women > Clothing > Dresses", "dress"),
        ("Accessories", None),
        ("Capri", None),  # whole words only: not "cap"
        ("", None),
        (None, None),
        # the head noun names the garment, other garment words modify it
        ("T-shirt dress", "dress"),
        ("Sweater dress", "dress"),
        ("Long-sleeved dress", "dress"),
        ("Coat dress", "dress"),
        ("Shirt dress", "dress"),
        ("Dress boots", "shoes"),
        ("Sweat-shirt", "longsleeve"),
        ("Cap sleeve top", None),
        ("Cap sleeve blouse", "shirt"),
        # singular and one-word forms
        ("Sweatpants", "pants"),
        ("Skinny jean", "pants"),
        ("Raincoats", "outwear"),
        ("Oversized hoody", "longsleeve"),
        ("Chunky trainer", "shoes"),
        # things that are not garments of the ten categories, whatever garment word is beside them
        ("Shoe bags", None),
        ("Dress socks", None),
        ("Sneaker-Socken", None),
        ("T-shirt bras", None),
        ("Boxer shorts", None),
        ("Coat hanger", None),
        # English words that are garments in another language: "pull-on" is a fit, a robe is worn after a bath
        ("Pull-On Jeans", "pants"),
        ("Pull-on shorts", "shorts"),
        ("Women > Bottoms > Pull-on skirt", "skirt"),
        ("Bath robe", None),
        ("Dressing gowns", None),
        ("Robes de chambre", None),
        ("Kimono robe", None),
        ("Pulls femme", "longsleeve"),
        # other languages: the head noun first in French, Italian, Spanish; accents and compounds
        ("Herren > Bekleidung > Hemden", "shirt"),
        ("Damen > Röcke", "skirt"),
        ("Femme > Robes", "dress"),
        ("Robe t-shirt", "dress"),
        ("T-Shirt-Kleid", "dress"),
        ("Giacca di jeans", "outwear"),
        ("Mujer > Faldas", "skirt"),
        ("Heren > Broeken", "pants"),
        ("Kobiety > Sukienki", "dress"),
        ("Męskie > Płaszcze", "outwear"),
        ("Dam > Klänningar", "dress"),
        ("Langarm-Shirts", "longsleeve"),
        # German compounds: the head comes last in the word
        ("Damen > Bekleidung > Sommerkleider", "dress"),
        ("Jeansjacke", "outwear"),
        ("Damenstrickjacke", "longsleeve"),
        ("Wintermäntel", "outwear"),
        ("Lederhosen", "pants"),
        ("Miniröcke", "skirt"),
        ("Jeansrock", "skirt"),
        ("Badehose", "shorts"),
        ("Strickpullover", "longsleeve"),
        ("Laufschuhe", "shoes"),
        ("Strohhüte", "hat"),
        ("Strickmützen", "hat"),
        ("Flanellhemd", "shirt"),
        ("Sommerkleid mit Gürtel", "dress"),
        ("Handtaschen", None),
        ("Handschuhe", None),
        ("Strumpfhosen", None),
        ("Boxershorts", None),
        ("Bikinihose", None),
        ("Sheer Pantyhose", None),
        ("Bademantel", None),
        ("Shamrock", None),  # English words that end like a German head name nothing
        ("Punkrock", None),
        ("Unchosen", None),
        ("Kleidung", None),  # clothing, not a dress
        ("Parachute", None),
        ("Parachute pants", "pants"),
        ("Jeansjacke mit Kapuze", "outwear"),
        # lists are named by their first garment; lengths, fabrics and extras do not name one
        ("Shoes & Accessories", "shoes"),
        ("Hats, Scarves & Gloves", "hat"),
        ("Shirts & Ties", "shirt"),
        ("Dresses & Skirts", "dress"),  # two garments: the first, not the last (a dress filed as a skirt)
        ("Skirts & Dresses", "skirt"),
        ("Midi Dress with Belt", "dress"),
        ("Bootcut Jeans (Short)", "pants"),
        ("Jersey Tops", None),
        ("T-Shirt Tie Dye", "t-shirt"),
        ("T-shirts manches longues", "longsleeve"),
    ],
)
def test_normalise_category(text: str | None, expected: str | None) -> None:
    assert normalise_category(text) == expected


@pytest.mark.parametrize(
    "crumbs, expected",
    [
        (["Women", "Shoes & Bags", "Bags"], None),  # the leaf names a bag: not the parent's shoes
        (["Accessories", "Hats & Scarves", "Scarves"], None),
        (["Women", "Dresses", "Sale"], "dress"),  # the leaf names nothing: its parent does
        (["Women", "Dresses", "Short"], "dress"),
        (["Men", "Suits & Blazers", "Ties"], None),
    ],
)
def test_a_breadcrumbs_leaf_decides_unless_it_names_nothing(crumbs, expected):
    from shazzam.scrape.extract import _category_of

    assert _category_of(crumbs) == expected


# --------------------------------------------------------------------------------------------
# extract_products
# --------------------------------------------------------------------------------------------

PAGE = "https://shop.example/en/products/page.html"


def _html(*blocks: object, raw: str = "") -> str:
    scripts = "\n".join(
        f'<script type="application/ld+json">{json.dumps(b)}</script>' for b in blocks
    )
    return f"<html><head>{scripts}{raw}</head><body><h1>x</h1></body></html>"


def test_extract_simple_product_with_offer() -> None:
    html = _html(
        {
            "@context": "https://schema.org",
            "@type": "Product",
            "name": "Linen summer dress",
            "sku": "D-1",
            "brand": {"@type": "Brand", "name": "Vireo"},
            "category": "Dresses",
            "image": "https://cdn.example/d1.jpg",
            "offers": {"@type": "Offer", "price": "49.99", "priceCurrency": "eur"},
        }
    )
    assert extract_products(html, PAGE) == [
        ScrapedProduct(
            url=PAGE,
            title="Linen summer dress",
            price=Decimal("49.99"),
            currency="EUR",
            category="dress",
            brand="Vireo",
            sku="D-1",
            image_urls=("https://cdn.example/d1.jpg",),
            breadcrumb="Dresses",
        )
    ]


def test_extract_graph_type_list_aggregate_offer_image_object_relative_urls() -> None:
    html = _html(
        {
            "@context": "https://schema.org",
            "@graph": [
                {"@type": "WebPage", "name": "not a product"},
                {
                    "@type": ["Product", "IndividualProduct"],
                    "name": "Wool coat",
                    "brand": "Northbay",
                    "category": ["Women", "Coats & Jackets"],
                    "image": [
                        {"@type": "ImageObject", "url": "/img/coat-1.jpg"},
                        {"@type": "ImageObject", "contentUrl": "img/coat-2.jpg"},
                        "../coat-3.jpg",
                    ],
                    "url": "/en/products/coat.html",
                    "offers": {
                        "@type": "AggregateOffer",
                        "lowPrice": 120,
                        "highPrice": 150,
                        "priceCurrency": "GBP",
                    },
                },
            ],
        }
    )
    [product] = extract_products(html, PAGE)
    assert product.title == "Wool coat"
    assert product.brand == "Northbay"
    assert product.category == "outwear"
    assert product.price == Decimal("120")
    assert product.currency == "GBP"
    assert product.url == "https://shop.example/en/products/coat.html"
    assert product.image_urls == (
        "https://shop.example/img/coat-1.jpg",
        "https://shop.example/en/products/img/coat-2.jpg",
        "https://shop.example/en/coat-3.jpg",
    )


def test_extract_top_level_list_nested_product_and_offer_list() -> None:
    html = _html(
        [
            {"@type": "BreadcrumbList", "itemListElement": []},
            {
                "@type": "ItemPage",
                "mainEntity": {
                    "@type": "http://schema.org/Product",
                    "name": "Canvas sneakers",
                    "image": {"@type": "ImageObject", "url": "https://cdn.example/s.jpg"},
                    "category": {
                        "@type": "BreadcrumbList",
                        "itemListElement": [
                            {"@type": "ListItem", "position": 1, "name": "Men"},
                            {"@type": "ListItem", "position": 2, "name": "Sneakers"},
                        ],
                    },
                    "offers": [
                        {"@type": "Offer", "price": 59.5, "priceCurrency": "USD",
                         "url": "https://shop.example/p/sneakers"},
                        {"@type": "Offer", "price": "65.00", "priceCurrency": "USD"},
                    ],
                },
            },
        ]
    )
    [product] = extract_products(html, PAGE)
    assert product.title == "Canvas sneakers"
    assert product.category == "shoes"
    assert product.price == Decimal("59.5")
    assert product.url == "https://shop.example/p/sneakers"
    assert product.brand is None and product.sku is None


def test_extract_skips_invalid_json_products_without_image_or_name() -> None:
    good = {"@type": "Product", "name": "Tee", "image": "/t.jpg",
            "offers": {"@type": "Offer", "price": "not a price", "priceCurrency": "EUR"}}
    html = _html(
        {"@type": "Product", "name": "No image", "offers": {"price": "1"}},
        {"@type": "Product", "image": "/nameless.jpg"},
        good,
        raw='<script type="application/ld+json">{"@type": "Product", "name": broken</script>'
        '<script type="text/javascript">{"@type": "Product"}</script>',
    )
    [product] = extract_products(html, PAGE)
    assert product.title == "Tee"
    assert product.price is None
    assert product.currency == "EUR"
    assert product.image_urls == ("https://shop.example/t.jpg",)
    assert product.category is None


def test_extract_price_formats() -> None:
    def price(value: object) -> Decimal | None:
        html = _html({"@type": "Product", "name": "x", "image": "/x.jpg",
                      "offers": {"price": value}})
        return extract_products(html, PAGE)[0].price

    assert price("19.99") == Decimal("19.99")
    assert price(20) == Decimal("20")
    assert price("12,50") == Decimal("12.50")
    assert price("1,299.00") == Decimal("1299.00")
    assert price("") is None
    assert price(True) is None
    assert price("-3") is None


def test_extract_no_json_ld() -> None:
    assert extract_products("<html><body>nothing</body></html>", PAGE) == []


# --------------------------------------------------------------------------------------------
# A tiny local HTTP server
# --------------------------------------------------------------------------------------------


class _Site:
    """Routes: path -> (status, content type, body); records the user agents seen."""

    def __init__(self, routes: dict[str, tuple[int, str, bytes]]) -> None:
        self.routes = routes
        self.user_agents: list[str] = []
        self.requests: list[str] = []


@pytest.fixture
def site() -> Iterator[tuple[_Site, str]]:
    state = _Site({})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            state.user_agents.append(self.headers.get("User-Agent", ""))
            state.requests.append(self.path)
            status, content_type, body = state.routes.get(
                self.path, (404, "text/plain", b"not found")
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_fetcher_honours_robots_disallow_and_caches_it(site: tuple[_Site, str]) -> None:
    state, base = site
    state.routes = {
        "/robots.txt": (200, "text/plain",
                        b"User-agent: *\nDisallow: /private\n\nSitemap: " + base.encode()
                        + b"/sm.xml\n"),
        "/page": (200, "text/html; charset=utf-8", "héllo".encode()),
    }
    fetcher = Fetcher(local=True, delay_s=0)
    assert fetcher.allowed(base + "/page")
    assert not fetcher.allowed(base + "/private/x")
    with pytest.raises(FetchError, match="disallowed by robots.txt"):
        fetcher.get(base + "/private/x")
    result = fetcher.get(base + "/page")
    assert (result.status, result.body) == (200, "héllo".encode())
    assert result.text() == "héllo"
    assert result.content_type.startswith("text/html")
    assert fetcher.sitemaps(base + "/") == [base + "/sm.xml"]
    assert state.requests.count("/robots.txt") == 1
    assert set(state.user_agents) == {USER_AGENT}


def test_fetcher_missing_robots_allows_all_and_returns_http_errors(
    site: tuple[_Site, str],
) -> None:
    state, base = site
    state.routes = {"/a": (200, "text/html", b"<html></html>")}
    fetcher = Fetcher(local=True, delay_s=0)
    assert fetcher.allowed(base + "/anything")
    assert fetcher.sitemaps(base) == []
    assert fetcher.get(base + "/a").status == 200
    missing = fetcher.get(base + "/missing")
    assert missing.status == 404
    assert missing.body == b"not found"


def test_fetcher_body_cap(site: tuple[_Site, str]) -> None:
    state, base = site
    state.routes = {"/big": (200, "application/octet-stream", b"x" * 5000),
                    "/small": (200, "application/octet-stream", b"x" * 1000)}
    fetcher = Fetcher(max_bytes=1000, local=True, delay_s=0)
    assert len(fetcher.get(base + "/small").body) == 1000
    with pytest.raises(FetchError):
        fetcher.get(base + "/big")


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/x", "javascript:alert(1)", "/relative"]
)
def test_fetcher_refuses_other_schemes(url: str) -> None:
    fetcher = Fetcher()
    with pytest.raises(FetchError):
        fetcher.get(url)
    with pytest.raises(FetchError):
        fetcher.allowed(url)


def test_fetcher_network_error_raises_fetch_error() -> None:
    # Port 9 on 127.0.0.1 (discard) is normally closed: the connection is refused.
    with pytest.raises(FetchError):
        Fetcher(timeout=2).get("http://127.0.0.1:9/")


# --------------------------------------------------------------------------------------------
# Discovery and the whole shop
# --------------------------------------------------------------------------------------------

_NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def _urlset(*locs: str) -> bytes:
    body = "".join(f"<url><loc>{loc}</loc></url>" for loc in locs)
    return f'<?xml version="1.0"?><urlset {_NS}>{body}</urlset>'.encode()


def _index(*locs: str) -> bytes:
    body = "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs)
    return f'<?xml version="1.0"?><sitemapindex {_NS}>{body}</sitemapindex>'.encode()


def test_a_sitemap_is_read_as_a_stream_and_may_not_declare_entities() -> None:
    from shazzam.scrape.crawl import SitemapError, parse_sitemap

    plain = _urlset("https://shop.example/p/1?a=1&amp;b=2", "  https://shop.example/p/2\n")
    assert parse_sitemap(plain, 1_000_000) == ("urlset", ["https://shop.example/p/1?a=1&b=2", "https://shop.example/p/2"])
    assert parse_sitemap(b"<sitemapindex><sitemap><loc>/s.xml</loc><x><loc>/deep</loc></x></sitemap></sitemapindex>", 1000) == (
        "sitemapindex", ["/s.xml"])  # a <loc> deeper than an entry's own is not one
    # A few kilobytes of entities made a hundred times as many megabytes of <loc>.
    laughs = ('<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
              f"<urlset {_NS}><url><loc>https://shop.example/&b;</loc></url></urlset>").encode()
    for refused in (laughs, b"<urlset><url><loc>x</url>", b"", b'<?xml version="1.0" encoding="no-such"?><urlset/>'):
        with pytest.raises(SitemapError):
            parse_sitemap(refused, 1_000_000)


def test_a_sitemap_in_a_multi_byte_encoding_is_read() -> None:
    from shazzam.scrape.crawl import SitemapError, parse_sitemap

    # expat reads none of these itself: such a shop's sitemap, all ASCII or not, named no page.
    for label, codec in (("Shift_JIS", "cp932"), ("EUC-JP", "euc-jp"), ("GB2312", "gbk"), ("EUC-KR", "euc-kr"), ("Big5", "big5")):
        sitemap = f'<?xml version="1.0" encoding="{label}"?><urlset {_NS}><url><loc>https://shop.example/p/1</loc></url></urlset>'
        assert parse_sitemap(sitemap.encode(codec), 1_000_000) == ("urlset", ["https://shop.example/p/1"]), label
    japanese = f'<?xml version="1.0" encoding="Shift_JIS"?><urlset {_NS}><url><loc>https://shop.example/p/シャツ</loc></url></urlset>'
    assert parse_sitemap(gzip.compress(japanese.encode("cp932")), 1_000_000) == ("urlset", ["https://shop.example/p/シャツ"])
    doctype = '<?xml version="1.0" encoding="Shift_JIS"?><!DOCTYPE urlset [<!ENTITY a "a">]><urlset/>'.encode()
    not_in_it = japanese.encode("cp932").replace(b"</loc>", b"\x82</loc>")  # a character cut in two
    for refused in (doctype, not_in_it, b'<?xml version="1.0" encoding="no-such"?><urlset/>'):
        with pytest.raises(SitemapError):
            parse_sitemap(refused, 1_000_000)


def test_a_sitemap_in_a_single_byte_encoding_is_left_to_expat() -> None:
    from shazzam.scrape.crawl import parse_sitemap

    # Declared ISO-8859-1 but in UTF-8 ("Á" is C3 81): windows-1252, a browser's codec for the label,
    # has no 0x81, 0x8D, 0x8F, 0x90 or 0x9D, and the sitemap was refused whole; expat reads each byte.
    for label in ("ISO-8859-1", "latin1", "iso-8859-9", "tis-620"):
        sitemap = f'<?xml version="1.0" encoding="{label}"?><urlset {_NS}><url><loc>https://shop.example/p/ÁGUA</loc></url>'
        body = sitemap.encode() + b"<url><loc>https://shop.example/p/\x8d2</loc></url></urlset>"
        kind, locs = parse_sitemap(body, 1_000_000)
        assert (kind, len(locs)) == ("urlset", 2), label


def test_discover_follows_indexes_dedupes_and_stays_on_host(site: tuple[_Site, str]) -> None:
    state, base = site
    xml = "application/xml"
    state.routes = {
        # no robots.txt: falls back to /sitemap.xml
        "/sitemap.xml": (200, xml, _index(base + "/sm-a.xml", base + "/sm-b.xml",
                                          base + "/sitemap.xml")),
        "/sm-a.xml": (200, xml, _urlset(base + "/p/1", base + "/p/2",
                                        "https://elsewhere.example/p/9")),
        "/sm-b.xml": (200, xml, _index(base + "/sm-c.xml", base + "/sm-a.xml")),
        "/sm-c.xml": (200, xml, _urlset(base + "/p/2", base + "/p/3")),
    }
    fetcher = Fetcher(local=True, delay_s=0)
    assert discover_product_urls(base + "/", fetcher) == [
        base + "/p/1", base + "/p/2", base + "/p/3",
    ]
    assert state.requests.count("/sm-a.xml") == 1
    assert discover_product_urls(base + "/", fetcher, limit=2) == [base + "/p/1", base + "/p/2"]


def test_discover_depth_is_bounded(site: tuple[_Site, str]) -> None:
    state, base = site
    xml = "application/xml"
    state.routes = {
        "/robots.txt": (200, "text/plain", f"Sitemap: {base}/s1.xml\n".encode()),
        "/s1.xml": (200, xml, _index(base + "/s2.xml")),
        "/s2.xml": (200, xml, _index(base + "/s3.xml")),
        "/s3.xml": (200, xml, _index(base + "/s4.xml")),
        "/s4.xml": (200, xml, _urlset(base + "/too-deep")),
    }
    assert discover_product_urls(base, Fetcher(local=True, delay_s=0)) == []
    assert "/s4.xml" not in state.requests


def test_scrape_shop_skips_non_html_and_errors(site: tuple[_Site, str]) -> None:
    state, base = site
    product = {"@type": "Product", "name": "Tee", "image": "/t.jpg", "url": base + "/p/tee"}
    page = _html(product).encode()
    state.routes = {
        "/sitemap.xml": (200, "application/xml",
                         _urlset(base + "/p/1", base + "/p/2", base + "/p/gone",
                                 base + "/p/feed")),
        "/p/1": (200, "text/html; charset=utf-8", page),
        "/p/2": (200, "text/html", page),  # same product url: deduplicated
        "/p/feed": (200, "application/json", page),
    }
    products = list(scrape_shop(base, Fetcher(local=True, delay_s=0)))
    assert [p.url for p in products] == [base + "/p/tee"]
    assert products[0].image_urls == (base + "/t.jpg",)


def test_robots_crawl_delay_raises_the_delay(site: tuple[_Site, str]) -> None:
    import time

    state, base = site
    state.routes = {
        "/robots.txt": (200, "text/plain", b"User-agent: *\nCrawl-delay: 0.2\n"),
        "/a": (200, "text/html", b"<html></html>"),
    }
    fetcher = Fetcher(local=True, delay_s=0)
    fetcher.get(base + "/a")
    started = time.monotonic()
    fetcher.get(base + "/a")
    fetcher.get(base + "/a")
    assert time.monotonic() - started >= 0.35


def test_a_crawl_delay_of_an_hour_is_capped_at_a_minute(site: tuple[_Site, str]) -> None:
    """A shop asking an hour between requests would take months to read: its delay is capped
    (a minute), not obeyed as written, nor waited out one page an hour."""
    state, base = site
    state.routes = {"/robots.txt": (200, "text/plain", b"User-agent: *\nCrawl-delay: 3600\n")}
    fetcher = Fetcher(local=True, delay_s=0)
    assert fetcher.allowed(base + "/a")
    assert fetcher._delay_for(base + "/a") == 60.0
