"""One pass over a source: discover its product pages (or feed pages), fetch and parse each.

Discovery strategies:
- ``sitemap``: the Sitemap lines of robots.txt (else ``/sitemap.xml``), sitemap indexes (bounded
  depth, no revisits), gzip-compressed sitemaps, sitemaps in text (a URL a line); only URLs on the
  source's own host;
- ``listing``: listing pages (``listing_urls``, default the base URL), their product links
  (``product_pattern``) and their pagination (``rel=next``, ``?page=N``, ``/page/N``), with a
  seen-set against pagination loops and a page cap;
- ``shopify``: ``/products.json?page=N`` until a page comes back empty;
- ``auto``: sitemaps, and the listing pages when the sitemaps name nothing.

Every page is fetched conditionally (ETag / Last-Modified from ``known``); a 304, or a body
whose hash is the one seen last time, is ``unchanged`` and is not parsed again.

Product pages are visited least recently checked first (never-visited ones before all), and a
crawl given ``round_started`` leaves out the pages visited since then: a round of a large shop cut
short by its time budget goes on, at the next pass, with the pages it has not reached yet. A crawl
given a ``DiscoveryLog`` keeps what discovery read and found there, document by document: a round's
later passes go on with it instead of discovering again, and a discovery cut short (a shop of many
listing pages) goes on where it stopped.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import re
import time
import itertools
import zlib
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterator, Mapping, Protocol, Sequence
from urllib.parse import urljoin, urlsplit
from xml.parsers import expat

from shazzam.scrape.extract import MAX_URL_LENGTH, absolute_url, ScrapedProduct, parse_page, products_of_page, same_page, shopify_products
from shazzam.scrape.fetch import FetchError, Fetcher, FetchResult, RobotsDisallowed, gunzip, percent_encoded, python_codec
from shazzam.scrape.sources import ShopSource

log = logging.getLogger(__name__)

SITEMAP_MAX_DEPTH = 3
# The sitemaps.org protocol's limit on a sitemap, uncompressed (a sitemap of 50,000 URLs with their
# alternates in other languages and their pictures takes more than the 20 MB cap of other pages).
SITEMAP_MAX_BYTES = 50 * 1024 * 1024
SITEMAP_MAX_URLS = 50_000  # the protocol's limit on the URLs of one sitemap
SHOPIFY_PAGE_SIZE = 250
HTML_TYPES = ("text/html", "application/xhtml+xml")
_PAGINATION = re.compile(r"[?&](?:page|p|pg)=\d+|/page/\d+/?$", re.I)
# How a shop's page title or heading says the page is not there, in the languages of Europe's
# larger clothing markets (a page that still shows a product is never asked).
_NOT_FOUND = re.compile(
    r"\b(?:not found|404|no longer (?:available|exists)|does ?n[o'’]t exist|page (?:is )?missing"
    r"|nicht gefunden|existiert (?:\w+ )?nicht|nicht mehr verfügbar"  # German
    r"|introuvable|non trouvée?|n[’']existe (?:pas|plus)|n[’']est plus disponible"  # French
    r"|no (?:se ha )?encontrad[ao]|no existe|ya no est[aá] disponible"  # Spanish
    r"|non (?:è stat[ao] )?trovat[ao]|non esiste|non è più disponibile"  # Italian
    r"|niet gevonden|bestaat niet|niet meer beschikbaar"  # Dutch
    r"|não encontrad[ao]|não existe"  # Portuguese
    r"|nie znaleziono|nie został[ao] znalezion[ay]|nie istnieje"  # Polish
    r"|hittades inte|kunde inte hittas|finns inte|ikke fundet|findes ikke|eksisterer ikke|ikke funnet|finnes ikke"
    r"|ei löytynyt)\b",  # Nordic
    re.I,
)
# How a bot challenge, a cookie wall or a maintenance page names itself (in the same languages). A
# shop may send every page there for a while: a redirect there says nothing of the product (a
# no-product error, as when one is served at the product's own address). Phrases, not words: a
# removed product sent to a "Care & Maintenance" category, or home under a cookie banner's "We value
# your privacy" heading, is gone. Challenges, by title or heading:
_CHALLENGE = re.compile(
    r"\b(?:just a moment|one more step|attention required|checking (?:your browser|the site|if the site)|security check"
    r"|access to this page has been denied|ddos-guard|pardon our interruption"
    r"|verify(?:ing)? (?:that )?you are (?:a )?human|are you (?:a )?(?:human|robot)|captcha"
    r"|down for maintenance|under maintenance|scheduled maintenance|maintenance mode|service (?:temporarily )?unavailable"
    r"|we(?:'|’)?ll be right back"
    r"|wartungsarbeiten|wartungsmodus|en maintenance|en mantenimiento|in manutenzione|in onderhoud|em manutenção"
    r"|przerwa techniczna|underhållsarbete)\b",
    re.I,
)
# Words that are also a shop's own titles ("Un instant de style", "Access denied - please log in",
# "Maintenance & Care") count only as the whole title: Cloudflare's translated "Just a moment...",
# Akamai's "Access Denied", or a maintenance word alone or before the site's name ("Maintenance | Shop").
_HOLDING_TITLE = re.compile(
    r"^\s*(?:einen moment|un instant|(?:solo )?un momento|even geduld|um momento|chwileczk[eę]|ett ögonblick|et øjeblik"
    r"|hetkinen|access denied)\s*(?:…|\.{3})?\s*$"
    r"|^\s*(?:site |store |shop )?(?:maintenance|wartung|mantenimiento|manutenzione|onderhoud|manutenção|underhåll"
    r"|vedligeholdelse|vedlikehold|huoltokatko)\s*(?:$|[|–—:!.…-])",
    re.I,
)
# Cookie walls, by title only too (a banner's heading is on every page, the home page too):
_COOKIE_WALL = re.compile(r"\b(?:before you continue|cookie (?:consent|settings|preferences)|privacy settings|we value your privacy)\b", re.I)
# And by address, all there is of one on another host or on a path robots.txt shuts: a whole path
# segment ("/challenge?return=...", "/maintenance.html", Cloudflare's "/cdn-cgi/challenge-platform/"),
# not a word in a name ("/challenge-collection", "/pages/leather-maintenance"), or a known host.
_INTERSTITIAL_PATH = re.compile(
    r"/(?:captcha|challenge|consent|maintenance)(?:\.[a-z]{2,5})?(?:/|$)|/cdn-cgi/challenge-platform/|/errors/503\.php$"
    r"|^(?:/[a-z]{2}(?:-[a-z]{2})?)?/password/?$|^/blocked/?$",  # Shopify's closed shop, at its root or a market's
    re.I)
_INTERSTITIAL_HOST = re.compile(r"(?:^|\.)(?:challenges\.cloudflare\.com|captcha-delivery\.com|consent\.(?:google|youtube|yahoo)\.[a-z.]+)$", re.I)


@dataclass(frozen=True)
class CachedPage:
    etag: str | None = None
    last_modified: str | None = None
    content_sha256: str | None = None
    checked_at: datetime | None = None  # a scrape round's last visit, whatever came of it


@dataclass
class PageOutcome:
    """What became of one page: ``changed`` (parsed: new or different), ``unchanged``,
    ``gone`` (404/410, or a soft 404), ``robots`` (disallowed) or ``error``."""

    url: str
    state: str
    products: list[ScrapedProduct] = field(default_factory=list)
    status: int | None = None
    reason: str | None = None  # the error kind, or why a page is gone
    cache: CachedPage | None = None  # validators to remember when the page was parsed
    feed_end: bool = False  # a feed page listing nothing at all: past the feed's last page

    @property
    def removes_its_products(self) -> bool:
        """Gone, or shut by the shop's own robots.txt (not one that could not be read)."""
        return self.state == "gone" or (self.state, self.reason) == ("robots", "robots")


@dataclass
class DiscoveryDocument:
    """A sitemap or a listing page that discovery reads. ``outcome`` is None until it is read, then
    "listed" (it named pages), "indexed" (a sitemap index: it named sitemaps), "missing" (404, 410,
    shut by robots.txt, or failed twice: not read again this round) or "failed" (read again once,
    at the next pass)."""

    url: str
    kind: str  # "sitemap" | "listing"
    depth: int = 1  # a sitemap's nesting: 1 for a root
    outcome: str | None = None


class DiscoveryLog(Protocol):
    """Where a round's discovery is kept between passes (passes.ShopDiscoveryLog: the catalogue)."""

    def load(self) -> tuple[list[DiscoveryDocument], list[str]]:
        """The documents queued (in the order found, read or not) and the pages found."""

    def record(self, read: DiscoveryDocument | None, documents: Sequence[DiscoveryDocument], pages: Sequence[str]) -> None:
        """A document read (None: the first documents queued), and the new documents and pages it named."""

    def forget(self) -> None:
        """Drop it all: the next discovery starts afresh."""


class Discovery:
    """What a discovery has queued, read and found: its documents in the order found (one per kind
    and URL: a home page named as a sitemap is still read as a listing page), and its pages. A
    document to read is one never read, then one that failed at an earlier pass: it is read once
    more (a 503, or the pass's time running out, would otherwise cost the round what it names),
    after the others, so that documents failing for good hold up no round."""

    def __init__(self, documents: Sequence[DiscoveryDocument] = (), pages: Sequence[str] = ()) -> None:
        self.documents: dict[tuple[str, str], DiscoveryDocument] = {}
        self.pending: deque[DiscoveryDocument] = deque()
        self.pages: dict[str, None] = {}
        self.listings = 0
        self.add(documents, pages)
        # Those that failed before go behind those never read.
        self.pending = deque(sorted(self.pending, key=lambda document: document.outcome == "failed"))

    def listed(self) -> bool:
        """Whether a document that names pages (a sitemap of pages, a listing page) was read."""
        return any(document.outcome == "listed" for document in self.documents.values())

    def add(self, documents: Sequence[DiscoveryDocument], pages: Sequence[str], max_listings: int | None = None) -> tuple[list, list]:
        """Queue the documents and take the pages not met before (listing pages up to `max_listings`;
        no URL longer than a sitemap allows); returns the new ones."""
        new_documents, new_pages = [], []
        for document in documents:
            key = (document.kind, document.url)
            if key in self.documents or len(document.url) > MAX_URL_LENGTH:
                continue
            if document.kind == "listing" and max_listings is not None and self.listings >= max_listings:
                continue
            self.documents[key] = document
            self.listings += document.kind == "listing"
            if document.outcome in (None, "failed"):
                self.pending.append(document)
            new_documents.append(document)
        for url in pages:
            if url not in self.pages and len(url) <= MAX_URL_LENGTH:
                self.pages[url] = None
                new_pages.append(url)
        return new_documents, new_pages


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:  # a malformed URL ("http://[bad/") is on no host
        return ""


class SitemapError(ValueError):
    """A sitemap that is not well-formed XML, or that declares a DTD; or one in text that names no URL."""


# How an XML sitemap starts: a UTF-16 byte order mark, UTF-16 without one, else markup after
# whitespace (and a UTF-8 byte order mark). Anything else is a sitemap in text, if any.
_XML_START = re.compile(rb"\xff\xfe|\xfe\xff|\x00<|(?:\xef\xbb\xbf)?\s*<")
# A line of a text sitemap that is a page's URL (sitemaps.org: whole, one a line, in UTF-8).
_TEXT_SITEMAP_URL = re.compile(r"https?://[^\s\ufffd]+", re.I)
# A text sitemap's line: ended by LF, CRLF or CR alone (an old Mac's).
_TEXT_LINE = re.compile(rb"[^\r\n\f]+")


def _text_sitemap_urls(body: bytes) -> list[str]:
    """The URLs of a sitemap in text form (sitemaps.org, Google: a robots.txt may name a
    ``sitemap.txt``), one a line. A line that is not a whole http(s) URL, or not UTF-8, is left out; a
    body with none (a server's error message served with 200) is no sitemap. Read a line at a time:
    any body that is not XML comes here, and 50 MB of short lines decoded and split at once took
    1.25 GB. Past sitemaps.org's 50,000 URLs the rest is left."""
    urls: list[str] = []
    for line in _TEXT_LINE.finditer(body, 3 if body.startswith(codecs.BOM_UTF8) else 0):
        if _TEXT_SITEMAP_URL.fullmatch(url := line.group().decode("utf-8", errors="replace").strip()):
            if len(urls) == SITEMAP_MAX_URLS:
                log.warning("a sitemap in text lists more than %d URLs: the first %d are read", SITEMAP_MAX_URLS, SITEMAP_MAX_URLS)
                break
            urls.append(url)
    if urls:
        return urls
    raise SitemapError("neither XML nor a list of URLs")


# The encoding an XML declaration names (XML 1.0's EncName), read in the bytes of any encoding
# that keeps ASCII as it is; expat takes the declaration only at the document's very start.
_XML_ENCODING = re.compile(rb"<\?xml\s[^?>]*?\bencoding\s*=\s*[\"']([A-Za-z][\w.-]*)[\"']")
_TRANSCODE_SLICE = 1024 * 1024


def _expat_reads(label: bytes) -> bool:
    """Whether expat reads a document in this encoding itself: UTF-8, UTF-16, ISO-8859-1, US-ASCII,
    and (pyexpat asking Python's codecs) any single-byte one, which it reads byte for byte."""
    try:
        expat.ParserCreate().Parse(b'<?xml version="1.0" encoding="' + label + b'"?><a/>', True)
    except (expat.ExpatError, ValueError):  # ValueError: "multi-byte encodings are not supported"
        return False
    return True


def _in_utf8(body: bytes) -> Iterator[bytes]:
    """The sitemap in pieces to parse, in UTF-8 when its declaration names an encoding that expat
    does not read and Python does (as a browser reads the label): expat reads no multi-byte encoding
    (Shift_JIS, EUC-KR, Big5, GB2312) itself. Transcoded a slice at a time, so that no second whole
    copy of a large sitemap is held. Any other label is left to expat: it reads an ISO-8859-1 sitemap
    with bytes that windows-1252 (the label's codec for a browser) has no character for, such as
    UTF-8 mislabelled; and it refuses a label that no one knows."""
    declared = _XML_ENCODING.match(body, 0, 256)
    if not declared or _expat_reads(declared.group(1)):
        yield body
        return
    codec = python_codec(declared.group(1).decode("ascii"))
    if not codec or codecs.lookup(codec).name.startswith("utf"):
        yield body
        return
    yield body[: declared.start(1)] + b"UTF-8" + body[declared.end(1) : declared.end()]
    decoder, view = codecs.getincrementaldecoder(codec)(), memoryview(body)
    for start in range(declared.end(), len(body), _TRANSCODE_SLICE):
        yield decoder.decode(view[start : start + _TRANSCODE_SLICE]).encode("utf-8")
    yield decoder.decode(b"", final=True).encode("utf-8")  # a character cut off at the end is an error


def parse_sitemap(body: bytes, limit: int) -> tuple[str, list[str]]:
    """(root kind: "sitemapindex" | "urlset" | other, the <loc> URLs) of a (gzipped) sitemap; ("text",
    its URLs) of a sitemap in text, which lists pages as a urlset does.

    Read as a stream (a whole tree of 20 MB took 500 MB), and a document type declaration is
    refused: sitemaps need none, and its entities would multiply a small file a hundredfold."""
    if body[:2] == b"\x1f\x8b":
        body = gunzip(body, limit)
    if not _XML_START.match(body):
        return "text", _text_sitemap_urls(body)
    parser = expat.ParserCreate(namespace_separator="}")
    root: list[str] = []
    locs: list[str] = []
    text: list[str] | None = None  # the characters of a <loc> two levels under the root
    depth = 0

    def start(name: str, _attributes) -> None:
        nonlocal depth, text
        depth += 1
        local = name.rsplit("}", 1)[-1]
        if depth == 1:
            root.append(local)
        elif depth == 3 and local == "loc":
            text = []

    def end(_name: str) -> None:
        nonlocal depth, text
        if depth == 3 and text is not None:
            if loc := "".join(text).strip():
                locs.append(loc)
            text = None
        depth -= 1

    def characters(data: str) -> None:
        if text is not None:
            text.append(data)

    def declares_a_dtd(*_args) -> None:
        raise SitemapError("a sitemap may not declare a document type or entities")

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, characters
    parser.StartDoctypeDeclHandler = parser.EntityDeclHandler = declares_a_dtd
    try:
        for piece in _in_utf8(body):
            parser.Parse(piece, False)
        parser.Parse(b"", True)
    except (expat.ExpatError, ValueError, LookupError) as error:  # also an encoding expat cannot read, or bytes not in it
        raise SitemapError(f"not well-formed XML: {error}") from None
    return root[0], locs


def looks_not_found(page, redirected: bool) -> bool:
    """A 200 page without a product that says "not found", or that a redirect led elsewhere: not to
    a bot challenge, a cookie wall or a maintenance page (interstitial)."""
    wording = " ".join(filter(None, (page.title, page.h1)))
    if _NOT_FOUND.search(wording):
        return True
    title = page.title or ""
    return redirected and not (_CHALLENGE.search(wording) or _HOLDING_TITLE.search(title) or _COOKIE_WALL.search(title)
                               or interstitial(page.page_url))


def interstitial(url: str) -> bool:
    """Whether the address is a bot challenge's, a cookie wall's or a maintenance page's, by its host and path."""
    parts = urlsplit(url)
    return bool(_INTERSTITIAL_PATH.search(parts.path) or _INTERSTITIAL_HOST.search(parts.hostname or ""))


class Crawl:
    """One pass over one source. ``stats`` counts pages fetched, robots skips and errors by kind."""

    def __init__(
        self,
        source: ShopSource,
        fetcher: Fetcher,
        known: Mapping[str, CachedPage] | None = None,
        limit: int | None = None,
        round_started: datetime | None = None,
        deadline: float | None = None,
        fetch_deadline: float | None = None,
        discovery_log: DiscoveryLog | None = None,
        taken_off: Callable[[], bool] | None = None,
    ) -> None:
        self.source = source
        self.fetcher = fetcher
        self.known = known or {}
        self.limit = limit
        self.round_started = round_started  # pages checked since then are not visited again
        self.deadline = deadline  # time.monotonic() past which no page is visited
        # Whether the source was taken off since the crawl began (`shops remove`), asked between
        # documents and between pages: then nothing more of it is visited.
        self.taken_off = taken_off
        # Past which nothing is fetched, nor does a retry wait past it: the page in hand at
        # `deadline` may still fetch its pictures until `fetch_deadline` (by default the same).
        fetcher.deadline = deadline if fetch_deadline is None else fetch_deadline
        # Whether the crawl saw less than all the source's pages: `limit` cut discovery, time ran
        # out, or the shop could not be read.
        self.cut_short = False
        # Whether the shop was not reached: discovery found nothing, and no list of its pages (a
        # sitemap of pages, a listing page) could be read; or the first feed page read failed. A
        # shop that answers with no products (a sitemap 404, then a home page without any) was.
        self.discovery_failed = False
        # Whether discovery read all it found to read (else the pages it found are part of the round's).
        self.discovery_complete = False
        # Whether this pass's discovery has nothing left it can read now (complete, or what is left waits for the next pass).
        self.discovery_exhausted = False
        # Whether a document was left unread because the shop could not be asked now (then the shop was not found unreachable).
        self.discovery_deferred = False
        self.discovery_log = discovery_log  # None: discovery starts afresh, and nothing of it is kept
        self.discovery = Discovery()
        # A Shopify feed read to its end (its first empty page) in this round: its pages' URLs. A
        # product no page of the round listed has left the shop.
        self.feed_pages: list[str] | None = None
        # Whether some of those pages were read at an earlier pass of the round: a product that a
        # deletion moved onto one of them since was listed by no page this round, though still sold.
        self.feed_read_in_parts = False
        self.stats: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._product_pattern = re.compile(source.product_pattern)
        self.total = 0  # pages to visit, known once discovery is done
        self.beyond_limit = 0  # pages found due that `limit` leaves to a later pass
        self._found_due = 0  # pages discovery found that are due (_due)

    # -- bookkeeping --------------------------------------------------------------------------

    def _fetch(self, url: str, **kwargs) -> FetchResult | str:
        """A discovery document (sitemap, listing page); when it cannot be had, the outcome to
        record (counted): "missing" where the shop says there is none (404, 410, its robots.txt),
        "failed" where it may answer next time, "deferred" where it was not asked (the host's
        Retry-After gate closed, the run's time up)."""
        try:
            result = self.fetcher.get(url, **kwargs)
        except RobotsDisallowed as error:
            self.stats["skipped_by_robots"] += 1
            if error.written:
                return "missing"
            self.errors["robots-unreadable"] += 1  # robots.txt could not be read: the shop was not reached
            return "failed"
        except FetchError as error:
            log.warning("%s: %s", url, error)
            self.errors[error.kind] += 1
            return "failed" if error.asked else "deferred"
        self.stats["pages_fetched"] += 1
        if result.status != 200:
            self.errors[f"http-{result.status}"] += 1
            return "missing" if result.status in (404, 410) else "failed"
        return result

    def _full(self) -> bool:
        """Whether discovery has `limit` pages to visit. Pages visited this round do not count, so
        that a limited run goes on with the pages after them instead of finding those again."""
        return self.limit is not None and self._found_due >= self.limit

    def _due(self, url: str) -> bool:
        """Not visited since the round started. A visit at the round's start is due: MySQL keeps
        whole seconds, so one in the round's first second may compare equal to its start, and
        visiting that page once more costs less than skipping it."""
        page = self.known.get(url)
        return self.round_started is None or not (page and page.checked_at and page.checked_at > self.round_started)

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def stopped(self) -> bool:
        """Whether to visit nothing more: out of time, or the source taken off."""
        return self.out_of_time() or (self.taken_off is not None and self.taken_off())

    def _in_visit_order(self, urls: list[str]) -> list[str]:
        """Least recently checked first; without those checked since the round started."""
        urls = [url for url in urls if len(url) <= MAX_URL_LENGTH]
        checked = {url: page.checked_at for url in urls if (page := self.known.get(url)) and page.checked_at}
        if self.round_started is not None:
            urls = [url for url in urls if self._due(url)]
        return sorted(urls, key=lambda url: (url in checked, checked.get(url) or datetime.min))

    # -- discovery ----------------------------------------------------------------------------

    def sitemap_urls(self) -> list[str]:
        """The pages the source's sitemaps name (at most `limit`); nothing is kept."""
        return self._discover(Discovery(self._sitemap_roots()))[: self.limit]

    def listing_urls(self) -> list[str]:
        """The product pages the source's listing pages link to (at most `limit`); nothing is kept."""
        return self._discover(Discovery(self._listing_starts()))[: self.limit]

    def product_page_urls(self) -> list[str]:
        """The pages this round's discovery found, read on from where the discovery log left it
        (``discovery_complete`` says whether it read everything)."""
        documents, pages = self.discovery_log.load() if self.discovery_log else ([], [])
        if not documents:
            documents = self._sitemap_roots() if self.source.strategy in ("sitemap", "auto") else self._listing_starts()
            self._log(None, documents, [])
        return self._discover(Discovery(documents, pages))

    def _sitemap_roots(self) -> list[DiscoveryDocument]:
        try:
            roots = self.fetcher.sitemaps(self.source.base_url)
        except FetchError as error:
            self.errors[error.kind] += 1
            return []
        return [DiscoveryDocument(url, "sitemap") for url in roots or [urljoin(self.source.base_url, "/sitemap.xml")]]

    def _listing_starts(self) -> list[DiscoveryDocument]:
        starts = [urljoin(self.source.base_url, url) for url in self.source.listing_urls] or [self.source.base_url]
        return [DiscoveryDocument(url, "listing") for url in dict.fromkeys(starts)]

    def _log(self, read: DiscoveryDocument | None, documents: Sequence[DiscoveryDocument], pages: Sequence[str]) -> None:
        if self.discovery_log is not None and (read or documents or pages):
            self.discovery_log.record(read, documents, pages)

    def _discover(self, discovery: Discovery) -> list[str]:
        """Read the discovery's documents in turn until none is left (``discovery_complete``),
        `limit` pages are due or time runs out; each read document is logged with what it named."""
        self.discovery = discovery
        self._found_due = sum(map(self._due, discovery.pages))
        while not self._full() and not self.stopped():
            if not discovery.pending:
                if self.source.strategy == "auto" and not discovery.pages and not discovery.listings:
                    # The sitemaps named no page: the listing pages may.
                    if starts := discovery.add(self._listing_starts(), [], self.source.max_pages)[0]:
                        self._log(None, starts, [])
                        continue
                self.discovery_exhausted = True
                # Complete unless a document is left for the next pass: one not asked for (deferred),
                # or one that failed for the first time.
                self.discovery_complete = all(document.outcome not in (None, "failed") for document in discovery.documents.values())
                break
            document = discovery.pending.popleft()
            read = self._read_sitemap if document.kind == "sitemap" else self._read_listing
            outcome, documents, pages = read(document)
            if outcome == "deferred":
                self.discovery_deferred = True
                continue  # not read: it stays as it was, to read at the next pass
            # Failed again: given up until the next round.
            document.outcome = "missing" if outcome == document.outcome == "failed" else outcome
            documents, pages = discovery.add(documents, pages, self.source.max_pages)
            self._found_due += sum(map(self._due, pages))
            self._log(document, documents, pages)
        return list(discovery.pages)

    def _read_sitemap(self, document: DiscoveryDocument) -> tuple[str, list[DiscoveryDocument], list[str]]:
        max_bytes = max(SITEMAP_MAX_BYTES, self.fetcher.policy.max_bytes)
        result = self._fetch(document.url, max_bytes=max_bytes)
        if isinstance(result, str):
            return result, [], []
        try:
            kind, locs = parse_sitemap(result.body, max_bytes)
        except (SitemapError, FetchError, zlib.error) as error:
            log.warning("sitemap %s: %s", document.url, error)
            self.errors["bad-sitemap"] += 1
            return "failed", [], []
        sitemaps, pages = [], []
        for loc in locs:
            url = absolute_url(document.url, loc)  # percent-encoded: a sitemap may list "/p/größe" raw
            if url is None:
                self.errors["bad-url"] += 1
            elif kind == "sitemapindex":
                if document.depth < SITEMAP_MAX_DEPTH:
                    sitemaps.append(DiscoveryDocument(url, "sitemap", document.depth + 1))
            elif _host(url) == self.source.host:
                pages.append(url)
        # A list of pages was read (an index lists sitemaps).
        return "indexed" if kind == "sitemapindex" else "listed", sitemaps, pages

    def _read_listing(self, document: DiscoveryDocument) -> tuple[str, list[DiscoveryDocument], list[str]]:
        result = self._fetch(document.url, accept=HTML_TYPES)
        if isinstance(result, str):
            return result, [], []
        page = parse_page(result.text(), result.url)
        listings, pages = [], []
        for link in dict.fromkeys(page.links + page.next_links):  # a rel=next <link> in the head is no <a>
            if _host(link) != self.source.host:
                continue
            if self._product_pattern.search(urlsplit(link).path):
                pages.append(link)
            elif link in page.next_links or _PAGINATION.search(link):
                listings.append(DiscoveryDocument(link, "listing"))
        return "listed", listings, pages

    # -- pages ----------------------------------------------------------------------------------

    def visit(self, url: str) -> PageOutcome:
        """Fetch (conditionally) and parse one product page, or one page of a Shopify feed (counted in
        `stats` and `errors`, as pages() counts its pages)."""
        return self._count(self._shopify_page(url) if self.source.strategy == "shopify" else self._product_page(url))

    def _fetch_if_changed(self, url: str, accept: tuple[str, ...]) -> tuple[FetchResult, CachedPage] | PageOutcome:
        """The page and its new cache entry when it changed; else the outcome that says why not."""
        cached = self.known.get(url) or CachedPage()
        try:
            result = self.fetcher.get(url, etag=cached.etag, last_modified=cached.last_modified, accept=accept)
        except FetchError as error:
            if error.redirected and error.kind in ("robots", "host-not-allowed"):
                if interstitial(error.refused_url or ""):
                    # Sent to a bot challenge, a cookie wall or a maintenance page (see looks_not_found).
                    return PageOutcome(url, "error", reason="no-product")
                # Sent where the shop keeps no products (its search, another site): a redirect away.
                return PageOutcome(url, "gone", reason="soft-404")
            if isinstance(error, RobotsDisallowed):
                # Shut by the shop's robots.txt, or kept out while it cannot be read (which kills nothing).
                return PageOutcome(url, "robots", reason="robots" if error.written else "robots-unreadable")
            return PageOutcome(url, "error", reason=error.kind)
        if result.not_modified:
            return PageOutcome(url, "unchanged", status=304)
        if result.status in (404, 410):
            return PageOutcome(url, "gone", status=result.status, reason=f"http-{result.status}")
        if result.status != 200:
            return PageOutcome(url, "error", status=result.status, reason=f"http-{result.status}")
        digest = hashlib.sha256(result.body).hexdigest()
        if digest == cached.content_sha256:
            return PageOutcome(url, "unchanged", status=200)
        return result, CachedPage(result.etag, result.last_modified, digest)

    def _product_page(self, url: str) -> PageOutcome:
        fetched = self._fetch_if_changed(url, HTML_TYPES)
        if isinstance(fetched, PageOutcome):
            return fetched
        result, cache = fetched
        page = parse_page(result.text(), result.url)
        products = products_of_page(page)
        # Redirected: answered from another address than the one asked for, however it is spelt
        # (the fetcher percent-encodes "?v=a|b" before it asks).
        redirected = result.url != percent_encoded(url)
        own = [address for address in (percent_encoded(url), result.url, page.canonical) if address]
        # Its own: the same page however spelt, a size's query added either way ("?variant=7").
        if products and redirected and not any(same_page(product.url, address) or same_page(address, product.url)
                                               for product in products for address in own):
            # Sent on to a page of other products (a removed product's address sent to its
            # collection): it is gone, and they are not this address's to file. A product that
            # moved is its new address's own product.
            return PageOutcome(url, "gone", status=200, reason="soft-404")
        if products:
            return PageOutcome(url, "changed", products, status=200, cache=cache)
        if looks_not_found(page, redirected=redirected):
            return PageOutcome(url, "gone", status=200, reason="soft-404")
        return PageOutcome(url, "error", status=200, reason="no-product")

    def _shopify_page(self, url: str) -> PageOutcome:
        fetched = self._fetch_if_changed(url, ("application/json",))
        if isinstance(fetched, PageOutcome):
            # A feed page that 404s, or that robots.txt shuts, says nothing about the products on
            # it: an error, not "gone".
            if fetched.state in ("gone", "robots"):
                return PageOutcome(url, "error", status=fetched.status, reason=fetched.reason)
            return fetched
        result, cache = fetched
        try:
            data = json.loads(result.body)
        except ValueError:
            return PageOutcome(url, "error", status=200, reason="bad-feed")
        if not isinstance(data, dict) or not isinstance(data.get("products"), list):
            return PageOutcome(url, "error", status=200, reason="bad-feed")  # not a feed: it says nothing of the products
        products = shopify_products(data, self.source.base_url, self.source.currency)
        # The end is a page listing nothing, not one whose items all lack a picture or a title.
        return PageOutcome(url, "changed", products, status=200, cache=cache, feed_end=not data["products"])

    def product_page(self, url: str) -> PageOutcome:
        """Fetch and parse one product page, whatever the source's strategy (a Shopify product's own page)."""
        return self._product_page(url)

    def _count(self, outcome: PageOutcome) -> PageOutcome:
        if outcome.state == "robots":
            self.stats["skipped_by_robots"] += 1
        elif outcome.status is not None:
            self.stats["pages_fetched"] += 1
        if outcome.state == "error":
            self.errors[outcome.reason or "error"] += 1
        return outcome

    def pages(self) -> Iterator[PageOutcome]:
        """Every product page (or feed page) of the source, fetched ``concurrency`` at a time."""
        if self.source.strategy == "shopify":
            yield from self._shopify_pages()
            return
        found = self.product_page_urls()
        # Failed documents are read again at the next pass, so this pass's errors say whether it reached the
        # shop, unless a document was not even asked for (deferred): what was read and found is kept for it.
        if self.discovery_exhausted and not found and self.errors and not self.discovery.listed() and not self.discovery_deferred:
            self.discovery_failed = self.cut_short = True
            if self.discovery_log is not None:
                self.discovery_log.forget()  # the next pass tries again from the start
            return
        # Cut short: discovery has more to read (time, or `limit`), or `limit` leaves pages out.
        self.cut_short |= not self.discovery_complete
        urls = self._in_visit_order(found)
        if self.limit is not None and len(urls) > self.limit:
            urls, self.beyond_limit, self.cut_short = urls[: self.limit], len(urls) - self.limit, True
        self.total = len(urls)
        if self.stopped():
            self.cut_short = True
            return  # discovery took the time (and may be unfinished): no page fetched only to be dropped
        # Fetched at most one page ahead of the pages in flight: what a consumer that stops early
        # (out of time) leaves is not fetched, rather than fetched, dropped and fetched again.
        ahead = self.fetcher.policy.concurrency + 1
        queued = iter(urls)
        with ThreadPoolExecutor(max_workers=self.fetcher.policy.concurrency, thread_name_prefix="scrape") as pool:
            fetching = deque(pool.submit(self._product_page, url) for url in itertools.islice(queued, ahead))
            while fetching:
                outcome = fetching.popleft().result()
                if not self.stopped():
                    fetching.extend(pool.submit(self._product_page, url) for url in itertools.islice(queued, 1))
                elif next(queued, None) is not None:
                    self.cut_short = True  # pages found and left unfetched
                yield self._count(outcome)

    def feed_page_url(self, number: int) -> str:
        return urljoin(self.source.base_url, f"/products.json?limit={SHOPIFY_PAGE_SIZE}&page={number}")

    @staticmethod
    def is_feed_page(url: str) -> bool:
        """Whether the URL is a page of a Shopify feed (what feed_page_url makes)."""
        return urlsplit(url).path.endswith("/products.json")

    def _shopify_pages(self) -> Iterator[PageOutcome]:
        products, previous, read = 0, None, 0
        for number in range(1, self.source.max_pages + 1):
            url = self.feed_page_url(number)
            self.total = number
            if self.stopped():
                self.cut_short = True
                return
            cached = self.known.get(url)
            if self.round_started is not None and cached and cached.checked_at and cached.checked_at > self.round_started:
                previous, self.feed_read_in_parts = None, True
                continue  # read this round: the round goes on with the pages after it
            outcome = self._count(self._shopify_page(url))
            if outcome.state == "changed" and outcome.feed_end:
                self.feed_pages = [self.feed_page_url(n) for n in range(1, number)]  # past the last page
                return
            listed = [product.url for product in outcome.products]
            if outcome.state == "changed" and listed and listed == previous:
                log.warning("%s repeats the page before it (the feed ignores ?page): stopping", url)
                self.feed_pages = [self.feed_page_url(n) for n in range(1, number)]
                return
            previous = listed if outcome.state == "changed" else None
            if outcome.state in ("error", "robots"):
                # The feed was not read to its end: the round goes on at the next pass.
                self.discovery_failed, self.cut_short = read == 0, True
            yield outcome
            read += 1
            # An unchanged page is not parsed again: it counts as the full page it was.
            products += len(outcome.products) if outcome.state == "changed" else SHOPIFY_PAGE_SIZE
            if outcome.state in ("error", "robots"):
                return
            if self.limit is not None and products >= self.limit:
                self.cut_short = True  # the feed's other pages are left for the next pass
                return


def scrape_shop(shop_url: str | ShopSource, fetcher: Fetcher, limit: int | None = None) -> Iterator[ScrapedProduct]:
    """Discover a shop's pages, fetch each and yield its products (unique by product URL).

    ``limit`` bounds the number of pages discovered and fetched, not the products yielded.
    """
    source = shop_url if isinstance(shop_url, ShopSource) else ShopSource(base_url=shop_url, strategy="sitemap")
    seen: set[str] = set()
    for outcome in Crawl(source, fetcher, limit=limit).pages():
        if outcome.state != "changed":
            log.warning("skipping %s: %s", outcome.url, outcome.reason or outcome.state)
        for product in outcome.products:
            if product.url not in seen:
                seen.add(product.url)
                yield product


def discover_product_urls(shop_url: str, fetcher: Fetcher, limit: int | None = None) -> list[str]:
    """Product page URLs of a shop from its sitemaps (robots.txt Sitemap lines, else /sitemap.xml)."""
    return Crawl(ShopSource(base_url=shop_url, strategy="sitemap"), fetcher, limit=limit).sitemap_urls()


__all__ = ["CachedPage", "Crawl", "Discovery", "DiscoveryDocument", "DiscoveryLog", "PageOutcome", "discover_product_urls", "parse_sitemap", "scrape_shop"]
