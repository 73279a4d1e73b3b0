"""imgsim.services.curation with fakes: duplicate groups, resolving them, recommendations."""

from __future__ import annotations

import numpy as np
import pytest
from fakes_services import (
    BUCKET,
    FakeEmbedder,
    put,
    settings,
    unit,
    vector_of,
)
from imgsim.duplicates import HAS_DUPLICATES, HAS_DUPLICATES_FIELD, NOT_DUPLICATES_FIELD
from imgsim.errors import InvalidRequest, NotDeletable, NotFound
from imgsim.services import (
    CurationService,
    DuplicatesQuery,
    RecommendRequest,
    Resolution,
)


@pytest.fixture
def service(store, objects):
    embedder = FakeEmbedder()
    return CurationService(settings(), embedder=lambda: embedder, store=lambda: store, objects=lambda: objects)


def near(name: str, amount: float = 0.1) -> np.ndarray:
    vector = vector_of(name) + amount * unit("noise " + name)
    return vector / np.linalg.norm(vector)


def group(store, folder: str, score: float = 0.9) -> dict[str, str]:
    """A picture and two copies of it, recorded by the indexer (``duplicate_of`` on the copies)."""
    original = put(store, f"{folder}/original.jpg", width=1000, height=800, **{HAS_DUPLICATES_FIELD: HAS_DUPLICATES})
    return {"original": original,
            "small": put(store, f"{folder}/small.jpg", near(f"{folder}/original.jpg"), width=500, height=400,
                         duplicate_of=original, duplicate_score=score),
            "grey": put(store, f"{folder}/grey.jpg", near(f"{folder}/original.jpg", 0.2), width=700, height=560,
                        duplicate_of=original, duplicate_score=score - 0.05)}


def test_duplicate_groups_page_by_cursor(store, service):
    ids = {folder: group(store, folder) for folder in ("a", "b", "c")}
    first = service.duplicates(DuplicatesQuery(limit=2))
    assert first["threshold"] == 0.79 and len(first["groups"]) == 2 and first["next_cursor"]
    second = service.duplicates(DuplicatesQuery(limit=2, cursor=first["next_cursor"]))
    assert len(second["groups"]) == 1 and second["next_cursor"] is None
    groups = first["groups"] + second["groups"]
    assert {g["keep"] for g in groups} == {ids[f]["original"] for f in ids}
    for doc in groups:
        members = doc["members"]
        assert members[0]["id"] == doc["keep"] and [m["key"].split("/")[1] for m in members] == [
            "original.jpg", "grey.jpg", "small.jpg"]  # the most pixels first
        assert all(m["url"] == f"https://s3.test/{BUCKET}/{m['key']}?get&expires=900" for m in members)
    only_b = service.duplicates(DuplicatesQuery(prefix="b/"))["groups"]
    assert [g["keep"] for g in only_b] == [ids["b"]["original"]]
    assert service.duplicates(DuplicatesQuery(threshold=0.99))["groups"] == []
    with pytest.raises(InvalidRequest):
        service.duplicates(DuplicatesQuery(cursor="not-a-uuid"))


def test_resolve_deletes_objects_and_remembers_not_duplicates(store, objects, service):
    ids = group(store, "a")
    result = service.resolve(Resolution(keep=ids["original"], remove=[ids["small"]], not_duplicates=[ids["grey"]]))
    assert result == {"keep": ids["original"], "removed": [{"id": ids["small"], "key": "a/small.jpg",
                                                            "status": "deleting"}],
                      "not_duplicates": [ids["grey"]]}
    assert objects.deleted == [(BUCKET, "a/small.jpg")]
    grey = store.get(ids["grey"])
    assert "duplicate_of" not in grey.payload and grey.payload[NOT_DUPLICATES_FIELD] == [ids["original"]]
    assert store.get(ids["original"]).payload[NOT_DUPLICATES_FIELD] == [ids["grey"]]


def test_resolve_checks_everything_before_changing_anything(store, objects, service):
    ids = group(store, "a")
    local = put(store, "/home/me/a.jpg", bucket=None)
    missing = "00000000-0000-0000-0000-000000000000"
    bad = [
        (InvalidRequest, Resolution(keep=ids["original"])),
        (InvalidRequest, Resolution(keep=ids["original"], remove=[ids["original"]])),
        (InvalidRequest, Resolution(keep=ids["original"], remove=[ids["small"]], not_duplicates=[ids["small"]])),
        (InvalidRequest, Resolution(keep="x", remove=[ids["small"]])),
        (NotFound, Resolution(keep=ids["original"], remove=[ids["small"], missing])),
        (NotDeletable, Resolution(keep=ids["original"], remove=[ids["small"], local])),
    ]
    for error, resolution in bad:
        with pytest.raises(error):
            service.resolve(resolution)
    assert objects.deleted == []


def test_recommend_by_ids_and_keys(store, service):
    ids = group(store, "a")
    put(store, "other/x.jpg")
    put(store, "other/y.jpg")
    body = service.recommend(RecommendRequest(positive=["a/original.jpg"], limit=2))
    assert {r["id"] for r in body["results"]} == {ids["small"], ids["grey"]} and body["model"] == "fake-model"
    assert all(r["similar"] for r in body["results"])
    body = service.recommend(RecommendRequest(positive=[ids["original"]], negative=["a/small.jpg"], prefix="other/"))
    assert {r["key"] for r in body["results"]} <= {"other/x.jpg", "other/y.jpg"}
    assert ids["grey"] not in {r["id"] for r in service.recommend(RecommendRequest(positive=[ids["grey"]]))["results"]}
    strict = service.recommend(RecommendRequest(positive=["a/original.jpg"], similar_threshold=1.01))
    assert not any(r["similar"] for r in strict["results"])


def test_recommend_refusals(store, service):
    ids = group(store, "a")
    with pytest.raises(NotFound):
        service.recommend(RecommendRequest(positive=["no/such.jpg"]))
    opposite = put(store, "b/opposite.jpg", -vector_of("a/original.jpg"))
    with pytest.raises(InvalidRequest, match="cancel out"):
        service.recommend(RecommendRequest(positive=[ids["original"], opposite]))
    for kwargs in ({"positive": []}, {"positive": ["a"], "limit": 0}, {"positive": ["a"] * 101}):
        with pytest.raises(InvalidRequest):
            RecommendRequest(**kwargs)
