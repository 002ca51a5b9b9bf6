"""The whole local pipeline on a handful of sample-shop items: scrape over HTTP, the event
chain, the index, search through the HTTP API, bad input, replays and revalidation."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import pytest

from shazzam import catalogue, ids, lease, pipeline
from shazzam.local.runtime import LocalRuntime
from shazzam.local.sample_shop import SampleShop, repository_samples_dir

SAMPLES = repository_samples_dir()
CLASSES = ("dress", "shoes", "pants", "hat")
PER_CLASS = 3


@pytest.fixture
def small_shop(tmp_path):
    """A shop of 3 items from each of 4 classes, served over HTTP like the demo's."""
    catalog = json.loads((SAMPLES / "shop" / "catalog.json").read_text())
    chosen = [item for cls in CLASSES for item in [i for i in catalog if i["sku"].startswith(f"{cls}-")][:PER_CLASS]]
    folder = tmp_path / "shop"
    (folder / "images").mkdir(parents=True)
    for item in chosen:
        shutil.copy(SAMPLES / "shop" / item["image"], folder / item["image"])
    (folder / "catalog.json").write_text(json.dumps(chosen))
    with SampleShop(folder) as shop:
        yield shop, chosen


@pytest.fixture
def runtime(tmp_path):
    runtime = LocalRuntime(tmp_path / "data")
    yield runtime
    runtime.close()


def garment_of(answer: dict, detector_class: str) -> dict:
    """The garment of a product photo's answer that is its product: the first of that detector
    class, or of no class (detector v0's whole photo)."""
    matching = [g for g in answer["garments"] if g["label"] in (None, detector_class)]
    assert matching, f"no {detector_class} found in the photo: {answer['garments']}"
    return matching[0]


def ingest(runtime):
    scraped = runtime.fire_schedule("scrape")
    drained = runtime.drain()
    indexed = runtime.fire_schedule("index")
    return scraped, drained, indexed


def http(url, body=None, content_type=None):
    request = urllib.request.Request(url, data=body, headers={"content-type": content_type} if content_type else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_scrape_to_search_over_http(runtime, small_shop, tmp_path):
    shop, items = small_shop
    catalogue.add_shop(runtime.db, shop.base_url, name="Test shop")
    scraped, drained, indexed = ingest(runtime)
    assert scraped["products"] == len(items) and scraped["images_uploaded"] == len(items)
    assert drained.failed == 0 and drained.by_function == {"detect": 12, "standardise": 12, "embed": 12}
    assert sum(entry["total"] for entry in indexed.values()) == len(items)
    assert catalogue.counts(runtime.db)["indexed"] == len(items)
    assert not (runtime.data_dir / "dead-letters").exists()
    # the product's own category (from its JSON-LD) decides its shard
    assert set(indexed) == set(CLASSES)

    server = runtime.start_api(port=0)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        query = (SAMPLES / "queries" / "shoes-query.jpg").read_bytes()
        status, body = http(f"{base}/search?k=3", query, "image/jpeg")
        assert status == 200
        garment = garment_of(body, "footwear")
        assert garment["category"] == "shoes" and garment["category_source"] == "classifier"
        assert len(garment["results"]) == 3
        assert all(r["url"].startswith(shop.base_url) and r["price"] and r["currency"] == "EUR" for r in garment["results"])
        assert [r["distance"] for r in garment["results"]] == sorted(r["distance"] for r in garment["results"])

        status, body = http(f"{base}/search?category=hat&k=2", query, "image/jpeg")
        assert status == 200 and body["garments"][0]["category"] == "hat" and len(body["results"]) == 2

        status, body = http(f"{base}/search", b"\x89PNG\r\n\x1a\n broken", "image/png")
        assert status == 400 and "image rejected" in body["detail"]
        status, body = http(f"{base}/search?category=socks", query, "image/jpeg")
        assert status == 422 and "unknown category" in body["detail"]
        status, body = http(f"{base}/search", b"{not json", "application/json")
        assert status == 400
        status, body = http(f"{base}/categories")
        assert status == 200 and {c["name"]: c["items"] for c in body["categories"]}["dress"] == PER_CLASS
    finally:
        server.shutdown()


def test_bad_objects_fail_with_a_reason_and_the_rest_goes_on(runtime, small_shop):
    shop, items = small_shop
    good = (SAMPLES / "shop" / items[0]["image"]).read_bytes()
    bad = {
        "empty": b"",
        "truncated": good[: len(good) // 3],
        "text": b"<html>not an image</html>",
        "bomb": _bomb_png(),
    }
    for name, data in bad.items():
        runtime.store.put(f"incoming/{name}", data)
    catalogue.add_shop(runtime.db, shop.base_url)
    _, drained, _ = ingest(runtime)
    assert drained.failed == 0
    rows = {row["id"]: row for row in runtime.db.run_query("SELECT id, status, error FROM images")}
    for name in bad:
        assert rows[name]["status"] == "failed" and rows[name]["error"], name
    assert "pixels" in rows["bomb"]["error"] and "empty" in rows["empty"]["error"]
    assert catalogue.counts(runtime.db)["indexed"] == len(items)


def _bomb_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buffer, "PNG", optimize=True)  # 100 Mpx in ~12 kB
    return buffer.getvalue()


def test_replays_change_nothing_and_dead_items_leave_the_index(runtime, small_shop):
    shop, items = small_shop
    catalogue.add_shop(runtime.db, shop.base_url)
    ingest(runtime)
    before = catalogue.counts(runtime.db)
    manifest_before = runtime.app.shards.categories()

    scraped, drained, indexed = ingest(runtime)  # the schedule fires again: nothing has changed
    assert scraped["images_uploaded"] == 0 and scraped["images_unchanged"] == len(items)
    assert drained.delivered == 0 and indexed == {}
    # The pipeline keeps no transient images: only the index is left in the store.
    assert {info.key.split("/")[0] for info in runtime.store.list()} == {"index"}
    image_url = shop.image_url(items[0]["sku"])
    with urllib.request.urlopen(image_url) as response:  # the same image uploaded again
        runtime.store.put(ids.incoming_key(ids.image_id(image_url)), response.read())
    runtime.drain()
    runtime.fire_schedule("index")
    assert catalogue.counts(runtime.db) == before
    runtime.app.shards.manifest_ttl_s = 0
    assert runtime.app.shards.categories() == manifest_before

    gone = items[0]
    shop.remove(gone["sku"])
    with pytest.MonkeyPatch.context() as patch:  # a run with no time left visits nothing...
        patch.setattr(pipeline, "REVALIDATE_BUDGET_S", 0)
        idle = runtime.fire_schedule("revalidate")
    assert (idle["products_checked"], idle["images_checked"], idle["products_dead"]) == (0, 0, 0)
    report = runtime.fire_schedule("revalidate")  # ...the next one starts with what it left
    assert report["products_dead"] == 1 and report["vectors_dropped"] == 1
    assert runtime.app.shards.categories()["dress"] == PER_CLASS - 1
    response = pipeline.search(runtime.app, (SAMPLES / "shop" / gone["image"]).read_bytes(), category="dress", k=10)
    assert response["garments"] and response["garments"][0]["category"] == "dress"
    assert gone["sku"] not in {r["url"].rsplit("/", 1)[-1].split(".")[0] for g in response["garments"] for r in g["results"]}


def test_a_new_model_embeds_the_catalogue_again(runtime, small_shop, monkeypatch):
    """Built with garment_v0, served with garment_v5: the index runs fetch the images again."""
    shop, items = small_shop
    catalogue.add_shop(runtime.db, shop.base_url)
    monkeypatch.setenv("SHAZZAM_MODEL", "garment_v0")
    ingest(runtime)
    runtime.app.shards.manifest_ttl_s = 0
    query = (SAMPLES / "queries" / "shoes-query.jpg").read_bytes()

    monkeypatch.setenv("SHAZZAM_MODEL", "garment_v5")
    stale = pipeline.search(runtime.app, query, category="shoes", k=3)
    assert stale["garments"] and all(g["results"] == [] for g in stale["garments"])  # v1 queries, v0 vectors: no
    with lease.held(runtime.db, lease.CRAWLER, "scrape"):  # a crawler fetching: re-embedding lets its turn pass
        assert runtime.fire_schedule("index")["reembedding"]["waiting_for"].startswith("scrape ")
    monkeypatch.setattr(pipeline, "REEMBED_BUDGET_S", 0)  # a run out of time fetches nothing; the next goes on
    assert runtime.fire_schedule("index")["reembedding"] == {"stale": len(items), "images_uploaded": 0, "images_failed": 0}
    monkeypatch.undo()
    monkeypatch.setenv("SHAZZAM_MODEL", "garment_v5")
    report = runtime.fire_schedule("index")
    assert report["reembedding"] == {"stale": len(items), "images_uploaded": len(items), "images_failed": 0}
    runtime.drain()
    runtime.fire_schedule("index")
    manifest = runtime.app.shards.manifest()["shards"]
    assert {entry["model"] for entry in manifest.values()} == {"garment_v5"}
    assert sum(entry["count"] for entry in manifest.values()) == len(items)
    fresh = pipeline.search(runtime.app, query, category="shoes", k=3)
    assert len(fresh["results"]) == 3 and fresh["model"]["name"] == "garment_v5"
    assert "reembedding" not in runtime.fire_schedule("index")  # nothing stale is left


def test_a_delivery_that_fails_once_is_retried_and_one_that_always_fails_is_dead_lettered_once(runtime, monkeypatch):
    # As Lambda retries an S3 notification: a blip (the database restarting) must not cost the
    # photo, nor leave a dead letter to worry about; a photo that never goes through is written
    # down once, after the last try, for someone to look at.
    calls = []

    def flaky(event, context):
        calls.append(event)
        if len(calls) == 1:
            raise ConnectionError("the database blinked")

    monkeypatch.setattr(runtime, "handler", lambda name: flaky)
    runtime.store.put("incoming/photo-1", b"a photo")
    report = runtime.drain()
    assert (len(calls), report.delivered, report.failed) == (2, 1, 0)
    assert not (runtime.data_dir / "dead-letters").exists()

    def broken(event, context):
        calls.append(event)
        raise ConnectionError("the database is gone")

    monkeypatch.setattr(runtime, "handler", lambda name: broken)
    calls.clear()
    runtime.store.put("incoming/photo-2", b"another photo")
    report = runtime.drain()
    assert (len(calls), report.delivered, report.failed) == (3, 0, 1)
    assert len(list((runtime.data_dir / "dead-letters").iterdir())) == 1


def test_a_scheduled_crawl_waits_its_turn_while_another_process_crawls(runtime, monkeypatch):
    # `serve` running while a `scrape` runs in another terminal: its own scheduled crawl must not
    # start (it would wait on the lease, fail and land in the dead letters) but come at a later tick.
    import time
    from types import SimpleNamespace

    from shazzam import wiring

    every_tick = SimpleNamespace(interval_seconds=lambda: 0.01)
    monkeypatch.setattr(wiring, "scheduled_functions", lambda: [(SimpleNamespace(name="scrape"), every_tick)])
    fired = []
    monkeypatch.setattr(runtime, "fire_schedule", fired.append)
    with lease.held(runtime.db, lease.CRAWLER, "scrape in another terminal"):
        loop = runtime.start_background(tick_s=0.02)
        time.sleep(0.5)
        assert fired == []
    deadline = time.monotonic() + 5
    while not fired and time.monotonic() < deadline:
        time.sleep(0.05)
    runtime.stop()
    loop.join(5)
    assert fired and set(fired) == {"scrape"}
