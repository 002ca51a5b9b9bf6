"""A warm Lambda container keeps its database connection between invocations, and a connection
that died in between (a proxy failover, an idle timeout) is replaced before the next one uses it.
The index function's handler, run as Lambda runs it, against MariaDB behind a proxy we cut."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from shazzam import app as app_module
from shazzam.local.runtime import LambdaContext, load_handler
from tests.support.tcp_proxy import CuttableProxy

ROOT = Path(__file__).resolve().parents[2]


def connection_id(app) -> int:
    return app.db.run_query("SELECT CONNECTION_ID() AS id")[0]["id"]


@pytest.mark.mysql
def test_warm_invocations_reuse_the_connection_and_a_dead_one_is_reopened(mysql_url, tmp_path, monkeypatch):
    url = sa.engine.make_url(mysql_url)
    proxy = CuttableProxy(url.host, url.port or 3306)
    monkeypatch.setenv("SHAZZAM_DB_URL", url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
    monkeypatch.setenv("SHAZZAM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SHAZZAM_BUCKET", raising=False)
    monkeypatch.delenv("SHAZZAM_DB_SECRET_ARN", raising=False)
    event = json.loads((ROOT / "events" / "scheduled-index.json").read_text())
    app_module.configure(None)  # a fresh container: the adapters come from the environment
    try:
        handler = load_handler("index")
        handler(event, LambdaContext("index"))
        app = app_module.current()
        first = connection_id(app)
        for _ in range(3):  # warm invocations: the same adapters, the same connection
            handler(event, LambdaContext("index"))
            assert app_module.current() is app
            assert connection_id(app) == first

        proxy.cut()  # the connection dies while the container sleeps
        handler(event, LambdaContext("index"))  # no error: the pool's ping finds it dead and reconnects
        second = connection_id(app)
        assert second != first
        handler(event, LambdaContext("index"))
        assert connection_id(app) == second
    finally:
        app_module.current().db.close()
        app_module.configure(None)
        proxy.close()
