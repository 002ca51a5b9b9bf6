"""The Database API and the catalogue's SQL, on SQLite and on a real MariaDB (db_url runs both)."""

from __future__ import annotations

import json
import multiprocessing
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from shazzam import catalogue, ids
from shazzam.db import MIGRATIONS, Database, detections, images, migrate, product_images, utcnow
from shazzam.scrape import ScrapedProduct
from shazzam.scrape import ShopSource as ScrapedSource

SHOP = "https://shop.example"


@pytest.fixture
def db(db_url):
    database = Database(db_url).open_connection()
    yield database
    database.close()


def product(url: str = f"{SHOP}/p/1", title: str = "Red dress", price: str | None = "19.99", **overrides) -> ScrapedProduct:
    values = dict(
        url=url,
        title=title,
        price=Decimal(price) if price is not None else None,
        currency="EUR",
        category="dress",
        brand="Acme",
        sku="SKU-1",
        image_urls=(f"{url}.jpg",),
    )
    values.update(overrides)
    return ScrapedProduct(**values)


def detection(image_id: str, index: int, box=(0, 0, 10, 10)) -> dict:
    return {"id": ids.detection_id(image_id, index), "box": list(box), "label": "top", "score": 0.9}


def one(db: Database, sql: str, **params) -> dict:
    (row,) = db.run_query(sql, params)
    return row


@pytest.fixture
def image_with_detections(db):
    """A shop, a live product, one image of it with three detections."""
    shop_id = catalogue.add_shop(db, SHOP, "Example")
    product_id = catalogue.save_product(db, shop_id, product())
    image_id = ids.image_id(f"{SHOP}/p/1.jpg")
    catalogue.save_image(db, image_id, f"{SHOP}/p/1.jpg", product_id)
    catalogue.save_detections(db, image_id, [detection(image_id, i) for i in range(3)])
    return shop_id, product_id, image_id


# -- Database ------------------------------------------------------------------------------


def test_open_migrates_once(db_url):
    database = Database(db_url).open_connection()
    assert database.run_query("SELECT version FROM schema_migrations ORDER BY version") == [{"version": v} for v in range(1, len(MIGRATIONS) + 1)]
    for table in ("shops", "products", "images", "detections"):
        assert database.run_query(f"SELECT COUNT(*) AS n FROM {table}") == [{"n": 0}]
    assert migrate(database.engine) == []
    database.close()
    again = Database(db_url).open_connection()
    assert again.run_query("SELECT version, description FROM schema_migrations ORDER BY version")[0]["version"] == 1
    assert len(again.run_query("SELECT version FROM schema_migrations")) == len(MIGRATIONS)
    assert migrate(again.engine) == []
    again.close()


def test_migrate_on_a_fresh_database_applies_every_version(db_url):
    database = Database(db_url, migrate=False).open_connection()
    assert migrate(database.engine) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert migrate(database.engine) == []
    database.close()


def _schema(engine: sa.Engine) -> dict:
    with engine.connect() as connection:
        inspector = sa.inspect(connection)
        return {table: ({column["name"] for column in inspector.get_columns(table)},
                        {index["name"] for index in inspector.get_indexes(table)})
                for table in inspector.get_table_names()}


def test_a_database_that_applied_versions_4_and_5_before_they_grew_is_completed(db_url, monkeypatch):
    # shops.attempted_at and products.checked_at joined version 4, and the duplicate_of index joined
    # version 5, after some databases had applied them: version 6 completes those databases.
    import shazzam.db

    old = Database(db_url, migrate=False).open_connection()
    migrate(old.engine)
    expected = _schema(old.engine)
    with old.engine.begin() as connection:
        for table in ("detections", "product_images", "http_cache", "images", "products", "shops", "schema_migrations"):
            connection.execute(sa.text(f"DROP TABLE {table}"))
    monkeypatch.setattr(shazzam.db, "MIGRATIONS", MIGRATIONS[:5])
    migrate(old.engine)
    with old.engine.begin() as connection:
        connection.execute(sa.text("DROP INDEX ix_images_duplicate_of" + (" ON images" if old.dialect == "mysql" else "")))
        connection.execute(sa.text("ALTER TABLE shops DROP COLUMN attempted_at"))
        connection.execute(sa.text("ALTER TABLE products DROP COLUMN checked_at"))
    monkeypatch.setattr(shazzam.db, "MIGRATIONS", MIGRATIONS)
    assert migrate(old.engine) == [6, 7, 8, 9, 10, 11]
    assert _schema(old.engine) == expected
    shop_id = catalogue.add_shop(old, SHOP, "Example")
    catalogue.mark_shop_attempted(old, shop_id)
    old.close()


def test_version_7_indexes_the_images_by_digest(db_url):
    database = Database(db_url, migrate=False).open_connection()
    migrate(database.engine)
    with database.engine.begin() as connection:  # a database of version 6
        connection.execute(sa.text("DROP INDEX ix_images_content_sha256" + (" ON images" if database.dialect == "mysql" else "")))
        connection.execute(sa.text("DELETE FROM schema_migrations WHERE version = 7"))
    assert "ix_images_content_sha256" not in _schema(database.engine)["images"][1]
    assert migrate(database.engine) == [7]
    assert "ix_images_content_sha256" in _schema(database.engine)["images"][1]
    database.close()


def test_version_11_retires_the_pictures_older_versions_let_die_under_live_products(db_url):
    # An older revalidate found the picture's address gone and marked it dead, no more: it had passed
    # to another shop's product showing a copy of it when its own product died, and that product kept
    # linking it, its copy left a copy of a dead picture. Nothing fetched either again.
    database = Database(db_url).open_connection()
    other = "https://other.example"
    gone, kept = catalogue.add_shop(database, SHOP, "Gone"), catalogue.add_shop(database, other, "Kept")
    dead = catalogue.save_product(database, gone, product())
    live = catalogue.save_product(database, kept, product(url=f"{other}/p/1"))
    catalogue.save_page_cache(database, kept, f"{other}/p/1", '"v1"', None, "cd" * 32)
    original, copy = ids.image_id(f"{SHOP}/p/1.jpg"), ids.image_id(f"{other}/p/1.jpg")
    catalogue.save_image(database, original, f"{SHOP}/p/1.jpg", live)
    catalogue.update_image(database, original, status="detected", content_sha256="ab" * 32, is_dead=True)
    catalogue.save_image(database, copy, f"{other}/p/1.jpg", live)
    catalogue.update_image(database, copy, status="duplicate", content_sha256="ab" * 32, duplicate_of=original)
    for shown_by in (dead, live):
        catalogue.link_image(database, shown_by, original, if_live=False)
    catalogue.mark_product_dead(database, dead, "http-404")
    assert catalogue.images_to_fetch_again(database, [live]) == []  # out of search for good
    with database.transaction() as connection:
        connection.execute(sa.text("DELETE FROM schema_migrations WHERE version = 11"))
    assert migrate(database.engine) == [11]
    assert catalogue.images_to_fetch_again(database, [live]) == [{"product_id": live, "src_link": f"{other}/p/1.jpg", "position": 0, "stored": False}]
    links = database.run_query("SELECT product_id FROM product_images WHERE image_id = :id", {"id": original})
    assert links == [{"product_id": dead}]  # a tombstone's links stay
    assert catalogue.products_of_shop(database, kept)[f"{other}/p/1"]["fingerprint"] is None  # read as new by the next scrape
    assert catalogue.page_cache(database, kept)[f"{other}/p/1"]["content_sha256"] is None
    database.close()


def test_a_migration_cut_between_a_table_and_its_index_is_completed_when_rerun(db_url):
    database = Database(db_url, migrate=False).open_connection()

    class Cut(Exception):
        pass

    def cut_before_the_index(_connection, _cursor, statement, *_args):
        if statement.startswith("CREATE INDEX ix_http_cache_shop_id"):
            raise Cut(statement)

    sa.event.listen(database.engine, "before_cursor_execute", cut_before_the_index)
    with pytest.raises(Cut):
        migrate(database.engine)
    sa.event.remove(database.engine, "before_cursor_execute", cut_before_the_index)
    tables = set(sa.inspect(database.engine).get_table_names())
    if database.dialect == "sqlite":  # one transaction per version: version 2 left nothing behind
        assert "http_cache" not in tables and "product_images" not in tables
    assert migrate(database.engine) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert "ix_http_cache_shop_id" in _schema(database.engine)["http_cache"][1]
    database.close()


def _open_at_once(url: str, barrier, outcomes) -> None:
    barrier.wait()
    try:
        Database(url).open_connection().run_query("SELECT 1")
        outcomes.put("opened")
    except Exception as exc:  # noqa: BLE001 - the test reports what each process met
        outcomes.put(repr(exc))


def test_processes_opening_a_fresh_database_at_once_all_open_it(db_url):
    # Lambdas cold-starting after a deploy, or `shazzam serve` beside a CLI command: each migrates.
    context = multiprocessing.get_context("fork")
    barrier, outcomes = context.Barrier(8), context.Queue()
    processes = [context.Process(target=_open_at_once, args=(db_url, barrier, outcomes)) for _ in range(8)]
    for process in processes:
        process.start()
    results = [outcomes.get(timeout=120) for _ in processes]
    for process in processes:
        process.join()
    assert results == ["opened"] * 8
    database = Database(db_url, migrate=False).open_connection()
    assert len(database.run_query("SELECT version FROM schema_migrations")) == len(MIGRATIONS)
    database.close()


def test_dialect(db, db_url):
    assert db.dialect == ("sqlite" if db_url.startswith("sqlite") else "mysql")


def test_run_query_binds_named_params_and_returns_dicts(db):
    catalogue.add_shop(db, SHOP, "Example")
    rows = db.run_query("SELECT id, name, base_url FROM shops WHERE base_url = :url", {"url": f"{SHOP}/"})
    assert rows == [{"id": ids.shop_id(f"{SHOP}/"), "name": "Example", "base_url": f"{SHOP}/"}]
    assert db.run_query("SELECT id FROM shops WHERE base_url = :url", {"url": "https://other"}) == []
    assert db.run_query("UPDATE shops SET name = :name", {"name": "Renamed"}) == []
    assert one(db, "SELECT name FROM shops")["name"] == "Renamed"


def test_injection_shaped_values_are_stored_verbatim(db):
    nasty = "https://shop.example/x'); DROP TABLE shops; --"
    shop_id = catalogue.add_shop(db, nasty, nasty)
    db.run_query(
        "UPDATE shops SET name = :name WHERE id = :id", {"name": 'Robert"); DROP TABLE products;-- \\', "id": shop_id}
    )
    row = one(db, "SELECT base_url, name FROM shops WHERE id = :id", id=shop_id)
    stored = nasty.replace(" ", "%20")  # an address's spaces escaped, as a browser sends them; nothing else touched
    assert row == {"base_url": stored, "name": 'Robert"); DROP TABLE products;-- \\'}
    assert one(db, "SELECT COUNT(*) AS n FROM products")["n"] == 0  # the table survived
    assert db.run_query("SELECT id FROM shops WHERE base_url = :u", {"u": stored}) == [{"id": shop_id}]


@pytest.mark.parametrize("price, currency, stored", [
    ("12345678901234.5", "EUR", (None, "EUR")),  # does not fit NUMERIC(13, 3): MySQL refused the row
    ("1.005", "EURO", (Decimal("1.00"), None)),  # a currency that is not an ISO code: refused too
    ("1e40", "usd", (None, None)),
])
def test_a_price_or_currency_the_columns_cannot_hold_is_dropped_not_the_product(db, price, currency, stored):
    shop_id = catalogue.add_shop(db, SHOP, "Example")
    product_id = catalogue.save_product(db, shop_id, product(price=price, currency=currency))
    row = one(db, "SELECT price, currency FROM products WHERE id = :id", id=product_id)
    assert (row["price"], row["currency"]) == stored


@pytest.mark.parametrize("price, currency, shown", [
    ("12.505", "KWD", "12.505"),  # a dinar is 1,000 fils: its thousandths were lost
    ("12.5", "KWD", "12.500"),
    ("12.505", "EUR", "12.50"),  # to the cent, the nearest even
    ("1200", "JPY", "1200.00"),
])
def test_a_price_is_kept_and_shown_to_its_currencys_minor_unit(db, price, currency, shown):
    from shazzam.money import price_text
    from shazzam.pipeline import SearchFilters

    shop_id, product_id, image_id = catalogue.add_shop(db, SHOP, "Example"), None, ids.image_id(f"{SHOP}/p/1.jpg")
    product_id = catalogue.save_product(db, shop_id, product(price=price, currency=currency))
    catalogue.save_image(db, image_id, f"{SHOP}/p/1.jpg", product_id)
    catalogue.save_detections(db, image_id, [detection(image_id, 0)])
    item = catalogue.get_item(db, product_id)
    assert price_text(item["price"], item["currency"]) == shown
    d0 = ids.detection_id(image_id, 0)
    exactly = SearchFilters(min_price=Decimal(shown), max_price=Decimal(shown))
    assert len(catalogue.items_for_detections(db, [d0], exactly)[d0]) == 1
    above = SearchFilters(min_price=Decimal(shown) + Decimal("0.001"))
    assert catalogue.items_for_detections(db, [d0], above) == {}


def test_an_image_no_page_shows_any_more_dies_and_a_shared_one_changes_owner(db):
    shop_id = catalogue.add_shop(db, SHOP, "Example")
    first = catalogue.save_product(db, shop_id, product())
    second = catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/2"))
    for image_url, owners in ((f"{SHOP}/old.jpg", [first]), (f"{SHOP}/shared.jpg", [first, second]), (f"{SHOP}/new.jpg", [first])):
        catalogue.save_image(db, ids.image_id(image_url), image_url, owners[0])
        for owner in owners:
            catalogue.link_image(db, owner, ids.image_id(image_url))
    dropped, _ = catalogue.drop_images_not_shown(db, first, {ids.image_id(f"{SHOP}/new.jpg")})
    assert sorted(dropped) == sorted(ids.image_id(f"{SHOP}/{name}.jpg") for name in ("old", "shared"))
    assert catalogue.get_image(db, ids.image_id(f"{SHOP}/old.jpg"))["is_dead"]
    shared = catalogue.get_image(db, ids.image_id(f"{SHOP}/shared.jpg"))
    assert not shared["is_dead"] and shared["product_id"] == second
    assert catalogue.get_item(db, first)["image_urls"] == [f"{SHOP}/new.jpg"]


def test_images_to_fetch_again_are_the_passing_failures_and_the_never_fetched(db):
    shop_id = catalogue.add_shop(db, SHOP, "Example")
    owner = catalogue.save_product(db, shop_id, product())
    states = {"stored": ("new", "ab" * 32, None), "timed-out": ("failed", None, "fetch failed (timeout): slow"),
              "gone": ("failed", None, "fetch failed (http-404): HTTP 404"), "never-fetched": ("new", None, None),
              # refused by detect before a JPEG over the pixel limit was decoded smaller: fetched again
              "huge": ("failed", None, "image is 8000x5200 = 41600000 pixels, more than the 40000000 allowed"),
              # refused by the scrape itself, as it still would be: not
              "too-large": ("failed", None, "fetch failed (too-large): image is 9000x9000 = 81000000 pixels, more than the 64000000 allowed")}
    for position, (name, (status, digest, error)) in enumerate(states.items()):
        image_id = ids.image_id(f"{SHOP}/{name}.jpg")
        catalogue.save_image(db, image_id, f"{SHOP}/{name}.jpg", owner)
        catalogue.update_image(db, image_id, status=status, content_sha256=digest, error=error)
        if name != "never-fetched":  # linked once stored or failed
            catalogue.link_image(db, owner, image_id, position)
    again = catalogue.images_to_fetch_again(db, [owner])
    assert again == [{"product_id": owner, "src_link": f"{SHOP}/never-fetched.jpg", "position": 0, "stored": False},
                     {"product_id": owner, "src_link": f"{SHOP}/timed-out.jpg", "position": 1, "stored": False},
                     {"product_id": owner, "src_link": f"{SHOP}/huge.jpg", "position": 4, "stored": False}]
    stored = ids.image_id(f"{SHOP}/stored.jpg")
    with db.transaction() as connection:  # an hour on, detect has still not seen it
        connection.execute(sa.update(images).where(images.c.id == stored).values(updated_at=utcnow() - catalogue.UNDETECTED_AFTER))
    assert catalogue.images_to_fetch_again(db, [owner])[1] == {"product_id": owner, "src_link": f"{SHOP}/stored.jpg", "position": 0, "stored": True}
    catalogue.update_image(db, stored, status="detected")
    assert [row["src_link"] for row in catalogue.images_to_fetch_again(db, [owner])] == [f"{SHOP}/never-fetched.jpg", f"{SHOP}/timed-out.jpg", f"{SHOP}/huge.jpg"]
    garments = [{"id": ids.detection_id(stored, n), "box": [0, 0, 9, 9], "label": "top", "score": 0.9} for n in range(3)]
    catalogue.save_detections(db, stored, garments)
    catalogue.update_detection(db, garments[0]["id"], embedding_status="indexed")
    catalogue.update_detection(db, garments[1]["id"], embedding_status="failed", error="not a garment")
    with db.transaction() as connection:  # a day on, the third is still waiting for its crop: standardise gave up
        connection.execute(sa.update(detections).values(updated_at=utcnow() - catalogue.UNFINISHED_AFTER))
    assert catalogue.images_to_fetch_again(db, [owner])[1] == {"product_id": owner, "src_link": f"{SHOP}/stored.jpg", "position": 0, "stored": True}
    catalogue.update_detection(db, garments[2]["id"], embedding_status="embedded")
    with db.transaction() as connection:  # its vector waits in vectors/pending/ for an index run, however long
        connection.execute(sa.update(detections).values(updated_at=utcnow() - catalogue.UNFINISHED_AFTER))
    assert len(catalogue.images_to_fetch_again(db, [owner])) == 3


def test_images_whose_links_differ_only_in_case_are_all_fetched_again(db):
    # MySQL's collation takes Dress.JPG and dress.jpg for one value; on a CDN they are two pictures.
    shop_id = catalogue.add_shop(db, SHOP, "Example")
    owner = catalogue.save_product(db, shop_id, product())
    links = [f"{SHOP}/cdn/Dress.JPG", f"{SHOP}/cdn/dress.jpg"]
    for link in links:
        catalogue.save_image(db, ids.image_id(link), link, owner)
    again = catalogue.images_to_fetch_again(db, [owner])
    assert sorted(row["src_link"] for row in again) == sorted(links)


def test_revalidate_visits_the_least_recently_seen_first(db):
    from datetime import datetime

    shop_id = catalogue.add_shop(db, SHOP, "Example")
    first = catalogue.save_product(db, shop_id, product())
    second = catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/2"))
    # the first seen again later (a run cut short visited it, not the other); MySQL keeps whole seconds
    db.run_query("UPDATE products SET last_seen_at = :at WHERE id = :id", {"at": datetime(2030, 1, 1), "id": first})
    assert [row["id"] for row in catalogue.products_to_revalidate(db)] == [second, first]


def test_a_dead_product_checked_and_still_gone_goes_to_the_back_of_revalidate(db):
    from datetime import datetime

    shop_id = catalogue.add_shop(db, SHOP, "Example")
    dead, second, third = (catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/{n}")) for n in (1, 2, 3))
    for second_of_minute, product_id in enumerate((dead, second, third), 1):
        db.run_query("UPDATE products SET last_seen_at = :at WHERE id = :id", {"at": datetime(2026, 1, 1, 0, 0, second_of_minute), "id": product_id})
    catalogue.mark_product_dead(db, dead, "http-404")  # dead products are not seen again...
    catalogue.mark_product_checked(db, dead)  # ...but revalidate checked it: the others' turn first
    assert [row["id"] for row in catalogue.products_to_revalidate(db)] == [second, third, dead]


def test_a_product_dead_for_longer_than_a_month_is_left_to_the_scrape(db):
    """Revalidate's budget goes to live products, not to a shop's ever-growing dead."""
    from datetime import timedelta

    from shazzam.db import utcnow

    shop_id = catalogue.add_shop(db, SHOP, "Example")
    live, recent, old = (catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/{n}")) for n in (1, 2, 3))
    for product_id, days in ((recent, 29), (old, 31)):
        catalogue.mark_product_dead(db, product_id, "http-404")
        db.run_query("UPDATE products SET dead_at = :at WHERE id = :id", {"at": utcnow() - timedelta(days=days), "id": product_id})
    assert {row["id"] for row in catalogue.products_to_revalidate(db)} == {live, recent}


def test_run_query_rolls_back_a_failed_statement(db):
    with pytest.raises(sa.exc.IntegrityError):
        db.run_query(
            "INSERT INTO products (id, shop_id, url, title, is_dead, created_at, last_seen_at) "
            "VALUES ('p', 'no-such-shop', 'u', 't', 0, '2024-01-01', '2024-01-01')"
        )
    assert one(db, "SELECT COUNT(*) AS n FROM products")["n"] == 0


# -- catalogue -----------------------------------------------------------------------------


def test_add_shop_is_idempotent(db):
    first = catalogue.add_shop(db, SHOP, "Example")
    second = catalogue.add_shop(db, SHOP, "Example Renamed")
    assert first == second == ids.shop_id(f"{SHOP}/")
    assert db.run_query("SELECT id, name FROM shops") == [{"id": first, "name": "Example Renamed"}]
    assert [shop["base_url"] for shop in catalogue.active_shops(db)] == [f"{SHOP}/"]
    catalogue.add_shop(db, SHOP)  # as `shazzam ingest --shop URL` does: no name given, the name stays
    assert db.run_query("SELECT name FROM shops") == [{"name": "Example Renamed"}]


def test_every_spelling_of_a_shops_address_is_one_shop(db):
    shop_id = catalogue.add_shop(db, "HTTPS://Shop.Example:443", "Example")
    for spelling in (SHOP, f"{SHOP}/", "https://SHOP.example/#top"):
        assert catalogue.add_shop(db, spelling) == shop_id
    assert catalogue.save_source(db, ScrapedSource(base_url=SHOP, name="Example", delay_s=2.0)) == shop_id
    assert db.run_query("SELECT base_url, name, delay_s FROM shops") == [
        {"base_url": f"{SHOP}/", "name": "Example", "delay_s": 2.0}
    ]
    assert catalogue.add_shop(db, f"{SHOP}/en/") != shop_id  # another path is another shop


def test_a_shop_saved_under_another_spelling_keeps_its_id(db):
    # A row from before addresses were made canonical: its id is the hash of the address as typed.
    legacy = ids.shop_id(SHOP)
    db.run_query(
        "INSERT INTO shops (id, base_url, name, active, created_at, is_local) "
        "VALUES (:id, :url, 'Example', 1, '2026-01-01', 0)", {"id": legacy, "url": SHOP}
    )
    catalogue.save_product(db, legacy, product(title="Red dress", price="19.99"))
    assert catalogue.add_shop(db, f"{SHOP}/") == legacy
    assert db.run_query("SELECT id, base_url, name FROM shops") == [{"id": legacy, "base_url": f"{SHOP}/", "name": "Example"}]


def test_save_product_upserts_and_revives(db):
    shop_id = catalogue.add_shop(db, SHOP)
    product_id = catalogue.save_product(db, shop_id, product(title="Red dress", price="19.99"))
    assert product_id == ids.product_id(f"{SHOP}/p/1")
    created = one(db, "SELECT created_at FROM products WHERE id = :id", id=product_id)["created_at"]
    catalogue.mark_product_dead(db, product_id)
    assert catalogue.counts(db)["products"] == 0

    again = catalogue.save_product(db, shop_id, product(title="Red dress, now cheaper", price="9.50", brand=None))
    assert again == product_id
    row = one(db, "SELECT title, price, brand, is_dead, created_at FROM products WHERE id = :id", id=product_id)
    assert row["title"] == "Red dress, now cheaper"
    assert Decimal(str(row["price"])) == Decimal("9.50")
    assert row["brand"] is None
    assert not row["is_dead"]
    assert row["created_at"] == created  # the first sighting is kept
    assert one(db, "SELECT COUNT(*) AS n FROM products")["n"] == 1
    assert db.run_query("SELECT id, url FROM products WHERE NOT is_dead") == [{"id": product_id, "url": f"{SHOP}/p/1"}]


def test_save_product_truncates_long_titles(db):
    shop_id = catalogue.add_shop(db, SHOP)
    product_id = catalogue.save_product(db, shop_id, product(title="é" * 600, price=None))
    row = one(db, "SELECT title, price FROM products WHERE id = :id", id=product_id)
    assert row == {"title": "é" * 512, "price": None}


def test_whatever_a_shop_sends_is_stored_on_both_databases(db):
    """MariaDB in strict mode refuses text its columns cannot hold, where SQLite keeps anything."""
    shop_id = catalogue.add_shop(db, f"{SHOP}/" + "c" * 300)  # its name is its URL: cut to the column
    catalogue.save_source(db, ScrapedSource(base_url="https://other.example/", name="n" * 300))
    product_id = catalogue.save_product(db, shop_id, product(
        title="Summer dress \ud83d",  # half an emoji, as a CMS cutting UTF-16 leaves it
        breadcrumb="👗" * 20_000,  # 80 kB of UTF-8: more than a TEXT column
        sizes=tuple(f"EU {n}" for n in range(7_000)),  # 76 kB of JSON
    ))
    row = one(db, "SELECT title, breadcrumb, sizes FROM products WHERE id = :id", id=product_id)
    assert row["title"] == "Summer dress \ufffd" and len(row["breadcrumb"].encode()) <= catalogue.TEXT_BYTES
    sizes = json.loads(row["sizes"])
    assert sizes[:2] == ["EU 0", "EU 1"] and len(row["sizes"]) <= catalogue.TEXT_BYTES


def test_save_image_keeps_hash_and_status_on_resave(db):
    shop_id = catalogue.add_shop(db, SHOP)
    product_id = catalogue.save_product(db, shop_id, product())
    image_id = ids.image_id("https://cdn/x.jpg")
    catalogue.save_image(db, image_id, "https://cdn/x.jpg", product_id)
    assert catalogue.get_image(db, image_id)["status"] == "new"
    catalogue.update_image(db, image_id, content_sha256="ab" * 32, status="detected", width=640, height=480)
    catalogue.save_image(db, image_id, "https://cdn/x.jpg", product_id)
    image = catalogue.get_image(db, image_id)
    assert (image["content_sha256"], image["status"], image["width"]) == ("ab" * 32, "detected", 640)
    assert catalogue.product_category_of_image(db, image_id) == "dress"
    assert catalogue.get_image(db, "missing") is None


def test_save_detections_replaces_the_set(db, image_with_detections):
    _, _, image_id = image_with_detections
    rows = db.run_query("SELECT id FROM detections WHERE image_id = :i ORDER BY id", {"i": image_id})
    assert [row["id"] for row in rows] == [ids.detection_id(image_id, i) for i in range(3)]

    catalogue.update_detection(db, ids.detection_id(image_id, 0), embedding_status="embedded", category="top")
    # A re-detect finds one box fewer, and moves the first.
    catalogue.save_detections(db, image_id, [detection(image_id, 0, box=(5, 6, 70, 80)), detection(image_id, 1)])
    rows = db.run_query("SELECT id FROM detections WHERE image_id = :i ORDER BY id", {"i": image_id})
    assert [row["id"] for row in rows] == [ids.detection_id(image_id, 0), ids.detection_id(image_id, 1)]
    first = catalogue.get_detection(db, ids.detection_id(image_id, 0))
    assert [first[c] for c in ("box_left", "box_top", "box_right", "box_bottom")] == [5, 6, 70, 80]
    assert first["embedding_status"] == "embedded"  # a replay does not reset progress
    assert catalogue.get_detection(db, ids.detection_id(image_id, 2)) is None

    catalogue.save_detections(db, image_id, [])
    assert catalogue.counts(db)["detections"] == 0


def test_save_detections_leaves_other_images_alone(db, image_with_detections):
    _, product_id, image_id = image_with_detections
    other = ids.image_id("https://cdn/other.jpg")
    catalogue.save_image(db, other, "https://cdn/other.jpg", product_id)
    catalogue.save_detections(db, other, [detection(other, 0)])
    assert catalogue.counts(db)["detections"] == 4


def test_mark_indexed_only_moves_embedded_rows(db, image_with_detections):
    _, _, image_id = image_with_detections
    d0, d1, d2 = (ids.detection_id(image_id, i) for i in range(3))
    catalogue.update_detection(db, d0, embedding_status="embedded", category="top")
    catalogue.update_detection(db, d1, embedding_status="failed", error="bad crop")
    catalogue.mark_indexed(db, [d0, d1, d2, "unknown-id"])
    statuses = {row["id"]: row["embedding_status"] for row in db.run_query("SELECT id, embedding_status FROM detections")}
    assert statuses == {d0: "indexed", d1: "failed", d2: "pending"}
    assert catalogue.counts(db)["indexed"] == 1
    catalogue.mark_indexed(db, [])  # nothing to do is fine


def test_mark_indexed_in_chunks(db, image_with_detections):
    _, _, image_id = image_with_detections
    found = [detection(image_id, i) for i in range(600)]
    catalogue.save_detections(db, image_id, found)
    db.run_query("UPDATE detections SET embedding_status = 'embedded'")
    catalogue.mark_indexed(db, [d["id"] for d in found])
    assert catalogue.counts(db)["indexed"] == 600


def test_an_items_pictures_come_in_the_pages_order(db):
    shop_id = catalogue.add_shop(db, SHOP)
    product_id = catalogue.save_product(db, shop_id, product())
    # the page's first picture has the larger id, so an order by id would show it last
    first, second = sorted((f"{SHOP}/a.jpg", f"{SHOP}/b.jpg"), key=ids.image_id, reverse=True)
    for position, url in enumerate((first, second)):
        catalogue.save_image(db, ids.image_id(url), url, product_id)
        catalogue.link_image(db, product_id, ids.image_id(url), position)
    assert catalogue.get_item(db, product_id)["image_urls"] == [first, second]


def test_mark_product_dead_marks_its_images(db, image_with_detections):
    shop_id, product_id, image_id = image_with_detections
    other_product = catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/2"))
    other_image = ids.image_id("https://cdn/2.jpg")
    catalogue.save_image(db, other_image, "https://cdn/2.jpg", other_product)
    catalogue.mark_product_dead(db, product_id)
    assert catalogue.get_image(db, image_id)["is_dead"]
    assert not catalogue.get_image(db, other_image)["is_dead"]
    assert db.run_query("SELECT id FROM images WHERE NOT is_dead") == [{"id": other_image}]
    assert db.run_query("SELECT id FROM products WHERE NOT is_dead") == [{"id": other_product}]


def test_dead_indexed_detections_group_by_category(db, image_with_detections):
    shop_id, product_id, image_id = image_with_detections
    d0, d1, d2 = (ids.detection_id(image_id, i) for i in range(3))
    for det, category in ((d0, "top"), (d1, "trousers"), (d2, "top")):
        catalogue.update_detection(db, det, embedding_status="embedded", category=category)
    catalogue.mark_indexed(db, [d0, d1])  # d2 stays embedded: not in a shard yet

    live_product = catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/2"))
    live_image = ids.image_id("https://cdn/2.jpg")
    catalogue.save_image(db, live_image, "https://cdn/2.jpg", live_product)
    catalogue.save_detections(db, live_image, [detection(live_image, 0)])
    catalogue.update_detection(db, ids.detection_id(live_image, 0), embedding_status="indexed", category="top")

    assert catalogue.dead_indexed_detections(db) == {}
    catalogue.mark_product_dead(db, product_id)
    assert catalogue.dead_indexed_detections(db) == {"top": {d0}, "trousers": {d1}}

    catalogue.mark_unindexed(db, [d0, d1])
    assert catalogue.dead_indexed_detections(db) == {}


def test_a_picture_that_became_a_copy_of_another_leaves_its_shard(db, image_with_detections):
    # Fetched again, its address now served another stored picture's bytes: it stands for that one,
    # and its own vector stayed in the shard for good.
    shop_id, product_id, image_id = image_with_detections
    d0 = ids.detection_id(image_id, 0)
    catalogue.update_detection(db, d0, embedding_status="indexed", category="dress")
    assert catalogue.dead_indexed_detections(db) == {}
    other = ids.image_id(f"{SHOP}/p/2.jpg")
    catalogue.save_image(db, other, f"{SHOP}/p/2.jpg", product_id)
    catalogue.update_image(db, image_id, duplicate_of=other, status="duplicate")
    catalogue.link_image(db, product_id, image_id, 0)  # a product still shows it at its address: its vector stays
    assert catalogue.dead_indexed_detections(db) == {}
    with db.transaction() as connection:
        connection.execute(sa.delete(product_images).where(product_images.c.image_id == image_id))  # shown by none
    assert catalogue.dead_indexed_detections(db) == {"dress": {d0}}


def test_items_for_detections_excludes_dead_products(db, image_with_detections):
    shop_id, product_id, image_id = image_with_detections
    d0, d1, _ = (ids.detection_id(image_id, i) for i in range(3))
    items = catalogue.items_for_detections(db, [d0, d1, "unknown"])
    assert set(items) == {d0, d1}
    (item,) = items[d0]
    assert item["product_id"] == product_id
    assert item["title"] == "Red dress"
    assert Decimal(str(item["price"])) == Decimal("19.99")
    assert (item["currency"], item["brand"], item["shop"]) == ("EUR", "Acme", "Example")
    assert item["image_url"] == f"{SHOP}/p/1.jpg"
    assert catalogue.items_for_detections(db, []) == {}

    catalogue.mark_product_dead(db, product_id)
    assert catalogue.items_for_detections(db, [d0, d1]) == {}


def test_a_picture_two_shops_sell_is_each_shops_item(db, image_with_detections):
    # Search followed a picture to its first product only: the other shop's, linked to the same
    # picture, was never a result, not even filtered to its own shop or price.
    from shazzam.pipeline import SearchFilters

    _, first, image_id = image_with_detections
    d0 = ids.detection_id(image_id, 0)
    other_shop = catalogue.add_shop(db, "https://other.example", "Other")
    second = catalogue.save_product(db, other_shop, product(url="https://other.example/p/1", price="9.00"))
    copy_id = ids.image_id("https://other.example/1.jpg")  # its own address of the same picture
    catalogue.save_image(db, copy_id, "https://other.example/1.jpg", second)
    catalogue.update_image(db, copy_id, duplicate_of=image_id, status="duplicate")
    catalogue.link_image(db, second, image_id, 0)
    both = catalogue.items_for_detections(db, [d0])[d0]
    assert sorted(item["product_id"] for item in both) == sorted([first, second])
    (cheap,) = catalogue.items_for_detections(db, [d0], SearchFilters(max_price=Decimal("10")))[d0]
    assert cheap["product_id"] == second and cheap["image_url"] == "https://other.example/1.jpg"  # at its own address
    assert catalogue.get_item(db, second)["image_urls"] == ["https://other.example/1.jpg"]


def test_a_picture_products_of_two_categories_share_is_an_item_of_its_owners_category_only(db, image_with_detections):
    # A dress and a skirt showing one picture: its garment is the dress's, indexed with the
    # dresses, where the skirt was an answer to a search for dresses.
    shop_id, dress, image_id = image_with_detections
    d0 = ids.detection_id(image_id, 0)
    skirt = catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/skirt", title="Skirt", category="skirt"))
    unfiled = catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/set", title="Two-piece set", category=None))
    elsewhere = catalogue.save_product(db, catalogue.add_shop(db, "https://other.example"),
                                       product(url="https://other.example/p/1", category="skirt"))  # the same shot, filed otherwise
    for other in (skirt, unfiled, elsewhere):
        catalogue.link_image(db, other, image_id, 0)
    assert sorted(item["product_id"] for item in catalogue.items_for_detections(db, [d0])[d0]) == sorted([dress, unfiled, elsewhere])
    catalogue.mark_product_dead(db, dress)  # the picture passes to one of the shop's others, whose garment it shows now
    assert catalogue.get_image(db, image_id)["product_id"] in (skirt, unfiled)
    assert sorted(item["product_id"] for item in catalogue.items_for_detections(db, [d0])[d0]) == sorted([skirt, unfiled, elsewhere])


def test_another_shops_copy_of_a_look_photo_is_judged_by_that_shops_owner(db, image_with_detections):
    # Shop B sells the same look photo (its own copy of it) on its dress and its skirt: its skirt
    # was an answer to a search for dresses.
    _, dress_a, picture = image_with_detections
    d0 = ids.detection_id(picture, 0)
    other = "https://other.example"
    shop_b = catalogue.add_shop(db, other)
    dress_b, skirt_b = (catalogue.save_product(db, shop_b, product(url=f"{other}/p/{category}", category=category)) for category in ("dress", "skirt"))
    copy_id = ids.image_id(f"{other}/look.jpg")
    catalogue.save_image(db, copy_id, f"{other}/look.jpg", dress_b)
    catalogue.update_image(db, copy_id, status="duplicate", duplicate_of=picture)
    for shown_by in (dress_b, skirt_b):
        catalogue.link_image(db, shown_by, picture, 0)
    assert sorted(item["product_id"] for item in catalogue.items_for_detections(db, [d0])[d0]) == sorted([dress_a, dress_b])
    own_copy = ids.image_id(f"{other}/skirt-look.jpg")  # the skirt shows a copy of its own: the dress still shows it too
    catalogue.save_image(db, own_copy, f"{other}/skirt-look.jpg", skirt_b)
    catalogue.update_image(db, own_copy, status="duplicate", duplicate_of=picture)
    assert sorted(item["product_id"] for item in catalogue.items_for_detections(db, [d0])[d0]) == sorted([dress_a, dress_b])
    catalogue.mark_product_dead(db, dress_b)  # the skirt alone shows it in shop B now: the same shot, named otherwise
    assert sorted(item["product_id"] for item in catalogue.items_for_detections(db, [d0])[d0]) == sorted([dress_a, skirt_b])


def test_a_pictures_live_owner_is_a_product_that_still_shows_it(db, image_with_detections):
    _, dress, image_id = image_with_detections
    catalogue.link_image(db, dress, image_id, 0)
    assert catalogue.live_owner(db, image_id) == dress
    catalogue.drop_images_not_shown(db, dress, set())  # its page shows it no more: it dies, still filed under the dress
    assert catalogue.get_image(db, image_id)["product_id"] == dress and catalogue.live_owner(db, image_id) is None


def test_a_picture_whose_owner_is_of_another_category_than_its_garment_is_fetched_again_by_its_owner_only(db, image_with_detections):
    shop_id, dress, picture = image_with_detections
    skirt = catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/skirt", title="Skirt", category="skirt"))
    own = ids.image_id(f"{SHOP}/p/skirt.jpg")  # the skirt's own picture, filed where it belongs
    catalogue.save_image(db, own, f"{SHOP}/p/skirt.jpg", skirt)
    for shown_by, image_id, category in ((dress, picture, "dress"), (skirt, picture, None), (skirt, own, "skirt")):
        catalogue.link_image(db, shown_by, image_id, 0)
        if category:
            catalogue.update_image(db, image_id, status="detected", content_sha256=image_id)
            catalogue.save_detections(db, image_id, [detection(image_id, 0)])
            catalogue.update_detection(db, ids.detection_id(image_id, 0), embedding_status="indexed", category=category)
    assert catalogue.images_to_fetch_again(db, [dress, skirt]) == []
    catalogue.mark_product_dead(db, dress)  # the look photo passes to the skirt, its garment still with the dresses
    assert [(row["src_link"], row["stored"]) for row in catalogue.images_to_fetch_again(db, [skirt])] == [(f"{SHOP}/p/1.jpg", True)]


def test_a_picture_passes_to_a_product_of_its_owners_category_first(db, image_with_detections):
    shop_id, dress, image_id = image_with_detections
    # The skirt's id comes first: among the heirs of one shop, the first by id was taken.
    heirs = {category: catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/{category}-1", category=category))
             for category in ("skirt", "dress")}
    assert heirs["skirt"] < heirs["dress"]
    for heir in heirs.values():
        catalogue.link_image(db, heir, image_id, 0)
    catalogue.mark_product_dead(db, dress)
    assert catalogue.get_image(db, image_id)["product_id"] == heirs["dress"]  # its garment stays indexed where it is
    catalogue.mark_product_dead(db, heirs["dress"])
    assert catalogue.get_image(db, image_id)["product_id"] == heirs["skirt"]  # fetched again at its next visit


def test_counts(db, image_with_detections):
    _, _, image_id = image_with_detections
    catalogue.update_image(db, image_id, status="failed", error="corrupt")
    catalogue.update_detection(db, ids.detection_id(image_id, 0), embedding_status="indexed")
    assert catalogue.counts(db) == {
        "shops": 1, "products": 1, "images": 1, "images_failed": 1, "detections": 3, "indexed": 1,
    }
    catalogue.take_shop_off(db, SHOP)  # its items are not shown: not counted as the catalogue's either
    assert catalogue.counts(db)["shops"] == catalogue.counts(db)["products"] == 0


def test_mark_shop_scraped(db):
    shop_id = catalogue.add_shop(db, SHOP)
    assert one(db, "SELECT last_scraped_at FROM shops")["last_scraped_at"] is None
    catalogue.mark_shop_scraped(db, shop_id)
    assert one(db, "SELECT last_scraped_at FROM shops")["last_scraped_at"] is not None


def test_a_picture_two_shops_show_at_one_address_passes_to_the_other_shop(db):
    # A brand's CDN both shops allow: when the first shop's product sold out, the picture died
    # (and came back at the other's next visit, to die again at the first's).
    first_shop, other_shop = catalogue.add_shop(db, SHOP, "A"), catalogue.add_shop(db, "https://other.example", "B")
    first = catalogue.save_product(db, first_shop, product())
    other = catalogue.save_product(db, other_shop, product(url="https://other.example/p/1"))
    url = "https://cdn.brand.example/tee.jpg"
    picture = ids.image_id(url)
    catalogue.save_image(db, picture, url, first)
    catalogue.update_image(db, picture, content_sha256="ab" * 32, status="new")
    for shown_by in (first, other):
        catalogue.link_image(db, shown_by, picture, 0)
    catalogue.mark_product_dead(db, first, "out-of-stock")
    row = catalogue.get_image(db, picture)
    assert not row["is_dead"] and row["product_id"] == other


def test_a_picture_stored_before_colour_grids_is_still_a_near_duplicates_original(db):
    shop_id = catalogue.add_shop(db, SHOP, "Example")
    owner = catalogue.save_product(db, shop_id, product())
    picture = ids.image_id(f"{SHOP}/x.jpg")
    catalogue.save_image(db, picture, f"{SHOP}/x.jpg", owner)
    catalogue.update_image(db, picture, content_sha256="cd" * 32, phash="f" * 64, status="new")  # no colour grid
    assert list(catalogue.image_hashes(db)) == [(picture, "f" * 64, None)]


def test_the_stored_pictures_hashes_are_read_a_batch_at_a_time(db):
    """Read whole, 600,000 stored pictures' hashes took 316 MB of the scrape function's 512 before
    the first was compared: no shop was scraped once the catalogue held 550,000."""
    import tracemalloc

    count = 4 * catalogue.HASH_ROWS_PER_READ
    now = utcnow()
    with db.engine.begin() as connection:
        connection.execute(images.insert(), [
            dict(id=f"{number:040x}", src_link=f"{SHOP}/{number}.jpg", status="detected", is_dead=False, created_at=now, updated_at=now,
                 phash=f"{number:064x}", colour_grid="80" * 48)
            for number in range(count)
        ])
    tracemalloc.start()
    try:
        rows = catalogue.image_hashes(db)
        first = next(rows)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sorted([first, *rows]) == [(f"{number:040x}", f"{number:064x}", "80" * 48) for number in range(count)]
    assert peak < 100 * count  # under 300 bytes a row for a batch of a quarter of them


def test_the_copies_of_a_picture_are_found_by_an_index(db):
    with db.engine.connect() as connection:
        explain = "EXPLAIN QUERY PLAN" if db.engine.dialect.name == "sqlite" else "EXPLAIN"
        plan = str(connection.execute(sa.text(f"{explain} SELECT id FROM images WHERE duplicate_of = 'x'")).all())
    assert "SCAN" not in plan and "'ALL'" not in plan, plan


def test_re_embedding_leaves_out_failed_pictures_and_shops_taken_off(db, image_with_detections):
    shop_id, product_id, image_id = image_with_detections
    for n in range(3):
        catalogue.update_detection(db, ids.detection_id(image_id, n), embedding_status="indexed", embedded_by="old")
    assert [row["id"] for row in catalogue.images_embedded_by_other_models(db, "new")] == [image_id]
    catalogue.update_image(db, image_id, status="failed", error="detect failed: truncated")  # each run would fetch it again
    assert catalogue.images_embedded_by_other_models(db, "new") == []
    catalogue.update_image(db, image_id, status="detected", error=None)
    catalogue.take_shop_off(db, SHOP)
    assert catalogue.images_embedded_by_other_models(db, "new") == []


def test_a_replaced_shard_s_items_are_all_embedded_again(db, image_with_detections):
    _shop_id, _product_id, image_id = image_with_detections
    for n in range(3):  # embedded by the model switched back to, in the shard a rollout replaced
        catalogue.update_detection(db, ids.detection_id(image_id, n), category="top", embedding_status="indexed", embedded_by="m5")
    catalogue.update_detection(db, ids.detection_id(image_id, 2), embedding_status="embedded")  # pending its merge: kept
    catalogue.forget_embedders_in_category(db, "top")
    assert {n: catalogue.get_detection(db, ids.detection_id(image_id, n))["embedded_by"] for n in range(3)} == {0: None, 1: None, 2: "m5"}
    assert [row["id"] for row in catalogue.images_embedded_by_other_models(db, "m5")] == [image_id]


def test_a_rounds_discovery_is_kept_in_order_until_the_round_ends_or_its_settings_change(db):
    shop_id, other = catalogue.add_shop(db, SHOP), catalogue.add_shop(db, "https://other.example")
    catalogue.record_discovery(db, shop_id, "k1", None, [{"url": f"{SHOP}/list/1", "kind": "listing"}])
    catalogue.record_discovery(db, other, "k1", None, [{"url": f"{SHOP}/list/1", "kind": "listing"}])  # the same URL, another shop
    found = [{"url": f"{SHOP}/list/2", "kind": "listing"}, {"url": f"{SHOP}/p/1", "kind": "page"},
             {"url": f"{SHOP}/list/1", "kind": "listing"}]  # met again: kept as it was
    catalogue.record_discovery(db, shop_id, "k1", {"url": f"{SHOP}/list/1", "kind": "listing", "outcome": "listed"}, found)
    catalogue.record_discovery(db, shop_id, "k1", None, [{"url": f"{SHOP}/map.xml", "kind": "sitemap", "depth": 2},
                                                         {"url": f"{SHOP}/map.xml", "kind": "page"}])  # a URL found as two kinds
    assert [(row["url"], row["kind"], row["depth"], row["outcome"]) for row in catalogue.shop_discovery(db, shop_id, "k1")] == [
        (f"{SHOP}/list/1", "listing", 1, "listed"), (f"{SHOP}/list/2", "listing", 1, None), (f"{SHOP}/p/1", "page", 1, None),
        (f"{SHOP}/map.xml", "sitemap", 2, None), (f"{SHOP}/map.xml", "page", 1, None)]
    catalogue.mark_shop_scraped(db, shop_id)  # the round is done: the next discovers afresh
    assert catalogue.shop_discovery(db, shop_id, "k1") == [] and len(catalogue.shop_discovery(db, other, "k1")) == 1
    assert catalogue.shop_discovery(db, other, "k2") == [] == catalogue.shop_discovery(db, other, "k1")  # other settings: dropped
    catalogue.record_discovery(db, other, "k2", None, [{"url": f"{SHOP}/list/1", "kind": "listing"}])
    catalogue.forget_discovery(db, other)
    assert catalogue.shop_discovery(db, other, "k2") == []
    catalogue.record_discovery(db, other, "k2", None, [{"url": f"{SHOP}/list/1", "kind": "listing"}])
    assert catalogue.take_shop_off(db, "https://other.example") and catalogue.shop_discovery(db, other, "k2") == []  # taken off: gone


def test_a_source_with_more_settings_than_mysql_holds_is_refused_there_and_kept_on_sqlite(db):
    # MySQL refused the row with a database error, and the whole `scrape --sources` with it.
    source = ScrapedSource(base_url=SHOP, listing_urls=tuple(f"/collections/{n}/" + "x" * 90 for n in range(800)))
    if db.engine.dialect.name == "mysql":
        with pytest.raises(ValueError, match=f"source {SHOP}/: its settings .* more than a shop's row holds"):
            catalogue.save_source(db, source)
        assert catalogue.active_shops(db) == []
    else:
        shop_id = catalogue.save_source(db, source)
        (row,) = catalogue.active_shops(db)
        assert row["id"] == shop_id and catalogue.source_of_shop(row).listing_urls == source.listing_urls


def test_a_shop_is_taken_off_by_its_own_address_not_by_one_that_differs_in_case(db):
    # MySQL's collation matched both: the other shop was taken off, and this one never could be.
    upper = catalogue.add_shop(db, "https://shop.example/en/Women", name="Women (EN)")
    lower = catalogue.add_shop(db, "https://shop.example/en/women", name="Other shop")
    assert upper != lower
    assert catalogue.take_shop_off(db, "https://shop.example/en/women")
    assert [row["id"] for row in catalogue.active_shops(db)] == [upper]


def test_an_active_shop_is_found_by_its_stored_address_though_it_is_now_refused(db):
    # `shazzam ingest` names each shop by its stored address: the scrape must find the row to skip it.
    refused = "http://0:0@old.example/"  # saved before user names were refused
    db.run_query("INSERT INTO shops (id, base_url, name, active, created_at, is_local) VALUES ('old', :url, 'Old', 1, '2026-01-01', 0)",
                 {"url": refused})
    assert catalogue.active_shop_id(db, refused) == "old"
    with pytest.raises(ValueError, match="user name or password"):  # another spelling is checked as a new address
        catalogue.active_shop_id(db, "http://0:0@OLD.example/")
    catalogue.take_shop_off(db, refused)
    with pytest.raises(ValueError, match="user name or password"):
        catalogue.active_shop_id(db, refused)


def test_an_address_that_is_not_text_is_refused_for_what_it_is(db):
    # A command-line argument of undecodable bytes reaches Python as lone surrogates: no stored
    # address can equal it, and the database driver could not encode it to look.
    with pytest.raises(ValueError, match="not a usable URL"):
        catalogue.active_shop_id(db, "http://a\udcff.example/")


def test_the_shop_names_are_in_one_order_on_every_database(db):
    for n, name in enumerate(["Zara", "adidas", "Élan", "Upper"]):
        catalogue.add_shop(db, f"https://shop{n}.example", name=name)
    assert catalogue.shop_names(db) == ["adidas", "Élan", "Upper", "Zara"]


# -- pruning tombstones --------------------------------------------------------------------------


def _dead_since(db, product_id: str, days: int, reason: str = "http-404") -> None:
    from datetime import timedelta

    catalogue.mark_product_dead(db, product_id, reason)
    db.run_query("UPDATE products SET dead_at = :at WHERE id = :id", {"at": utcnow() - timedelta(days=days), "id": product_id})


def _prune(db) -> dict:
    return catalogue.prune_dead_products(db, utcnow() - catalogue.PRUNE_DEAD_AFTER)


def _cached(db) -> set[str]:
    return {row["url"] for row in db.run_query("SELECT url FROM http_cache")}


def test_a_tombstone_past_the_pruning_age_goes_with_what_only_it_held(db):
    shop_id = catalogue.add_shop(db, SHOP, "Example")
    live, old, young = (catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/{n}")) for n in (1, 2, 3))
    shared, own = f"{SHOP}/shared.jpg", f"{SHOP}/p/2.jpg"
    catalogue.save_image(db, ids.image_id(shared), shared, live)
    catalogue.link_image(db, live, ids.image_id(shared))
    catalogue.link_image(db, old, ids.image_id(shared))
    catalogue.save_image(db, ids.image_id(own), own, old)
    catalogue.link_image(db, old, ids.image_id(own))
    catalogue.save_detections(db, ids.image_id(own), [detection(ids.image_id(own), i) for i in range(2)])
    catalogue.update_detection(db, ids.detection_id(ids.image_id(own), 1), embedding_status="removed")  # left its shard
    for url in (f"{SHOP}/p/1", f"{SHOP}/p/2", f"{SHOP}/p/3", shared, own):
        catalogue.save_page_cache(db, shop_id, url, '"v1"', None, "digest")
    _dead_since(db, old, days=181)
    _dead_since(db, young, days=179)

    assert _prune(db) == {"products_pruned": 1, "images_pruned": 1, "detections_pruned": 2, "tombstones_kept": 0}
    assert set(catalogue.products_of_shop(db, shop_id)) == {f"{SHOP}/p/1", f"{SHOP}/p/3"}
    assert catalogue.get_image(db, ids.image_id(own)) is None
    assert not db.run_query("SELECT id FROM detections WHERE image_id = :id", {"id": ids.image_id(own)})
    assert not db.run_query("SELECT image_id FROM product_images WHERE product_id = :id", {"id": old})
    shown = catalogue.get_image(db, ids.image_id(shared))
    assert shown["product_id"] == live and not shown["is_dead"]
    # Its page and picture read as new if the shop lists it again; the others' validators stay.
    assert _cached(db) == {f"{SHOP}/p/1", f"{SHOP}/p/3", shared}
    assert _prune(db)["products_pruned"] == 0


def test_a_tombstone_stays_while_a_picture_of_it_is_still_needed(db, image_with_detections):
    shop_id, product_id, image_id = image_with_detections
    catalogue.update_detection(db, ids.detection_id(image_id, 0), embedding_status="indexed", category="dress")
    _dead_since(db, product_id, days=400)
    # Another dead product shows a picture this one owns: it goes first, then this one may.
    other = catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/2"))
    catalogue.link_image(db, other, image_id, if_live=False)
    _dead_since(db, other, days=200)
    assert _prune(db) == {"products_pruned": 1, "images_pruned": 0, "detections_pruned": 0, "tombstones_kept": 1}
    assert set(catalogue.products_of_shop(db, shop_id)) == {f"{SHOP}/p/1"}
    # Its garment's vector is still in a shard until the index drops it.
    assert _prune(db)["tombstones_kept"] == 1
    catalogue.mark_unindexed(db, [ids.detection_id(image_id, 0)])
    assert _prune(db) == {"products_pruned": 1, "images_pruned": 1, "detections_pruned": 3, "tombstones_kept": 0}
    assert catalogue.products_of_shop(db, shop_id) == {}


def test_a_feed_page_a_pruned_product_was_read_from_is_read_anew_and_kept_while_it_lists_others(db):
    shop_id = catalogue.add_shop(db, SHOP, "Example")
    feed = f"{SHOP}/products.json?page=1"
    live = catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/1"), page_url=feed)
    old = catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/2"), page_url=feed)
    for url in (feed, f"{SHOP}/p/2"):
        catalogue.save_page_cache(db, shop_id, url, '"v1"', None, "digest")
    _dead_since(db, old, days=365, reason="removed")
    assert _prune(db)["products_pruned"] == 1
    assert _cached(db) == {feed}
    assert catalogue.page_cache(db, shop_id)[feed]["etag"] is None  # the products it lists are all read again
    assert set(catalogue.products_of_shop(db, shop_id)) == {f"{SHOP}/p/1"} and catalogue.get_item(db, live)


def test_a_tombstone_that_showed_another_shops_copy_of_a_picture_is_pruned_and_the_original_stays(db):
    first_shop, other_shop = catalogue.add_shop(db, SHOP, "One"), catalogue.add_shop(db, "https://other.example", "Two")
    owner = catalogue.save_product(db, first_shop, product(url=f"{SHOP}/p/b"))
    shower = catalogue.save_product(db, other_shop, product(url="https://other.example/p/a"))
    original, copy = f"{SHOP}/x.jpg", "https://other.example/y.jpg"
    catalogue.save_image(db, ids.image_id(original), original, owner)
    catalogue.link_image(db, owner, ids.image_id(original))
    catalogue.save_image(db, ids.image_id(copy), copy, shower)  # the same bytes at another address
    catalogue.update_image(db, ids.image_id(copy), content_sha256="d", duplicate_of=ids.image_id(original))
    catalogue.link_image(db, shower, ids.image_id(original))
    _dead_since(db, shower, days=400)
    assert _prune(db) == {"products_pruned": 1, "images_pruned": 1, "detections_pruned": 0, "tombstones_kept": 0}
    assert catalogue.get_image(db, ids.image_id(copy)) is None
    kept = catalogue.get_image(db, ids.image_id(original))
    assert kept["product_id"] == owner and not kept["is_dead"]
    assert catalogue.get_item(db, owner)["image_urls"] == [original]


def test_a_tombstone_kept_for_now_does_not_hold_back_younger_ones(db, image_with_detections):
    shop_id, product_id, image_id = image_with_detections
    catalogue.update_detection(db, ids.detection_id(image_id, 0), embedding_status="indexed", category="dress")
    _dead_since(db, product_id, days=400)  # its vector still in a shard
    younger = catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/2"))
    _dead_since(db, younger, days=200)
    report = catalogue.prune_dead_products(db, utcnow() - catalogue.PRUNE_DEAD_AFTER, limit=1)
    assert (report["products_pruned"], report["tombstones_kept"]) == (1, 1)
    assert set(catalogue.products_of_shop(db, shop_id)) == {f"{SHOP}/p/1"}


def test_a_run_prunes_at_most_its_batch_the_oldest_first(db):
    shop_id = catalogue.add_shop(db, SHOP, "Example")
    older, old = (catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/{n}")) for n in (1, 2))
    _dead_since(db, old, days=200)
    _dead_since(db, older, days=300)
    before = utcnow() - catalogue.PRUNE_DEAD_AFTER
    assert catalogue.prune_dead_products(db, before, limit=1)["products_pruned"] == 1
    assert set(catalogue.products_of_shop(db, shop_id)) == {f"{SHOP}/p/2"}
    assert catalogue.prune_dead_products(db, before, limit=1)["products_pruned"] == 1


def test_two_tombstones_that_show_each_others_pictures_are_both_pruned(db):
    shop_id = catalogue.add_shop(db, SHOP, "Example")
    first, second = (catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/{n}")) for n in (1, 2))
    x, y = (ids.image_id(f"{SHOP}/{name}.jpg") for name in ("x", "y"))
    for image_id, url in ((x, f"{SHOP}/x.jpg"), (y, f"{SHOP}/y.jpg")):  # the first shows both, and owns them
        catalogue.save_image(db, image_id, url, first)
        catalogue.link_image(db, first, image_id)
    catalogue.link_image(db, second, y)
    catalogue.mark_product_dead(db, first, "removed")  # x dies with it; y passes to the second
    catalogue.link_image(db, second, x, 1, if_live=False)  # the second shows x too: a failed fetch is linked
    _dead_since(db, second, days=300)
    _dead_since(db, first, days=400)
    young = catalogue.save_product(db, shop_id, product(url=f"{SHOP}/p/3"))
    catalogue.link_image(db, young, y, if_live=False)
    _dead_since(db, young, days=10)  # a tombstone too young to prune still needs y
    assert _prune(db) == {"products_pruned": 1, "images_pruned": 1, "detections_pruned": 0, "tombstones_kept": 1}
    assert catalogue.get_image(db, x) is None and catalogue.get_image(db, y)["product_id"] == second
    assert catalogue.products_of_shop(db, shop_id)[f"{SHOP}/p/2"]["fingerprint"] is None  # it lost x: read anew if it comes back
    db.run_query("UPDATE products SET dead_at = :at WHERE id = :id", {"at": utcnow() - timedelta(days=200), "id": young})
    assert _prune(db)["products_pruned"] == 2
    assert catalogue.products_of_shop(db, shop_id) == {}
