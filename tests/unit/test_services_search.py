"""imgsim.services.search with fakes: search by image, id or key; filters, paging, collapse; compare; health."""

from __future__ import annotations

import numpy as np
import pytest
from fakes_services import (
    BUCKET,
    FakeEmbedder,
    image,
    link,
    put,
    settings,
    unit,
    vector_of,
)
from imgsim.errors import InvalidRequest, NotAnImage, NotFound, StoreUnavailable
from imgsim.services import ImageQuery, SearchFilters, SearchRequest, SearchService

KEYS = ["cats/a.jpg", "cats/b.png", "dogs/c.jpg", "dogs/d.jpg", "archive/e.jpg"]


@pytest.fixture
def ids(store):
    return {key: put(store, key, content_type="image/png" if key.endswith(".png") else "image/jpeg",
                     width=100 * (n + 1)) for n, key in enumerate(KEYS)}


@pytest.fixture
def service(store, objects):
    embedder = FakeEmbedder()
    return SearchService(settings(), embedder=lambda: embedder, store=lambda: store, objects=lambda: objects)


def keys_of(body):
    return [r["key"] for r in body["results"]]


def test_search_by_image_finds_it_first_with_a_presigned_url(service, ids):
    body = service.search(SearchRequest(ImageQuery(image=image("dogs/c.jpg")), limit=3))
    assert keys_of(body)[0] == "dogs/c.jpg" and len(body["results"]) == 3
    top = body["results"][0]
    assert top["id"] == ids["dogs/c.jpg"] and top["score"] == 1.0 and top["percent"] == 100.0 and top["similar"]
    assert top["url"] == f"https://s3.test/{BUCKET}/dogs/c.jpg?get&expires=900"
    assert set(top) >= {"bucket", "width", "height", "content_type", "size", "indexed_at"}
    assert body["model"] == "fake-model" and body["offset"] == 0 and body["next_offset"] == 3
    assert body["took_ms"] >= 0


def test_search_by_id_and_by_key_exclude_the_query_image(service, ids):
    for query in (ImageQuery(point_id=ids["cats/a.jpg"]), ImageQuery(key="cats/a.jpg")):
        body = service.search(SearchRequest(query, limit=10))
        assert "cats/a.jpg" not in keys_of(body) and len(body["results"]) == len(KEYS) - 1
        assert body["next_offset"] is None


def test_unknown_or_malformed_references(service, ids):
    with pytest.raises(NotFound):
        service.search(SearchRequest(ImageQuery(key="nope.jpg")))
    with pytest.raises(NotFound):
        service.search(SearchRequest(ImageQuery(point_id="00000000-0000-0000-0000-000000000000")))
    with pytest.raises(InvalidRequest, match="not an image id"):
        service.search(SearchRequest(ImageQuery(point_id="not-a-uuid")))
    with pytest.raises(NotAnImage):
        service.search(SearchRequest(ImageQuery(image=b"plain text")))


def test_a_query_is_exactly_one_thing():
    with pytest.raises(InvalidRequest):
        ImageQuery()
    with pytest.raises(InvalidRequest):
        ImageQuery(image=b"x", key="k")
    with pytest.raises(InvalidRequest):
        SearchRequest(ImageQuery(key="k"), limit=0)
    with pytest.raises(InvalidRequest):
        SearchRequest(ImageQuery(key="k"), offset=-1)


def test_prefix_filters_and_min_score(service, ids):
    query = ImageQuery(image=image("cats/a.jpg"))
    assert sorted(keys_of(service.search(SearchRequest(query, prefix="dogs/")))) == ["dogs/c.jpg", "dogs/d.jpg"]
    pngs = service.search(SearchRequest(query, filters=SearchFilters(content_type="image/png")))
    assert keys_of(pngs) == ["cats/b.png"]
    wide = service.search(SearchRequest(query, filters=SearchFilters(min_width=400)))
    assert sorted(keys_of(wide)) == ["archive/e.jpg", "dogs/d.jpg"]
    assert keys_of(service.search(SearchRequest(query, filters=SearchFilters(indexed_after="2027-01-01T00:00:00Z")))) == []
    assert keys_of(service.search(SearchRequest(query, min_score=0.999))) == ["cats/a.jpg"]


def test_paging_by_offset(service, ids):
    query = ImageQuery(image=image("cats/a.jpg"))
    everything = keys_of(service.search(SearchRequest(query, limit=10)))
    second = service.search(SearchRequest(query, limit=2, offset=2))
    assert keys_of(second) == everything[2:4] and second["offset"] == 2 and second["next_offset"] == 4


def test_similar_marks_follow_the_threshold(service, ids):
    query = ImageQuery(image=image("cats/a.jpg"))
    default = service.search(SearchRequest(query))["results"]
    assert [r["similar"] for r in default] == [r["score"] >= 0.5 for r in default]
    assert all(r["similar"] for r in service.search(SearchRequest(query, similar_threshold=0.0))["results"])
    assert not any(r["similar"] for r in service.search(SearchRequest(query, similar_threshold=1.01))["results"])


def test_collapse_folds_recorded_duplicates_into_the_best_ranked(store, service):
    original = put(store, "set/original.jpg")
    near = vector_of("set/original.jpg") + 0.05 * unit("noise")
    copy = put(store, "set/copy.jpg", near / np.linalg.norm(near))
    link(store, copy, original, 0.95)
    put(store, "other/x.jpg")
    query = ImageQuery(image=image("set/original.jpg"))
    plain = service.search(SearchRequest(query))["results"]
    assert {r["id"] for r in plain[:2]} == {original, copy}
    collapsed = service.search(SearchRequest(query, collapse=True))["results"]
    assert collapsed[0]["id"] == original and collapsed[0]["duplicates"] == 1
    assert copy not in {r["id"] for r in collapsed} and all("duplicates" in r for r in collapsed)


def test_points_from_local_files_have_no_url(store, service):
    put(store, "/home/me/a.jpg", bucket=None)
    body = service.search(SearchRequest(ImageQuery(image=image("/home/me/a.jpg")), limit=1))
    assert body["results"][0]["url"] is None and body["results"][0]["bucket"] is None


def test_phases_are_reported_to_the_timer(service, ids):
    class Phases:
        def __init__(self):
            self.names = []

        def add(self, phase, since):
            self.names.append(phase)
            return since

        def total_ms(self):
            return 12.34

    timer = Phases()
    body = service.search(SearchRequest(ImageQuery(image=image("cats/a.jpg"))), timer)
    assert timer.names == ["embed", "qdrant", "presign"] and body["took_ms"] == 12.3
    timer = Phases()
    service.search(SearchRequest(ImageQuery(key="cats/a.jpg")), timer)
    assert timer.names == ["lookup", "qdrant", "presign"]


def test_compare(service):
    same = service.compare(image("a"), image("a"))
    assert same["score"] == 1.0 and same["percent"] == 100.0 and same["model"] == "fake-model"
    other = service.compare(image("a"), image("b"))
    expected = max(0.0, float(vector_of("a") @ vector_of("b")))
    assert other["score"] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(NotAnImage):
        service.compare(image("a"), b"junk")


def test_health_reports_the_index_or_the_outage(store, service, ids, monkeypatch):
    report = service.health()
    assert report.ok and report.details == {"collection": store.collection, "model": "fake-model"}
    assert service.visible_images() == len(KEYS)

    def down(*args, **kwargs):
        raise StoreUnavailable("connection refused", retry_after=7)

    monkeypatch.setattr(store, "count", down)
    report = service.health()
    assert not report.ok and isinstance(report.problem, StoreUnavailable)
    assert service.visible_images() is None  # GET /me answers without it
