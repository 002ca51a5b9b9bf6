"""The committed OpenAPI document cannot drift: it is what shazzam.openapi builds, it is valid
OpenAPI 3.1, its routes are the wiring table's and the resolver's, and real answers match it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from openapi_spec_validator import validate

from shazzam import api, openapi, wiring
from shazzam.events import http_api_request
from shazzam.local.runtime import LambdaContext, LocalRuntime
from shazzam.local.sample_shop import SampleShop
from tests.api_fixtures import build_catalogue
from tests.support.detectors import FixedDetector, use_detector

REPO = Path(__file__).resolve().parents[2]
DOCUMENT = json.loads(api.OPENAPI_PATH.read_text())


def test_the_committed_document_is_the_generated_one():
    assert api.OPENAPI_PATH.read_text() == openapi.render(), "run: .venv/bin/python -m shazzam.openapi"
    assert openapi.main(["--check"]) == 0


def test_it_is_valid_openapi():
    validate(DOCUMENT)


def test_its_routes_are_the_wiring_tables_and_the_resolvers():
    documented = {(method.upper(), path) for path, operations in DOCUMENT["paths"].items() for method in operations}
    wired = {(route.method, route.path) for function, route in wiring.routes() if function.name == "search"}
    # Powertools keeps its routes privately; openapi_path is the route in OpenAPI's {name} form.
    resolved = {(route.method, route.openapi_path) for route in api.resolver._static_routes + api.resolver._dynamic_routes}
    assert documented == wired == resolved


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    """Real answers of every route, by (method, path, status), over a 10-item catalogue."""
    runtime = LocalRuntime(tmp_path_factory.mktemp("openapi") / "data")
    photo = (REPO / "samples" / "queries" / "shoes-query.jpg").read_bytes()
    with SampleShop() as shop:
        saved = build_catalogue(runtime, shop, per_category=1)

    def call(method, path, body=b"", content_type="application/json", query=""):
        event = http_api_request(method, path, query, {"content-type": content_type, "host": "127.0.0.1:8000"}, body)
        response = api.lambda_handler(event, LambdaContext("search"))
        return (method, path, response["statusCode"]), json.loads(response["body"])

    found = dict(
        [
            call("POST", "/search", photo, "image/jpeg", "k=3"),
            call("POST", "/search", photo, "image/jpeg", "k=0"),
            call("POST", "/search", b"nonsense", "image/jpeg"),
            call("POST", "/uploads", b"{}"),
            call("GET", "/categories"),
            call("GET", "/health"),
            call("GET", "/items/nope"),
        ]
    )
    found.update([call("GET", f"/items/{saved[0]['id']}")])
    # an outfit: several garments, one the catalogue has no category for (its fields are null)
    with pytest.MonkeyPatch.context() as patch:
        use_detector(patch, FixedDetector())
        (method, path, status), outfit = call("POST", "/search", photo, "image/jpeg", "k=2")
    assert [g["searchable"] for g in outfit["garments"]] == [True, True, True, False]
    found[(method, path, status, "outfit")] = outfit
    yield found
    runtime.close()


def test_real_answers_match_the_documented_schemas(answers):
    assert len(answers) == 9
    for (method, path, status, *_), body in answers.items():
        documented_path = "/items/{item_id}" if path.startswith("/items/") else path
        response = DOCUMENT["paths"][documented_path][method.lower()]["responses"][str(status)]
        (content,) = response["content"].values()
        schema = {**content["schema"], "components": DOCUMENT["components"]}
        jsonschema.Draft202012Validator(schema).validate(body)
