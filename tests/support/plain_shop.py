"""A shop of fixed answers by path, which the test may change between requests."""

from __future__ import annotations

import http.server
import threading
from urllib.parse import urlsplit

import pytest


class PlainShop:
    """A shop of fixed answers by path: {path: (status, body[, headers])}; it logs the paths asked
    for, and each request's headers."""

    def __init__(self, answers: dict[str, tuple[int, bytes]]):
        self.asked: list[str] = []
        self.request_headers: list[dict[str, str]] = []
        shop = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                shop.asked.append(self.path)
                shop.request_headers.append(dict(self.headers))
                status, body, *headers = answers.get(urlsplit(self.path).path, (404, b"not here"))
                headers = {"Content-Type": "application/json" if self.path.startswith("/products.json") else "text/xml",
                           **(headers[0] if headers else {})}
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/"

    def close(self):
        self.server.shutdown()


@pytest.fixture
def plain_shop():
    shops = []
    yield lambda answers: shops.append(PlainShop(answers)) or shops[-1]
    for shop in shops:
        shop.close()
