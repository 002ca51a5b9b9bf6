"""The object-store contract (tests/unit/test_storage.py) against S3Store on moto, plus S3 specifics."""

from __future__ import annotations

import boto3
import pytest

from shazzam.storage import ObjectNotFound, PreconditionFailed, S3Store
from tests.unit.test_storage import StoreContract


class TestS3Store(StoreContract):
    @pytest.fixture
    def store(self, s3_bucket):
        return S3Store(s3_bucket)


def test_list_follows_pagination(s3_bucket):
    client = boto3.client("s3")
    calls = []
    original = client.list_objects_v2

    # Force small pages so list() has to follow continuation tokens.
    def small_pages(**kwargs):
        kwargs["MaxKeys"] = 7
        calls.append(kwargs.get("ContinuationToken"))
        return original(**kwargs)

    client.list_objects_v2 = small_pages
    store = S3Store(s3_bucket, client=client)
    keys = [f"vectors/pending/top/{i:03d}.npy" for i in range(30)]
    for key in keys:
        store.put(key, b"v")
    store.put("vectors/other", b"o")
    listed = [info.key for info in store.list("vectors/pending/")]
    assert listed == keys
    assert len(calls) == 5 and calls[0] is None and all(calls[1:])  # 30 keys at 7 a page


def test_list_reports_sizes_and_etags(s3_bucket):
    store = S3Store(s3_bucket)
    etag = store.put("a/b", b"12345")
    (info,) = list(store.list("a/"))
    assert (info.key, info.size, info.etag) == ("a/b", 5, etag)


def test_put_sets_the_content_type(s3_bucket):
    store = S3Store(s3_bucket)
    store.put("index/manifest.json", b"{}", content_type="application/json")
    assert boto3.client("s3").head_object(Bucket=s3_bucket, Key="index/manifest.json")["ContentType"] == "application/json"


def test_missing_bucket_is_not_mistaken_for_a_missing_object(aws):
    store = S3Store("no-such-bucket-here")
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as caught:
        store.get("k")
    assert not isinstance(caught.value, ObjectNotFound)
    with pytest.raises(ClientError):
        store.put("k", b"x", if_none_match=True)


def test_conditional_writes_go_to_s3(s3_bucket):
    """Another writer through plain boto3 makes our if_match stale."""
    store = S3Store(s3_bucket)
    etag = store.put("index/manifest.json", b"v1", if_none_match=True)
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="index/manifest.json", Body=b"someone else")
    with pytest.raises(PreconditionFailed):
        store.put("index/manifest.json", b"v2", if_match=etag)
    assert store.get("index/manifest.json") == b"someone else"
