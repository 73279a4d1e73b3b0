"""The store contract: every behaviour imgsim relies on, run against every backend.

``backend`` (tests/conftest.py) is each of: Qdrant Edge (embedded) and ``ServerStore`` on
qdrant-client's in-memory mode, the stand-in for a Qdrant server's API. Anything that
only one backend has (Edge's lock and crash safety, the REST error paths) lives in
test_edge.py and test_server_errors.py beside this file.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from imgsim import (
    CollectionMismatch,
    Settings,
    StoredPoint,
    open_store,
    percent_from_score,
    point_id_for_file,
    point_id_for_object,
    score_from_cosine,
)
from imgsim.ordering import TOMBSTONE_SUFFIX, OrderedStore, Removal
from imgsim.store import (
    FieldEquals,
    FieldIn,
    FieldMissing,
    FieldRange,
    IdIn,
    PayloadIndex,
    StorageOptions,
    Where,
    field_unchanged,
    in_bucket,
    key_dirs,
)
from imgsim.store.scoped import ALL_TENANTS, TenantView, scoped
from imgsim.store.types import INDEXED_FIELDS
from store_backends import make_store

DIM = 4


def unit(*values: float) -> list[float]:
    vector = np.asarray(values, dtype=np.float64)
    return list(vector / np.linalg.norm(vector))


def point(key: str, vector: list[float], bucket: str = "imgsim-images", **payload) -> StoredPoint:
    return StoredPoint(
        point_id_for_object(bucket, key), vector, {"key": key, "dirs": key_dirs(key), "bucket": bucket, **payload}
    )


@pytest.fixture
def memory_store(backend, tmp_path):
    store = make_store(backend, tmp_path, DIM)
    yield store
    store.close()


# -- collection --------------------------------------------------------------------------------


def test_collection_is_created_on_first_use_and_reopened_with_its_points(backend, tmp_path):
    store = make_store(backend, tmp_path, DIM)
    assert store.count() == 0  # created on first use
    store.upsert([point("photos/a.jpg", unit(1, 0, 0, 0))])
    store.ensure_collection()  # once per store: a second call is a no-op
    assert store.count() == 1
    if backend == "edge":  # a folder on disk: close, reopen, still there
        store.close()
        store = make_store(backend, tmp_path, DIM)
        assert store.count() == 1
        assert store.find_by_key("photos/a.jpg").payload["key"] == "photos/a.jpg"
    store.close()


def test_collection_with_another_dimension_is_refused_and_left_alone(backend, tmp_path):
    first = make_store(backend, tmp_path, DIM + 1, collection="images")
    first.upsert([point("photos/a.jpg", unit(1, 0, 0, 0, 0))])
    if backend == "edge":
        first.close()
        other = make_store(backend, tmp_path, DIM, collection="images")
    else:  # same server: a second store on the same client
        from imgsim.store.server import ServerStore

        other = ServerStore(first._client, "images", dim=DIM, owns_client=False)
    with pytest.raises(CollectionMismatch, match="collection 'images' has vectors of size 5 .*needs size 4 with Cosine"):
        other.ensure_collection()
    with pytest.raises(CollectionMismatch):
        other.upsert([point("photos/b.jpg", unit(1, 0, 0, 0))])
    other.close()
    again = make_store(backend, tmp_path, DIM + 1) if backend == "edge" else first
    assert again.count() == 1  # never recreated
    again.close()
    if again is not first:
        first.close()


def test_store_from_settings_on_disk_and_in_memory(tmp_path):
    on_disk = open_store(Settings(qdrant_path=str(tmp_path / "q"), collection="photos"), dim=DIM)
    on_disk.upsert([point("a.jpg", unit(1, 1, 0, 0))])
    assert on_disk.count() == 1 and on_disk.collection == "photos" and on_disk.backend == "edge"
    on_disk.close()
    memory = open_store(Settings(qdrant_path=":memory:"), dim=DIM)
    memory.upsert([point("a.jpg", unit(1, 1, 0, 0))])
    assert memory.count() == 1
    folder = memory._folder.root
    memory.close()
    assert not folder.exists()  # a throwaway store leaves nothing behind


# -- ids ---------------------------------------------------------------------------------------


def test_object_ids_are_stable_uuid5_values():
    # A fixed value: changing the namespace would silently duplicate every indexed object.
    assert point_id_for_object("imgsim-images", "photos/cat.jpg") == "fa36fd9f-8e14-563e-a4aa-0ab72e343386"
    assert point_id_for_object("imgsim-images", "photos/cat.jpg") == point_id_for_object("imgsim-images", "photos/cat.jpg")


def test_ids_are_distinct_per_bucket_key_and_file():
    ids = {
        point_id_for_object("imgsim-images", "photos/cat.jpg"),
        point_id_for_object("imgsim-images", "photos/cat2.jpg"),
        point_id_for_object("other-bucket", "photos/cat.jpg"),
        point_id_for_object("imgsim-images", "photos/Cat.jpg"),
        point_id_for_file("/data/photos/cat.jpg"),
        point_id_for_file("/data/photos/dog.jpg"),
    }
    assert len(ids) == 6


def test_file_ids_use_the_absolute_normalized_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert point_id_for_file("cat.jpg") == point_id_for_file(tmp_path / "cat.jpg")
    assert point_id_for_file("x/../cat.jpg") == point_id_for_file(str(tmp_path / "cat.jpg"))


def test_upserting_the_same_object_twice_keeps_one_point(memory_store):
    memory_store.upsert([point("photos/a.jpg", unit(1, 0, 0, 0), etag="1")])
    memory_store.upsert([point("photos/a.jpg", unit(0, 1, 0, 0), etag="2")])
    assert memory_store.count() == 1
    record = memory_store.get(point_id_for_object("imgsim-images", "photos/a.jpg"), with_vector=True)
    assert record.payload["etag"] == "2"
    np.testing.assert_allclose(record.vector, unit(0, 1, 0, 0), atol=1e-6)


def test_get_retrieve_find_and_delete(memory_store):
    a, b = point("photos/a.jpg", unit(1, 0, 0, 0)), point("photos/b.jpg", unit(0, 1, 0, 0), bucket="other")
    memory_store.upsert([a, b])
    assert {r.id for r in memory_store.retrieve([a.id, b.id])} == {a.id, b.id}
    assert memory_store.find_by_key("photos/b.jpg").id == b.id
    assert memory_store.find_by_key("photos/b.jpg", bucket="imgsim-images") is None
    assert memory_store.find_by_key("photos/nope.jpg") is None
    memory_store.delete([a.id])
    assert memory_store.get(a.id) is None
    assert memory_store.count() == 1
    memory_store.delete([])  # nothing to do is not an error


# -- scores ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cosine,score,percent",
    [
        (-0.7, 0.0, 0.0),
        (0.0, 0.0, 0.0),
        (0.12345, 0.12345, 12.3),
        (0.12355, 0.12355, 12.4),
        (0.5, 0.5, 50.0),
        (0.99949, 0.99949, 99.9),
        (0.99951, 0.99951, 100.0),
        (1.0000002, 1.0, 100.0),  # float error above 1 is clamped
    ],
)
def test_score_and_percent_mapping(cosine, score, percent):
    assert score_from_cosine(cosine) == pytest.approx(score)
    assert percent_from_score(score_from_cosine(cosine)) == percent


def test_search_scores_are_clamped_cosines(memory_store):
    query = unit(1, 0, 0, 0)
    memory_store.upsert(
        [
            point("same.jpg", unit(1, 0, 0, 0)),
            point("sixty-degrees.jpg", unit(0.5, np.sqrt(0.75), 0, 0)),
            point("opposite.jpg", unit(-1, 0, 0, 0)),
        ]
    )
    hits = memory_store.search(query, limit=10)
    assert [h.payload["key"] for h in hits] == ["same.jpg", "sixty-degrees.jpg", "opposite.jpg"]
    assert [h.score for h in hits] == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)
    assert [h.percent for h in hits] == [100.0, 50.0, 0.0]
    assert all(0.0 <= h.score <= 1.0 for h in hits)
    assert [h.payload["key"] for h in memory_store.search(query, min_score=0.6)] == ["same.jpg"]


# -- prefix search and exclusions --------------------------------------------------------------

KEYS = [
    "photos/cats/a.jpg",
    "photos/cats/b.jpg",
    "photos/cats/kittens/c.jpg",
    "photos/catalog.jpg",
    "photos/dogs/d.jpg",
    "other/cats/e.jpg",
    "top.jpg",
]


@pytest.fixture
def folder_store(memory_store):
    rng = np.random.default_rng(3)
    memory_store.upsert([point(key, unit(*rng.normal(size=DIM))) for key in KEYS])
    return memory_store


@pytest.mark.parametrize(
    "prefix,expected",
    [
        (None, KEYS),
        ("photos/", KEYS[:5]),
        ("photos/cats/", KEYS[:3]),
        ("photos/cats/kittens/", KEYS[2:3]),
        ("photos/cat", KEYS[:4]),  # partial last segment: catalog.jpg too
        ("photos/cats/a", KEYS[:1]),
        ("photos/cats/a.jpg", KEYS[:1]),
        ("t", ["top.jpg"]),
        ("nothing/", []),
    ],
)
def test_prefix_search(folder_store, prefix, expected):
    hits = folder_store.search(unit(1, 1, 1, 1), limit=100, prefix=prefix)
    assert sorted(h.payload["key"] for h in hits) == sorted(expected)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_key_dirs_lists_every_folder():
    assert key_dirs("a/b/c.jpg") == ["a/", "a/b/"]
    assert key_dirs("c.jpg") == []


def test_partial_prefix_pages_past_non_matching_points(memory_store):
    # 150 near points that do not match, then 3 far ones that do: the post-filter must page on.
    near = [point(f"photos/dogs/{i}.jpg", unit(1, 0.01 * i, 0, 0)) for i in range(150)]
    far = [point(f"photos/cats{i}.jpg", unit(0, 0, 1, 0.1 * i)) for i in range(3)]
    memory_store.upsert(near + far)
    hits = memory_store.search(unit(1, 0, 0, 0), limit=2, prefix="photos/cat")
    assert len(hits) == 2 and all(h.payload["key"].startswith("photos/cats") for h in hits)


def test_exclude_ids(folder_store):
    query = unit(1, 1, 1, 1)
    best = folder_store.search(query, limit=1)[0]
    hits = folder_store.search(query, limit=100, exclude_ids=[best.id])
    assert best.id not in {h.id for h in hits} and len(hits) == len(KEYS) - 1
    hits = folder_store.search(query, limit=100, prefix="photos/cats/", exclude_ids=[point_id_for_object("imgsim-images", KEYS[0])])
    assert sorted(h.payload["key"] for h in hits) == KEYS[1:3]


def test_limit_is_respected(folder_store):
    assert len(folder_store.search(unit(1, 0, 0, 0), limit=3)) == 3


def test_real_embeddings_find_the_same_photo_first(embedder, photos, backend, tmp_path):
    store = make_store(backend, tmp_path, embedder.dim)
    chosen = photos[::200]
    vectors = embedder.embed_many([p.read_bytes() for p in chosen])
    store.upsert([StoredPoint(point_id_for_file(p), v, {"key": str(p), "dirs": key_dirs(str(p))}) for p, v in zip(chosen, vectors)])
    hits = store.search(vectors[3], limit=3)
    assert hits[0].payload["key"] == str(chosen[3]) and hits[0].percent == 100.0
    assert hits[1].score < hits[0].score
    store.close()


# -- conditional writes (used by the indexer against concurrent events) ------------------------


def etag_is(value: str) -> Where:
    return Where(must=(FieldEquals("etag", value),))


def test_upsert_with_update_filter_only_overwrites_matching_points(memory_store):
    memory_store.upsert([point("photos/a.jpg", unit(1, 0, 0, 0), etag="1")])
    memory_store.upsert([point("photos/a.jpg", unit(0, 1, 0, 0), etag="2")], only_if=etag_is("stale"))
    assert memory_store.find_by_key("photos/a.jpg").payload["etag"] == "1"  # condition false: kept
    memory_store.upsert([point("photos/a.jpg", unit(0, 1, 0, 0), etag="2")], only_if=etag_is("1"))
    assert memory_store.find_by_key("photos/a.jpg").payload["etag"] == "2"  # condition true: replaced
    memory_store.upsert([point("photos/new.jpg", unit(0, 0, 1, 0), etag="9")], only_if=etag_is("1"))
    assert memory_store.find_by_key("photos/new.jpg") is not None  # new ids are always inserted


def test_delete_matching_deletes_only_what_matches(memory_store):
    memory_store.upsert([point("photos/a.jpg", unit(1, 0, 0, 0), etag="1"), point("photos/b.jpg", unit(0, 1, 0, 0), etag="2")])
    memory_store.delete_where(etag_is("1"))
    assert memory_store.find_by_key("photos/a.jpg") is None
    assert memory_store.find_by_key("photos/b.jpg") is not None


def test_set_fields_changes_only_existing_matching_points(memory_store):
    """A compare-and-set on some fields: the others are kept, a point that is gone is never created again."""
    a = point("photos/a.jpg", unit(1, 0, 0, 0), etag="1")
    memory_store.upsert([a])
    memory_store.set_fields(etag_is("stale"), {"links": ["x"]})
    assert "links" not in memory_store.get(a.id).payload  # condition false: unchanged
    memory_store.set_fields(Where(must=(IdIn((a.id,)),)), {"links": ["x", "y"], "scores": {"x": 0.9}})
    stored = memory_store.get(a.id, with_vector=True)
    assert stored.payload["links"] == ["x", "y"] and stored.payload["scores"] == {"x": 0.9}
    assert stored.payload["etag"] == "1" and stored.vector == pytest.approx(unit(1, 0, 0, 0))
    memory_store.delete([a.id])
    memory_store.set_fields(Where(must=(IdIn((a.id,)),)), {"links": []})
    assert memory_store.get(a.id) is None and memory_store.count() == 0
    with pytest.raises(ValueError, match="non-empty filter"):
        memory_store.set_fields(Where(), {"links": []})


def test_delete_where_refuses_an_empty_filter(memory_store):
    memory_store.upsert([point("photos/a.jpg", unit(1, 0, 0, 0))])
    with pytest.raises(ValueError, match="non-empty filter"):
        memory_store.delete_where(Where())
    assert memory_store.count() == 1


def test_compare_and_set_per_id_with_missing_field(memory_store):
    """``field_unchanged``: each id must still carry the value read (None: the field is not set)."""
    a = point("photos/a.jpg", unit(1, 0, 0, 0), sequencer="0A")
    b = point("photos/b.jpg", unit(0, 1, 0, 0))  # no sequencer yet
    memory_store.upsert([a, b])
    newer_a = StoredPoint(a.id, unit(0, 0, 1, 0), {**a.payload, "sequencer": "0B"})
    newer_b = StoredPoint(b.id, unit(0, 0, 1, 0), {**b.payload, "sequencer": "01"})
    # Read state that is out of date for a (it holds 0A, we claim 09), right for b.
    memory_store.upsert([newer_a, newer_b], only_if=field_unchanged("sequencer", {a.id: "09", b.id: None}))
    assert memory_store.get(a.id).payload["sequencer"] == "0A"
    assert memory_store.get(b.id).payload["sequencer"] == "01"
    memory_store.delete_where(field_unchanged("sequencer", {a.id: "0A", b.id: "00"}))
    assert memory_store.get(a.id) is None and memory_store.get(b.id) is not None


def test_concurrent_conditional_writers_leave_exactly_one_winner(memory_store):
    """Eight threads race a compare-and-set from the same read state: one wins, the rest see it."""
    base = point("photos/race.jpg", unit(1, 0, 0, 0), sequencer="10")
    memory_store.upsert([base])
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            mine = StoredPoint(base.id, unit(1, n, 0, 0), {**base.payload, "sequencer": f"{20 + n}"})
            memory_store.upsert([mine], only_if=field_unchanged("sequencer", {base.id: "10"}))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    winner = memory_store.get(base.id).payload["sequencer"]
    assert winner in {f"{20 + n}" for n in range(8)} and memory_store.count() == 1


def test_scroll_pages_through_everything_in_id_order(memory_store):
    keys = [f"photos/s{i:03}.jpg" for i in range(25)] + ["other/x.jpg"]
    memory_store.upsert([point(k, unit(1, i, 0, 1)) for i, k in enumerate(keys)])
    seen: list[str] = []
    offset = None
    pages = 0
    while True:
        records, offset = memory_store.scroll(limit=10, offset=offset)
        seen.extend(r.id for r in records)
        pages += 1
        if offset is None:
            break
    assert pages == 3 and len(seen) == len(set(seen)) == 26
    assert seen == sorted(seen)
    # A filter, a payload subset, and vectors on request.
    records, _ = memory_store.scroll(where=Where(must=(FieldIn("dirs", ("other/",)),)), fields=["key"])
    assert [r.payload for r in records] == [{"key": "other/x.jpg"}] and records[0].vector is None
    records, _ = memory_store.scroll(where=Where(must=(FieldEquals("key", "photos/s001.jpg"),)), with_vectors=True)
    np.testing.assert_allclose(records[0].vector, unit(1, 1, 0, 1), atol=1e-6)


def test_count_with_filters(memory_store):
    memory_store.upsert([point("a/1.jpg", unit(1, 0, 0, 0)), point("a/2.jpg", unit(0, 1, 0, 0), mark="x"),
                         point("b/3.jpg", unit(0, 0, 1, 0), bucket="other")])
    assert memory_store.count() == 3
    assert memory_store.count(in_bucket("other")) == 1
    assert memory_store.count(Where(must=(FieldMissing("mark"),))) == 2
    assert memory_store.count(Where(must_not=(IdIn((point_id_for_object("imgsim-images", "a/1.jpg"),)),))) == 2
    assert memory_store.count(Where(should=(FieldEquals("mark", "x"), FieldIn("dirs", ("b/",))))) == 2


def test_search_batch_answers_each_query_as_search_would(memory_store):
    memory_store.upsert([point("a/1.jpg", unit(1, 0, 0, 0), kind="x"), point("a/2.jpg", unit(1, 1, 0, 0), kind="y"),
                         point("b/3.jpg", unit(0, 1, 1, 0), kind="x")])
    only_x = Where(must=(FieldEquals("kind", "x"),))
    requests = [(unit(1, 0, 0, 0), 2, None), (unit(0, 1, 0, 0), 3, only_x), (unit(0, 0, 0, 1), 1, None)]
    batched = memory_store.search_batch(requests)
    assert len(batched) == 3
    for (vector, limit, where), hits in zip(requests, batched):
        single = memory_store.search(vector, limit=limit, where=where)
        assert [(h.id, round(h.score, 5)) for h in hits] == [(h.id, round(h.score, 5)) for h in single]
    assert [h.payload["key"] for h in batched[1]] == ["b/3.jpg", "a/1.jpg"]
    assert memory_store.search_batch([]) == []
    # A minimum score stops each query there; ``fields`` keeps only those payload keys.
    (near,) = memory_store.search_batch([(unit(1, 0, 0, 0), 3, None)], min_score=0.6, fields=("kind", "absent"))
    assert [(h.payload, round(h.score, 3)) for h in near] == [({"kind": "x"}, 1.0), ({"kind": "y"}, 0.707)]


def test_range_filters_on_numbers_and_instants(memory_store):
    memory_store.upsert([
        point("r/small.jpg", unit(1, 0, 0, 0), width=100, indexed_at="2026-01-01T00:00:00.000Z"),
        point("r/mid.jpg", unit(1, 0.2, 0, 0), width=640, indexed_at="2026-06-01T12:00:00.000Z"),
        point("r/large.jpg", unit(1, 0.4, 0, 0), width=4000, indexed_at="2026-11-26T08:30:00.000Z"),
    ])
    assert memory_store.count(Where(must=(FieldRange("width", gte=640),))) == 2
    assert memory_store.count(Where(must=(FieldRange("width", gte=101, lte=3999),))) == 1
    after = Where(must=(FieldRange("indexed_at", gte="2026-06-01T12:00:00Z", datetime=True),))
    assert sorted(h.payload["key"] for h in memory_store.search(unit(1, 0, 0, 0), where=after)) == [
        "r/large.jpg", "r/mid.jpg"]
    before = Where(must=(FieldRange("indexed_at", lte="2026-03-01T00:00:00+00:00", datetime=True),))
    assert [h.payload["key"] for h in memory_store.search(unit(1, 0, 0, 0), where=before)] == ["r/small.jpg"]


def test_search_with_an_extra_filter_and_score_threshold(memory_store):
    memory_store.upsert([point("a/1.jpg", unit(1, 0, 0, 0)), point("a/2.jpg", unit(1, 0.1, 0, 0), bucket="other"),
                         point("a/3.jpg", unit(0, 1, 0, 0))])
    hits = memory_store.search(unit(1, 0, 0, 0), where=in_bucket("imgsim-images"), min_score=0.5)
    assert [h.payload["key"] for h in hits] == ["a/1.jpg"]


def test_tombstones_live_in_a_companion_collection(memory_store):
    """The ordering protocol's state: a delete leaves a tombstone that searches never see."""
    ordered = OrderedStore(memory_store)
    p = point("photos/gone.jpg", unit(1, 0, 0, 0), sequencer="05")
    memory_store.upsert([p])
    state = ordered.read_state([p.id])
    assert ordered.remove([Removal(p.id, "06", "imgsim-images", "photos/gone.jpg")], state) == {}
    assert memory_store.count() == 0
    assert ordered.tombstones.collection == "images" + TOMBSTONE_SUFFIX
    assert ordered.tombstones.get(p.id).payload["sequencer"] == "06"
    assert memory_store.search(unit(1, 0, 0, 0)) == []
    state = ordered.read_state([p.id])
    assert state.is_stale(p.id, "05", is_put=True) and not state.is_stale(p.id, "07", is_put=True)


@pytest.mark.parametrize("quantization", ["none", "int8", "binary"])
def test_every_quantization_setting_stores_and_finds(backend, tmp_path, quantization):
    store = make_store(backend, tmp_path, 64, options=StorageOptions(quantization=quantization))
    rng = np.random.default_rng(11)
    vectors = rng.normal(size=(300, 64))
    store.upsert([StoredPoint(point_id_for_file(f"/v/{i}"), unit(*v), {"key": f"/v/{i}", "dirs": ["/v/"]})
                  for i, v in enumerate(vectors)])
    store.optimize()  # Edge: builds the HNSW and quantized copies; servers do it themselves
    hits = store.search(unit(*vectors[42]), limit=3)
    assert hits[0].payload["key"] == "/v/42" and hits[0].percent == 100.0
    store.close()


# -- tenants -------------------------------------------------------------------------------------


def test_the_tenant_field_has_a_tenant_keyword_index(memory_store):
    """Qdrant's multitenancy: one collection, the tenant field indexed as a keyword with is_tenant."""
    indexes = memory_store.payload_indexes()
    assert indexes["tenant"] == PayloadIndex("keyword", is_tenant=True)
    assert indexes["key"] == PayloadIndex("keyword", is_tenant=False)
    assert set(INDEXED_FIELDS) <= set(indexes)


def test_a_collection_from_before_tenants_gets_the_tenant_index_when_opened(backend, tmp_path, monkeypatch):
    module = "imgsim.store.edge" if backend == "edge" else "imgsim.store.server"
    with monkeypatch.context() as older:
        older.setattr(f"{module}.INDEXED_FIELDS", ("key", "dirs", "dup_links"))
        first = make_store(backend, tmp_path, DIM)
        first.upsert([point("photos/a.jpg", unit(1, 0, 0, 0))])
        assert "tenant" not in first.payload_indexes()
    if backend == "edge":
        first.close()
        again = make_store(backend, tmp_path, DIM)
    else:  # the same server, opened anew
        from imgsim.store.server import ServerStore

        again = ServerStore(first._client, "images", dim=DIM, retries=0)
    try:
        assert again.payload_indexes()["tenant"] == PayloadIndex("keyword", is_tenant=True)
        assert again.count() == 1
    finally:
        again.close()
        if backend == "server":
            first.close()


def tenants_store(store):
    """Two tenants' photos and one of no tenant, the same picture in each."""
    store.upsert([
        point("tenants/acme/a.jpg", unit(1, 0, 0, 0), tenant="acme", etag="e1"),
        point("tenants/acme/b.jpg", unit(0, 1, 0, 0), tenant="acme", etag="e2"),
        point("tenants/globex/a.jpg", unit(1, 0, 0, 0), tenant="globex", etag="e3"),
        point("shared/a.jpg", unit(1, 0, 0, 0), etag="e4"),
    ])
    return {p: point_id_for_object("imgsim-images", p)
            for p in ("tenants/acme/a.jpg", "tenants/acme/b.jpg", "tenants/globex/a.jpg", "shared/a.jpg")}


def test_a_tenant_view_reads_only_its_tenant(memory_store):
    ids = tenants_store(memory_store)
    acme, nobody = scoped(memory_store, "acme"), scoped(memory_store, None)
    assert scoped(memory_store, ALL_TENANTS) is memory_store
    assert acme.count() == 2 and nobody.count() == 1 and scoped(memory_store, "initech").count() == 0
    assert {h.payload["key"] for h in acme.search(unit(1, 0, 0, 0), limit=10)} == {"tenants/acme/a.jpg",
                                                                                  "tenants/acme/b.jpg"}
    assert [h.payload["key"] for h in nobody.search(unit(1, 0, 0, 0), limit=10)] == ["shared/a.jpg"]
    assert acme.get(ids["tenants/globex/a.jpg"]) is None and acme.get(ids["shared/a.jpg"]) is None
    assert nobody.get(ids["tenants/acme/a.jpg"]) is None and nobody.get(ids["shared/a.jpg"]) is not None
    assert acme.find_by_key("tenants/globex/a.jpg") is None
    assert acme.find_by_key("tenants/acme/b.jpg").id == ids["tenants/acme/b.jpg"]
    assert {r.id for r in acme.retrieve(list(ids.values()))} == {ids["tenants/acme/a.jpg"], ids["tenants/acme/b.jpg"]}
    records, _ = acme.scroll(limit=10)
    assert {r.payload["tenant"] for r in records} == {"acme"}
    batch = acme.search_batch([(unit(1, 0, 0, 0), 10, None), (unit(0, 1, 0, 0), 1, None)])
    assert {h.payload["tenant"] for hits in batch for h in hits} == {"acme"}


def test_a_tenant_view_writes_only_its_tenant(memory_store):
    ids = tenants_store(memory_store)
    acme = scoped(memory_store, "acme")
    acme.delete([ids["tenants/globex/a.jpg"], ids["shared/a.jpg"]])  # not acme's: nothing happens
    acme.set_fields(Where(must=(IdIn((ids["tenants/globex/a.jpg"],)),)), {"flag": 1})
    assert memory_store.count() == 4 and "flag" not in memory_store.get(ids["tenants/globex/a.jpg"]).payload
    with pytest.raises(ValueError):  # a point of another tenant, written through acme's view
        acme.upsert([point("tenants/globex/c.jpg", unit(0, 0, 1, 0), tenant="globex")])
    # An id acme does not own is never overwritten through its view, even with acme's payload.
    foreign = StoredPoint(ids["tenants/globex/a.jpg"], unit(0, 0, 0, 1), {"key": "x", "tenant": "acme"})
    acme.upsert([foreign])
    assert memory_store.get(ids["tenants/globex/a.jpg"]).payload["tenant"] == "globex"
    acme.delete([ids["tenants/acme/a.jpg"]])
    assert memory_store.count() == 3 and memory_store.get(ids["tenants/acme/a.jpg"]) is None
    # The trash companion is scoped like the collection; the leases are shared.
    assert isinstance(acme.companion("_trash", dim=DIM), TenantView)
    assert not isinstance(acme.companion("_locks", dim=1), TenantView)
