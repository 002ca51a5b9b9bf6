"""The catalogue's reads and writes: shops, products, images, detections (one place for the SQL)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Iterable, Iterator, Sequence
from urllib.parse import urlsplit

import sqlalchemy as sa

from shazzam import ids
from shazzam.db import Database, detections, discovery, http_cache, images, product_images, products, retried_on_deadlock, shops, upsert, utcnow
from shazzam.money import price_places
from shazzam.taxonomy import CATEGORIES

log = logging.getLogger(__name__)

# Why a product died when its page went away (the page back unchanged brings it back); "robots":
# the shop's robots.txt shut it, so what it says can no longer be checked.
PAGE_GONE = ("http-404", "http-410", "soft-404", "gone", "robots")
# Reasons a product is dead that a later visit may undo (a removed page can come back).
REVIVABLE = (*PAGE_GONE, "out-of-stock", "removed")
REVALIDATE_DEAD_FOR = timedelta(days=30)
# A tombstone older than this is deleted with what only it held (prune_dead_products): a shop that
# lists the product again after that has it added anew, under the same id (ids.product_id).
PRUNE_DEAD_AFTER = timedelta(days=180)
PRUNE_BATCH = 1000  # tombstones a run deletes at most; the next run goes on
# A picture put in incoming/ is detected within seconds (the stages' retries take minutes): one
# recorded as stored and still not detected after this never got there, or detect gave up on it.
UNDETECTED_AFTER = timedelta(hours=1)
# A garment still waiting for its crop or its vector after this lost them: a stage failed every
# retry, and the bucket's lifecycle has since deleted the object it would have started again from
# (transient objects live a day), so no redrive of the failure queue can finish it.
UNFINISHED_AFTER = timedelta(days=1)
# What a TEXT column holds on MySQL/MariaDB, in bytes of UTF-8: in strict mode it refuses more
# (SQLite keeps anything), so free text is cut to it.
TEXT_BYTES = 65_535
# Ids per IN (...) list: a search may join thousands of candidates, more than SQLite's bound
# parameters per statement on older builds (999).
IN_LIST_SIZE = 900
HASH_ROWS_PER_READ = 5_000  # stored pictures' hashes (image_hashes) read from the database at a time


@retried_on_deadlock
def add_shop(db: Database, base_url: str, name: str | None = None) -> str:
    """Register a shop with the default source settings (local if its URL is a loopback literal);
    ValueError for a URL no scrape could use, before anything is saved. Any spelling of a shop's
    address (`https://Shop.example` or `https://shop.example/`) names the same shop."""
    from shazzam.scrape.sources import ShopSource, infer_local

    base_url = ShopSource(base_url=base_url).base_url
    with db.transaction() as connection:
        shop_id = _shop_id(connection, base_url)
        connection.execute(
            upsert(
                connection,
                shops,
                {
                    "id": shop_id,
                    "base_url": base_url,
                    "name": _shop_name(name, base_url),
                    "active": True,
                    "created_at": utcnow(),
                    "is_local": infer_local(base_url),
                },
                # a shop named before keeps its name; one saved under another spelling takes this one
                update=("base_url", "name", "active") if name and name.strip() else ("base_url", "active"),
            )
        )
    return shop_id


def _shop_name(name: str | None, base_url: str) -> str:
    """The name a search filters by: trimmed (a search's value is), the address when blank."""
    return ((name or "").strip() or base_url)[:255]


@retried_on_deadlock
def save_source(db: Database, source) -> str:
    """Insert or update a shop from a ShopSource (a sources file's entry): every setting.
    ValueError for settings more than MySQL's TEXT column holds (SQLite keeps any)."""
    settings = json.dumps(source.settings(), sort_keys=True)
    size = len(settings.encode("utf-8"))
    with db.transaction() as connection:
        if connection.dialect.name == "mysql" and size > TEXT_BYTES:
            raise ValueError(f"source {source.base_url}: its settings (listing_urls, allowed_hosts, product_pattern, ...) come to "
                             f"{size:,} bytes of JSON, more than a shop's row holds ({TEXT_BYTES:,}): list fewer listing pages, "
                             f"or give a sitemap")
        shop_id = _shop_id(connection, source.base_url)
        values = {
            "id": shop_id,
            "base_url": source.base_url,
            "name": _shop_name(source.name, source.base_url),
            "active": True,
            "created_at": utcnow(),
            "strategy": source.strategy,
            "schedule": source.schedule,
            "delay_s": source.delay_s,
            "concurrency": source.concurrency,
            "is_local": source.local,
            "settings": settings,
        }
        # A shop taken off stays off (only `shops add` brings it back), whatever a sources file says.
        connection.execute(upsert(connection, shops, values, update=[k for k in values if k not in ("id", "created_at", "active")]))
    return shop_id


def _shop_id(connection: sa.Connection, base_url: str) -> str:
    """The id of the shop at base_url (canonical): a row saved before addresses were made canonical,
    under another spelling of it, keeps its id (its products point at it); else the new id."""
    from shazzam.scrape.sources import canonical_shop_url

    shop_id = ids.shop_id(base_url)
    for row in connection.execute(sa.select(shops.c.id, shops.c.base_url).order_by(shops.c.created_at)):
        if row.id == shop_id:
            return shop_id
        try:
            if canonical_shop_url(row.base_url) == base_url:
                return row.id
        except ValueError:
            continue
    return shop_id


def _is_text(value: str) -> bool:
    """Whether the string encodes as UTF-8: lone surrogates (undecodable bytes) do not."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def active_shop_id(db: Database, base_url: str) -> str:
    """The id of the active shop at this address (any spelling of it, or the one stored); ValueError
    for an address no scrape could use, or one no active shop has (`shops add` registers or brings
    one back)."""
    from shazzam.scrape.sources import ShopSource

    with db.transaction() as connection:
        # As stored first: an active row saved under an address now refused is still found, so that
        # the scrape asked for it skips and counts it (ingest names each shop by its stored address).
        # Compared here too: MySQL's collation would match another shop whose path differs in case.
        # Text that is not UTF-8 (undecodable bytes of a command line) can be no stored address.
        if _is_text(base_url):
            stored = connection.execute(sa.select(shops.c.id, shops.c.base_url).where(shops.c.base_url == base_url, shops.c.active.is_(True))).all()
            if shop_id := next((row.id for row in stored if row.base_url == base_url), None):
                return shop_id
        canonical = ShopSource(base_url=base_url).base_url
        shop_id = _shop_id(connection, canonical)
        if not connection.execute(sa.select(shops.c.active).where(shops.c.id == shop_id)).scalar():
            raise ValueError(f"no active shop at {canonical} (`shazzam shops add {canonical}` registers it)")
    return shop_id


def source_of_shop(row: dict):
    """The ShopSource a `shops` row describes (defaults where its columns are NULL)."""
    from shazzam.scrape.sources import SOURCE_OWN_FETCH_SETTINGS, source_from_mapping

    settings = json.loads(row.get("settings") or "{}")
    fetch = settings.get("fetch")
    if isinstance(fetch, dict) and (ignored := sorted(set(fetch) & set(SOURCE_OWN_FETCH_SETTINGS))):
        # Saved before [source.fetch] refused them, when the source's own overrode them anyway.
        log.warning("shop %s: fetch setting(s) %s are ignored (the source's own apply)", row["base_url"], ", ".join(ignored))
        settings["fetch"] = {name: value for name, value in fetch.items() if name not in ignored}
    values = {"base_url": row["base_url"], "name": row["name"], "local": bool(row.get("is_local")), **settings}
    for column in ("strategy", "schedule", "delay_s", "concurrency"):
        if row.get(column) is not None:
            values[column] = row[column]
    source = source_from_mapping({k: v for k, v in values.items() if v is not None})
    stored_host = (urlsplit(row["base_url"]).hostname or "").lower()
    if stored_host and stored_host != source.host:
        # Saved under a spelling canonical no more (a trailing dot): its products' addresses use it.
        source = replace(source, allowed_hosts=(*source.allowed_hosts, stored_host))
    return source


def active_shops(db: Database) -> list[dict]:
    with db.transaction() as connection:
        rows = connection.execute(sa.select(shops).where(shops.c.active.is_(True)).order_by(shops.c.base_url))
        return [dict(row) for row in rows.mappings()]


def shop_is_active(db: Database, shop_id: str) -> bool:
    """Whether the shop is scraped: not taken off (take_shop_off), or brought back since."""
    with db.transaction() as connection:
        return bool(connection.execute(sa.select(shops.c.active).where(shops.c.id == shop_id)).scalar())


@retried_on_deadlock
def take_shop_off(db: Database, base_url: str) -> bool:
    """Stop scraping and revalidating a shop, and take its items out of search at once (`add_shop`
    brings it back, its catalogue as it was). False for a shop not in the catalogue."""
    from shazzam.scrape.sources import ShopSource

    with db.transaction() as connection:
        # As stored first: a row saved under a spelling no longer accepted must still be taken off.
        # Compared here too: MySQL's collation would match another shop whose path differs in case.
        rows = connection.execute(sa.select(shops.c.id, shops.c.base_url).where(shops.c.base_url == base_url)).all()
        shop_id = next((row.id for row in rows if row.base_url == base_url), None)
        if shop_id is None:
            shop_id = _shop_id(connection, ShopSource(base_url=base_url).base_url)
        _drop_discovery(connection, shop_id)  # brought back, it discovers afresh
        return connection.execute(sa.update(shops).where(shops.c.id == shop_id).values(active=False)).rowcount > 0


@retried_on_deadlock
def mark_shop_attempted(db: Database, shop_id: str) -> None:
    with db.transaction() as connection:
        connection.execute(sa.update(shops).where(shops.c.id == shop_id).values(attempted_at=utcnow()))


@retried_on_deadlock
def mark_shop_scraped(db: Database, shop_id: str) -> None:
    """The shop's round is done: the next one discovers afresh."""
    with db.transaction() as connection:
        connection.execute(sa.update(shops).where(shops.c.id == shop_id).values(last_scraped_at=utcnow()))
        _drop_discovery(connection, shop_id)


def shop_discovery(db: Database, shop_id: str, source_key: str) -> list[dict]:
    """What the shop's round has discovered (url, kind, depth, outcome), in the order found. Found
    under other discovery settings (another strategy, other listing pages), it is dropped: []."""
    with db.transaction() as connection:
        rows = connection.execute(
            sa.select(discovery.c.url, discovery.c.kind, discovery.c.depth, discovery.c.outcome, discovery.c.source_key)
            .where(discovery.c.shop_id == shop_id)
            .order_by(discovery.c.seq)
        ).mappings().all()
        if any(row["source_key"] != source_key for row in rows):
            _drop_discovery(connection, shop_id)
            return []
        return [dict(row) for row in rows]


@retried_on_deadlock
def record_discovery(db: Database, shop_id: str, source_key: str, read: dict | None, found: Sequence[dict]) -> None:
    """A document discovery read ({url, kind, outcome}; None for none) and what it named (each
    {url, kind, depth}), after all found before. A URL already found as that kind is kept as it was."""
    with db.transaction() as connection:
        if read is not None:
            connection.execute(sa.update(discovery).where(discovery.c.id == _discovery_key(shop_id, read["url"], read["kind"]))
                               .values(outcome=read["outcome"]))
        if found:
            last = connection.execute(sa.select(sa.func.max(discovery.c.seq)).where(discovery.c.shop_id == shop_id)).scalar()
            rows = [{"id": _discovery_key(shop_id, item["url"], item["kind"]), "shop_id": shop_id, "seq": (last or 0) + n, "url": item["url"],
                     "kind": item["kind"], "depth": item.get("depth", 1), "outcome": None, "source_key": source_key}
                    for n, item in enumerate(found, start=1)]
            ignoring = sa.insert(discovery).prefix_with("IGNORE", dialect="mysql").prefix_with("OR IGNORE", dialect="sqlite")
            connection.execute(ignoring, rows)


def discovery_progress(db: Database) -> dict[tuple[str, str], dict[str, int]]:
    """Per shop and discovery settings (ShopSource.discovery_key) its round has discovered under:
    the pages found, and the sitemaps and listing pages read and left to read (never read, or to
    read again). Rows found under settings since changed go at the shop's next pass."""
    to_read = sa.or_(discovery.c.outcome.is_(None), discovery.c.outcome == "failed")
    kind = sa.case((discovery.c.kind == "page", "pages_found"), (to_read, "documents_left"), else_="documents_read")
    progress: dict[tuple[str, str], dict[str, int]] = {}
    with db.transaction() as connection:
        rows = connection.execute(sa.select(discovery.c.shop_id, discovery.c.source_key, kind.label("kind"), sa.func.count().label("n"))
                                  .group_by(discovery.c.shop_id, discovery.c.source_key, kind))
        for row in rows:
            progress.setdefault((row.shop_id, row.source_key), {"pages_found": 0, "documents_read": 0, "documents_left": 0})[row.kind] = row.n
    return progress


@retried_on_deadlock
def forget_discovery(db: Database, shop_id: str) -> None:
    with db.transaction() as connection:
        _drop_discovery(connection, shop_id)


def _drop_discovery(connection: sa.Connection, shop_id: str) -> None:
    connection.execute(sa.delete(discovery).where(discovery.c.shop_id == shop_id))


def _discovery_key(shop_id: str, url: str, kind: str) -> str:
    """One row per shop, URL and kind (sitemap, listing, page): a URL may be found as two."""
    return hashlib.sha1(f"{shop_id}\n{kind}\n{url}".encode(), usedforsecurity=False).hexdigest()


# products.price is NUMERIC(13, 3): MySQL refuses a row whose price does not fit (SQLite would keep it).
MAX_PRICE = Decimal("9999999999.99")


def _storable_price(price, currency: str | None = None) -> Decimal | None:
    """The price as the column holds it (to the currency's minor unit, at most a thousandth), or
    None for one it cannot hold."""
    if price is None:
        return None
    price = Decimal(price)
    if not price.is_finite() or not 0 <= price <= MAX_PRICE:
        return None
    return price.quantize(Decimal(1).scaleb(-price_places(currency)))


def _price_limit(limit: Decimal, rounding: str) -> Decimal:
    """A search's price limit as the thousandth it allows: prices are held to the thousandth at
    most, and SQLite compares a limit between two as the nearest float (25.989999999999999 as
    25.99). One beyond any storable price is the thousandth past the largest: MySQL's driver
    writes a Decimal out digit by digit, and 1e999999999 would be a query of a gigabyte."""
    return min(limit, MAX_PRICE + Decimal("0.001")).quantize(Decimal("0.001"), rounding=rounding)


def product_shop(db: Database, product_id: str) -> str | None:
    """The id of the shop a product belongs to; None for a product not in the catalogue."""
    with db.transaction() as connection:
        return connection.execute(sa.select(products.c.shop_id).where(products.c.id == product_id)).scalar()


@retried_on_deadlock
def save_product(db: Database, shop_id: str, product, page_url: str | None = None, settled: bool = True) -> str:
    """Insert or refresh a scraped product: alive again if it was dead, unless out of stock.
    `settled` false stores no fingerprint yet (settle_product does, once its pictures are seen to):
    a run stopped before then finds it changed at the next visit, and fetches them."""
    product_id = ids.product_id(product.url)
    now = utcnow()
    in_stock = getattr(product, "in_stock", True)
    currency = product.currency if isinstance(product.currency, str) and re.fullmatch(r"[A-Z]{3}", product.currency) else None
    values = {
        "id": product_id,
        "shop_id": shop_id,
        "url": product.url,
        "title": product.title[:512],
        "price": _storable_price(product.price, currency),
        "currency": currency,
        "category": product.category,
        "brand": (product.brand or None) and product.brand[:255],
        "sku": (product.sku or None) and product.sku[:255],
        "is_dead": not in_stock,
        "dead_reason": None if in_stock else "out-of-stock",
        "dead_at": None if in_stock else now,
        "created_at": now,
        "last_seen_at": now,
        "availability": getattr(product, "availability", None),
        "colour": (getattr(product, "colour", None) or None) and product.colour[:64],
        "sizes": _sizes_json(getattr(product, "sizes", ())),
        "breadcrumb": _fit_text(getattr(product, "breadcrumb", None)),
        "fingerprint": product.fingerprint() if settled and hasattr(product, "fingerprint") else None,
    }
    if page_url is not None:
        values["page_url"] = page_url
    with db.transaction() as connection:
        connection.execute(upsert(connection, products, values, update=[k for k in values if k not in ("id", "created_at")]))
    return product_id


def settle_product(db: Database, product_id: str, fingerprint: str) -> None:
    with db.transaction() as connection:
        connection.execute(sa.update(products).where(products.c.id == product_id).values(fingerprint=fingerprint))


def _fit_text(text: str | None) -> str | None:
    """Cut to what a TEXT column holds (TEXT_BYTES), on a character boundary."""
    if text is None or len(text) <= TEXT_BYTES // 4:  # 4 bytes a character at most: fits
        return text
    return text.encode("utf-8")[:TEXT_BYTES].decode("utf-8", "ignore")


def _sizes_json(sizes) -> str:
    """The sizes as a JSON list, as many of them as its TEXT column holds."""
    sizes = list(sizes)
    while len(text := json.dumps(sizes).encode("utf-8")) > TEXT_BYTES:
        sizes = sizes[: len(sizes) * TEXT_BYTES // len(text)]
    return text.decode("utf-8")


def products_of_shop(db: Database, shop_id: str) -> dict[str, dict]:
    """The shop's products by URL: id, page, fingerprint, category and whether (and why) dead."""
    with db.transaction() as connection:
        rows = connection.execute(
            sa.select(products.c.id, products.c.url, products.c.page_url, products.c.fingerprint, products.c.category, products.c.is_dead, products.c.dead_reason)
            .where(products.c.shop_id == shop_id)
        )
        return {row["url"]: dict(row) for row in rows.mappings()}


@retried_on_deadlock
def file_product(db: Database, product_id: str, page_url: str | None) -> None:
    """File a product under the (feed) page that lists it, or under none (its page stopped listing it)."""
    with db.transaction() as connection:
        connection.execute(sa.update(products).where(products.c.id == product_id).values(page_url=page_url))


@retried_on_deadlock
def touch_products(db: Database, product_ids: Sequence[str]) -> None:
    """Seen again, unchanged (their page answered 304 or the same bytes)."""
    with db.transaction() as connection:
        for start in range(0, len(product_ids), 500):
            connection.execute(sa.update(products).where(products.c.id.in_(product_ids[start : start + 500])).values(last_seen_at=utcnow()))


def page_cache(db: Database, shop_id: str) -> dict[str, dict]:
    """url -> {etag, last_modified, content_sha256, checked_at (a scrape round's last visit)} of every URL of the shop visited before."""
    columns = (http_cache.c.url, http_cache.c.etag, http_cache.c.last_modified, http_cache.c.content_sha256, http_cache.c.checked_at)
    with db.transaction() as connection:
        rows = connection.execute(sa.select(*columns).where(http_cache.c.shop_id == shop_id))
        return {row["url"]: dict(row) for row in rows.mappings()}


@retried_on_deadlock
def save_page_cache(db: Database, shop_id: str, url: str, etag: str | None, last_modified: str | None, content_sha256: str | None,
                    checked: bool = True) -> None:
    """The URL's validators and body hash, and when `checked`, that a scrape round visited it now
    (mark_page_checked); a revalidation's visit keeps the validators only."""
    now = utcnow()
    values = {
        "id": _url_key(url),
        "shop_id": shop_id,
        "url": url,
        "etag": (etag or None) and etag[:255],
        "last_modified": (last_modified or None) and last_modified[:64],
        "content_sha256": content_sha256,
        "fetched_at": now,
    }
    if checked:
        values["checked_at"] = now
    with db.transaction() as connection:
        connection.execute(upsert(connection, http_cache, values))


@retried_on_deadlock
def mark_page_checked(db: Database, shop_id: str, url: str) -> None:
    """Visited now by a scrape round, whatever came of it (unchanged, gone, an error): its validators
    stay. The round's next pass leaves it out (Crawl's round_started); a revalidation's visits are
    no round's, or the scrape after it would read none of the pages it checked."""
    now = utcnow()
    values = {"id": _url_key(url), "shop_id": shop_id, "url": url, "fetched_at": now, "checked_at": now}
    with db.transaction() as connection:
        connection.execute(upsert(connection, http_cache, values, update=["checked_at"]))


def _url_key(url: str) -> str:
    return hashlib.sha1(f"url:{url}".encode(), usedforsecurity=False).hexdigest()


@retried_on_deadlock
def link_image(db: Database, product_id: str, image_id: str, position: int = 0, *, if_live: bool = True) -> bool:
    """Record that the product shows the image (idempotent); returns whether it did. A picture read
    live may have died since (its last product died in another run): then, `if_live`, it is not
    linked, and must be ingested again for this product instead (a dead original linked would
    come back with the product). A failed fetch is linked whatever: the link is what retries it."""
    with db.transaction() as connection:
        # A locking read waits for a run that is retiring the image, and sees what it left.
        is_dead = connection.execute(sa.select(images.c.is_dead).where(images.c.id == image_id).with_for_update()).scalar()
        if is_dead and if_live:
            return False
        connection.execute(upsert(connection, product_images, {"product_id": product_id, "image_id": image_id, "position": position}, update=("position",)))
        return True


def image_count(db: Database, product_ids: Sequence[str]) -> int:
    """How many images the products show, through their links."""
    total = 0
    with db.transaction() as connection:
        for start in range(0, len(product_ids), 500):
            total += connection.execute(
                sa.select(sa.func.count()).select_from(product_images).where(product_images.c.product_id.in_(product_ids[start : start + 500]))
            ).scalar() or 0
    return total


def images_to_fetch_again(db: Database, product_ids: Sequence[str]) -> list[dict]:
    """The images of these (unchanged) products that are not stored and should be: those whose last
    download failed for a passing reason (network, timeout, rate-limited, HTTP 429 or 5xx; see
    SourcePass._image_failed), those never downloaded at all (a run stopped between saving the
    product and storing its picture), and, with `stored` true, those recorded as downloaded that
    detect has not seen within UNDETECTED_AFTER (a run stopped before the photo reached incoming/,
    or detect gave up on it) and those with a garment not embedded within UNFINISHED_AFTER
    (standardise, embed or detect's document gave up on it, or the vector's write did; an embedded
    garment's vector waits in vectors/pending/, which nothing expires, for an index run, however
    rare), and those of its own whose
    garment is indexed in another category than the product's (handed over from a product of
    that category: detect crops the garment of the new owner's, and embed moves its vector to that
    shard), and those alive again whose garments left the shards when they died, an hour ago or
    more (a revival stopped before it fetched them). product_id, src_link, position, stored."""
    passing = sa.or_(*(images.c.error.like(f"fetch failed ({kind}%") for kind in ("network", "timeout", "rate-limited", "http-429", "http-5")),
                     # Refused by detect as over the pixel limit before a JPEG was decoded smaller (a
                     # picture the scrape still cannot take fails its fetch, as too-large, instead).
                     images.c.error.like("image is %more than the%allowed"))
    never_stored = sa.and_(images.c.status == "new", images.c.content_sha256.is_(None), images.c.duplicate_of.is_(None))
    undetected = sa.and_(images.c.status == "new", images.c.content_sha256.is_not(None), images.c.duplicate_of.is_(None),
                         images.c.updated_at < utcnow() - UNDETECTED_AFTER)
    unfinished = sa.and_(images.c.status == "detected", images.c.duplicate_of.is_(None), sa.exists().where(
        detections.c.image_id == images.c.id, detections.c.embedding_status == "pending",
        detections.c.updated_at < utcnow() - UNFINISHED_AFTER))
    # Correlated to the image of the query it is in, at whatever depth (inside the EXISTS too).
    owner_category = sa.select(products.c.category).where(products.c.id == images.c.product_id).correlate_except(products).scalar_subquery()
    misfiled = sa.and_(images.c.status == "detected", images.c.duplicate_of.is_(None), product_images.c.product_id == images.c.product_id,
                       owner_category.in_(CATEGORIES), sa.exists().where(
                           detections.c.image_id == images.c.id, detections.c.embedding_status.in_(("embedded", "indexed")),
                           detections.c.category.is_not(None), detections.c.category != owner_category))
    # Out of the shards (it died) and shown again, but its revival's refetch never happened (a run
    # stopped first): nothing else would ingest it while its page stays the same.
    withdrawn = sa.and_(images.c.status == "detected", images.c.duplicate_of.is_(None), images.c.is_dead.is_(False),
                        sa.exists().where(detections.c.image_id == images.c.id, detections.c.embedding_status == "removed",
                                          detections.c.updated_at < utcnow() - UNDETECTED_AFTER),
                        ~sa.exists().where(detections.c.image_id == images.c.id,
                                           detections.c.embedding_status.in_(("pending", "embedded", "indexed"))))
    lost = sa.or_(undetected, unfinished, misfiled, withdrawn)  # stored, and no longer on its way to the index, or to the right shard
    found: list[dict] = []
    with db.transaction() as connection:
        for start in range(0, len(product_ids), 500):
            chunk = product_ids[start : start + 500]
            linked = (
                sa.select(product_images.c.product_id, images.c.src_link, product_images.c.position,
                          sa.case((lost, 1), else_=0).label("stored"))
                .join(images, product_images.c.image_id == images.c.id)
                .where(product_images.c.product_id.in_(chunk), sa.or_(sa.and_(images.c.status == "failed", passing), lost))
            )
            # A picture is linked to its product once stored, so one never stored has no link yet.
            unfetched = (sa.select(images.c.product_id, images.c.src_link, sa.literal(0).label("position"), sa.literal(0).label("stored"))
                         .where(images.c.product_id.in_(chunk), never_stored))
            # UNION ALL: the halves are disjoint (linked, unlinked), and UNION's de-duplication would
            # compare links by MySQL's case-blind collation, taking Dress.JPG and dress.jpg for one picture.
            rows = connection.execute(sa.union_all(linked, unfetched).order_by("product_id", "position", "src_link"))
            found += [{**row, "stored": bool(row["stored"])} for row in rows.mappings()]
    return found


def image_with_content(db: Database, content_sha256: str, other_than: str) -> str | None:
    """A live stored (not duplicate) image with exactly these bytes, other than ``other_than``."""
    with db.transaction() as connection:
        return connection.execute(
            sa.select(images.c.id)
            .where(images.c.content_sha256 == content_sha256, images.c.id != other_than, images.c.duplicate_of.is_(None),
                   images.c.status != "failed", images.c.is_dead.is_(False))
            .limit(1)
        ).scalar()


def image_hashes(db: Database) -> Iterator[tuple[str, str, str | None]]:
    """(image id, dHash, colour grid) of every live stored (not duplicate, not failed) image; one
    stored before colour grids were kept has none (None) until it is fetched again. Streamed a batch
    at a time (a server-side cursor on MySQL): read whole, then kept as a dict of strings, 600,000
    pictures took 316 MB of the scrape function's 512 before their hashes were even compared."""
    with db.transaction() as connection:
        rows = connection.execution_options(yield_per=HASH_ROWS_PER_READ).execute(
            sa.select(images.c.id, images.c.phash, images.c.colour_grid)
            .where(images.c.phash.is_not(None), images.c.duplicate_of.is_(None), images.c.status != "failed", images.c.is_dead.is_(False))
        )
        for row in rows:
            yield row.id, row.phash, row.colour_grid


def live_owner(db: Database, image_id: str) -> str | None:
    """The product that owns the picture, while it lives and shows it."""
    with db.transaction() as connection:
        return connection.execute(
            sa.select(products.c.id).join(images, images.c.product_id == products.c.id)
            .join(product_images, sa.and_(product_images.c.product_id == products.c.id, product_images.c.image_id == images.c.id))
            .where(images.c.id == image_id, products.c.is_dead.is_(False))
        ).scalar()


def get_image(db: Database, image_id: str) -> dict | None:
    with db.transaction() as connection:
        row = connection.execute(sa.select(images).where(images.c.id == image_id)).mappings().first()
        return dict(row) if row else None


@retried_on_deadlock
def save_image(db: Database, image_id: str, src_link: str, product_id: str | None) -> None:
    """Make sure the image row exists (keeps its status and hash if it does)."""
    now = utcnow()
    values = {
        "id": image_id,
        "product_id": product_id,
        "src_link": src_link,
        "status": "new",
        "is_dead": False,
        "created_at": now,
        "updated_at": now,
    }
    with db.transaction() as connection:
        connection.execute(upsert(connection, images, values, update=("is_dead", "updated_at")))


@retried_on_deadlock
def update_image(db: Database, image_id: str, **values) -> None:
    with db.transaction() as connection:
        connection.execute(sa.update(images).where(images.c.id == image_id).values(updated_at=utcnow(), **values))


def product_category_of_image(db: Database, image_id: str) -> str | None:
    with db.transaction() as connection:
        return connection.execute(
            sa.select(products.c.category).join(images, images.c.product_id == products.c.id).where(images.c.id == image_id)
        ).scalar()


@retried_on_deadlock
def save_detections(db: Database, image_id: str, found: Sequence[dict]) -> None:
    """Replace the image's detections with `found` (dicts: id, box, label, score)."""
    now = utcnow()
    with db.transaction() as connection:
        keep = [d["id"] for d in found]
        connection.execute(sa.delete(detections).where(detections.c.image_id == image_id, detections.c.id.not_in(keep)))
        for detection in found:
            left, top, right, bottom = detection["box"]
            values = {
                "id": detection["id"],
                "image_id": image_id,
                "box_left": left,
                "box_top": top,
                "box_right": right,
                "box_bottom": bottom,
                "label": detection["label"],
                "score": detection["score"],
                "embedding_status": "pending",
                "created_at": now,
                "updated_at": now,
            }
            connection.execute(
                upsert(connection, detections, values, update=("box_left", "box_top", "box_right", "box_bottom", "label", "score", "updated_at"))
            )


def get_detection(db: Database, detection_id: str) -> dict | None:
    with db.transaction() as connection:
        row = connection.execute(sa.select(detections).where(detections.c.id == detection_id)).mappings().first()
        return dict(row) if row else None


@retried_on_deadlock
def update_detection(db: Database, detection_id: str, **values) -> None:
    with db.transaction() as connection:
        connection.execute(sa.update(detections).where(detections.c.id == detection_id).values(updated_at=utcnow(), **values))


@retried_on_deadlock
def mark_indexed(db: Database, detection_ids: Iterable[str]) -> None:
    detection_ids = list(detection_ids)
    with db.transaction() as connection:
        for start in range(0, len(detection_ids), 500):
            chunk = detection_ids[start : start + 500]
            connection.execute(
                sa.update(detections)
                .where(detections.c.id.in_(chunk), detections.c.embedding_status == "embedded")
                .values(embedding_status="indexed", updated_at=utcnow())
            )


@retried_on_deadlock
def vectors_not_merged(db: Database, category: str, held: Iterable[str], not_held: Iterable[str]) -> None:
    """An index run set these garments' new vectors aside (unreadable) or dropped them (another
    model's). No model is recorded for them (embedded_by NULL), so the re-embed pass
    (images_embedded_by_other_models) fetches their images again, and the row says what the shard
    holds: `held` (an earlier vector of it is still there) is indexed, so that dropping a dead
    item's vectors takes it out; `not_held` stays embedded, a vector of no model that is nowhere,
    and keeps no tombstone (_still_needed). The index tells only of vectors still as it read them;
    only rows still embedded in this category are changed (one moved meanwhile has a newer vector
    on its way)."""
    now = utcnow()
    with db.transaction() as connection:
        for chosen, status in ((list(held), "indexed"), (list(not_held), "embedded")):
            for start in range(0, len(chosen), 500):
                connection.execute(
                    sa.update(detections)
                    .where(detections.c.id.in_(chosen[start : start + 500]), detections.c.category == category,
                           detections.c.embedding_status == "embedded")
                    .values(embedding_status=status, embedded_by=None, updated_at=now)
                )


@retried_on_deadlock
def forget_embedders_in_category(db: Database, category: str) -> None:
    """The category's shard was replaced by one of another model: none of the vectors it held is
    kept, so the re-embed pass fetches all its items' images again (those the new model embedded
    meanwhile are pending or merged, and are left alone by being embedded again)."""
    with db.transaction() as connection:
        connection.execute(sa.update(detections)
                           .where(detections.c.category == category, detections.c.embedding_status == "indexed")
                           .values(embedded_by=None, updated_at=utcnow()))


def stored_live_images(db: Database) -> list[dict]:
    """Live images that were stored, and copies of them at other addresses (`duplicate_of`), with
    their product, its shop and the image's place among the product's pictures."""
    shown_at = sa.and_(product_images.c.image_id == images.c.id, product_images.c.product_id == images.c.product_id)
    with db.transaction() as connection:
        rows = connection.execute(
            sa.select(images.c.id, images.c.src_link, images.c.content_sha256, images.c.product_id, products.c.shop_id,
                      images.c.duplicate_of, sa.func.coalesce(product_images.c.position, 0).label("position"))
            .join(products, images.c.product_id == products.c.id)
            .join(shops, products.c.shop_id == shops.c.id)
            .outerjoin(product_images, shown_at)
            # A copy (the same picture at another address) is checked at its own address too.
            .where(images.c.is_dead.is_(False), images.c.content_sha256.is_not(None),
                   products.c.is_dead.is_(False), shops.c.active.is_(True))  # a shop taken off is not crawled
            .order_by(images.c.updated_at, images.c.id)  # least recently checked (or changed) first
        )
        return [dict(row) for row in rows.mappings()]


def products_to_revalidate(db: Database) -> list[dict]:
    """Live products, and dead ones that may come back (gone pages, out of stock) for
    REVALIDATE_DEAD_FOR after they died, those seen or checked least recently first: a dead product
    checked and still gone goes to the back. Past that, a tombstone is left to the scrape, which
    revives it if the shop lists it again: otherwise a shop's ever-growing dead would take the
    revalidate budget (and the shop's patience) from its live products."""
    last_visit = sa.case((products.c.checked_at > products.c.last_seen_at, products.c.checked_at), else_=products.c.last_seen_at)
    may_come_back = sa.and_(products.c.dead_reason.in_(REVIVABLE), products.c.dead_at > utcnow() - REVALIDATE_DEAD_FOR)
    with db.transaction() as connection:
        rows = connection.execute(
            sa.select(products.c.id, products.c.url, products.c.shop_id, products.c.is_dead, products.c.dead_reason)
            .join(shops, products.c.shop_id == shops.c.id)
            .where(sa.or_(products.c.is_dead.is_(False), may_come_back),
                   shops.c.active.is_(True))  # a shop taken off is not crawled
            .order_by(last_visit, products.c.shop_id, products.c.url)
        )
        return [dict(row) for row in rows.mappings()]


@retried_on_deadlock
def mark_product_checked(db: Database, product_id: str) -> None:
    with db.transaction() as connection:
        connection.execute(sa.update(products).where(products.c.id == product_id).values(checked_at=utcnow()))


def images_embedded_by_other_models(db: Database, model: str, limit: int | None = None) -> list[dict]:
    """Live stored images whose detections' vectors come from another model than `model`. Not those
    whose last fetch or detect failed (each index run would fetch them again, first, for ever: a
    scrape retries them), nor copies of another picture (the original answers for them), nor those
    of a shop taken off."""
    with db.transaction() as connection:
        statement = _embedded_by_other_models(model).order_by(images.c.updated_at, images.c.id)  # tried longest ago first
        rows = connection.execute(statement if limit is None else statement.limit(limit))
        return [dict(row) for row in rows.mappings()]


def count_images_embedded_by_other_models(db: Database, model: str) -> int:
    """How many images images_embedded_by_other_models lists, however many a run takes of them."""
    with db.transaction() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(_embedded_by_other_models(model).subquery())).scalar()


def _embedded_by_other_models(model: str) -> sa.Select:
    # With its place among its product's pictures: fetched again at 0, it became the main photo.
    shown_at = sa.and_(product_images.c.image_id == images.c.id, product_images.c.product_id == images.c.product_id)
    return (
        sa.select(images.c.id, images.c.src_link, images.c.product_id, products.c.shop_id,
                  sa.func.coalesce(product_images.c.position, 0).label("position"), images.c.updated_at)
        .distinct()
        .join(detections, detections.c.image_id == images.c.id)
        .join(products, images.c.product_id == products.c.id)
        .join(shops, products.c.shop_id == shops.c.id)
        .outerjoin(product_images, shown_at)
        .where(
            images.c.is_dead.is_(False),
            images.c.status != "failed",
            images.c.duplicate_of.is_(None),
            shops.c.active.is_(True),
            products.c.is_dead.is_(False),
            detections.c.embedding_status.in_(("embedded", "indexed")),
            sa.or_(detections.c.embedded_by.is_(None), detections.c.embedded_by != model),
        )
    )


def shops_by_id(db: Database) -> dict[str, dict]:
    with db.transaction() as connection:
        return {row["id"]: dict(row) for row in connection.execute(sa.select(shops)).mappings()}


def _images_of(connection: sa.Connection, product_id: str) -> list[str]:
    linked = sa.select(product_images.c.image_id).where(product_images.c.product_id == product_id)
    owned = sa.select(images.c.id).where(images.c.product_id == product_id, images.c.duplicate_of.is_(None))
    return sorted({row[0] for row in connection.execute(sa.union(linked, owned))})


def _hand_over(connection: sa.Connection, image_id: str, product_id: str, shop_id: str, now: datetime) -> list[dict]:
    """An image its product no longer shows passes to another live product that shows it at its own
    address: of the same shop first, else of a shop that holds no copy of it; of the same category
    first (its garment stays indexed where it is; one of another category has the picture fetched
    again at its next visit: images_to_fetch_again). Failing one, it dies,
    and each copy of it under another address (another shop's) goes back to never fetched, its
    product unlinked from the original: the pass that let it go reads that product's page at once
    (scrape.passes.read_again), which fetches it as a picture of its own. Handed to a product that shows a copy, the picture was checked under a policy that
    does not reach its host, and shown at the first shop's address. Returns the live products it
    dies for (_retire), [] when it passes on."""
    # Locking reads, here and in _retire: a run handing over or linking the same picture at once
    # is waited for, and what it committed is seen (a plain read sees the transaction's snapshot,
    # and two runs whose products share a picture would each leave it to the other's dying one).
    current = connection.execute(
        sa.select(images.c.product_id, products.c.is_dead).outerjoin(products, images.c.product_id == products.c.id).where(images.c.id == image_id)
        .with_for_update()
    ).first()
    if current is not None and current.product_id != product_id and current.is_dead is not None and not current.is_dead:
        return []  # another live product's picture (this one showed it too): it stays theirs
    # A shop holding a copy of it shows that copy, at an address of its own; another shop's products
    # show its own address (a brand's CDN both allow), and may take it over.
    copy_shops = (
        sa.select(products.c.shop_id).join(images, images.c.product_id == products.c.id).where(images.c.duplicate_of == image_id)
    )
    category = connection.execute(sa.select(products.c.category).where(products.c.id == product_id)).scalar()
    owner = connection.execute(
        sa.select(products.c.id)
        .join(product_images, product_images.c.product_id == products.c.id)
        .where(product_images.c.image_id == image_id, products.c.is_dead.is_(False),
               sa.or_(products.c.shop_id == shop_id, products.c.shop_id.not_in(copy_shops)))
        .order_by(sa.case((products.c.shop_id == shop_id, 0), else_=1), sa.case((products.c.category == category, 0), else_=1), products.c.id)
        .limit(1)
        .with_for_update()
    ).scalar()
    if owner:
        connection.execute(sa.update(images).where(images.c.id == image_id).values(updated_at=now, product_id=owner))
        return []
    return _retire(connection, image_id, now)


def _retire(connection: sa.Connection, image_id: str, now: datetime) -> list[dict]:
    """The image dies. Each copy of it (the same picture at another address) goes back to never
    fetched, its product unlinked from the original, and each other live product still linked (it
    shows a copy whose address another product owns, or the gone address itself) is unlinked and
    its page forgotten (validators, digest and fingerprint), to be read again as new. The next
    visit of each of those products fetches what it shows, a copy as a picture of its own. Returns
    them (id, shop_id, url, page_url), the copies' owners first in the copies' order."""
    connection.execute(sa.update(images).where(images.c.id == image_id).values(updated_at=now, is_dead=True))
    concerned: dict[str, dict] = {}
    shown_by = (products.c.id, products.c.shop_id, products.c.url, products.c.page_url)
    copies = connection.execute(
        sa.select(images.c.id.label("copy_id"), products.c.is_dead, *shown_by)
        .outerjoin(products, images.c.product_id == products.c.id)
        .where(images.c.duplicate_of == image_id)
        .order_by(images.c.id)
        .with_for_update()
    ).mappings().all()
    for copy in copies:
        connection.execute(sa.update(images).where(images.c.id == copy["copy_id"]).values(
            updated_at=now, status="new", content_sha256=None, phash=None, colour_grid=None, duplicate_of=None))
        connection.execute(sa.delete(product_images).where(product_images.c.product_id == copy["id"], product_images.c.image_id == image_id))
        if copy["id"] is not None and not copy["is_dead"]:
            concerned.setdefault(copy["id"], {key: copy[key] for key in ("id", "shop_id", "url", "page_url")})
    linked = connection.execute(
        sa.select(*shown_by)
        .join(product_images, product_images.c.product_id == products.c.id)
        .where(product_images.c.image_id == image_id, products.c.is_dead.is_(False))
        .with_for_update()
    ).mappings().all()
    for product in linked:
        connection.execute(sa.delete(product_images).where(product_images.c.product_id == product["id"], product_images.c.image_id == image_id))
        _forget_page(connection, product)
        concerned.setdefault(product["id"], dict(product))
    return list(concerned.values())


def _forget_page(connection: sa.Connection, product) -> None:
    """The product's page is read again as new at its next visit: its fingerprint and validators go."""
    connection.execute(sa.update(products).where(products.c.id == product["id"]).values(fingerprint=None))
    connection.execute(sa.update(http_cache).where(http_cache.c.id == _url_key(product["page_url"] or product["url"]))
                       .values(etag=None, last_modified=None, content_sha256=None))


@retried_on_deadlock
def unlink_original(db: Database, product_id: str, copy_id: str) -> None:
    """The copy at the product's address shows another picture now: the product no longer stands
    for the original through it (the copy is judged afresh, and linked to what it shows)."""
    with db.transaction() as connection:
        original = connection.execute(sa.select(images.c.duplicate_of).where(images.c.id == copy_id)).scalar()
        if original is not None:
            connection.execute(sa.delete(product_images).where(product_images.c.product_id == product_id,
                                                               product_images.c.image_id == original))


@retried_on_deadlock
def show_copy_as_its_original(db: Database, image_id: str) -> None:
    """A picture turned out a copy of another when fetched again: the products that show it show the
    original in its stead, at the same place, as a scrape links a copy's product to the original,
    so that the copy's vector leaves the shards (dead_indexed_detections). No-op for no copy."""
    with db.transaction() as connection:
        original = connection.execute(sa.select(images.c.duplicate_of).where(images.c.id == image_id).with_for_update()).scalar()
        if original is None:
            return
        shown = connection.execute(sa.select(product_images.c.product_id, product_images.c.position).where(product_images.c.image_id == image_id))
        for product_id, position in shown.all():
            # A product that shows the original already keeps its place for it.
            connection.execute(upsert(connection, product_images, {"product_id": product_id, "image_id": original, "position": position}, update=()))
        connection.execute(sa.delete(product_images).where(product_images.c.image_id == image_id))


@retried_on_deadlock
def drop_copy(db: Database, copy_id: str) -> list[dict]:
    """A copy's own address is gone (or shows another picture now): the copy dies, its product no
    longer stands for the original through it (the original stays its owners'), and the product's
    page is read again as new. Returns that product (id, shop_id, url, page_url), if live."""
    with db.transaction() as connection:
        copy = connection.execute(
            sa.select(images.c.product_id, images.c.duplicate_of).where(images.c.id == copy_id).with_for_update()
        ).first()
        if copy is None or copy.duplicate_of is None:
            return []
        connection.execute(sa.update(images).where(images.c.id == copy_id).values(is_dead=True, updated_at=utcnow()))
        connection.execute(sa.delete(product_images).where(product_images.c.product_id == copy.product_id,
                                                           product_images.c.image_id == copy.duplicate_of))
        product = connection.execute(
            sa.select(products.c.id, products.c.shop_id, products.c.url, products.c.page_url)
            .where(products.c.id == copy.product_id, products.c.is_dead.is_(False))
        ).mappings().first()
        if product is None:
            return []
        _forget_page(connection, product)
        return [dict(product)]


@retried_on_deadlock
def retire_image(db: Database, image_id: str) -> list[dict]:
    """An image whose address is gone: see _retire."""
    with db.transaction() as connection:
        return _retire(connection, image_id, utcnow())


@retried_on_deadlock
def mark_product_dead(db: Database, product_id: str, reason: str = "gone") -> list[dict]:
    """Tombstone a product (search skips it at once); its images die unless another live product
    shows them. Returns the live products left without a searchable picture by one that died (another
    shop's, whose copy of it goes back to never fetched: see _retire), to be read again."""
    now = utcnow()
    concerned: dict[str, dict] = {}
    with db.transaction() as connection:
        connection.execute(sa.update(products).where(products.c.id == product_id).values(is_dead=True, dead_reason=reason[:32], dead_at=now))
        shop_id = connection.execute(sa.select(products.c.shop_id).where(products.c.id == product_id)).scalar()
        for image_id in _images_of(connection, product_id):
            for product in _hand_over(connection, image_id, product_id, shop_id, now):
                concerned.setdefault(product["id"], product)
    return list(concerned.values())


@retried_on_deadlock
def drop_images_not_shown(db: Database, product_id: str, shown: set[str]) -> tuple[list[str], list[dict]]:
    """Unlink the images a product's page no longer shows (the shop replaced a picture); each dies,
    and so leaves search and the shards, unless another live product shows it. Returns them, and
    the live products left without a searchable picture by one that died (mark_product_dead)."""
    now = utcnow()
    dropped, concerned = [], {}
    with db.transaction() as connection:
        shop_id = connection.execute(sa.select(products.c.shop_id).where(products.c.id == product_id)).scalar()
        for image_id in _images_of(connection, product_id):
            if image_id in shown:
                continue
            connection.execute(sa.delete(product_images).where(product_images.c.product_id == product_id, product_images.c.image_id == image_id))
            for product in _hand_over(connection, image_id, product_id, shop_id, now):
                concerned.setdefault(product["id"], product)
            dropped.append(image_id)
    return dropped, list(concerned.values())


@retried_on_deadlock
def revive_product(db: Database, product_id: str) -> list[str]:
    """Bring a dead product back; returns its images that were dead (they need ingesting again)."""
    now = utcnow()
    with db.transaction() as connection:
        connection.execute(sa.update(products).where(products.c.id == product_id).values(is_dead=False, dead_reason=None, dead_at=None, last_seen_at=now))
        image_ids = _images_of(connection, product_id)
        revived = [row[0] for row in connection.execute(sa.select(images.c.id).where(images.c.id.in_(image_ids), images.c.is_dead.is_(True)))] if image_ids else []
        for image_id in revived:
            connection.execute(sa.update(images).where(images.c.id == image_id).values(is_dead=False, product_id=product_id, updated_at=now))
        return revived


def _still_needed(dead_before: datetime):
    """Whether a picture the product (the products row of the enclosing query) owns is still
    needed: shown by another product that is not itself a tombstone to prune (two of those may
    show each other's pictures), the original of a copy, or a garment whose vector is in a shard
    or waits to be merged into one. A copy it owns (left live when it died) is not."""
    owned, copies, shower = images.alias("owned"), images.alias("copies"), products.alias("shower")
    return sa.exists().where(owned.c.product_id == products.c.id, sa.or_(
        sa.exists().where(product_images.c.image_id == owned.c.id, product_images.c.product_id != owned.c.product_id,
                          shower.c.id == product_images.c.product_id,
                          sa.or_(shower.c.is_dead.is_(False), shower.c.dead_at >= dead_before)),
        sa.exists().where(copies.c.duplicate_of == owned.c.id),
        sa.exists().where(detections.c.image_id == owned.c.id, sa.or_(
            detections.c.embedding_status == "indexed",
            # embedded by no model: its vector was dropped unmerged (vectors_not_merged)
            sa.and_(detections.c.embedding_status == "embedded", detections.c.embedded_by.is_not(None)))),
    ))


def prune_dead_products(db: Database, dead_before: datetime, limit: int = PRUNE_BATCH) -> dict[str, int]:
    """Delete up to `limit` products dead since before `dead_before`, oldest first, each with the
    pictures it owns, their garments, its links to others' pictures and the validators of its pages
    and pictures, so that its page reads as new if the shop lists it again. A tombstone whose
    pictures are still needed (_still_needed) is kept, counted in `tombstones_kept`, and does not
    hold back the younger ones."""
    old_dead = sa.and_(products.c.is_dead.is_(True), products.c.dead_at < dead_before)
    candidates = db.run_query(sa.select(products.c.id).where(old_dead, ~_still_needed(dead_before))
                              .order_by(products.c.dead_at, products.c.id).limit(limit))
    report = {"products_pruned": 0, "images_pruned": 0, "detections_pruned": 0}
    pages: set[str] = set()
    for candidate in candidates:
        pruned = _prune_dead_product(db, candidate["id"], dead_before)
        if pruned is not None:
            report["products_pruned"] += 1
            report["images_pruned"] += pruned["images"]
            report["detections_pruned"] += pruned["detections"]
            pages.update(pruned["pages"])
    _drop_pages_nobody_reads(db, pages)
    report["tombstones_kept"] = db.run_query(sa.select(sa.func.count().label("n")).select_from(products).where(old_dead, _still_needed(dead_before)))[0]["n"]
    return report


@retried_on_deadlock
def _prune_dead_product(db: Database, product_id: str, dead_before: datetime) -> dict | None:
    """One tombstone deleted (see prune_dead_products); None when it is no longer one to prune."""
    with db.transaction() as connection:
        product = connection.execute(
            sa.select(products.c.url, products.c.page_url).where(
                products.c.id == product_id, products.c.is_dead.is_(True), products.c.dead_at < dead_before, ~_still_needed(dead_before))
            .with_for_update()
        ).first()
        if product is None:
            return None  # revived, or its pictures needed, meanwhile
        pictures = connection.execute(sa.select(images.c.id, images.c.src_link).where(images.c.product_id == product_id)).all()
        owned, sources = [row.id for row in pictures], [row.src_link for row in pictures]
        garments = connection.execute(sa.delete(detections).where(detections.c.image_id.in_(owned))).rowcount if owned else 0
        connection.execute(sa.delete(product_images).where(product_images.c.product_id == product_id))
        if owned:
            # Other tombstones past the age that showed these pictures lose them: should one come
            # back before its own turn, its page is read as new and what it shows fetched again.
            for other in connection.execute(
                    sa.select(products.c.id, products.c.url, products.c.page_url).join(product_images, product_images.c.product_id == products.c.id)
                    .where(product_images.c.image_id.in_(owned))).mappings().all():
                _forget_page(connection, other)
            connection.execute(sa.delete(product_images).where(product_images.c.image_id.in_(owned)))
            connection.execute(sa.delete(images).where(images.c.id.in_(owned)))
        connection.execute(sa.delete(products).where(products.c.id == product_id))
        if sources:
            connection.execute(sa.delete(http_cache).where(http_cache.c.id.in_([_url_key(url) for url in sources])))
        # Kept, its page's validators would make a page the shop lists again read as unchanged,
        # and the product would not be added anew: they go now; the row itself goes with the
        # run's others once no product is read from that page (_drop_pages_nobody_reads).
        pages = {product.url, product.page_url or product.url}
        connection.execute(sa.update(http_cache).where(http_cache.c.id.in_([_url_key(url) for url in pages]))
                           .values(etag=None, last_modified=None, content_sha256=None))
        return {"images": len(owned), "detections": garments, "pages": pages}


def _drop_pages_nobody_reads(db: Database, pages: set[str]) -> None:
    """Delete the cached validators' rows of pruned products' pages that no product is read from
    (a feed page or a product group's page may still list others). One pass over the products
    per few hundred pages: page_url has no index."""
    pages = sorted(pages)
    with db.transaction() as connection:
        for start in range(0, len(pages), IN_LIST_SIZE // 2):
            chunk = pages[start : start + IN_LIST_SIZE // 2]
            read = {row.page_url for row in connection.execute(sa.select(products.c.page_url).where(products.c.page_url.in_(chunk)))}
            read |= {row.url for row in connection.execute(sa.select(products.c.url).where(products.c.id.in_([ids.product_id(url) for url in chunk])))}
            unread = [_url_key(url) for url in chunk if url not in read]
            if unread:
                connection.execute(sa.delete(http_cache).where(http_cache.c.id.in_(unread)))


def dead_indexed_detections(db: Database) -> dict[str, set[str]]:
    """Detections still in a shard whose image or product is dead, whose image has no product (a
    photo put into incoming/ by hand, indexed before such photos were kept out), or whose image has
    since become a copy of another (fetched again, its bytes another's: the original answers for
    it) that no live product links any more, by category."""
    shower = products.alias("shower")
    still_shown = sa.exists().where(product_images.c.image_id == images.c.id, product_images.c.product_id == shower.c.id,
                                    shower.c.is_dead.is_(False))
    with db.transaction() as connection:
        rows = connection.execute(
            sa.select(detections.c.id, detections.c.category)
            .join(images, detections.c.image_id == images.c.id)
            .outerjoin(products, images.c.product_id == products.c.id)
            .where(
                detections.c.embedding_status == "indexed",
                sa.or_(images.c.is_dead.is_(True), products.c.is_dead.is_(True), images.c.product_id.is_(None),
                       sa.and_(images.c.duplicate_of.is_not(None), ~still_shown)),
            )
        )
        grouped: dict[str, set[str]] = {}
        for row in rows:
            grouped.setdefault(row.category, set()).add(row.id)
        return grouped


@retried_on_deadlock
def mark_unindexed(db: Database, detection_ids: Iterable[str]) -> None:
    detection_ids = list(detection_ids)
    with db.transaction() as connection:
        for start in range(0, len(detection_ids), 500):
            connection.execute(
                sa.update(detections)
                # Only what is still in a shard: a vector embedded again meanwhile is pending its merge.
                .where(detections.c.id.in_(detection_ids[start : start + 500]), detections.c.embedding_status == "indexed")
                .values(embedding_status="removed", updated_at=utcnow())
            )


def shops_taken_off(db: Database) -> frozenset[str]:
    """The ids of the shops taken off (take_shop_off)."""
    return frozenset(row["id"] for row in db.run_query(sa.select(shops.c.id).where(shops.c.active.is_(False))))


def detections_only_shops_taken_off_show(db: Database) -> frozenset[str]:
    """Detections whose picture no search may show for now: its own product's shop is taken off,
    and no product of a shop not taken off links it (as items_for_detections reads them). Their
    vectors stay in the shards, so that `add_shop` brings them back at once."""
    shower, shower_shop = products.alias("shower"), shops.alias("shower_shop")
    shown_by_another = sa.exists().where(product_images.c.image_id == images.c.id, product_images.c.product_id != images.c.product_id,
                                         product_images.c.product_id == shower.c.id, shower.c.shop_id == shower_shop.c.id,
                                         shower_shop.c.active.is_(True))
    # From the products of the shops taken off (the shop_id index), then each of their pictures' links
    # (the image_id index): the cost is theirs, not the catalogue's, which a scan from detections
    # (SQLite) or MariaDB's materialising every picture the shops not taken off show would pay on each
    # read. The link to the picture's own product (of a shop taken off) is left out first; the
    # inequality also keeps MariaDB from turning the subquery into that materialisation.
    rows = db.run_query(
        sa.select(detections.c.id)
        .select_from(products)
        .join(images, images.c.product_id == products.c.id)
        .join(detections, detections.c.image_id == images.c.id)
        .where(products.c.shop_id.in_(sa.select(shops.c.id).where(shops.c.active.is_(False))), ~shown_by_another)
    )
    return frozenset(row["id"] for row in rows)


def _item_columns() -> tuple:
    """What a result shows of a catalogue item (products joined with shops)."""
    return (
        products.c.id.label("product_id"),
        products.c.title,
        products.c.url,
        products.c.price,
        products.c.currency,
        products.c.brand,
        products.c.category,
        shops.c.name.label("shop"),
    )


def _shown_at(product_id, image_id):
    """The address a product shows a linked picture at: its own copy's (a duplicate is linked to its
    original), else the picture's own."""
    own = images.alias("own")
    own_copy = (
        sa.select(sa.func.min(own.c.src_link))
        .where(own.c.product_id == product_id, own.c.duplicate_of == image_id, own.c.is_dead.is_(False))
        .scalar_subquery()
    )
    return sa.func.coalesce(own_copy, images.c.src_link)


def items_for_detections(db: Database, detection_ids: Sequence[str], filters=None) -> dict[str, list[dict]]:
    """The live catalogue items behind each detection id: product, price, shop, picture. A picture
    is every product's that shows it (a product shot two shops sell, a picture a shop's products
    share), not its first product's only.

    A picture shows its owner's garment, and is indexed in its owner's category: a product filed
    under another category is not its item where its own shop shows the picture on a product of
    the owner's category too (a look photo a dress and a skirt share is the dress's, and the skirt
    is no answer for it). One without a category is, and so is one of a shop that shows the picture
    on no product of that category (a product shot two shops sell is one garment, whatever each
    calls it).

    `filters` (a pipeline.SearchFilters) keeps only items within its price range, currency and shop
    (by name or id); an item without a price never passes a price limit.
    """
    if not detection_ids:
        return {}
    # A shop taken off (`active` false) is neither scraped nor shown.
    conditions = [products.c.is_dead.is_(False), images.c.is_dead.is_(False), shops.c.active.is_(True)]
    if filters is not None:
        if filters.min_price is not None:
            conditions.append(products.c.price >= _price_limit(filters.min_price, ROUND_CEILING))
        if filters.max_price is not None:
            conditions.append(products.c.price <= _price_limit(filters.max_price, ROUND_FLOOR))
        if filters.currency is not None:
            conditions.append(products.c.currency == filters.currency)
        if filters.shop is not None:
            conditions.append(products.c.shop_id.in_(shop_ids(db, filters.shop)))
    columns = (detections.c.id.label("detection_id"), *_item_columns(), _shown_at(products.c.id, images.c.id).label("image_url"))
    # The picture's own product (a database from before links, schema version 2, has no link for
    # it), and every product linked to it: two indexed joins rather than one with an OR.
    owner = sa.select(*columns).join(images, detections.c.image_id == images.c.id).join(products, images.c.product_id == products.c.id)
    picture_owner, kin, kin_link = products.alias("picture_owner"), products.alias("kin"), product_images.alias("kin_link")
    # The item is filed under another category than the picture's owner, and its own shop shows the
    # picture (or its copy of it) on a live product of the owner's category too: a look photo that
    # shop's dress and skirt share, where the vector is the dress's. (A product shot another shop
    # files under a category of its own, and nothing else there, is the same garment named otherwise.)
    of_another_garment = sa.and_(
        picture_owner.c.category.is_not(None), products.c.category.is_not(None), picture_owner.c.category != products.c.category,
        sa.or_(
            sa.and_(picture_owner.c.shop_id == products.c.shop_id, picture_owner.c.is_dead.is_(False)),  # the owner itself (linked or not)
            sa.exists().where(kin_link.c.image_id == images.c.id, kin_link.c.product_id == kin.c.id, kin.c.shop_id == products.c.shop_id,
                              kin.c.is_dead.is_(False), kin.c.category == picture_owner.c.category),
        ),
    )
    linked = (
        sa.select(*columns)
        .join(images, detections.c.image_id == images.c.id)
        .join(product_images, product_images.c.image_id == images.c.id)
        .join(products, product_images.c.product_id == products.c.id)
        .outerjoin(picture_owner, images.c.product_id == picture_owner.c.id)
        .where(~of_another_garment)
    )
    found: dict[str, dict[str, dict]] = {}
    detection_ids = list(detection_ids)
    with db.transaction() as connection:
        for start in range(0, len(detection_ids), IN_LIST_SIZE):  # bound parameters per statement
            chunk = detections.c.id.in_(detection_ids[start : start + IN_LIST_SIZE])
            for statement in (owner, linked):
                rows = connection.execute(statement.join(shops, products.c.shop_id == shops.c.id).where(chunk, *conditions))
                for row in rows.mappings():
                    found.setdefault(row["detection_id"], {}).setdefault(row["product_id"], dict(row))
    return {detection_id: [items[key] for key in sorted(items)] for detection_id, items in found.items()}


def get_item(db: Database, product_id: str) -> dict | None:
    """One catalogue item (a product) with its shop and picture links, dead or alive; None if unknown."""
    with db.transaction() as connection:
        row = (
            connection.execute(
                sa.select(
                    *_item_columns(),
                    products.c.is_dead,
                    products.c.last_seen_at,
                    shops.c.base_url.label("shop_url"),
                    shops.c.active.label("shop_active"),
                )
                .join(shops, products.c.shop_id == shops.c.id)
                .where(products.c.id == product_id)
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        row = dict(row)
        row["is_dead"] = bool(row["is_dead"]) or not row.pop("shop_active")  # a shop taken off sells nothing here
        # Its own pictures, then those it shares with other products (linked, at its own addresses
        # where it has copies of them).
        # In the page's order (a client shows the first as the main photo); one it no longer links, last.
        at_position = sa.and_(product_images.c.image_id == images.c.id, product_images.c.product_id == product_id)
        owned = connection.execute(
            sa.select(images.c.src_link)
            .outerjoin(product_images, at_position)
            .where(images.c.product_id == product_id, images.c.is_dead.is_(False))
            .order_by(product_images.c.position.is_(None), product_images.c.position, images.c.id)
        ).scalars()
        linked = connection.execute(
            sa.select(_shown_at(product_id, images.c.id))
            .join(product_images, product_images.c.image_id == images.c.id)
            .where(product_images.c.product_id == product_id, images.c.is_dead.is_(False))
            .order_by(product_images.c.position, images.c.id)
        ).scalars()
        return {**dict(row), "image_urls": list(dict.fromkeys([*owned, *linked]))}


def shop_ids(db: Database, name_or_id: str) -> list[str]:
    """The shops not taken off that a search names: by id, or by name in any case (what a person
    types; a shop taken off is an unknown one, as /health lists it no more). Compared here, not in SQL: SQLite's lower() folds only ASCII letters ("Élan" would not match "élan")."""
    wanted = _compared_name(name_or_id)
    with db.transaction() as connection:
        rows = connection.execute(sa.select(shops.c.id, shops.c.name).where(shops.c.active.is_(True))).all()
    return [row.id for row in rows if row.id == name_or_id or _compared_name(row.name) == wanted]


def _compared_name(name: str) -> str:
    """A shop's name as a search compares it: stripped (a name saved with spaces around it before
    names were trimmed), in any case, and its letters however they are composed ("É" or "E" and
    U+0301, as a keyboard or a copy from macOS may give it) or wide ("Ｚａｒａ"), as they look alike."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name.strip()).casefold())


def shop_exists(db: Database, name_or_id: str) -> bool:
    return bool(shop_ids(db, name_or_id))


def shop_names(db: Database) -> list[str]:
    """The names of the active shops, for the search filter."""
    with db.transaction() as connection:
        names = connection.execute(sa.select(shops.c.name).where(shops.c.active.is_(True))).scalars()
        return sorted(names, key=_alphabetical)  # one order whatever the database's collation


def _alphabetical(name: str) -> tuple[str, str]:
    """A name's place in a list for people: case and accents aside ("Élan" after "adidas")."""
    letters = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    return letters.casefold(), name


def counts(db: Database) -> dict[str, int]:
    with db.transaction() as connection:
        scalar = lambda statement: connection.execute(statement).scalar() or 0  # noqa: E731
        return {
            "shops": scalar(sa.select(sa.func.count()).select_from(shops).where(shops.c.active.is_(True))),
            # What search may show: live products of the shops not taken off.
            "products": scalar(sa.select(sa.func.count()).select_from(products).join(shops, products.c.shop_id == shops.c.id)
                               .where(products.c.is_dead.is_(False), shops.c.active.is_(True))),
            "images": scalar(sa.select(sa.func.count()).select_from(images)),
            "images_failed": scalar(sa.select(sa.func.count()).select_from(images).where(images.c.status == "failed")),
            "detections": scalar(sa.select(sa.func.count()).select_from(detections)),
            "indexed": scalar(sa.select(sa.func.count()).select_from(detections).where(detections.c.embedding_status == "indexed")),
        }
