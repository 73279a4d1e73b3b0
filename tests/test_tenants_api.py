"""Tenants are isolated on every route: each operation of the OpenAPI document, called by another tenant with a key
holding every scope, answers about acme's images exactly as about images nobody has (the same status, code and
message but for the id), and lists none of them.

The walk is built from the document (GET /openapi.json), so a route added without a case here fails
``test_every_operation_has_an_isolation_case``. Images are indexed by the real indexer from moto S3 under
``tenants/acme/`` and ``tenants/globex/`` and outside ``tenants/`` (the same photo and a mirrored copy in each);
the callers are globex (a tenant with images of its own), initech (a tenant with none) and a key of no tenant.
The last test does the same end to end through ``imgsim serve``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from imgsim.access import hash_key
from imgsim.ids import point_id_for_object
from imgsim.pipeline import build
from imgsim.settings import IndexSettings
from imgsim_tools.events import http_api_event
from PIL import Image, ImageOps
from support import lambda_context, search_app_on_moto
from test_curation_api import jpeg
from test_indexing import s3_body

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

BUCKET = "imgsim-images"
PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "photos"
ADMIN = "admin-key"  # the legacy IMGSIM_API_KEY: every scope, no tenant
KEYS = {tenant: f"{tenant}-key-with-every-scope" for tenant in ("acme", "globex", "initech", "nobody")}
PUBLIC = {("/health", "get"), ("/", "get"), ("/openapi.json", "get")}
ABSENT = {"a": "00000000-0000-4000-8000-00000000000a", "mirror": "00000000-0000-4000-8000-00000000000b",
          "trash": "00000000-0000-4000-8000-00000000000c", "key": "tenants/acme/nothing.jpg"}


def key_ring() -> str:
    entries = []
    for tenant, key in KEYS.items():
        entry: dict[str, Any] = {"name": tenant, "sha256": hash_key(key), "scopes": ["search", "upload", "delete"]}
        if tenant != "nobody":
            entry["tenant"] = tenant
        entries.append(entry)
    return json.dumps({"keys": entries})


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    variables = {"IMGSIM_API_KEY": ADMIN, "IMGSIM_API_KEYS": key_ring(), "QDRANT_COLLECTION": "tenants"}
    with search_app_on_moto(tmp_path_factory.mktemp("root"), "imgsim_search_app_tenants", BUCKET,
                            variables) as module:
        yield module


Call = Callable[..., tuple[int, Any]]


def caller(app, key: str) -> Call:
    def call(method: str, path: str, *, body: object = None, query: dict | None = None, raw: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        event = http_api_event(method, path, query=query, headers={"x-api-key": key, "content-type": content_type},
                               body=data)
        response = app.handler(event, lambda_context("imgsim-search", timeout_s=29))
        text = response.get("body") or ""
        if response.get("isBase64Encoded"):
            text = base64.b64decode(text).decode()
        return response["statusCode"], json.loads(text) if text else None

    return call


@pytest.fixture(scope="module")
def library(app) -> dict[str, str]:
    """``"<owner>/<name>"`` -> id, and acme's trash entry as ``"acme/trash"``."""
    s3 = boto3.client("s3")
    root = app.root()
    indexer = build(store=root.store(), embedder=root.embedder(), s3=s3,
                    options=IndexSettings(duplicate_threshold=0.74))
    photo = Image.open(PHOTOS / "photo_00100.jpg").convert("RGB")
    w, h = photo.size
    pictures = {"a": jpeg(photo), "mirror": jpeg(ImageOps.mirror(photo).resize((w * 4 // 5, h * 4 // 5))),
                "other": (PHOTOS / "photo_00700.jpg").read_bytes()}
    ids: dict[str, str] = {}
    for owner, folder in (("acme", "tenants/acme/"), ("globex", "tenants/globex/"), ("nobody", "shared/")):
        for name, data in pictures.items():
            key = f"{folder}{name}.jpg"
            etag = s3.put_object(Bucket=BUCKET, Key=key, Body=data, ContentType="image/jpeg")["ETag"].strip('"')
            report = indexer.process_messages([(key, s3_body(key, size=len(data), etag=etag))])
            assert report.count("indexed") == 1, report.outcomes
            ids[f"{owner}/{name}"] = point_id_for_object(BUCKET, key)
    status, trashed = caller(app, KEYS["acme"])("DELETE", f"/images/{ids['acme/other']}")
    assert status == 200, trashed
    ids["acme/trash"] = trashed["trash_id"]
    ids["acme/key"] = "tenants/acme/a.jpg"
    return ids


@pytest.fixture(scope="module")
def document(app) -> dict[str, Any]:
    response = app.app.resolve(http_api_event("GET", "/openapi.json"), {})
    return json.loads(response["body"])


def operations(document) -> set[tuple[str, str]]:
    return {(path, method) for path, item in document["paths"].items() for method in item
            if method in ("get", "post", "put", "patch", "delete")}


# -- the checks -------------------------------------------------------------------------------------------------------


class Walk:
    """One caller's view of acme's images (``target``) against images nobody has (``ABSENT``)."""

    def __init__(self, call: Call, library: dict[str, str], tenant: str | None) -> None:
        self.call = call
        self.tenant = tenant
        self.target = {name: library[f"acme/{name}"] for name in ("a", "mirror", "trash", "key")}
        self.acme = {v for k, v in library.items() if k.startswith("acme/")} | {"tenants/acme/"}

    def as_absent(self, method: str, path: str, **request: Any) -> None:
        """The request about acme's images answers exactly as the same request about absent ones: a 404."""
        def fill(value: Any, names: dict[str, str]) -> Any:
            return json.loads(json.dumps(value).replace("{", "{{").replace("}", "}}")
                              .replace("<", "{").replace(">", "}").format(**names)) if value is not None else None

        answers = []
        for names in (self.target, ABSENT):
            filled = {k: fill(v, names) for k, v in request.items()}
            answers.append(self.call(method, fill(path, names), **filled))
        (hidden_status, hidden), (absent_status, absent) = answers
        text = json.dumps(hidden)
        for name, value in self.target.items():
            text = text.replace(value, ABSENT[name])
        assert (hidden_status, json.loads(text)) == (absent_status, absent) and absent_status == 404, (
            method, path, request, answers)

    def leaks_nothing(self, body: Any) -> None:
        text = json.dumps(body)
        leaked = [value for value in self.acme if value in text]
        assert not leaked, f"another tenant's images in the answer: {leaked}"


def search(walk: Walk) -> None:
    walk.as_absent("POST", "/search", body={"id": "<a>"})
    walk.as_absent("POST", "/search", body={"key": "<key>"})
    walk.as_absent("POST", "/search", body={"id": "<a>"}, query={"box": "0.1,0.1,0.5,0.5", "collapse": "true"})
    status, found = walk.call("POST", "/search", raw=(PHOTOS / "photo_00100.jpg").read_bytes(),
                              content_type="image/jpeg", query={"limit": "100", "collapse": "true"})
    assert status == 200
    walk.leaks_nothing(found)
    if walk.tenant == "initech":
        assert found["results"] == []


def compare(walk: Walk) -> None:
    """Bytes only: nothing stored is read, so there is nothing to isolate (and no id to give)."""
    photo = base64.b64encode((PHOTOS / "photo_00100.jpg").read_bytes()).decode()
    status, body = walk.call("POST", "/compare", body={"a": photo, "b": photo})
    assert status == 200 and set(body) == {"score", "percent", "model", "took_ms"}


def recommend(walk: Walk) -> None:
    walk.as_absent("POST", "/recommend", body={"positive": ["<a>"]})
    walk.as_absent("POST", "/recommend", body={"positive": ["<key>"]})
    walk.as_absent("POST", "/recommend", body={"positive": ["<a>"], "negative": ["<mirror>"]})


def get_image(walk: Walk) -> None:
    walk.as_absent("GET", "/images/<a>")


def delete_image(walk: Walk) -> None:
    walk.as_absent("DELETE", "/images/<a>")


def duplicates(walk: Walk) -> None:
    for query in (None, {"cursor": walk.target["a"]}, {"cursor": walk.target["mirror"], "limit": "1"},
                  {"prefix": "tenants/acme/"}):
        status, page = walk.call("GET", "/duplicates", query=query)
        assert status == 200
        walk.leaks_nothing(page)
        if walk.tenant == "initech" or query == {"prefix": "tenants/acme/"}:
            assert page["groups"] == [] and page["next_cursor"] is None


def resolve(walk: Walk) -> None:
    walk.as_absent("POST", "/duplicates/resolve", body={"keep": "<a>", "remove": ["<mirror>"]})
    walk.as_absent("POST", "/duplicates/resolve", body={"keep": "<a>", "not_duplicates": ["<mirror>"]})


def trash(walk: Walk) -> None:
    status, page = walk.call("GET", "/trash")
    assert status == 200
    walk.leaks_nothing(page)
    if walk.tenant != "acme":
        assert page["items"] == [] and page["next_cursor"] is None


def restore(walk: Walk) -> None:
    walk.as_absent("POST", "/trash/<trash>/restore")


def upload(walk: Walk) -> None:
    status, body = walk.call("POST", "/uploads", body={"filename": "../../tenants/acme/x.jpg",
                                                       "content_type": "image/jpeg"})
    assert status == 200, body
    folder = f"tenants/{walk.tenant}/" if walk.tenant else ""
    assert body["key"].startswith(f"{folder}uploads/") and body["key"].endswith("-x.jpg")
    assert body["id"] == point_id_for_object(BUCKET, body["key"])


def me(walk: Walk) -> None:
    status, body = walk.call("GET", "/me")
    assert status == 200 and body["tenant"] == walk.tenant


CASES: dict[tuple[str, str], Callable[[Walk], None]] = {
    ("/search", "post"): search,
    ("/compare", "post"): compare,
    ("/recommend", "post"): recommend,
    ("/images/{id}", "get"): get_image,
    ("/images/{id}", "delete"): delete_image,
    ("/duplicates", "get"): duplicates,
    ("/duplicates/resolve", "post"): resolve,
    ("/trash", "get"): trash,
    ("/trash/{id}/restore", "post"): restore,
    ("/uploads", "post"): upload,
    ("/me", "get"): me,
}


def test_every_operation_has_an_isolation_case(document):
    protected = {op for op in operations(document) if document["paths"][op[0]][op[1]].get("security")}
    assert operations(document) - protected == PUBLIC, "only the page, /health and /openapi.json are public"
    assert protected == set(CASES), f"routes without a tenant isolation case: {sorted(protected - set(CASES))}"


@pytest.mark.parametrize("tenant", ["initech", "globex", "nobody"])
def test_another_tenant_sees_acmes_images_nowhere(app, library, document, tenant):
    walk = Walk(caller(app, KEYS[tenant]), library, None if tenant == "nobody" else tenant)
    for operation in sorted(operations(document) - PUBLIC):
        CASES[operation](walk)
    # Nothing anyone else did touched acme's images.
    acme = caller(app, KEYS["acme"])
    for name in ("a", "mirror"):
        status, shown = acme("GET", f"/images/{library[f'acme/{name}']}")
        assert status == 200 and shown["tenant"] == "acme"
    status, page = acme("GET", "/trash")
    assert [item["id"] for item in page["items"]] == [library["acme/trash"]]


def test_each_tenant_sees_its_own_images_and_duplicates(app, library):
    for tenant, folder in (("acme", "tenants/acme/"), ("globex", "tenants/globex/"), ("nobody", "shared/")):
        call = caller(app, KEYS[tenant])
        status, found = call("POST", "/search", raw=(PHOTOS / "photo_00100.jpg").read_bytes(),
                             content_type="image/jpeg", query={"limit": "100"})
        assert status == 200 and found["results"] and all(r["key"].startswith(folder) for r in found["results"])
        status, page = call("GET", "/duplicates")
        (group,) = page["groups"]  # the photo and its mirror: a duplicate within the tenant, never across
        assert {m["id"] for m in group["members"]} == {library[f"{tenant}/a"], library[f"{tenant}/mirror"]}


def test_health_is_public_and_counts_nothing_each_caller_counts_its_own(app, library):
    status, health = caller(app, "")("GET", "/health")
    assert status == 200 and health["status"] == "ok" and "points" not in health
    # 3 photos each (initech none); one of acme's is in the trash.
    assert {who: caller(app, key)("GET", "/me")[1]["images"] for who, key in KEYS.items()} == {
        "acme": 2, "globex": 3, "initech": 0, "nobody": 3}


@pytest.mark.slow
def test_end_to_end_through_the_local_stack(tmp_path):
    """Objects put in S3 under tenants/acme/ are indexed into acme and found only with an acme key."""
    from serve_support import API_KEY, Serve, wait_until

    serve = Serve(tmp_path / "data", env={"IMGSIM_API_KEYS": key_ring()})
    try:
        serve.wait_ready()
        data = (PHOTOS / "photo_00100.jpg").read_bytes()
        s3 = serve.s3()
        for key in ("tenants/acme/cat.jpg", "tenants/cat.jpg", "shared/cat.jpg"):
            s3.put_object(Bucket=BUCKET, Key=key, Body=data, ContentType="image/jpeg")
        acme_id, shared_id = (point_id_for_object(BUCKET, k) for k in ("tenants/acme/cat.jpg", "shared/cat.jpg"))
        wait_until(lambda: serve.request("GET", f"/images/{acme_id}", key=KEYS["acme"])[0] == 200, timeout=60,
                   what="acme's image to be indexed")
        wait_until(lambda: serve.request("GET", f"/images/{shared_id}", key=API_KEY)[0] == 200, timeout=60,
                   what="the untenanted image to be indexed")
        wait_until(lambda: "not_in_a_tenant" in serve.stdout() + serve.stderr(), timeout=60,
                   what="the object directly under tenants/ to be skipped")
        found = {}
        for name, key in (("acme", KEYS["acme"]), ("globex", KEYS["globex"]), ("admin", API_KEY)):
            status, body = serve.request("POST", "/search?limit=10", data, content_type="image/jpeg", key=key)
            assert status == 200, body
            found[name] = [r["key"] for r in body["results"]]
        assert found == {"acme": ["tenants/acme/cat.jpg"], "globex": [], "admin": ["shared/cat.jpg"]}
        status, shown = serve.request("GET", f"/images/{acme_id}", key=KEYS["acme"])
        assert shown["tenant"] == "acme"
        hidden = serve.request("GET", f"/images/{acme_id}", key=KEYS["globex"])
        absent = serve.request("GET", f"/images/{ABSENT['a']}", key=KEYS["globex"])
        assert hidden[0] == absent[0] == 404
        assert json.loads(json.dumps(hidden[1]).replace(acme_id, ABSENT["a"])) == absent[1]
    finally:
        serve.stop()
        serve.kill()
