"""The bundled sample shop, served over real HTTP on 127.0.0.1 for the demo and the tests.

It serves a catalogue folder (by default ``samples/shop`` of the repository: ``catalog.json``
plus ``images/``) the way a small online shop would, so the scraper runs unchanged against it:

    /                         home page linking every product page
    /robots.txt               allows all but /cart, names /sitemap.xml
    /sitemap.xml              a sitemap index pointing to /sitemap-products.xml
    /sitemap-products.xml     the product pages
    /products/<sku>.html      HTML with title, price, image and a schema.org Product (JSON-LD)
    /images/<file>            the product's JPEG

Anything else answers 404, as do removed products (``remove(sku)``) and their images. Every
answer carries an ETag (a hash of the body) and honours ``If-None-Match`` with a 304, as real
shops and CDNs do, so a second scrape of an unchanged shop costs only 304s.

    with SampleShop(limit=5) as shop:
        products = list(scrape_shop(shop.base_url, Fetcher(local=True, delay_s=0)))
"""

from __future__ import annotations

import hashlib
import html
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape as xml_escape


def repository_samples_dir() -> Path:
    """The repository's ``samples/`` folder (this file is layers/shazzam/local/sample_shop.py)."""
    return Path(__file__).resolve().parents[3] / "samples"


class SampleShop:
    """A catalogue folder served as a tiny shop on 127.0.0.1 in a daemon thread. It keeps its
    connections alive (HTTP/1.1), as shops do; `keep_alive=False` answers in HTTP/1.0, a
    connection per request."""

    def __init__(
        self,
        catalog_dir: Path | str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        limit: int | None = None,
        keep_alive: bool = True,
    ) -> None:
        self.keep_alive = keep_alive
        self.catalog_dir = Path(catalog_dir) if catalog_dir else repository_samples_dir() / "shop"
        records = json.loads((self.catalog_dir / "catalog.json").read_text(encoding="utf-8"))
        if limit is not None:
            records = records[: max(limit, 0)]
        self.products: dict[str, dict[str, Any]] = {r["sku"]: r for r in records}
        self._images: dict[str, str] = {
            Path(r["image"]).name: sku for sku, r in self.products.items()
        }
        self._removed: set[str] = set()
        self._lock = threading.Lock()
        self._host = host
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "SampleShop":
        if self._server is not None:
            return self
        shop = self

        class Handler(_ShopHandler):
            protocol_version = "HTTP/1.1" if shop.keep_alive else "HTTP/1.0"

        Handler.shop = shop
        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # quick stop()
            name="sample-shop",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> "SampleShop":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the sample shop is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    # -- catalogue ----------------------------------------------------------------------------

    def remove(self, sku: str) -> None:
        """Take a product off the shop: its page and image answer 404 from now on."""
        if sku not in self.products:
            raise KeyError(sku)
        with self._lock:
            self._removed.add(sku)

    def live_skus(self) -> list[str]:
        with self._lock:
            return [sku for sku in self.products if sku not in self._removed]

    def is_live(self, sku: str) -> bool:
        with self._lock:
            return sku in self.products and sku not in self._removed

    def product_url(self, sku: str) -> str:
        return f"{self.base_url}products/{sku}.html"

    def image_url(self, sku: str) -> str:
        return f"{self.base_url}images/{Path(self.products[sku]['image']).name}"

    # -- pages --------------------------------------------------------------------------------

    def _home(self) -> str:
        items = "\n".join(
            f'    <li><a href="/products/{html.escape(sku)}.html">'
            f"{html.escape(self.products[sku]['title'])}</a></li>"
            for sku in self.live_skus()
        )
        return _page(
            "Shazzam Sample Shop",
            f"<h1>Shazzam Sample Shop</h1>\n  <ul>\n{items}\n  </ul>",
        )

    def _robots(self) -> str:
        return f"User-agent: *\nDisallow: /cart\n\nSitemap: {self.base_url}sitemap.xml\n"

    def _sitemap_index(self) -> str:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
            f"  <sitemap><loc>{xml_escape(self.base_url)}sitemap-products.xml</loc></sitemap>\n"
            "</sitemapindex>\n"
        )

    def _sitemap_products(self) -> str:
        urls = "".join(
            f"  <url><loc>{xml_escape(self.product_url(sku))}</loc></url>\n"
            for sku in self.live_skus()
        )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
            f"{urls}</urlset>\n"
        )

    def _product_page(self, sku: str) -> str:
        r = self.products[sku]
        url = self.product_url(sku)
        image = self.image_url(sku)
        data = {
            "@context": "https://schema.org",
            "@type": "Product",
            "name": r["title"],
            "sku": sku,
            "brand": {"@type": "Brand", "name": r["brand"]},
            "category": r["category"],
            "image": image,
            "url": url,
            "offers": {
                "@type": "Offer",
                "price": r["price"],
                "priceCurrency": r["currency"],
                "availability": "https://schema.org/InStock",
                "url": url,
            },
        }
        # "</" inside a script element would end it early.
        json_ld = json.dumps(data, indent=2, ensure_ascii=False).replace("</", "<\\/")
        e = html.escape
        body = (
            f'<nav><a href="/">Home</a> &rsaquo; {e(r["category"])}</nav>\n'
            f'  <h1>{e(r["title"])}</h1>\n'
            f'  <img src="/images/{e(Path(r["image"]).name)}" alt="{e(r["title"])}">\n'
            f'  <p class="brand">{e(r["brand"])}</p>\n'
            f'  <p class="price">{e(r["price"])} {e(r["currency"])}</p>\n'
            f'  <form action="/cart" method="post"><button>Add to cart</button></form>'
        )
        head = f'<script type="application/ld+json">\n{json_ld}\n</script>'
        return _page(r["title"], body, head=head, canonical=url)

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a request path; the HTTP handler's whole logic."""
        path = unquote(urlsplit(path).path)
        if path in ("/", "/index.html"):
            return _ok_text(self._home(), "text/html; charset=utf-8")
        if path == "/robots.txt":
            return _ok_text(self._robots(), "text/plain; charset=utf-8")
        if path == "/sitemap.xml":
            return _ok_text(self._sitemap_index(), "application/xml; charset=utf-8")
        if path == "/sitemap-products.xml":
            return _ok_text(self._sitemap_products(), "application/xml; charset=utf-8")
        if path.startswith("/products/") and path.endswith(".html"):
            sku = path[len("/products/") : -len(".html")]
            if self.is_live(sku):
                return _ok_text(self._product_page(sku), "text/html; charset=utf-8")
        elif path.startswith("/images/"):
            name = path[len("/images/") :]
            sku = self._images.get(name)
            if sku is not None and self.is_live(sku):
                image = (self.catalog_dir / "images" / name).read_bytes()
                return HTTPStatus.OK, "image/jpeg", image
        return (
            HTTPStatus.NOT_FOUND,
            "text/html; charset=utf-8",
            _page("Not found", "<h1>Not found</h1>").encode("utf-8"),
        )


def _ok_text(text: str, content_type: str) -> tuple[int, str, bytes]:
    return HTTPStatus.OK, content_type, text.encode("utf-8")


def _page(title: str, body: str, *, head: str = "", canonical: str | None = None) -> str:
    link = f'\n  <link rel="canonical" href="{html.escape(canonical)}">' if canonical else ""
    extra = f"\n  {head}" if head else ""
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n  <meta charset="utf-8">\n'
        f"  <title>{html.escape(title)}</title>{link}{extra}\n</head>\n"
        f"<body>\n  {body}\n</body>\n</html>\n"
    )


class _ShopHandler(BaseHTTPRequestHandler):
    shop: SampleShop
    server_version = "ShazzamSampleShop/0.1"
    disable_nagle_algorithm = True  # a kept connection's body goes at once, not after the ACK of its headers

    def _send(self, with_body: bool) -> None:
        status, content_type, body = self.shop.respond(self.path)
        etag = '"' + hashlib.sha1(body, usedforsecurity=False).hexdigest() + '"'
        if status == HTTPStatus.OK and etag in self.headers.get("If-None-Match", ""):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")  # no body, and the connection serves on
            self.end_headers()
            return
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == HTTPStatus.OK:
            self.send_header("ETag", etag)
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._send(with_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(with_body=False)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


__all__ = ["SampleShop", "repository_samples_dir"]
