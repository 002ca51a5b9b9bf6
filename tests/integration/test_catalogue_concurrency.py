"""Runs that write the catalogue at once: scrapes, revalidates, detect and index Lambdas side by side.
The interleavings are pinned with hooks; the races on MariaDB's row locks need MariaDB (SQLite
lets one writer in at a time)."""

from __future__ import annotations

import hashlib
import threading
from decimal import Decimal

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from shazzam import catalogue, ids, pipeline
from shazzam.app import App
from shazzam.db import Database, retried_on_deadlock
from shazzam.index import compact, encode_vector, load_shard, publish, read_manifest
from shazzam.scrape import ScrapedProduct
from shazzam.scrape.dedup import PictureHashes
from shazzam.scrape.fetch import FetchResult
from shazzam.scrape.passes import SourcePass, Summary
from shazzam.storage import LocalFolderStore
from tests.support.quirky_shop import jpeg

SHOP = "https://shop.example"


def product(url: str, **overrides) -> ScrapedProduct:
    values = dict(url=url, title="Red dress", price=Decimal("19.99"), currency="EUR", category="dress", brand=None, sku=None,
                  image_urls=())
    values.update(overrides)
    return ScrapedProduct(**values)


def open_db(url: str) -> Database:
    return Database(url).open_connection()


def pause_once_per_thread(barrier: threading.Barrier):
    """A hook that waits at the barrier the first time each thread calls it (a retried transaction
    runs on without waiting for a partner that has finished)."""
    seen = threading.local()

    def pause():
        if not getattr(seen, "paused", False):
            seen.paused = True
            try:
                barrier.wait(10)
            except threading.BrokenBarrierError:
                pass

    return pause


def run_at_once(*calls) -> list[str]:
    errors: list[str] = []

    def run(call):
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - the test reports what each run met
            errors.append(repr(exc))

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_two_products_sharing_a_picture_that_die_at_once_leave_it_dead(mysql_url, monkeypatch):
    db = open_db(mysql_url)
    shop_id = catalogue.add_shop(db, SHOP, "Shop")
    first = catalogue.save_product(db, shop_id, product(f"{SHOP}/p/a"))
    second = catalogue.save_product(db, shop_id, product(f"{SHOP}/p/b"))
    picture = ids.image_id(f"{SHOP}/shared.jpg")
    catalogue.save_image(db, picture, f"{SHOP}/shared.jpg", first)
    catalogue.link_image(db, first, picture)
    catalogue.link_image(db, second, picture)
    pause = pause_once_per_thread(threading.Barrier(2))
    hand_over = catalogue._hand_over

    def paused_hand_over(*args, **kwargs):
        pause()  # both products marked dead, neither committed
        return hand_over(*args, **kwargs)

    monkeypatch.setattr(catalogue, "_hand_over", paused_hand_over)
    assert run_at_once(lambda: catalogue.mark_product_dead(db, first), lambda: catalogue.mark_product_dead(db, second)) == []
    # The promise of mark_product_dead: the picture passes to a live product that shows it, or dies.
    assert catalogue.get_image(db, picture)["is_dead"]
    db.close()


def test_the_same_photo_detected_twice_at_once_is_saved_by_both(mysql_url, monkeypatch):
    # Two uploads of one photo (a scheduled and a manual scrape) are two detect events: their
    # DELETE ... WHERE image_id gap-locks, then their INSERTs deadlock; the loser runs again.
    db = open_db(mysql_url)
    shop_id = catalogue.add_shop(db, SHOP, "Shop")
    owner = catalogue.save_product(db, shop_id, product(f"{SHOP}/p/a"))
    for n in range(5):
        other = ids.image_id(f"{SHOP}/{n}.jpg")
        catalogue.save_image(db, other, f"{SHOP}/{n}.jpg", owner)
        catalogue.save_detections(db, other, [{"id": ids.detection_id(other, 0), "box": [0, 0, 5, 5], "label": "dress", "score": 0.5}])
    picture = ids.image_id(f"{SHOP}/i.jpg")
    catalogue.save_image(db, picture, f"{SHOP}/i.jpg", owner)
    found = [{"id": ids.detection_id(picture, i), "box": [0, 0, 10 + i, 10], "label": "dress", "score": 0.9} for i in range(2)]
    pause = pause_once_per_thread(threading.Barrier(2))
    execute = sa.Connection.execute

    def paused_execute(self, statement, *args, **kwargs):
        result = execute(self, statement, *args, **kwargs)
        if isinstance(statement, sa.Delete) and statement.table.name == "detections":
            pause()  # both DELETEs done, neither committed: then both insert
        return result

    monkeypatch.setattr(sa.Connection, "execute", paused_execute)
    assert run_at_once(lambda: catalogue.save_detections(db, picture, found), lambda: catalogue.save_detections(db, picture, found)) == []
    monkeypatch.undo()
    assert sorted(row["id"] for row in db.run_query("SELECT id FROM detections WHERE image_id = :i", {"i": picture})) == sorted(
        d["id"] for d in found)
    db.close()


def test_only_a_deadlock_or_a_lock_wait_is_run_again():
    calls = []

    def failing(code):
        @retried_on_deadlock
        def transaction():
            calls.append(code)
            raise sa.exc.OperationalError("UPDATE ...", {}, Exception(code, "message"))

        return transaction

    with pytest.raises(sa.exc.OperationalError):
        failing(2013)()  # a lost connection: not this retry's business
    assert calls == [2013]
    calls.clear()
    with pytest.raises(sa.exc.OperationalError):
        failing(1213)()
    assert len(calls) > 1


class PausedImageFetcher:
    """A CDN that answers 304 to a conditional GET (after holding the first one until released)
    and the picture to a plain one."""

    def __init__(self, body: bytes):
        self.body, self.started, self.release = body, threading.Event(), threading.Event()

    def get(self, url, etag=None, last_modified=None, accept=()):
        if not self.started.is_set():
            self.started.set()
            self.release.wait(10)
        if etag:
            return FetchResult(url=url, status=304, content_type="", body=b"", etag=etag)
        return FetchResult(url=url, status=200, content_type="image/jpeg", body=self.body, etag='"e1"')


def test_a_picture_that_dies_while_a_new_product_fetches_it_is_stored_again_as_that_products(db_url, tmp_path):
    db = open_db(db_url)
    app = App(db=db, store=LocalFolderStore(tmp_path / "bucket"))
    body = jpeg(Image.new("RGB", (64, 64), (200, 30, 30)))
    shop_id = catalogue.add_shop(db, SHOP, "Shop")
    url = f"{SHOP}/i.jpg"
    picture = ids.image_id(url)
    first = catalogue.save_product(db, shop_id, product(f"{SHOP}/p/a", image_urls=(url,)))
    catalogue.save_image(db, picture, url, first)
    catalogue.update_image(db, picture, content_sha256="ab" * 32, status="detected")
    catalogue.link_image(db, first, picture)
    catalogue.save_page_cache(db, shop_id, url, '"e1"', None, "ab" * 32)
    fetcher = PausedImageFetcher(body)
    visit = SourcePass(app, shop_id, catalogue.source_of_shop(catalogue.shops_by_id(db)[shop_id]), fetcher, Summary(), PictureHashes())
    newcomer = product(f"{SHOP}/p/b", title="Blue dress", image_urls=(url,))
    scrape = threading.Thread(target=visit.product, args=(newcomer, newcomer.url))
    scrape.start()
    assert fetcher.started.wait(10)
    catalogue.mark_product_dead(db, first)  # another run: the first product's page is gone, nobody else shows it yet
    fetcher.release.set()
    scrape.join()
    second = ids.product_id(newcomer.url)
    row = catalogue.get_image(db, picture)
    assert not row["is_dead"] and row["product_id"] == second
    assert catalogue.get_item(db, second)["image_urls"] == [url]
    assert ids.incoming_key(picture) in {info.key for info in app.store.list()}  # ingested again: detect, embed, index
    db.close()


def test_a_dead_item_brought_back_and_indexed_again_while_dead_vectors_are_dropped_stays_in_its_shard(db_url, tmp_path, monkeypatch):
    db = open_db(db_url)
    store = LocalFolderStore(tmp_path / "bucket")
    app = App(db=db, store=store)
    shop_id = catalogue.add_shop(db, SHOP, "Shop")
    owner = catalogue.save_product(db, shop_id, product(f"{SHOP}/p/a"))
    picture = ids.image_id(f"{SHOP}/i.jpg")
    catalogue.save_image(db, picture, f"{SHOP}/i.jpg", owner)
    catalogue.link_image(db, owner, picture)
    detection = ids.detection_id(picture, 0)
    catalogue.save_detections(db, picture, [{"id": detection, "box": [0, 0, 10, 10], "label": "dress", "score": 0.9}])
    catalogue.update_detection(db, detection, category="dress", embedding_status="indexed", embedded_by="m1")
    vector = np.random.default_rng(0).random(64).astype(np.float32)
    publish(store, "dress", add={detection: vector}, model="m1")
    catalogue.mark_product_dead(db, owner)
    read = catalogue.dead_indexed_detections
    calls = []

    def read_then_the_item_comes_back(database):
        dead = read(database)
        if not calls:  # between this read and the drop: revived, embedded again, merged by an index run
            catalogue.revive_product(db, owner)
            catalogue.update_detection(db, detection, embedding_status="embedded", embedded_by="m1")
            store.put(ids.pending_vector_key("dress", detection), encode_vector(vector, "m1"))
            compact(store, "m1", on_merged=lambda _category, added: catalogue.mark_indexed(db, added))
        calls.append(dead)
        return dead

    monkeypatch.setattr(catalogue, "dead_indexed_detections", read_then_the_item_comes_back)
    assert pipeline.drop_dead_vectors(app) == 0
    assert calls[-1] == {}  # read again after the shard moved: nothing is dead any more
    assert detection in load_shard(store, read_manifest(store)[0], "dress").ids
    assert catalogue.get_detection(db, detection)["embedding_status"] == "indexed"
    db.close()


def test_a_copy_whose_original_dies_as_it_is_linked_is_stored_as_its_own_picture_and_not_linked_to_the_dead(db_url, tmp_path, monkeypatch):
    db = open_db(db_url)
    app = App(db=db, store=LocalFolderStore(tmp_path / "bucket"))
    body = jpeg(Image.new("RGB", (64, 64), (200, 30, 30)))
    shop_id = catalogue.add_shop(db, SHOP, "Shop")
    first = catalogue.save_product(db, shop_id, product(f"{SHOP}/p/1", image_urls=(f"{SHOP}/o.jpg",)))
    original = ids.image_id(f"{SHOP}/o.jpg")
    catalogue.save_image(db, original, f"{SHOP}/o.jpg", first)
    catalogue.update_image(db, original, content_sha256=hashlib.sha256(body).hexdigest(), status="detected")
    catalogue.link_image(db, first, original)
    link = catalogue.link_image

    def link_as_another_run_kills_the_original(database, product_id, image_id, position=0, **kwargs):
        if image_id == original and not kwargs and catalogue.get_image(db, original)["is_dead"] is False:
            catalogue.mark_product_dead(db, first)  # between the dedup read and the link
        return link(database, product_id, image_id, position, **kwargs)

    monkeypatch.setattr(catalogue, "link_image", link_as_another_run_kills_the_original)

    class Cdn:
        def get(self, url, etag=None, last_modified=None, accept=()):
            return FetchResult(url=url, status=200, content_type="image/jpeg", body=body, etag='"x"')

    visit = SourcePass(app, shop_id, catalogue.source_of_shop(catalogue.shops_by_id(db)[shop_id]), Cdn(), Summary(), PictureHashes())
    second = product(f"{SHOP}/p/2", image_urls=(f"{SHOP}/copy.jpg",))
    visit.product(second, second.url)
    links = db.run_query("SELECT image_id FROM product_images WHERE product_id = :p", {"p": ids.product_id(second.url)})
    assert links == [{"image_id": ids.image_id(f"{SHOP}/copy.jpg")}]  # its own picture, not the dead original
    assert catalogue.get_image(db, ids.image_id(f"{SHOP}/copy.jpg"))["duplicate_of"] is None
    db.close()
