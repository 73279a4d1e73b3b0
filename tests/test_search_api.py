"""The search API end to end: HTTP API v2 events as AWS sends them -> functions/search/app.handler,
against moto S3 and an embedded Qdrant filled with real photos."""

from __future__ import annotations

import base64
import json
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, quote, urlparse

import boto3
import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imgsim.access import hash_key
from imgsim.errors import ImgsimError
from imgsim.http.errors import problem
from imgsim.http.inputs import json_object, parse_compare_body, parse_search_body
from imgsim.ids import point_id_for_object
from imgsim.points import image_payload
from imgsim.settings import DEFAULT_MAX_BODY_BYTES
from imgsim.store import StoredPoint
from imgsim_tools.events import http_api_event
from moto import mock_aws
from roots import make_root
from support import SEARCH_APP_PATH as APP_PATH
from support import handler_on_root, lambda_context
from urllib3 import encode_multipart_formdata

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

REPO_ROOT = Path(__file__).resolve().parents[1]
BUCKET = "imgsim-images"
API_KEY = "local-dev-key"  # the key the sample events in events/ carry
ORIGIN = "https://imgsim.example"
# The function's variables (as the template sets them); the embedded store's folder comes from make_root.
VARIABLES = {
    "IMAGES_BUCKET": BUCKET,
    "IMGSIM_API_KEY": API_KEY,
    "IMGSIM_CORS_ORIGIN": ORIGIN,
    "QDRANT_COLLECTION": "images",
}
# 8 photos from each of the 4 blocks (cats, dogs, monkeys, squirrels), under two top folders.
PHOTO_INDEXES = [block * 423 + step * 7 for block in range(4) for step in range(8)]


def key_for(path: Path, index: int) -> str:
    return f"photos/{path.name}" if index % 2 == 0 else f"archive/2024/{path.name}"


@pytest.fixture(scope="module")
def aws():
    with pytest.MonkeyPatch.context() as mp, mock_aws():
        mp.delenv("AWS_ENDPOINT_URL", raising=False)  # boto3's own variable: every client stays on moto
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("search")


@pytest.fixture(scope="module")
def search_root(aws, store_dir):
    """The function's composition root, built from its variables, on a fresh embedded store."""
    root = make_root(store_dir, VARIABLES)
    yield root
    root.close()


@pytest.fixture(scope="module")
def search_app(search_root):
    # The CORS configuration is built when the module is imported (Lambda's init), from the root the function's
    # environment gives: the import sees the function's IMGSIM_CORS_ORIGIN, as on Lambda. From then on the
    # function runs on search_root, built from the same variables (and nothing else reads the environment).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMGSIM_CORS_ORIGIN", ORIGIN)
        module = handler_on_root("imgsim_search_app", APP_PATH, search_root)
    yield module
    sys.modules.pop(module.__name__, None)


@pytest.fixture(scope="module")
def model(search_root) -> str:
    """The model of the collection the function serves."""
    return search_root.embedder().model_name


class _Borrowed:
    """Another root's catalog, left open when this root closes (the other root owns it)."""

    def __init__(self, catalog) -> None:
        self._catalog = catalog

    def __getattr__(self, name):
        return getattr(self._catalog, name)

    def close(self) -> None:
        pass


@pytest.fixture
def run_with(search_app, search_root, store_dir):
    """Run the function on a root built from its variables with ``changes`` (a value None: the variable unset),
    on the same embedded store (or on the catalog ``catalogs`` makes); what a test did before by editing the
    environment. The module's own root is back after the test."""
    roots = []

    def switch(changes: dict[str, str | None], *, catalogs=None):
        variables = {name: value for name, value in {**VARIABLES, **changes}.items() if value is not None}
        root = make_root(store_dir, variables, catalogs=catalogs or (lambda _settings: _Borrowed(search_root.catalog())))
        roots.append(root)
        search_app.use_root(root)
        return root

    yield switch
    search_app.use_root(search_root)
    for root in roots:
        root.close()


@pytest.fixture(scope="module")
def indexed(search_app, search_root, photos):
    """Real photos in S3 and in the store, the way the indexer leaves them."""
    s3 = boto3.client("s3")
    embedder = search_root.embedder()
    store = search_root.store()
    store.ensure_collection()
    items = []
    for n, index in enumerate(PHOTO_INDEXES):
        path = photos[index]
        data = path.read_bytes()
        key = key_for(path, n)
        s3.put_object(Bucket=BUCKET, Key=key, Body=data, ContentType="image/jpeg")
        image = embedder.decode(data)
        items.append((key, data, image))
    vectors = embedder.embed_decoded([image for _, _, image in items])
    points = [
        StoredPoint(
            point_id_for_object(BUCKET, key), vector,
            image_payload(key=key, image=image, size=len(data), model=embedder.model_name, bucket=BUCKET),
        )
        for (key, data, image), vector in zip(items, vectors)
    ]
    store.upsert(points)
    return {key: SimpleNamespace(key=key, data=data, id=point_id_for_object(BUCKET, key), vector=vector)
            for (key, data, _), vector in zip(items, vectors)}


def LambdaContext():
    return lambda_context("imgsim-search", timeout_s=29)


@pytest.fixture
def call(search_app, indexed):
    """Invoke the handler with an HTTP API event; returns (status, headers, parsed body)."""

    def invoke(method, path, *, body=None, content_type=None, query=None, headers=None, api_key=API_KEY):
        all_headers = dict(headers or {})
        if api_key is not None:
            all_headers["x-api-key"] = api_key
        if content_type is not None:
            all_headers["content-type"] = content_type
        event = http_api_event(method, path, query=query, headers=all_headers, body=body)
        response = search_app.handler(event, LambdaContext())
        text = response.get("body") or ""
        if response.get("isBase64Encoded"):
            text = base64.b64decode(text).decode()
        headers_out = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
        parsed = json.loads(text) if headers_out.get("content-type", "").startswith("application/json") else text
        return response["statusCode"], headers_out, parsed

    return invoke


def assert_error(result, status, code):
    got_status, headers, body = result
    assert got_status == status, body
    assert headers["content-type"].startswith("application/json")
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert "Traceback" not in json.dumps(body)


def json_body(obj) -> bytes:
    return json.dumps(obj).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- public routes ----------------------------------------------------------------


def test_health_needs_no_key_and_reports_the_index(call, indexed, model):
    status, _headers, body = call("GET", "/health", api_key=None)
    assert status == 200
    # "images" is an alias of the model's own collection (imgsim.deployment); no switch in progress.
    assert body == {"status": "ok", "collection": "images", "model": model, "serving": f"images__{model}"}
    # The count is the caller's own (GET /me): a public total would show every tenant's uploads and deletes.
    assert call("GET", "/me")[2]["images"] == len(indexed)


def test_page_needs_no_key(call):
    status, headers, body = call("GET", "/", api_key=None)
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert "<html" in body.lower()


# -- POST /search -------------------------------------------------------------------


def check_results(body, model, *, limit=10):
    assert body["model"] == model
    assert isinstance(body["took_ms"], float) and body["took_ms"] >= 0
    results = body["results"]
    assert 0 < len(results) <= limit
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    for r in results:
        assert set(r) >= {"id", "bucket", "key", "score", "percent", "url", "width", "height",
                          "content_type", "size", "indexed_at"}
        assert 0.0 <= r["score"] <= 1.0 and r["percent"] == round(100 * r["score"], 1)
        assert r["id"] == point_id_for_object(BUCKET, r["key"]) and r["bucket"] == BUCKET
        assert r["content_type"] == "image/jpeg" and r["width"] > 0 and r["height"] > 0 and r["size"] > 0
    return results


def test_search_raw_image_body_finds_the_same_photo_first(call, indexed, model):
    item = next(iter(indexed.values()))
    status, headers, body = call("POST", "/search", body=item.data, content_type="image/jpeg")
    assert status == 200, body
    results = check_results(body, model)
    assert results[0]["key"] == item.key and results[0]["score"] > 0.999
    assert "embed;dur=" in headers["server-timing"] and "qdrant;dur=" in headers["server-timing"]


def test_search_body_forms_agree(call, indexed):
    item = list(indexed.values())[9]
    raw = call("POST", "/search", body=item.data, content_type="image/jpeg")[2]
    octet = call("POST", "/search", body=item.data, content_type="application/octet-stream")[2]
    form_body, form_type = encode_multipart_formdata({"image": ("q.jpg", item.data, "image/jpeg")})
    form = call("POST", "/search", body=form_body, content_type=form_type)
    as_json = call("POST", "/search", body=json_body({"image": b64(item.data)}), content_type="application/json")
    data_url = call("POST", "/search", body=json_body({"image": "data:image/jpeg;base64," + b64(item.data)}),
                    content_type="application/json; charset=utf-8")
    expected = [(r["id"], r["percent"]) for r in raw["results"]]
    for status, _, body in (form, as_json, data_url):
        assert status == 200, body
        assert [(r["id"], r["percent"]) for r in body["results"]] == expected
    assert [(r["id"], r["percent"]) for r in octet["results"]] == expected


def test_search_by_id_and_by_key_exclude_the_query_image(call, indexed, model):
    item = list(indexed.values())[3]
    by_image = call("POST", "/search", body=item.data, content_type="image/jpeg", query={"limit": 6})[2]
    for body_obj in ({"id": item.id}, {"key": item.key}):
        status, _, body = call("POST", "/search", body=json_body(body_obj), content_type="application/json",
                               query={"limit": 5})
        assert status == 200, body
        results = check_results(body, model, limit=5)
        assert item.id not in [r["id"] for r in results]
        # The stored vector is the one the image query computes, so the rest of the ranking agrees.
        assert [r["id"] for r in results] == [r["id"] for r in by_image["results"][1:6]]


def test_search_by_unknown_id_or_key_is_404(call):
    assert_error(call("POST", "/search", body=json_body({"id": str(uuid.uuid4())}), content_type="application/json"),
                 404, "not_found")
    assert_error(call("POST", "/search", body=json_body({"key": "photos/nope.jpg"}), content_type="application/json"),
                 404, "not_found")


def test_search_query_parameters(call, indexed):
    item = next(iter(indexed.values()))
    status, _, body = call("POST", "/search", body=item.data, content_type="image/jpeg", query={"limit": "3"})
    assert status == 200 and len(body["results"]) == 3
    status, _, body = call("POST", "/search", body=item.data, content_type="image/jpeg", query={"limit": 100})
    assert status == 200 and len(body["results"]) == len(indexed)
    all_scores = [r["score"] for r in body["results"]]
    threshold = all_scores[len(all_scores) // 2]
    status, _, body = call("POST", "/search", body=item.data, content_type="image/jpeg",
                           query={"limit": 100, "min_score": threshold})
    assert status == 200 and body["results"]
    assert all(r["score"] >= threshold - 1e-6 for r in body["results"])
    assert len(body["results"]) < len(indexed)
    status, _, body = call("POST", "/search", body=item.data, content_type="image/jpeg",
                           query={"limit": 100, "prefix": "archive/"})
    assert status == 200
    assert sorted(r["key"] for r in body["results"]) == sorted(k for k in indexed if k.startswith("archive/"))
    partial = "archive/2024/photo_00"
    status, _, body = call("POST", "/search", body=item.data, content_type="image/jpeg",
                           query={"limit": 100, "prefix": partial})
    assert status == 200
    assert sorted(r["key"] for r in body["results"]) == sorted(k for k in indexed if k.startswith(partial))


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"min_score": -0.1},
                                   {"min_score": 1.5}, {"min_score": "high"}])
def test_search_bad_query_parameters_are_400(call, indexed, query):
    item = next(iter(indexed.values()))
    status, _, body = call("POST", "/search", body=item.data, content_type="image/jpeg", query=query)
    assert_error((status, {"content-type": "application/json"}, body), 400, "bad_parameter")
    assert next(iter(query)) in body["error"]["message"]


def test_search_bad_bodies(call, indexed):
    jpeg = next(iter(indexed.values())).data
    assert_error(call("POST", "/search", body=b"hello, not an image", content_type="image/jpeg"), 400, "not_an_image")
    assert_error(call("POST", "/search", body=jpeg[: len(jpeg) // 3], content_type="image/jpeg"), 400,
                 "corrupt_image")
    assert_error(call("POST", "/search", body=None, content_type="image/jpeg"), 400, "empty_body")
    assert_error(call("POST", "/search", body=b"some text", content_type="text/plain"), 415,
                 "unsupported_media_type")
    assert_error(call("POST", "/search", body=jpeg), 415, "unsupported_media_type")  # no Content-Type
    form_body, form_type = encode_multipart_formdata({"file": ("q.jpg", jpeg, "image/jpeg")})
    assert_error(call("POST", "/search", body=form_body, content_type=form_type), 400, "bad_parameter")
    assert_error(call("POST", "/search", body=form_body, content_type="multipart/form-data"), 400, "bad_body")
    assert_error(call("POST", "/search", body=b"{not json", content_type="application/json"), 400, "bad_json")
    assert_error(call("POST", "/search", body=b"[1, 2]", content_type="application/json"), 400, "bad_json")
    for obj in ({}, {"id": "x", "key": "y"}, {"image": "!!!not base64!!!"}, {"image": 12}, {"key": ""},
                {"id": "not-a-uuid"}):
        assert_error(call("POST", "/search", body=json_body(obj), content_type="application/json"), 400,
                     "bad_parameter")


def test_body_over_the_limit_is_413_and_points_to_uploads(call):
    too_big = np.random.default_rng(0).integers(0, 256, DEFAULT_MAX_BODY_BYTES + 1, dtype=np.uint8).tobytes()
    result = call("POST", "/search", body=too_big, content_type="image/jpeg")
    assert_error(result, 413, "body_too_large")
    assert "/uploads" in result[2]["error"]["message"]


# -- auth -------------------------------------------------------------------------

PROTECTED = [("POST", "/search"), ("POST", "/compare"), ("POST", "/uploads"),
             ("GET", f"/images/{uuid.uuid4()}"), ("DELETE", f"/images/{uuid.uuid4()}")]


@pytest.mark.parametrize("method,path", PROTECTED)
def test_protected_routes_need_the_right_key(call, method, path):
    body = json_body({"key": "photos/x.jpg"})
    assert_error(call(method, path, body=body, content_type="application/json", api_key=None), 401,
                 "missing_api_key")
    assert_error(call(method, path, body=body, content_type="application/json", api_key=API_KEY + "x"), 401,
                 "invalid_api_key")
    assert_error(call(method, path, body=body, content_type="application/json", api_key=""), 401,
                 "missing_api_key")
    status, _, _ = call(method, path, body=body, content_type="application/json")
    assert status != 401


@pytest.mark.parametrize("method,path", [("GET", "/health"), ("GET", "/"), ("GET", "/openapi.json")])
def test_public_routes_ignore_a_wrong_key(call, method, path):
    assert call(method, path, api_key="wrong")[0] == 200


def test_no_key_configured_is_503_never_open(call, run_with):
    run_with({"IMGSIM_API_KEY": None})
    assert_error(call("POST", "/search", body=json_body({"key": "k"}), content_type="application/json"), 503,
                 "not_configured")
    assert_error(call("POST", "/uploads", api_key=None), 503, "not_configured")
    assert call("GET", "/health", api_key=None)[0] == 200


def test_key_from_ssm_parameter(call, run_with, indexed):
    name = f"/imgsim/test/api-key-{uuid.uuid4().hex[:8]}"
    boto3.client("ssm").put_parameter(Name=name, Value="from-ssm-key", Type="SecureString")
    run_with({"IMGSIM_API_KEY": None, "IMGSIM_API_KEY_PARAM": name})
    item = next(iter(indexed.values()))
    request = {"body": json_body({"id": item.id}), "content_type": "application/json"}
    assert call("POST", "/search", **request, api_key="from-ssm-key")[0] == 200
    assert_error(call("POST", "/search", **request, api_key=API_KEY), 401, "invalid_api_key")
    # A parameter that does not exist holds no key: with no other key, the API is not configured, never open.
    run_with({"IMGSIM_API_KEY": None, "IMGSIM_API_KEY_PARAM": name + "-missing"})
    result = call("POST", "/search", **request, api_key="from-ssm-key")
    assert_error(result, 503, "not_configured")


def test_scoped_keys_from_the_ring_parameter(call, run_with, indexed):
    """The key ring in SSM (as deployed): each key works for its scopes only, the legacy key beside it."""
    name = f"/imgsim/test/api-keys-{uuid.uuid4().hex[:8]}"
    ring = {"keys": [{"name": "reader", "sha256": hash_key("reader-key"), "scopes": ["search"]},
                     {"name": "cleaner", "sha256": hash_key("cleaner-key"), "scopes": ["delete"]}]}
    boto3.client("ssm").put_parameter(Name=name, Value=json.dumps(ring), Type="SecureString")
    run_with({"IMGSIM_API_KEYS_PARAM": name})
    item = next(iter(indexed.values()))
    request = {"body": json_body({"id": item.id}), "content_type": "application/json"}
    assert call("POST", "/search", **request, api_key="reader-key")[0] == 200
    assert call("POST", "/search", **request, api_key=API_KEY)[0] == 200  # the legacy key: every scope
    result = call("POST", "/search", **request, api_key="cleaner-key")
    assert_error(result, 403, "missing_scope")
    assert "'cleaner' lacks the 'search' scope" in result[2]["error"]["message"]
    assert_error(call("DELETE", f"/images/{item.id}", api_key="reader-key"), 403, "missing_scope")
    assert_error(call("POST", "/search", **request, api_key="reader-key-2"), 401, "invalid_api_key")
    status, _, me = call("GET", "/me", api_key="reader-key")
    assert status == 200 and me == {"name": "reader", "tenant": None, "scopes": ["search"], "via": "key",
                                    "max_upload_bytes": 25 * 1024 * 1024, "images": len(indexed)}


# -- presigned URLs ---------------------------------------------------------------


def test_result_urls_are_presigned_gets_that_fetch_the_object(call, indexed):
    item = list(indexed.values())[5]
    status, _, body = call("POST", "/search", body=item.data, content_type="image/jpeg", query={"limit": 2})
    assert status == 200
    url = body["results"][0]["url"]
    parsed = urlparse(url)
    params = parse_qs(parsed.query)
    assert parsed.scheme == "https" and BUCKET in parsed.netloc + parsed.path
    assert parsed.path.endswith("/" + item.key)
    assert params["X-Amz-Expires"] == ["900"] and "X-Amz-Signature" in params
    fetched = requests.get(url, timeout=10)  # moto intercepts requests' calls to S3
    assert fetched.status_code == 200 and fetched.content == item.data


# -- POST /compare ------------------------------------------------------------------


def test_compare_body_forms(call, indexed, embedder):
    items = list(indexed.values())
    a, b = items[0].data, items[-1].data
    expected = float(np.clip(embedder.embed(a) @ embedder.embed(b), 0, 1))
    form_body, form_type = encode_multipart_formdata({"a": ("a.jpg", a, "image/jpeg"), "b": ("b.jpg", b, "image/jpeg")})
    for body, content_type in ((form_body, form_type), (json_body({"a": b64(a), "b": b64(b)}), "application/json")):
        status, _headers, result = call("POST", "/compare", body=body, content_type=content_type)
        assert status == 200, result
        assert result["score"] == pytest.approx(expected, abs=1e-5)
        assert result["percent"] == round(100 * result["score"], 1)
        assert result["model"] == embedder.model_name
    status, _, same = call("POST", "/compare", body=json_body({"a": b64(a), "b": b64(a)}),
                           content_type="application/json")
    assert status == 200 and same["percent"] == 100.0


def test_compare_bad_bodies(call, indexed):
    jpeg = next(iter(indexed.values())).data
    form_body, form_type = encode_multipart_formdata({"a": ("a.jpg", jpeg, "image/jpeg")})
    assert_error(call("POST", "/compare", body=form_body, content_type=form_type), 400, "bad_parameter")
    assert_error(call("POST", "/compare", body=json_body({"a": b64(jpeg)}), content_type="application/json"), 400,
                 "bad_parameter")
    assert_error(call("POST", "/compare", body=json_body({"a": b64(jpeg), "b": b64(b"GIF89a junk")}),
                      content_type="application/json"), 400, "corrupt_image")
    assert_error(call("POST", "/compare", body=jpeg, content_type="image/jpeg"), 415, "unsupported_media_type")
    assert_error(call("POST", "/compare", body=None, content_type="application/json"), 400, "empty_body")


# -- POST /uploads ------------------------------------------------------------------


def test_upload_presigned_post_works_and_gives_the_future_id(call):
    status, _, body = call("POST", "/uploads", body=json_body({"filename": "../My Holiday (1).JPG",
                                                               "content_type": "image/jpeg"}),
                           content_type="application/json")
    assert status == 200, body
    assert body["method"] == "POST" and body["fields"]["Content-Type"] == "image/jpeg"
    assert body["max_bytes"] == 25 * 1024 * 1024
    assert body["expires_in"] == 900 and body["bucket"] == BUCKET
    key = body["key"]
    assert key.startswith("uploads/") and key.endswith("-My_Holiday_1_.JPG") and "/" not in key[len("uploads/"):]
    assert body["fields"]["key"] == key
    assert body["id"] == point_id_for_object(BUCKET, key)
    data = b"\xff\xd8\xff fake jpeg bytes"
    # The browser's form: the fields as given, the file last (moto stores it; it checks no policy, the local
    # stack's tests/test_local_stack.py and tests/unit/test_post_policy.py cover that).
    post = requests.post(body["url"], data=body["fields"], files={"file": ("dog.jpg", data, "image/jpeg")}, timeout=10)
    assert post.status_code == 204, post.text
    stored = boto3.client("s3").get_object(Bucket=BUCKET, Key=key)
    assert stored["Body"].read() == data and stored["ContentType"] == "image/jpeg"  # the form's Content-Type
    second = call("POST", "/uploads", body=json_body({"filename": "x.png", "content_type": "image/png"}),
                  content_type="application/json")[2]
    assert second["key"] != key and second["fields"]["Content-Type"] == "image/png"


def test_upload_bad_requests(call):
    def upload(obj):
        return call("POST", "/uploads", body=json_body(obj), content_type="application/json")

    assert_error(upload({"filename": "a.txt", "content_type": "text/plain"}), 415, "unsupported_media_type")
    assert_error(upload({"filename": "a.svg", "content_type": "image/svg+xml"}), 415, "unsupported_media_type")
    assert_error(upload({"content_type": "image/jpeg"}), 400, "bad_parameter")
    assert_error(upload({"filename": "a.jpg"}), 400, "bad_parameter")
    assert_error(call("POST", "/uploads", body=b"nope", content_type="application/json"), 400, "bad_json")


# -- /images/{id} -------------------------------------------------------------------


def test_get_image(call, indexed):
    item = list(indexed.values())[2]
    status, _, body = call("GET", f"/images/{item.id}")
    assert status == 200, body
    assert body["id"] == item.id and body["key"] == item.key and body["bucket"] == BUCKET
    assert body["size"] == len(item.data) and body["content_type"] == "image/jpeg" and "dirs" not in body
    assert requests.get(body["url"], timeout=10).content == item.data
    assert_error(call("GET", f"/images/{uuid.uuid4()}"), 404, "not_found")
    assert_error(call("GET", "/images/not-a-uuid"), 400, "bad_parameter")


def test_delete_image_moves_it_to_the_trash(call, search_root, indexed):
    s3 = boto3.client("s3")
    key = "photos/to-delete.jpg"
    data = next(iter(indexed.values())).data
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    embedder, store = search_root.embedder(), search_root.store()
    point_id = point_id_for_object(BUCKET, key)
    image = embedder.decode(data)
    store.upsert([StoredPoint(point_id, embedder.embed_decoded([image])[0],
                              image_payload(key=key, image=image, size=len(data), model=embedder.model_name,
                                            bucket=BUCKET))])
    status, _, body = call("DELETE", f"/images/{point_id}")
    assert status == 200, body
    assert {k: body[k] for k in ("id", "bucket", "key", "status")} == {
        "id": point_id, "bucket": BUCKET, "key": key, "status": "trashed"}
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=key)["KeyCount"] == 0
    assert store.get(point_id) is None  # out of search at once, not when the indexer hears of it
    stashed = s3.list_objects_v2(Bucket=BUCKET, Prefix=".trash/")["Contents"]
    assert [o["Key"] for o in stashed if o["Key"].endswith(key)] and body["trash_id"]
    assert_error(call("DELETE", f"/images/{point_id}"), 404, "not_found")
    assert_error(call("DELETE", "/images/12"), 400, "bad_parameter")


def test_delete_refuses_points_without_an_object_here(call, search_root):
    embedder, store = search_root.embedder(), search_root.store()
    vector = np.zeros(embedder.dim, dtype=np.float32)
    vector[0] = 1.0
    local_id, other_id = str(uuid.uuid4()), point_id_for_object("other-bucket", "a.jpg")
    store.upsert([StoredPoint(local_id, vector, {"source": "file", "key": "/home/me/a.jpg", "dirs": []}),
                  StoredPoint(other_id, vector, {"source": "s3", "bucket": "other-bucket", "key": "a.jpg",
                                                 "dirs": []})])
    try:
        assert_error(call("DELETE", f"/images/{local_id}"), 409, "not_deletable")
        assert_error(call("DELETE", f"/images/{other_id}"), 409, "not_deletable")
        assert call("GET", f"/images/{local_id}")[2]["url"] is None
    finally:
        store.delete([local_id, other_id])


# -- failures -------------------------------------------------------------------------


class _StoresOn(_Borrowed):
    """A catalog whose aliases resolve, but whose stores are another catalog's."""

    def __init__(self, catalog, stores) -> None:
        super().__init__(catalog)
        self._stores = stores

    def open_store(self, collection, *, dim, options=None):
        return self._stores.open_store(collection, dim=dim, options=options)


@pytest.fixture
def unreachable_store(run_with, search_root):
    """The services with a Qdrant server that refuses connections (a closed local port): the function was warm
    (the alias resolved, the model loaded), then every call to its store fails."""
    from imgsim.settings import Settings
    from imgsim.store import open_catalog

    down = open_catalog(Settings(qdrant_url="http://127.0.0.1:9", qdrant_retries=1, qdrant_timeout=1))
    run_with({}, catalogs=lambda _settings: _StoresOn(search_root.catalog(), down))
    yield
    down.close()


def test_qdrant_unreachable_is_503_with_retry_after(call, indexed, unreachable_store):
    item = next(iter(indexed.values()))
    for result in (call("POST", "/search", body=item.data, content_type="image/jpeg"),
                   call("GET", f"/images/{item.id}")):
        assert_error(result, 503, "store_unavailable")
        assert result[1]["retry-after"] == "5"
    status, headers, body = call("GET", "/health", api_key=None)
    assert status == 503 and headers["retry-after"] == "5"
    assert body["status"] == "unavailable" and body["error"]["code"] == "store_unavailable"


def test_unexpected_errors_are_500_without_internals(call, search_app, indexed, monkeypatch):
    service = search_app.services().search

    def explode(*args, **kwargs):
        raise RuntimeError("secret internals at /opt/python/imgsim")

    monkeypatch.setattr(type(service), "search", explode)  # the class: a request's services are its tenant's view
    result = call("POST", "/search", body=json_body({"id": next(iter(indexed.values())).id}),
                  content_type="application/json")
    assert_error(result, 500, "internal_error")
    assert "secret" not in json.dumps(result[2])


def test_unknown_route_is_json_404(call):
    assert_error(call("GET", "/nope"), 404, "not_found")
    assert_error(call("PUT", "/search", body=b"{}", content_type="application/json"), 404, "not_found")


# -- CORS ---------------------------------------------------------------------------


def test_cors_preflight_and_headers(call, indexed):
    status, headers, _ = call("OPTIONS", "/search", api_key=None, headers={
        "origin": ORIGIN, "access-control-request-method": "POST",
        "access-control-request-headers": "x-api-key,content-type"})
    assert status == 204
    assert headers["access-control-allow-origin"] == ORIGIN
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert {"x-api-key", "content-type"} <= allowed
    assert "POST" in headers["access-control-allow-methods"]
    item = next(iter(indexed.values()))
    status, headers, _ = call("POST", "/search", body=item.data, content_type="image/jpeg",
                              headers={"origin": ORIGIN})
    assert status == 200 and headers["access-control-allow-origin"] == ORIGIN
    # Errors carry CORS headers too, or the browser hides them from the page.
    status, headers, _ = call("POST", "/search", body=item.data, content_type="image/jpeg", api_key=None,
                              headers={"origin": ORIGIN})
    assert status == 401 and headers["access-control-allow-origin"] == ORIGIN
    # The configured origin is the one allowed (the import saw IMGSIM_CORS_ORIGIN, not the default "*").
    status, headers, _ = call("POST", "/search", body=item.data, content_type="image/jpeg",
                              headers={"origin": "https://elsewhere.example"})
    assert status == 200 and "access-control-allow-origin" not in headers


# -- the sample events (sam local invoke) and the event builder --------------------

EVENTS_DIR = REPO_ROOT / "events"
SAMPLE_EVENTS = ["search.json", "search_by_key.json", "health.json", "compare.json", "upload.json"]


@pytest.mark.parametrize("name", SAMPLE_EVENTS)
def test_sample_events_are_http_api_v2_events(name):
    from aws_lambda_powertools.utilities.parser.models import (
        APIGatewayProxyEventV2Model,
    )

    event = json.loads((EVENTS_DIR / name).read_text())
    parsed = APIGatewayProxyEventV2Model.model_validate(event)
    assert parsed.version == "2.0" and parsed.requestContext.http.method in {"GET", "POST"}
    assert all(header == header.lower() for header in event["headers"])


def test_event_builder_matches_aws_conventions():
    from aws_lambda_powertools.utilities.parser.models import (
        APIGatewayProxyEventV2Model,
    )

    event = http_api_event("POST", "/search", query="limit=5&prefix=a&prefix=b",
                           headers={"Content-Type": "image/png", "X-Api-Key": "k", "Cookie": "a=1; b=2"},
                           body=b"\x89PNG\r\n")
    APIGatewayProxyEventV2Model.model_validate(event)
    assert event["rawQueryString"] == "limit=5&prefix=a&prefix=b"
    assert event["queryStringParameters"] == {"limit": "5", "prefix": "a,b"}
    assert event["headers"]["content-type"] == "image/png" and event["headers"]["x-api-key"] == "k"
    assert event["cookies"] == ["a=1", "b=2"] and "cookie" not in event["headers"]
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == b"\x89PNG\r\n"
    text = http_api_event("POST", "/uploads", headers={"content-type": "application/json"}, body='{"a": 1}')
    assert text["isBase64Encoded"] is False and text["body"] == '{"a": 1}'
    assert "body" not in http_api_event("GET", "/health")


def test_sample_events_run_against_the_handler(call, search_app, search_root, indexed, photos):
    """The events in events/ (for `sam local invoke`) do what their names say, with IMGSIM_API_KEY=local-dev-key."""
    s3, embedder, store = boto3.client("s3"), search_root.embedder(), search_root.store()
    keys = {"photos/cats/photo 00000.jpg": photos[0], "photos/dogs/photo 00900.jpg": photos[900]}
    points = []
    for key, path in keys.items():
        data = path.read_bytes()
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        image = embedder.decode(data)
        points.append(StoredPoint(point_id_for_object(BUCKET, key), embedder.embed_decoded([image])[0],
                                  image_payload(key=key, image=image, size=len(data), model=embedder.model_name,
                                                bucket=BUCKET)))
    store.upsert(points)
    try:
        results = {}
        for name in SAMPLE_EVENTS:
            response = search_app.handler(json.loads((EVENTS_DIR / name).read_text()), LambdaContext())
            assert response["statusCode"] == 200, (name, response["body"])
            results[name] = json.loads(response["body"])
        # The same photo may be indexed under other keys too (the `indexed` fixture): those tie at
        # score 1.0 in no defined order, so check the key is among the perfect matches.
        found = results["search.json"]["results"]
        assert found[0]["percent"] == 100.0
        assert "photos/cats/photo 00000.jpg" in {r["key"] for r in found if r["score"] >= 0.9999}
        by_key = results["search_by_key.json"]["results"]
        assert by_key and all(r["key"].startswith("photos/") and r["key"] != "photos/cats/photo 00000.jpg"
                              for r in by_key)
        assert results["health.json"]["status"] == "ok"
        assert 0 <= results["compare.json"]["percent"] < 100
        assert results["upload.json"]["key"].endswith("-my_cat.jpg")
    finally:
        store.delete([p.id for p in points])
        for key in keys:
            s3.delete_object(Bucket=BUCKET, Key=key)


def test_s3_refusal_is_502_without_internals(call, run_with):
    """S3 answering with an error (here: the bucket is gone) is the storage's failure, not the caller's."""
    root = run_with({"IMAGES_BUCKET": "imgsim-gone"})
    embedder, store = root.embedder(), root.store()
    vector = np.zeros(embedder.dim, dtype=np.float32)
    vector[1] = 1.0
    point_id = point_id_for_object("imgsim-gone", "photos/a.jpg")
    store.upsert([StoredPoint(point_id, vector, {"source": "s3", "bucket": "imgsim-gone", "key": "photos/a.jpg",
                                                 "dirs": ["photos/"]})])
    try:
        result = call("DELETE", f"/images/{point_id}")
        assert_error(result, 502, "storage_error")
        assert "NoSuchBucket" not in json.dumps(result[2])
    finally:
        store.delete([point_id])


# -- no 5xx from any request (property-based) ------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
# Bodies shaped like each route's JSON, with any value where a field goes.
SHAPED_JSON = st.fixed_dictionaries({}, optional={
    name: JSON_VALUES | st.text(max_size=80) for name in ("image", "id", "key", "a", "b", "filename", "content_type")
})
CONTENT_TYPES = st.sampled_from([
    "application/json", "image/jpeg", "image/png", "multipart/form-data", "multipart/form-data; boundary=x",
    "multipart/form-data; boundary=", "text/plain", "application/json; charset=latin-1", "",
]) | st.text(max_size=60)


def any_body() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=600),
        SHAPED_JSON.map(lambda obj: json.dumps(obj).encode()),
        JSON_VALUES.map(lambda obj: json.dumps(obj).encode()),
        st.builds(lambda boundary, name, data: (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"f\"\r\n\r\n".encode()
            + data + f"\r\n--{boundary}--\r\n".encode()), st.text("abcXYZ-_0123", min_size=1, max_size=20),
            st.sampled_from(["image", "a", "b", "x", ""]), st.binary(max_size=200)),
    )


@pytest.mark.parametrize("body", [
    b'{"id": ' + b"9" * 5000 + b"}",  # past Python's int conversion limit
    b"[" * 100_000,  # past the recursion limit
    b'{"filename": ' + b"1" * 5000 + b', "content_type": "image/jpeg"}',
    b"\xff\xfe{}",
])
def test_pathological_json_is_400_bad_json(call, body):
    for path in ("/search", "/compare", "/uploads"):
        assert_error(call("POST", path, body=body, content_type="application/json"), 400, "bad_json")


@settings(max_examples=300, deadline=None)
@given(content_type=st.none() | CONTENT_TYPES, body=any_body())
def test_body_parsers_answer_4xx_or_parse(content_type, body):
    """Every parser, any content type and body: parsed, or an imgsim error the API answers below 500."""
    for parse in (parse_search_body, parse_compare_body):
        try:
            parse(content_type, body, 4_500_000)
        except ImgsimError as exc:
            answer = problem(exc)
            assert answer is not None and answer.status < 500, exc
    try:
        json_object(body)
    except ImgsimError as exc:
        answer = problem(exc)
        assert answer is not None and answer.status == 400 and answer.code == "bad_json"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from([("POST", "/search"), ("POST", "/compare"), ("POST", "/uploads"), ("GET", "/images/{}"),
                           ("DELETE", "/images/{}"), ("GET", "/health"), ("GET", "/openapi.json"),
                           ("POST", "/recommend"), ("GET", "/duplicates"), ("POST", "/duplicates/resolve")]),
    path_value=st.text(max_size=60),
    query=st.dictionaries(st.sampled_from(["limit", "min_score", "prefix", "other", "offset", "min_width",
                                           "content_type", "indexed_after", "indexed_before", "collapse",
                                           "similar_threshold", "threshold", "cursor"]),
                          st.text(max_size=30), max_size=4),
    content_type=st.none() | CONTENT_TYPES,
    body=st.none() | any_body(),
)
def test_no_request_gets_a_5xx(call, route, path_value, query, content_type, body):
    method, path = route
    path = path.format(quote(path_value, safe="") or "x")
    text = body.decode("latin-1") if body is not None else None
    status, headers, parsed = call(method, path, body=text, content_type=content_type, query=query or None)
    assert status < 500, (method, path, query, content_type, body, parsed)
    if status >= 400:
        assert headers["content-type"].startswith("application/json") and "error" in parsed


# -- HEIC and AVIF (phones, modern browsers) ---------------------------------------------------


def test_heic_and_avif_queries_find_the_same_photo(call, indexed):
    import io

    import pillow_heif
    from PIL import Image

    item = next(iter(indexed.values()))
    img = Image.open(io.BytesIO(item.data)).convert("RGB")
    encoded = io.BytesIO()
    pillow_heif.from_pillow(img).save(encoded, quality=90)
    heic_bytes = encoded.getvalue()
    encoded = io.BytesIO()
    img.save(encoded, "AVIF", quality=90)
    for data, content_type in ((heic_bytes, "image/heic"), (encoded.getvalue(), "image/avif")):
        status, _, body = call("POST", "/search", body=data, content_type=content_type)
        assert status == 200, body
        assert body["results"][0]["id"] == item.id and body["results"][0]["percent"] >= 99.0
    for content_type in ("image/heic", "image/heif", "image/avif"):
        status, _, body = call("POST", "/uploads", body=json_body({"filename": "IMG_0001.HEIC", "content_type": content_type}),
                               content_type="application/json")
        assert status == 200 and body["fields"]["Content-Type"] == content_type, body
    # A truncated HEIC is the client's error, with the API's error shape.
    assert_error(call("POST", "/search", body=heic_bytes[: len(heic_bytes) // 2], content_type="image/heic"),
                 400, "corrupt_image")
