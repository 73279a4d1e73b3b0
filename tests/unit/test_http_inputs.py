"""Request bodies into the services' value objects (imgsim.http.inputs): every form, and 4xx for anything else."""

from __future__ import annotations

import base64
import json

import pytest
from imgsim.errors import InvalidRequest
from imgsim.http.errors import (
    BodyTooLarge,
    EmptyBody,
    MalformedBody,
    MalformedJson,
    UnsupportedMediaType,
)
from imgsim.http.inputs import (
    RecommendBody,
    ResolveBody,
    UploadBody,
    json_body,
    parse_compare_body,
    parse_instant,
    parse_search_body,
    read_body,
)
from imgsim.services import ImageQuery
from urllib3 import encode_multipart_formdata

LIMIT = 1000
JPEG = b"\xff\xd8\xff fake"


def as_json(obj) -> bytes:
    return json.dumps(obj).encode()


def test_read_body_decodes_base64_within_the_limit():
    assert read_body(base64.b64encode(b"abc").decode(), True, LIMIT) == b"abc"
    assert read_body("text", False, LIMIT) == b"text" and read_body(None, None, LIMIT) == b""
    with pytest.raises(MalformedBody):
        read_body("!!!", True, LIMIT)
    with pytest.raises(BodyTooLarge, match="/uploads"):
        read_body(base64.b64encode(b"x" * (LIMIT + 10)).decode(), True, LIMIT)
    with pytest.raises(BodyTooLarge):
        read_body("x" * (LIMIT + 1), False, LIMIT)


def test_search_body_forms():
    assert parse_search_body("image/jpeg", JPEG, LIMIT) == ImageQuery(image=JPEG)
    assert parse_search_body("application/octet-stream", JPEG, LIMIT) == ImageQuery(image=JPEG)
    form, form_type = encode_multipart_formdata({"image": ("q.jpg", JPEG, "image/jpeg")})
    assert parse_search_body(form_type, form, LIMIT) == ImageQuery(image=JPEG)
    encoded = base64.b64encode(JPEG).decode()
    for value in (encoded, "data:image/jpeg;base64," + encoded):
        assert parse_search_body("application/json", as_json({"image": value}), LIMIT) == ImageQuery(image=JPEG)
    assert parse_search_body("Application/JSON; charset=utf-8", as_json({"key": "a/b.jpg", "image": None}),
                             LIMIT) == ImageQuery(key="a/b.jpg")
    some_id = "0b7e1a52-9c1f-5d0e-8d7a-3f2b6c4e9a10"
    assert parse_search_body("application/json", as_json({"id": some_id}), LIMIT) == ImageQuery(point_id=some_id)


@pytest.mark.parametrize("content_type,body,error", [
    ("image/jpeg", b"", EmptyBody),
    ("text/plain", b"hi", UnsupportedMediaType),
    (None, JPEG, UnsupportedMediaType),
    ("caf\u00e9/\u2603", JPEG, UnsupportedMediaType),  # not Latin-1: names no media type
    ("multipart/form-data", b"--x\r\n", MalformedBody),
    ("application/json", b"{not json", MalformedJson),
    ("application/json", b"[1, 2]", MalformedJson),
    ("application/json", b"[" * 100_000, MalformedJson),
    ("application/json", b'{"id": ' + b"9" * 5000 + b"}", MalformedJson),
    ("application/json", b"{}", InvalidRequest),
    ("application/json", b'{"id": "a", "key": "b"}', InvalidRequest),
    ("application/json", b'{"id": "x"}', InvalidRequest),  # an id is a UUID
    ("application/json", b'{"image": 12}', InvalidRequest),
    ("application/json", b'{"image": "!!!"}', InvalidRequest),
    ("application/json", b'{"key": ""}', InvalidRequest),
])
def test_search_body_refusals(content_type, body, error):
    with pytest.raises(error):
        parse_search_body(content_type, body, LIMIT)


def test_compare_body_forms_and_refusals():
    form, form_type = encode_multipart_formdata({"a": ("a.jpg", b"A", "image/jpeg"), "b": ("b.jpg", b"B", "image/jpeg")})
    assert parse_compare_body(form_type, form, LIMIT) == (b"A", b"B")
    body = as_json({"a": base64.b64encode(b"A").decode(), "b": base64.b64encode(b"B").decode()})
    assert parse_compare_body("application/json", body, LIMIT) == (b"A", b"B")
    only_a, only_a_type = encode_multipart_formdata({"a": ("a.jpg", b"A", "image/jpeg")})
    for content_type, payload, error in ((only_a_type, only_a, InvalidRequest),
                                         ("application/json", as_json({"a": "QQ=="}), InvalidRequest),
                                         ("image/jpeg", JPEG, UnsupportedMediaType),
                                         ("application/json", b"", EmptyBody)):
        with pytest.raises(error):
            parse_compare_body(content_type, payload, LIMIT)


def test_json_bodies_are_strict():
    assert json_body(UploadBody, as_json({"filename": "a.jpg", "content_type": "image/jpeg", "x": 1})).filename == "a.jpg"
    recommend = json_body(RecommendBody, as_json({"positive": ["a"], "similar_threshold": 0}))
    assert recommend.limit == 10 and recommend.similar_threshold == 0.0 and recommend.negative == []
    # JSON Schema's integer: a number without a fractional part, 5.0 as well as 5.
    assert json_body(RecommendBody, as_json({"positive": ["a"], "limit": 5.0})).limit == 5
    for model, obj in ((UploadBody, {"filename": " ", "content_type": "image/jpeg"}),
                       (UploadBody, {"filename": 1, "content_type": "image/jpeg"}),
                       (ResolveBody, {"keep": "k", "remove": "not-a-list"}),
                       (ResolveBody, {"remove": ["a"]}),
                       (RecommendBody, {"positive": []}),
                       (RecommendBody, {"positive": ["a"], "limit": True}),
                       (RecommendBody, {"positive": ["a"], "limit": 5.5}),
                       (RecommendBody, {"positive": ["a"], "limit": "5"}),
                       (ResolveBody, {"keep": "0b7e1a52-9c1f-5d0e-8d7a-3f2b6c4e9a10", "remove": ["not-a-uuid"]}),
                       (RecommendBody, {"positive": ["a"], "similar_threshold": "0.5"})):
        with pytest.raises(InvalidRequest) as info:
            json_body(model, as_json(obj))
        assert type(info.value) is InvalidRequest
    with pytest.raises(EmptyBody):
        json_body(UploadBody, b"  ")
    with pytest.raises(MalformedJson):
        json_body(ResolveBody, b"\xff\xfe{}")


def test_instants():
    assert parse_instant("t", "2026-11-26") == "2026-11-26T00:00:00Z"
    assert parse_instant("t", "2026-11-26T09:00:00+01:00") == "2026-11-26T08:00:00Z"
    assert parse_instant("t", "") is None and parse_instant("t", None) is None
    with pytest.raises(InvalidRequest, match="indexed_after"):
        parse_instant("indexed_after", "yesterday")
    # Exactly the document's formats (RFC 3339 date-time or full-date), not ISO 8601's other forms.
    for other in ("20261126", "2026-11-26T08:00", "2026-11-26 08:00:00Z", "2026-W48", "2026-02-30"):
        with pytest.raises(InvalidRequest):
            parse_instant("t", other)
    assert parse_instant("t", "2026-11-26t08:00:00.1234567z") == "2026-11-26T08:00:00.123456Z"
    # Valid RFC 3339 beyond Python's datetime range: the earliest or latest instant (a filter bound means the same).
    assert parse_instant("t", "0001-01-01T00:00:00+01:00") == "0001-01-01T00:00:00Z"
    assert parse_instant("t", "9999-12-31T23:59:59-01:00") == "9999-12-31T23:59:59.999999Z"
