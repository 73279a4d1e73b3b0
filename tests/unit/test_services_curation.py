"""imgsim.services.curation with fakes: duplicate groups, resolving them safely (to the trash), recommendations."""

from __future__ import annotations

import numpy as np
import pytest
from fakes_services import (
    BUCKET,
    FakeEmbedder,
    link,
    put,
    settings,
    unit,
    vector_of,
)
from imgsim.dedupe import NOT_DUPLICATES_FIELD
from imgsim.errors import (
    Busy,
    InvalidRequest,
    KeepInTrash,
    NotADuplicate,
    NotDeletable,
    NotFound,
)
from imgsim.services import (
    CurationService,
    DuplicatesQuery,
    RecommendRequest,
    Resolution,
)
from imgsim.trash import Locks


@pytest.fixture
def service(store, objects):
    embedder = FakeEmbedder()
    return CurationService(settings(), embedder=lambda: embedder, store=lambda: store, objects=lambda: objects)


def near(name: str, amount: float = 0.1) -> np.ndarray:
    vector = vector_of(name) + amount * unit("noise " + name)
    return vector / np.linalg.norm(vector)


def group(store, folder: str, score: float = 0.9) -> dict[str, str]:
    """A picture and two copies of it, linked by the indexer (each copy found the original)."""
    original = put(store, f"{folder}/original.jpg", width=1000, height=800)
    ids = {"original": original,
           "small": put(store, f"{folder}/small.jpg", near(f"{folder}/original.jpg"), width=500, height=400),
           "grey": put(store, f"{folder}/grey.jpg", near(f"{folder}/original.jpg", 0.2), width=700, height=560)}
    link(store, ids["small"], original, score)
    link(store, original, ids["grey"], score - 0.05)  # links count in both directions
    return ids


def test_duplicate_groups_page_by_cursor(store, service):
    ids = {folder: group(store, folder) for folder in ("a", "b", "c")}
    first = service.duplicates(DuplicatesQuery(limit=2))
    assert first["threshold"] == 0.74 and len(first["groups"]) == 2 and first["next_cursor"]
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


def test_groups_are_a_partition_around_the_best_copy(store, service):
    """A chain a - b - c (a and c not duplicates): one group around the best copy with its direct duplicates only."""
    a = put(store, "x/a.jpg", width=100, height=100)
    b = put(store, "x/b.jpg", width=900, height=900)
    c = put(store, "x/c.jpg", width=50, height=50)
    d = put(store, "x/d.jpg", width=40, height=40)
    link(store, a, b)
    link(store, c, b)
    link(store, d, c)  # d is a duplicate of c only: c is taken by b's group, d stays alone
    groups = service.duplicates(DuplicatesQuery())["groups"]
    assert [(g["keep"], sorted(m["id"] for m in g["members"])) for g in groups] == [(b, sorted([a, b, c]))]


def test_resolve_moves_to_the_trash_and_remembers_not_duplicates(store, objects, service):
    ids = group(store, "a")
    result = service.resolve(Resolution(keep=ids["original"], remove=[ids["small"]], not_duplicates=[ids["grey"]]))
    removed = result["removed"]
    assert result["keep"] == ids["original"] and result["not_duplicates"] == [ids["grey"]]
    assert [(r["id"], r["key"], r["status"]) for r in removed] == [(ids["small"], "a/small.jpg", "trashed")]
    assert objects.deleted == [(BUCKET, "a/small.jpg")]
    assert objects.copied == [(BUCKET, "a/small.jpg", objects.copied[0][2])] and objects.copied[0][2].startswith(".trash/")
    assert store.get(ids["small"]) is None  # gone from search and the groups at once
    assert store.get(ids["grey"]).payload[NOT_DUPLICATES_FIELD] == [ids["original"]]
    assert store.get(ids["original"]).payload[NOT_DUPLICATES_FIELD] == [ids["grey"]]
    assert service.duplicates(DuplicatesQuery())["groups"] == []
    # Retried (the answer was lost): harmless, the same image reported in the trash.
    again = service.resolve(Resolution(keep=ids["original"], remove=[ids["small"]]))
    assert [(r["id"], r["status"], r["trash_id"]) for r in again["removed"]] == [
        (ids["small"], "trashed", removed[0]["trash_id"])]
    assert objects.deleted == [(BUCKET, "a/small.jpg")]


def test_resolve_refuses_images_that_are_not_duplicates_of_the_keep(store, objects, service):
    ids = group(store, "a")
    stranger = put(store, "a/stranger.jpg")
    with pytest.raises(NotADuplicate, match=stranger):
        service.resolve(Resolution(keep=ids["original"], remove=[ids["small"], stranger]))
    assert objects.deleted == [] and store.get(ids["small"]) is not None


def test_resolve_with_keep_and_remove_swapped_never_removes_both(store, objects, service):
    ids = group(store, "a")
    service.resolve(Resolution(keep=ids["original"], remove=[ids["small"]]))
    with pytest.raises(KeepInTrash):
        service.resolve(Resolution(keep=ids["small"], remove=[ids["original"]]))
    assert store.get(ids["original"]) is not None and objects.deleted == [(BUCKET, "a/small.jpg")]


def test_resolve_waits_for_nobody_while_another_holds_a_lease(store, objects, service):
    ids = group(store, "a")
    with Locks(store).held([ids["small"]]), pytest.raises(Busy):
        service.resolve(Resolution(keep=ids["original"], remove=[ids["small"]]))
    assert objects.deleted == []
    service.resolve(Resolution(keep=ids["original"], remove=[ids["small"]]))  # the lease is given back
    assert objects.deleted == [(BUCKET, "a/small.jpg")]


def test_resolve_checks_everything_before_changing_anything(store, objects, service):
    ids = group(store, "a")
    local = put(store, "/home/me/a.jpg", bucket=None)
    link(store, local, ids["original"])
    missing = "00000000-0000-0000-0000-000000000000"
    bad = [
        (InvalidRequest, Resolution(keep=ids["original"])),
        (InvalidRequest, Resolution(keep=ids["original"], remove=[ids["original"]])),
        (InvalidRequest, Resolution(keep=ids["original"], remove=[ids["small"]], not_duplicates=[ids["small"]])),
        (InvalidRequest, Resolution(keep="x", remove=[ids["small"]])),
        (NotFound, Resolution(keep=ids["original"], remove=[ids["small"], missing])),
        (NotFound, Resolution(keep=missing, remove=[ids["small"]])),
        (NotDeletable, Resolution(keep=ids["original"], remove=[ids["small"], local])),
    ]
    for error, resolution in bad:
        with pytest.raises(error):
            service.resolve(resolution)
    assert objects.deleted == [] and objects.copied == []


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
