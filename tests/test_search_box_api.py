"""Search by a region (``box``) end to end: HTTP API v2 events -> functions/search/app.handler, with the real model,
moto S3 and an embedded Qdrant filled with real photos (the fixtures of tests/test_search_api.py)."""

from __future__ import annotations

import io
import json
import math
import uuid

import boto3
import numpy as np
import pytest
import test_search_api as api
from imgsim.store import StoredPoint
from PIL import Image
from test_search_api import BUCKET, assert_error, b64, json_body
from urllib3 import encode_multipart_formdata

# The search function on moto S3 and real photos: tests/test_search_api.py's fixtures (module-scoped, so this module
# gets its own).
aws, store_dir, search_root, search_app, model, indexed, call = (
    api.aws, api.store_dir, api.search_root, api.search_app, api.model, api.indexed, api.call)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

BOX = (0.25, 0.125, 0.5, 0.625)  # a region of about a third of the picture, off centre


def box_text(box) -> str:
    return ",".join(f"{v:.6f}" for v in box)


def png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def cropped(data: bytes, box) -> bytes:
    """The picture cropped to ``box`` (edges on the nearest pixel, halves up) as a lossless file: what a user would
    search with after cropping it."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    x, y, w, h = box

    def nearest(v: float) -> int:
        return math.floor(v + 0.5)

    return png(img.crop((nearest(x * img.width), nearest(y * img.height), nearest((x + w) * img.width),
                         nearest((y + h) * img.height))))


def ranking(body) -> list[tuple[str, float]]:
    return [(r["id"], r["percent"]) for r in body["results"]]


def search(call, body, content_type, **query):
    status, headers, result = call("POST", "/search", body=body, content_type=content_type, query=query)
    assert status == 200, result
    return headers, result


def test_every_form_with_a_box_searches_as_the_cropped_file_does(call, indexed):
    item = list(indexed.values())[6]
    expected = ranking(search(call, cropped(item.data, BOX), "image/png", limit=8)[1])
    form, form_type = encode_multipart_formdata({"image": ("q.jpg", item.data, "image/jpeg")})
    for body, content_type in ((item.data, "image/jpeg"), (form, form_type),
                               (json_body({"image": b64(item.data)}), "application/json")):
        headers, result = search(call, body, content_type, limit=8, box=box_text(BOX))
        assert ranking(result) == expected
        assert "embed;dur=" in headers["server-timing"]
    whole = ranking(search(call, item.data, "image/jpeg", limit=8)[1])
    assert whole[0] == (item.id, 100.0) and whole != expected


@pytest.mark.parametrize("reference", ["id", "key"])
def test_a_box_on_an_indexed_image_reads_its_object(call, indexed, reference):
    item = list(indexed.values())[11]
    by_bytes = ranking(search(call, item.data, "image/jpeg", limit=9, box=box_text(BOX))[1])
    headers, result = search(call, json_body({reference: getattr(item, reference)}), "application/json", limit=8,
                             box=box_text(BOX))
    # The same region of the same pixels, the image itself left out (as a search by id or key without a box).
    assert ranking(result) == [entry for entry in by_bytes if entry[0] != item.id][:8]
    assert "fetch;dur=" in headers["server-timing"] and "lookup;dur=" in headers["server-timing"]


def test_a_box_around_a_photo_within_a_picture_finds_that_photo(call, indexed):
    """Two indexed photos side by side in one picture wider than the decoder's 448 px: a box around either finds
    it first, at 100 % (the region is cut at the picture's resolution); the whole picture finds neither at 100 %."""
    items = list(indexed.values())
    left, right = (Image.open(io.BytesIO(items[2].data)).convert("RGB"),
                   Image.open(io.BytesIO(items[20].data)).convert("RGB"))
    width, height = left.width + right.width, max(left.height, right.height)
    pair = Image.new("RGB", (width, height), (128, 128, 128))
    pair.paste(left, (0, 0))
    pair.paste(right, (left.width, 0))
    data = png(pair)
    assert width > 448
    for item, box in ((items[2], (0, 0, left.width / width, left.height / height)),
                      (items[20], (left.width / width, 0, right.width / width, right.height / height))):
        result = search(call, data, "image/png", limit=3, box=box_text(box))[1]
        assert ranking(result)[0] == (item.id, 100.0), ranking(result)
    assert all(percent < 100.0 for _, percent in ranking(search(call, data, "image/png", limit=3)[1]))


def test_the_whole_picture_as_a_box_is_the_picture(call, indexed):
    item = list(indexed.values())[4]
    whole = ranking(search(call, item.data, "image/jpeg")[1])
    assert ranking(search(call, item.data, "image/jpeg", box="0,0,1,1")[1]) == whole
    by_id = ranking(search(call, json_body({"id": item.id}), "application/json")[1])
    assert ranking(search(call, json_body({"id": item.id}), "application/json", box="0,0,1,1")[1]) == by_id


@pytest.mark.parametrize("box, problem", [
    ("0.5,0.5", "box must be four numbers separated by commas, got 2"),
    ("0.2,0.2,0,0.5", "is empty: w and h (its width and height) must be greater than 0"),
    ("0.6,0.1,0.5,0.5", "runs past the image's right edge: x + w = 1.1 > 1"),
    ("0.1,0.6,0.5,0.5", "runs past the image's bottom edge: y + h = 1.1 > 1"),
    ("10,10,120,80", "not pixels"),
    ("-0.1,0,0.5,0.5", "x = -0.1 is negative"),
    ("0.1,0.1,abc,0.5", "w = 'abc' is not a decimal number from 0 to 1"),
    ("", "box must be four numbers"),
    ("0." + "1" * 120 + ",0,1,1", "box"),  # over the parameter's 100 characters
])
def test_bad_boxes_are_400_naming_the_problem(call, indexed, box, problem):
    item = next(iter(indexed.values()))
    for body, content_type in ((item.data, "image/jpeg"), (json_body({"id": item.id}), "application/json")):
        result = call("POST", "/search", body=body, content_type=content_type, query={"box": box})
        assert_error(result, 400, "bad_parameter")
        assert problem in result[2]["error"]["message"]


def test_a_box_on_an_image_without_an_object_here(call, indexed, search_root):
    """Indexed from a local file (no object the API can read): 400 saying to send the image; its object deleted
    since it was indexed: 404."""
    store = search_root.store()
    vector = np.zeros(search_root.embedder().dim, dtype=np.float32)
    vector[0] = 1.0
    local_id = str(uuid.uuid4())
    store.upsert([StoredPoint(local_id, vector, {"source": "file", "key": "/home/me/a.jpg", "dirs": []})])
    try:
        result = call("POST", "/search", body=json_body({"id": local_id}), content_type="application/json",
                      query={"box": box_text(BOX)})
        assert_error(result, 400, "bad_parameter")
        assert "indexed from a local file" in result[2]["error"]["message"]
        assert "send the image itself" in result[2]["error"]["message"]
        # Without a box its stored vector serves, as ever.
        assert call("POST", "/search", body=json_body({"id": local_id}), content_type="application/json")[0] == 200
    finally:
        store.delete([local_id])
    item = list(indexed.values())[13]
    s3 = boto3.client("s3")
    s3.delete_object(Bucket=BUCKET, Key=item.key)
    try:
        result = call("POST", "/search", body=json_body({"key": item.key}), content_type="application/json",
                      query={"box": box_text(BOX)})
        assert_error(result, 404, "not_found")
        assert f"s3://{BUCKET}/{item.key} is gone" in result[2]["error"]["message"]
    finally:
        s3.put_object(Bucket=BUCKET, Key=item.key, Body=item.data, ContentType="image/jpeg")


def test_the_document_describes_the_box(call):
    status, _, document = call("GET", "/openapi.json", api_key=None)
    assert status == 200
    document = document if isinstance(document, dict) else json.loads(document)
    (box,) = [p for p in document["paths"]["/search"]["post"]["parameters"] if p["name"] == "box"]
    assert box["in"] == "query" and not box.get("required")
    text = json.dumps(box)
    assert "\"format\": \"box\"" in text and "fraction" in box["description"] and "0.25,0.25,0.5,0.5" in text


def test_an_objects_bytes_are_read_within_the_limit(aws):
    """S3Objects.get: at most the limit + 1 bytes (a ranged GET), None for no object, b"" for an empty one (S3
    answers a range of an empty object with InvalidRange), S3's other refusals as ObjectStorageError."""
    from botocore.exceptions import ClientError
    from imgsim.errors import ObjectStorageError
    from imgsim.objects import S3Objects

    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key="box/ten.bin", Body=b"0123456789")
    s3.put_object(Bucket=BUCKET, Key="box/empty.bin", Body=b"")
    objects = S3Objects(lambda: s3)
    assert objects.get(BUCKET, "box/ten.bin", max_bytes=4) == b"01234"
    assert objects.get(BUCKET, "box/ten.bin", max_bytes=100) == b"0123456789"
    assert objects.get(BUCKET, "box/empty.bin", max_bytes=100) == b""
    assert objects.get(BUCKET, "box/missing.bin", max_bytes=100) is None

    class Refusing:
        def __init__(self, code: str) -> None:
            self.code = code

        def get_object(self, **kwargs):
            raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, "GetObject")

    assert S3Objects(lambda: Refusing("InvalidRange")).get(BUCKET, "k", max_bytes=10) == b""
    assert S3Objects(lambda: Refusing("NoSuchKey")).get(BUCKET, "k", max_bytes=10) is None
    with pytest.raises(ObjectStorageError):
        S3Objects(lambda: Refusing("AccessDenied")).get(BUCKET, "k", max_bytes=10)
