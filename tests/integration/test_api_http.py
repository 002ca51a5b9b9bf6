"""The API over HTTP as `shazzam serve` answers it, on a small indexed catalogue: results, filters,
items, uploads, throttling, and a thousand malformed requests without a single 5xx."""

from __future__ import annotations

import base64
import http.client
import io
import json
import random
import socket
import struct
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from shazzam import api
from shazzam.local import runtime as runtime_module
from shazzam.local.runtime import LocalRuntime
from shazzam.local.sample_shop import SampleShop
from tests.api_fixtures import SHOPS, build_catalogue
from tests.unit.test_api import multipart

REPO = Path(__file__).resolve().parents[2]
PHOTO = (REPO / "samples" / "queries" / "dress-query.jpg").read_bytes()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(runtime, port, saved products): the API and page on 127.0.0.1, over a 30-item catalogue.

    Detector v0 (the whole photo is one garment) serves: these tests are about the API, and the
    query is a product photo of a dress (tests/integration/test_pipeline.py runs detector_v2)."""
    runtime = LocalRuntime(tmp_path_factory.mktemp("served") / "data")
    with pytest.MonkeyPatch.context() as patch, SampleShop() as shop:
        patch.setenv("SHAZZAM_DETECTOR", "whole-image")
        saved = build_catalogue(runtime, shop)
        server = runtime.start_api(port=0)
        yield runtime, server.server_port, saved
        server.shutdown()
    runtime.close()


def request(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"origin": "http://elsewhere.example", **(headers or {})})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    content_type = response.getheader("content-type", "")
    if response.status >= 400 or path == "/local-uploads":  # a page on another origin reads the answer
        assert response.getheader("access-control-allow-origin") == "*", (response.status, data)
        assert response.getheader("access-control-expose-headers") == "Retry-After", (response.status, data)
    return response.status, content_type, json.loads(data) if "json" in content_type and data else data


def search(port: int, query: str = "", photo: bytes = PHOTO):
    return request(port, "POST", f"/search{query}", photo, {"content-type": "image/jpeg"})


def test_search_finds_dresses_with_everything_a_result_shows(served):
    _, port, saved = served
    status, _, answer = search(port, "?k=3")
    assert status == 200, answer
    (garment,) = answer["garments"]
    assert garment["category"] == "dress" and len(garment["results"]) == 3
    for result in garment["results"]:
        assert set(result) >= {"item_id", "title", "shop", "price", "currency", "url", "image_url", "distance"}
        assert result["shop"] in SHOPS and result["url"].startswith("http://127.0.0.1:")
    assert [r["distance"] for r in garment["results"]] == sorted(r["distance"] for r in garment["results"])
    item_id = garment["results"][0]["item_id"]
    status, _, item = request(port, "GET", f"/items/{item_id}")
    assert status == 200 and item["item_id"] == item_id and item["live"] and item["image_urls"]
    # UTC, said so (a browser read a bare time as its own local time), to the second on both databases
    seen = datetime.fromisoformat(item["last_seen_at"])
    assert seen.utcoffset() == timedelta(0) and seen.microsecond == 0


def test_filters_narrow_the_results(served):
    _, port, saved = served
    dresses = [p for p in saved if p["category"] == "dress"]
    cheapest = min(p["price"] for p in dresses)
    status, _, answer = search(port, f"?max_price={cheapest}")
    assert status == 200
    assert [r["item_id"] for r in answer["garments"][0]["results"]] == [p["id"] for p in dresses if p["price"] == cheapest]
    status, _, answer = search(port, f"?shop={SHOPS[1].replace(' ', '+')}")
    results = answer["garments"][0]["results"]
    assert results and {r["shop"] for r in results} == {SHOPS[1]}
    status, _, answer = search(port, "?currency=usd")
    assert status == 200 and answer["garments"][0]["results"] == []  # every sample price is in EUR


def test_a_shop_is_named_in_any_case_and_an_unknown_one_is_422(served):
    _, port, saved = served
    status, _, answer = search(port, f"?shop={SHOPS[0].upper().replace(' ', '+')}&k=50")
    assert status == 200 and {r["shop"] for r in answer["garments"][0]["results"]} == {SHOPS[0]}
    status, _, problem = search(port, "?shop=Nowhere+Shop")
    assert status == 422 and "unknown shop 'Nowhere Shop'" in problem["detail"] and SHOPS[0] in problem["detail"]


def test_the_same_search_as_multipart_json_and_an_upload(served):
    _, port, _ = served
    content_type, form = multipart({"image": PHOTO, "k": "2"})
    by_form = request(port, "POST", "/search", form, {"content-type": content_type})[2]
    body = json.dumps({"image": base64.b64encode(PHOTO).decode(), "k": 2}).encode()
    by_json = request(port, "POST", "/search", body, {"content-type": "application/json"})[2]
    status, _, upload = request(port, "POST", "/uploads", b"{}", {"content-type": "application/json"})
    assert status == 201 and upload["url"].endswith("/local-uploads")
    content_type, form = multipart({**upload["fields"], "file": PHOTO})
    assert request(port, "POST", "/local-uploads", form, {"content-type": content_type})[0] == 204
    body = json.dumps({"upload": upload["key"], "k": 2}).encode()
    by_upload = request(port, "POST", "/search", body, {"content-type": "application/json"})[2]
    ranked = [[r["item_id"] for r in answer["garments"][0]["results"]] for answer in (by_form, by_json, by_upload)]
    assert ranked[0] == ranked[1] == ranked[2] and len(ranked[0]) == 2
    runtime, _, _ = served
    assert list(runtime.store.list(api.UPLOAD_PREFIX)) == []  # the photo and its grant, both gone


def test_page_health_and_openapi_are_served(served):
    _, port, saved = served
    status, content_type, page = request(port, "GET", "/")
    assert status == 200 and content_type.startswith("text/html") and b"<title>" in page
    status, content_type, page = request(port, "HEAD", "/")  # as CloudFront answers it
    assert status == 200 and content_type.startswith("text/html") and page == b""
    status, _, health = request(port, "GET", "/health")
    assert status == 200 and health["items"]["indexed"] == len(saved) and set(health["shops"]) == set(SHOPS)
    status, _, document = request(port, "GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.")


def test_concurrent_requests_each_get_their_own_answer(served):
    """The server answers on many threads, but the API's router (powertools) keeps the request in
    process-wide state, as a Lambda environment may: one request at a time, as Lambda runs it."""
    _, port, saved = served
    paths = ["/categories", "/health", "/openapi.json", "/items/no-such-item"] * 50
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads interleave as they do on a loaded machine
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:  # within the 32 in flight the server takes
            answers = list(pool.map(lambda path: request(port, "GET", path), paths))
    finally:
        sys.setswitchinterval(interval)
    for path, (status, _, body) in zip(paths, answers):
        if path == "/categories":
            assert status == 200 and "categories" in body, body
        elif path == "/health":
            assert status == 200 and body["items"]["indexed"] == len(saved), body
        elif path == "/openapi.json":
            assert status == 200 and body["openapi"].startswith("3."), body
        else:
            assert status == 404 and "no-such-item" in body["detail"], body


def test_oversized_bodies_and_too_many_requests(served):
    runtime, port, _ = served
    status, content_type, problem = request(port, "POST", "/search", b"\0" * (7 * 1024 * 1024), {"content-type": "image/jpeg"})
    assert status == 413 and content_type == "application/problem+json" and "/uploads" in problem["detail"]
    busy = runtime.start_api(port=0, max_in_flight=0)  # every request finds the server full
    try:
        status, content_type, problem = request(busy.server_port, "GET", "/health")
        assert status == 429 and content_type == "application/problem+json" and "busy" in problem["detail"]
    finally:
        busy.shutdown()


def test_a_stalled_client_holds_no_slot_and_is_cut_off(served, monkeypatch):
    runtime, _, _ = served
    monkeypatch.setattr(runtime_module, "REQUEST_TIMEOUT_S", 1)
    server = runtime.start_api(port=0, max_in_flight=1)
    try:
        stalled = socket.create_connection(("127.0.0.1", server.server_port), timeout=10)
        stalled.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n")
        time.sleep(0.2)
        assert request(server.server_port, "GET", "/health")[0] == 200  # the one slot is free
        started = time.monotonic()
        assert stalled.recv(1024) == b"" and time.monotonic() - started < 5  # closed after the timeout
        stalled.close()
    finally:
        server.shutdown()


@pytest.mark.parametrize("framing", [b"Content-Length: 1000", b"Transfer-Encoding: chunked"])
def test_a_trickling_client_is_cut_off_at_the_body_deadline_and_bodies_in_transit_are_capped(served, monkeypatch, framing):
    """Each body is held until it is whole: a byte now and then must not hold one for ever, nor may
    one client open as many as it likes."""
    runtime, _, _ = served
    monkeypatch.setattr(runtime_module, "BODY_DEADLINE_S", 1)
    monkeypatch.setattr(runtime_module, "MAX_BODIES_IN_TRANSIT", 1)
    server = runtime.start_api(port=0)
    try:
        trickling = socket.create_connection(("127.0.0.1", server.server_port), timeout=10)
        trickling.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n" + framing + b"\r\n\r\n")
        time.sleep(0.2)
        second = request(server.server_port, "POST", "/search", b"x" * 10, {"content-type": "image/jpeg"})
        assert second[0] == 429  # the one body in transit is the trickle's
        assert request(server.server_port, "GET", "/health")[0] == 200  # a request without a body needs no slot
        started, answer = time.monotonic(), b""
        while not answer and time.monotonic() - started < 8:
            trickling.sendall(b"1")  # within the socket timeout each time, never done (a chunk size without its end)
            time.sleep(0.3)
            trickling.setblocking(False)
            try:
                answer = trickling.recv(65536)
            except BlockingIOError:
                pass
            trickling.setblocking(True)
        assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5
        trickling.close()
        assert request(server.server_port, "GET", "/health")[0] == 200
    finally:
        server.shutdown()


def test_a_client_that_asks_before_sending_is_answered_at_once(served):
    """Expect: 100-continue (curl's habit for large bodies): the go-ahead comes before the body,
    and a body over the limit is refused without being sent."""
    _, port, _ = served
    head = b"POST /search?k=2 HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nExpect: 100-continue\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=3) as connection:
        connection.sendall(head + b"Content-Length: %d\r\n\r\n" % len(PHOTO))
        assert connection.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        connection.sendall(PHOTO)
        response = http.client.HTTPResponse(connection)
        response.begin()
        assert response.status == 200 and json.loads(response.read())["garments"]
    with socket.create_connection(("127.0.0.1", port), timeout=3) as connection:
        connection.sendall(head + b"Content-Length: %d\r\n\r\n" % (api.MAX_SEARCH_BODY_BYTES + 1))
        assert connection.recv(65536).startswith(b"HTTP/1.1 413")


def test_a_body_sent_with_a_page_request_is_not_read_as_the_next_request(served):
    _, port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 24\r\n\r\nGET /health HTTP/1.1\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1 ") == 1  # one answer, then the end


@pytest.mark.parametrize("length", ["-1", "12abc", "1e3"])
def test_a_content_length_that_is_not_a_count_of_bytes_is_400(served, length):
    _, port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(f"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
        answer = connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400") and b"Content-Length" in answer


@pytest.mark.parametrize("raw, status", [
    (b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),  # as API Gateway, which has no HEAD routes
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
])
def test_the_servers_own_refusals_are_problems_too(served, raw, status):
    _, port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(raw)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d" % status) and b"application/problem+json" in head.lower()
    if raw.startswith(b"HEAD"):
        assert body == b""  # headers only
    else:
        assert json.loads(body)["status"] == status


def test_a_parameter_sent_twice_arrives_comma_joined_as_on_api_gateway(served):
    _, port, _ = served
    status, _, problem = search(port, "?k=1&k=2")
    assert status == 422 and "1,2" in problem["detail"]


def chunked(data: bytes, size: int = 5000) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size]) for i in range(0, len(data), size)) + b"0\r\n\r\n"


def test_a_chunked_body_is_read_like_any_other(served):
    _, port, _ = served
    headers = {"content-type": "image/jpeg", "transfer-encoding": "chunked"}
    status, _, answer = request(port, "POST", "/search?k=2", chunked(PHOTO), headers)
    assert status == 200 and len(answer["garments"][0]["results"]) == 2
    status, _, problem = request(port, "POST", "/search", b"zz\r\nnot hex\r\n", headers)
    assert status == 400 and "chunk" in problem["detail"]


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(served):
    # A client that streams (curl -T -) announces no length: the 413 must come once the limit is
    # passed, not after the server has held however much the client goes on sending.
    _, port, _ = served
    over = chunked(b"\0" * (api.MAX_SEARCH_BODY_BYTES + 1), 1 << 16)[: -len(b"0\r\n\r\n")]  # and more to come
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n" + over)
        response = http.client.HTTPResponse(connection)
        response.begin()
        assert response.status == 413 and "/uploads" in json.loads(response.read())["detail"]


def test_an_upload_larger_than_a_photo_may_be_is_413(served):
    # S3's presigned POST policy caps the file (content-length-range); the local stand-in must
    # refuse what the cloud would, not store a file the pipeline then rejects.
    from shazzam.images import MAX_BYTES

    _, port, _ = served
    upload = request(port, "POST", "/uploads", b"{}", {"content-type": "application/json"})[2]
    content_type, form = multipart({**upload["fields"], "file": PHOTO + b"\0" * (MAX_BYTES + 1 - len(PHOTO))})
    status, _, problem = request(port, "POST", "/local-uploads", form, {"content-type": content_type})
    assert status == 413 and str(MAX_BYTES) in problem["detail"], problem
    content_type, form = multipart({**upload["fields"], "file": PHOTO + b"\0" * (MAX_BYTES - len(PHOTO))})
    assert request(port, "POST", "/local-uploads", form, {"content-type": content_type})[0] == 204  # exactly the cap is fine


def test_a_presigned_upload_takes_only_the_key_and_type_it_was_given(served):
    _, port, _ = served
    upload = request(port, "POST", "/uploads", b"{}", {"content-type": "application/json"})[2]
    for fields, words in [
        ({**upload["fields"], "key": "uploads/../../outside"}, '"key"'),
        ({**upload["fields"], "key": "uploads/" + "a" * 300}, '"key"'),
        ({**upload["fields"], "Content-Type": "text/html"}, '"Content-Type"'),
    ]:
        content_type, form = multipart({**fields, "file": PHOTO})
        status, _, problem = request(port, "POST", "/local-uploads", form, {"content-type": content_type})
        assert status == 403 and words in problem["detail"], problem
    # Like S3's policy: only a key it gave, with the type it gave, within its time.
    for fields, words in [
        ({**upload["fields"], "key": "uploads/" + "0" * 32}, "this one it did not"),
        ({**upload["fields"], "Content-Type": "image/png"}, "image/jpeg"),
    ]:
        content_type, form = multipart({**fields, "file": PHOTO})
        status, _, problem = request(port, "POST", "/local-uploads", form, {"content-type": content_type})
        assert status == 403 and words in problem["detail"], problem
    content_type, form = multipart({**upload["fields"], "file": PHOTO})
    assert request(port, "POST", "/local-uploads", form, {"content-type": content_type})[0] == 204
    status, _, answer = request(port, "POST", "/search", json.dumps({"upload": upload["key"] + api.UPLOAD_GRANT_SUFFIX}).encode(),
                                {"content-type": "application/json"})
    assert status == 422  # a grant is no photo to search


def test_an_upload_past_its_time_is_refused(served, monkeypatch):
    _, port, _ = served
    upload = request(port, "POST", "/uploads", b"{}", {"content-type": "application/json"})[2]
    later = time.time() + api.UPLOAD_EXPIRES_S + 1
    monkeypatch.setattr(time, "time", lambda: later)
    content_type, form = multipart({**upload["fields"], "file": PHOTO})
    status, _, problem = request(port, "POST", "/local-uploads", form, {"content-type": content_type})
    assert status == 403 and "have passed" in problem["detail"]


def malformed_requests(count: int, seed: int = 6):
    """(method, path, headers, body) of every kind the issue names, varied at random."""
    rng = random.Random(seed)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    tiny_png = buffer.getvalue()
    giant = bytearray(tiny_png)
    giant[16:24] = struct.pack(">II", 100_000, 100_000)
    giant[29:33] = struct.pack(">I", zlib.crc32(bytes(giant[12:29])))
    makers = [
        lambda: ("/search", "image/jpeg", PHOTO[: rng.randrange(1, len(PHOTO) - 1)]),  # truncated
        lambda: ("/search", "image/png", bytes(giant)),  # giant dimensions
        lambda: ("/search", "image/jpeg", b""),  # zero bytes
        lambda: ("/search", rng.choice(["image/jpeg", "application/octet-stream", ""]), rng.randbytes(rng.randrange(1, 4096))),
        lambda: ("/search", rng.choice(["text/html", "application/xml", "audio/mpeg", "video/mp4"]), PHOTO[:512]),
        lambda: ("/search", "application/json", rng.choice([b"{", b"[]", b"null", b'{"image": 3}', b'{"image": "%%%"}', b'{"k": 2}'])),
        lambda: ("/search", "application/json", json.dumps({"image": base64.b64encode(rng.randbytes(64)).decode()}).encode()),
        lambda: (f"/search?k={rng.choice(['-1', '0', '51', 'x', '1e9', '2.5'])}", "image/png", tiny_png),
        lambda: (f"/search?category={rng.choice(['socks', 'DRESS', '%00', 'a' * 300])}", "image/png", tiny_png),
        lambda: ("/search?min_price=-5&max_price=nan", "image/png", tiny_png),
        lambda: ("/search", "multipart/form-data; boundary=zz", b"--zz\r\n" + rng.randbytes(200)),
        lambda: ("/search", "multipart/form-data", tiny_png),
        lambda: ("/items/" + rng.choice(["x", "%2e%2e", "0" * 40]), None, b""),
        lambda: ("/uploads", "application/json", rng.choice([b"[", b'{"content_type": "text/plain"}'])),
    ]
    for _ in range(count):
        path, content_type, body = rng.choice(makers)()
        method = "GET" if path.startswith("/items/") else "POST"
        yield method, path, {"content-type": content_type} if content_type else {}, body


def test_a_thousand_malformed_requests_get_4xx_problems_and_no_5xx(served):
    _, port, _ = served
    statuses: dict[int, int] = {}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for method, path, headers, body in malformed_requests(1000):
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            assert 400 <= response.status < 500, (method, path, headers, body[:80], data)
            assert response.getheader("content-type") == "application/problem+json"
            assert json.loads(data)["detail"]
    finally:
        connection.close()
    assert set(statuses) <= {400, 404, 413, 415, 422}, statuses
