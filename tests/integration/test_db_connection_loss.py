"""The database connection dies in the middle of an ingest stage (MariaDB behind a proxy we cut):
the stage fails cleanly, is retried, and afterwards no row is lost or duplicated."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from shazzam import catalogue
from shazzam.local.runtime import LocalRuntime
from tests.support.shop_photos import put_shop_photo
from tests.support.tcp_proxy import CuttableProxy

REPO = Path(__file__).resolve().parents[2]
IMAGES = sorted((REPO / "samples" / "shop" / "images").glob("*.jpg"))[:6]


@pytest.fixture
def proxied_mysql_url(mysql_url):
    url = sa.engine.make_url(mysql_url)
    proxy = CuttableProxy(url.host, url.port or 3306)
    yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    proxy.close()


@pytest.mark.mysql
def test_a_cut_connection_mid_stage_is_retried_without_loss_or_duplicates(proxied_mysql_url, tmp_path, monkeypatch):
    proxy, url = proxied_mysql_url
    monkeypatch.setenv("SHAZZAM_DETECTOR", "whole-image")  # one garment per photo: one row per image to count
    runtime = LocalRuntime(tmp_path / "data", db_url=url)
    try:
        real_upsert = catalogue.upsert
        calls = {"detections": 0}

        def upsert_then_cut(connection, table, values, update=None):
            # Cut the connection inside save_detections' transaction, after it has begun: the
            # statement about to run goes to a dead socket.
            if table.name == "detections":
                calls["detections"] += 1
                if calls["detections"] in (2, 5):
                    proxy.cut()
            return real_upsert(connection, table, values, update)

        monkeypatch.setattr(catalogue, "upsert", upsert_then_cut)
        invocations = []
        real_invoke = runtime.invoke
        monkeypatch.setattr(runtime, "invoke", lambda name, event: invocations.append(name) or real_invoke(name, event))
        for number, image in enumerate(IMAGES):
            put_shop_photo(runtime, image.read_bytes(), number, image_id=image.stem)
        drained = runtime.drain()
        runtime.fire_schedule("index")

        assert proxy.cuts == 2
        assert drained.failed == 0 and not (runtime.data_dir / "dead-letters").exists()
        assert drained.by_function["detect"] == len(IMAGES)
        assert invocations.count("detect") == len(IMAGES) + 2  # the two cut deliveries failed, then were retried
        rows = runtime.db.run_query("SELECT image_id, embedding_status FROM detections ORDER BY image_id")
        assert [row["image_id"] for row in rows] == sorted(image.stem for image in IMAGES)  # none lost, none twice
        assert {row["embedding_status"] for row in rows} == {"indexed"}
        assert sum(runtime.app.shards.categories().values()) == len(IMAGES)
        # The pool re-opened the connection: the same engine still answers.
        assert runtime.db.run_query("SELECT 1 AS one") == [{"one": 1}]
    finally:
        runtime.close()
