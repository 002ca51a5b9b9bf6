"""What each function does to the object store, against the IAM grants the stack gives it
(shazzam_cdk.access): the ingest flow, a re-filed item, the index, revalidate and searches run on
the local runtime, whose store records every operation outside the running function's grants.
test_stack.py checks that the template grants exactly ACCESS; this checks that ACCESS is enough."""

from __future__ import annotations

import base64
import json

import pytest

from shazzam import catalogue, ids
from shazzam.local.runtime import LocalRuntime
from shazzam.local.sample_shop import SampleShop
from shazzam_cdk.access import ACCESS
from tests.api_fixtures import build_catalogue
from tests.unit.test_api import multipart


class Guard:
    """Wraps the runtime's store: each operation made while a function runs must be one its grants allow."""

    def __init__(self, runtime: LocalRuntime, monkeypatch):
        self.function: str | None = None
        self.refused: list[str] = []
        store = runtime.store
        for method, needs in (("get", "read"), ("get_with_etag", "read"), ("head", "read"), ("put", "write")):
            monkeypatch.setattr(store, method, self._checked(getattr(store, method), needs))
        delete, listing, invoke = store.delete, store.list, runtime.invoke

        def checked_delete(key, *, if_match=None):
            self._check("delete", key)
            if if_match is not None:  # S3 evaluates If-Match with the caller's s3:GetObject
                self._check("read", key)
            return delete(key, if_match=if_match)

        def checked_list(prefix=""):
            self._check("read", prefix)
            return listing(prefix)

        def invoke_as(name, event):
            outer, self.function = self.function, name
            try:
                return invoke(name, event)
            finally:
                self.function = outer

        monkeypatch.setattr(store, "delete", checked_delete)
        monkeypatch.setattr(store, "list", checked_list)
        monkeypatch.setattr(runtime, "invoke", invoke_as)

    def _checked(self, method, needs: str):
        def call(key, *args, **kwargs):
            self._check(needs, key)
            return method(key, *args, **kwargs)

        return call

    def _check(self, needs: str, key: str) -> None:
        if self.function is not None and not key.startswith(getattr(ACCESS[self.function], needs)):
            self.refused.append(f"{self.function} {needs} {key}")


@pytest.fixture
def guarded(tmp_path, monkeypatch):
    runtime = LocalRuntime(tmp_path / "data")
    with SampleShop() as shop:
        guard = Guard(runtime, monkeypatch)
        yield runtime, shop, guard
    runtime.close()


def test_every_function_stays_within_its_grants(guarded):
    runtime, shop, guard = guarded
    saved = build_catalogue(runtime, shop, per_category=1)  # detect, standardise, embed, index

    # The shop re-files a product: embed takes it out of its old category, the index moves it.
    moved = saved[0]
    product = catalogue.get_item(runtime.db, moved["id"])
    runtime.db.run_query("UPDATE products SET category = 'hat' WHERE id = :id", {"id": moved["id"]})
    image_id = ids.image_id(product["image_urls"][0])
    runtime.store.put(ids.incoming_key(image_id), (shop.catalog_dir / shop.products[moved["sku"]]["image"]).read_bytes())
    assert runtime.drain().failed == 0
    runtime.fire_schedule("index")

    runtime.fire_schedule("revalidate")
    photo = (shop.catalog_dir / shop.products[saved[1]["sku"]]["image"]).read_bytes()
    # A photo put under a file name: detect moves it to an id-shaped key first.
    runtime.store.put("incoming/street-1.jpg", photo)
    assert runtime.drain().failed == 0
    status, _, _ = runtime.http_request("POST", "/search", {"content-type": "image/jpeg"}, photo)
    assert status == 200
    status, _, body = runtime.http_request("POST", "/uploads", {"content-type": "application/json"}, b"{}")
    upload = json.loads(body)
    content_type, form = multipart({**upload["fields"], "file": photo})
    assert runtime.receive_upload(content_type, form)[0] == 204  # S3's part, not a function's
    query = json.dumps({"upload": upload["key"]}).encode()
    assert runtime.http_request("POST", "/search", {"content-type": "application/json"}, query)[0] == 200
    query = json.dumps({"image": base64.b64encode(photo).decode(), "category": "hat"}).encode()
    assert runtime.http_request("POST", "/search", {"content-type": "application/json"}, query)[0] == 200

    assert guard.refused == []
