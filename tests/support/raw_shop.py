"""A shop that answers with raw bytes over HTTP/1.1 connections, for answers http.server will not
send (a 304 with a body, a Content-Length that lies, a hang-up after a stall)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable

ROBOTS = b"User-agent: *\nAllow: /\n"
# A step of an answer: bytes to send, after a pause; HANG_UP closes the connection.
HANG_UP = None


def answer(status: int, body: bytes = b"", headers: dict | None = None, length: int | None = None) -> bytes:
    """An HTTP/1.1 answer; `length` is the Content-Length it declares (the body's own by default)."""
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body) if length is None else length}",
             *(f"{name}: {value}" for name, value in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class RawShop:
    """`script(connection number, path)` -> [(pause_s, bytes or HANG_UP), ...] for each request;
    robots.txt allows everything. `asked` logs (connection number, path)."""

    def __init__(self, script: Callable[[int, str], list]):
        self.script = script
        self.asked: list[tuple[int, str]] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client, self.connections), daemon=True).start()

    def _serve(self, client: socket.socket, number: int) -> None:
        try:
            self._answer(client, number)
        except OSError:
            pass  # the client went away mid-answer, as a fetcher that gave up does
        finally:
            client.close()

    def _answer(self, client: socket.socket, number: int) -> None:
        pending = b""
        while True:
            while b"\r\n\r\n" not in pending:
                data = client.recv(65536)
                if not data:
                    return
                pending += data
            head, pending = pending.split(b"\r\n\r\n", 1)
            path = head.split(b" ")[1].decode()
            self.asked.append((number, path))
            steps = [(0, answer(200, ROBOTS))] if path == "/robots.txt" else self.script(number, path)
            for pause_s, data in steps:
                time.sleep(pause_s)
                if data is HANG_UP:
                    return
                client.sendall(data)

    def close(self) -> None:
        self._listener.close()
