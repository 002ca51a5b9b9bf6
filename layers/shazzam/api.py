"""The public HTTP API (API Gateway HTTP API, payload format 2.0): routes and request parsing.

POST /search        the photo as multipart/form-data (field `image`), as JSON {"image": "<base64>"},
                    as the raw bytes (Content-Type image/*), or {"upload": "<key from POST /uploads>"};
                    parameters `category`, `k`, `min_price`, `max_price`, `currency`, `shop`,
                    `garment` (search only that garment of the answer) or `box` (search only that
                    part of the photo) in the JSON body, the form or the query string
POST /uploads       a presigned upload for photos larger than the synchronous payload limit
GET  /categories    the categories and how many items each shard holds
GET  /items/{id}    one catalogue item
GET  /health        model and index versions, item counts
GET  /openapi.json  the committed OpenAPI 3 document (openapi.json beside this file)
Every error is application/problem+json (RFC 9457) whose `detail` tells a person what to fix.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import json
import re
import time
import uuid
from datetime import timezone
from dataclasses import dataclass
from http import HTTPStatus
from decimal import Decimal, InvalidOperation
from pathlib import Path

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, CORSConfig, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError

from shazzam import app as app_module
from shazzam import catalogue, lease, pipeline
from shazzam.handlers import function_logger
from shazzam.images import MAX_BYTES
from shazzam.money import price_text
from shazzam.index import read_manifest
from shazzam.storage import ObjectNotFound, S3Store

OPENAPI_PATH = Path(__file__).with_name("openapi.json")
PROBLEM_JSON = "application/problem+json"
# Lambda refuses synchronous request events over 6 MB, and API Gateway passes a photo's bytes in
# base64 (a third more) inside the event beside its headers: 4.5 MB of body fits, with room to
# spare. Larger photos go through POST /uploads.
MAX_SEARCH_BODY_BYTES = (6 * 1024 * 1024 - 256 * 1024) * 3 // 4
UPLOAD_PREFIX = "uploads/"
UPLOAD_KEY = re.compile(re.escape(UPLOAD_PREFIX) + "[0-9a-f]{32}")
UPLOAD_EXPIRES_S = 900  # the page gives an upload as long (web/app.js UPLOAD_GRANT_MS)
# Beside a key the local server may receive: what a presigned POST's policy says in S3 (this key,
# this type, until then). Not an upload key (UPLOAD_KEY does not match it): never searched.
UPLOAD_GRANT_SUFFIX = ".grant.json"
# Every format shazzam.images reads (a page may upload any photo a person drops on it).
UPLOAD_CONTENT_TYPES = ("image/jpeg", "image/png", "image/webp", "image/heic", "image/heif", "image/avif", "image/gif", "image/bmp",
                        "image/tiff")
# Other names phones and older browsers give these types (Android galleries say image/jpg): taken as
# the type they name, which the upload's grant (and the presigned POST's policy) then requires.
UPLOAD_CONTENT_TYPE_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png",
                               "image/x-ms-bmp": "image/bmp"}
# Where the embedded runtime accepts what S3 accepts for a presigned POST (see local/runtime.py).
LOCAL_UPLOAD_PATH = "/local-uploads"
SEARCH_PARAMETERS = ("category", "k", "min_price", "max_price", "currency", "shop", "garment", "box")
# A search form has the photo (or an upload key) and the parameters above; many more parts is abuse.
MAX_FORM_PARTS = 32
# A part the MIME parser would read as parts of its own: a message, or multipart with a boundary
# (\s: a header may fold onto the next line). Without a boundary a "multipart" part is read as text,
# as some HTTP clients label a form's plain fields.
NESTED_MESSAGE = re.compile(rb"(?im)^content-type:\s*message/")
NESTED_MULTIPART = re.compile(rb"(?im)^content-type:\s*multipart/(?:[^\n]|\n[ \t])*boundary")
# The MIME parser takes time that grows faster than the number of a header's parameters (a 2.6 MB
# header of 250,000 took two minutes) and recurses once per "(" of a comment: the request's
# Content-Type and each part's headers are refused past this. A browser's come to about 150 bytes,
# 1 KB with a long file name.
MAX_FORM_HEADER_BYTES = 4096
# After a delimiter: the rest of its line, a part's header lines and the blank line that ends them,
# each line ended as the MIME parser ends lines (CRLF, LF or CR alone).
_LINE_END = rb"(?:\r\n|\r(?!\n)|\n)"  # a CR before an LF is never a line end of its own
PART_HEADERS = re.compile(rb"[^\r\n]*" + _LINE_END + rb"((?:[^\r\n]+" + _LINE_END + rb")*)" + _LINE_END)
STATUS_TITLES = {
    400: "Malformed request",
    404: "Not found",
    413: "Too large",
    415: "Unsupported image",
    422: "Invalid parameter",
    429: "Too many requests",
    500: "Internal error",
}

logger = function_logger("search")
# Retry-After is not among the headers a browser lets a page of another origin read.
CORS_EXPOSED_HEADERS = ("Retry-After",)
resolver = APIGatewayHttpResolver(cors=CORSConfig(allow_origin="*", expose_headers=list(CORS_EXPOSED_HEADERS), max_age=300))


class Problem(Exception):
    """An HTTP error answered as application/problem+json."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def problem_body(status: int, detail: str) -> dict:
    title = STATUS_TITLES.get(status) or HTTPStatus(status).phrase  # about:blank's title is the status's
    return {"type": "about:blank", "title": title, "status": status, "detail": detail}


def problem_response(status: int, detail: str) -> Response:
    return Response(status_code=status, content_type=PROBLEM_JSON, body=json.dumps(problem_body(status, detail)))


# --- request parsing --------------------------------------------------------------------------


def _body_bytes() -> bytes:
    event = resolver.current_event
    body = event.body or ""
    if event.is_base64_encoded:
        try:
            return base64.b64decode(body, validate=True)
        except binascii.Error:
            raise Problem(400, "the request body is not valid base64") from None
    return body.encode("utf-8", errors="surrogateescape")


def _header(name: str, default: str = "") -> str:
    return (resolver.current_event.headers.get(name) or default).strip()  # powertools' headers ignore case


def parse_multipart(content_type: str, body: bytes, text_fields: tuple[str, ...] = ()) -> dict[str, bytes | str]:
    """The fields of a multipart/form-data body: files as bytes, the rest as text. The fields
    named in `text_fields` are text whatever their part's type (clients label plain fields
    application/json, or the form's own type).

    Powertools reads forms only with its data validation on, which needs pydantic in the Lambda
    package; the standard library's MIME parser reads them without it.
    """
    if len(content_type) > MAX_FORM_HEADER_BYTES:
        raise Problem(400, f"the Content-Type header is longer than {MAX_FORM_HEADER_BYTES} characters")
    try:
        return _form_fields(content_type, body, text_fields)
    except RecursionError:  # the MIME parser reads a header's comments nested in hundreds of parentheses
        raise Problem(400, "a multipart/form-data header is nested too deeply") from None


def _form_fields(content_type: str, body: bytes, text_fields: tuple[str, ...]) -> dict[str, bytes | str]:
    boundary = email.message_from_string(f"Content-Type: {content_type}\r\n\r\n").get_boundary()
    # The MIME parser's time grows with the number of parts: count them before parsing, and refuse
    # a part that is itself multipart (or a message), whose own parts the parser would read uncounted.
    if boundary:
        delimiter = b"--" + boundary.encode("latin-1", errors="replace")
        if body.count(delimiter) > MAX_FORM_PARTS + 1:
            raise Problem(400, f"the multipart/form-data body has more than {MAX_FORM_PARTS} parts")
        blocks = []
        for found in re.finditer(re.escape(delimiter), body):
            # Read no further than the limit: a part's header lines must end, blank line and all, within it.
            window = body[found.end() : found.end() + MAX_FORM_HEADER_BYTES + 2]
            if window.startswith(b"--"):
                continue  # the closing delimiter: what follows is the epilogue, no part's headers
            block = PART_HEADERS.match(window)
            if block is None:
                if len(window) > MAX_FORM_HEADER_BYTES:
                    raise Problem(400, f"a multipart/form-data part's headers are longer than {MAX_FORM_HEADER_BYTES} bytes")
                continue  # the body ends inside them: the parser finds it malformed
            blocks.append(block.group(1).replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
        if any(NESTED_MESSAGE.search(block) or NESTED_MULTIPART.search(block) for block in blocks):
            raise Problem(400, "a multipart/form-data part may not be nested multipart or a message: send each file as its own part")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", errors="replace") + b"\r\n\r\n" + body
    )
    if not message.is_multipart() or message.defects:
        raise Problem(400, "the multipart/form-data body is malformed (is the boundary right?)")
    fields: dict[str, bytes | str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        # A file has a filename, or failing that (RFC 7578 only says SHOULD) a type other than text.
        is_file = part.get_filename() is not None or (
            name not in text_fields and part.get_content_maintype() not in ("text", "multipart"))
        fields[name] = payload if is_file else payload.decode("utf-8", errors="replace")
    return fields


def _json_object(body: bytes) -> dict:
    try:
        payload = json.loads(body)
    except RecursionError:
        raise Problem(400, "the request body is not valid JSON: it is nested too deeply") from None
    except ValueError as exc:  # malformed, not UTF-8, or a number of more digits than Python converts
        raise Problem(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise Problem(400, "the JSON body must be an object")
    return payload


@dataclass(frozen=True)
class SearchRequest:
    photo: bytes
    parameters: dict  # as sent: strings from a query or form, any JSON type from a JSON body
    upload_key: str | None = None  # set when the photo came through POST /uploads


def _from_upload(key: object, parameters: dict) -> SearchRequest:
    if not isinstance(key, str) or not UPLOAD_KEY.fullmatch(key):
        raise Problem(422, '"upload" must be the key POST /uploads answered, such as "uploads/<32 hex digits>"')
    try:
        return SearchRequest(app_module.current().store.get(key), parameters, upload_key=key)
    except ObjectNotFound:
        raise Problem(422, f"no upload {key}: was the photo posted to the upload URL? Each upload serves one search") from None


def _search_request() -> SearchRequest:
    """The photo and the parameters, from whichever of the four request forms was sent."""
    body = _body_bytes()
    if len(body) > MAX_SEARCH_BODY_BYTES:
        raise Problem(413, f"the request is larger than {MAX_SEARCH_BODY_BYTES} bytes; upload the photo with POST /uploads first")
    content_type = _header("content-type")
    media_type = content_type.split(";")[0].strip().lower()
    parameters: dict = dict(resolver.current_event.query_string_parameters or {})
    if media_type == "multipart/form-data":
        fields = parse_multipart(content_type, body, text_fields=(*SEARCH_PARAMETERS, "upload"))
        parameters.update({name: value for name, value in fields.items() if name in SEARCH_PARAMETERS})
        if isinstance(fields.get("image"), bytes):
            return SearchRequest(fields["image"], parameters)
        if "upload" in fields:
            return _from_upload(fields["upload"], parameters)
        raise Problem(400, 'the form needs a file field "image" (or an "upload" key)')
    if media_type == "application/json" or (not media_type and body[:1] == b"{"):
        payload = _json_object(body)
        parameters.update({name: payload[name] for name in SEARCH_PARAMETERS if name in payload})
        if payload.get("upload") is not None:  # null, as for every parameter, is absent
            return _from_upload(payload["upload"], parameters)
        if not isinstance(payload.get("image"), str):
            raise Problem(400, 'the JSON body needs "image": the photo as a base64 string (or "upload": an upload key)')
        return SearchRequest(_decode_base64_image(payload["image"]), parameters)
    if media_type and not media_type.startswith("image/") and media_type != "application/octet-stream":
        raise Problem(415, f"send the photo as image/*, multipart/form-data or application/json, not {media_type}")
    return SearchRequest(body, parameters)


# What `base64` and other encoders write besides the standard alphabet: line breaks, URL-safe letters.
_URL_SAFE_TO_STANDARD = str.maketrans("-_", "+/")


def _decode_base64_image(image: str) -> bytes:
    """The bytes of "image": base64 (standard or URL-safe, line breaks allowed), or a data: URL of it,
    which is what a browser's FileReader gives."""
    if image.startswith("data:"):
        _, comma, image = image.partition(",")
        if not comma:
            raise Problem(400, '"image" is a data: URL without data: a comma must come before its base64')
    try:
        return base64.b64decode("".join(image.split()).translate(_URL_SAFE_TO_STANDARD), validate=True)
    except (binascii.Error, ValueError):
        raise Problem(400, '"image" is not valid base64 (the photo\'s bytes in standard or URL-safe base64, '
                           'padded to a multiple of 4 characters)') from None


def _text(parameters: dict, name: str) -> str | None:
    value = parameters.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Problem(422, f'"{name}" must be a string')
    return value.strip()


def _integer(parameters: dict, name: str, default: int) -> int:
    value = parameters.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (isinstance(value, float) and not value.is_integer()):
        raise Problem(422, f'"{name}" must be an integer')
    try:
        return int(value)  # a whole float too (5.0): JSON Schema's integer, as some encoders write it
    except ValueError:
        raise Problem(422, f'"{name}" must be an integer, not {value!r}') from None


def _price(parameters: dict, name: str) -> Decimal | None:
    value = parameters.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Problem(422, f'"{name}" must be a number')
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise Problem(422, f'"{name}" must be a number, not {value!r}') from None


BOX_MESSAGE = '"box" must be four integers "left,top,right,bottom" in the photo\'s pixels'


def _box(parameters: dict) -> list[int] | None:
    """`box` as [left, top, right, bottom]: a JSON array, or "left,top,right,bottom" text."""
    value = parameters.get("box")
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = value.strip("[]() ").split(",")
    if not isinstance(value, list) or len(value) != 4:
        raise Problem(422, BOX_MESSAGE)
    box = []
    for part in value:
        if isinstance(part, bool) or not isinstance(part, (int, float, str)) or (isinstance(part, float) and not part.is_integer()):
            raise Problem(422, BOX_MESSAGE)
        try:
            box.append(int(part))
        except ValueError:
            raise Problem(422, BOX_MESSAGE) from None
    return box


def search_parameters(parameters: dict) -> tuple[str | None, int, pipeline.SearchFilters]:
    currency = _text(parameters, "currency")
    filters = pipeline.SearchFilters(
        min_price=_price(parameters, "min_price"),
        max_price=_price(parameters, "max_price"),
        currency=currency and currency.upper(),
        shop=_text(parameters, "shop"),
    )
    return _text(parameters, "category"), _integer(parameters, "k", pipeline.DEFAULT_K), filters


def garment_parameters(parameters: dict) -> tuple[int | None, list[int] | None]:
    """Which garment to search: `garment` (an index in an earlier answer) or a `box`; None, None: all."""
    garment = None if parameters.get("garment") in (None, "") else _integer(parameters, "garment", 0)
    return garment, _box(parameters)


# --- routes -----------------------------------------------------------------------------------


@resolver.post("/search")
def search():
    request = _search_request()
    category, k, filters = search_parameters(request.parameters)
    garment, box = garment_parameters(request.parameters)
    app = app_module.current()
    answer = pipeline.search(app, request.photo, category=category, k=k, filters=filters, garment=garment, box=box)
    if request.upload_key is not None:
        app.store.delete(request.upload_key)  # transient, like every photo: one search each
        if not isinstance(app.store, S3Store):
            app.store.delete(request.upload_key + UPLOAD_GRANT_SUFFIX)  # the local stand-in's grant goes with it
    return answer


@resolver.post("/uploads")
def create_upload():
    body = _body_bytes()
    payload = _json_object(body) if body.strip() else {}
    content_type = payload.get("content_type") or "image/jpeg"  # null is absent, as elsewhere
    if isinstance(content_type, str):
        content_type = content_type.strip().lower()  # media types are case-blind
        content_type = UPLOAD_CONTENT_TYPE_ALIASES.get(content_type, content_type)
    if content_type not in UPLOAD_CONTENT_TYPES:
        raise Problem(415, f"content_type must be one of {', '.join(UPLOAD_CONTENT_TYPES)}")
    key = f"{UPLOAD_PREFIX}{uuid.uuid4().hex}"
    store = app_module.current().store
    if isinstance(store, S3Store):
        presigned = store.client.generate_presigned_post(
            Bucket=store.bucket,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, MAX_BYTES]],
            ExpiresIn=UPLOAD_EXPIRES_S,
        )
    else:
        # The address the client reached this server by (127.0.0.1, a LAN address, a tunnel); a
        # Host header that lies only misleads the client that sent it.
        host = _header("host", "127.0.0.1:8000")
        # A proxy or tunnel that ends TLS says so: an http:// URL from an https:// page is blocked.
        scheme = "https" if _header("x-forwarded-proto").split(",")[0].strip().lower() == "https" else "http"
        presigned = {"url": f"{scheme}://{host}{LOCAL_UPLOAD_PATH}", "fields": {"key": key, "Content-Type": content_type}}
        grant = {"content_type": content_type, "expires_at": time.time() + UPLOAD_EXPIRES_S}
        store.put(key + UPLOAD_GRANT_SUFFIX, json.dumps(grant).encode(), content_type="application/json")
    return Response(
        status_code=201,
        content_type="application/json",
        body=json.dumps({"key": key, **presigned, "max_bytes": MAX_BYTES, "expires_in": UPLOAD_EXPIRES_S}),
    )


@resolver.get("/categories")
def categories():
    app = app_module.current()
    counts = app.shards.categories(model=app.garment_model.name)  # what a search there can show now
    return {"categories": [{"name": name, "items": counts.get(name, 0)} for name in app.garment_model.categories]}


@resolver.get("/items/<item_id>")
def item(item_id: str):
    found = catalogue.get_item(app_module.current().db, item_id)
    if found is None:
        raise Problem(404, f"no item {item_id}")
    return {
        "item_id": found["product_id"],
        "title": found["title"],
        "shop": found["shop"],
        "shop_url": found["shop_url"],
        "brand": found["brand"],
        "category": found["category"],
        "price": price_text(found["price"], found["currency"]),
        "currency": found["currency"],
        "url": found["url"],
        "image_urls": found["image_urls"],
        "live": not found["is_dead"],
        # Stored as naive UTC (MySQL keeps whole seconds): written with its offset, which a client needs.
        "last_seen_at": found["last_seen_at"].replace(microsecond=0, tzinfo=timezone.utc).isoformat() if found["last_seen_at"] else None,
    }


@resolver.get("/health")
def health():
    app = app_module.current()
    manifest, _ = read_manifest(app.store)
    shards = manifest["shards"]
    return {
        "status": "ok",
        "model": {"name": app.garment_model.name, "sha256": app.garment_model.sha256, "detector": app.detector.name},
        "index": {
            "updated_at": manifest.get("updated_at"),
            # Each shard's model: one other than the serving model's answers nothing until it is re-indexed.
            "shards": {category: {"version": entry["version"], "items": entry["count"], "model": entry.get("model")}
                       for category, entry in sorted(shards.items())},
        },
        "items": catalogue.counts(app.db),  # the shards' own counts are under index.shards
        "shops": catalogue.shop_names(app.db),
        "crawler": lease.holder(app.db, lease.CRAWLER),  # which scrape, revalidate or re-embedding fetches now
    }


@resolver.get("/openapi.json")
def openapi():
    return Response(status_code=200, content_type="application/json", body=OPENAPI_PATH.read_text())


# --- errors -----------------------------------------------------------------------------------


@resolver.exception_handler(Problem)
def problem(exc: Problem):
    return problem_response(exc.status, exc.detail)


@resolver.exception_handler(pipeline.BadRequest)
def bad_request(exc: pipeline.BadRequest):
    return problem_response(exc.status, str(exc))


@resolver.not_found
def not_found(exc: NotFoundError):
    event = resolver.current_event
    return problem_response(404, f"no route {event.request_context.http.method} {event.raw_path}; see /openapi.json")


@resolver.exception_handler(Exception)
def internal_error(exc: Exception):
    # A bug, not the caller's fault: log it whole, and still answer in the API's error shape, with
    # the request id that finds the log line (API Gateway's: the client sees it, the access log has it).
    request_id = resolver.current_event.request_context.request_id
    logger.exception("unhandled error", extra={"request_id": request_id})
    body = {**problem_body(500, "something went wrong on our side; please try again"), "request_id": request_id}
    return Response(status_code=500, content_type=PROBLEM_JSON, body=json.dumps(body))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict, context) -> dict:
    return resolver.resolve(event, context)
