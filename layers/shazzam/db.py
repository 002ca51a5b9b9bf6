"""The catalogue database: the seed's `Database` API over SQLAlchemy Core.

One code path for both backends: SQLite is the embedded default, MySQL/MariaDB (through pymysql)
runs in the cloud. SQL is always parameterised (`:name` binds), never formatted.
"""

from __future__ import annotations

import json
import os
import threading
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
)

products = sa.Table(
    "products",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("shop_id", sa.String(40), sa.ForeignKey("shops.id"), nullable=False, index=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("title", sa.String(512), nullable=False),
    sa.Column("price", sa.Numeric(12, 2)),
    sa.Column("currency", sa.String(3)),
    sa.Column("category", sa.String(32)),
    sa.Column("brand", sa.String(255)),
    sa.Column("sku", sa.String(255)),
    sa.Column("is_dead", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("last_seen_at", sa.DateTime, nullable=False),
)

images = sa.Table(
    "images",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("product_id", sa.String(40), sa.ForeignKey("products.id"), index=True),
    sa.Column("src_link", sa.Text, nullable=False),
    sa.Column("content_sha256", sa.String(64)),
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    # new -> detected, or failed (with error); is_dead once the shop no longer serves it.
    sa.Column("status", sa.String(16), nullable=False, default="new"),
    sa.Column("error", sa.Text),
    sa.Column("is_dead", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
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
    # pending -> embedded -> indexed, or failed (with error).
    sa.Column("embedding_status", sa.String(16), nullable=False, default="pending"),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(255), nullable=False),
    sa.Column("applied_at", sa.DateTime, nullable=False),
)


def _initial_schema(connection: sa.Connection) -> None:
    metadata.create_all(connection, tables=[shops, products, images, detections], checkfirst=True)


# Append only: each entry runs once per database, in order, inside one transaction.
MIGRATIONS: Sequence[tuple[int, str, Any]] = ((1, "shops, products, images, detections", _initial_schema),)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def default_url() -> str:
    data_dir = os.environ.get("SHAZZAM_DATA_DIR", ".shazzam")
    return os.environ.get("SHAZZAM_DB_URL") or f"sqlite:///{os.path.join(data_dir, 'catalogue.db')}"


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
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_recycle=300)


def migrate(engine: sa.Engine) -> list[int]:
    """Apply the migrations this database has not seen; returns the versions applied."""
    applied_now = []
    with engine.begin() as connection:
        schema_migrations.create(connection, checkfirst=True)
    for version, description, apply in MIGRATIONS:
        with engine.begin() as connection:
            done = connection.execute(
                sa.select(schema_migrations.c.version).where(schema_migrations.c.version == version)
            ).first()
            if done:
                continue
            apply(connection)
            try:
                connection.execute(
                    upsert(connection, schema_migrations, {"version": version, "description": description, "applied_at": utcnow()}, update=())
                )
            except sa.exc.IntegrityError:  # another process migrated concurrently
                continue
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


def to_json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)
