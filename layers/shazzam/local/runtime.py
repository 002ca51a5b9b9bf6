"""The embedded runtime: AWS's event plumbing on one machine, around the unchanged handlers.

- the local object store emits S3-shaped ObjectCreated events on put; they queue here and are
  delivered to the functions whose prefix matches (shazzam.wiring), as S3 notifications are;
- a scheduler thread fires the EventBridge-shaped scheduled events at their rates;
- an HTTP server turns requests into API Gateway (v2) events for the API function.
A delivery that raises is retried, then written to `<data_dir>/dead-letters/`, as a Lambda
destination would; the rest of the queue goes on.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
import os
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import unquote_plus, urlsplit

from shazzam import app as app_module
from shazzam import api, catalogue, events, index, lease, wiring
from shazzam.db import Database, sqlite_url
from shazzam.ids import detections_key, incoming_key, key_stem
from shazzam.images import MAX_BYTES
from shazzam.index import UNREADABLE_PREFIX
from shazzam.storage import LocalFolderStore, ObjectNotFound

log = logging.getLogger(__name__)

DELIVERY_ATTEMPTS = 3
# API Gateway throttles; locally more concurrent requests than this get a 429.
MAX_REQUESTS_IN_FLIGHT = 32
# Room for the multipart boundaries and fields around an uploaded file.
UPLOAD_FORM_OVERHEAD = 64 * 1024
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
# Seconds a connection may stay silent mid-request before the server closes it.
REQUEST_TIMEOUT_S = 30
# Seconds a request body may take in all (a 20 MB photo at 1 Mbit/s takes 160), and how many bodies
# may be coming in at once: each is held in memory until it is whole, so a client that trickles a
# byte now and then must neither hold one for ever nor open as many as it likes.
BODY_DEADLINE_S = 300
MAX_BODIES_IN_TRANSIT = 64
# What API Gateway (its CORS settings) and the bucket (its CORS rules) add to every answer.
CORS_HEADERS = {"access-control-allow-origin": "*", "access-control-expose-headers": ", ".join(api.CORS_EXPOSED_HEADERS)}
UPLOAD_LIFETIME_S = 24 * 3600  # as the bucket's lifecycle rules (cdk/shazzam_cdk/storage.py)
UNREADABLE_LIFETIME_S = 14 * 24 * 3600
# The scheduled functions that fetch from shops, one at a time (shazzam.lease.CRAWLER).
CRAWLERS = ("scrape", "revalidate")
# A running runtime looks this often for what another process stopped mid-ingest left, taking up
# objects untouched for LEFT_AFTER_S (younger ones may be that process's work in progress).
LOOK_FOR_LEFT_WORK_S = 300
LEFT_AFTER_S = 600


class BadBody(ValueError):
    """The request's body is not what its headers announce."""


class BodyTooLarge(BadBody):
    """The request's body is over the route's limit."""


class BodyTimeout(BadBody):
    """The request's body did not arrive within BODY_DEADLINE_S."""


class DeadlineReader:
    """A request's input stream that refuses reads once `deadline` (time.monotonic()) has passed;
    reads go a piece at a time, so that a trickle cannot stretch one read past it."""

    PIECE = 64 * 1024

    def __init__(self, stream, deadline: float):
        self.stream, self.deadline = stream, deadline

    def _check(self) -> None:
        if time.monotonic() > self.deadline:
            raise BodyTimeout(f"the request body did not arrive within {BODY_DEADLINE_S} s")

    def read(self, size: int) -> bytes:
        pieces = []
        while size > 0:
            self._check()
            piece = self.stream.read1(min(size, self.PIECE))  # what one socket read brings, however little
            if not piece:
                break
            pieces.append(piece)
            size -= len(piece)
        return b"".join(pieces)

    def readline(self, limit: int) -> bytes:
        line = bytearray()  # a byte at a time (from the stream's buffer): a line trickled stops too
        while len(line) < limit:
            self._check()
            byte = self.stream.read(1)
            line += byte
            if byte in (b"", b"\n"):
                break
        return bytes(line)


def read_chunked(stream, limit: int) -> bytes:
    """A Transfer-Encoding: chunked body (what curl -T - and streaming clients send), at most `limit` bytes."""
    chunks, total = [], 0
    while True:
        line = stream.readline(1024).split(b";", 1)[0].strip()
        try:
            size = int(line, 16)
        except ValueError:
            raise BadBody("a chunked body's chunk size is not a hexadecimal number") from None
        if size < 0:
            raise BadBody("a chunked body's chunk size is negative")
        if size == 0:
            while stream.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields, which nothing here uses
            return b"".join(chunks)
        total += size
        if total > limit:
            raise BodyTooLarge()
        chunk = stream.read(size)
        if len(chunk) < size or stream.readline(1024).strip():
            raise BadBody("a chunked body ended mid-chunk")
        chunks.append(chunk)


class ApiServer(ThreadingHTTPServer):
    # The listen backlog: socketserver's default of 5 reset clients arriving in a burst before the
    # server could answer them, even with a 429.
    request_queue_size = 128
WEB_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def functions_dir() -> Path:
    """The repository's functions/ folder (the library is installed editable from layers/)."""
    path = Path(os.environ.get("SHAZZAM_FUNCTIONS_DIR", Path(__file__).resolve().parents[3] / "functions"))
    if not path.is_dir():
        raise RuntimeError(f"functions folder not found at {path}; set SHAZZAM_FUNCTIONS_DIR")
    return path


def web_files() -> dict[str, tuple[Path, str]]:
    """The static page (web/), by URL path; only these files are served, so no path escapes it."""
    folder = Path(os.environ.get("SHAZZAM_WEB_DIR", Path(__file__).resolve().parents[3] / "web"))
    files = {f"/{path.name}": (path, WEB_CONTENT_TYPES[path.suffix]) for path in folder.glob("*") if path.suffix in WEB_CONTENT_TYPES}
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


def _problem(status: int, detail: str) -> tuple[int, dict, bytes]:
    """The local server's own refusal, CORS headers and all, as API Gateway's (and S3's) would be."""
    headers = {"content-type": api.PROBLEM_JSON, **CORS_HEADERS}
    return status, headers, json.dumps(api.problem_body(status, detail)).encode()


def load_handler(name: str) -> Callable:
    """Import `functions/<name>/handler.py` as Lambda would, and return its `lambda_handler`."""
    wiring.by_name(name)  # only functions the wiring table knows
    path = functions_dir() / name / "handler.py"
    spec = importlib.util.spec_from_file_location(f"shazzam_functions.{name}.handler", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler


@dataclass
class LambdaContext:
    """What Lambda passes as `context`, as far as the handlers and powertools read it."""

    function_name: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "local"
    log_stream_name: str = "local"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:local:{events.ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@dataclass
class DrainReport:
    delivered: int = 0
    failed: int = 0
    by_function: dict = field(default_factory=dict)


class LocalRuntime:
    def __init__(self, data_dir: str | os.PathLike, *, db_url: str | None = None, model_dir: str | None = None, fetcher_factory=None):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._queue: deque[dict] = deque()
        self._queue_lock = threading.Lock()
        # key -> the version this runtime delivered: work it did (failed, skipped) is not another
        # process's left work, which the periodic requeue takes up.
        self._delivered: dict[str, str | None] = {}
        self.store = LocalFolderStore(self.data_dir / "objects", on_put=self._enqueue)
        self.db = Database(db_url or sqlite_url(self.data_dir / "catalogue.db")).open_connection()
        self.app = app_module.App(db=self.db, store=self.store, model_dir=model_dir, fetcher_factory=fetcher_factory)
        app_module.configure(self.app)
        self._handlers: dict[str, Callable] = {}
        # One invocation of a function at a time, as in one Lambda execution environment: the
        # handlers keep the request in process-wide state (powertools' router does), and the
        # threaded API server would otherwise hand one request's event to another's route.
        self._environments = {function.name: threading.Lock() for function in wiring.FUNCTIONS}
        self._stop = threading.Event()
        self.requeue_unprocessed()
        self.expire_transient()
        # A power cut can leave a shard or the manifest cut short here (S3's writes are whole).
        index.repair(self.store, on_shard_replaced=lambda category: catalogue.forget_embedders_in_category(self.db, category))

    # --- invoking functions -------------------------------------------------------------------

    def handler(self, name: str) -> Callable:
        if name not in self._handlers:
            self._handlers[name] = load_handler(name)
        return self._handlers[name]

    def invoke(self, name: str, event: dict):
        function = wiring.by_name(name)
        with self._environments[name]:
            return self.handler(name)(event, LambdaContext(name, memory_limit_in_mb=function.memory_mb))

    def fire_schedule(self, name: str, detail: dict | None = None):
        return self.invoke(name, events.scheduled(f"shazzam-{name}", detail))

    # --- S3 notifications -----------------------------------------------------------------------

    def _enqueue(self, event: dict) -> None:
        with self._queue_lock:
            self._queue.append(event)

    def requeue_unprocessed(self, older_than_s: float = 0) -> int:
        """Queue again what a runtime stopped mid-ingest (Ctrl-C, a crash) left: its queue lived in
        memory, and S3 would have delivered those notifications. Each stage deletes or supersedes its
        input once done and the handlers are idempotent, so a second delivery changes nothing; an
        incoming image already detected, or one that failed, is left alone, as is an object written
        less than `older_than_s` ago. Returns how many."""
        queued, cutoff, listed = 0, time.time() - older_than_s, set()
        for function in wiring.FUNCTIONS:
            for trigger in function.triggers:
                if not isinstance(trigger, wiring.ObjectCreated):
                    continue
                for info in self.store.list(trigger.prefix):
                    listed.add(info.key)
                    written = self.store.written_at(info.key)
                    if older_than_s and written is not None and written > cutoff:
                        continue
                    if not (trigger.matches(info.key) and self._unprocessed(info.key) and (head := self.store.head(info.key))):
                        continue
                    with self._queue_lock:
                        if self._delivered.get(info.key) == head.etag.strip('"'):  # as events spell it
                            continue  # this runtime's own, delivered: it failed or was skipped, once is enough
                    self._enqueue(events.s3_object_created(self.store.bucket, info.key, head.size, head.etag))
                    queued += 1
        with self._queue_lock:  # what is gone needs no remembering
            self._delivered = {key: etag for key, etag in self._delivered.items() if key in listed}
        if queued:
            log.info("queued %d objects a previous runtime left unprocessed", queued)
        return queued

    def _unprocessed(self, key: str) -> bool:
        image_id = key_stem(key)
        if key != incoming_key(image_id):
            return True
        try:
            detected = json.loads(self.store.get(detections_key(image_id)))
        except (ObjectNotFound, ValueError):
            detected = None
        if detected is not None:
            # Detected: standardise takes it from there, unless the photo was replaced since (the
            # document names the version its boxes belong to, and standardise drops it then).
            head = self.store.head(key)
            return head is not None and detected.get("image_etag", head.etag) != head.etag
        row = catalogue.get_image(self.db, image_id)
        return row is None or row["status"] != "failed"

    def expire_transient(self) -> int:
        """Delete what the bucket's lifecycle rules delete in the cloud: photos uploaded for a
        search more than a day ago (searches name an upload only within minutes of it), photos that
        failed to decode more than a day ago (no stage takes them up again: the next scrape fetches
        the picture anew), detections documents and crops written more than a day ago (a stage
        refused them, or they waited out a stop: every start would run them again; the scrape
        fetches their pictures anew, catalogue.UNFINISHED_AFTER), pending vectors set aside as
        unreadable two weeks ago; and the temporary files of writes killed midway, a day old."""
        expired = {
            "uploads": self.store.expire(api.UPLOAD_PREFIX, UPLOAD_LIFETIME_S),
            "failed photos": self.store.expire("incoming/", UPLOAD_LIFETIME_S, only=self._failed_photo),
            "detections documents": self.store.expire("detections/", UPLOAD_LIFETIME_S),
            "crops": self.store.expire("standard/", UPLOAD_LIFETIME_S),
            "unreadable vectors": self.store.expire(UNREADABLE_PREFIX, UNREADABLE_LIFETIME_S),
            "partial writes": self.store.remove_partial_writes(UPLOAD_LIFETIME_S),
        }
        if any(expired.values()):
            log.info("deleted %s", ", ".join(f"{count} {what}" for what, count in expired.items() if count))
        return sum(expired.values())

    def _failed_photo(self, key: str) -> bool:
        row = catalogue.get_image(self.db, key_stem(key)) if key == incoming_key(key_stem(key)) else None
        return row is not None and row["status"] == "failed"

    def pending(self) -> int:
        with self._queue_lock:
            return len(self._queue)

    def _next_event(self) -> dict | None:
        with self._queue_lock:
            return self._queue.popleft() if self._queue else None

    def deliver(self, event: dict, report: DrainReport) -> None:
        key = unquote_plus(event["Records"][0]["s3"]["object"]["key"])
        with self._queue_lock:
            self._delivered[key] = event["Records"][0]["s3"]["object"].get("eTag")
        for function in wiring.functions_for_key(key):
            for attempt in range(1, DELIVERY_ATTEMPTS + 1):
                try:
                    self.invoke(function.name, event)
                    report.delivered += 1
                    report.by_function[function.name] = report.by_function.get(function.name, 0) + 1
                    break
                except Exception as exc:  # noqa: BLE001 - any failure goes to the dead-letter folder
                    if attempt == DELIVERY_ATTEMPTS:
                        report.failed += 1
                        self._dead_letter(function.name, event, exc)

    def drain(self, progress: Callable[[int, int], None] | None = None) -> DrainReport:
        """Deliver queued events (and those their handlers cause) until none is left."""
        report = DrainReport()
        while (event := self._next_event()) is not None:
            self.deliver(event, report)
            if progress is not None:
                progress(report.delivered + report.failed, self.pending())
        return report

    def _dead_letter(self, function: str, event: dict, exc: Exception) -> None:
        folder = self.data_dir / "dead-letters"
        folder.mkdir(exist_ok=True)
        record = {"function": function, "error": repr(exc), "traceback": traceback.format_exc(), "event": event}
        (folder / f"{time.time_ns()}-{function}.json").write_text(json.dumps(record, indent=2))
        log.error("%s failed on an event; written to %s", function, folder)

    # --- serving --------------------------------------------------------------------------------

    def http_request(self, method: str, target: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        parts = urlsplit(target)
        response = self.invoke("search", events.http_api_request(method, parts.path, parts.query, headers, body))
        payload = response.get("body") or ""
        data = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode()
        return response.get("statusCode", 200), response.get("headers") or {}, data

    def receive_upload(self, content_type: str, body: bytes) -> tuple[int, dict, bytes]:
        """What S3 does with a presigned POST: store the form's `file` under its `key`."""
        try:
            fields = api.parse_multipart(content_type, body, text_fields=("key", "Content-Type"))
        except api.Problem as exc:
            return _problem(exc.status, exc.detail)
        key, data, content_type = fields.get("key"), fields.get("file"), fields.get("Content-Type")
        if not isinstance(data, bytes) or not data:
            return _problem(400, 'the form needs the "key" POST /uploads answered and a non-empty file field "file"')
        # What the presigned POST's policy lets S3 accept: the key and type POST /uploads gave, until
        # the time it gave (its grant, written beside the key).
        if not isinstance(key, str) or not api.UPLOAD_KEY.fullmatch(key):
            return _problem(403, f'"key" must be the key POST /uploads answered ({api.UPLOAD_PREFIX} and 32 hex digits)')
        try:
            grant = json.loads(self.store.get(key + api.UPLOAD_GRANT_SUFFIX))
        except ObjectNotFound:
            return _problem(403, '"key" must be one POST /uploads answered; this one it did not')
        if content_type != grant["content_type"]:
            return _problem(403, f'"Content-Type" must be the one POST /uploads answered: {grant["content_type"]}')
        if time.time() > grant["expires_at"]:
            return _problem(403, f"the upload's {api.UPLOAD_EXPIRES_S} s have passed: ask POST /uploads again")
        if len(data) > MAX_BYTES:
            return _problem(413, f"the file is larger than {MAX_BYTES} bytes")
        self.store.put(key, data, content_type=content_type)
        return 204, dict(CORS_HEADERS), b""

    def start_api(self, host: str = "127.0.0.1", port: int = 8000, max_in_flight: int = MAX_REQUESTS_IN_FLIGHT) -> ThreadingHTTPServer:
        """Serve the API function, the web page at / and the local stand-in for S3 presigned uploads.

        Like API Gateway in front of Lambda, it refuses bodies over the synchronous payload limit
        (413) and more than `max_in_flight` concurrent requests (429), in the API's error shape.
        """
        runtime = self
        in_flight = threading.BoundedSemaphore(max(0, max_in_flight))  # 0: a full server, for tests
        in_transit = threading.BoundedSemaphore(MAX_BODIES_IN_TRANSIT)
        pages = web_files()

        class ApiRequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One write per response and no Nagle delay: otherwise every keep-alive answer waits
            # ~40 ms for the client's delayed ACK.
            wbufsize = 256 * 1024
            disable_nagle_algorithm = True
            # A client that stops sending (or never sends the body it announced) is cut off.
            timeout = REQUEST_TIMEOUT_S

            def _handle(self):
                path = urlsplit(self.path).path
                has_body = (self.headers.get("content-length") or "0").strip() != "0" or "transfer-encoding" in self.headers
                if self.command in ("GET", "HEAD") and path in pages:  # as CloudFront serves the page
                    # A body nobody reads would be taken for the next request: the connection ends.
                    self._reply(200, {"content-type": pages[path][1], "cache-control": "no-cache"}, pages[path][0].read_bytes(), close=has_body)
                    return
                is_upload = self.command == "POST" and path == api.LOCAL_UPLOAD_PATH
                limit = MAX_BYTES + UPLOAD_FORM_OVERHEAD if is_upload else api.MAX_SEARCH_BODY_BYTES
                hint = "; upload the photo with POST /uploads first" if path == "/search" else ""
                # Only a request with a body takes a slot: slow senders must not refuse /health.
                if has_body and not in_transit.acquire(blocking=False):
                    self._reply(*_problem(429, "the server is busy; try again in a second"), extra={"retry-after": "1"}, close=True)
                    return
                try:
                    body = self._body(limit)
                except BodyTooLarge:
                    self._reply(*_problem(413, f"the request is larger than {limit} bytes{hint}"), close=True)
                    return
                except BodyTimeout as exc:
                    self._reply(*_problem(408, str(exc)), close=True)
                    return
                except BadBody as exc:
                    self._reply(*_problem(400, str(exc)), close=True)
                    return
                finally:
                    if has_body:
                        in_transit.release()
                # The slot is taken once the body is in: a slow sender holds none.
                if not in_flight.acquire(blocking=False):
                    self._reply(*_problem(429, "the server is busy; try again in a second"), extra={"retry-after": "1"})
                    return
                try:
                    if is_upload:
                        self._reply(*runtime.receive_upload(self.headers.get("content-type", ""), body))
                    else:
                        self._reply(*runtime.http_request(self.command, self.path, dict(self.headers.items()), body))
                finally:
                    in_flight.release()

            def handle_expect_100(self):
                # http.server would answer `100 Continue` into the write buffer, where it waits
                # for the final answer while the client waits (a second, for curl) for it. It is
                # sent in `_body` instead, once the body is known to be wanted.
                return True

            def _continue(self) -> None:
                if self.headers.get("expect", "").lower() == "100-continue" and self.request_version >= "HTTP/1.1":
                    self.send_response_only(HTTPStatus.CONTINUE)
                    self.end_headers()
                    self.wfile.flush()

            def _body(self, limit: int) -> bytes:
                """The request body, by Content-Length or in chunks (Transfer-Encoding: chunked),
                within BODY_DEADLINE_S."""
                stream = DeadlineReader(self.rfile, time.monotonic() + BODY_DEADLINE_S)
                if "chunked" in self.headers.get("transfer-encoding", "").lower():
                    self._continue()
                    return read_chunked(stream, limit)
                text = (self.headers.get("content-length") or "0").strip()
                if not text.isdigit():
                    raise BadBody("the Content-Length header must be a whole number of bytes")
                length = int(text)
                if length > limit:
                    # Read what a client may reasonably send (so it sees the answer, not a broken
                    # pipe), a piece at a time and kept nowhere, then close; beyond that, close at once.
                    # A client that asked first (Expect: 100-continue) has sent nothing to read.
                    if length <= DRAIN_LIMIT_BYTES and self.headers.get("expect", "").lower() != "100-continue":
                        while length > 0 and (piece := stream.read(min(length, 1 << 16))):
                            length -= len(piece)
                    raise BodyTooLarge()
                if length:
                    self._continue()
                body = stream.read(length) if length else b""
                if len(body) < length:
                    raise BadBody(f"the body ended after {len(body)} of the {length} bytes its Content-Length announced")
                return body

            def _reply(self, status, headers, data, extra=None, close=False):
                self.send_response(status)
                for name, value in {**headers, **(extra or {})}.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                if close:
                    self.send_header("connection", "close")
                    self.close_connection = True
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            # HEAD goes to the router as API Gateway would send it, which has no HEAD routes: a 404.
            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle

            def send_error(self, code, message=None, explain=None):
                # The server's own refusals (a garbled request line, a URL too long, a method it does
                # not serve) in the API's error shape, like every other answer, not an HTML page.
                # A request line that did not parse leaves HTTP/0.9, which has no status line; no
                # client speaks it any more, so the answer gets one.
                self.request_version = "HTTP/1.1" if self.request_version == "HTTP/0.9" else self.request_version
                self._reply(*_problem(code, explain or message or HTTPStatus(code).phrase), close=True)

            def log_message(self, format, *args):
                log.info("%s %s", self.address_string(), format % args)

        server = ApiServer((host, port), ApiRequestHandler)
        threading.Thread(target=server.serve_forever, name="shazzam-api", daemon=True).start()
        return server

    def start_background(self, schedules: bool = True, tick_s: float = 0.2) -> threading.Thread:
        """Deliver queued events continuously and fire each schedule at its rate."""
        due = {function.name: time.monotonic() + schedule.interval_seconds() for function, schedule in wiring.scheduled_functions()}
        rates = {function.name: schedule.interval_seconds() for function, schedule in wiring.scheduled_functions()}

        def loop():
            report = DrainReport()
            expire_transient_at = time.monotonic() + 3600  # and hourly after the start's
            look_for_left_work_at = time.monotonic() + LOOK_FOR_LEFT_WORK_S
            while not self._stop.is_set():
                event = self._next_event()
                if event is not None:
                    self.deliver(event, report)
                    continue
                now = time.monotonic()  # the queue is empty here: nothing of this process's is waiting
                if now >= expire_transient_at:
                    expire_transient_at = now + 3600
                    self.expire_transient()
                if now >= look_for_left_work_at:
                    look_for_left_work_at = now + LOOK_FOR_LEFT_WORK_S
                    self.requeue_unprocessed(older_than_s=LEFT_AFTER_S)  # by a command stopped meanwhile
                for name in due if schedules else ():
                    if now >= due[name]:
                        if name in CRAWLERS and lease.holder(self.db, lease.CRAWLER):
                            due[name] = now + lease.POLL_S  # another process is crawling: asked again shortly
                            continue
                        due[name] = now + rates[name]
                        try:
                            self.fire_schedule(name)
                        except Exception as exc:  # noqa: BLE001
                            self._dead_letter(name, events.scheduled(f"shazzam-{name}"), exc)
                self._stop.wait(tick_s)

        thread = threading.Thread(target=loop, name="shazzam-events", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.stop()
        lease.release_all(self.db)  # the schedules' thread may be crawling: it dies with the process
        app_module.configure(None)
        self.db.close()
