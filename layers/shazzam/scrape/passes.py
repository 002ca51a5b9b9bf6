"""The scraper's two passes against the catalogue and the object store (pipeline.scrape and
pipeline.revalidate call these).

A scrape pass visits each due source: unchanged pages (304, or the same bytes) only refresh
their products' last-seen time; changed pages are parsed and each product is classified new,
changed or unchanged by its fingerprint. A pass may stop at a time budget; the source's round of
pages then goes on at the next pass (see scrape_pass). Only new or changed products fetch images, and an
image is stored (put under ``incoming/``) once: the same URL, the same bytes or a near-identical
picture (dHash) found again is linked to the product instead.

A revalidation pass re-checks every live product, and every dead one that may come back: a
404/410, a soft 404 or an out-of-stock offer tombstones it (search skips it at once); a product
that is back in stock, or whose page is back, is revived and its images ingested again. Products
of a Shopify feed are left to the scrape: a feed page that stops listing one only unfiles it (a
newer product may have pushed it onto the next page), and a round that reads the whole feed
removes those it found on no page. Revalidation checks an unfiled one's own page (a feed that
fails before its end never has a whole round).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable
from urllib.parse import urlsplit

import sqlalchemy as sa

from shazzam import catalogue, ids
from shazzam.images import ImageError, check_catalogue_size, image_format
from shazzam.scrape.crawl import CachedPage, Crawl, DiscoveryDocument, PageOutcome
from shazzam.scrape.dedup import PictureHashes, colour_grid, dhash
from shazzam.scrape.extract import MAX_URL_LENGTH, ScrapedProduct
from shazzam.scrape.fetch import FetchError, Fetcher
from shazzam.scrape.sources import ShopSource, canonical_shop_url

log = logging.getLogger(__name__)

# How often a pass asks the catalogue whether the shop it crawls was taken off meanwhile (SourcePass.taken_off).
TAKEN_OFF_CHECK_S = 1.0
# A scrape's budget visits pages; the page in hand at its end may fetch its pictures for this share
# of the budget more (the scrape function's 60 % and 30 %: see shazzam.pipeline.SCRAPE_BUDGET_S).
PAGE_IN_HAND_SHARE = 0.5
COUNTERS = (
    "shops",
    "pages_fetched",
    "skipped_by_robots",
    "shops_unfinished",
    "shops_failed",
    "shops_skipped",
    "shops_left",
    "pages_left",
    "products",
    "products_new",
    "products_changed",
    "products_unchanged",
    "products_dead",
    "products_revived",
    "images_uploaded",
    "images_unchanged",
    "images_duplicate",
    "images_failed",
    "errors",
)


@dataclass
class Summary:
    """Counts of one pass; errors by kind are flat keys ``errors.<kind>`` (reports add up)."""

    counts: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def as_dict(self) -> dict:
        report = {name: self.counts[name] for name in COUNTERS}
        report["errors"] = sum(self.errors.values())
        report.update({f"errors.{kind}": n for kind, n in sorted(self.errors.items())})
        return report


def _cached(rows: dict[str, dict]) -> dict[str, CachedPage]:
    return {url: CachedPage(row["etag"], row["last_modified"], row["content_sha256"], row["checked_at"]) for url, row in rows.items()}


class ShopDiscoveryLog:
    """A shop's round of discovery, kept in the catalogue between passes (crawl.DiscoveryLog)."""

    def __init__(self, db, shop_id: str, source: ShopSource) -> None:
        self.db, self.shop_id, self.key = db, shop_id, source.discovery_key()

    def load(self) -> tuple[list[DiscoveryDocument], list[str]]:
        rows = catalogue.shop_discovery(self.db, self.shop_id, self.key)
        documents = [DiscoveryDocument(row["url"], row["kind"], row["depth"], row["outcome"]) for row in rows if row["kind"] != "page"]
        return documents, [row["url"] for row in rows if row["kind"] == "page"]

    def record(self, read: DiscoveryDocument | None, documents: list[DiscoveryDocument], pages: list[str]) -> None:
        found = [{"url": document.url, "kind": document.kind, "depth": document.depth} for document in documents]
        found += [{"url": url, "kind": "page"} for url in pages]
        catalogue.record_discovery(self.db, self.shop_id, self.key, read and {"url": read.url, "kind": read.kind, "outcome": read.outcome}, found)

    def forget(self) -> None:
        catalogue.forget_discovery(self.db, self.shop_id)


class SourcePass:
    """One scrape (or revalidation) of one source, writing to the catalogue and the store."""

    def __init__(self, app, shop_id: str, source: ShopSource, fetcher: Fetcher, summary: Summary,
                 hashes: PictureHashes, in_round: bool = False) -> None:
        self.app, self.db, self.shop_id, self.source = app, app.db, shop_id, source
        self.fetcher = fetcher
        self.summary = summary
        self.hashes = hashes  # of every stored image, shared by the sources
        # Whether its visits are the shop's scrape round's (scrape_pass's crawl of it), which the
        # round's next pass leaves out. A revalidation's share the pages' validators only: they are
        # no round's, or the scrape after it would read none of the pages it checked.
        self.in_round = in_round
        self.cache = catalogue.page_cache(self.db, shop_id)
        self.cached_pages = _cached(self.cache)
        self.known = catalogue.products_of_shop(self.db, shop_id)  # by product URL
        self.by_page: dict[str, list[dict]] = {}
        for row in self.known.values():
            if row["page_url"] and source.strategy != "shopify" and Crawl.is_feed_page(row["page_url"]):
                row["page_url"] = None  # filed by a feed before the source left Shopify: its own page says
                catalogue.file_product(self.db, row["id"], None)
            self.by_page.setdefault(row["page_url"] or row["url"], []).append(row)
        self.seen: set[str] = set()
        # Live products (of any shop) left without a searchable picture by a product this pass
        # killed, or found no longer showing it: the picture died, and their copies of it went back
        # to never fetched (read_again).
        self.left_without_picture: list[dict] = []
        self._taken_off, self._active_asked_at = False, float("-inf")

    def taken_off(self, fresh: bool = False) -> bool:
        """Whether the shop was taken off (`shops remove`) since the pass read it as active: then
        its crawl stops, as take_shop_off means it to. Asked of the catalogue at most once every
        TAKEN_OFF_CHECK_S (it is asked between pages), or now when `fresh` (before its round is
        marked finished); once taken off, it stays so for the pass."""
        now = time.monotonic()
        if not self._taken_off and (fresh or now >= self._active_asked_at + TAKEN_OFF_CHECK_S):
            self._active_asked_at = now
            self._taken_off = not catalogue.shop_is_active(self.db, self.shop_id)
        return self._taken_off

    def crawl(self, limit: int | None, conditional: bool = True, round_started: datetime | None = None, deadline: float | None = None,
              fetch_deadline: float | None = None, keep_discovery: bool = False) -> Crawl:
        """A crawl of the source; ``conditional`` False fetches every page in full; ``keep_discovery``
        goes on with the round's discovery kept in the catalogue, and keeps what it reads there (see
        Crawl for the rest)."""
        return Crawl(self.source, self.fetcher, self.cached_pages if conditional else {}, limit=limit, round_started=round_started,
                     deadline=deadline, fetch_deadline=fetch_deadline, taken_off=self.taken_off,
                     discovery_log=ShopDiscoveryLog(self.db, self.shop_id, self.source) if keep_discovery else None)

    def products_on_page(self, page_url: str) -> list[dict]:
        return self.by_page.get(page_url, [])

    def remember(self, url: str, cache: CachedPage) -> None:
        catalogue.save_page_cache(self.db, self.shop_id, url, cache.etag, cache.last_modified, cache.content_sha256, checked=self.in_round)

    # -- pages ----------------------------------------------------------------------------------

    def page(self, outcome: PageOutcome) -> None:
        counts = self.summary.counts
        if outcome.state == "unchanged":
            rows = self.products_on_page(outcome.url)
            catalogue.touch_products(self.db, [row["id"] for row in rows])
            counts["products"] += len(rows)
            counts["products_unchanged"] += len(rows)
            retried = self.retry_failed_images([row["id"] for row in rows if not row["is_dead"]])
            counts["images_unchanged"] += catalogue.image_count(self.db, [row["id"] for row in rows]) - retried
            for row in rows:
                # The page is back as it was when the product lived. Not one it stopped listing
                # ("removed": the page changed then, and its validators are those of that change).
                if row["is_dead"] and row["dead_reason"] in catalogue.PAGE_GONE:
                    self.revive(row["id"])
                    row.update(is_dead=False, dead_reason=None)
        elif outcome.removes_its_products:
            for row in self.products_on_page(outcome.url):
                if not row["is_dead"]:
                    self.kill(row["id"], outcome.reason or "gone")
                    row.update(is_dead=True, dead_reason=outcome.reason)
                    counts["products_dead"] += 1
        elif outcome.state == "changed":
            listed_before = list(self.products_on_page(outcome.url))
            for product in outcome.products:
                if product.url not in self.seen:
                    self.seen.add(product.url)
                    try:
                        self.product(product, outcome.url)
                    except sa.exc.DataError as exc:  # a value the database refuses: the others go on
                        log.error("%s on %s cannot be stored: %s", product.url, outcome.url, exc)
                        self.summary.error("unstorable")
                elif self.source.strategy == "shopify" and product.url in self.known:
                    # Listed on two feed pages: a product added while the feed was read pushed it
                    # from the end of one page to the top of the next. It is filed under the later
                    # one, which lists it once the feed is still again (the earlier one changes).
                    self.refile(self.known[product.url], outcome.url)
            still_listed = {product.url for product in outcome.products}
            unlisted = [row for row in listed_before if row["url"] not in still_listed]
            if self.source.strategy == "shopify":
                # A product a feed page stopped listing may only have been pushed onto the next page
                # by one added before it: it is unfiled, and removed at the end of a round that read
                # the whole feed without finding it (remove_unlisted).
                for row in unlisted:
                    self.refile(row, None)
            else:  # a product page no longer shows it: removed from the shop
                for row in unlisted:
                    if not row["is_dead"]:
                        self.kill(row["id"], "removed")
                        row.update(is_dead=True, dead_reason="removed")
                        counts["products_dead"] += 1
            self.remember(outcome.url, outcome.cache)
        if outcome.state != "changed" and self.in_round:
            catalogue.mark_page_checked(self.db, self.shop_id, outcome.url)

    def refile(self, row: dict, page_url: str | None) -> None:
        """File a product under another (feed) page, or under none."""
        self.by_page[row["page_url"] or row["url"]].remove(row)
        catalogue.file_product(self.db, row["id"], page_url)
        row["page_url"] = page_url
        self.by_page.setdefault(page_url or row["url"], []).append(row)

    def remove_unlisted(self, feed_pages: list[str], read_in_parts: bool = False) -> None:
        """At the end of a round that read the whole feed: a live product filed under none of its
        pages (unfiled by the page that stopped listing it, and listed by no other since) has been
        removed from the shop. Where the round read the feed over several passes, a deletion in
        between may have moved it onto a page read before: it is unfiled instead, and revalidation
        reads its own page."""
        pages = set(feed_pages)
        for row in list(self.known.values()):
            if row["is_dead"] or row["page_url"] in pages:
                continue
            if read_in_parts:
                if row["page_url"] is not None:
                    self.refile(row, None)
                continue
            self.kill(row["id"], "removed")
            row.update(is_dead=True, dead_reason="removed")
            self.summary.counts["products_dead"] += 1

    def kill(self, product_id: str, reason: str) -> None:
        """Tombstone a product (catalogue.mark_product_dead), keeping the products it leaves without a searchable picture."""
        self.left_without_picture += catalogue.mark_product_dead(self.db, product_id, reason)

    def revive(self, product_id: str) -> None:
        """Bring a dead product back and ingest again the images that died with it."""
        self.summary.counts["products_revived"] += 1
        for position, image_id in enumerate(catalogue.revive_product(self.db, product_id)):
            row = catalogue.get_image(self.db, image_id)
            self.image(product_id, row["src_link"], position, refetch=True)

    def product(self, product: ScrapedProduct, page_url: str) -> None:
        counts = self.summary.counts
        if len(product.url) > MAX_URL_LENGTH:
            log.warning("a product URL of %d characters on %s: not taken", len(product.url), page_url)
            self.summary.error("url-too-long")
            return
        prior = self.known.get(product.url)
        if prior is None and catalogue.product_shop(self.db, ids.product_id(product.url)) not in (None, self.shop_id):
            # Two shops list one URL (shops sharing a host): the product stays the first one's.
            log.warning("%s on %s is a product of another shop: not taken", product.url, page_url)
            self.summary.error("product-of-another-shop")
            return
        fingerprint = product.fingerprint()
        unchanged = prior is not None and prior["fingerprint"] == fingerprint
        # Its pictures to see to: its fingerprint is stored after them (settle_product), so that a run
        # stopped between the two finds it changed next time, not unchanged with a picture never fetched.
        settles = product.in_stock and (not unchanged or bool(prior and prior["is_dead"]))  # revived: its pictures again
        product_id = catalogue.save_product(self.db, self.shop_id, product, page_url=page_url, settled=not settles)
        row = {"id": product_id, "url": product.url, "page_url": page_url, "fingerprint": fingerprint, "category": product.category,
               "is_dead": not product.in_stock, "dead_reason": None if product.in_stock else "out-of-stock"}
        if prior is not None:
            self.by_page[prior["page_url"] or prior["url"]].remove(prior)
        self.by_page.setdefault(page_url, []).append(row)
        self.known[product.url] = row
        counts["products"] += 1
        counts["products_unchanged" if unchanged else "products_changed" if prior else "products_new"] += 1
        if not product.in_stock:
            if not (prior and prior["is_dead"]):
                counts["products_dead"] += 1
            self.kill(product_id, "out-of-stock")
            return
        if prior is not None and prior["is_dead"]:
            self.revive(product_id)
        elif unchanged:
            counts["images_unchanged"] += len(product.image_urls) - self.retry_failed_images([product_id])
            return
        # Re-filed by the shop: its pictures go through detect and embed again, which crop the
        # garment of the new category and move its vector to that shard.
        refiled = prior is not None and prior.get("category") != product.category
        # Stored pictures of it no longer on their way to the right shard (images_to_fetch_again),
        # fetched in full too: a page that changes at every visit would never retry them.
        lost = {row["src_link"]: row for row in catalogue.images_to_fetch_again(self.db, [product_id]) if row["stored"]} if prior else {}
        for position, url in enumerate(product.image_urls):
            self.image(product_id, url, position, refetch=refiled or url in lost)
        for url in lost.keys() - set(product.image_urls):  # an original the page shows through a copy of it
            self.image(product_id, url, lost[url]["position"], refetch=True)
        shown = set()
        for url in product.image_urls:  # as linked: a duplicate's original stands for it
            row = catalogue.get_image(self.db, ids.image_id(url))
            shown.add(row["duplicate_of"] if row and row["duplicate_of"] else ids.image_id(url))
        if prior is not None:
            dropped, left_without_picture = catalogue.drop_images_not_shown(self.db, product_id, shown)
            self.left_without_picture += left_without_picture
            if dropped:
                log.info("%s no longer shows %d image(s): dropped", product.url, len(dropped))
        if settles:
            catalogue.settle_product(self.db, product_id, fingerprint)

    # -- images ---------------------------------------------------------------------------------

    def retry_failed_images(self, product_ids: list[str]) -> int:
        """Fetch again the images of unchanged products whose download failed last time for a reason
        that passes (a network error, a timeout, a 5xx, a 429), or that a stopped run never
        fetched: a CDN's bad minute would otherwise leave them failed for as long as the page
        stays the same. Too large, not an image or a 404 waits for the page to change. So is a
        picture recorded as stored that detect has not seen for an hour (a run killed between
        recording it and putting it in incoming/)."""
        again = catalogue.images_to_fetch_again(self.db, product_ids)
        for row in again:
            self.image(row["product_id"], row["src_link"], row["position"], refetch=row["stored"])
        return len(again)

    def image(self, product_id: str, url: str, position: int, refetch: bool = False, re_embedding: bool = False) -> None:
        """Fetch an image of a new or changed product; store it unless it is one we have.
        `re_embedding`: fetched again for the re-embed pass, which tries again at its next run."""
        counts = self.summary.counts
        image_id = ids.image_id(url)
        row = catalogue.get_image(self.db, image_id)
        if row is None:
            catalogue.save_image(self.db, image_id, url, product_id)
        # A copy of another picture stands for it (the product links the original) while both
        # live and its bytes stay those of the original.
        copied = catalogue.get_image(self.db, row["duplicate_of"]) if row and row["duplicate_of"] else None
        shown = copied["id"] if copied else image_id
        # A dead picture (a page dropped it, or revalidate found it gone) that a page shows again,
        # or a copy of one, left the shards when it died: it is ingested again, not merely linked.
        refetch = refetch or bool(row and row["is_dead"]) or bool(copied and copied["is_dead"])
        had_bytes = bool(row and row["content_sha256"] and row["status"] != "failed")
        stored = had_bytes and not refetch
        # A failed fetch leaves a stored picture's row, for revalidate to judge; one fetched again to
        # be re-embedded too (it stays stale): marked failed, no run would fetch it again, and its
        # item would stay out of search. Fetched again for another reason, it is marked failed for
        # a scrape to retry (retry_failed_images).
        kept = stored or (re_embedding and had_bytes)
        cached = self.cache.get(url, {}) if stored else {}
        try:
            # Whatever its Content-Type: the bytes say whether it is a picture (image_format, below).
            # S3 labels what it was not told about binary/octet-stream, a server may label nothing,
            # and nginx without its types says text/plain.
            result = self.fetcher.get(url, etag=cached.get("etag"), last_modified=cached.get("last_modified"))
        except FetchError as error:
            return self._image_failed(image_id, product_id, position, error.kind, str(error), kept, shown)
        if result.not_modified:
            if not catalogue.link_image(self.db, product_id, shown, position) and not refetch:
                return self.image(product_id, url, position, refetch=True)  # it died meanwhile
            counts["images_unchanged"] += 1
            return
        if result.status != 200:
            return self._image_failed(image_id, product_id, position, f"http-{result.status}", f"HTTP {result.status}", kept, shown)
        if image_format(result.body) is None:
            return self._image_failed(image_id, product_id, position, "not-an-image", f"not an image ({result.content_type or 'no type'})",
                                      kept, shown)
        try:
            check_catalogue_size(result.body)  # said here, not by detect after the picture was stored for nothing
        except ImageError as error:
            return self._image_failed(image_id, product_id, position, "too-large", str(error), kept, shown)
        digest = hashlib.sha256(result.body).hexdigest()
        self.remember(url, CachedPage(result.etag, result.last_modified, digest))
        if stored and row["content_sha256"] == digest:
            if not row["colour_grid"] and not row["duplicate_of"]:  # stored before colour grids were kept
                catalogue.update_image(self.db, image_id, colour_grid=colour_grid(result.body))
            if not catalogue.link_image(self.db, product_id, shown, position):
                return self.image(product_id, url, position, refetch=True)  # it died meanwhile
            counts["images_unchanged"] += 1
            return
        phash, colours = dhash(result.body), colour_grid(result.body)
        original = catalogue.image_with_content(self.db, digest, other_than=image_id) or self._near_duplicate(image_id, phash, colours)
        if original is not None:
            catalogue.update_image(self.db, image_id, content_sha256=digest, phash=phash, colour_grid=colours, duplicate_of=original,
                                   status="duplicate", error=None)
            if not catalogue.link_image(self.db, product_id, original, position) and not refetch:
                return self.image(product_id, url, position, refetch=True)  # the original died meanwhile
            counts["images_duplicate"] += 1
            return
        # Stored (again): a dead one brought back belongs to the product that shows it now, not to
        # the one whose death it came from; one a live product owns stays that one's (fetched
        # again for another product that shows it, re-filed by its shop).
        owner = catalogue.live_owner(self.db, image_id) or product_id
        catalogue.update_image(self.db, image_id, content_sha256=digest, phash=phash, colour_grid=colours, duplicate_of=None, status="new",
                               error=None, is_dead=False, product_id=owner)
        catalogue.link_image(self.db, product_id, image_id, position)
        if phash:
            self.hashes.add(image_id, phash, colours)
        self.app.store.put(ids.incoming_key(image_id), result.body, content_type=result.content_type or "application/octet-stream")
        counts["images_uploaded"] += 1

    def _near_duplicate(self, image_id: str, phash: str | None, colours: str | None) -> str | None:
        """A stored image this one is a re-encoded or resized copy of: alike in grey levels (dHash)
        and in colour (the same shot of a red and a navy tee is two products' pictures). A picture
        stored before colour grids were kept is judged on its dHash alone, until fetched again."""
        if phash is None or colours is None:
            return None
        for other in list(self.hashes.near(phash, colours, other_than=image_id)):
            # The list is read once a run; a picture may have died since (its products did).
            row = catalogue.get_image(self.db, other)
            if row is not None and not row["is_dead"] and not row["duplicate_of"] and row["status"] != "failed":
                return other
            self.hashes.discard(other)
        return None

    def _image_failed(self, image_id: str, product_id: str, position: int, kind: str, message: str, stored: bool = False,
                      shown: str | None = None) -> None:
        """Record a failed fetch; an image stored before keeps its row and its link to what it shows
        (itself, or the original it copies): revalidate judges it."""
        if not stored:
            catalogue.update_image(self.db, image_id, status="failed", error=f"fetch failed ({kind}): {message}"[:1000])
        catalogue.link_image(self.db, product_id, (shown or image_id) if stored else image_id, position, if_live=False)
        self.summary.counts["images_failed"] += 1
        self.summary.error(kind)


def _canonical_or_none(text: str) -> str | None:
    """The canonical shop address `text` spells, or None where it is no http(s) address (a name)."""
    try:
        return canonical_shop_url(text) if urlsplit(text).scheme in ("http", "https") else None
    except ValueError:
        return None


def _sources(app, shop_url: str | None, source_name: str | None, summary: Summary) -> list[tuple[dict, ShopSource]]:
    """The active shops asked for, with their sources; those no scrape could use are logged
    (_usable_source) and counted (``shops_skipped``), so that the pass does not read as a success."""
    shop_id = catalogue.active_shop_id(app.db, shop_url) if shop_url else None
    rows = [row for row in catalogue.active_shops(app.db) if (not shop_id or row["id"] == shop_id)]
    if source_name:
        address = _canonical_or_none(source_name)
        rows = [row for row in rows if source_name in (row["name"], row["base_url"]) or (address and address == _canonical_or_none(row["base_url"]))]
        if not rows:
            raise ValueError(f"no active shop is named or based at {source_name!r}")
    usable = [(row, source) for row in rows if (source := _usable_source(row)) is not None]
    summary.counts["shops_skipped"] += len(rows) - len(usable)
    return usable


def read_again(concerned: list[dict], source_pass: Callable[[str], SourcePass | None], read: set[str], until: float,
               deadline: float | None) -> Counter:
    """Read at once, in full, the pages of products left without a searchable picture (a picture
    of theirs died: catalogue._retire), each through its own shop's pass (`source_pass`, None for a
    shop not to crawl): each fetches what it shows, another address of the picture as a picture of
    its own. Those past `until`, or whose page is in `read` already, wait for their page's next visit.
    Returns the crawls' counts (pages_fetched, skipped_by_robots) and their errors by kind."""
    stats: Counter = Counter()
    for product in concerned:
        page_url = product["page_url"] or product["url"]
        if time.monotonic() >= until or page_url in read:
            continue
        read.add(page_url)
        visit = source_pass(product["shop_id"])
        if visit is None:
            continue
        if known := visit.known.get(product["url"]):
            known["fingerprint"] = None  # as retire_image forgot it: its pictures are fetched
        visit.seen.discard(product["url"])  # read earlier in this pass: it is read again all the same
        crawl = visit.crawl(None, conditional=False, deadline=deadline)
        visit.page(crawl.visit(page_url))
        stats.update(crawl.stats)
        visit.summary.errors.update(crawl.errors)
    return stats


def scrape_pass(
    app,
    shop_url: str | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    source_name: str | None = None,
    force: bool = False,
    budget_s: float | None = None,
) -> dict:
    """Scrape every due source (or the one named): see the module docstring.

    A source's round of pages ends when every page has been visited since it began (its last
    finished round, else when the shop was added); only then is the shop marked scraped. Within
    ``budget_s`` seconds the pass stops where it is: a source's unvisited pages (``pages_left``)
    and the due sources not reached (``shops_left``) are what the next passes take up, the sources
    a pass started on longest ago first. ``force`` starts a new round at once. A picture that dies
    with its product (killed, or showing it no more) leaves other shops' products that showed it
    through copies of their own without a searchable picture: their pages are read at once
    (read_again), the pass's budget allowing, whatever their shops' schedules; not in a run cut by
    ``limit`` (N pages per source), where they wait for their pages' next visit. A shop whose saved
    settings no scrape could use is skipped at every pass, due or not (its schedule is one of
    them), logged as an error and counted (``shops_skipped``): only new settings mend it."""
    from shazzam.db import utcnow

    summary = Summary()
    hashes = PictureHashes(catalogue.image_hashes(app.db))
    with app.fetcher() as base:  # its kept connections closed at the end
        deadline = None if budget_s is None else time.monotonic() + budget_s
        # The page in hand when the budget is spent is saved whole, its pictures fetched, in this much more.
        fetch_deadline = None if budget_s is None else deadline + budget_s * PAGE_IN_HAND_SHARE
        # Due shops take turns: the one a pass started on longest ago first (one whose round a pass
        # leaves unfinished goes behind the others, so a shop too large for a pass starves none).
        sources = sorted(_sources(app, shop_url, source_name, summary), key=lambda pair: pair[0]["attempted_at"] or datetime.min)
        visits: dict[str, SourcePass | None] = {}  # by shop id
        for row, source in sources:
            if not (force or shop_url or source_name or source.is_due(row.get("last_scraped_at"), utcnow())):
                continue
            if deadline is not None and time.monotonic() >= deadline:
                summary.counts["shops_left"] += 1
                continue
            visit = SourcePass(app, row["id"], source, base.with_policy(source.policy()), summary, hashes, in_round=True)
            if visit.taken_off():
                continue  # since the pass read the shops, minutes ago maybe
            summary.counts["shops"] += 1
            catalogue.mark_shop_attempted(app.db, row["id"])
            round_started = None if force else row["last_scraped_at"] or row["created_at"]
            if force:
                catalogue.forget_discovery(app.db, row["id"])  # a new round discovers afresh
            crawl = visit.crawl(limit, round_started=round_started, deadline=deadline, fetch_deadline=fetch_deadline, keep_discovery=True)
            done, stopped = 0, False
            with closing(crawl.pages()) as pages:
                for outcome in pages:
                    if crawl.stopped():
                        stopped = True
                        break
                    visit.page(outcome)
                    done += 1
                    if progress is not None:
                        progress(done, crawl.total)
            summary.counts.update({name: crawl.stats[name] for name in ("pages_fetched", "skipped_by_robots")})
            summary.errors.update(crawl.errors)
            if crawl.discovery_failed:
                summary.counts["shops_failed"] += 1
                log.warning("%s could not be read (%s): its round goes on at the next pass", source.base_url,
                            ", ".join(f"{kind} {n}" for kind, n in sorted(crawl.errors.items())))
            if visit.taken_off(fresh=True):  # taken off during its last second too
                # Taken off during its crawl: what it discovered since take_shop_off dropped the
                # round's discovery goes too (brought back, it discovers afresh); nothing is left to a next pass.
                catalogue.forget_discovery(app.db, row["id"])
                log.info("%s was taken off during the pass: its crawl stopped", source.base_url)
            elif stopped or crawl.cut_short:
                # Pages of this round are left: not visited, not discovered (time, or `limit`).
                summary.counts["shops_unfinished"] += 1
                left = crawl.total - done + crawl.beyond_limit
                summary.counts["pages_left"] += left
                log.info("%s: %d of %d pages found left; the next pass goes on", source.base_url, left, crawl.total + crawl.beyond_limit)
            else:
                if crawl.feed_pages is not None:
                    visit.remove_unlisted(crawl.feed_pages, crawl.feed_read_in_parts)
                catalogue.mark_shop_scraped(app.db, row["id"])
                visit.in_round = False  # a page read again below (read_again) is no visit of the next round
            visits[row["id"]] = visit
        # Another shop's product whose copy of a picture died with one of these: it is searchable
        # again once it fetches its copy, and its shop's next round may be days away.
        shops = catalogue.shops_by_id(app.db)

        def source_pass(shop_id: str) -> SourcePass | None:
            if shop_id not in visits:
                visits[shop_id] = _source_pass(app, shops[shop_id], base, summary, hashes) if shops[shop_id]["active"] else None
            visit = visits[shop_id]
            return None if visit is None or visit.taken_off() else visit

        if limit is None:
            left_without_picture = [product for visit in list(visits.values()) if visit for product in visit.left_without_picture]
            until = float("inf") if fetch_deadline is None else fetch_deadline
            summary.counts.update(read_again(left_without_picture, source_pass, set(), until, fetch_deadline))
        return summary.as_dict()


def reembed_pass(app, stale: list[dict], budget_s: float | None = None) -> dict:
    """Fetch again the images whose vectors another model made (`stale`, as
    catalogue.images_embedded_by_other_models lists them), so the pipeline embeds them anew.

    Transient images are not kept, so a new model can only see the catalogue through its links.
    Each image goes through the same polite fetch as a scrape, and on to incoming/. Fetching stops
    once `budget_s` is spent (the rest waits for the next run): polite fetches take a second or more.
    """
    summary = Summary()
    with app.fetcher() as base:  # its kept connections closed at the end
        shops = catalogue.shops_by_id(app.db)
        passes: dict[str, SourcePass] = {}
        deadline = None if budget_s is None else time.monotonic() + budget_s
        for image in stale:
            if deadline is not None and time.monotonic() >= deadline:
                break
            if image["shop_id"] not in passes:
                passes[image["shop_id"]] = _source_pass(app, shops[image["shop_id"]], base, summary, PictureHashes())
                if passes[image["shop_id"]] is not None:
                    passes[image["shop_id"]].fetcher.deadline = deadline  # nor does a retry wait past it
            if passes[image["shop_id"]] is None:
                continue
            # Tried now: the next runs take the others first (one whose fetch keeps failing stays
            # stale, and would head every batch).
            catalogue.update_image(app.db, image["id"])
            passes[image["shop_id"]].image(image["product_id"], image["src_link"], image["position"], refetch=True, re_embedding=True)
            catalogue.show_copy_as_its_original(app.db, image["id"])  # if it is one now: never stale again
        return {"stale": len(stale), **{name: summary.counts[name] for name in ("images_uploaded", "images_failed")}}


def _usable_source(row: dict) -> ShopSource | None:
    """The source a shops row describes; None, logged, for a row saved before its settings were
    checked as they are now (the other shops go on)."""
    try:
        return catalogue.source_of_shop(row)
    except ValueError as exc:
        log.error("shop %s is skipped: %s", row["base_url"], exc)
        return None


def _source_pass(app, row: dict, base: Fetcher, summary: Summary, hashes: PictureHashes) -> SourcePass | None:
    """A pass over the shop a row describes; None for a row no scrape could use (_usable_source)."""
    source = _usable_source(row)
    return None if source is None else SourcePass(app, row["id"], source, base.with_policy(source.policy()), summary, hashes)


def revalidate_products(app, summary: Summary, budget_s: float | None = None) -> dict:
    """Re-check products (those seen least recently first) and images (those checked least recently
    first); returns counts (the caller drops dead vectors from shards). Within `budget_s` seconds
    in all, two thirds of them for products: a run that cannot visit everything leaves the rest
    for the next, which starts with them."""
    report = Counter(products_checked=0, images_checked=0, images_dead=0, images_replaced=0)
    started = time.monotonic()
    products_until = images_until = float("inf")
    deadline = None  # past which nothing is fetched, nor does a retry wait past it
    if budget_s is not None:
        products_until, images_until = started + budget_s * 2 / 3, started + budget_s
        deadline = images_until
    with app.fetcher() as base:  # its kept connections closed at the end
        shops = catalogue.shops_by_id(app.db)
        passes: dict[str, SourcePass] = {}
        visited: set[str] = set()
        pages_read_again: set[str] = set()  # pages read again as new, their products left without a picture
        # One list of stored pictures for every shop's pass: a picture found gone leaves it for all, or
        # another shop's copy of it, ingested in its stead, would be taken for a copy of it again.
        hashes = PictureHashes(catalogue.image_hashes(app.db))

        def source_pass(shop_id: str) -> SourcePass | None:
            """The shop's pass; None for a shop whose row no scrape could use (its items wait), or
            one taken off, before the run or during it (not crawled)."""
            if shop_id not in passes:
                passes[shop_id] = _source_pass(app, shops[shop_id], base, summary, hashes) if shops[shop_id]["active"] else None
                if passes[shop_id] is not None:
                    passes[shop_id].fetcher.deadline = deadline
            visit = passes[shop_id]
            return None if visit is None or visit.taken_off() else visit

        for product in catalogue.products_to_revalidate(app.db):
            if time.monotonic() >= products_until:
                break
            visit = source_pass(product["shop_id"])
            if visit is None:
                continue
            filed_under = (visit.known.get(product["url"]) or {}).get("page_url")
            if visit.source.strategy == "shopify" and filed_under is not None:
                # Each scrape round reads the whole feed; a feed page alone cannot tell a product the
                # shop removed from one a newer product pushed onto the next page.
                continue
            report["products_checked"] += 1
            catalogue.mark_product_checked(app.db, product["id"])  # the next run starts with others
            if visit.source.strategy == "shopify":
                # Unfiled: its feed page stopped listing it and no whole round has found it since (a
                # feed that errors before its end never has one). Its own page says if it is gone.
                outcome = visit.crawl(None, conditional=False, deadline=deadline).product_page(product["url"])
                if outcome.removes_its_products:
                    visit.page(outcome)
                if outcome.state in ("error", "robots"):
                    summary.error(outcome.reason or outcome.state)
                continue
            page_url = filed_under or product["url"]
            if product["is_dead"] and page_url != product["url"]:
                # Killed with another page that listed it (a sale address gone, a collection that
                # moved on): its own page, read in full, brings it back if it is for sale (and files
                # it there); the other page's return, a scrape.
                page_url = product["url"]
            if page_url in visited:
                continue  # another product of the same page (a feed page, a product group)
            visited.add(page_url)
            # A dead product's page is fetched in full: it may be back exactly as it was.
            outcome = visit.crawl(None, conditional=not product["is_dead"], deadline=deadline).visit(page_url)
            visit.page(outcome)
            if outcome.state in ("error", "robots"):
                summary.error(outcome.reason or outcome.state)  # a 5xx or a timeout kills nothing
        # Another shop's product whose copy of a picture died with a product found gone: it fetches its copy.
        left_without_picture = [product for visit in list(passes.values()) if visit for product in visit.left_without_picture]
        read_again(left_without_picture, source_pass, pages_read_again, images_until, deadline)
        for image in catalogue.stored_live_images(app.db):
            if time.monotonic() >= images_until:
                break
            visit = source_pass(image["shop_id"])
            if visit is None:
                continue
            report["images_checked"] += 1
            catalogue.update_image(app.db, image["id"])  # checked now: the next run starts with others
            cached = visit.cache.get(image["src_link"], {})
            try:
                result = visit.fetcher.get(image["src_link"], etag=cached.get("etag"), last_modified=cached.get("last_modified"))
            except FetchError as error:
                summary.error(error.kind)
                continue
            if result.status == 200 and image_format(result.body) is None:
                summary.error("not-an-image")  # an error page served as a 200: the picture stored is kept
                continue
            if result.status in (404, 410):
                visit.hashes.discard(image["id"])
                report["images_dead"] += 1
                # The products that showed it, at its address or at another address of the same picture
                # (a copy), are read again now, each fetching what it shows (the first copy fetched
                # becomes the original the others copy), or they would be left without a searchable picture.
                gone = catalogue.drop_copy if image["duplicate_of"] else catalogue.retire_image
                read_again(gone(app.db, image["id"]), source_pass, pages_read_again, images_until, deadline)
            elif result.status == 200 and not result.not_modified and hashlib.sha256(result.body).hexdigest() != image["content_sha256"]:
                # The shop replaced the picture behind the same address: ingested again, as a changed
                # page's pictures are (fetched once more there: a rare event). A copy no longer stands
                # for its original: it is judged afresh (a copy again, or a picture of its own).
                if image["duplicate_of"]:
                    catalogue.unlink_original(app.db, image["product_id"], image["id"])
                visit.image(image["product_id"], image["src_link"], image["position"], refetch=True)
                report["images_replaced"] += 1
        report["products_dead"] = summary.counts["products_dead"]
        report["products_revived"] = summary.counts["products_revived"]
        return dict(report)


__all__ = ["COUNTERS", "SourcePass", "Summary", "revalidate_products", "scrape_pass"]
