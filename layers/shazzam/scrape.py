"""Scraper v0: discover product pages of a shop and extract products from schema.org JSON-LD.

Everything goes over real HTTP through :class:`Fetcher`, which identifies itself, honours
robots.txt (cached per host), only speaks http/https, applies a timeout and caps the body size.

Discovery reads the sitemaps named in robots.txt (else ``<shop>/sitemap.xml``), follows sitemap
indexes (bounded depth, no revisits) and keeps the URLs on the shop's own host. Extraction reads
every ``<script type="application/ld+json">`` block of a page and turns each schema.org
``Product`` node into a :class:`ScrapedProduct`.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import urllib.error
import urllib.request
import urllib.robotparser
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from html.parser import HTMLParser
from typing import Any, Iterator
from urllib.parse import urljoin, urlsplit, urlunsplit

log = logging.getLogger(__name__)

USER_AGENT = "ShazzamBot/0.1 (+https://github.com/shazzam-for-clothes)"
DEFAULT_TIMEOUT_S = 15.0
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
SITEMAP_MAX_DEPTH = 3
_CHUNK = 64 * 1024

# --------------------------------------------------------------------------------------------
# Categories
# --------------------------------------------------------------------------------------------

CATEGORIES = (
    "dress",
    "hat",
    "longsleeve",
    "outwear",
    "pants",
    "shirt",
    "shoes",
    "shorts",
    "skirt",
    "t-shirt",
)

# Most specific first: compounds ("dress shirt"), "long sleeve" before "t-shirt", "t-shirt"
# before "shirt", "shorts" before "jeans". Each entry is (phrase, category); a phrase matches
# whole words of the text lower-cased with every run of punctuation turned into one space.
_CATEGORY_PHRASES: tuple[tuple[str, str], ...] = (
    # compounds whose first word names another category
    ("dress shirts", "shirt"),
    ("dress shirt", "shirt"),
    ("dress pants", "pants"),
    ("dress trousers", "pants"),
    ("dress shoes", "shoes"),
    # longsleeve wording that may also say "t-shirt"
    ("long sleeves", "longsleeve"),
    ("long sleeve", "longsleeve"),
    ("long sleeved", "longsleeve"),
    ("longsleeves", "longsleeve"),
    ("longsleeve", "longsleeve"),
    # t-shirt
    ("t shirts", "t-shirt"),
    ("t shirt", "t-shirt"),
    ("tshirts", "t-shirt"),
    ("tshirt", "t-shirt"),
    ("tees", "t-shirt"),
    ("tee", "t-shirt"),
    # longsleeve
    ("sweatshirts", "longsleeve"),
    ("sweatshirt", "longsleeve"),
    ("sweaters", "longsleeve"),
    ("sweater", "longsleeve"),
    ("jumpers", "longsleeve"),
    ("jumper", "longsleeve"),
    ("pullovers", "longsleeve"),
    ("pullover", "longsleeve"),
    ("hoodies", "longsleeve"),
    ("hoodie", "longsleeve"),
    ("cardigans", "longsleeve"),
    ("cardigan", "longsleeve"),
    ("knitwear", "longsleeve"),
    # outwear
    ("outerwear", "outwear"),
    ("outwear", "outwear"),
    ("coats", "outwear"),
    ("coat", "outwear"),
    ("jackets", "outwear"),
    ("jacket", "outwear"),
    ("parkas", "outwear"),
    ("parka", "outwear"),
    ("blazers", "outwear"),
    ("blazer", "outwear"),
    ("anoraks", "outwear"),
    ("anorak", "outwear"),
    ("gilets", "outwear"),
    ("gilet", "outwear"),
    # shorts (before pants: "jean shorts" is shorts)
    ("shorts", "shorts"),
    ("bermudas", "shorts"),
    ("bermuda", "shorts"),
    # skirt
    ("skirts", "skirt"),
    ("skirt", "skirt"),
    # dress
    ("dresses", "dress"),
    ("dress", "dress"),
    ("gowns", "dress"),
    ("gown", "dress"),
    # pants
    ("pants", "pants"),
    ("trousers", "pants"),
    ("trouser", "pants"),
    ("jeans", "pants"),
    ("chinos", "pants"),
    ("leggings", "pants"),
    ("joggers", "pants"),
    # shoes
    ("shoes", "shoes"),
    ("shoe", "shoes"),
    ("sneakers", "shoes"),
    ("sneaker", "shoes"),
    ("trainers", "shoes"),
    ("boots", "shoes"),
    ("boot", "shoes"),
    ("sandals", "shoes"),
    ("sandal", "shoes"),
    ("loafers", "shoes"),
    ("heels", "shoes"),
    ("footwear", "shoes"),
    # hat
    ("hats", "hat"),
    ("hat", "hat"),
    ("caps", "hat"),
    ("cap", "hat"),
    ("beanies", "hat"),
    ("beanie", "hat"),
    ("headwear", "hat"),
    # shirt
    ("shirts", "shirt"),
    ("shirt", "shirt"),
    ("blouses", "shirt"),
    ("blouse", "shirt"),
)


def _normalise_words(text: str) -> str:
    """Lower-case, turn every run of non-alphanumerics into one space, pad with spaces."""
    return " " + re.sub(r"[^0-9a-z]+", " ", text.lower()).strip() + " "


def normalise_category(text: str | None) -> str | None:
    """Map a shop's category wording ("T-Shirts", "Coats & Jackets") to one of CATEGORIES.

    Matches whole words, most specific phrase first; unknown wording gives None.
    """
    if not text:
        return None
    words = _normalise_words(str(text))
    if words.strip() == "":
        return None
    for phrase, category in _CATEGORY_PHRASES:
        if f" {phrase} " in words:
            return category
    return None


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------


class FetchError(Exception):
    """A URL could not be fetched: bad scheme, robots.txt refusal, network error, too big."""


@dataclass
class FetchResult:
    url: str
    status: int
    content_type: str
    body: bytes

    @property
    def ok(self) -> bool:
        return self.status == 200

    def text(self) -> str:
        """The body decoded with the charset of the content type (UTF-8 by default)."""
        match = re.search(r"charset=([\w.-]+)", self.content_type or "", re.I)
        charset = match.group(1) if match else "utf-8"
        try:
            return self.body.decode(charset, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")


class Fetcher:
    """Polite HTTP GET over urllib: user agent, timeout, body cap, robots.txt per host."""

    def __init__(
        self,
        user_agent: str = USER_AGENT,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.user_agent = user_agent
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._robots: dict[str, urllib.robotparser.RobotFileParser] = {}

    # -- plumbing ---------------------------------------------------------------------------

    @staticmethod
    def _check_scheme(url: str) -> None:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise FetchError(f"unsupported URL scheme {scheme!r}: {url}")

    def _read_capped(self, response: Any, url: str) -> bytes:
        length = response.headers.get("Content-Length")
        if length is not None:
            try:
                if int(length) > self.max_bytes:
                    raise FetchError(f"body of {url} is {length} bytes, over {self.max_bytes}")
            except ValueError:
                pass
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = response.read(_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > self.max_bytes:
                raise FetchError(f"body of {url} is over {self.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _raw_get(self, url: str) -> FetchResult:
        """GET without the robots.txt check."""
        self._check_scheme(url)
        request = urllib.request.Request(
            url, headers={"User-Agent": self.user_agent, "Accept": "*/*"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = self._read_capped(response, url)
                return FetchResult(
                    url=response.geturl(),
                    status=response.status,
                    content_type=response.headers.get("Content-Type", ""),
                    body=body,
                )
        except urllib.error.HTTPError as error:
            try:
                body = self._read_capped(error, url) if error.fp is not None else b""
            except (OSError, FetchError):
                body = b""
            headers = error.headers
            return FetchResult(
                url=url,
                status=error.code,
                content_type=(headers.get("Content-Type", "") if headers else ""),
                body=body,
            )
        except FetchError:
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
            raise FetchError(f"cannot fetch {url}: {error}") from error

    @staticmethod
    def _origin(url: str) -> str:
        parts = urlsplit(url)
        return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), "", "", ""))

    def _robots_for(self, url: str) -> urllib.robotparser.RobotFileParser:
        origin = self._origin(url)
        parser = self._robots.get(origin)
        if parser is not None:
            return parser
        robots_url = origin + "/robots.txt"
        parser = urllib.robotparser.RobotFileParser(robots_url)
        # A network error propagates as FetchError and is not cached (the next call retries).
        result = self._raw_get(robots_url)
        if result.status == 200:
            parser.parse(result.text().splitlines())
        elif result.status in (401, 403):
            parser.disallow_all = True  # as urllib.robotparser does
        elif 400 <= result.status < 500:
            parser.allow_all = True  # no robots.txt: everything allowed
        else:
            parser.disallow_all = True  # server error: be conservative
        self._robots[origin] = parser
        return parser

    # -- public -----------------------------------------------------------------------------

    def allowed(self, url: str) -> bool:
        """Whether robots.txt of the URL's host lets this user agent fetch it.

        Raises FetchError when robots.txt itself cannot be fetched (network error).
        """
        self._check_scheme(url)
        return self._robots_for(url).can_fetch(self.user_agent, url)

    def sitemaps(self, base_url: str) -> list[str]:
        """The Sitemap URLs that robots.txt of base_url's host names (possibly none)."""
        self._check_scheme(base_url)
        return list(self._robots_for(base_url).site_maps() or [])

    def get(self, url: str) -> FetchResult:
        """GET a URL. HTTP errors come back as their status; other failures raise FetchError."""
        self._check_scheme(url)
        if not self.allowed(url):
            raise FetchError("disallowed by robots.txt")
        return self._raw_get(url)


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if "}" in tag else tag


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _parse_sitemap(body: bytes) -> tuple[str, list[str]]:
    """(root kind: "sitemapindex" | "urlset" | other, the <loc> URLs) of a sitemap document."""
    root = ET.fromstring(body)
    kind = _local_name(root.tag)
    locs: list[str] = []
    for child in root:
        for element in child:
            if _local_name(element.tag) == "loc" and element.text and element.text.strip():
                locs.append(element.text.strip())
    return kind, locs


def discover_product_urls(
    shop_url: str, fetcher: Fetcher, limit: int | None = None
) -> list[str]:
    """Page URLs of a shop from its sitemaps (robots.txt Sitemap lines, else /sitemap.xml)."""
    shop_host = _host(shop_url)
    roots = fetcher.sitemaps(shop_url) or [urljoin(shop_url, "/sitemap.xml")]
    seen_sitemaps: set[str] = set()
    seen_urls: set[str] = set()
    found: list[str] = []

    def full() -> bool:
        return limit is not None and len(found) >= limit

    def visit(sitemap_url: str, depth: int) -> None:
        if full() or sitemap_url in seen_sitemaps or depth > SITEMAP_MAX_DEPTH:
            return
        seen_sitemaps.add(sitemap_url)
        try:
            result = fetcher.get(sitemap_url)
        except FetchError as error:
            log.warning("sitemap %s: %s", sitemap_url, error)
            return
        if result.status != 200:
            log.warning("sitemap %s: HTTP %s", sitemap_url, result.status)
            return
        try:
            kind, locs = _parse_sitemap(result.body)
        except ET.ParseError as error:
            log.warning("sitemap %s: invalid XML (%s)", sitemap_url, error)
            return
        if kind == "sitemapindex":
            for loc in locs:
                visit(urljoin(sitemap_url, loc), depth + 1)
                if full():
                    return
            return
        for loc in locs:
            url = urljoin(sitemap_url, loc)
            if _host(url) != shop_host or url in seen_urls:
                continue
            seen_urls.add(url)
            found.append(url)
            if full():
                return

    for root in roots:
        visit(root, 1)
        if full():
            break
    return found


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScrapedProduct:
    url: str
    title: str
    price: Decimal | None
    currency: str | None
    category: str | None
    brand: str | None
    sku: str | None
    image_urls: tuple[str, ...]


class _JsonLdCollector(HTMLParser):
    """Collects the text of every <script type="application/ld+json"> block."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self._current: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "script":
            return
        kind = (dict(attrs).get("type") or "").split(";")[0].strip().lower()
        if kind == "application/ld+json":
            self._current = []

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._current.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._current is not None:
            self.blocks.append("".join(self._current))
            self._current = None


def _json_ld_blocks(html: str) -> list[Any]:
    collector = _JsonLdCollector()
    collector.feed(html)
    collector.close()
    parsed: list[Any] = []
    for block in collector.blocks:
        try:
            parsed.append(json.loads(block))
        except (ValueError, RecursionError):
            log.debug("skipping an invalid JSON-LD block")
    return parsed


def _types(node: dict[str, Any]) -> list[str]:
    value = node.get("@type")
    values = value if isinstance(value, list) else [value]
    return [_local_name(str(v)).rsplit("/", 1)[-1] for v in values if isinstance(v, str)]


def _find_products(data: Any) -> Iterator[dict[str, Any]]:
    """Every dict whose @type includes Product, anywhere in the JSON-LD (iterative walk)."""
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            if "Product" in _types(item):
                yield item
            # Also walk children: @graph, hasVariant, isRelatedTo, itemListElement...
            children = [v for v in item.values() if isinstance(v, (dict, list))]
            stack.extend(reversed(children))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("name") or value.get("@value")
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = str(value).strip()
        return text or None
    return None


def _price(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        text = repr(value) if isinstance(value, float) else str(value)
    elif isinstance(value, str):
        text = value.strip().replace("\u00a0", "").replace(" ", "")
        # "1,299.00" -> "1299.00"; "1.299,00" -> "1299.00"; "12,99" -> "12.99"
        if "," in text and "." in text:
            if text.rfind(",") > text.rfind("."):
                text = text.replace(".", "").replace(",", ".")
            else:
                text = text.replace(",", "")
        elif "," in text:
            text = text.replace(",", ".")
    else:
        return None
    try:
        price = Decimal(text)
    except InvalidOperation:
        return None
    if not price.is_finite() or price < 0:
        return None
    return price


def _offer_fields(offers: Any) -> tuple[Decimal | None, str | None, str | None]:
    """(price, currency, url) of the first offer that has a price (else the first offer)."""
    first: tuple[Decimal | None, str | None, str | None] | None = None
    for offer in _as_list(offers):
        if not isinstance(offer, dict):
            continue
        raw = offer.get("price")
        if raw is None:
            raw = offer.get("lowPrice")
        if raw is None and isinstance(offer.get("priceSpecification"), dict):
            raw = offer["priceSpecification"].get("price")
        price = _price(raw)
        currency = _text(offer.get("priceCurrency"))
        if currency is None and isinstance(offer.get("priceSpecification"), dict):
            currency = _text(offer["priceSpecification"].get("priceCurrency"))
        url = _text(offer.get("url"))
        fields = (price, currency, url)
        if price is not None:
            return fields
        if first is None:
            first = fields
        nested = offer.get("offers")  # AggregateOffer listing its offers
        if nested is not None:
            price, currency2, url2 = _offer_fields(nested)
            if price is not None:
                return price, currency or currency2, url or url2
    return first or (None, None, None)


def _image_urls(value: Any, page_url: str) -> tuple[str, ...]:
    urls: list[str] = []
    for item in _as_list(value):
        if isinstance(item, dict):
            item = item.get("url") or item.get("contentUrl")
            if isinstance(item, list):
                item = item[0] if item else None
        if isinstance(item, str) and item.strip():
            url = urljoin(page_url, item.strip())
            if urlsplit(url).scheme in ("http", "https") and url not in urls:
                urls.append(url)
    return tuple(urls)


def _category(value: Any) -> str | None:
    """Category from a string ("Women > Dresses"), a list, or a BreadcrumbList-like dict."""
    candidates: list[str] = []
    for item in _as_list(value):
        if isinstance(item, dict):
            elements = item.get("itemListElement")
            if elements is not None:
                for element in _as_list(elements):
                    if isinstance(element, dict):
                        name = _text(element.get("name")) or _text(element.get("item"))
                        if name:
                            candidates.append(name)
                continue
            name = _text(item)
            if name:
                candidates.append(name)
        elif isinstance(item, str):
            candidates.extend(part for part in re.split(r"[>/|]", item) if part.strip())
    # The most specific level is last; the whole text is a last resort.
    for text in reversed(candidates):
        category = normalise_category(text)
        if category:
            return category
    return None


def _product(node: dict[str, Any], page_url: str) -> ScrapedProduct | None:
    title = _text(node.get("name"))
    images = _image_urls(node.get("image"), page_url)
    if not title or not images:
        return None
    price, currency, offer_url = _offer_fields(node.get("offers"))
    url = _text(node.get("url")) or offer_url or page_url
    url = urljoin(page_url, url)
    return ScrapedProduct(
        url=url,
        title=title,
        price=price,
        currency=currency.upper() if currency else None,
        category=_category(node.get("category")),
        brand=_text(node.get("brand")),
        sku=_text(node.get("sku")),
        image_urls=images,
    )


def extract_products(html: str, page_url: str) -> list[ScrapedProduct]:
    """Every schema.org Product with a name and an image in the page's JSON-LD blocks."""
    products: list[ScrapedProduct] = []
    for data in _json_ld_blocks(html):
        for node in _find_products(data):
            product = _product(node, page_url)
            if product is not None and product not in products:
                products.append(product)
    return products


# --------------------------------------------------------------------------------------------
# The whole shop
# --------------------------------------------------------------------------------------------


def _is_html(content_type: str) -> bool:
    kind = (content_type or "").split(";")[0].strip().lower()
    return kind in ("text/html", "application/xhtml+xml")


def scrape_shop(
    shop_url: str, fetcher: Fetcher, limit: int | None = None
) -> Iterator[ScrapedProduct]:
    """Discover a shop's pages, fetch each and yield its products (unique by product URL).

    ``limit`` bounds the number of pages discovered and fetched, not the products yielded.
    """
    seen: set[str] = set()
    for page_url in discover_product_urls(shop_url, fetcher, limit=limit):
        try:
            result = fetcher.get(page_url)
        except FetchError as error:
            log.warning("skipping %s: %s", page_url, error)
            continue
        if result.status != 200:
            log.warning("skipping %s: HTTP %s", page_url, result.status)
            continue
        if not _is_html(result.content_type):
            log.warning("skipping %s: not HTML (%s)", page_url, result.content_type)
            continue
        for product in extract_products(result.text(), result.url):
            if product.url in seen:
                continue
            seen.add(product.url)
            yield product


__all__ = [
    "CATEGORIES",
    "FetchError",
    "FetchResult",
    "Fetcher",
    "ScrapedProduct",
    "discover_product_urls",
    "extract_products",
    "normalise_category",
    "scrape_shop",
]
