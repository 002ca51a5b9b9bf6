"""The OpenAPI 3.1 document of the search API, built from the constants the API enforces.

    python -m shazzam.openapi           rewrite layers/shazzam/openapi.json
    python -m shazzam.openapi --check   exit 1 if the committed document is not what this builds

tests/unit/test_openapi.py checks it in CI: the document is valid OpenAPI, its routes are the
wiring table's and the resolver's, and real answers match its schemas, so it cannot drift.
"""

from __future__ import annotations

import argparse
import json
import sys

from shazzam import api, pipeline
from shazzam.images import MAX_BYTES, MAX_PIXELS
from shazzam.taxonomy import DETECTOR_CLASSES
from shazzam.vision import manifest_path

CATEGORIES = json.loads(manifest_path().read_text())["outputs"]["probabilities"]["categories"]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _problem(description: str) -> dict:
    return {"description": description, "content": {api.PROBLEM_JSON: {"schema": _ref("Problem")}}}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


NULLABLE_STRING = {"type": ["string", "null"]}
PRICE = {"type": ["string", "null"], "pattern": r"^\d+\.\d{2,3}$",
         "description": "decimal, as a string to keep it exact: to the cent, or to the thousandth for a currency of three decimals (KWD)"}

SEARCH_FIELDS = {
    "category": {"type": "string", "enum": CATEGORIES, "description": "search this category instead of the classifier's"},
    "k": {"type": "integer", "minimum": 1, "maximum": pipeline.MAX_K, "default": pipeline.DEFAULT_K, "description": "results per garment"},
    "min_price": {"type": "number", "minimum": 0},
    "max_price": {"type": "number", "minimum": 0},
    "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$", "description": "ISO 4217 code, e.g. EUR"},
    "shop": {"type": "string", "description": "a shop's name in any case (see GET /health) or id"},
    "garment": {"type": "integer", "minimum": 0, "description": "search only this garment: its `index` in an answer for the same photo"},
    "box": {
        "description": "search only this part of the photo, skipping the detector: [left, top, right, bottom] in pixels of the upright photo (JSON), or \"left,top,right,bottom\" (query, form)",
        "oneOf": [
            {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4},
            {"type": "string", "pattern": r"^\s*-?\d+\s*(,\s*-?\d+\s*){3}$"},
        ],
    },
}

SCHEMAS = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details; `detail` says what to fix.",
        "required": ["type", "title", "status", "detail"],
        "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
                       "request_id": {"type": "string", "description": "On a 500: the request's id, to quote when reporting it (it finds the log line)."}},
    },
    "Result": {
        "type": "object",
        "required": ["item_id", "title", "shop", "brand", "price", "currency", "url", "image_url", "distance"],
        "properties": {
            "item_id": {"type": "string"},
            "title": {"type": "string"},
            "shop": {"type": "string"},
            "brand": NULLABLE_STRING,
            "price": PRICE,
            "currency": NULLABLE_STRING,
            "url": {"type": "string", "description": "the product page"},
            "image_url": {"type": "string"},
            "distance": {"type": "number", "description": "L1 distance of the L2-normalised embeddings; smaller is closer"},
        },
    },
    "Garment": {
        "type": "object",
        "required": ["index", "box", "label", "score", "searchable", "category", "category_source", "predicted_category", "confidence", "results"],
        "properties": {
            "index": {"type": "integer", "description": "the garment's place in the answer for this photo; pass as `garment` to search only it"},
            "box": {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4, "description": "[left, top, right, bottom] in pixels of the upright photo"},
            "label": {"type": ["string", "null"], "enum": [*DETECTOR_CLASSES, None], "description": "what the detector found; null from a detector that does not say, or for a requested box"},
            "score": {"type": "number", "description": "the detector's confidence"},
            "searchable": {"type": "boolean", "description": "false for garments the catalogue has no category for (bag, eyewear, belt): no category, no results; "
                           "true for one of those picked by `garment` with a `category`"},
            "category": {"type": ["string", "null"], "enum": [*CATEGORIES, None], "description": "the category searched"},
            "category_source": {"type": ["string", "null"], "enum": ["classifier", "request", None]},
            "predicted_category": {"type": ["string", "null"], "enum": [*CATEGORIES, None], "description": "the classifier's choice among the detector label's categories; null for a label that has none"},
            "confidence": {"type": ["number", "null"], "description": "the classifier's probability of predicted_category among those categories"},
            "results": {"type": "array", "items": _ref("Result"), "description": "nearest first"},
        },
    },
    "SearchAnswer": {
        "type": "object",
        "required": ["image", "garments", "results", "model", "took_ms"],
        "properties": {
            "image": {"type": "object", "required": ["width", "height"], "properties": {"width": {"type": "integer"}, "height": {"type": "integer"}}},
            "garments": {"type": "array", "items": _ref("Garment"), "description": "every garment found: the searchable ones first, then the rest, each by score"},
            "results": {"type": "array", "items": _ref("Result"), "description": "the first garment's results (empty when there is none), for clients that show one list"},
            "model": {"type": "object", "required": ["name", "detector"], "properties": {"name": {"type": "string"}, "detector": {"type": "string"}}},
            "took_ms": {"type": "number"},
        },
    },
    "SearchParameters": {"type": "object", "properties": SEARCH_FIELDS},
    "Upload": {
        "type": "object",
        "required": ["key", "url", "fields", "max_bytes", "expires_in"],
        "properties": {
            "key": {"type": "string", "description": 'pass as "upload" to POST /search'},
            "url": {"type": "string", "description": "POST a multipart form here: every field of `fields`, then the photo as `file`"},
            "fields": {"type": "object", "additionalProperties": {"type": "string"}},
            "max_bytes": {"type": "integer"},
            "expires_in": {"type": "integer", "description": "seconds the presigned upload stays valid"},
        },
    },
    "Item": {
        "type": "object",
        "required": ["item_id", "title", "shop", "shop_url", "brand", "category", "price", "currency", "url", "image_urls", "live", "last_seen_at"],
        "properties": {
            "item_id": {"type": "string"},
            "title": {"type": "string"},
            "shop": {"type": "string"},
            "shop_url": {"type": "string"},
            "brand": NULLABLE_STRING,
            "category": NULLABLE_STRING,
            "price": PRICE,
            "currency": NULLABLE_STRING,
            "url": {"type": "string"},
            "image_urls": {"type": "array", "items": {"type": "string"}},
            "live": {"type": "boolean", "description": "false once revalidation found the product gone"},
            "last_seen_at": {**NULLABLE_STRING, "format": "date-time", "description": "UTC, to the second"},
        },
    },
    "Categories": {
        "type": "object",
        "required": ["categories"],
        "properties": {
            "categories": {
                "type": "array",
                "items": {"type": "object", "required": ["name", "items"], "properties": {
                    "name": {"type": "string", "enum": CATEGORIES},
                    "items": {"type": "integer", "description": "pictures indexed in the category's shard: a product may show several, "
                              "and a shop taken off keeps its own there until it is back (GET /health counts live products); "
                              "0 while the shard is another model's, being re-embedded"}}},
            }
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "model", "index", "items", "shops", "crawler"],
        "properties": {
            "status": {"const": "ok"},
            "model": {"type": "object", "required": ["name", "sha256", "detector"], "properties": {"name": {"type": "string"}, "sha256": NULLABLE_STRING, "detector": {"type": "string"}}},
            "index": {
                "type": "object",
                "required": ["updated_at", "shards"],
                "properties": {
                    "updated_at": NULLABLE_STRING,
                    "shards": {
                        "type": "object",
                        "additionalProperties": {"type": "object", "required": ["version", "items", "model"], "properties": {
                            "version": {"type": "string"}, "items": {"type": "integer"},
                            "model": {**NULLABLE_STRING, "description": "the garment model that made the shard; a shard of another "
                                      "model than /health's `model` answers no search until the re-embedding reaches it"}}},
                    },
                },
            },
            "items": {"type": "object", "required": ["indexed"], "additionalProperties": {"type": "integer"}},
            "shops": {"type": "array", "items": {"type": "string"}},
            "crawler": {**NULLABLE_STRING, "description": "who holds the crawler lease (scrape, revalidate or re-embedding, and a run id); null when none fetches"},
        },
    },
}


def document() -> dict:
    return _with_internal_errors(_document())


def _document() -> dict:
    query_parameters = [{"name": name, "in": "query", "required": False, "schema": schema} for name, schema in SEARCH_FIELDS.items()]
    image_limits = f"At most {api.MAX_SEARCH_BODY_BYTES} bytes in the request (larger photos: POST /uploads) and {MAX_PIXELS} pixels."
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Shazzam for Clothes",
            "version": "1.0.0",
            "description": "Photograph an outfit; get similar garments for sale. Every error is application/problem+json.",
        },
        "paths": {
            "/search": {
                "post": {
                    "operationId": "search",
                    "summary": "Find the garments in a photo and the most similar catalogue items of each",
                    "description": f"JPEG, PNG, WebP, HEIC/HEIF and AVIF photos (GIF, BMP and TIFF too: the first frame). {image_limits} Parameters go in the query string, the form or the JSON body.",
                    "parameters": query_parameters,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "allOf": [
                                        _ref("SearchParameters"),
                                        {"type": "object", "properties": {"image": {"type": "string", "contentMediaType": "image/*"}, "upload": {"type": "string"}}},
                                    ]
                                }
                            },
                            "application/json": {
                                "schema": {
                                    "allOf": [
                                        _ref("SearchParameters"),
                                        {
                                            "type": "object",
                                            "properties": {"image": {"type": "string", "contentEncoding": "base64", "description": "the photo in base64 (standard or URL-safe, line breaks allowed) or a data: URL of it"}, "upload": {"type": "string", "description": "a key from POST /uploads; each serves one search"}},
                                        },
                                    ]
                                }
                            },
                            "image/*": {"schema": {"type": "string", "contentMediaType": "image/*"}},
                        },
                    },
                    "responses": {
                        "200": _json("The garments found, each with its ranked results", _ref("SearchAnswer")),
                        "400": _problem("Malformed request: bad JSON, base64 or form; an empty, corrupt or truncated image"),
                        "413": _problem(f"Too large: more than {api.MAX_SEARCH_BODY_BYTES} bytes, or more than {MAX_PIXELS} pixels"),
                        "415": _problem("Not an image, or a format we do not read"),
                        "422": _problem("A bad parameter: unknown category or shop, k out of range, a price that is not a number, a garment the photo does not have, a bad box, an unknown upload"),
                        "429": _problem("Throttled; retry after the Retry-After header's seconds"),
                    },
                }
            },
            "/uploads": {
                "post": {
                    "operationId": "createUpload",
                    "summary": "A presigned upload for a photo larger than the synchronous limit",
                    "description": f"An S3 presigned POST in the cloud; the local runtime's equivalent endpoint locally. Photos up to {MAX_BYTES} bytes.",
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {"type": "object", "properties": {"content_type": {
                                    "type": "string",
                                    "enum": [*api.UPLOAD_CONTENT_TYPES, *api.UPLOAD_CONTENT_TYPE_ALIASES],
                                    "default": "image/jpeg",
                                    "description": "An alias (image/jpg, image/pjpeg, image/x-png, image/x-ms-bmp) is taken as the type it names: "
                                                   "the answer's fields carry that type, which the upload must send.",
                                }}}
                            }
                        },
                    },
                    "responses": {
                        "201": _json("Where and how to upload", _ref("Upload")),
                        "400": _problem("Malformed JSON"),
                        "413": _problem(f"A request larger than {api.MAX_SEARCH_BODY_BYTES} bytes"),
                        "415": _problem("A content type that is not a photo"),
                        "429": _problem("Throttled"),
                    },
                }
            },
            "/categories": {
                "get": {
                    "operationId": "categories",
                    "summary": "The categories and how many indexed pictures each holds",
                    "responses": {"200": _json("The categories", _ref("Categories")), "429": _problem("Throttled")},
                }
            },
            "/items/{item_id}": {
                "get": {
                    "operationId": "item",
                    "summary": "One catalogue item",
                    "parameters": [{"name": "item_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": _json("The item", _ref("Item")), "404": _problem("No such item"), "429": _problem("Throttled")},
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Model and index versions, item counts",
                    "responses": {"200": _json("The service is up", _ref("Health")), "429": _problem("Throttled")},
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": {"description": "The OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}}, "429": _problem("Throttled")},
                }
            },
        },
        "components": {"schemas": SCHEMAS},
    }


def render() -> str:
    return json.dumps(document(), indent=2) + "\n"


def _with_internal_errors(document: dict) -> dict:
    """Every operation may also answer 500 (a fault of ours, in the same problem shape)."""
    for operations in document["paths"].values():
        for operation in operations.values():
            operation["responses"]["500"] = _problem("A fault of ours; retrying later may work")
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shazzam.openapi", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed document differs")
    args = parser.parse_args(argv)
    if args.check:
        if api.OPENAPI_PATH.read_text() != render():
            print(f"{api.OPENAPI_PATH} is out of date: run python -m shazzam.openapi", file=sys.stderr)
            return 1
        return 0
    api.OPENAPI_PATH.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
