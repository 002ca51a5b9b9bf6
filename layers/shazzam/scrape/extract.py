"""Products out of a product page (schema.org JSON-LD, microdata, OpenGraph) or a Shopify feed.

One pass of :class:`PageParser` over the HTML collects everything: the JSON-LD blocks, the
microdata items, the meta tags, the canonical link, the product gallery's images (``src``,
``srcset``, lazy-loading ``data-*`` attributes) and the page's links (for listing pages).
:func:`extract_products` prefers JSON-LD, fills its gaps from microdata and OpenGraph, and falls
back to them when a page has no JSON-LD product. Every URL is resolved against the page's first
``<base href>``, else against the page URL.
"""

from __future__ import annotations

import hashlib
import html as html_lib
import json
import logging
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal, InvalidOperation
from html.parser import HTMLParser
from typing import Any, Iterator
from urllib.parse import parse_qsl, urljoin, urlsplit, urlunsplit

from shazzam.money import THREE_DECIMAL_CURRENCIES, WHOLE_UNIT_CURRENCIES
from shazzam.scrape.fetch import percent_encoded
from shazzam.scrape.categories import CATEGORIES, NOT_A_GARMENT, head_category, normalise_category

log = logging.getLogger(__name__)

# schema.org availability values that mean "cannot be bought": the product is taken as dead.
UNAVAILABLE = frozenset({"OutOfStock", "SoldOut", "Discontinued"})


# The sitemaps protocol's limit: a longer URL is not a shop's product page or picture.
MAX_URL_LENGTH = 2048
_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(text: str) -> str:
    """Text a database can store: a lone surrogate (an emoji cut in half by a shop's CMS, which JSON
    escapes let through) becomes U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)  # a str holds a pair as one character: any left is alone


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
    availability: str | None = None  # a schema.org ItemAvailability name: InStock, OutOfStock...
    colour: str | None = None
    sizes: tuple[str, ...] = ()
    breadcrumb: str | None = None  # "Women > Dresses"

    def __post_init__(self) -> None:
        if self.price is not None and not self.price:
            # A garment is never free: a price of 0, whichever vocabulary gave it, is a theme's
            # placeholder for "ask", not a price a search's max_price should let through.
            object.__setattr__(self, "price", None)
        for name in ("url", "title", "currency", "category", "brand", "sku", "availability", "colour", "breadcrumb"):
            if isinstance(value := getattr(self, name), str):
                object.__setattr__(self, name, storable_text(value))
        object.__setattr__(self, "sizes", tuple(storable_text(size) for size in self.sizes))
        pictures = tuple(storable_text(url) for url in self.image_urls)
        object.__setattr__(self, "image_urls", tuple(url for url in pictures if len(url) <= MAX_URL_LENGTH))

    @property
    def in_stock(self) -> bool:
        return self.availability not in UNAVAILABLE

    def fingerprint(self) -> str:
        """A hash of every field: equal fingerprints mean nothing the catalogue keeps changed."""
        return hashlib.sha256(json.dumps(asdict(self), default=str, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# One pass over the HTML
# --------------------------------------------------------------------------------------------

_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
# Containers whose images are the product's own pictures (not logos, not related products).
_GALLERY = re.compile(r"gallery|product[-_]?(?:image|photo|media|picture)|pdp[-_]?(?:image|media)", re.I)
# ... and containers of other products' or the shop's pictures, even inside or named like one
# (Magento's related block is "product-image-container" too; an Instagram "gallery" in the footer).
_ELSEWHERE = re.compile(r"related|up-?sell|cross-?sell|recommend|also-?like|product-item|instagram|footer", re.I)
# Where lazy loaders keep the picture until it is shown, before the placeholder in src/srcset:
# lazysizes, WP Rocket (data-lazy-*), Slick (data-lazy), Flickity, jQuery lazyload (data-original),
# elevateZoom and WooCommerce's zoom.
_LAZY_SRC = ("data-src", "data-lazy-src", "data-lazy", "data-flickity-lazyload", "data-flickity-lazyload-src", "data-original",
             "data-zoom-image", "data-large_image", "src")
_LAZY_SRCSET = ("data-srcset", "data-lazy-srcset", "data-flickity-lazyload-srcset", "srcset")
# Attributes that other scripts also set to a flag (data-lazy="true", "lazy", "1", ".lazy", "1.25"):
# their value is a picture only when it looks like an address (a path, a scheme, or a file name:
# a name ending in any character but a space, as in "shirt (1).jpg", then an extension that starts
# with a letter, so neither a class nor a number), else the next attribute (finally src) is.
_LAZY_OR_FLAG = frozenset(("data-lazy", "data-lazy-srcset", "data-flickity-lazyload", "data-flickity-lazyload-src",
                           "data-flickity-lazyload-srcset"))
_ADDRESS_LIKE = re.compile(r"/|\S\.[a-z][a-z0-9]{1,4}\b|^\s*https?:", re.I)


def _picture_attribute(attrs: dict[str, str | None], name: str) -> str:
    """The attribute's value where it may name a picture, else ""."""
    value = attrs.get(name) or ""
    return value if name not in _LAZY_OR_FLAG or _ADDRESS_LIKE.search(value) else ""


@dataclass
class MicrodataItem:
    types: list[str]
    props: dict[str, list[Any]] = field(default_factory=dict)

    def first(self, name: str) -> Any:
        values = self.props.get(name)
        return values[0] if values else None


@dataclass
class _Open:
    tag: str
    item: MicrodataItem | None = None  # an itemscope opened by this element
    item_prop: str | None = None  # ... which is the value of this property of the parent item
    capture: tuple[MicrodataItem, str, int] | None = None  # text value being collected: from _captured[int:]
    gallery: bool = False
    elsewhere: bool = False


class PageParser(HTMLParser):
    """Collects JSON-LD, microdata, meta tags, canonical, gallery images and links of a page."""

    def __init__(self, page_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.page_url = page_url
        # What the page's relative URLs resolve against: its first <base href>, else its own URL.
        self.base_url = page_url
        self._base_read = False
        self.json_ld: list[str] = []
        self.items: list[MicrodataItem] = []  # top-level microdata items
        self.meta: dict[str, list[str]] = {}
        self.canonical: str | None = None
        self.title: str | None = None
        self.h1: str | None = None
        self.language: str | None = None  # <html lang>
        self.images: list[str] = []  # gallery images, best candidate of each <img>/<source>
        self.links: list[str] = []
        self.next_links: list[str] = []  # rel="next"
        # What is open, kept so that each event costs the same however deep the page nests (a page
        # of 60,000 unclosed <div>s made every event walk the stack: parsing grew with its square).
        self._stack: list[_Open] = []
        self._open_tags: Counter[str] = Counter()
        self._open_items: list[MicrodataItem] = []
        self._open_galleries = 0
        self._open_elsewhere = 0
        self._open_captures = 0
        self._captured: list[str] = []  # text met while a capture is open; each capture keeps its start
        self._script: list[str] | None = None
        self._text_target: str | None = None
        self._text: list[str] = []

    # -- helpers ------------------------------------------------------------------------------

    def _url(self, value: str | None) -> str | None:
        return absolute_url(self.base_url, value)

    def _item(self) -> MicrodataItem | None:
        return self._open_items[-1] if self._open_items else None

    def _in_gallery(self) -> bool:
        return self._open_galleries > 0

    def _push(self, entry: _Open) -> None:
        self._stack.append(entry)
        self._open_tags[entry.tag] += 1
        self._open_items += [entry.item] if entry.item is not None else []
        self._open_galleries += entry.gallery
        self._open_elsewhere += entry.elsewhere
        self._open_captures += entry.capture is not None

    def _pop(self) -> _Open:
        entry = self._stack.pop()
        self._open_tags[entry.tag] -= 1
        if entry.item is not None:
            self._open_items.pop()
        self._open_galleries -= entry.gallery
        self._open_elsewhere -= entry.elsewhere
        self._open_captures -= entry.capture is not None
        return entry

    def _end(self) -> None:
        """Close the innermost open element."""
        self._close(self._pop())
        if not self._open_captures:
            self._captured.clear()

    def _add_image(self, attrs: dict[str, str | None]) -> None:
        for name in _LAZY_SRCSET:
            best = best_srcset_candidate(_picture_attribute(attrs, name))
            if best and (url := self._url(best)):
                self.images.append(url)
                return
        for name in _LAZY_SRC:
            if url := self._url(_picture_attribute(attrs, name)):
                self.images.append(url)
                return

    # -- HTMLParser ---------------------------------------------------------------------------

    def handle_starttag(self, tag: str, attr_list: list[tuple[str, str | None]]) -> None:
        attrs = {name: (value if value is not None else "") for name, value in attr_list}
        if tag == "script":
            kind = attrs.get("type", "").split(";")[0].strip().lower()
            self._script = [] if kind == "application/ld+json" else None
        elif tag == "meta":
            key = (attrs.get("property") or attrs.get("name") or "").strip().lower()
            if key and attrs.get("content") is not None:
                self.meta.setdefault(key, []).append(attrs["content"].strip())
        elif tag == "base" and "href" in attrs and not self._base_read:
            self._base_read = True  # the first <base href> is the page's, even one that is not http(s) (the HTML standard)
            self.base_url = absolute_url(self.page_url, attrs["href"]) or self.page_url
        elif tag == "link":
            rel = attrs.get("rel", "").lower().split()
            if "canonical" in rel and self.canonical is None:
                self.canonical = self._url(attrs.get("href"))
            if "next" in rel and (url := self._url(attrs.get("href"))):
                self.next_links.append(url)
        elif tag == "a":
            if url := self._url(attrs.get("href")):
                self.links.append(url)
                if "next" in attrs.get("rel", "").lower().split():
                    self.next_links.append(url)
        elif tag in ("title", "h1"):
            self._text_target, self._text = tag, []
        elif tag == "html" and self.language is None:
            self.language = attrs.get("lang", "").strip() or None

        parent = self._item()
        prop = attrs.get("itemprop", "").strip() or None
        opened = _Open(tag)
        names = f"{attrs.get('class', '')} {attrs.get('id', '')}"
        opened.elsewhere = tag in ("footer", "aside", "nav") or bool(_ELSEWHERE.search(names))
        opened.gallery = bool(_GALLERY.search(names)) and not opened.elsewhere
        if "itemscope" in attrs:
            item = MicrodataItem(types=[t.rsplit("/", 1)[-1] for t in attrs.get("itemtype", "").split()])
            opened.item, opened.item_prop = item, prop
            opened.gallery = opened.gallery or "Product" in item.types
            if parent is None:
                self.items.append(item)
        elif prop and parent is not None:
            value = self._attribute_value(tag, attrs)
            if value is not None:
                for name in prop.split():
                    parent.props.setdefault(name, []).append(value)
            elif tag not in _VOID:
                opened.capture = (parent, prop, len(self._captured))
        if tag in ("img", "source") and (self._in_gallery() or opened.gallery or prop == "image") and not (self._open_elsewhere or opened.elsewhere):
            self._add_image(attrs)
        if tag not in _VOID:
            self._push(opened)
        elif opened.item is not None:
            self._close(opened)

    def _attribute_value(self, tag: str, attrs: dict[str, str]) -> str | None:
        if "content" in attrs:
            return attrs["content"].strip()
        if tag in ("a", "link", "area"):
            return self._url(attrs.get("href"))
        if tag in ("img", "source", "video", "audio", "embed", "iframe"):
            images: list[str] = []
            for name in _LAZY_SRCSET:
                if best := best_srcset_candidate(_picture_attribute(attrs, name)):
                    images.append(best)
            images += [value for name in _LAZY_SRC if (value := _picture_attribute(attrs, name))]
            return next((url for url in map(self._url, images) if url), None)
        if tag in ("data", "meter") and "value" in attrs:
            return attrs["value"].strip()
        if tag == "time" and "datetime" in attrs:
            return attrs["datetime"].strip()
        return None

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self.json_ld.append("".join(self._script))
            self._script = None
        if tag == self._text_target:
            text = " ".join("".join(self._text).split())
            if tag == "title" and self.title is None:
                self.title = text or None
            elif tag == "h1" and self.h1 is None:
                self.h1 = text or None
            self._text_target = None
        if not self._open_tags[tag]:
            return  # a stray end tag
        while self._stack:
            closing = self._stack[-1].tag
            self._end()
            if closing == tag:
                break

    def _close(self, entry: _Open) -> None:
        if entry.capture is not None:
            item, prop, start = entry.capture
            text = " ".join("".join(self._captured[start:]).split())
            for name in prop.split():
                item.props.setdefault(name, []).append(text)
        if entry.item is not None and entry.item_prop:
            parent = self._item()
            if parent is not None:
                for name in entry.item_prop.split():
                    parent.props.setdefault(name, []).append(entry.item)

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._script.append(data)
            return
        if self._text_target is not None:
            self._text.append(data)
        if self._open_captures:
            self._captured.append(data)

    def close(self) -> None:
        super().close()
        while self._stack:
            self._end()


def parse_page(html: str, page_url: str) -> PageParser:
    parser = PageParser(page_url)
    parser.feed(_disarmed(html))
    parser.close()
    return parser


def _disarmed(html: str) -> str:
    """The page with markup openers that nothing closes written as text, which is what Python's
    HTMLParser makes of them too, but only after scanning the rest of the page from each: a size
    table pasted as "S <M S <M ..." (80 KB) took a minute to parse, 120 KB three and a half. Every
    "<" after the last ">" is such an opener; so is each "<!--" after the last "-->" (and "<![" after
    "]]>"), a cost once, so those are escaped only when there are several."""
    last = html.rfind(">") + 1
    if "<" in html[last:]:
        html = html[:last] + html[last:].replace("<", "&lt;")
    for opener, closer in (("<!--", "-->"), ("<![", "]]>")):
        closed = html.rfind(closer)
        start = 0 if closed < 0 else closed + len(closer)
        if html.count(opener, start) > 1:
            html = html[:start] + html[start:].replace(opener, "&lt;" + opener[1:])
    return html


# --------------------------------------------------------------------------------------------
# Small parsers
# --------------------------------------------------------------------------------------------


def absolute_url(base: str, value: Any) -> str | None:
    """An http(s) URL resolved against ``base`` (relative, protocol-relative), fragment dropped."""
    if not isinstance(value, str):
        return None
    # Attribute values come decoded; "&amp;" is what a template may have left in JSON-LD. A full
    # unescape would also read "&times" in "?w=800&timestamp=1" as "×".
    value = value.strip().replace("&amp;", "&")
    if not value or value.startswith(("data:", "javascript:", "mailto:", "#")):
        return None
    try:
        parts = urlsplit(urljoin(base, value))
    except ValueError:  # "http://[bad/": no address at all
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return percent_encoded(urlunsplit(parts))


def product_url(page_url: str, *declared: Any, base: str | None = None) -> str:
    """The product's URL: the first URL the page declares for it (its structured data's url, the
    canonical link; resolved against ``base``, the page's <base href>, when it has one) if that is
    another page of the same site, else the page's own. A URL on another host would let one shop's
    page write over another shop's product, and a canonical link to the home page (a common
    misconfiguration) would fold every product into one."""
    page = urlsplit(page_url)
    for value in declared:
        url = absolute_url(base or page_url, _text(value, ids=True) if not isinstance(value, str) else value)
        if url is None:
            continue
        parts = urlsplit(url)
        if _site(parts.hostname) == _site(page.hostname) and parts.path.strip("/"):
            return url
    return page_url


def _site(hostname: str | None) -> str:
    hostname = (hostname or "").lower()
    return hostname[4:] if hostname.startswith("www.") else hostname


def best_srcset_candidate(srcset: str) -> str | None:
    """The widest (or densest) URL of a ``srcset``; URLs may themselves contain commas."""
    best, best_size = None, -1.0
    position, text = 0, srcset.strip()
    while position < len(text):
        while position < len(text) and (text[position].isspace() or text[position] == ","):
            position += 1
        start = position
        while position < len(text) and not text[position].isspace():
            position += 1
        url = text[start:position]
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            end = text.find(",", position)
            end = len(text) if end < 0 else end
            descriptor, position = text[position:end].strip(), end + 1
        if not url:
            continue
        match = re.fullmatch(r"([\d.]+)([wx])", descriptor)
        size = float(match.group(1)) if match else 1.0
        if size > best_size:
            best, best_size = url, size
    return best


# Spaces and apostrophes that group thousands: "1 299,00", "1'299.00" (also NBSP and thin spaces).
_GROUP_SEPARATORS = "[ \u00a0\u202f\u2009'\u2019]"
# A number in a price: digits grouped by those in threes, or digits with dots and commas.
_PRICE_NUMBER = re.compile(rf"-?\d{{1,3}}(?:{_GROUP_SEPARATORS}\d{{3}})+(?:[.,]\d+)?(?!\d)|-?\d[\d.,]*")
_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
# What follows a price in whole units: a dash after its separator ("12,-", "2.500,–", "49.—", "99,−":
# hyphen, en or em dash, minus sign), or ":-" (Swedish "1.299:-", which still keeps öre: "24,90:-").
_WHOLE_UNITS_MARK = re.compile("(?:(?<=[.,])|:)[-\u2013\u2014\u2212]")
# "29€90" (French): the euro sign between euros and cents is the decimal point.
_EURO_AS_POINT = re.compile(r"€(\d\d)(?![\d€])")
# Full-width forms ("１２，８００円", as Japanese and Chinese input methods type them) as NFKC reads
# them, and the Arabic decimal and thousands separators ("١٬٢٣٤٫٥٠") as "." and ",". Not NFKC of the
# whole text: it reads superscript cents ("19⁹⁹") as digits of the whole.
_PRICE_FORMS = {**{c: unicodedata.normalize("NFKC", chr(c)) for c in range(0xFF01, 0xFFEF)}, 0x066B: ".", 0x066C: ","}


def _price_text(value: str) -> str:
    """A price's text with its characters as the rules below read them, every script's digits as ASCII ones."""
    text = html_lib.unescape(value).translate(_PRICE_FORMS)
    return re.sub(r"\d", lambda digit: str(unicodedata.decimal(digit.group())), text)


# Symbols that name one currency only ("$" and "kr" name several, so they are not read).
CURRENCY_SYMBOLS = {"€": "EUR", "£": "GBP", "₹": "INR", "₩": "KRW", "₽": "RUB", "₺": "TRY", "₴": "UAH", "₪": "ILS", "zł": "PLN", "₫": "VND"}
# ... and what shops write in an offer's currency field for one currency, matched whole (in a price's
# text, "S$" is also the end of "US$", "Ft" of words). Not "C$" (Canadian or Nicaraguan).
CURRENCY_LABELS = {"US$": "USD", "CA$": "CAD", "CAN$": "CAD", "A$": "AUD", "AU$": "AUD", "NZ$": "NZD", "HK$": "HKD", "S$": "SGD",
                   "SG$": "SGD", "NT$": "TWD", "MX$": "MXN", "R$": "BRL", "KČ": "CZK", "FT": "HUF"}


# Signs of money that name no one currency but none with three decimals ("$", "kr", "Rp", "Ft").
_MONEY_SIGN = re.compile(r"[$¥₫₱฿₦]|(?<![^\W\d_])(?:kr|Kč|Rp|Ft|Rs|lei)(?![^\W\d_])")


def _dot_groups_thousands(text: str, currency: str | None) -> bool:
    """Whether "1.299" in a price is a thousand. Written for people, with a currency named beside
    it, it is, but for a currency with three decimals ("1.299 €", "Rp 299.000", "12.990 Ft"). A bare
    number is a machine-readable value (schema.org's price has a decimal point): a thousand only
    in a currency priced in whole units (IDR "299.000"), never in one with cents (USD "49.950")."""
    code = currency_code(None, text)
    if code is not None or _MONEY_SIGN.search(text):
        return code not in THREE_DECIMAL_CURRENCIES and currency not in THREE_DECIMAL_CURRENCIES
    return currency in WHOLE_UNIT_CURRENCIES


def parse_price(value: Any, currency: str | None = None) -> Decimal | None:
    """"19.99", 20, "12,50", "1,299.00", "1.299,00", "€ 1 299,00", "$1,299", "1,299,000",
    "₹1,29,999", "١٬٢٣٤٫٥٠", "１２，８００円", "29€90" -> Decimal. `currency`, the offer's ISO code
    where it gives one, tells a bare "299.000" (IDR: a thousand times 299) from "49.950" (USD: a
    decimal point)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        text = repr(value) if isinstance(value, float) else str(value)
    elif isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        text = value.strip()  # "1.2E3", as a JSON number written as text
    elif isinstance(value, str):
        # The first number only: "12,99 € – 24,99 €", "Now £20 Was £40", "19.99 incl. VAT"; not a
        # discount ("-20% 49,99 €").
        unescaped = _price_text(value)
        match = next((m for m in _PRICE_NUMBER.finditer(unescaped) if not re.match(r"\s*%", unescaped[m.end():])), None)
        if match is None:
            return None
        text = re.sub(_GROUP_SEPARATORS, "", match.group())
        if _WHOLE_UNITS_MARK.match(unescaped, match.end()):
            # "12,-", "2.500,–": no separator is a decimal point; "1.299:-": a dot before three digits
            # groups thousands, but "24,90:-" and "49.95:-" have decimals
            text = re.sub(r"[.,]" if text[-1:] in ".," else r"\.(?=\d{3}\b)", "", text)
        elif re.fullmatch(r"\d+|\d{1,3}(\.\d{3})+", text) and (cents := _EURO_AS_POINT.match(unescaped, match.end())):
            text = text.replace(".", "") + "." + cents.group(1)  # "1.299€90": the dots group thousands
        text = text.rstrip(".,")
        if "," in text and "." in text:
            if text.rfind(",") > text.rfind("."):
                text = text.replace(".", "").replace(",", ".")
            else:
                text = text.replace(",", "")
        elif (re.fullmatch(r"-?\d{1,3}(,\d{3})+", text) and not text.lstrip("-").startswith("0,")
              or re.fullmatch(r"-?\d{1,2}(,\d{2})+,\d{3}", text)):
            text = text.replace(",", "")  # "1,299", "1,299,000"; "1,29,999" (Indian lakhs): thousands separators
        elif re.fullmatch(r"-?\d{1,3}(\.\d{3}){2,}", text) or (
            re.fullmatch(r"-?[1-9]\d{0,2}\.\d{3}", text) and _dot_groups_thousands(unescaped, currency)  # "0.500 €" is half a euro
        ):
            # "1.299.000"; "1.299 €", "EUR 2.500", "Rp 299.000". A bare "1.299" stays a decimal point.
            text = text.replace(".", "")
        elif "," in text:
            text = text.replace(",", ".", 1).replace(",", "")
    else:
        return None
    try:
        price = Decimal(text)
    except InvalidOperation:
        return None
    if not price.is_finite() or price < 0:
        return None
    return price




# The codes read from a price's own text ("19.99 EUR"), where three capitals may be other words.
CURRENCY_CODES = frozenset({"EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "ISK", "PLN", "CZK", "HUF", "RON", "BGN", "TRY", "RUB",
                            "UAH", "ILS", "JPY", "CNY", "KRW", "INR", "SGD", "HKD", "AUD", "NZD", "CAD", "MXN", "BRL", "ZAR", "AED",
                            "IDR", "VND", "THB", "PHP", "MYR", "CLP", "COP", "ARS", "SAR", "QAR", *THREE_DECIMAL_CURRENCIES})


def currency_code(value: Any, price_text: Any = None) -> str | None:
    """An ISO 4217 code from a currency field ("eur", "€"), else from the price's own text
    ("19.99 EUR", "€ 12")."""
    text = _text(value)
    if text:
        label = text.strip()
        return CURRENCY_SYMBOLS.get(label) or CURRENCY_LABELS.get(label.upper(), label.upper())
    if isinstance(price_text, str):
        for match in re.finditer(r"(?<![A-Za-z])([A-Z]{3})\s*\d|\d\s*([A-Z]{3})(?![A-Za-z])", price_text):
            if (code := match.group(1) or match.group(2)) in CURRENCY_CODES:  # not "NOW 20"
                return code
        return next((code for symbol, code in CURRENCY_SYMBOLS.items() if symbol in price_text), None)
    return None


def parse_availability(value: Any) -> str | None:
    """"https://schema.org/InStock", "instock", "out of stock", "OutOfStock" -> "InStock"/"OutOfStock"..."""
    text = _text(value, ids=True)
    if not text:
        return None
    name = re.sub(r"[^a-z]", "", re.split(r"[/:]", text.rstrip("/ "))[-1].lower())  # ".../InStock", "schema:InStock"
    known = {
        "instock": "InStock", "outofstock": "OutOfStock", "soldout": "SoldOut",
        "discontinued": "Discontinued", "preorder": "PreOrder", "presale": "PreSale",
        "backorder": "BackOrder", "limitedavailability": "LimitedAvailability",
        "onlineonly": "OnlineOnly", "instoreonly": "InStoreOnly", "available": "InStock",
        "unavailable": "OutOfStock", "notavailable": "OutOfStock", "notinstock": "OutOfStock", "oos": "OutOfStock",
    }
    return known.get(name)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _text(value: Any, ids: bool = False) -> str | None:
    """A value's text: a string, a number, or a node's name or @value. ids: a node's @id too, for
    fields whose value is an address or a schema.org term ({"@id": "schema:InStock"}); a brand or
    colour node with only an @id (a reference nothing on the page resolves) has no name."""
    if isinstance(value, MicrodataItem):
        value = value.first("name")
    if isinstance(value, dict):
        value = value.get("name") or value.get("@value") or (value.get("@id") if ids else None)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        # Some shops HTML-escape their JSON-LD ("Tom &amp; Co") or leave markup in it ("Linen
        # <b>shirt</b>"); unescaping plain text is harmless.
        text = " ".join(re.sub(r"<[^<>]*>", " ", html_lib.unescape(str(value))).split())
        return text or None
    return None


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if "}" in tag else tag


# --------------------------------------------------------------------------------------------
# JSON-LD
# --------------------------------------------------------------------------------------------


# A product's JSON-LD is kilobytes (a group of hundreds of variants, hundreds of kilobytes); a
# block of 20 MB of empty objects took over a gigabyte to load and walk.
MAX_JSON_LD_CHARS = 2_000_000


def _loads_lenient(block: str) -> Any:
    """json.loads, then again after the usual breakage: comments, CDATA, trailing commas."""
    if len(block) > MAX_JSON_LD_CHARS:
        log.warning("skipping a JSON-LD block of %d characters (over %d)", len(block), MAX_JSON_LD_CHARS)
        return None
    try:
        return json.loads(block, strict=False)
    except (ValueError, RecursionError):
        pass
    repaired = re.sub(r"^\s*(<!--|//\s*<!\[CDATA\[|/\*\s*<!\[CDATA\[\s*\*/|<!\[CDATA\[)|(-->|//\s*\]\]>|/\*\s*\]\]>\s*\*/|\]\]>)\s*$", "", block.strip())
    repaired = re.sub(r",\s*([}\]])", r"\1", repaired)
    try:
        return json.loads(repaired, strict=False)
    except (ValueError, RecursionError):
        log.debug("skipping an invalid JSON-LD block")
        return None


def _types(node: dict[str, Any]) -> list[str]:
    return [_local_name(str(v)).rsplit("/", 1)[-1] for v in _as_list(node.get("@type")) if isinstance(v, str)]


def _walk(data: Any) -> Iterator[dict[str, Any]]:
    """Every dict anywhere in the JSON-LD (iterative, so deep nesting cannot overflow)."""
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            yield item
            stack.extend(reversed([v for v in item.values() if isinstance(v, (dict, list))]))


def _offer_fields(offers: Any) -> tuple[Decimal | None, str | None, str | None]:
    """(price, currency, availability) of the offer _first_offer_fields picks; in stock when any
    offer is (themes list one offer per size, the first of which may be sold out)."""
    price, currency, availability = _first_offer_fields(offers)
    return price, currency, _in_stock_if_any(availability, _availabilities(offers))


def _offer_address(offers: Any, page: PageParser) -> str | None:
    """The address the first offer naming one gives (the one in stock changes as sizes sell out),
    unless it is the page's own with a size's parameters added: "?variant=1" is one size's, the
    page the product's ("product.php?id=2" on the page of id=1 is another product's)."""
    url = next((url for offer in _as_list(offers) if isinstance(offer, dict)
                if (url := absolute_url(page.base_url, _text(offer.get("url"), ids=True)) or _offer_address(offer.get("offers"), page))), None)
    return url if url and not any(same_page(url, own) for own in (page.page_url, page.canonical) if own) else None


def same_page(url: str, page_url: str) -> bool:
    """Whether `url` is `page_url` (any scheme, "www." or not, a trailing slash or not) with, at most,
    parameters added to its query."""
    asked, own = urlsplit(url), urlsplit(page_url)
    if _site(asked.hostname) != _site(own.hostname) or asked.path.rstrip("/") != own.path.rstrip("/"):
        return False
    given = dict(parse_qsl(asked.query, keep_blank_values=True))
    return all(given.get(name) == value for name, value in parse_qsl(own.query, keep_blank_values=True))


def _in_stock_if_any(availability: str | None, availabilities: list[str]) -> str | None:
    """`availability`, unless it says sold out (or nothing) and another offer's does not."""
    if availability is not None and availability not in UNAVAILABLE:
        return availability
    return next((a for a in availabilities if a not in UNAVAILABLE), availability or next(iter(availabilities), None))


def _availabilities(offers: Any) -> list[str]:
    """The availability of every offer, an AggregateOffer's own offers included."""
    found = []
    for offer in _as_list(offers):
        if isinstance(offer, dict):
            if (availability := parse_availability(offer.get("availability"))) is not None:
                found.append(availability)
            if offer.get("offers") is not None:
                found += _availabilities(offer["offers"])
    return found


def _price_specification(value: Any) -> dict:
    """The price specification that is the price (of a list, not the struck-through or list price)."""
    specs = [spec for spec in _as_list(value) if isinstance(spec, dict)]
    selling = [s for s in specs if re.split(r"[/:]", str(s.get("priceType") or ""))[-1] not in ("StrikethroughPrice", "ListPrice", "SRP", "MSRP")]
    return (selling or specs or [{}])[0]


def _first_offer_fields(offers: Any) -> tuple[Decimal | None, str | None, str | None]:
    """The first offer one can buy with a price above 0 (a sold-out size's price is not the
    product's; a 0.00 beside others is a theme's placeholder), else the first with a price above
    0, else the first with a price, else the first."""
    candidates = []
    for offer in _as_list(offers):
        if not isinstance(offer, dict):
            continue
        spec = _price_specification(offer.get("priceSpecification"))
        raw = next((v for v in (offer.get("price"), offer.get("lowPrice"), spec.get("price")) if v not in (None, "")), None)
        currency = currency_code(offer.get("priceCurrency") or spec.get("priceCurrency"), raw)
        fields = (parse_price(raw, currency), currency, parse_availability(offer.get("availability")))
        nested = offer.get("offers")  # an AggregateOffer listing its offers (its lowPrice may be a 0 placeholder)
        if not fields[0] and nested is not None:
            price, currency, availability = _first_offer_fields(nested)
            if price is not None and (fields[0] is None or price > 0):
                fields = (price, fields[1] or currency, fields[2] or availability)
        candidates.append(fields)
    ranked = ([f for f in candidates if f[0] and f[2] not in UNAVAILABLE], [f for f in candidates if f[0]],
              [f for f in candidates if f[0] is not None], candidates)
    return next((group[0] for group in ranked if group), (None, None, None))


_PICTURE_PATH = re.compile(r"\.(?:jpe?g|png|webp|avif|gif)$", re.I)


def _picture_at_id(node_id: Any, pages: tuple[str, ...]) -> str | None:
    """The @id of an ImageObject named by reference only ({"@id": "https://.../a.jpg"}) when it is
    a picture's address: not a node's name ("#primaryimage", "_:b0"), nor a page's (Yoast names
    images by their page, "/p/dress/" or its attachment page "/attachment/dress-front/")."""
    if not isinstance(node_id, str) or "#" in node_id or not re.match(r"(?i)https?://", node_id := node_id.strip()):
        return None
    if not _PICTURE_PATH.search(urlsplit(node_id).path) or any(same_page(node_id, page) for page in pages):
        return None
    return node_id


def _image_urls(value: Any, base: str, pages: tuple[str, ...] = ()) -> list[str]:
    """The pictures' addresses in an image value; `pages`, the page's own addresses (an @id naming
    one of them is no picture)."""
    urls: list[str] = []
    for item in _as_list(value):
        if isinstance(item, dict):
            item = item.get("url") or item.get("contentUrl") or _picture_at_id(item.get("@id"), pages)
            if isinstance(item, list):
                item = item[0] if item else None
        url = absolute_url(base, item)
        if url and url not in urls:
            urls.append(url)
    return urls


def _crumbs(value: Any) -> list[str]:
    """Names of a category value: "Women > Dresses", a list, or a BreadcrumbList (JSON or microdata)."""
    names: list[str] = []
    for item in _as_list(value):
        if isinstance(item, (dict, MicrodataItem)):
            elements = item.get("itemListElement") if isinstance(item, dict) else item.props.get("itemListElement")
            if elements is not None:
                ordered = sorted(_as_list(elements), key=_position)
                names.extend(name for name in (_crumb_name(e) for e in ordered) if name)
            elif name := _text(item):
                names.append(name)
        elif isinstance(item, str):
            names.extend(part.strip() for part in re.split(r"[>/|›»]", html_lib.unescape(item)) if part.strip())
    return names


def _position(element: Any) -> float:
    raw = element.get("position") if isinstance(element, dict) else element.first("position") if isinstance(element, MicrodataItem) else None
    try:
        return float(raw)
    except (TypeError, ValueError):
        return 0.0


def _crumb_name(element: Any) -> str | None:
    if isinstance(element, MicrodataItem):
        return _text(element.first("name")) or _text(element.first("item"))
    if isinstance(element, dict):
        return _text(element.get("name")) or _text(element.get("item"), ids=True)  # a crumb's address names it too
    return None


def _category_of(names: list[str]) -> str | None:
    """The most specific level (last) that names a category, or None from the first that names
    something else ("Shoes & Bags > Bags"); the whole path as a last resort."""
    for text in reversed(names):
        category = head_category(text)
        if category == NOT_A_GARMENT:
            return None
        if category in CATEGORIES:
            return category
    return normalise_category(" ".join(names)) if names else None


def _sizes(value: Any) -> tuple[str, ...]:
    sizes: list[str] = []
    for item in _as_list(value):
        text = _text(item)
        if text:
            sizes.extend(part.strip() for part in text.split(",") if part.strip()) if "," in text else sizes.append(text)
    return tuple(dict.fromkeys(sizes))


def _variants_availability(variants: list[dict], availability: str | None) -> str | None:
    """`availability`, that of a product group's variants' offers taken together, unless it says
    sold out while a variant on sale says nothing. As a shopper reads a group: in stock when any
    variant is; sold out only when every variant that says is sold out and no variant with a price
    is silent (that one may still be bought: unknown, and the group stays listed); a variant without
    a price (or with a 0.00 placeholder) is not on sale, and its silence keeps no sold-out group listed."""
    if availability in UNAVAILABLE and any(price and said is None for price, _, said in (_offer_fields(v.get("offers")) for v in variants)):
        return None
    return availability


def _json_ld_product(node: dict[str, Any], page: PageParser, page_images: tuple[str, ...] = ()) -> ScrapedProduct | None:
    """The product of a Product or ProductGroup node; `page_images`, the page's pictures of it, when
    it names none (the page's only product)."""
    # A ProductGroup (one product in several sizes or colours) is the product; its variants give
    # what it does not say itself: pictures, offers, sizes.
    variants = [v for v in _as_list(node.get("hasVariant")) if isinstance(v, dict)]
    title = _text(node.get("name"))
    own = tuple(url for url in (page.page_url, page.canonical) if url)
    images = (_image_urls(node.get("image"), page.base_url, own)
              or list(dict.fromkeys(u for v in variants for u in _image_urls(v.get("image"), page.base_url, own))) or list(page_images))
    if not title or not images:
        return None
    price, currency, availability = _offer_fields(node.get("offers"))
    # A group's AggregateOffer often names no availability or currency, or a "0.00" placeholder for
    # its price, where its variants' offers say them; what the group does say is its own (its sale
    # price below the variants', "sold out" beside variants still listed in stock).
    if variants and (not price or currency is None or availability is None):
        variant_price, variant_currency, variant_availability = _offer_fields([o for v in variants for o in _as_list(v.get("offers"))])
        if not price and variant_price is not None and (price is None or variant_price > 0):
            price, currency = variant_price, variant_currency or currency
        elif price and currency is None:
            currency = variant_currency  # the group's price is in the shop's currency, which its variants name
        availability = availability or _variants_availability(variants, variant_availability)
    offer_url = _offer_address(node.get("offers"), page)  # the node's own: a variant's ("?size=S") is not the group's
    sizes = _sizes(node.get("size")) or _sizes([v.get("size") for v in variants])
    crumbs = _crumbs(node.get("category"))
    url = product_url(page.page_url, node.get("url"), page.canonical, offer_url, base=page.base_url)
    return ScrapedProduct(
        url=url,
        title=title,
        price=price,
        currency=currency,
        category=_category_of(crumbs),
        brand=_text(node.get("brand")),
        sku=_text(node.get("sku")),
        image_urls=tuple(images),
        availability=availability,
        colour=_text(node.get("color")),
        sizes=sizes,
        breadcrumb=" > ".join(crumbs) or None,
    )


# --------------------------------------------------------------------------------------------
# Microdata and OpenGraph
# --------------------------------------------------------------------------------------------


def _microdata_walk(items: list[MicrodataItem]) -> Iterator[MicrodataItem]:
    stack = list(reversed(items))
    while stack:
        item = stack.pop()
        yield item
        for values in item.props.values():
            stack.extend(reversed([v for v in values if isinstance(v, MicrodataItem)]))


_OFFER_FIELDS = ("price", "lowPrice", "priceCurrency", "availability", "priceSpecification", "offers")


def _as_json_ld(item: MicrodataItem, depth: int = 0) -> dict[str, Any]:
    """An offer (or a price specification) in microdata as JSON-LD writes it: the first text of each
    of its offer fields, or every item of one."""
    node: dict[str, Any] = {}
    for name in _OFFER_FIELDS:
        values = item.props.get(name, [])
        items = [_as_json_ld(v, depth + 1) for v in values if isinstance(v, MicrodataItem)] if depth < 8 else []
        if value := items or next((v for v in values if isinstance(v, str)), None):
            node[name] = value
    return node


def _microdata_offers(item: MicrodataItem) -> list[dict[str, Any]]:
    """A microdata product's offers as JSON-LD's, for _offer_fields, each with the fields it lacks
    taken from the product (which may name its price itself, with no Offer)."""
    own = _as_json_ld(item)
    offers = [o for o in _as_list(own.pop("offers", None)) if isinstance(o, dict)]
    return [{**own, **offer} for offer in offers] or [own]


def _microdata_product(item: MicrodataItem, page: PageParser) -> ScrapedProduct | None:
    title = _text(item.first("name"))
    images = [url for url in (absolute_url(page.base_url, v) for v in item.props.get("image", []) if isinstance(v, str)) if url]
    if not title or not images:
        return None
    price, currency, availability = _offer_fields(_microdata_offers(item))
    crumbs = _crumbs(item.props.get("category"))
    return ScrapedProduct(
        url=product_url(page.page_url, item.first("url"), page.canonical, base=page.base_url),
        title=title,
        price=price,
        currency=currency,
        category=_category_of(crumbs),
        brand=_text(item.first("brand")),
        sku=_text(item.first("sku")),
        image_urls=tuple(dict.fromkeys(images)),
        availability=availability,
        colour=_text(item.first("color")),
        sizes=_sizes(item.props.get("size")),
        breadcrumb=" > ".join(crumbs) or None,
    )


def _og(page: PageParser, *names: str) -> str | None:
    for name in names:
        for value in page.meta.get(name, []):
            if value:
                return html_lib.unescape(value)
    return None


def _sells_itself(node: dict) -> bool:
    """A product node with offers (an AggregateOffer too: sizes at several prices), or sizes or
    colours that have: not a category page's rating snippet."""
    return bool(node.get("offers") or node.get("hasVariant"))


def _page_images(page: PageParser) -> tuple[str, ...]:
    """The pictures a page shows of its product: its OpenGraph images, else its gallery's."""
    og = [url for name in ("og:image", "og:image:secure_url", "og:image:url") for url in (absolute_url(page.base_url, v) for v in page.meta.get(name, [])) if url]
    return tuple(dict.fromkeys(og or page.images))


def _opengraph_product(page: PageParser) -> ScrapedProduct | None:
    """A product from OpenGraph (og:type product, or a product:price) when nothing richer exists."""
    is_product = (_og(page, "og:type") or "").lower() in ("product", "og:product", "product.item")
    price = _og(page, "product:price:amount", "og:price:amount", "product:sale_price:amount")
    if not (is_product or price):
        return None
    title = _og(page, "og:title") or page.h1 or page.title
    images = _page_images(page)
    if not title or not images:
        return None
    currency = currency_code(_og(page, "product:price:currency", "og:price:currency"), price)
    crumbs = _crumbs(_og(page, "product:category"))
    return ScrapedProduct(
        url=product_url(page.page_url, _og(page, "og:url"), page.canonical, base=page.base_url),
        title=title,
        price=parse_price(price, currency),
        currency=currency,
        category=_category_of(crumbs),
        brand=_og(page, "product:brand", "og:brand"),
        sku=_og(page, "product:retailer_item_id"),
        image_urls=tuple(images),
        availability=parse_availability(_og(page, "product:availability", "og:availability")),
        colour=_og(page, "product:color"),
        breadcrumb=" > ".join(crumbs) or None,
    )


def _fill(product: ScrapedProduct, other: ScrapedProduct | None) -> ScrapedProduct:
    """``product`` with its empty fields taken from ``other``."""
    if other is None:
        return product
    missing = {name: getattr(other, name) for name in ("price", "currency", "category", "brand", "sku", "availability", "colour", "sizes", "breadcrumb") if not getattr(product, name) and getattr(other, name)}
    return replace(product, **missing) if missing else product


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


def _has_own_address(node: dict) -> bool:
    return bool(_text(node.get("url"), ids=True) or any(isinstance(o, dict) and _text(o.get("url"), ids=True) for o in _as_list(node.get("offers"))))


def _top_level(json_ld: list[Any]) -> list[dict]:
    """The nodes a page's JSON-LD is about: each block's own, its @graph's, and their mainEntity."""
    found: list[dict] = []
    for data in json_ld:
        for node in _as_list(data):
            if isinstance(node, dict):
                found += [node, *(n for n in _as_list(node.get("@graph")) if isinstance(n, dict))]
    return found + [e for node in found for e in _as_list(node.get("mainEntity")) if isinstance(e, dict)]


def _resolved(json_ld: list[Any]) -> list[Any]:
    """The blocks with each reference-only node ({"@id": ...}, as Yoast and WooCommerce write a
    product's image, offers and brand) replaced by the node of that @id, once."""
    nodes = {node["@id"]: node for data in json_ld for node in _walk(data)
             if isinstance(node.get("@id"), str) and len(node) > 1}

    def resolve(value: Any, depth: int = 0) -> Any:
        if isinstance(value, dict):
            if set(value) == {"@id"} and value["@id"] in nodes:
                return nodes[value["@id"]]
            return {key: resolve(item, depth + 1) for key, item in value.items()} if depth < 64 else value
        if isinstance(value, list):
            return [resolve(item, depth + 1) for item in value] if depth < 64 else value
        return value

    return [resolve(data) for data in json_ld] if nodes else json_ld


def _in_language(json_ld: list[Any], language: str | None) -> list[Any]:
    """The blocks with each value given in several languages ([{"@language": "fr", "@value": "Robe"},
    {"@language": "de", "@value": "Kleid"}], a name or a description) as the one in `language`, the
    page's (its primary subtag: "fr" for "fr-CH"), else the first's: a list is no text, and the
    product was dropped for having no name. The values of a property with several in that language
    (sizes "S", "M", "L"; categories "Women", "Dresses") stay a list."""
    wanted = (language or "").split("-")[0].lower()

    def choose(value: Any, depth: int = 0) -> Any:
        if isinstance(value, dict):
            return {key: choose(item, depth + 1) for key, item in value.items()} if depth < 64 else value
        if isinstance(value, list):
            if value and all(isinstance(v, dict) and "@value" in v for v in value) and any("@language" in v for v in value):
                languages = [str(v.get("@language", "")).split("-")[0].lower() for v in value]
                chosen = wanted if wanted in languages else languages[0]
                kept = [v for v, in_language in zip(value, languages) if in_language == chosen]
                return kept[0] if len(kept) == 1 else kept
            return [choose(item, depth + 1) for item in value] if depth < 64 else value
        return value

    return [choose(data) for data in json_ld]


def products_of_page(page: PageParser) -> list[ScrapedProduct]:
    json_ld = _resolved([data for data in map(_loads_lenient, page.json_ld) if data is not None])
    if any("@language" in block for block in page.json_ld):  # a walk over every block only where one may be
        json_ld = _in_language(json_ld, page.language)
    nodes = [node for data in json_ld for node in _walk(data)]
    # A product nested in another node ("you may also like", a look it completes) is taken only
    # with an address of its own: it would otherwise take the page's and pass for its product.
    top = {id(node) for node in _top_level(json_ld)}
    # The variants of a product group are the group's sizes and colours, not products of their own.
    variants = {id(v) for node in nodes if "ProductGroup" in _types(node) for v in _as_list(node.get("hasVariant"))}
    candidates = [n for n in nodes if {"Product", "ProductGroup"} & set(_types(n)) and id(n) not in variants
                  and (id(n) in top or _has_own_address(n))]
    # The page's only product, on sale, is the one its OpenGraph image and gallery show; of several,
    # each must name its own (nor does a category page's rating snippet take the shop's logo).
    page_images = _page_images(page) if len(candidates) == 1 and _sells_itself(candidates[0]) else ()
    from_json_ld = [p for p in (_json_ld_product(n, page, page_images) for n in candidates) if p]
    microdata = [p for p in (_microdata_product(i, page) for i in _microdata_walk(page.items) if "Product" in i.types) if p]
    products = from_json_ld or microdata
    opengraph = _opengraph_product(page)
    if not products:
        return [opengraph] if opengraph else []
    page_crumbs = [c for node in nodes if "BreadcrumbList" in _types(node) for c in [_crumbs(node)] if c]
    page_crumbs += [c for i in _microdata_walk(page.items) if "BreadcrumbList" in i.types for c in [_crumbs(i)] if c]
    if len(products) == 1:
        # One product on the page: the gallery and the other vocabularies describe it too.
        product = _fill(_fill(products[0], microdata[0] if microdata and from_json_ld else None), opengraph)
        extra = [url for url in page.images if url not in product.image_urls]
        products = [replace(product, image_urls=product.image_urls + tuple(dict.fromkeys(extra)))]
    if page_crumbs:
        # The page's breadcrumb is its main product's (the one the page is about), not that of
        # products it also marks up ("complete the look"); it names the category when the
        # product's own wording does not ("Sale", "New in").
        # With no product at the page's own URL (the variants of one product group), it is all of theirs.
        crumbs = page_crumbs[0]
        own = [p for p in products if p.url in (page.page_url, page.canonical)] or products
        products = [replace(p, breadcrumb=p.breadcrumb or " > ".join(crumbs), category=p.category or _category_of(crumbs)) if p in own else p
                    for p in products]
    return list(dict.fromkeys(products))


def extract_products(html: str, page_url: str) -> list[ScrapedProduct]:
    """Every product with a name and an image on the page (JSON-LD, microdata, OpenGraph)."""
    return products_of_page(parse_page(html, page_url))


# --------------------------------------------------------------------------------------------
# Shopify-style /products.json
# --------------------------------------------------------------------------------------------


def shopify_products(data: Any, base_url: str, currency: str | None = None) -> list[ScrapedProduct]:
    """Products of one page of a Shopify ``/products.json`` feed (which names no currency)."""
    products: list[ScrapedProduct] = []
    for item in _as_list(data.get("products") if isinstance(data, dict) else None):
        if not isinstance(item, dict) or not _text(item.get("title")) or not _text(item.get("handle")):
            continue
        images = _image_urls([i.get("src") for i in _as_list(item.get("images")) if isinstance(i, dict)], base_url)
        if not images:
            continue
        variants = [v for v in _as_list(item.get("variants")) if isinstance(v, dict)]
        options = {str(o.get("name", "")).lower(): o for o in _as_list(item.get("options")) if isinstance(o, dict)}
        available = [v.get("available") for v in variants if isinstance(v.get("available"), bool)]
        priced = [(parse_price(v.get("price"), currency), v.get("available") is not False) for v in variants]
        # The cheapest variant one can buy, else the cheapest; a 0.00 is a placeholder.
        prices = next((group for group in ([p for p, buyable in priced if p and buyable], [p for p, _ in priced if p]) if group), [])
        crumbs = [t for t in [_text(item.get("product_type"))] if t]
        products.append(
            ScrapedProduct(
                url=absolute_url(base_url, f"/products/{item['handle']}") or base_url,
                title=_text(item["title"]) or "",
                price=min(prices) if prices else None,
                currency=currency,
                category=_category_of(crumbs) or _category_of(_sizes(item.get("tags"))),
                brand=_text(item.get("vendor")),
                sku=_text(variants[0].get("sku")) if variants else None,
                image_urls=tuple(images),
                availability=("InStock" if any(available) else "OutOfStock") if available else None,
                colour=_text((options.get("color") or options.get("colour") or {}).get("values", [None])[0]) if (options.get("color") or options.get("colour")) else None,
                sizes=_sizes((options.get("size") or {}).get("values")),
                breadcrumb=" > ".join(crumbs) or None,
            )
        )
    return products


__all__ = [
    "ScrapedProduct",
    "UNAVAILABLE",
    "PageParser",
    "absolute_url",
    "best_srcset_candidate",
    "extract_products",
    "parse_availability",
    "parse_page",
    "parse_price",
    "products_of_page",
    "shopify_products",
]
