"""The public HTTP API (API Gateway HTTP API v2): routes and request validation.

POST /search        body: JSON {"image": "<base64>", "category"?: str, "k"?: int},
                    or the raw image bytes (Content-Type image/*) with ?category=&k=
GET  /categories    the categories and how many items each shard holds
GET  /health        liveness
"""

from __future__ import annotations

import base64
import binascii
import json

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, CORSConfig, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import BadRequestError

from shazzam import app as app_module
from shazzam import pipeline
from shazzam.images import MAX_BYTES

logger = Logger(service="shazzam-search")
resolver = APIGatewayHttpResolver(cors=CORSConfig(allow_origin="*", max_age=300))


def _error(status: int, message: str) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps({"error": message}))


def _raw_body() -> bytes:
    event = resolver.current_event
    body = event.body or ""
    if event.is_base64_encoded:
        try:
            return base64.b64decode(body, validate=True)
        except binascii.Error as exc:
            raise BadRequestError("request body is not valid base64") from exc
    return body.encode("latin-1", errors="replace") if isinstance(body, str) else body


def _parse_search_request() -> tuple[bytes, str | None, int]:
    event = resolver.current_event
    content_type = (event.headers or {}).get("content-type", "").split(";")[0].strip().lower()
    query = event.query_string_parameters or {}
    raw = _raw_body()
    if len(raw) > MAX_BYTES * 4 // 3 + 1024:
        raise pipeline.BadRequest(f"request body is larger than {MAX_BYTES} bytes")
    if content_type == "application/json" or (not content_type and raw[:1] == b"{"):
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequestError(f"request body is not valid JSON: {exc}") from exc
        if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
            raise BadRequestError('JSON body needs "image": the photo as a base64 string')
        try:
            image = base64.b64decode(payload["image"], validate=True)
        except binascii.Error as exc:
            raise BadRequestError('"image" is not valid base64') from exc
        category, k = payload.get("category"), payload.get("k", query.get("k", pipeline.DEFAULT_K))
        category = category if category is not None else query.get("category")
    else:
        image, category, k = raw, query.get("category"), query.get("k", pipeline.DEFAULT_K)
    if category is not None and not isinstance(category, str):
        raise BadRequestError('"category" must be a string')
    try:
        k = int(k)
    except (TypeError, ValueError) as exc:
        raise BadRequestError('"k" must be an integer') from exc
    return image, (category or None), k


@resolver.post("/search")
def search():
    image, category, k = _parse_search_request()
    return pipeline.search(app_module.current(), image, category=category, k=k)


@resolver.get("/categories")
def categories():
    app = app_module.current()
    counts = app.shards.categories()
    return {"categories": [{"name": name, "items": counts.get(name, 0)} for name in app.garment_model.categories]}


@resolver.get("/health")
def health():
    return {"status": "ok"}


@resolver.exception_handler(pipeline.BadRequest)
def bad_request(exc: pipeline.BadRequest):
    return _error(400, str(exc))


@resolver.exception_handler(BadRequestError)
def bad_request_error(exc: BadRequestError):
    return _error(400, exc.msg)


@logger.inject_lambda_context
def lambda_handler(event: dict, context) -> dict:
    return resolver.resolve(event, context)
