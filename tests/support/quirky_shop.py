"""A shop with the quirks of the real web, served on 127.0.0.1 for the scraper's tests.

Every request is logged (path, Host header, user agent), so tests can prove what was and was
not asked for. The shop can change between two passes: ``set_price``, ``remove`` (404),
``soft_remove`` (a 200 "page not found"), ``set_stock``.

Quirks: robots.txt disallowing /private/; a sitemap index naming a gzip sitemap; relative and
protocol-relative image URLs; ``srcset``, ``data-src`` and ``data-srcset``; HTML entities;
prices with thousands commas; a broken JSON-LD block next to a good one; microdata-only and
OpenGraph-only pages; images outside the allowed host (another name for this server, a
link-local address); a redirect chain and a redirect loop; 429 with Retry-After and a 500, each
once; a slow page; a page that never ends; a 50 MB "image" (with and without Content-Length);
an HTML page served as image/jpeg; the same image under two URLs, the same bytes under two
URLs, a resized copy; listing pages whose pagination loops; a Shopify-style /products.json.
ETag and Last-Modified are honoured with 304s.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import io
import json
import random
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from PIL import Image

FIFTY_MB = 50 * 1024 * 1024
LAST_MODIFIED = "Wed, 01 Jan 2025 00:00:00 GMT"


def picture(seed: int, size: int = 96) -> Image.Image:
    """A distinct picture per seed: blocks of random colours (dHashes differ by many bits)."""
    rng = random.Random(seed)
    image = Image.new("RGB", (8, 8))
    image.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(64)])
    return image.resize((size, size), Image.Resampling.NEAREST)


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@dataclass
class Logged:
    path: str
    host: str
    user_agent: str


class QuirkyShop:
    def __init__(self, endless_s: float = 30.0, slow_s: float = 0.2) -> None:
        self.endless_s = endless_s  # how long the never-ending page trickles before giving up
        self.slow_s = slow_s
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        self._once: set[str] = set()
        self.categories: dict[str, str] = {}
        self.prices = {"entities": "1,299.00", "microdata": "45.00", "og": "30.00", "twin-a": "10.00", "twin-b": "11.00",
                       "same-bytes": "12.00", "resized": "13.00", "final": "20.00", "rate-limited": "21.00",
                       "flaky": "22.00", "slow": "23.00", "broken-jsonld": "24.00", "out-of-stock": "25.00",
                       "huge-image": "26.00", "fake-image": "27.00", "listed-1": "5.00", "listed-2": "6.00"}
        self.removed: set[str] = set()
        self.soft_removed: set[str] = set()
        self.out_of_stock: set[str] = {"out-of-stock"}
        self.unavailable_images: set[str] = set()  # answered 503 while listed (a CDN's bad minute)
        self.replaced_images: dict[str, list[str]] = {}  # slug -> the images its page shows instead
        self.feed_handles = ["feed-tee"]  # the products of /products.json, newest first
        self.failing_feed_pages: set[int] = set()  # answered 500 (a backend that times out on them)
        base = picture(1, 128)
        self.images = {
            "main.jpg": jpeg(base),
            "main-large.jpg": jpeg(picture(2, 256)),
            "lazy.jpg": jpeg(picture(3)),
            "proto.jpg": jpeg(picture(4)),
            "micro.jpg": jpeg(picture(5)),
            "og.jpg": jpeg(picture(6)),
            "shared.jpg": jpeg(picture(7)),
            "shared-copy.jpg": jpeg(picture(7)),  # the same bytes under another URL
            "shared-small.jpg": jpeg(picture(7).resize((64, 64)), quality=70),  # a CDN's resize
            "final.jpg": jpeg(picture(8)),
            "other.jpg": jpeg(picture(9)),
            "listed-1.jpg": jpeg(picture(10)),
            "listed-2.jpg": jpeg(picture(11)),
            "feed-1.jpg": jpeg(picture(12)),
            "oos.jpg": jpeg(picture(13)),
        }
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> "QuirkyShop":
        shop = self

        class Handler(_Handler):
            pass

        Handler.shop = shop
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def url(self, path: str) -> str:
        return self.base_url + path.lstrip("/")

    # -- changes between passes ---------------------------------------------------------------

    def set_price(self, slug: str, price: str) -> None:
        self.prices[slug] = price

    def set_category(self, slug: str, category: str) -> None:
        self.categories[slug] = category

    def remove(self, slug: str) -> None:
        self.removed.add(slug)

    def soft_remove(self, slug: str) -> None:
        self.soft_removed.add(slug)

    def restore(self, slug: str) -> None:
        self.removed.discard(slug)
        self.soft_removed.discard(slug)

    def set_stock(self, slug: str, in_stock: bool) -> None:
        (self.out_of_stock.discard if in_stock else self.out_of_stock.add)(slug)

    # -- the log --------------------------------------------------------------------------------

    def paths(self) -> list[str]:
        with self._lock:
            return [entry.path for entry in self.log]

    def once(self, key: str) -> bool:
        """True the first time ``key`` is asked about."""
        with self._lock:
            first = key not in self._once
            self._once.add(key)
            return first

    # -- pages ----------------------------------------------------------------------------------

    def robots(self) -> str:
        return f"User-agent: *\nDisallow: /private/\n\nUser-agent: BadBot\nDisallow: /\n\nSitemap: {self.url('sitemap_index.xml')}\n"

    def product_slugs(self) -> list[str]:
        return ["entities", "broken-jsonld", "microdata", "og", "twin-a", "twin-b", "same-bytes", "resized",
                "redirect", "loop", "rate-limited", "flaky", "slow", "endless", "out-of-stock", "huge-image",
                "fake-image"]

    def sitemap_index(self) -> str:
        return (
            '<?xml version="1.0" encoding="UTF-8"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"<sitemap><loc>{self.url('sitemap-products.xml.gz')}</loc></sitemap>"
            f"<sitemap><loc>{self.url('sitemap-private.xml')}</loc></sitemap>"
            "</sitemapindex>"
        )

    def sitemap(self, paths: list[str]) -> str:
        locs = "".join(f"<url><loc>{html.escape(self.url(p))}</loc></url>" for p in paths)
        return f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</urlset>'

    def json_ld_page(self, slug: str, title: str, images: list[str], *, gallery: str = "", extra_head: str = "") -> str:
        category = self.categories.get(slug, "Women > Dresses")
        availability = "https://schema.org/OutOfStock" if slug in self.out_of_stock else "https://schema.org/InStock"
        data = {
            "@context": "https://schema.org",
            "@type": "Product",
            "name": title,
            "sku": slug,
            "brand": {"@type": "Brand", "name": "Quirk &amp; Co"},
            "category": category,
            "color": "Red",
            "size": ["S", "M", "L"],
            "image": images,
            "offers": {"@type": "Offer", "price": self.prices[slug], "priceCurrency": "EUR", "availability": availability},
        }
        block = json.dumps(data).replace("</", "<\\/")
        return (
            f"<!doctype html><html><head><title>{html.escape(title)}</title>"
            f'<link rel="canonical" href="/products/{slug}.html">{extra_head}'
            f'<script type="application/ld+json">{block}</script></head>'
            f'<body><header><img src="/images/logo.png" alt="logo"></header><h1>{html.escape(title)}</h1>{gallery}'
            f'<aside class="related"><img src="/images/other.jpg"></aside></body></html>'
        )

    def product_page(self, slug: str) -> tuple[int, str, bytes] | None:
        if slug in self.removed:
            return None
        if slug in self.soft_removed:
            return 200, "text/html; charset=utf-8", b"<html><head><title>Page not found</title></head><body><h1>Sorry, this page does not exist</h1></body></html>"
        port = self.port
        if slug == "entities":
            gallery = (
                '<div class="product-gallery">'
                '<img src="../images/main.jpg" srcset="/images/main.jpg 400w, /images/main-large.jpg 1200w">'
                '<img src="data:image/gif;base64,R0lGOD" data-src="/images/lazy.jpg" class="lazy">'
                f'<img src="//127.0.0.1:{port}/images/proto.jpg">'
                f'<img src="http://localhost:{port}/images/main.jpg">'  # another name for this host
                '<img src="http://169.254.169.254/latest/meta-data/x.jpg">'  # link-local: never asked
                "</div>"
            )
            page = self.json_ld_page(slug, "Caf\u00e9 &amp; Co &quot;Midi&quot; dress", ["../images/main.jpg"], gallery=gallery)
            return 200, "text/html; charset=utf-8", page.encode()
        if slug == "broken-jsonld":
            good = json.loads(self.json_ld_page(slug, "Broken then good", ["/images/final.jpg"]).split('json">')[1].split("</script>")[0])
            page = (
                '<html><head><script type="application/ld+json">{"@type": "Product", "name": "Broken", </script>'
                f'<script type="application/ld+json">{json.dumps(good)[:-1]},}}</script>'
                '<script type="application/ld+json">{"@type": "Organization", "name": "Quirk"}</script>'
                "</head><body></body></html>"
            )
            return 200, "text/html", page.encode()
        if slug == "microdata":
            availability = "OutOfStock" if slug in self.out_of_stock else "InStock"
            page = (
                '<html><body><div itemscope itemtype="https://schema.org/Product">'
                '<h1 itemprop="name">Wool &amp; silk shirt</h1>'
                '<img itemprop="image" data-src="/images/micro.jpg" src="/img/placeholder.gif">'
                '<span itemprop="brand" itemscope itemtype="https://schema.org/Brand"><span itemprop="name">Micro</span></span>'
                '<meta itemprop="color" content="Blue">'
                '<div itemprop="offers" itemscope itemtype="https://schema.org/Offer">'
                f'<span itemprop="price" content="{self.prices[slug]}">{self.prices[slug]} &euro;</span>'
                '<meta itemprop="priceCurrency" content="EUR">'
                f'<link itemprop="availability" href="https://schema.org/{availability}">'
                "</div></div>"
                '<ol itemscope itemtype="https://schema.org/BreadcrumbList">'
                '<li itemprop="itemListElement" itemscope itemtype="https://schema.org/ListItem"><span itemprop="name">Men</span><meta itemprop="position" content="1"></li>'
                '<li itemprop="itemListElement" itemscope itemtype="https://schema.org/ListItem"><span itemprop="name">Shirts</span><meta itemprop="position" content="2"></li>'
                "</ol></body></html>"
            )
            return 200, "text/html; charset=utf-8", page.encode()
        if slug == "og":
            page = (
                '<html><head><meta property="og:type" content="product"><meta property="og:title" content="Denim shorts">'
                '<meta property="og:image" content="/images/og.jpg"><meta property="og:url" content="/products/og.html">'
                f'<meta property="product:price:amount" content="{self.prices[slug]}"><meta property="product:price:currency" content="usd">'
                '<meta property="product:category" content="Shorts"></head><body><h1>Denim shorts</h1></body></html>'
            )
            return 200, "text/html; charset=utf-8", page.encode()
        images = {
            "twin-a": ["/images/shared.jpg"],
            "twin-b": ["/images/shared.jpg"],
            "same-bytes": ["/images/shared-copy.jpg"],
            "resized": ["/images/shared-small.jpg"],
            "final": ["/images/final.jpg"],
            "rate-limited": ["/images/lazy.jpg"],
            "flaky": ["/images/proto.jpg"],
            "slow": ["/images/micro.jpg"],
            "out-of-stock": ["/images/oos.jpg"],
            "huge-image": ["/images/huge.jpg", "/images/huge-stream.jpg"],
            "fake-image": ["/images/fake.jpg"],
            "listed-1": ["/images/listed-1.jpg"],
            "listed-2": ["/images/listed-2.jpg"],
        }.get(slug)
        if images is None:
            return None
        images = self.replaced_images.get(slug, images)
        return 200, "text/html; charset=utf-8", self.json_ld_page(slug, f"Product {slug}", images).encode()

    def listing(self, page: int) -> str:
        links = {1: ["listed-1"], 2: ["listed-2"], 3: []}[page]
        items = "".join(f'<a href="/products/{slug}.html">{slug}</a>' for slug in links)
        following = 1 if page == 3 else page + 1  # the last page links back to the first: a loop
        return (
            f'<html><head><link rel="next" href="/collections/all?page={following}"></head><body>{items}'
            f'<a href="/collections/all?page={following}">next</a><a href="/private/secret.html">secret</a>'
            f'<a href="/cart">cart</a></body></html>'
        )

    def feed(self, page: int, limit: int = 250) -> dict:
        """A page of /products.json: `feed_handles` in order, `limit` a page, less those removed."""
        listed = [handle for handle in self.feed_handles if handle not in self.removed]
        return {"products": [self._feed_product(handle) for handle in listed[(page - 1) * limit : page * limit]]}

    def add_to_feed(self, handle: str) -> None:
        """A new product, listed first (as a shop lists its newest): the others move down the pages."""
        self.feed_handles.insert(0, handle)
        self.images.setdefault(f"{handle}.jpg", jpeg(picture(100 + len(self.feed_handles))))

    def feed_product_page(self, handle: str) -> tuple[int, str, bytes] | None:
        """The own page of a product of the feed (/products/<handle>), while the shop has it."""
        if handle not in self.feed_handles or handle in self.removed:
            return None
        item = self._feed_product(handle)
        data = {"@type": "Product", "name": item["title"], "image": [image["src"] for image in item["images"]],
                "offers": {"@type": "Offer", "price": "15.00", "priceCurrency": "EUR"}}
        return 200, "text/html", f'<html><head><script type="application/ld+json">{json.dumps(data)}</script></head></html>'.encode()

    def _feed_product(self, handle: str) -> dict:
        image = "feed-1.jpg" if handle == "feed-tee" else f"{handle}.jpg"
        return {
            "handle": handle, "title": handle.replace("-", " ").capitalize(), "vendor": "Feedy", "product_type": "T-Shirts", "tags": ["summer"],
            "variants": [{"price": "15.00", "available": handle not in self.out_of_stock, "sku": f"FT-{handle}"}],
            "images": [{"src": f"//127.0.0.1:{self.port}/images/{image}"}],
            "options": [{"name": "Size", "values": ["S", "M"]}, {"name": "Color", "values": ["White"]}],
        }


class _Handler(BaseHTTPRequestHandler):
    shop: QuirkyShop
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # a kept connection's body goes at once, not after the ACK of its headers

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, content_type: str, body: bytes, headers: dict | None = None) -> None:
        etag = '"' + hashlib.sha1(body, usedforsecurity=False).hexdigest() + '"'
        if status == 200 and (etag in self.headers.get("If-None-Match", "") or self.headers.get("If-Modified-Since") == LAST_MODIFIED and not self.headers.get("If-None-Match")):
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 200:
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", LAST_MODIFIED)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, status: int, location: str) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        shop = self.shop
        with shop._lock:
            shop.log.append(Logged(self.path, self.headers.get("Host", ""), self.headers.get("User-Agent", "")))
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        if path == "/robots.txt":
            return self._send(200, "text/plain", shop.robots().encode())
        if path == "/sitemap_index.xml":
            return self._send(200, "application/xml", shop.sitemap_index().encode())
        if path == "/sitemap-products.xml.gz":
            paths = [f"products/{slug}.html" for slug in shop.product_slugs()] + ["products/redirect-start", "private/secret.html"]
            return self._send(200, "application/x-gzip", gzip.compress(shop.sitemap(paths).encode()))
        if path == "/sitemap-private.xml":
            return self._send(200, "application/xml", shop.sitemap(["private/other.html"]).encode())
        if path == "/collections/all":
            return self._send(200, "text/html", shop.listing(int(query.get("page", ["1"])[0])).encode())
        if path == "/products.json":
            page, limit = int(query.get("page", ["1"])[0]), int(query.get("limit", ["250"])[0])
            if page in shop.failing_feed_pages:
                return self._send(500, "text/plain", b"timeout")
            return self._send(200, "application/json", json.dumps(shop.feed(page, limit)).encode())
        if path in ("/products/redirect.html", "/products/redirect-start"):
            return self._redirect(301, "/products/redirect-2")
        if path == "/products/redirect-2":
            return self._redirect(302, f"http://127.0.0.1:{shop.port}/products/final.html")
        if path.startswith("/products/loop"):
            return self._redirect(302, f"/products/loop-{len(path)}")
        if path == "/products/rate-limited.html" and shop.once("429"):
            return self._send(429, "text/plain", b"slow down", {"Retry-After": "1"})
        if path == "/products/flaky.html" and shop.once("500"):
            return self._send(500, "text/plain", b"oops")
        if path == "/products/slow.html":
            time.sleep(shop.slow_s)
        if path == "/products/endless.html":
            return self._endless()
        if path.startswith("/products/") and (answer := shop.feed_product_page(path[len("/products/"):])) is not None:
            return self._send(*answer)
        if path.startswith("/products/") and path.endswith(".html"):
            answer = shop.product_page(path[len("/products/"):-len(".html")])
            if answer is not None:
                return self._send(*answer)
        if path == "/images/huge.jpg":
            return self._huge(with_length=True)
        if path == "/images/huge-stream.jpg":
            return self._huge(with_length=False)
        if path == "/images/fake.jpg":
            return self._send(200, "image/jpeg", b"<html><body>Not an image</body></html>")
        if path[len("/images/"):] in shop.unavailable_images:
            return self._send(503, "text/html", b"<html><title>Service unavailable</title></html>")
        if path.startswith("/images/") and path[len("/images/"):] in shop.images:
            slug_of_image = {"oos.jpg": "out-of-stock"}.get(path[len("/images/"):])
            if slug_of_image not in shop.removed:
                return self._send(200, "image/jpeg", shop.images[path[len("/images/"):]])
        self._send(404, "text/html", b"<html><title>Not found</title></html>")

    def _endless(self) -> None:
        """Headers, then a byte at a time, for ``endless_s``: a response that never ends."""
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        deadline = time.monotonic() + self.shop.endless_s
        try:
            while time.monotonic() < deadline:
                self.wfile.write(b"<p>")
                self.wfile.flush()
                time.sleep(0.01)
        except OSError:
            pass

    def _huge(self, with_length: bool) -> None:
        """A 50 MB "image", made on the fly; with or without a Content-Length saying so."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        if with_length:
            self.send_header("Content-Length", str(FIFTY_MB))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        chunk = b"\xff\xd8\xff" + b"\0" * (1024 * 1024 - 3)
        try:
            for _ in range(FIFTY_MB // len(chunk)):
                self.wfile.write(chunk)
        except OSError:
            pass
