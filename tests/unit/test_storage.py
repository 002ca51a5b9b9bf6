"""The object-store contract, and what only LocalFolderStore does (events, threads, files).

`StoreContract` is the behaviour both backends share; a subclass supplies a `store` fixture.
tests/integration/test_s3_store.py runs the same contract against S3Store on moto.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from urllib.parse import unquote_plus

import pytest

from shazzam.storage import LocalFolderStore, ObjectNotFound, PreconditionFailed, etag_of


class StoreContract:
    """Behaviour every ObjectStore must have. Subclasses provide the `store` fixture."""

    def test_put_get_head(self, store):
        etag = store.put("a/b/c.bin", b"hello")
        assert store.get("a/b/c.bin") == b"hello"
        info = store.head("a/b/c.bin")
        assert info is not None
        assert (info.key, info.size, info.etag) == ("a/b/c.bin", 5, etag)
        assert etag == etag_of(b"hello")
        assert store.get_with_etag("a/b/c.bin") == (b"hello", etag)

    def test_put_replaces(self, store):
        first = store.put("k", b"one")
        second = store.put("k", b"two!")
        assert first != second
        assert store.get("k") == b"two!"
        assert store.head("k").size == 4

    def test_empty_object(self, store):
        store.put("empty", b"")
        assert store.get("empty") == b""
        assert store.head("empty").size == 0

    def test_missing_object(self, store):
        with pytest.raises(ObjectNotFound):
            store.get("nope/missing")
        with pytest.raises(ObjectNotFound):
            store.get_with_etag("nope/missing")
        assert store.head("nope/missing") is None

    def test_list_by_prefix(self, store):
        for key in ("index/a/1.h5", "index/a/2.h5", "index/b/1.h5", "incoming/x", "indexes"):
            store.put(key, key.encode())
        assert sorted(info.key for info in store.list("index/")) == ["index/a/1.h5", "index/a/2.h5", "index/b/1.h5"]
        assert sorted(info.key for info in store.list("index/a/")) == ["index/a/1.h5", "index/a/2.h5"]
        assert sorted(info.key for info in store.list("index")) == ["index/a/1.h5", "index/a/2.h5", "index/b/1.h5", "indexes"]
        assert len(list(store.list())) == 5
        assert list(store.list("absent/")) == []
        sizes = {info.key: info.size for info in store.list("in")}
        assert sizes["incoming/x"] == len(b"incoming/x")

    def test_delete(self, store):
        store.put("d/1", b"x")
        store.put("d/2", b"y")
        store.delete("d/1")
        assert store.head("d/1") is None
        with pytest.raises(ObjectNotFound):
            store.get("d/1")
        assert [info.key for info in store.list("d/")] == ["d/2"]
        store.delete("d/never-existed")  # deleting nothing is not an error

    @pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "", "a/./b", "a/../b", "trailing/"])
    def test_invalid_keys_raise(self, store, key):
        with pytest.raises(ValueError):
            store.put(key, b"x")
        with pytest.raises(ValueError):
            store.get(key)
        with pytest.raises(ValueError):
            store.head(key)
        with pytest.raises(ValueError):
            store.delete(key)

    def test_delete_if_match_deletes_only_the_version_read(self, store):
        read = store.put("k", b"1")
        store.put("k", b"2")  # rewritten since it was read
        with pytest.raises(PreconditionFailed):
            store.delete("k", if_match=read)
        assert store.get("k") == b"2"
        store.delete("k", if_match=store.head("k").etag)
        assert store.head("k") is None
        store.delete("k", if_match=read)  # already gone: nothing to do

    def test_if_none_match_creates_once(self, store):
        store.put("manifest.json", b"first", if_none_match=True)
        with pytest.raises(PreconditionFailed):
            store.put("manifest.json", b"second", if_none_match=True)
        assert store.get("manifest.json") == b"first"

    def test_if_match_current_etag_succeeds(self, store):
        etag = store.put("m", b"v1")
        new_etag = store.put("m", b"v2", if_match=etag)
        assert store.get_with_etag("m") == (b"v2", new_etag)

    def test_if_match_stale_etag_fails(self, store):
        stale = store.put("m", b"v1")
        store.put("m", b"v2")
        with pytest.raises(PreconditionFailed):
            store.put("m", b"v3", if_match=stale)
        assert store.get("m") == b"v2"

    def test_if_match_missing_object_fails(self, store):
        with pytest.raises(PreconditionFailed):
            store.put("never-written", b"x", if_match=etag_of(b"x"))
        assert store.head("never-written") is None

    def test_key_with_space_and_unicode(self, store):
        key = "incoming/summer dress é+1.jpg"
        store.put(key, b"data")
        assert store.get(key) == b"data"
        assert [info.key for info in store.list("incoming/")] == [key]


class TestLocalFolderStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        return LocalFolderStore(tmp_path / "objects")


# -- LocalFolderStore only -----------------------------------------------------------------


def test_local_store_keeps_files_under_root(tmp_path):
    store = LocalFolderStore(tmp_path / "objects")
    store.put("a/b.txt", b"hi")
    assert (tmp_path / "objects" / "a" / "b.txt").read_bytes() == b"hi"
    assert not (tmp_path / "x").exists()
    # A directory is not an object.
    with pytest.raises(ObjectNotFound):
        store.get("a")


def test_on_put_gets_an_s3_object_created_event(tmp_path):
    from aws_lambda_powertools.utilities.data_classes import S3Event

    events = []
    store = LocalFolderStore(tmp_path / "objects", bucket="my-bucket", on_put=events.append)
    key = "incoming/red summer dress+v2.jpg"
    etag = store.put(key, b"12345")
    assert len(events) == 1
    record = events[0]["Records"][0]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"].startswith("ObjectCreated:")
    raw_key = record["s3"]["object"]["key"]
    assert " " not in raw_key and raw_key != key  # URL-encoded as S3 sends it
    assert unquote_plus(raw_key) == key
    event = S3Event(events[0])
    assert event.bucket_name == "my-bucket"
    assert event.object_key == key
    # powertools hands the record's key over raw, as S3 sent it: consumers must decode it.
    assert unquote_plus(event.record.s3.get_object.key) == key
    assert event.record.s3.get_object.size == 5
    assert event.record.s3.get_object.etag == etag.strip('"')


def test_the_s3_handler_gives_its_stage_the_decoded_key(tmp_path):
    """A key with a space and a '+' reaches the stage as written, not URL-encoded."""
    from types import SimpleNamespace

    from shazzam import app as app_module
    from shazzam.handlers import s3_stage_handler
    from shazzam.pipeline import StageResult

    events, seen = [], []
    store = LocalFolderStore(tmp_path / "objects", on_put=events.append)
    key = "incoming/red summer dress+v2.jpg"
    store.put(key, b"x")

    def stage(app, stage_key):
        seen.append(stage_key)
        return StageResult(stage_key, "done")

    context = SimpleNamespace(
        function_name="detect", memory_limit_in_mb=128, aws_request_id="req-1",
        invoked_function_arn="arn:aws:lambda:eu-west-1:000000000000:function:detect",
    )
    app_module.configure(app_module.App(db=None, store=store))
    try:
        result = s3_stage_handler(stage, "test")(events[0], context)
    finally:
        app_module.configure(None)
    assert seen == [key]
    assert result["results"][0]["key"] == key


def test_on_put_not_called_for_a_failed_conditional_write(tmp_path):
    events = []
    store = LocalFolderStore(tmp_path / "objects", on_put=events.append)
    store.put("k", b"1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put("k", b"2", if_none_match=True)
    assert len(events) == 1


def test_list_hides_temporary_files(tmp_path):
    store = LocalFolderStore(tmp_path / "objects")
    store.put("a/real", b"x")
    (tmp_path / "objects" / "a" / ".tmp-leftover").write_bytes(b"partial")
    assert [info.key for info in store.list()] == ["a/real"]


def test_list_skips_an_object_deleted_while_listing(tmp_path):
    store = LocalFolderStore(tmp_path / "objects")
    for key in ("a/1", "a/2", "a/3"):
        store.put(key, b"x")
    listing = store.list("a/")
    assert next(listing).key == "a/1"
    store.delete("a/2")  # another writer, after the walk saw it
    assert [info.key for info in listing] == ["a/3"]


def test_list_skips_a_folder_deleted_while_listing(tmp_path, monkeypatch):
    store = LocalFolderStore(tmp_path / "objects")
    for key in ("index/hat/1.h5", "index/shoes/1.h5"):
        store.put(key, b"x")
    scandir = os.scandir

    def another_writer_deletes_first(path="."):
        if Path(path).name == "shoes":
            store.delete("index/shoes/1.h5")  # its last object: the folder goes with it
        return scandir(path)

    monkeypatch.setattr(os, "scandir", another_writer_deletes_first)
    assert [info.key for info in store.list("index/")] == ["index/hat/1.h5"]


def test_list_never_leaves_the_root(tmp_path):
    store = LocalFolderStore(tmp_path / "objects")
    (tmp_path / "outside").write_bytes(b"secret")
    store.put("inside", b"x")
    assert [info.key for info in store.list("../")] == []
    assert [info.key for info in store.list("./")] == []
    assert [info.key for info in store.list("/")] == []
    assert [info.key for info in store.list("")] == ["inside"]


def test_concurrent_conditional_increments_lose_nothing(tmp_path):
    store = LocalFolderStore(tmp_path / "objects")
    store.put("counter", b"0")
    threads_n, increments = 8, 25
    conflicts = []
    errors = []
    start = threading.Barrier(threads_n)

    def worker():
        try:
            start.wait()
            for _ in range(increments):
                while True:
                    data, etag = store.get_with_etag("counter")
                    try:
                        store.put("counter", str(int(data) + 1).encode(), if_match=etag)
                        break
                    except PreconditionFailed:
                        conflicts.append(1)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert int(store.get("counter")) == threads_n * increments


def test_two_stores_on_one_folder_share_the_lock(tmp_path):
    first = LocalFolderStore(tmp_path / "objects")
    second = LocalFolderStore(tmp_path / "objects")
    first.put("m", b"v1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        second.put("m", b"v2", if_none_match=True)
    etag = second.head("m").etag
    first.put("m", b"v3")
    with pytest.raises(PreconditionFailed):
        second.put("m", b"v4", if_match=etag)


def test_expire_deletes_what_is_older_than_the_age_under_the_prefix(tmp_path):
    store = LocalFolderStore(tmp_path)
    for key in ("uploads/old", "uploads/new", "index/old"):
        store.put(key, b"x")
    day_ago = os.path.getmtime(tmp_path / "uploads/new") - 86_401
    for key in ("uploads/old", "index/old"):
        os.utime(tmp_path / key, (day_ago, day_ago))
    assert store.expire("uploads/", 86_400) == 1
    assert [info.key for info in store.list()] == ["index/old", "uploads/new"]


def test_a_runtime_deletes_uploads_older_than_a_day_as_the_lifecycle_rule_does(tmp_path):
    from shazzam.local.runtime import UPLOAD_LIFETIME_S, LocalRuntime

    runtime = LocalRuntime(tmp_path)
    runtime.store.put("uploads/0123456789abcdef0123456789abcdef", b"a photo")
    runtime.close()
    stale = os.path.getmtime(tmp_path / "objects/uploads/0123456789abcdef0123456789abcdef") - UPLOAD_LIFETIME_S - 1
    os.utime(tmp_path / "objects/uploads/0123456789abcdef0123456789abcdef", (stale, stale))
    runtime = LocalRuntime(tmp_path)
    try:
        assert list(runtime.store.list("uploads/")) == []
    finally:
        runtime.close()


def test_a_runtime_deletes_failed_photos_old_boxes_and_crops_set_aside_vectors_and_partial_writes_as_the_lifecycle_rules_do(tmp_path):
    from shazzam import catalogue
    from shazzam.local.runtime import UNREADABLE_LIFETIME_S, UPLOAD_LIFETIME_S, LocalRuntime

    runtime = LocalRuntime(tmp_path)
    for image_id, status in (("failedphoto", "failed"), ("queuedphoto", None)):
        catalogue.save_image(runtime.db, image_id, f"https://shop.example/{image_id}.jpg", None)
        if status:
            catalogue.update_image(runtime.db, image_id, status=status, error="not an image")
        runtime.store.put(f"incoming/{image_id}", b"not an image")
    runtime.store.put("vectors/unreadable/dress/d-000.npy", b"bad")
    runtime.store.put("detections/refused.json", b"{not json")  # a stage refused these: every start ran them again
    runtime.store.put("standard/refused-000.png", b"not a png")
    partial = tmp_path / "objects/index/dress/.tmp-killed"
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"half a shard")
    runtime.close()
    for relative, age in (("objects/incoming/failedphoto", UPLOAD_LIFETIME_S), ("objects/incoming/queuedphoto", UPLOAD_LIFETIME_S),
                          ("objects/vectors/unreadable/dress/d-000.npy", UNREADABLE_LIFETIME_S), ("objects/index/dress/.tmp-killed", UPLOAD_LIFETIME_S),
                          ("objects/detections/refused.json", UPLOAD_LIFETIME_S), ("objects/standard/refused-000.png", UPLOAD_LIFETIME_S)):
        stale = os.path.getmtime(tmp_path / relative) - age - 1
        os.utime(tmp_path / relative, (stale, stale))
    runtime = LocalRuntime(tmp_path)
    try:
        # The photo that failed is gone; the one no stage has taken yet is queued again, not lost.
        assert [info.key for info in runtime.store.list()] == ["incoming/queuedphoto"]
        assert not partial.exists()
    finally:
        runtime.close()
