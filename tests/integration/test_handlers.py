"""Each function's handler on its sample event from events/, on the embedded runtime and on moto S3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shazzam import app as app_module
from shazzam import ids
from shazzam.local.runtime import LambdaContext, LocalRuntime, load_handler
from shazzam.storage import S3Store
from shazzam.vision import load_garment_model
from tests.support.addresses import unreachable_address
from tests.support.shop_photos import put_shop_photo

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"
SAMPLE_IMAGE = REPO / "samples" / "shop" / "images" / "dress-01.jpg"


def sample_event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def event_key(event: dict) -> str:
    return event["Records"][0]["s3"]["object"]["key"]


@pytest.fixture(params=["local", "s3"])
def backend(request, tmp_path, monkeypatch):
    """(app, invoke): the adapters the handlers see, and a way to call a handler by name.

    Detector v0 (the whole photo is one garment, detection -000) runs: the sample events name
    that one detection's objects."""
    monkeypatch.setenv("SHAZZAM_DETECTOR", "whole-image")
    if request.param == "local":
        runtime = LocalRuntime(tmp_path / "data")
        yield runtime.app, runtime.invoke
        runtime.close()
        return
    request.getfixturevalue("aws")
    import boto3

    bucket = sample_event("s3-incoming.json")["Records"][0]["s3"]["bucket"]["name"]
    boto3.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    monkeypatch.setenv("SHAZZAM_BUCKET", bucket)
    monkeypatch.setenv("SHAZZAM_DB_URL", f"sqlite:///{tmp_path / 'catalogue.db'}")
    app_module.configure(None)  # the handlers build their adapters from the environment, as in Lambda
    app = app_module.current()
    assert isinstance(app.store, S3Store)
    handlers = {}

    def invoke(name, event):
        handlers.setdefault(name, load_handler(name))
        return handlers[name](event, LambdaContext(name))

    yield app, invoke
    app_module.configure(None)


def put_sample_image(app, key: str) -> None:
    """The sample events' image as the scraper leaves it (a photo no shop sells is reported, not
    indexed). Its shop, daily, was scraped today; it is down (a port nothing listens on, no
    retries), so a revalidate changes nothing."""
    from shazzam import catalogue
    from shazzam.scrape.sources import ShopSource

    address = unreachable_address()
    shop_id = catalogue.save_source(app.db, ShopSource(base_url=address, schedule="rate(1 day)", local=True, fetch={"retries": 0}))
    catalogue.mark_shop_scraped(app.db, shop_id)
    put_shop_photo(app, SAMPLE_IMAGE.read_bytes(), image_id=ids.key_stem(key), shop_id=shop_id)


def test_each_handler_runs_on_its_sample_event(backend):
    app, invoke = backend
    incoming = sample_event("s3-incoming.json")
    image_id = ids.key_stem(event_key(incoming))
    put_sample_image(app, event_key(incoming))

    detected = invoke("detect", incoming)
    assert [r["status"] for r in detected["results"]] == ["done"]
    assert event_key(sample_event("s3-detections.json")) in detected["results"][0]["outputs"]

    standardised = invoke("standardise", sample_event("s3-detections.json"))
    assert standardised["results"][0]["outputs"] == [event_key(sample_event("s3-standard.json"))]

    embedded = invoke("embed", sample_event("s3-standard.json"))
    (vector_key,) = embedded["results"][0]["outputs"]
    assert vector_key.startswith("vectors/pending/") and ids.detection_id(image_id, 0) in vector_key

    indexed = invoke("index", sample_event("scheduled-index.json"))
    assert sum(entry["added"] for entry in indexed.values()) == 1

    assert invoke("scrape", sample_event("scheduled-scrape.json"))["shops"] == 0  # its one shop, daily, was scraped today
    assert invoke("revalidate", sample_event("scheduled-revalidate.json"))["products_checked"] == 1  # the shop is down: nothing changes

    health = invoke("search", sample_event("apigw-health.json"))
    assert health["statusCode"] == 200
    status = json.loads(health["body"])
    assert status["status"] == "ok" and status["model"]["name"] == load_garment_model().name and status["items"]["indexed"] == 1
    categories = json.loads(invoke("search", sample_event("apigw-categories.json"))["body"])["categories"]
    assert sum(c["items"] for c in categories) == 1
    found = invoke("search", sample_event("apigw-search.json"))
    assert found["statusCode"] == 200
    garments = json.loads(found["body"])["garments"]
    assert len(garments) == 1 and garments[0]["category"] in app.garment_model.categories
    bad = invoke("search", sample_event("apigw-search-bad-image.json"))
    assert bad["statusCode"] == 415 and bad["headers"]["Content-Type"] == "application/problem+json"
    assert "image rejected" in json.loads(bad["body"])["detail"]


def test_replayed_events_change_nothing(backend):
    app, invoke = backend
    incoming = sample_event("s3-incoming.json")
    put_sample_image(app, event_key(incoming))
    for _ in range(2):
        invoke("detect", incoming)
        invoke("standardise", sample_event("s3-detections.json"))
        invoke("embed", sample_event("s3-standard.json"))
        invoke("index", sample_event("scheduled-index.json"))
    rows = app.db.run_query("SELECT id, embedding_status FROM detections")
    assert rows == [{"id": ids.detection_id(ids.key_stem(event_key(incoming)), 0), "embedding_status": "indexed"}]
    assert sum(app.shards.categories().values()) == 1


def failure_record(event: dict) -> dict:
    """What Lambda's on-failure destination puts in a function's failure queue for an event it gave up on."""
    return {"version": "1.0", "timestamp": "2026-12-01T10:00:00.000Z",
            "requestContext": {"requestId": "c0ffee", "functionArn": "arn:aws:lambda:eu-west-1:123456789012:function:detect:$LATEST",
                               "condition": "RetriesExhausted", "approximateInvokeCount": 3},
            "requestPayload": event,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorMessage": "SlowDown", "errorType": "ClientError"}}


def test_a_message_of_the_failure_queue_given_back_to_its_function_redrives_its_event(backend):
    app, invoke = backend
    incoming = sample_event("s3-incoming.json")
    put_sample_image(app, event_key(incoming))
    assert [r["status"] for r in invoke("detect", failure_record(incoming))["results"]] == ["done"]
    assert invoke("index", failure_record(sample_event("scheduled-index.json"))) == invoke("index", sample_event("scheduled-index.json"))


def test_an_event_for_an_object_gone_is_skipped_and_logged(backend, caplog):
    """A failure queue redriven after the bucket's lifecycle deleted the object: nothing to do,
    and the log says so (the invocation succeeds, so Lambda's own records say nothing)."""
    _app, invoke = backend
    result = invoke("detect", sample_event("s3-incoming.json"))["results"][0]
    assert result["status"] == "skipped" and result["reason"] == "object no longer exists"
    assert any(record.getMessage() == "nothing to do" and getattr(record, "reason", None) == "object no longer exists"
               for record in caplog.records)


def test_a_corrupt_upload_is_recorded_as_failed(backend):
    app, invoke = backend
    incoming = sample_event("s3-incoming.json")
    app.store.put(event_key(incoming), SAMPLE_IMAGE.read_bytes()[:300])
    result = invoke("detect", incoming)["results"][0]
    assert result["status"] == "failed" and "truncated" in result["reason"]
    (row,) = app.db.run_query("SELECT status, error FROM images")
    assert row["status"] == "failed" and row["error"]


@pytest.mark.parametrize("document, problem", [
    (b"not json", "not JSON"), (b'{"detections": []}', "no image_id"),
    (b'{"image_id": "abc", "detections": [{"id": "abc-000", "box": [0, 0, "9", 9]}]}', "a box of four whole numbers"),
])
def test_an_unreadable_detections_document_is_rejected_not_retried(backend, document, problem):
    app, invoke = backend
    key = event_key(sample_event("s3-detections.json"))
    app.store.put(key, document)
    result = invoke("standardise", sample_event("s3-detections.json"))["results"][0]
    assert result["status"] == "failed" and result["reason"].startswith("unreadable detections document: ") and problem in result["reason"]
    assert app.store.get(key) == document  # kept for a look until the bucket's lifecycle takes it


def test_a_scheduled_scrape_that_reaches_no_shop_fails_its_invocation(backend):
    from shazzam import catalogue
    from shazzam.pipeline import ScrapeFailed
    from shazzam.scrape.sources import ShopSource

    app, invoke = backend
    address = unreachable_address()  # the shop cannot be reached
    # No retries: a refused connection fails at once instead of after the backoff (1 + 2 + 4 s a page).
    shop_id = catalogue.save_source(app.db, ShopSource(base_url=address, local=True, fetch={"retries": 0}))
    # A failed invocation is retried, then sent to the failure queue, which alarms.
    with pytest.raises(ScrapeFailed, match="none of the 1 shop"):
        invoke("scrape", sample_event("scheduled-scrape.json"))
    with pytest.raises(ScrapeFailed, match="none of the 1 shop"):  # JSON's null reads as absent, force's as false
        invoke("scrape", {**sample_event("scheduled-scrape.json"), "detail": {"force": None, "limit": None, "source": None}})
    assert catalogue.shops_by_id(app.db)[shop_id]["last_scraped_at"] is None  # still due


def test_a_scheduled_scrape_that_skips_a_shop_for_its_settings_says_so_and_is_not_retried(backend, caplog):
    # A setting no scrape could use does not mend itself: a failed invocation, retried, would only repeat it.
    app, invoke = backend
    app.db.run_query("INSERT INTO shops (id, base_url, name, active, created_at, is_local, strategy) "
                     "VALUES ('old', 'https://old.example/', 'Old', 1, '2026-01-01 00:00:00', 0, 'crawl-all')")
    assert invoke("scrape", sample_event("scheduled-scrape.json"))["shops_skipped"] == 1
    assert any(record.levelname == "ERROR" and "https://old.example/ is skipped: unknown strategy" in record.getMessage()
               for record in caplog.records)


@pytest.mark.parametrize("detail, message", [
    ({"limit": "2"}, "limit must be a whole number"), ({"limit": 0}, "limit must be"), ({"limit": 1.5}, "limit must be"),
    ({"limit": True}, "limit must be"), ({"force": "false"}, "force must be true or false, not 'false'"),
    ({"source": 123}, "source must be a string"), ({"shop_url": ["https://shop.example/"]}, "shop_url must be a string"),
    ({"limt": 2}, r"unknown detail option 'limt' \(scrape takes force, limit, shop_url, source\)"),  # not a full pass
])
def test_a_scrape_event_with_a_wrong_option_fails_before_any_work(backend, detail, message):
    from shazzam import catalogue
    from shazzam.scrape.sources import ShopSource

    app, invoke = backend
    shop_id = catalogue.save_source(app.db, ShopSource(base_url=unreachable_address(), local=True, fetch={"retries": 0}))
    event = sample_event("scheduled-scrape.json")
    with pytest.raises(ValueError, match=message):
        invoke("scrape", {**event, "detail": {**(event.get("detail") or {}), **detail}})
    assert catalogue.shops_by_id(app.db)[shop_id]["attempted_at"] is None  # its turn is not taken


def test_a_scheduled_event_with_detail_options_its_function_does_not_take_fails(backend):
    _app, invoke = backend
    with pytest.raises(ValueError, match=r"unknown detail option 'limit' \(index takes none\)"):
        invoke("index", {**sample_event("scheduled-index.json"), "detail": {"limit": 1}})
    for detail in ("limit", [{"limit": 1}], [], "", False):  # not its letters, a TypeError, nor a full pass
        with pytest.raises(ValueError, match="detail must be a JSON object of options"):
            invoke("scrape", {**sample_event("scheduled-scrape.json"), "detail": detail})
    for misaimed in (sample_event("s3-standard.json"), {"key1": "value1"}, [], "x"):  # nor a crawl of every shop
        with pytest.raises(ValueError, match="not an EventBridge event"):
            invoke("scrape", misaimed)


@pytest.mark.parametrize("event", [{}, {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}},
                                   {"Records": [{"eventSource": "aws:sqs"}]}, []])
def test_an_event_that_is_no_s3_notification_is_named(backend, event):
    _app, invoke = backend
    with pytest.raises(ValueError, match="detect takes S3 ObjectCreated notifications; this event is not one"):
        invoke("detect", event)
