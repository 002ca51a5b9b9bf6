"""A shop of fixed answers by path, which the test may change between requests."""

from __future__ import annotations

import http.server
import threading
from urllib.parse import urlsplit

import pytest


class PlainShop:
    """A shop of fixed answers by path: {path: (status, body[, headers])}; it logs the paths asked
    for, each request's headers, and the connections opened and closed. It answers in HTTP/1.0
    (a connection per request), or in HTTP/1.1 with `keep_alive` (connections kept open unless
    `hang_up` is set, which closes each after its answer without saying so)."""

    def __init__(self, answers: dict[str, tuple[int, bytes]], keep_alive: bool = False):
        self.answers = answers
        self.asked: list[str] = []
        self.request_headers: list[dict[str, str]] = []
        self.connections = 0
        self.closed = 0
        self.hang_up = False
        shop = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
            disable_nagle_algorithm = True  # a kept connection's body goes at once, not after the ACK of its headers

            def setup(self):
                shop.connections += 1
                super().setup()

            def finish(self):
                super().finish()
                shop.closed += 1

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
                if shop.hang_up:
                    self.close_connection = True

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
    yield lambda answers, **options: shops.append(PlainShop(answers, **options)) or shops[-1]
    for shop in shops:
        shop.close()
