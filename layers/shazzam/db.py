"""The catalogue database: the seed's `Database` API over SQLAlchemy Core.

One code path for both backends: SQLite is the embedded default, MySQL/MariaDB (through pymysql)
runs in the cloud. SQL is always parameterised (`:name` binds), never formatted.
"""

from __future__ import annotations

import fcntl
import functools
import os
import random
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite

metadata = sa.MetaData()

# Ids are content- or URL-derived hashes (see shazzam.ids), so replays address the same rows.
shops = sa.Table(
    "shops",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("base_url", sa.Text, nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("last_scraped_at", sa.DateTime),
    # v2: the shop as a scrape source (shazzam.scrape.sources.ShopSource); NULL means the default.
    sa.Column("strategy", sa.String(16)),
    sa.Column("schedule", sa.String(64)),
    sa.Column("delay_s", sa.Float),
    sa.Column("concurrency", sa.Integer),
    sa.Column("is_local", sa.Boolean, nullable=False, default=False),
    sa.Column("settings", sa.Text),  # JSON: allowed hosts, listing URLs, fetch limits...
    sa.Column("attempted_at", sa.DateTime),  # v4: when a scrape pass last started on it
)

products = sa.Table(
    "products",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("shop_id", sa.String(40), sa.ForeignKey("shops.id"), nullable=False, index=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("title", sa.String(512), nullable=False),
    sa.Column("price", sa.Numeric(13, 3)),  # v10: to the thousandth (the Kuwaiti dinar's fils), was (12, 2)
    sa.Column("currency", sa.String(3)),
    sa.Column("category", sa.String(32)),
    sa.Column("brand", sa.String(255)),
    sa.Column("sku", sa.String(255)),
    sa.Column("is_dead", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("last_seen_at", sa.DateTime, nullable=False),
    # v2
    sa.Column("page_url", sa.Text),  # the page (or feed page) it was scraped from
    sa.Column("availability", sa.String(32)),
    sa.Column("colour", sa.String(64)),
    sa.Column("sizes", sa.Text),  # JSON list
    sa.Column("breadcrumb", sa.Text),
    sa.Column("fingerprint", sa.String(64)),  # ScrapedProduct.fingerprint(): changed or not
    sa.Column("dead_reason", sa.String(32)),  # http-404, http-410, soft-404, out-of-stock, removed
    sa.Column("dead_at", sa.DateTime),
    sa.Column("checked_at", sa.DateTime),  # v4: revalidate's last visit (a dead product is not "seen")
)

images = sa.Table(
    "images",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("product_id", sa.String(40), sa.ForeignKey("products.id"), index=True),
    sa.Column("src_link", sa.Text, nullable=False),
    sa.Column("content_sha256", sa.String(64), index=True),  # v7: indexed (each download looks for its copy)
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    # new -> detected, or failed (with error); is_dead once the shop no longer serves it.
    sa.Column("status", sa.String(16), nullable=False, default="new"),
    sa.Column("error", sa.Text),
    sa.Column("is_dead", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    # v2: a 256-bit dHash (hex), and the image this one duplicates (then it has no detections).
    sa.Column("phash", sa.String(64)),
    sa.Column("duplicate_of", sa.String(40), index=True),  # v5: indexed (the copies of a picture that dies)
    # v5: a 4x4 grid of mean colours (hex), which a near-duplicate must share as well as its dHash.
    sa.Column("colour_grid", sa.String(96)),
)

detections = sa.Table(
    "detections",
    metadata,
    sa.Column("id", sa.String(48), primary_key=True),
    sa.Column("image_id", sa.String(40), sa.ForeignKey("images.id"), nullable=False, index=True),
    sa.Column("box_left", sa.Integer, nullable=False),
    sa.Column("box_top", sa.Integer, nullable=False),
    sa.Column("box_right", sa.Integer, nullable=False),
    sa.Column("box_bottom", sa.Integer, nullable=False),
    sa.Column("label", sa.String(32)),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("category", sa.String(32)),
    sa.Column("category_confidence", sa.Float),
    # v3: the model whose vector of this detection is (or is going) in the index.
    sa.Column("embedded_by", sa.String(64)),
    # pending -> embedded -> indexed, or failed (with error).
    sa.Column("embedding_status", sa.String(16), nullable=False, default="pending"),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

# v2: every product that shows an image (an image found on many products is stored once).
product_images = sa.Table(
    "product_images",
    metadata,
    sa.Column("product_id", sa.String(40), sa.ForeignKey("products.id"), primary_key=True),
    sa.Column("image_id", sa.String(40), sa.ForeignKey("images.id"), primary_key=True, index=True),
    sa.Column("position", sa.Integer, nullable=False, default=0),
)

# v2: validators and body hash of each fetched URL, so an unchanged page costs a 304 at most.
http_cache = sa.Table(
    "http_cache",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("shop_id", sa.String(40), index=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("etag", sa.String(255)),
    sa.Column("last_modified", sa.String(64)),
    sa.Column("content_sha256", sa.String(64)),
    sa.Column("fetched_at", sa.DateTime, nullable=False),
    # v4: when a scrape round last visited the URL, whatever came of it; a round cut short by its time
    # budget goes on with the pages it has not visited yet (revalidate's visits are no round's).
    sa.Column("checked_at", sa.DateTime),
)

# v8: who holds each lease and until when (shazzam.lease); a released lease has expired long ago.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("holder", sa.String(80)),
    sa.Column("expires_at", sa.DateTime, nullable=False),
)

# v9: what each shop's scrape round has discovered (sitemaps and listing pages, read or still to
# read, and the pages they named), so that a round longer than one pass discovers once, and a
# discovery longer than a pass goes on where it stopped. A finished round's rows are deleted.
discovery = sa.Table(
    "discovery",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # of the shop, the URL and its kind
    sa.Column("shop_id", sa.String(40), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),  # the order found in
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # sitemap or listing (documents to read), page (to visit)
    sa.Column("depth", sa.Integer, nullable=False),  # a sitemap's nesting
    sa.Column("outcome", sa.String(8)),  # a document's: NULL until read, then listed, indexed, missing or failed
    sa.Column("source_key", sa.String(16), nullable=False),  # the discovery settings it was found under
)

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(255), nullable=False),
    sa.Column("applied_at", sa.DateTime, nullable=False),
)


def _create_tables(connection: sa.Connection, tables: Sequence[sa.Table]) -> None:
    # create_all skips a table that exists, indexes and all: a run cut between a CREATE TABLE and
    # its CREATE INDEX (MySQL commits each DDL statement) would lose the index for good.
    metadata.create_all(connection, tables=tables, checkfirst=True)
    for table in tables:
        for index in table.indexes:
            index.create(connection, checkfirst=True)


def _initial_schema(connection: sa.Connection) -> None:
    _create_tables(connection, [shops, products, images, detections])


# Columns added by migration 2, as portable DDL (SQLite and MySQL/MariaDB both accept each).
_V2_COLUMNS = {
    "shops": (
        ("strategy", "VARCHAR(16)"),
        ("schedule", "VARCHAR(64)"),
        ("delay_s", "FLOAT"),
        ("concurrency", "INTEGER"),
        ("is_local", "BOOLEAN NOT NULL DEFAULT 0"),
        ("settings", "TEXT"),
    ),
    "products": (
        ("page_url", "TEXT"),
        ("availability", "VARCHAR(32)"),
        ("colour", "VARCHAR(64)"),
        ("sizes", "TEXT"),
        ("breadcrumb", "TEXT"),
        ("fingerprint", "VARCHAR(64)"),
        ("dead_reason", "VARCHAR(32)"),
        ("dead_at", "DATETIME"),
    ),
    "images": (("phash", "VARCHAR(64)"), ("duplicate_of", "VARCHAR(40)")),
}


def _add_missing_columns(connection: sa.Connection, columns_by_table: Mapping[str, Sequence[tuple[str, str]]]) -> None:
    # Migration 1 creates tables from the current definitions, so a database born after a later
    # version already has its columns: only an older database needs the ALTERs.
    inspector = sa.inspect(connection)
    for table, columns in columns_by_table.items():
        present = {column["name"] for column in inspector.get_columns(table)}
        for name, ddl in columns:
            if name not in present:
                connection.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {name} {ddl}"))


def _scrape_sources_and_freshness(connection: sa.Connection) -> None:
    _add_missing_columns(connection, _V2_COLUMNS)
    _create_tables(connection, [product_images, http_cache])
    # Shops registered by a loopback URL (the demo's sample shop) were local by intent: say so,
    # or the address guard would now refuse them.
    connection.execute(
        sa.text(
            "UPDATE shops SET is_local = 1 WHERE base_url LIKE 'http://127.%' OR base_url LIKE 'https://127.%'"
            " OR base_url LIKE 'http://localhost%' OR base_url LIKE 'https://localhost%'"
        )
    )


_V3_COLUMNS = {"detections": (("embedded_by", "VARCHAR(64)"),)}
_V4_COLUMNS = {"http_cache": (("checked_at", "DATETIME"),), "products": (("checked_at", "DATETIME"),),
               "shops": (("attempted_at", "DATETIME"),)}
_V5_COLUMNS = {"images": (("colour_grid", "VARCHAR(96)"),)}


def _detection_models(connection: sa.Connection) -> None:
    _add_missing_columns(connection, _V3_COLUMNS)


def _image_colours(connection: sa.Connection) -> None:
    _add_missing_columns(connection, _V5_COLUMNS)
    # Created by migration 1 in a database born after version 5, and not before.
    _create_image_index(connection, "ix_images_duplicate_of")


def _image_digests_indexed(connection: sa.Connection) -> None:
    # Each downloaded picture looks for a stored one of the same bytes: without it, a scan of
    # the images (180 ms at 80,000 on MariaDB), once per download.
    _create_image_index(connection, "ix_images_content_sha256")


def _create_image_index(connection: sa.Connection, name: str) -> None:
    """One of the images table's indexes, unless the database has it already."""
    next(index for index in images.indexes if index.name == name).create(connection, checkfirst=True)


def _page_visits(connection: sa.Connection) -> None:
    _add_missing_columns(connection, _V4_COLUMNS)


def _leases(connection: sa.Connection) -> None:
    _create_tables(connection, [leases])


def _discovery(connection: sa.Connection) -> None:
    _create_tables(connection, [discovery])


def _prices_to_the_thousandth(connection: sa.Connection) -> None:
    # SQLite keeps any number in the column as it is; MySQL held two decimals.
    if connection.dialect.name == "mysql":
        connection.execute(sa.text("ALTER TABLE products MODIFY price DECIMAL(13, 3)"))


def _retire_pictures_left_dead(connection: sa.Connection) -> None:
    # Older versions let a picture whose address was gone die and no more, while live products
    # still showed it: at its address (it had passed to one of them when its own product died) or
    # through a copy at theirs (another shop selling the same photo). Nothing fetches a dead picture
    # again, so those products stayed out of search for good. Each is retired as one found gone is
    # now (catalogue._retire: its copies go back to never fetched, the live products still linked
    # are unlinked), and the pages of all those products are forgotten (a pass that retires one
    # reads them at once: scrape.passes.read_again), so that the next scrape reads them as new and
    # stores what each shows as a picture of its own.
    from shazzam.catalogue import _forget_page, _retire  # built on this module

    shower, copy = products.alias("shower"), images.alias("copy")
    shown = sa.exists().where(product_images.c.image_id == images.c.id, product_images.c.product_id == shower.c.id,
                              shower.c.is_dead.is_(False))
    copied = sa.exists().where(copy.c.duplicate_of == images.c.id, copy.c.is_dead.is_(False), copy.c.product_id == shower.c.id,
                               shower.c.is_dead.is_(False))
    left_dead = connection.execute(
        sa.select(images.c.id).where(images.c.is_dead.is_(True), images.c.duplicate_of.is_(None),
                                     images.c.status != "failed",  # a failed fetch stays linked now too: the link retries it
                                     sa.or_(shown, copied)).order_by(images.c.id)
    ).scalars().all()
    now = utcnow()
    for image_id in left_dead:
        for product in _retire(connection, image_id, now):
            _forget_page(connection, product)


def _complete_schema(connection: sa.Connection) -> None:
    # Versions 4 and 5 grew after some databases had applied them (shops.attempted_at and
    # products.checked_at joined 4, the duplicate_of index joined 5), and those databases never ran
    # the additions. Every step is idempotent, so running them all again completes any of them.
    for columns in (_V2_COLUMNS, _V3_COLUMNS, _V4_COLUMNS, _V5_COLUMNS):
        _add_missing_columns(connection, columns)
    _create_tables(connection, [shops, products, images, detections, product_images, http_cache])


# Append only, and never edit an entry once released: each runs once per database, in order, inside
# one transaction (on MySQL each DDL statement commits itself, so every step must be safe to rerun).
MIGRATIONS: Sequence[tuple[int, str, Any]] = (
    (1, "shops, products, images, detections", _initial_schema),
    (2, "scrape sources, product freshness and death, image dedup, HTTP cache", _scrape_sources_and_freshness),
    (3, "which model embedded each detection", _detection_models),
    (4, "when each page, product and shop was last visited", _page_visits),
    (5, "the colours of each image, for near-duplicates; the copies of an image indexed", _image_colours),
    (6, "every column and index of versions 1-5, for databases that applied 4 or 5 before they grew", _complete_schema),
    (7, "the images indexed by their bytes' digest", _image_digests_indexed),
    (8, "leases, so that only one crawler fetches from the shops at a time", _leases),
    (9, "what each shop's scrape round has discovered, kept between passes", _discovery),
    (10, "prices to the thousandth, for currencies of three decimals", _prices_to_the_thousandth),
    (11, "pictures older versions let die while live products showed them, retired as a gone one is now", _retire_pictures_left_dead),
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def sqlite_url(path: str | os.PathLike) -> str:
    """The URL of a SQLite file, its path escaped (a folder named "a%20b" or "q?x" stays that folder)."""
    return sa.engine.URL.create("sqlite", database=os.fspath(path)).render_as_string()


def default_url() -> str:
    data_dir = os.environ.get("SHAZZAM_DATA_DIR") or ".shazzam"
    return os.environ.get("SHAZZAM_DB_URL") or sqlite_url(os.path.join(data_dir, "catalogue.db"))


class Database:
    """`Database(url).open_connection()`, then `run_query(sql, params)`; the schema migrates on open."""

    def __init__(self, url: str | None = None, *, migrate: bool = True):
        self.url = url or default_url()
        self.migrate_on_open = migrate
        self.engine: sa.Engine | None = None
        self._lock = threading.Lock()

    def open_connection(self) -> "Database":
        with self._lock:
            if self.engine is None:
                self.engine = _create_engine(self.url)
                if self.migrate_on_open:
                    migrate(self.engine)
        return self

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None

    @property
    def dialect(self) -> str:
        return self._engine().dialect.name

    def _engine(self) -> sa.Engine:
        return self.engine if self.engine is not None else self.open_connection().engine

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        with self._engine().begin() as connection:
            yield connection

    def run_query(self, sql: str | sa.Executable, params: Mapping[str, Any] | None = None) -> list[dict]:
        """Run one statement with bound parameters (`:name` in text SQL); rows as dicts, if any."""
        statement = sa.text(sql) if isinstance(sql, str) else sql
        with self.transaction() as connection:
            result = connection.execute(statement, dict(params or {}))
            return [dict(row) for row in result.mappings()] if result.returns_rows else []


# InnoDB's answers when two transactions wait on each other: 1213, a deadlock (one of them is rolled
# back whole), and 1205, a lock wait timeout. Both pass when the loser runs again.
RETRIED_MYSQL_ERRORS = (1213, 1205)
TRANSACTION_ATTEMPTS = 5


def retried_on_deadlock(function):
    """Run `function` again when MySQL rolled its transaction back for a deadlock or a lock wait.
    Only for a function whose effects are one `Database.transaction`: rolled back, it did nothing."""

    @functools.wraps(function)
    def run(*args, **kwargs):
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                return function(*args, **kwargs)
            except sa.exc.OperationalError as exc:
                code = (getattr(exc.orig, "args", None) or (None,))[0]
                if code not in RETRIED_MYSQL_ERRORS or attempt == TRANSACTION_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0, 0.05 * 2**attempt))  # apart, or they meet again

    return run


def _create_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL is still safe from corruption (a power cut may lose the last
            # commits, never half of one) and spares an fsync per commit: the scraper commits a
            # few times per product, and FULL made those fsyncs half of a scrape's time.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_recycle=300)


MIGRATION_LOCK_TIMEOUT_S = 120


@contextmanager
def _migrating(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection to migrate on, while no other process migrates the database. Many open a fresh
    one at once (Lambdas cold starting after a deploy, `shazzam serve` beside a CLI command), and
    checking for a table then creating it is a race the loser fails ("table already exists").
    MySQL's DDL commits itself, so a transaction cannot hold the others off: a named server lock
    does (GET_LOCK, held by this connection's session); for SQLite, a file lock beside the file.
    One connection for all of it, so a warm Lambda keeps a single pooled connection."""
    with engine.connect() as connection:
        if engine.dialect.name == "mysql":
            name = "CONCAT('shazzam.migrate.', DATABASE())"
            got = connection.execute(sa.text(f"SELECT GET_LOCK({name}, :timeout)"), {"timeout": MIGRATION_LOCK_TIMEOUT_S}).scalar()
            connection.commit()
            if got != 1:
                raise RuntimeError(f"another process held the migration lock for {MIGRATION_LOCK_TIMEOUT_S} s")
            try:
                yield connection
            finally:
                connection.rollback()
                connection.execute(sa.text(f"SELECT RELEASE_LOCK({name})"))
                connection.commit()
        elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            with open(f"{engine.url.database}.migrate-lock", "a") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                yield connection
        else:
            yield connection


def migrate(engine: sa.Engine) -> list[int]:
    """Apply the migrations this database has not seen; returns the versions applied."""
    applied_now = []
    with _migrating(engine) as connection:
        with connection.begin():
            schema_migrations.create(connection, checkfirst=True)
        for version, description, apply in MIGRATIONS:
            with connection.begin():
                if engine.dialect.name == "sqlite":
                    # pysqlite opens a transaction before INSERT/UPDATE/DELETE only, so DDL would
                    # commit statement by statement: begin one explicitly (the file lock above
                    # already keeps other migrators out, so IMMEDIATE waits for nobody else).
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                done = connection.execute(
                    sa.select(schema_migrations.c.version).where(schema_migrations.c.version == version)
                ).first()
                if done:
                    continue
                apply(connection)
                connection.execute(
                    upsert(connection, schema_migrations, {"version": version, "description": description, "applied_at": utcnow()}, update=())
                )
                applied_now.append(version)
    return applied_now


def upsert(connection: sa.Connection, table: sa.Table, values: Mapping[str, Any], update: Sequence[str] | None = None):
    """INSERT, or on a primary-key clash UPDATE the `update` columns (default: all but the key)."""
    keys = [column.name for column in table.primary_key.columns]
    if update is None:
        update = [name for name in values if name not in keys]
    if connection.dialect.name == "mysql":
        statement = mysql.insert(table).values(**values)
        # MySQL needs at least one assignment; a no-op on the key keeps "insert or ignore".
        assignments = {name: statement.inserted[name] for name in update} or {keys[0]: table.c[keys[0]]}
        return statement.on_duplicate_key_update(**assignments)
    statement = sqlite.insert(table).values(**values)
    if not update:
        return statement.on_conflict_do_nothing(index_elements=keys)
    return statement.on_conflict_do_update(index_elements=keys, set_={name: statement.excluded[name] for name in update})
