"""Duplicates, resolving, recommendations, and the search filters/paging/collapse, through SearchFunction's
handler with HTTP API events, on images indexed by the real indexer (moto S3, embedded Qdrant)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import boto3
import pytest
from imgsim.ids import point_id_for_object
from imgsim.pipeline import build
from imgsim.settings import IndexSettings
from imgsim_tools.events import http_api_event
from PIL import Image, ImageOps
from support import lambda_context, search_app_on_moto
from test_indexing import s3_body

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

BUCKET = "imgsim-images"
API_KEY = "curation-key"
PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "photos"


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with search_app_on_moto(tmp_path_factory.mktemp("root"), "imgsim_search_app_curation", BUCKET,
                            {"IMGSIM_API_KEY": API_KEY, "QDRANT_COLLECTION": "curation"}) as module:
        yield module


@pytest.fixture(scope="module")
def library(app):
    """Three pictures, each with copies (smaller mirror, smaller grey), plus two unrelated photos."""
    s3 = boto3.client("s3")
    root = app.root()  # the function's own root: the images go where it searches
    indexer = build(store=root.store(), embedder=root.embedder(), s3=s3,
                    options=IndexSettings(duplicate_threshold=0.74))
    keys: dict[str, str] = {}

    def put(key: str, data: bytes, content_type: str = "image/jpeg") -> None:
        etag = s3.put_object(Bucket=BUCKET, Key=key, Body=data, ContentType=content_type)["ETag"].strip('"')
        report = indexer.process_messages([(key, s3_body(key, size=len(data), etag=etag))])
        assert report.count("indexed") == 1, report.outcomes
        keys[key] = point_id_for_object(BUCKET, key)

    sets = {"set0": "photo_00100.jpg", "set1": "photo_00700.jpg", "set2": "photo_01300.jpg",
            "resolve": "photo_00400.jpg"}  # resolve/: only the resolve test changes it
    for folder, name in sets.items():
        img = Image.open(PHOTOS / name).convert("RGB")
        w, h = img.size
        put(f"{folder}/original.jpg", jpeg(img))
        put(f"{folder}/mirror.jpg", jpeg(ImageOps.mirror(img).resize((w * 4 // 5, h * 4 // 5))))
        put(f"{folder}/grey.png", _png(img.convert("L").resize((w * 7 // 10, h * 7 // 10))), "image/png")
    put("other/cat.jpg", (PHOTOS / "photo_00020.jpg").read_bytes())
    put("other/squirrel.jpg", (PHOTOS / "photo_01500.jpg").read_bytes())
    return keys


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def call(app, method: str, path: str, *, body: object = None, query: dict | None = None, raw: bytes | None = None,
         content_type: str = "application/json"):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"x-api-key": API_KEY, "content-type": content_type}
    event = http_api_event(method, path, query=query, headers=headers, body=data)
    response = app.handler(event, lambda_context("imgsim-search", timeout_s=29))
    text = response.get("body") or ""
    if response.get("isBase64Encoded"):
        text = base64.b64decode(text).decode()
    return response["statusCode"], json.loads(text) if text else None


def test_duplicate_groups_page_by_cursor_with_the_documented_shape(app, library):
    status, first = call(app, "GET", "/duplicates", query={"limit": "2", "prefix": "set"})
    assert status == 200 and first["threshold"] == 0.74 and len(first["groups"]) == 2 and first["next_cursor"]
    status, second = call(app, "GET", "/duplicates", query={"limit": "2", "prefix": "set",
                                                            "cursor": first["next_cursor"]})
    assert status == 200 and len(second["groups"]) == 1 and second["next_cursor"] is None
    groups = first["groups"] + second["groups"]
    for group in groups:
        members = group["members"]
        assert members[0]["id"] == group["keep"] and members[0]["key"].endswith("/original.jpg")
        assert {m["key"].split("/")[1] for m in members} == {"original.jpg", "mirror.jpg", "grey.png"}
        assert all(set(m) == {"id", "key", "score", "width", "height", "size", "indexed_at", "url"} for m in members)
        assert all(0.74 <= m["score"] <= 1.0 for m in members)
    status, only = call(app, "GET", "/duplicates", query={"prefix": "set2/"})
    assert [g["members"][0]["key"] for g in only["groups"]] == ["set2/original.jpg"]
    status, none = call(app, "GET", "/duplicates", query={"threshold": "1"})
    assert status == 200 and none["groups"] == [] and none["threshold"] == 1
    assert call(app, "GET", "/duplicates", query={"threshold": "2"})[0] == 400
    assert call(app, "GET", "/duplicates", query={"cursor": "not-a-uuid"})[0] == 400
    status, image = call(app, "GET", f"/images/{library['set1/mirror.jpg']}")
    assert image["duplicate_of"] == library["set1/original.jpg"] and image["duplicate_key"] == "set1/original.jpg"
    assert 0.74 <= image["duplicate_score"] <= 1


def test_resolve_moves_to_the_trash_restores_and_remembers_not_duplicates(app, library):
    keep, grey, mirror = (library[f"resolve/{k}"] for k in ("original.jpg", "grey.png", "mirror.jpg"))
    other = library["other/cat.jpg"]
    status, refused = call(app, "POST", "/duplicates/resolve", body={"keep": keep, "remove": [grey, other]})
    assert status == 409 and refused["error"]["code"] == "not_a_duplicate" and other in refused["error"]["message"]
    status, body = call(app, "POST", "/duplicates/resolve",
                        body={"keep": keep, "remove": [grey], "not_duplicates": [mirror]})
    assert status == 200 and [(r["id"], r["key"], r["status"]) for r in body["removed"]] == [
        (grey, "resolve/grey.png", "trashed")]
    assert body["not_duplicates"] == [mirror]
    s3 = boto3.client("s3")
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket=BUCKET, Key="resolve/grey.png")
    assert call(app, "GET", f"/images/{grey}")[0] == 404  # out of search and the groups at once
    status, trash = call(app, "GET", "/trash")
    (entry,) = [i for i in trash["items"] if i["image_id"] == grey]
    assert status == 200 and trash["trash_days"] == 30 and entry["id"] == body["removed"][0]["trash_id"]
    assert entry["key"] == "resolve/grey.png" and entry["url"] and entry["expires_at"] > entry["trashed_at"]
    # Undo: the object, the point and its group come back.
    status, restored = call(app, "POST", f"/trash/{entry['id']}/restore")
    assert status == 200 and restored == {"id": grey, "bucket": BUCKET, "key": "resolve/grey.png", "status": "restored"}
    assert s3.head_object(Bucket=BUCKET, Key="resolve/grey.png")["ContentLength"] > 0
    assert call(app, "GET", f"/images/{grey}")[1]["duplicate_of"] == keep
    assert call(app, "POST", f"/trash/{entry['id']}/restore")[0] == 404
    assert all(i["image_id"] != grey for i in call(app, "GET", "/trash")[1]["items"])
    # The pair marked "not duplicates" is never listed together again.
    status, page = call(app, "GET", "/duplicates", query={"prefix": "resolve/", "threshold": "0"})
    assert all(not {keep, mirror} <= {m["id"] for m in g["members"]} for g in page["groups"])
    for bad in ({"keep": keep}, {"keep": keep, "remove": [keep]}, {"keep": "x", "remove": [mirror]},
                {"keep": keep, "remove": "not-a-list"}, {"remove": [mirror]}):
        assert call(app, "POST", "/duplicates/resolve", body=bad)[0] == 400, bad
    missing = "00000000-0000-0000-0000-000000000000"
    assert call(app, "POST", "/duplicates/resolve", body={"keep": keep, "remove": [missing]})[0] == 404
    assert call(app, "POST", "/duplicates/resolve", raw=b"[[[")[0] == 400


def test_recommend_by_ids_and_keys(app, library):
    status, body = call(app, "POST", "/recommend", body={"positive": ["set1/original.jpg"], "limit": 3})
    assert status == 200 and len(body["results"]) == 3
    assert {r["key"] for r in body["results"][:2]} == {"set1/mirror.jpg", "set1/grey.png"}
    assert "set1/original.jpg" not in {r["key"] for r in body["results"]}
    status, body = call(app, "POST", "/recommend", body={
        "positive": [library["set2/original.jpg"]], "negative": ["set2/mirror.jpg"], "limit": 5, "prefix": "other/"})
    assert status == 200 and {r["key"] for r in body["results"]} <= {"other/cat.jpg", "other/squirrel.jpg"}
    assert call(app, "POST", "/recommend", body={"positive": ["no/such.jpg"]})[0] == 404
    status, body = call(app, "POST", "/recommend", body={"positive": ["set1/original.jpg"], "similar_threshold": 0.99})
    assert status == 200 and not any(r["similar"] for r in body["results"][2:])
    assert call(app, "POST", "/recommend", body={"positive": ["set1/original.jpg"], "similar_threshold": "x"})[0] == 400
    for bad in ({}, {"positive": []}, {"positive": [1]}, {"positive": ["a"], "limit": 0}, {"positive": ["a"], "limit": True}):
        assert call(app, "POST", "/recommend", body=bad)[0] == 400, bad


def test_search_filters_offset_and_collapse(app, library):
    query = (PHOTOS / "photo_00700.jpg").read_bytes()

    def search(**params):
        status, body = call(app, "POST", "/search", raw=query, content_type="image/jpeg",
                            query={k: str(v) for k, v in params.items()})
        assert status == 200, body
        return body

    everything = search(limit=20)["results"]
    assert [r["key"] for r in everything[:3]].count("set1/original.jpg") == 1
    assert all(r["content_type"] == "image/png" for r in search(content_type="image/png")["results"])
    wide = search(min_width=250)["results"]
    assert wide and all(r["width"] >= 250 for r in wide)
    assert all(r["height"] >= 150 for r in search(min_height=150)["results"])
    assert search(indexed_after="2999-01-01")["results"] == []
    assert len(search(indexed_before="2999-01-01T00:00:00Z", limit=20)["results"]) == len(everything)
    page1, page2 = search(limit=2), search(limit=2, offset=2)
    assert page1["next_offset"] == 2 and [r["id"] for r in page2["results"]] == [r["id"] for r in everything[2:4]]
    # "similar": at or above IMGSIM_SIMILAR_THRESHOLD (0.5), or the request's similar_threshold.
    assert [r["similar"] for r in everything] == [r["score"] >= 0.5 for r in everything] and everything[0]["similar"]
    assert all(r["similar"] for r in search(limit=20, similar_threshold=0)["results"])
    assert call(app, "POST", "/search", raw=query, content_type="image/jpeg",
                query={"similar_threshold": "1.5"})[0] == 400
    collapsed = search(limit=20, collapse="true")["results"]
    top = collapsed[0]
    assert top["key"].startswith("set1/") and top["duplicates"] == 2
    assert not {r["key"] for r in collapsed[1:]} & {"set1/original.jpg", "set1/mirror.jpg", "set1/grey.png"}
    assert call(app, "POST", "/search", raw=query, content_type="image/jpeg",
                query={"indexed_after": "yesterday"})[0] == 400
    assert call(app, "POST", "/search", raw=query, content_type="image/jpeg", query={"offset": "5000"})[0] == 400
