"""Search by a region (a box) with fakes: the ``box`` parameter parsed and checked (imgsim.http.inputs, imgsim.services
``Box``), and searching with a region of a new image or of an indexed one (imgsim.services.search)."""

from __future__ import annotations

import re

import pytest
from fakes_services import BUCKET, FakeEmbedder, image, put, settings, vector_of
from hypothesis import given
from hypothesis import strategies as st
from imgsim.errors import InvalidRequest, NotFound
from imgsim.http.inputs import BOX_PATTERN, parse_box, parse_search_body
from imgsim.services import Box, ImageQuery, SearchRequest, SearchService
from urllib3 import encode_multipart_formdata

# -- the box -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, box", [
    ("0.25,0.25,0.5,0.5", Box(0.25, 0.25, 0.5, 0.5)),
    ("0,0,1,1", Box(0, 0, 1, 1)),
    (" .1 , 0.2,0.3 ,0.4 ", Box(0.1, 0.2, 0.3, 0.4)),
    ("1.,0.,0.,1.0", None),  # w = 0: well formed, but empty (below)
])
def test_boxes_as_text(text, box):
    if box is None:
        with pytest.raises(InvalidRequest, match="empty"):
            parse_box(text)
    else:
        assert parse_box(text) == box
    assert parse_box(None) is None


@pytest.mark.parametrize("text, problem", [
    ("", "four numbers separated by commas, got 1"),
    ("0.1,0.2,0.3", "four numbers separated by commas, got 3"),
    ("0.1,0.2,0.3,0.4,0.5", "got 5"),
    ("a,b,c,d", "x = 'a' is not a decimal number from 0 to 1"),
    ("0.1,0.2,nan,0.3", "w = 'nan' is not a decimal number"),
    ("0.1,inf,0.2,0.3", "y = 'inf' is not a decimal number"),
    ("0.1,0.1,1e-1,0.2", "w = '1e-1' is not a decimal number"),
    ("10,20,300,200", "x = 10 is more than 1; x, y, w and h are fractions of the image's width and height, not pixels"),
    ("0.5,0.5,0.5,1.5", "h = 1.5 is more than 1"),
    ("-0.1,0,0.5,0.5", "x = -0.1 is negative"),
    ("0.1;0.2;0.3;0.4", "got 1"),
    ("0.1,0.2,0.3,0.\u0664", "h = '0.\u0664' is not a decimal number"),  # an Arabic-Indic 4: not in the pattern
    ("0.2,0.2,0,0.5", "is empty: w and h (its width and height) must be greater than 0"),
    ("0.2,0.2,0.5,0", "is empty"),
    ("0.6,0.1,0.5,0.5", "runs past the image's right edge: x + w = 1.1 > 1"),
    ("0.1,0.75,0.5,0.5", "runs past the image's bottom edge: y + h = 1.25 > 1"),
])
def test_bad_boxes_are_refused_naming_the_problem(text, problem):
    with pytest.raises(InvalidRequest) as info:
        parse_box(text)
    assert problem in str(info.value) and "box" in str(info.value)


def test_boxes_built_directly_are_checked_too():
    for args, problem in (((0.1, 0.1, float("nan"), 0.2), "w is nan, not a number"), ((-0.1, 0, 0.5, 0.5), "at least 0"),
                          ((0, 0, 0, 0.5), "empty"), ((0, 0, 2, 0.5), "not pixels"), ((0.5, 0, 0.6, 0.5), "right edge")):
        with pytest.raises(InvalidRequest, match=re.escape(problem)):
            Box(*args)


def test_rounding_past_an_edge_is_tolerated_and_clipped():
    box = Box(0.1234, 0.5, 0.8766 + 5e-7, 0.5)  # x + w a hair over 1, as decimals rounded in a browser may leave it
    x, y, w, h = box.region
    assert (x, y, h) == (0.1234, 0.5, 0.5) and x + w <= 1.0
    assert str(Box(0.25, 0.5, 0.5, 0.125)) == "0.25,0.5,0.5,0.125"
    small = Box(0.00001, 0, 1e-7, 1)  # as text, the box the API takes (no exponents)
    assert str(small) == "0.00001,0,0.0000001,1" and parse_box(str(small)) == small


@given(st.text(max_size=40))
def test_any_text_is_a_box_or_a_bad_parameter(text):
    try:
        box = parse_box(text)
    except InvalidRequest as exc:
        assert "box" in str(exc)
    else:
        assert box is not None and re.fullmatch(BOX_PATTERN, text)


@given(st.from_regex(BOX_PATTERN, fullmatch=True))
def test_text_the_documented_pattern_admits_is_refused_only_for_empty_or_past_an_edge(text):
    try:
        parse_box(text)
    except InvalidRequest as exc:
        assert "is empty" in str(exc) or "edge" in str(exc), exc


def test_every_query_form_carries_the_box():
    box = Box(0.1, 0.2, 0.3, 0.4)
    jpeg = b"\xff\xd8\xff fake"
    form, form_type = encode_multipart_formdata({"image": ("q.jpg", jpeg, "image/jpeg")})
    for content_type, body, query in (("image/jpeg", jpeg, ImageQuery(image=jpeg, box=box)),
                                      (form_type, form, ImageQuery(image=jpeg, box=box)),
                                      ("application/json", b'{"image": "/9j/IGZha2U="}', ImageQuery(image=jpeg, box=box)),
                                      ("application/json", b'{"id": "0b7e1a52-9c1f-5d0e-8d7a-3f2b6c4e9a10"}', ImageQuery(point_id="0b7e1a52-9c1f-5d0e-8d7a-3f2b6c4e9a10", box=box)),
                                      ("application/json", b'{"key": "a.jpg"}', ImageQuery(key="a.jpg", box=box))):
        assert parse_search_body(content_type, body, 1000, box) == query


# -- searching with a region -----------------------------------------------------------------------------------------

RIGHT_HALF = Box(0.5, 0.0, 0.5, 1.0)


@pytest.fixture
def embedder():
    return FakeEmbedder()


@pytest.fixture
def service(store, objects, embedder):
    return SearchService(settings(), embedder=lambda: embedder, store=lambda: store, objects=lambda: objects)


@pytest.fixture
def ids(store, objects):
    """Three images, with their objects in S3, and one indexed image that is the right half of dogs/c.jpg."""
    found = {key: put(store, key) for key in ("cats/a.jpg", "dogs/c.jpg", "dogs/d.jpg")}
    for key in found:
        objects.blobs[(BUCKET, key)] = image(key)
    found["half"] = put(store, "crops/half.jpg", vector_of("dogs/c.jpg", region=RIGHT_HALF.region))
    return found


def first_key(body) -> str:
    return body["results"][0]["key"]


def test_a_box_on_a_new_image_searches_with_that_region(service, ids, embedder):
    whole = service.search(SearchRequest(ImageQuery(image=image("dogs/c.jpg"))))
    assert first_key(whole) == "dogs/c.jpg"
    body = service.search(SearchRequest(ImageQuery(image=image("dogs/c.jpg"), box=RIGHT_HALF)))
    assert first_key(body) == "crops/half.jpg" and body["results"][0]["score"] == 1.0
    assert "decode (0.5, 0.0, 0.5, 1.0)" in embedder.calls


@pytest.mark.parametrize("reference", ["id", "key"])
def test_a_box_on_an_indexed_image_reads_its_object(service, ids, objects, reference):
    class Phases:
        def __init__(self):
            self.names = []

        def add(self, phase, since):
            self.names.append(phase)
            return since

        def total_ms(self):
            return 1.0

    query = ImageQuery(point_id=ids["dogs/c.jpg"], box=RIGHT_HALF) if reference == "id" else \
        ImageQuery(key="dogs/c.jpg", box=RIGHT_HALF)
    timer = Phases()
    body = service.search(SearchRequest(query), timer)
    assert first_key(body) == "crops/half.jpg" and body["results"][0]["score"] == 1.0
    assert "dogs/c.jpg" not in [r["key"] for r in body["results"]]  # never among its own results
    assert objects.read == [(BUCKET, "dogs/c.jpg", FakeEmbedder.max_image_bytes)]
    assert timer.names == ["lookup", "fetch", "embed", "qdrant", "presign"]


def test_a_box_on_an_indexed_image_without_an_object_here_is_refused(service, store, ids, objects):
    local = put(store, "/home/me/c.jpg", bucket=None)
    with pytest.raises(InvalidRequest, match=r"indexed from a local file \(/home/me/c.jpg\).*send the image itself"):
        service.search(SearchRequest(ImageQuery(point_id=local, box=RIGHT_HALF)))
    elsewhere = put(store, "x.jpg", bucket="another-bucket")
    with pytest.raises(InvalidRequest, match="bucket 'another-bucket', which this API does not read"):
        service.search(SearchRequest(ImageQuery(point_id=elsewhere, box=RIGHT_HALF)))
    del objects.blobs[(BUCKET, "dogs/d.jpg")]
    with pytest.raises(NotFound, match=r"s3://imgsim-images/dogs/d.jpg is gone"):
        service.search(SearchRequest(ImageQuery(key="dogs/d.jpg", box=RIGHT_HALF)))
    with pytest.raises(NotFound):
        service.search(SearchRequest(ImageQuery(key="nope.jpg", box=RIGHT_HALF)))
    assert objects.read == [(BUCKET, "dogs/d.jpg", FakeEmbedder.max_image_bytes)]  # nothing read for the refusals


def test_the_whole_image_as_a_box_is_the_image(service, ids):
    whole = service.search(SearchRequest(ImageQuery(key="dogs/c.jpg")))
    boxed = service.search(SearchRequest(ImageQuery(key="dogs/c.jpg", box=Box(0, 0, 1, 1))))
    assert [(r["id"], r["score"]) for r in boxed["results"]] == [(r["id"], r["score"]) for r in whole["results"]]
