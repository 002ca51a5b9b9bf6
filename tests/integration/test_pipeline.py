"""Pipeline behaviours that span stages, on the embedded runtime."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from shazzam import catalogue, events, ids, index, lease, pipeline
from shazzam.images import encode_png, load_image, standardise_img
from shazzam.local.runtime import LocalRuntime
from tests.support.shop_photos import put_shop_photo

REPO = Path(__file__).resolve().parents[2]
IMAGE = (REPO / "samples" / "shop" / "images" / "skirt-02.jpg").read_bytes()


@pytest.fixture
def runtime(tmp_path):
    runtime = LocalRuntime(tmp_path / "data")
    yield runtime
    runtime.close()


def upload_product(runtime, category: str | None, image: bytes = IMAGE, number: int = 1, index: bool = True):
    """A shop's product with one image, through detect, standardise and embed; then an index run
    (its report) unless `index` is false."""
    put_shop_photo(runtime, image, number, category)
    runtime.drain()
    return runtime.fire_schedule("index") if index else None


def statuses(runtime) -> list[tuple[str, str]]:
    return [(row["category"], row["embedding_status"])
            for row in runtime.db.run_query("SELECT category, embedding_status FROM detections ORDER BY category")]


def test_an_item_that_changes_category_moves_shard(runtime):
    assert upload_product(runtime, "dress") == {"dress": {"added": 1, "removed": 0, "total": 1}}
    report = upload_product(runtime, "skirt")  # the shop re-files the product
    assert report == {"dress": {"added": 0, "removed": 1, "total": 0}, "skirt": {"added": 1, "removed": 0, "total": 1}}
    runtime.app.shards.manifest_ttl_s = 0
    assert runtime.app.shards.categories() == {"dress": 0, "skirt": 1}


def test_an_item_refiled_before_an_index_run_reached_it_lands_in_one_shard(runtime):
    upload_product(runtime, "dress", index=False)
    assert upload_product(runtime, "skirt") == {"dress": {"added": 0, "removed": 1, "total": 0},
                                                "skirt": {"added": 1, "removed": 0, "total": 1}}
    runtime.app.shards.manifest_ttl_s = 0
    assert runtime.app.shards.categories() == {"dress": 0, "skirt": 1}
    assert statuses(runtime) == [("skirt", "indexed")]


def during_the_read_of_a_pending_vector(runtime, monkeypatch, meanwhile) -> None:
    """An index run that calls `meanwhile()` just after it read the first pending vector."""
    read = runtime.store.get_with_etag
    done = []

    def get_with_etag(key):
        result = read(key)
        if key.startswith("vectors/pending/") and not done:
            done.append(key)
            meanwhile()
        return result

    monkeypatch.setattr(runtime.store, "get_with_etag", get_with_etag)
    pipeline.index(runtime.app)
    monkeypatch.setattr(runtime.store, "get_with_etag", read)


@pytest.mark.parametrize("change", ["refiled", "died"])
def test_an_index_run_overlapped_by_another_publishes_nothing_it_read_before(runtime, monkeypatch, change):
    """Run 1 reads the pending dress vector; meanwhile the item is re-filed as a skirt (or dies) and
    a second run merges that. Run 1 must not then publish the dress vector it read."""
    upload_product(runtime, "dress", index=False)

    def meanwhile():
        if change == "refiled":
            upload_product(runtime, "skirt", index=False)
        else:
            (product,) = catalogue.products_of_shop(runtime.db, ids.shop_id("https://shop.example/")).values()
            catalogue.mark_product_dead(runtime.db, product["id"], "out-of-stock")
        pipeline.index(runtime.app)

    during_the_read_of_a_pending_vector(runtime, monkeypatch, meanwhile)
    pipeline.index(runtime.app)
    runtime.app.shards.manifest_ttl_s = 0
    expected = {"dress": 0, "skirt": 1} if change == "refiled" else {"dress": 0}
    assert runtime.app.shards.categories() == expected
    assert statuses(runtime) == ([("skirt", "indexed")] if change == "refiled" else [("dress", "removed")])


def test_an_item_refiled_and_filed_back_during_an_index_run_stays_in_its_shard(runtime, monkeypatch):
    """Run 1 reads the pending dress vector; meanwhile the shop re-files the product as a skirt and
    back as a dress, so embed writes a dress removal marker and the same dress vector again. That
    vector must outlive run 1, or run 2 finds the marker alone and drops the dress for good."""
    upload_product(runtime, "dress", index=False)
    during_the_read_of_a_pending_vector(runtime, monkeypatch, lambda: (upload_product(runtime, "skirt", index=False),
                                                                       upload_product(runtime, "dress", index=False)))
    pipeline.index(runtime.app)
    runtime.app.shards.manifest_ttl_s = 0
    assert runtime.app.shards.categories() == {"dress": 1, "skirt": 0}
    assert statuses(runtime) == [("dress", "indexed")]


def test_an_item_refiled_again_during_an_index_run_leaves_the_shard_it_left(runtime, monkeypatch):
    """Filed dress -> skirt -> dress before a run, which finds the dress marker and vector both;
    while it reads the vector the shop files it as a skirt again. The run merges the vector it
    read, so the marker written again meanwhile must outlive it, or the skirt stays in dress too."""
    for category in ("dress", "skirt", "dress"):
        upload_product(runtime, category, index=False)
    during_the_read_of_a_pending_vector(runtime, monkeypatch, lambda: upload_product(runtime, "skirt", index=False))
    pipeline.index(runtime.app)
    runtime.app.shards.manifest_ttl_s = 0
    assert runtime.app.shards.categories() == {"dress": 0, "skirt": 1}
    assert statuses(runtime) == [("skirt", "indexed")]


def test_an_embed_delivered_twice_around_an_index_run_leaves_its_item_indexed(runtime, monkeypatch):
    """S3 delivers a crop's event twice; the second embed writes its row and the same vector again
    just after an index run recorded the first as merged. Left "embedded" for good, the item's
    vector would never leave the shard when it dies."""
    image_id = put_shop_photo(runtime, IMAGE, 1, "skirt")
    pipeline.detect(runtime.app, ids.incoming_key(image_id))
    (crop,) = pipeline.standardise(runtime.app, ids.detections_key(image_id)).outputs
    crop_bytes = runtime.store.get(crop)
    assert pipeline.embed(runtime.app, crop).status == "done"
    mark_indexed = catalogue.mark_indexed

    def then_delivered_again(db, detection_ids):
        mark_indexed(db, detection_ids)
        runtime.store.put(crop, crop_bytes)
        assert pipeline.embed(runtime.app, crop).status == "done"

    monkeypatch.setattr(catalogue, "mark_indexed", then_delivered_again)
    pipeline.index(runtime.app)
    monkeypatch.setattr(catalogue, "mark_indexed", mark_indexed)
    pipeline.index(runtime.app)
    assert statuses(runtime) == [("skirt", "indexed")]
    catalogue.mark_product_dead(runtime.db, catalogue.get_image(runtime.db, image_id)["product_id"], "out-of-stock")
    pipeline.index(runtime.app)
    runtime.app.shards.manifest_ttl_s = 0
    assert runtime.app.shards.categories() == {"skirt": 0}


def test_a_photo_put_into_incoming_under_a_file_name_is_detected_and_reported(runtime, whole_image):
    # By hand, as files are named; two alike but for case are two photos on MySQL too (ids compare case-blind there).
    names = ("street-1.jpg", "street 1.jpg", "street/1.jpg", "street_1_jpg", "IMG_0001", "img_0001")
    for name in names:
        runtime.store.put(f"incoming/{name}", IMAGE)
    runtime.drain()
    runtime.fire_schedule("index")
    # No shop sells them, so no search could show them: their garments are reported, not indexed;
    # names alike but for what a key's stem cannot hold are each their own photo.
    rows = runtime.db.run_query("SELECT id, category, embedding_status FROM detections ORDER BY id")
    assert rows == sorted(({"id": ids.detection_id(ids.image_id_of_name(name), 0), "category": "skirt", "embedding_status": "skipped"}
                           for name in names), key=lambda row: row["id"])
    assert len({row["id"].lower() for row in rows}) == 6 and {"street_1_jpg-000", "img_0001-000"} <= {row["id"] for row in rows}  # a clean name is kept
    assert [info.key for info in runtime.store.list()] == []  # moved, then consumed; no shard


def test_a_photo_without_a_product_indexed_before_leaves_the_shard(runtime, whole_image, monkeypatch):
    """Before such photos were kept out of the index, their vectors stayed in the shards for good."""
    upload_product(runtime, "skirt")
    # The code of before: embedded as if it were a shop's picture, and never counted as dead.
    monkeypatch.setattr(catalogue, "product_category_of_image", lambda db, image_id: "skirt")
    monkeypatch.setattr(catalogue, "dead_indexed_detections", lambda db: {})
    runtime.store.put("incoming/street-1", IMAGE)
    runtime.drain()
    runtime.fire_schedule("index")
    runtime.app.shards.manifest_ttl_s = 0
    assert runtime.app.shards.categories() == {"skirt": 2}
    monkeypatch.undo()
    assert runtime.fire_schedule("index") == {"vectors_dropped": 1}
    assert runtime.app.shards.categories() == {"skirt": 1}
    assert runtime.db.run_query("SELECT id FROM detections WHERE embedding_status = 'indexed'") != []
    assert runtime.db.run_query("SELECT embedding_status FROM detections WHERE id LIKE 'street-1%'") == [{"embedding_status": "removed"}]


def test_a_photo_named_longer_than_an_id_is_searchable_under_a_short_id(runtime, whole_image):
    # images.id is 40 characters wide: MySQL refused the name's id, SQLite kept it whole.
    for name in ("summer-collection-2024-look-12-front-view.jpg", "summer-collection-2024-look-12-front-view-no-dot"):
        runtime.store.put(f"incoming/{name}", IMAGE)
    runtime.drain()
    image_ids = sorted(row["id"] for row in runtime.db.run_query("SELECT id FROM images"))
    assert len(image_ids) == 2 and all(len(image_id) <= ids.MAX_ID_LENGTH for image_id in image_ids)
    assert image_ids[0].startswith("summer-collection-2024-")


def test_a_folder_in_incoming_is_skipped_not_failed(runtime):
    # The S3 console's "Create folder" puts incoming/summer/: its event must not fail and be retried.
    for key in ("incoming/summer-2024/", "incoming/a//b.jpg", "incoming/./x.jpg"):
        assert pipeline.detect(runtime.app, key).status == "skipped"


def test_a_vector_of_a_model_the_index_does_not_hold_is_embedded_again(runtime, monkeypatch):
    """A rollout's window: the embed function runs the new model, the index function still the old."""
    new = runtime.app.garment_model.name
    upload_product(runtime, "dress", index=False)
    monkeypatch.setattr(runtime.app.garment_model, "name", "garment_old")
    monkeypatch.setattr(pipeline, "reembed", lambda *_args, **_kwargs: {"stale": 0})  # the old model's pass is not this test's
    report = pipeline.index(runtime.app)  # the old index drops the new model's vector, unmerged
    assert report["dress"]["added"] == 0 and list(runtime.store.list("vectors/pending/")) == []
    # No model's vector of the item is kept: the new model's re-embed pass fetches its image again.
    assert runtime.db.run_query("SELECT embedded_by FROM detections") == [{"embedded_by": None}]
    assert [image["src_link"] for image in catalogue.images_embedded_by_other_models(runtime.db, new)] == ["https://shop.example/i/1.jpg"]


def test_an_index_run_that_re_embeds_a_batch_reports_all_that_is_stale(runtime, monkeypatch):
    """`shazzam ingest` goes on while the stale pictures grow fewer: told only the batch's (500 of
    1,000 twice), it stopped with half of them left."""
    monkeypatch.setattr(pipeline, "reembed", lambda _app, stale, **_kwargs: {"stale": len(stale), "images_uploaded": len(stale)})
    for number in (1, 2):
        put_shop_photo(runtime, IMAGE, number, "skirt")
    runtime.drain()
    runtime.fire_schedule("index")
    monkeypatch.setattr(runtime.app.garment_model, "name", "garment_next")
    monkeypatch.setattr(pipeline, "REEMBED_BATCH", 1)
    assert runtime.fire_schedule("index")["reembedding"] == {"stale": 2, "images_uploaded": 1}


def spoil_pending_vector(runtime) -> str:
    """Cut the one pending vector as a crash would; its detection id."""
    (info,) = runtime.store.list("vectors/pending/")
    runtime.store.put(info.key, runtime.store.get(info.key)[:100])
    return ids.key_stem(info.key)


def prune_now(runtime) -> dict:
    return catalogue.prune_dead_products(runtime.db, catalogue.utcnow() + timedelta(days=1))


def test_an_item_whose_new_vector_is_set_aside_keeps_its_old_one_until_it_dies(runtime, monkeypatch):
    monkeypatch.setattr(pipeline, "reembed", lambda *_args, **_kwargs: {"stale": 0})  # no shop to fetch from here
    image_id = put_shop_photo(runtime, IMAGE, 1, "skirt")
    runtime.drain()
    runtime.fire_schedule("index")
    runtime.store.put(ids.incoming_key(image_id), IMAGE)  # fetched again (the shop changed it): embedded again
    runtime.drain()
    spoil_pending_vector(runtime)
    runtime.fire_schedule("index")  # no longer fails every run: set aside
    # The old vector still answers for it, by no known model: the re-embed pass fetches it again.
    assert runtime.db.run_query("SELECT embedding_status, embedded_by FROM detections") == [{"embedding_status": "indexed", "embedded_by": None}]
    assert [image["id"] for image in catalogue.images_embedded_by_other_models(runtime.db, runtime.app.garment_model.name)] == [image_id]
    catalogue.mark_product_dead(runtime.db, catalogue.get_image(runtime.db, image_id)["product_id"], "http-404")
    assert runtime.fire_schedule("index")["vectors_dropped"] == 1  # the old vector leaves with it
    runtime.app.shards.manifest_ttl_s = 0
    assert runtime.app.shards.categories() == {"skirt": 0}
    assert prune_now(runtime)["products_pruned"] == 1


def test_an_item_embedded_again_while_its_set_aside_vector_was_read_leaves_the_shard_when_it_dies(runtime, monkeypatch):
    monkeypatch.setattr(pipeline, "reembed", lambda *_args, **_kwargs: {"stale": 0})
    image_id = put_shop_photo(runtime, IMAGE, 1, "skirt")
    runtime.drain()
    runtime.fire_schedule("index")
    runtime.store.put(ids.incoming_key(image_id), IMAGE)  # the shop changed it: embedded again, and cut
    runtime.drain()
    spoil_pending_vector(runtime)

    def embedded_again_meanwhile():
        runtime.store.put(ids.incoming_key(image_id), IMAGE)
        runtime.drain()

    during_the_read_of_a_pending_vector(runtime, monkeypatch, embedded_again_meanwhile)
    # The good vector is on its way: the row still says so, and its merge records it.
    assert runtime.db.run_query("SELECT embedding_status FROM detections") == [{"embedding_status": "embedded"}]
    catalogue.mark_product_dead(runtime.db, catalogue.get_image(runtime.db, image_id)["product_id"], "http-404")
    pipeline.drop_dead_vectors(runtime.app)  # revalidate, before the merge
    pipeline.index(runtime.app)
    runtime.app.shards.manifest_ttl_s = 0
    assert runtime.app.shards.categories() == {"skirt": 0}


def test_an_item_whose_first_vector_is_set_aside_is_fetched_again_and_holds_no_tombstone(runtime, monkeypatch):
    monkeypatch.setattr(pipeline, "reembed", lambda *_args, **_kwargs: {"stale": 0})
    image_id = put_shop_photo(runtime, IMAGE, 1, "skirt")
    runtime.drain()
    spoil_pending_vector(runtime)
    runtime.fire_schedule("index")
    assert runtime.db.run_query("SELECT embedding_status, embedded_by FROM detections") == [{"embedding_status": "embedded", "embedded_by": None}]
    assert [image["id"] for image in catalogue.images_embedded_by_other_models(runtime.db, runtime.app.garment_model.name)] == [image_id]
    catalogue.mark_product_dead(runtime.db, catalogue.get_image(runtime.db, image_id)["product_id"], "http-404")
    assert prune_now(runtime) == {"products_pruned": 1, "images_pruned": 1, "detections_pruned": 1, "tombstones_kept": 0}


def test_an_unreadable_shard_does_not_stop_dead_items_leaving_the_shards(runtime, monkeypatch):
    monkeypatch.setattr(pipeline, "reembed", lambda *_args, **_kwargs: {"stale": 0})
    dress = (REPO / "samples" / "shop" / "images" / "dress-01.jpg").read_bytes()
    dead, live = put_shop_photo(runtime, dress, 1, "dress"), put_shop_photo(runtime, IMAGE, 2, "dress")
    runtime.drain()
    runtime.fire_schedule("index")
    entry = index.read_manifest(runtime.store)[0]["shards"]["dress"]
    runtime.store.put(entry["key"], runtime.store.get(entry["key"])[:500])  # (a local folder's cut write)
    catalogue.mark_product_dead(runtime.db, catalogue.get_image(runtime.db, dead)["product_id"], "http-404")
    assert pipeline.drop_dead_vectors(runtime.app) == 1  # it raised, so every index and revalidate run failed
    runtime.app.shards.manifest_ttl_s = 0
    assert runtime.app.shards.categories() == {"dress": 0}  # replaced, as an index run replaces it
    rows = {row["image_id"]: (row["embedding_status"], row["embedded_by"])
            for row in runtime.db.run_query("SELECT image_id, embedding_status, embedded_by FROM detections")}
    assert rows == {dead: ("removed", None), live: ("indexed", None)}
    assert [image["id"] for image in catalogue.images_embedded_by_other_models(runtime.db, runtime.app.garment_model.name)] == [live]


def test_an_item_that_died_while_its_vector_was_pending_leaves_the_shard_at_the_index_run(runtime):
    upload_product(runtime, "dress", index=False)
    (product_id,) = catalogue.products_of_shop(runtime.db, ids.shop_id("https://shop.example/")).values()
    catalogue.mark_product_dead(runtime.db, product_id["id"], "out-of-stock")  # a scrape, before the index run
    report = runtime.fire_schedule("index")
    assert report["dress"]["added"] == 1 and report["vectors_dropped"] == 1
    runtime.app.shards.manifest_ttl_s = 0
    assert runtime.app.shards.categories() == {"dress": 0}
    assert statuses(runtime) == [("dress", "removed")]


def test_an_index_run_during_embed_leaves_the_row_to_be_marked_by_the_next(runtime, monkeypatch):
    update_detection = catalogue.update_detection

    def index_run_meanwhile(db, detection_id, **values):
        if values.get("embedding_status") == "embedded":
            runtime.fire_schedule("index")
        return update_detection(db, detection_id, **values)

    monkeypatch.setattr(catalogue, "update_detection", index_run_meanwhile)
    upload_product(runtime, "skirt", index=False)
    monkeypatch.setattr(catalogue, "update_detection", update_detection)
    runtime.fire_schedule("index")
    assert statuses(runtime) == [("skirt", "indexed")]  # so revalidate can take it out when it dies
    assert not list(runtime.store.list("vectors/"))


def test_a_failed_category_leaves_the_categories_merged_before_it_recorded(runtime, monkeypatch):
    upload_product(runtime, "dress", index=False)
    upload_product(runtime, "skirt", number=2, index=False)
    publish = index.publish

    def skirt_fails(store, category, **kwargs):
        if category == "skirt":
            raise RuntimeError("could not publish skirt: the manifest kept changing")
        return publish(store, category, **kwargs)

    monkeypatch.setattr(index, "publish", skirt_fails)
    with pytest.raises(RuntimeError):
        pipeline.index(runtime.app)
    assert statuses(runtime) == [("dress", "indexed"), ("skirt", "embedded")]
    monkeypatch.setattr(index, "publish", publish)
    assert pipeline.index(runtime.app) == {"skirt": {"added": 1, "removed": 0, "total": 1}}
    assert statuses(runtime) == [("dress", "indexed"), ("skirt", "indexed")]
    assert not list(runtime.store.list("vectors/"))


def test_what_a_runtime_stopped_mid_ingest_left_is_taken_up_by_the_next(tmp_path):
    stopped = LocalRuntime(tmp_path / "data")
    put_shop_photo(stopped, IMAGE, 1, image_id="upload-1")
    put_shop_photo(stopped, b"not an image", 2, image_id="upload-2")
    assert stopped.pending() == 2
    stopped.close()  # Ctrl-C before anything was delivered: the queue lived in memory

    second = LocalRuntime(tmp_path / "data")
    assert second.pending() == 2
    assert second.drain().failed == 0
    assert second.fire_schedule("index") == {"skirt": {"added": 1, "removed": 0, "total": 1}}
    assert [info.key for info in second.store.list("incoming/")] == ["incoming/upload-2"]  # kept: it failed
    second.close()
    third = LocalRuntime(tmp_path / "data")
    assert third.pending() == 0  # neither the ingested photo nor the failed one comes round again
    third.close()


def test_a_photo_replaced_after_its_detection_before_a_stop_is_detected_at_the_restart(tmp_path):
    from shazzam.local.runtime import DrainReport

    stopped = LocalRuntime(tmp_path / "data")
    put_shop_photo(stopped, IMAGE, image_id="upload-1")  # a skirt
    stopped.deliver(stopped._next_event(), DrainReport())  # detected, not yet standardised
    stopped.store.put("incoming/upload-1", (REPO / "samples" / "shop" / "images" / "dress-01.jpg").read_bytes())
    stopped.close()  # replaced, then stopped before the new photo's event was delivered

    second = LocalRuntime(tmp_path / "data")
    assert second.drain().failed == 0
    assert second.fire_schedule("index") == {"dress": {"added": 1, "removed": 0, "total": 1}}
    second.close()


def test_a_detections_document_left_by_a_stop_after_its_crops_is_deleted_at_the_restart(tmp_path):
    """Stopped between standardise's two deletes (the photo's, then its document's): at the restart
    the document is delivered again, has no photo to crop, and goes."""
    from shazzam.local.runtime import DrainReport

    stopped = LocalRuntime(tmp_path / "data")
    put_shop_photo(stopped, IMAGE, image_id="upload-1")
    stopped.deliver(stopped._next_event(), DrainReport())  # detected
    stopped.store.delete("incoming/upload-1")  # its crops written and the photo deleted, then the stop
    stopped.close()

    second = LocalRuntime(tmp_path / "data")
    assert second.drain().failed == 0
    assert [info.key for info in second.store.list("detections/")] == []
    second.close()
    assert LocalRuntime(tmp_path / "data").pending() == 0  # nothing comes round again


def test_a_cut_short_index_is_mended_when_the_runtime_starts(tmp_path):
    """A power cut in the local folder (S3's writes are whole): the manifest is rebuilt from the
    shards, and a shard cut short is replaced, its items fetched and embedded again."""
    first = LocalRuntime(tmp_path / "data")
    upload_product(first, "dress")
    first.close()
    manifest = tmp_path / "data" / "objects" / index.MANIFEST_KEY
    manifest.write_bytes(manifest.read_bytes()[:10])
    second = LocalRuntime(tmp_path / "data")
    second.app.shards.manifest_ttl_s = 0
    assert second.app.shards.categories() == {"dress": 1}
    shard = tmp_path / "data" / "objects" / index.read_manifest(second.store)[0]["shards"]["dress"]["key"]
    second.close()
    shard.write_bytes(shard.read_bytes()[:100])
    third = LocalRuntime(tmp_path / "data")
    third.app.shards.manifest_ttl_s = 0
    assert third.app.shards.categories() == {"dress": 0}
    assert [row["embedded_by"] for row in third.db.run_query("SELECT embedded_by FROM detections")] == [None]  # to embed again
    third.close()


def test_a_photo_replaced_after_detection_is_the_one_indexed(runtime, monkeypatch):
    dress = (REPO / "samples" / "shop" / "images" / "dress-01.jpg").read_bytes()
    standardise = pipeline.standardise
    image_key = []

    def shop_replaces_the_photo_first(app, key):
        if not image_key:  # the scrape function, meanwhile, uploads the shop's new photo
            image_key.append(ids.incoming_key(ids.key_stem(key)))
            app.store.put(image_key[0], dress)
        return standardise(app, key)

    monkeypatch.setattr(pipeline, "standardise", shop_replaces_the_photo_first)
    upload_product(runtime, None)  # the old photo, a skirt
    assert statuses(runtime) == [("dress", "indexed")]  # the new photo's garment, with its own boxes
    assert runtime.store.head(image_key[0]) is None  # ingested, then gone like every photo


def test_a_photo_replaced_while_it_was_detected_is_the_one_indexed(runtime, monkeypatch):
    dress = (REPO / "samples" / "shop" / "images" / "dress-01.jpg").read_bytes()
    detect = runtime.app.detector.detect
    calls = []

    def shop_replaces_the_photo_meanwhile(image):
        calls.append(image)
        if len(calls) == 1:  # the new photo's detect (another invocation) finishes first
            key = next(runtime.store.list("incoming/")).key
            with monkeypatch.context() as delivered_below:
                delivered_below.setattr(runtime.store, "on_put", None)
                runtime.store.put(key, dress)
            pipeline.detect(runtime.app, key)  # that upload's event
        return detect(image)

    monkeypatch.setattr(runtime.app.detector, "detect", shop_replaces_the_photo_meanwhile)
    upload_product(runtime, None)  # the old photo, a skirt
    assert statuses(runtime) == [("dress", "indexed")]


def test_a_photo_replaced_while_its_crop_was_embedded_is_the_one_indexed(runtime, monkeypatch):
    dress = (REPO / "samples" / "shop" / "images" / "dress-01.jpg").read_bytes()
    predict = runtime.app.garment_model.predict
    calls = []

    def shop_replaces_the_photo_meanwhile(image, **options):
        calls.append(image)
        if len(calls) == 1:  # the new photo's detect and standardise (other invocations) rewrite the crop
            image_id = runtime.db.run_query("SELECT id FROM images")[0]["id"]
            runtime.store.put(ids.incoming_key(image_id), dress)
            pipeline.detect(runtime.app, ids.incoming_key(image_id))
            pipeline.standardise(runtime.app, ids.detections_key(image_id))
        return predict(image, **options)

    monkeypatch.setattr(runtime.app.garment_model, "predict", shop_replaces_the_photo_meanwhile)
    upload_product(runtime, None)  # the old photo, a skirt
    assert statuses(runtime) == [("dress", "indexed")]  # the new crop was embedded, not deleted unread


def test_a_crop_of_a_photo_replaced_while_it_was_cropped_never_overwrites_the_new_one(runtime, monkeypatch):
    dress = (REPO / "samples" / "shop" / "images" / "dress-01.jpg").read_bytes()
    image_id = put_shop_photo(runtime, IMAGE, 1, None)
    monkeypatch.setattr(runtime.store, "on_put", None)  # the stages by hand, in this order
    pipeline.detect(runtime.app, ids.incoming_key(image_id))
    standardise_img = pipeline.standardise_img

    def shop_replaces_the_photo_meanwhile(image):
        monkeypatch.setattr(pipeline, "standardise_img", standardise_img)
        runtime.store.put(ids.incoming_key(image_id), dress)  # and its detect and standardise finish first
        pipeline.detect(runtime.app, ids.incoming_key(image_id))
        assert pipeline.standardise(runtime.app, ids.detections_key(image_id)).status == "done"
        written.extend(runtime.store.get(info.key) for info in runtime.store.list("standard/"))
        return standardise_img(image)

    written = []

    monkeypatch.setattr(pipeline, "standardise_img", shop_replaces_the_photo_meanwhile)
    assert pipeline.standardise(runtime.app, ids.detections_key(image_id)).status == "skipped"
    assert [runtime.store.get(info.key) for info in runtime.store.list("standard/")] == written  # the new photo's crop


def test_a_vector_of_a_crop_replaced_while_it_was_embedded_never_overwrites_the_new_one(runtime, monkeypatch):
    dress = (REPO / "samples" / "shop" / "images" / "dress-01.jpg").read_bytes()
    image_id = put_shop_photo(runtime, IMAGE, 1, "dress")
    monkeypatch.setattr(runtime.store, "on_put", None)
    pipeline.detect(runtime.app, ids.incoming_key(image_id))
    pipeline.standardise(runtime.app, ids.detections_key(image_id))
    (crop,) = runtime.store.list("standard/")
    new_crop = encode_png(standardise_img(load_image(dress)))
    model = runtime.app.garment_model
    predict = model.predict

    def new_crop_written_and_embedded_meanwhile(image, **options):
        monkeypatch.setattr(model, "predict", predict)
        runtime.store.put(crop.key, new_crop)
        assert pipeline.embed(runtime.app, crop.key).status == "done"
        return predict(image, **options)

    monkeypatch.setattr(model, "predict", new_crop_written_and_embedded_meanwhile)
    assert pipeline.embed(runtime.app, crop.key).status == "skipped"
    (pending,) = runtime.store.list("vectors/pending/")
    vector, _model = index.decode_vector(runtime.store.get(pending.key))
    np.testing.assert_allclose(vector, predict(load_image(new_crop), standardised=True).embedding, rtol=1e-5)


def test_the_product_category_wins_over_the_classifier(runtime):
    upload_product(runtime, "hat")  # a skirt photo, filed by the shop as a hat
    (row,) = runtime.db.run_query("SELECT category, embedding_status FROM detections")
    assert row == {"category": "hat", "embedding_status": "indexed"}


@pytest.fixture
def whole_image(monkeypatch):
    """Detector v0 (the whole photo is one garment): for tests about what happens to a garment."""
    monkeypatch.setenv("SHAZZAM_DETECTOR", "whole-image")


def test_without_a_product_category_the_classifier_decides(runtime, whole_image):
    runtime.store.put("incoming/upload-1", IMAGE)
    runtime.drain()
    runtime.fire_schedule("index")
    (row,) = runtime.db.run_query("SELECT category, category_confidence FROM detections")
    assert row["category"] == "skirt" and row["category_confidence"] > 0.5


def test_ingest_and_search_preprocess_a_photo_identically(runtime, whole_image):
    """The catalogue vector (crop -> PNG -> embed) equals the query vector and the training input's."""
    import numpy as np

    from shazzam.distance import quantise
    from shazzam.images import centre_view, load_image, standardise_img, to_model_input

    put_shop_photo(runtime, IMAGE, image_id="upload-1")
    runtime.drain()
    runtime.fire_schedule("index")
    shard = runtime.app.shards.shard(runtime.db.run_query("SELECT category FROM detections")[0]["category"])
    stored = runtime.app.garment_model.predict(load_image(IMAGE)).embedding
    np.testing.assert_array_equal(shard.codes[0], quantise(stored))
    # what training fed the model is the centre of what the standardise stage stores (lossless PNG)
    np.testing.assert_array_equal(to_model_input(load_image(IMAGE))[0],
                                  np.asarray(centre_view(standardise_img(load_image(IMAGE))), np.float32))
    ((detection_id, distance),) = runtime.app.shards.search(shard.category, stored, 1)
    assert detection_id == "upload-1-000" and distance == pytest.approx(0.0, abs=1e-4)


# --- several garments a photo (issue #8) ------------------------------------------------------


def detection_rows(runtime) -> list[dict]:
    return runtime.db.run_query(
        "SELECT id, box_left, box_top, box_right, box_bottom, label, category, embedding_status FROM detections ORDER BY id"
    )


@pytest.mark.parametrize(
    "category, label, box",
    [
        ("pants", "pants", (0.25, 0.45, 0.75, 0.86)),  # the product's garment among the outfit's
        ("shorts", "pants", (0.25, 0.45, 0.75, 0.86)),
        ("dress", None, (0, 0, 1, 1)),  # no dress found: the product shot is the dress
        (None, "top", (0.20, 0.12, 0.80, 0.50)),  # no category: the largest searchable garment
    ],
)
def test_a_product_image_indexes_one_garment_its_own(runtime, monkeypatch, category, label, box):
    from shazzam.images import load_image
    from tests.support.detectors import FixedDetector, use_detector

    use_detector(monkeypatch, FixedDetector())
    upload_product(runtime, category)
    (row,) = detection_rows(runtime)
    width, height = load_image(IMAGE).size
    expected = [round(box[0] * width), round(box[1] * height), round(box[2] * width), round(box[3] * height)]
    assert [row["box_left"], row["box_top"], row["box_right"], row["box_bottom"]] == expected
    assert row["label"] == label and row["embedding_status"] == "indexed"
    if category:
        assert row["category"] == category  # the shop's category wins
    else:
        assert row["category"] in ("longsleeve", "shirt", "t-shirt")  # the classifier, among a top's


def test_a_photo_without_a_product_keeps_every_garment(runtime, monkeypatch):
    from tests.support.detectors import FixedDetector, use_detector

    use_detector(monkeypatch, FixedDetector())
    runtime.store.put("incoming/street-1", IMAGE)
    report = runtime.drain()
    assert report.failed == 0 and report.by_function == {"detect": 1, "standardise": 1, "embed": 3}
    runtime.fire_schedule("index")
    rows = {row["label"]: row for row in detection_rows(runtime)}
    assert set(rows) == {"bag", "top", "pants", "footwear"}
    assert rows["bag"]["embedding_status"] == "skipped" and rows["bag"]["category"] is None  # no shard for bags
    assert rows["top"]["category"] in ("longsleeve", "shirt", "t-shirt")
    assert rows["pants"]["category"] in ("pants", "shorts") and rows["footwear"]["category"] == "shoes"
    # Reported, not indexed: no shop sells this photo's garments.
    assert all(rows[label]["embedding_status"] == "skipped" for label in ("top", "pants", "footwear"))
    assert list(runtime.store.list()) == []  # nothing transient left, and no shard


def test_a_shop_photo_over_the_pixel_limit_is_detected_and_cropped_in_the_same_reduced_pixels(runtime, monkeypatch):
    """Such a photo was refused by detect for good. Decoded smaller, detect's boxes are in the
    reduced photo's pixels: standardise must crop them from the same, or a box of the right half
    (blue) would cut the left (red) of the full-size photo."""
    import io

    from PIL import Image

    from shazzam import images
    from tests.support.detectors import FixedDetector, use_detector

    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 100)  # a small photo stands for a 48-megapixel one
    photo = Image.new("RGB", (400, 200), (220, 20, 20))
    photo.paste((20, 20, 220), (200, 0, 400, 200))
    data = io.BytesIO()
    photo.save(data, "JPEG", quality=95)
    use_detector(monkeypatch, FixedDetector([("top", 0.9, (0.5, 0.0, 1.0, 1.0))]))
    image_id = put_shop_photo(runtime.app, data.getvalue(), category="t-shirt")
    assert pipeline.detect(runtime.app, ids.incoming_key(image_id)).status == "done"
    assert catalogue.get_image(runtime.db, image_id)["status"] == "detected"
    (row,) = detection_rows(runtime)
    assert [row["box_left"], row["box_top"], row["box_right"], row["box_bottom"]] == [50, 0, 100, 50]  # a quarter of 400 x 200
    assert pipeline.standardise(runtime.app, ids.detections_key(image_id)).status == "done"
    red, green, blue = np.asarray(load_image(runtime.store.get(ids.standard_key(row["id"]))), float).mean(axis=(0, 1))
    assert blue > 150 and red < 80


@pytest.fixture
def ccp_photo(shared_data) -> bytes:
    path = shared_data / "ccp" / "photos" / "0707.jpg"
    if not path.is_file():
        from tests.conftest import unavailable

        unavailable(f"no CCP photo at {path}")
    return path.read_bytes()


def test_a_street_photo_gets_results_for_each_garment(runtime, monkeypatch, ccp_photo):
    """The committed detector_v2 on a CCP validation photo, over a small served catalogue."""
    from shazzam import pipeline
    from shazzam.local.sample_shop import SampleShop
    from shazzam.taxonomy import DETECTOR_CLASSES, SEARCHABLE
    from tests.api_fixtures import build_catalogue
    from tests.support.detectors import real_detector_manifest, serve_real_detector

    real_detector_manifest()
    serve_real_detector(monkeypatch)
    with SampleShop() as shop:
        build_catalogue(runtime, shop, per_category=2)
    answer = pipeline.search(runtime.app, ccp_photo, k=3)
    assert answer["model"]["detector"] != "whole-image-v0"
    garments = answer["garments"]
    assert len(garments) >= 2, garments  # a person in an outfit: at least a top or dress, and shoes
    width, height = answer["image"]["width"], answer["image"]["height"]
    for garment in garments:
        assert garment["label"] in DETECTOR_CLASSES
        left, top, right, bottom = garment["box"]
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        if garment["searchable"]:
            assert garment["category"] in SEARCHABLE[garment["label"]]
            assert len(garment["results"]) == 2  # every category holds 2 items
    assert answer["results"] == garments[0]["results"] and garments[0]["searchable"]
    # one garment, picked by its index, searched in a category of the user's choosing
    picked = pipeline.search(runtime.app, ccp_photo, k=3, garment=len(garments) - 1, category="dress")
    (only,) = picked["garments"]
    assert only["index"] == len(garments) - 1 and only["box"] == garments[-1]["box"] and only["category"] == "dress"


def test_one_crawler_at_a_time_whatever_process_runs_it(tmp_path):
    """Two scrapes of one shop at once would fetch each page twice, at twice its pace: a second
    waits for the first, in another process (or Lambda) as in this one (shazzam.lease)."""
    import threading

    first, second = LocalRuntime(tmp_path / "data"), LocalRuntime(tmp_path / "data")  # two processes' runtimes
    finished = threading.Event()
    with lease.held(first.db, lease.CRAWLER, "revalidate"):
        waiting = threading.Thread(target=lambda: second.fire_schedule("scrape") is not None and finished.set())
        waiting.start()
        assert not finished.wait(1.0)  # it waits for the first
    waiting.join(30)
    assert finished.is_set() and lease.holder(second.db, lease.CRAWLER) is None
    first.close()
    second.close()


def test_ingest_waits_for_a_crawler_in_another_process_however_long(tmp_path, monkeypatch, capsys):
    import threading
    import time

    from shazzam import cli

    monkeypatch.setattr(lease, "POLL_S", 0.05)
    monkeypatch.setattr(pipeline, "CRAWLER_WAIT_SHARE", 0.0005)  # each scrape invocation gives up after 0.27 s
    serving, mine = LocalRuntime(tmp_path / "data"), LocalRuntime(tmp_path / "data")
    crawling, done = threading.Event(), threading.Event()

    def serve_crawls():  # serve's schedules, stopped with Ctrl-C mid-scrape: close() lets the lease go
        with lease.held(serving.db, lease.CRAWLER, "scrape"):
            crawling.set()
            done.wait(30)

    threading.Thread(target=serve_crawls, daemon=True).start()
    assert crawling.wait(10)
    threading.Timer(1.0, serving.close).start()
    started = time.monotonic()
    report = cli.ingest_now(mine, [], None, True)
    assert time.monotonic() - started >= 0.9 and report["scrape"]["shops"] == 0
    assert "the crawler lease is held by scrape" in capsys.readouterr().err
    done.set()
    mine.close()


def test_a_crawler_that_waited_half_its_budget_fails_and_is_run_again(runtime, monkeypatch):
    """In the cloud the failure makes Lambda run it again, a minute and then two later."""
    monkeypatch.setattr(lease, "POLL_S", 0.05)
    monkeypatch.setattr(pipeline, "REVALIDATE_BUDGET_S", 0.2)
    with lease.held(runtime.db, lease.CRAWLER, "revalidate"):
        with pytest.raises(lease.LeaseBusy, match="held by revalidate"):
            pipeline.scrape(runtime.app, budget_s=0.2)
        with pytest.raises(lease.LeaseBusy, match="held by revalidate"):
            runtime.invoke("revalidate", events.scheduled("shazzam-revalidate"))
    assert pipeline.scrape(runtime.app, budget_s=0.2)["shops"] == 0


def test_a_running_runtime_takes_up_what_a_stopped_command_left(tmp_path, monkeypatch):
    """`serve` runs on while a `scrape` in another terminal is stopped mid-ingest: its queue lived in
    memory, and the work it left is taken up once untouched for LEFT_AFTER_S."""
    import os
    import time
    from types import SimpleNamespace

    from shazzam.local import runtime as runtime_module
    from shazzam.storage import LocalFolderStore

    serving = LocalRuntime(tmp_path / "data")
    # The other process's put: the object, and an event in that process's memory only.
    stopped = SimpleNamespace(db=serving.db, store=LocalFolderStore(serving.store.root))
    key = ids.incoming_key(put_shop_photo(stopped, IMAGE, 1, "skirt"))
    assert serving.requeue_unprocessed(older_than_s=runtime_module.LEFT_AFTER_S) == 0  # it may be the other's work in progress
    old = time.time() - runtime_module.LEFT_AFTER_S - 1
    os.utime(serving.store.root / key, (old, old))
    monkeypatch.setattr(runtime_module, "LOOK_FOR_LEFT_WORK_S", 0.1)
    serving.start_background(schedules=False, tick_s=0.05)
    deadline = time.monotonic() + 60
    while not list(serving.store.list("vectors/pending/")) and time.monotonic() < deadline:
        time.sleep(0.1)
    serving.stop()
    assert serving.store.head(key) is None and list(serving.store.list("vectors/pending/"))  # detected, cropped, embedded
    serving.close()


def test_work_this_runtime_failed_is_not_taken_up_again_as_left_work(tmp_path, monkeypatch):
    """The periodic look for left work skips what this runtime delivered itself: a document that
    fails goes to the dead letters once, not every few minutes."""
    import time

    from shazzam.local import runtime as runtime_module

    serving = LocalRuntime(tmp_path / "data")
    serving.store.put("detections/abc.json", b"{}")
    get_with_etag = serving.store.get_with_etag

    def unreachable(key, *args, **kwargs):  # standardise fails on it, every time
        if key == "detections/abc.json":
            raise ConnectionError("the store is unreachable")
        return get_with_etag(key, *args, **kwargs)

    monkeypatch.setattr(serving.store, "get_with_etag", unreachable)
    serving.drain()
    monkeypatch.setattr(runtime_module, "LOOK_FOR_LEFT_WORK_S", 0.1)
    monkeypatch.setattr(runtime_module, "LEFT_AFTER_S", 0)
    serving.start_background(schedules=False, tick_s=0.05)
    time.sleep(1.5)
    serving.stop()
    assert len(list((tmp_path / "data" / "dead-letters").iterdir())) == 1
    serving.close()
