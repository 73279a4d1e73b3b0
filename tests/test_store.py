"""The Qdrant store (embedded mode), point ids, scores, prefix search and the retry policy."""

from __future__ import annotations

import time
from unittest import mock

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

import imgsim.store
from imgsim import (
    CollectionMismatch,
    Settings,
    StoredPoint,
    StoreError,
    StoreUnavailable,
    VectorStore,
    percent_from_score,
    point_id_for_file,
    point_id_for_object,
    score_from_cosine,
)
from imgsim.store import key_dirs

DIM = 4


def unit(*values: float) -> list[float]:
    vector = np.asarray(values, dtype=np.float64)
    return list(vector / np.linalg.norm(vector))


def point(key: str, vector: list[float], bucket: str = "imgsim-images", **payload) -> StoredPoint:
    return StoredPoint(
        point_id_for_object(bucket, key), vector, {"key": key, "dirs": key_dirs(key), "bucket": bucket, **payload}
    )


@pytest.fixture
def memory_store():
    store = VectorStore(QdrantClient(location=":memory:"), "images", dim=DIM, retries=0)
    yield store
    store.close()


# -- collection --------------------------------------------------------------------------------


def test_collection_is_created_with_the_model_dim_cosine_and_keyword_indexes():
    client = QdrantClient(location=":memory:")
    spy = mock.Mock(wraps=client)
    store = VectorStore(spy, "images", dim=DIM)
    store.ensure_collection()
    vectors = client.get_collection("images").config.params.vectors
    assert (vectors.size, vectors.distance) == (DIM, models.Distance.COSINE)
    indexed = {
        (call.args[1], call.kwargs["field_schema"]) for call in spy.create_payload_index.call_args_list
    }
    assert indexed == {("key", models.PayloadSchemaType.KEYWORD), ("dirs", models.PayloadSchemaType.KEYWORD)}
    store.ensure_collection()  # once per store, not per call
    assert spy.collection_exists.call_count == 1


@pytest.mark.parametrize(
    "existing",
    [
        models.VectorParams(size=DIM + 1, distance=models.Distance.COSINE),
        models.VectorParams(size=DIM, distance=models.Distance.DOT),
        models.VectorParams(size=DIM, distance=models.Distance.EUCLID),
        {"image": models.VectorParams(size=DIM, distance=models.Distance.COSINE)},
    ],
    ids=["other-dim", "dot", "euclid", "named-vectors"],
)
def test_existing_collection_that_does_not_match_is_refused_and_left_alone(existing):
    client = QdrantClient(location=":memory:")
    client.create_collection("images", vectors_config=existing)
    store = VectorStore(client, "images", dim=DIM)
    with pytest.raises(CollectionMismatch, match="collection 'images'"):
        store.ensure_collection()
    with pytest.raises(CollectionMismatch):
        store.upsert([point("photos/a.jpg", unit(1, 0, 0, 0))])
    assert client.get_collection("images").config.params.vectors == existing  # never recreated
    assert client.count("images").count == 0


def test_mismatch_message_says_what_differs_and_what_to_do():
    client = QdrantClient(location=":memory:")
    client.create_collection("images", vectors_config=models.VectorParams(size=512, distance=models.Distance.DOT))
    with pytest.raises(CollectionMismatch, match="size 512 with Dot distance.*needs size 4 with Cosine.*QDRANT_COLLECTION"):
        VectorStore(client, "images", dim=DIM).ensure_collection()


def test_store_on_disk_keeps_points_and_checks_the_collection_on_reopen(tmp_path):
    settings = Settings(qdrant_path=str(tmp_path / "qdrant"), collection="photos")
    store = VectorStore.from_settings(settings, dim=DIM)
    store.upsert([point("photos/a.jpg", unit(1, 0, 0, 0))])
    store.close()

    reopened = VectorStore.from_settings(settings, dim=DIM)
    assert reopened.count() == 1
    assert reopened.find_by_key("photos/a.jpg").payload["key"] == "photos/a.jpg"
    reopened.close()

    other_model = VectorStore.from_settings(settings, dim=DIM * 2)
    with pytest.raises(CollectionMismatch):
        other_model.count()
    other_model.close()


def test_memory_store_from_settings():
    store = VectorStore.from_settings(Settings(qdrant_path=":memory:"), dim=DIM)
    store.upsert([point("a.jpg", unit(1, 1, 0, 0))])
    assert store.count() == 1
    assert store.collection == "images"
    store.close()


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


def test_real_embeddings_find_the_same_photo_first(embedder, photos):
    store = VectorStore(QdrantClient(location=":memory:"), "images", dim=embedder.dim)
    chosen = photos[::200]
    vectors = embedder.embed_many([p.read_bytes() for p in chosen])
    store.upsert([StoredPoint(point_id_for_file(p), v, {"key": str(p), "dirs": key_dirs(str(p))}) for p, v in zip(chosen, vectors)])
    hits = store.search(vectors[3], limit=3)
    assert hits[0].payload["key"] == str(chosen[3]) and hits[0].percent == 100.0
    assert hits[1].score < hits[0].score


# -- retries -----------------------------------------------------------------------------------


def test_unreachable_server_is_store_unavailable_after_bounded_retries():
    # Port 9 (discard) is closed: connection refused at once.
    settings = Settings(qdrant_url="http://127.0.0.1:9", qdrant_retries=2, qdrant_timeout=1)
    store = VectorStore.from_settings(settings, dim=DIM)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="after 3 attempts"):
        store.search(unit(1, 0, 0, 0))
    assert time.monotonic() - started < 5  # short backoff, bounded
    store.close()


def fake_client(collection_exists_effects) -> mock.Mock:
    client = mock.Mock(spec=QdrantClient)
    client.collection_exists.side_effect = collection_exists_effects
    return client


def http_error(status: int) -> UnexpectedResponse:
    return UnexpectedResponse(status, "error", b'{"status": "error"}', httpx.Headers())


@pytest.fixture
def no_sleep(monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(imgsim.store.time, "sleep", sleeps.append)
    return sleeps


def test_transient_errors_are_retried_with_growing_backoff(no_sleep):
    client = fake_client([http_error(503), httpx.ConnectError("refused"), http_error(429), True])
    client.get_collection.return_value = mock.Mock(
        config=mock.Mock(params=mock.Mock(vectors=models.VectorParams(size=DIM, distance=models.Distance.COSINE)))
    )
    VectorStore(client, "images", dim=DIM, retries=3).ensure_collection()
    assert client.collection_exists.call_count == 4
    assert len(no_sleep) == 3 and no_sleep[0] < no_sleep[2] <= 2.0


def test_retries_stop_at_the_limit(no_sleep):
    client = fake_client([http_error(502)] * 10)
    with pytest.raises(StoreUnavailable, match="after 2 attempts.*502"):
        VectorStore(client, "images", dim=DIM, retries=1).ensure_collection()
    assert client.collection_exists.call_count == 2


def test_client_errors_are_not_retried(no_sleep):
    client = fake_client([http_error(400)])
    with pytest.raises(StoreError, match="HTTP 400") as info:
        VectorStore(client, "images", dim=DIM, retries=3).ensure_collection()
    assert not isinstance(info.value, StoreUnavailable)
    assert client.collection_exists.call_count == 1 and no_sleep == []


# -- conditional writes (used by the indexer against concurrent events) ------------------------


def etag_is(value: str) -> models.Filter:
    return models.Filter(must=[models.FieldCondition(key="etag", match=models.MatchValue(value=value))])


def test_upsert_with_update_filter_only_overwrites_matching_points(memory_store):
    memory_store.upsert([point("photos/a.jpg", unit(1, 0, 0, 0), etag="1")])
    memory_store.upsert([point("photos/a.jpg", unit(0, 1, 0, 0), etag="2")], update_filter=etag_is("stale"))
    assert memory_store.find_by_key("photos/a.jpg").payload["etag"] == "1"  # condition false: kept
    memory_store.upsert([point("photos/a.jpg", unit(0, 1, 0, 0), etag="2")], update_filter=etag_is("1"))
    assert memory_store.find_by_key("photos/a.jpg").payload["etag"] == "2"  # condition true: replaced
    memory_store.upsert([point("photos/new.jpg", unit(0, 0, 1, 0), etag="9")], update_filter=etag_is("1"))
    assert memory_store.find_by_key("photos/new.jpg") is not None  # new ids are always inserted


def test_delete_matching_deletes_only_what_matches(memory_store):
    memory_store.upsert([point("photos/a.jpg", unit(1, 0, 0, 0), etag="1"), point("photos/b.jpg", unit(0, 1, 0, 0), etag="2")])
    memory_store.delete_matching(etag_is("1"))
    assert memory_store.find_by_key("photos/a.jpg") is None
    assert memory_store.find_by_key("photos/b.jpg") is not None
