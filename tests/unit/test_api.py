"""The API contract at the handler: the four request forms, the answer's shape, problem+json errors."""

from __future__ import annotations

import base64
import io
import json
import uuid
from pathlib import Path

import pytest
from PIL import Image

from shazzam import api, lease
from shazzam.events import http_api_request
from shazzam.local.runtime import LambdaContext, LocalRuntime
from shazzam.detector import WholeImageDetector
from shazzam.vision import load_garment_model
from tests.support.detectors import FixedDetector, use_detector

REPO = Path(__file__).resolve().parents[2]
PHOTO = (REPO / "samples" / "queries" / "dress-query.jpg").read_bytes()


def multipart(fields: dict[str, bytes | str], filename: str = "photo.jpg") -> tuple[str, bytes]:
    """A multipart/form-data body as a browser sends it: bytes values are files."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in fields.items():
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if isinstance(value, bytes) else "")
        data = value if isinstance(value, bytes) else value.encode()
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    runtime = LocalRuntime(tmp_path_factory.mktemp("api") / "data")
    yield runtime
    runtime.close()


@pytest.fixture
def call(runtime):
    """call(method, path, body=b"", content_type=None, query="") -> (status, headers, parsed body)."""

    def call(method: str, path: str, body: bytes = b"", content_type: str | None = None, query: str = ""):
        headers = {"host": "127.0.0.1:8000"} | ({"content-type": content_type} if content_type else {})
        response = api.lambda_handler(http_api_request(method, path, query, headers, body), LambdaContext("search"))
        return response["statusCode"], response["headers"], json.loads(response["body"]) if response.get("body") else None

    return call


def json_body(**fields) -> bytes:
    return json.dumps({"image": base64.b64encode(PHOTO).decode(), **fields}).encode()


def test_every_garment_of_an_outfit_gets_its_results(call, monkeypatch):
    use_detector(monkeypatch, FixedDetector())  # a bag (0.99), a top, pants and shoes
    status, _, answer = call("POST", "/search", json_body(k=2), "application/json")
    assert status == 200, answer
    assert_search_answer(answer)
    labels = [garment["label"] for garment in answer["garments"]]
    assert labels == ["top", "pants", "footwear", "bag"]  # searchable first, each by score
    top, pants, shoes, bag = answer["garments"]
    assert top["category"] in ("longsleeve", "shirt", "t-shirt") and top["category_source"] == "classifier"
    assert pants["category"] in ("pants", "shorts") and shoes["category"] == "shoes"
    assert all(g["searchable"] and 0 < g["confidence"] <= 1 for g in (top, pants, shoes))
    assert bag == {**bag, "searchable": False, "category": None, "category_source": None, "predicted_category": None, "confidence": None, "results": []}
    assert answer["results"] == top["results"]  # what a client showing one list shows
    assert answer["model"]["detector"] == FixedDetector.name


def test_one_garment_picked_by_index_or_box(call, monkeypatch):
    use_detector(monkeypatch, FixedDetector())
    status, _, everything = call("POST", "/search", json_body(), "application/json")
    status, _, answer = call("POST", "/search", PHOTO, "image/jpeg", "garment=1&category=skirt")
    assert status == 200, answer
    (pants,) = answer["garments"]
    assert pants["index"] == 1 and pants["box"] == everything["garments"][1]["box"] and pants["label"] == "pants"
    assert pants["category"] == "skirt" and pants["category_source"] == "request"
    # a bag picked with a category is searched in it; picked alone, it has nothing to search
    status, _, answer = call("POST", "/search", json_body(garment=3, category="hat"), "application/json")
    assert status == 200 and answer["garments"][0]["label"] == "bag" and answer["garments"][0]["category"] == "hat"
    assert answer["garments"][0]["predicted_category"] is None and answer["garments"][0]["confidence"] is None  # no category of its own
    status, _, answer = call("POST", "/search", json_body(garment=3), "application/json")
    assert answer["garments"][0]["results"] == [] and answer["results"] == []

    for content_type, body, query in (
        ("image/jpeg", PHOTO, "box=10,20,200,300"),
        ("application/json", json_body(box=[10, 20, 200, 300]), ""),
        (*multipart({"image": PHOTO, "box": "10, 20, 200, 300"}), ""),
    ):
        status, _, answer = call("POST", "/search", body, content_type, query)
        assert status == 200, answer
        (garment,) = answer["garments"]
        assert garment["box"] == [10, 20, 200, 300] and garment["label"] is None and garment["searchable"]
    status, _, answer = call("POST", "/search", json_body(box=[-50, -50, 100000, 100000]), "application/json")
    assert answer["garments"][0]["box"] == [0, 0, answer["image"]["width"], answer["image"]["height"]]  # clipped


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"garment": 4}, "4 garment(s) found"),
        ({"garment": -1}, "garment must be"),
        ({"garment": "first"}, '"garment" must be an integer'),
        ({"box": [1, 2, 3]}, '"box" must be four integers'),
        ({"box": "a,b,c,d"}, '"box" must be four integers'),
        ({"box": [10, 10, 5, 20]}, "right > left"),
        ({"box": [5000, 5000, 6000, 6000]}, "outside"),
        ({"box": [0, 0, 10, 10], "garment": 0}, "not both"),
        ({"garment": 0.5}, '"garment" must be an integer'),
        ({"box": [0.5, 0, 100, 100]}, '"box" must be four integers'),
    ],
)
def test_bad_garment_choices_are_422(call, monkeypatch, fields, words):
    use_detector(monkeypatch, FixedDetector())
    status, _, problem = call("POST", "/search", json_body(**fields), "application/json")
    assert status == 422 and words in problem["detail"], problem


def test_whole_numbers_written_as_floats_are_integers(call, monkeypatch):
    """JSON Schema's integer includes 5.0, which encoders of doubles (json.dumps(5.0), Jackson) write."""
    use_detector(monkeypatch, FixedDetector())
    status, _, answer = call("POST", "/search", json_body(k=1.0, garment=1.0), "application/json")
    assert status == 200 and answer["garments"][0]["label"] == "pants", answer
    status, _, answer = call("POST", "/search", json_body(box=[10.0, 20.0, 200.0, 300.0]), "application/json")
    assert status == 200 and answer["garments"][0]["box"] == [10, 20, 200, 300], answer


@pytest.mark.parametrize("field_type", ["application/json", "application/octet-stream", "multipart/form-data; charset=utf-8"])
def test_a_forms_plain_fields_are_text_whatever_type_their_part_is_labelled(call, monkeypatch, field_type):
    """Some HTTP clients (OkHttp's RequestBody with the form's own type) label a form's plain fields."""
    use_detector(monkeypatch, FixedDetector())
    boundary = "b0undary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + PHOTO + b"\r\n"
    for name, value in (("k", "1"), ("garment", "1"), ("category", "skirt")):
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'
                 f"Content-Type: {field_type}\r\n\r\n{value}\r\n").encode()
    body += f"--{boundary}--\r\n".encode()
    status, _, answer = call("POST", "/search", body, f"multipart/form-data; boundary={boundary}")
    assert status == 200, answer
    (pants,) = answer["garments"]
    assert pants["index"] == 1 and pants["category"] == "skirt" and pants["category_source"] == "request"


def test_a_file_sent_under_a_parameters_name_is_refused_without_being_quoted(call):
    content_type, body = multipart({"image": PHOTO, "k": PHOTO})
    status, _, problem = call("POST", "/search", body, content_type)
    assert status == 422 and problem["detail"] == '"k" must be an integer', problem


def test_a_photo_without_garments_answers_no_garments(call, monkeypatch):
    use_detector(monkeypatch, FixedDetector(garments=()))
    status, _, answer = call("POST", "/search", PHOTO, "image/jpeg")
    assert status == 200 and answer["garments"] == [] and answer["results"] == []


def assert_search_answer(answer: dict) -> None:
    """The answer's shape, whichever detector runs (v0: one garment, the whole photo)."""
    width, height = answer["image"]["width"], answer["image"]["height"]
    for index, garment in enumerate(answer["garments"]):
        assert garment["index"] == index
        left, top, right, bottom = garment["box"]
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        assert {"label", "score", "searchable", "category", "category_source", "predicted_category", "confidence", "results"} <= set(garment)
    if answer["model"]["detector"] == WholeImageDetector.name:
        (garment,) = answer["garments"]
        assert garment["box"] == [0, 0, width, height] and garment["label"] is None
    assert answer["results"] == (answer["garments"][0]["results"] if answer["garments"] else [])
    assert answer["model"]["name"] == load_garment_model().name and answer["took_ms"] > 0


def test_the_photo_in_each_request_form(call):
    for content_type, body in [
        ("application/json", json.dumps({"image": base64.b64encode(PHOTO).decode(), "k": 3}).encode()),
        ("application/json", json.dumps({"image": "data:image/jpeg;base64," + base64.b64encode(PHOTO).decode()}).encode()),
        ("image/jpeg", PHOTO),
        multipart({"image": PHOTO, "k": "3"}),
    ]:
        status, _, answer = call("POST", "/search", body, content_type)
        assert status == 200, answer
        assert_search_answer(answer)
    content_type, body = multipart({"image": PHOTO, "category": "dress"})
    status, _, answer = call("POST", "/search", body, content_type)
    assert status == 200 and answer["garments"], answer  # a photo of a dress: something is found
    for garment in answer["garments"]:
        if garment["searchable"]:
            assert garment["category"] == "dress" and garment["category_source"] == "request"


def test_base64_with_line_breaks_or_url_safe_letters_is_read(call):
    wrapped = base64.encodebytes(PHOTO).decode()  # what the `base64` command writes: 76-character lines
    url_safe = base64.urlsafe_b64encode(PHOTO).decode()
    assert "\n" in wrapped and ("-" in url_safe or "_" in url_safe)
    for image in (wrapped, url_safe, "data:image/jpeg;base64," + url_safe):
        status, _, answer = call("POST", "/search", json.dumps({"image": image, "k": 1}).encode(), "application/json")
        assert status == 200, answer


def test_heic_from_a_phone_is_read(call):
    import pillow_heif

    heic = io.BytesIO()
    pillow_heif.from_pillow(Image.open(io.BytesIO(PHOTO))).save(heic, format="HEIF", quality=60)
    status, _, answer = call("POST", "/search", heic.getvalue(), "image/heic")
    assert status == 200, answer
    assert_search_answer(answer)


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def giant_png_header() -> bytes:
    """A valid PNG whose header claims 60000x60000 pixels (a decompression bomb)."""
    import struct
    import zlib

    data = bytearray(png(1, 1))
    data[16:24] = struct.pack(">II", 60000, 60000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize(
    "body, content_type, query, status, words",
    [
        (b"", "image/jpeg", "", 400, "empty"),
        (PHOTO[:2000], "image/jpeg", "", 400, "image rejected"),
        (b"this is not an image", "image/jpeg", "", 415, "not an image"),
        (PHOTO, "text/plain", "", 415, "text/plain"),
        (giant_png_header(), "image/png", "", 413, "pixels"),
        (b"{not json", "application/json", "", 400, "not valid JSON"),
        (b"[1, 2]", "application/json", "", 400, "must be an object"),
        (b'{"image": 5}', "application/json", "", 400, '"image"'),
        (b'{"image": "!!!"}', "application/json", "", 400, "base64"),
        (PHOTO, "image/jpeg", "k=-1", 422, "k must be"),
        (PHOTO, "image/jpeg", "k=many", 422, '"k" must be an integer'),
        (PHOTO, "image/jpeg", "category=socks", 422, "unknown category"),
        (PHOTO, "image/jpeg", "min_price=cheap", 422, "min_price"),
        (PHOTO, "image/jpeg", "min_price=50&max_price=10", 422, "more than max_price"),
        (PHOTO, "image/jpeg", "currency=euro", 422, "currency"),
        (b'{"upload": "uploads/nope"}', "application/json", "", 422, "upload"),
        (b"--x\r\nnothing", "multipart/form-data", "", 400, "multipart"),
        (b'{"image": "data:image/jpeg;base64"}', "application/json", "", 400, "without data"),
        (b"[" * 200_000, "application/json", "", 400, "nested too deeply"),
        (b'{"image": "x", "k": ' + b"9" * 5000 + b"}", "application/json", "", 400, "not valid JSON"),
        (b"".join(b"--x\r\nContent-Disposition: form-data; name=f%d\r\n\r\n1\r\n" % i for i in range(1000)) + b"--x--\r\n",
         "multipart/form-data; boundary=x", "", 400, "more than 32 parts"),
        # The MIME parser would read the parts of a part too, with no count on them.
        (b"--x\r\nContent-Disposition: form-data; name=f\r\nContent-Type: multipart/mixed; boundary=y\r\n\r\n"
         + b"--y\r\n\r\n\r\n" * 1000 + b"--y--\r\n--x--\r\n", "multipart/form-data; boundary=x", "", 400, "nested"),
        (b"--x\r\nContent-Disposition: form-data; name=f\r\ncontent-type:Message/RFC822\r\n\r\nSubject: a\r\n\r\nb\r\n--x--\r\n",
         "multipart/form-data; boundary=x", "", 400, "nested"),
        (b"--x\r\nContent-Disposition: form-data; name=f\r\nContent-Type:\r\n multipart/mixed; boundary=y\r\n\r\n"
         + b"--y\r\n\r\n\r\n" * 100 + b"--y--\r\n--x--\r\n", "multipart/form-data; boundary=x", "", 400, "nested"),  # folded
        (b"--x\rContent-Disposition: form-data; name=f\rContent-Type: multipart/mixed; boundary=y\r\r"
         + b"--y\r\r\r" * 1000 + b"--y--\r--x--\r", "multipart/form-data; boundary=x", "", 400, "nested"),  # lines ended by CR alone
        # The MIME parser reads a header's parameters in more than linear time (250,000 took two
        # minutes, the server answering nothing else), and recurses once per "(" of a comment.
        (b'--x\r\nContent-Disposition: form-data; name="image"' + b"".join(b"; a%d=b" % i for i in range(1000))
         + b"\r\nContent-Type: image/jpeg\r\n\r\nDATA\r\n--x--\r\n", "multipart/form-data; boundary=x", "", 400, "longer than 4096"),
        (b'--x\nContent-Disposition: form-data; name="image"' + b"".join(b"; a%d=b" % i for i in range(1000))
         + b"\nContent-Type: image/jpeg\n\nDATA\n--x--\n", "multipart/form-data; boundary=x", "", 400, "longer than 4096"),
        (b'--x\r\nContent-Disposition: form-data; name="image"' + b"(" * 1000 + b")" * 1000
         + b"\r\nContent-Type: image/jpeg\r\n\r\nDATA\r\n--x--\r\n", "multipart/form-data; boundary=x", "", 400, "nested too deeply"),
        (b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\nDATA\r\n--x--\r\n',
         "multipart/form-data; boundary=x " + "(" * 900 + ")" * 900, "", 400, "nested too deeply"),
        (b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\nDATA\r\n--x--\r\n',
         "multipart/form-data; boundary=x" + "; a=b" * 1000, "", 400, "Content-Type header is longer"),
    ],
)
def test_bad_requests_get_a_problem_a_person_understands(call, body, content_type, query, status, words):
    got, headers, problem = call("POST", "/search", body, content_type, query)
    assert got == status, problem
    assert headers["Content-Type"] == "application/problem+json"
    assert problem["status"] == status and problem["title"] and words in problem["detail"]


def test_a_body_over_the_synchronous_limit_is_413(call):
    status, _, problem = call("POST", "/search", b"\xff" * (api.MAX_SEARCH_BODY_BYTES + 1), "image/jpeg")
    assert status == 413 and "POST /uploads" in problem["detail"]


def test_unknown_routes_and_items_are_404_problems(call):
    status, headers, problem = call("GET", "/nowhere")
    assert status == 404 and headers["Content-Type"] == "application/problem+json" and "/openapi.json" in problem["detail"]
    status, _, problem = call("GET", "/items/does-not-exist")
    assert status == 404 and "does-not-exist" in problem["detail"]


def test_upload_then_search_by_key_locally(call, runtime):
    status, _, upload = call("POST", "/uploads", b'{"content_type": "image/jpeg"}', "application/json")
    assert status == 201 and upload["url"] == f"http://127.0.0.1:8000{api.LOCAL_UPLOAD_PATH}"
    assert upload["fields"]["key"] == upload["key"] and upload["max_bytes"] == api.MAX_BYTES
    content_type, form = multipart({**upload["fields"], "file": PHOTO})
    assert runtime.receive_upload(content_type, form)[0] == 204
    by_key = json.dumps({"upload": upload["key"], "k": 2}).encode()
    status, _, answer = call("POST", "/search", by_key, "application/json")
    assert status == 200, answer
    assert_search_answer(answer)
    status, _, problem = call("POST", "/search", by_key, "application/json")
    assert status == 422 and "one search" in problem["detail"]  # the photo is not kept
    status, _, problem = call("POST", "/uploads", b'{"content_type": "text/html"}', "application/json")
    assert status == 415 and "image/jpeg" in problem["detail"]
    for photo_type in ("image/bmp", "image/tiff", "image/gif"):  # read like the others: uploaded like them
        assert call("POST", "/uploads", json.dumps({"content_type": photo_type}).encode(), "application/json")[0] == 201
    status, _, upload = call("POST", "/uploads", b'{"content_type": " IMAGE/PNG"}', "application/json")  # case-blind
    assert status == 201 and upload["fields"]["Content-Type"] == "image/png"
    status, _, upload = call("POST", "/uploads", b'{"content_type": null}', "application/json")  # null is absent
    assert status == 201 and upload["fields"]["Content-Type"] == "image/jpeg"


def test_an_upload_typed_by_an_alias_is_granted_and_stored_as_the_type_it_names(call, runtime):
    # Android galleries type a JPEG image/jpg: a photo over 4 MB was refused with the API's list of types.
    for alias, named in (("Image/X-PNG", "image/png"), ("image/pjpeg", "image/jpeg"), ("image/jpg", "image/jpeg")):
        status, _, upload = call("POST", "/uploads", json.dumps({"content_type": alias}).encode(), "application/json")
        assert status == 201, upload
        assert upload["fields"]["Content-Type"] == named  # the grant's type, which the upload sends
    content_type, form = multipart({**upload["fields"], "file": PHOTO})
    assert runtime.receive_upload(content_type, form)[0] == 204


def test_a_form_with_a_long_epilogue_or_preamble_is_read():
    # Text after the closing delimiter (RFC 2046's epilogue) is no part's headers, however long.
    part = b'--x\r\nContent-Disposition: form-data;\r\n name="image"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\nDATA\r\n'
    lines = b"".join(b"line %d\r\n" % n for n in range(1000))
    assert api.parse_multipart("multipart/form-data; boundary=x", lines + part + b"--x--\r\n" + lines) == {"image": b"DATA"}


def test_a_local_upload_with_headers_nested_too_deeply_is_a_problem_not_a_dropped_connection(runtime):
    form = b'--x\r\nContent-Disposition: form-data; name="file"' + b"(" * 1000 + b")" * 1000 + b"\r\n\r\nDATA\r\n--x--\r\n"
    status, headers, body = runtime.receive_upload("multipart/form-data; boundary=x", form)
    assert status == 400 and b"nested too deeply" in body


def test_behind_a_tls_proxy_the_local_upload_url_is_https(runtime):
    event = http_api_request("POST", "/uploads", "", {"host": "shazzam.example", "x-forwarded-proto": "https"}, b"")
    upload = json.loads(api.lambda_handler(event, LambdaContext("search"))["body"])
    assert upload["url"] == f"https://shazzam.example{api.LOCAL_UPLOAD_PATH}"  # an https page may not post to http


def test_the_largest_search_body_fits_a_lambda_event():
    """API Gateway passes the body in base64 inside the event; Lambda refuses events over 6 MB."""
    event = http_api_request("POST", "/search", "k=50", {"content-type": "image/jpeg", "user-agent": "x" * 2048}, b"\xff" * api.MAX_SEARCH_BODY_BYTES)
    assert len(json.dumps(event)) < 6 * 1024 * 1024


def test_an_image_part_without_a_filename_and_a_null_upload_are_read_as_meant(call):
    boundary = "b0undary"
    form = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
            + PHOTO + f"\r\n--{boundary}--\r\n".encode())  # RFC 7578: a filename is only a SHOULD
    status, _, answer = call("POST", "/search", form, f"multipart/form-data; boundary={boundary}")
    assert status == 200, answer
    status, _, answer = call("POST", "/search", json_body(upload=None), "application/json")  # null is absent, as for k
    assert status == 200, answer


def test_a_problem_is_titled_by_its_status():
    assert api.problem_body(403, "no")["title"] == "Forbidden" and api.problem_body(422, "no")["title"] == "Invalid parameter"


def test_upload_is_a_presigned_s3_post_in_the_cloud(s3_bucket, monkeypatch, tmp_path, call):
    from shazzam import app as app_module
    from shazzam.storage import S3Store

    previous = app_module.current()
    app_module.configure(app_module.App(db=previous.db, store=S3Store(s3_bucket)))
    try:
        status, _, upload = call("POST", "/uploads", b"", None)
    finally:
        app_module.configure(previous)
    assert status == 201 and s3_bucket in upload["url"]
    assert upload["fields"]["key"] == upload["key"] and "policy" in upload["fields"]
    # SigV4 (S3 refuses SigV2 for buckets made since 2020), at the bucket's regional address
    assert upload["fields"]["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert upload["url"] == f"https://{s3_bucket}.s3.eu-west-1.amazonaws.com/"


def test_health_categories_and_openapi(call, runtime):
    status, _, health = call("GET", "/health")
    assert status == 200 and health["status"] == "ok"
    assert health["model"]["name"] == load_garment_model().name and health["model"]["detector"]
    assert "shards" in health["index"] and "indexed" in health["items"] and health["crawler"] is None
    with lease.held(runtime.db, lease.CRAWLER, "revalidate"):  # an operator sees who crawls now
        assert call("GET", "/health")[2]["crawler"].startswith("revalidate ")
    status, _, categories = call("GET", "/categories")
    assert status == 200 and len(categories["categories"]) == 10
    status, headers, document = call("GET", "/openapi.json")
    assert status == 200 and document == json.loads(api.OPENAPI_PATH.read_text())


def test_a_shard_another_model_made_is_named_in_health_and_counts_no_items_in_categories(call, runtime, monkeypatch):
    # During a model rollout /categories counted items no search could show, and /health did not
    # say which shards were still the old model's.
    serving = runtime.app.garment_model.name
    manifest = {"updated_at": "2026-12-01T00:00:00Z", "shards": {
        "dress": {"key": "index/dress/1", "version": "1", "count": 30, "model": serving},
        "hat": {"key": "index/hat/1", "version": "1", "count": 8, "model": "garment_v0"}}}
    monkeypatch.setattr(runtime.app.shards, "manifest", lambda refresh=False: manifest)
    monkeypatch.setattr(api, "read_manifest", lambda store: (manifest, None))
    items = {entry["name"]: entry["items"] for entry in call("GET", "/categories")[2]["categories"]}
    assert items["dress"] == 30 and items["hat"] == 0
    shards = call("GET", "/health")[2]["index"]["shards"]
    assert shards["hat"] == {"version": "1", "items": 8, "model": "garment_v0"} and shards["dress"]["model"] == serving


def test_a_fault_of_ours_answers_500_with_the_request_id_that_finds_its_log_line(runtime, monkeypatch):
    def broken_search(*_args, **_kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(api.pipeline, "search", broken_search)
    log = io.StringIO()
    monkeypatch.setattr(api.logger.registered_handler, "stream", log)
    event = http_api_request("POST", "/search", "", {"host": "127.0.0.1:8000", "content-type": "image/jpeg"}, PHOTO)
    event["requestContext"]["requestId"] = "apigw-request-1234"  # API Gateway's id: the client and the access log see it
    response = api.lambda_handler(event, LambdaContext("search"))
    body = json.loads(response["body"])
    assert response["statusCode"] == 500 and body["request_id"] == "apigw-request-1234"
    assert "the database went away" not in response["body"]  # no internals for the caller
    logged = [json.loads(line) for line in log.getvalue().splitlines() if line.startswith("{")]
    (fault,) = [line for line in logged if line.get("message") == "unhandled error"]
    assert fault["correlation_id"] == "apigw-request-1234" and "the database went away" in fault["exception"]


def test_a_json_price_is_read_as_the_number_written():
    """JSON 19.99 is a float a hair under 19.99: read as that float, the cent limit floors to 19.98
    and the items priced 19.99 a shopper asked for vanish."""
    from decimal import Decimal

    _, _, filters = api.search_parameters({"min_price": 0.1, "max_price": 19.99})
    assert filters.min_price == Decimal("0.1") and filters.max_price == Decimal("19.99")


def test_a_min_price_of_0_is_accepted(call):
    # a price slider at its left end sends 0: nothing costs less, so it filters nothing out
    status, _, answer = call("POST", "/search", PHOTO, "image/jpeg", "min_price=0")
    assert status == 200, answer


def test_an_empty_garment_field_of_a_form_means_every_garment(call, monkeypatch):
    # an HTML form sends its unfilled "garment" input as "": the whole outfit, not its first garment
    use_detector(monkeypatch, FixedDetector())
    content_type, form = multipart({"image": PHOTO, "garment": ""})
    status, _, answer = call("POST", "/search", form, content_type)
    assert status == 200, answer
    assert [garment["label"] for garment in answer["garments"]] == ["top", "pants", "footwear", "bag"]


def test_text_parameters_are_read_without_surrounding_spaces(call):
    # " dress " and " eur " from a hand-typed query or a padded form field mean dress and EUR
    category, _, filters = api.search_parameters({"category": " dress ", "currency": " eur ", "shop": " a "})
    assert (category, filters.currency, filters.shop) == ("dress", "EUR", "a")
    status, _, answer = call("POST", "/search", PHOTO, "image/jpeg", "category=%20dress%20&currency=%20eur%20")
    assert status == 200, answer
