"""Two reviewers at once, on both store backends and S3 (moto): resolving the same pair with keep and remove swapped
never removes both copies, and a single delete racing a resolve of the same images leaves one of them. Every
round starts both operations behind a barrier, so they really overlap."""

from __future__ import annotations

import functools
import threading
from collections import Counter

import boto3
import pytest
from imgsim.dedupe import Link as DupLink
from imgsim.dedupe import link_fields
from imgsim.errors import ImgsimError
from imgsim.ids import point_id_for_object
from imgsim.objects import S3Objects
from imgsim.services import CurationService, Resolution, TrashService
from imgsim.settings import ApiSettings
from imgsim.store import IdIn, StoredPoint, Where
from moto import mock_aws

BUCKET = "race-images"
ROUNDS = 12


@pytest.fixture
def s3(monkeypatch):
    for name, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client


def pair(store, s3, n: int) -> tuple[str, str]:
    """Two copies of one picture, linked as the indexer links them."""
    ids = []
    vector = [1.0] + [0.0] * (store.dim - 1)
    for name in ("a", "b"):
        key = f"round{n}/{name}.jpg"
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"jpeg bytes " + key.encode())
        point_id = point_id_for_object(BUCKET, key)
        store.upsert([StoredPoint(point_id, vector, {"bucket": BUCKET, "key": key, "dirs": [], "etag": name,
                                                     "width": 100, "height": 100})])
        ids.append(point_id)
    store.set_fields(Where(must=(IdIn((ids[1],)),)), link_fields([DupLink(ids[0], 0.97, "a")]))
    return ids[0], ids[1]


def at_once(*actions) -> list[object]:
    barrier = threading.Barrier(len(actions))
    results: list[object] = [None] * len(actions)

    def run(n: int) -> None:
        barrier.wait()
        try:
            results[n] = actions[n]()
        except ImgsimError as exc:
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(actions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def services(store, s3):
    settings = ApiSettings(images_bucket=BUCKET, api_key="k")
    objects = S3Objects(lambda: s3)
    trash = TrashService(settings, store=lambda: store, objects=lambda: objects)
    curation = CurationService(settings, embedder=lambda: None, store=lambda: store,  # type: ignore[arg-type, return-value]
                               objects=lambda: objects, trash=trash)
    return curation, trash


def live_copies(store, s3, a: str, b: str) -> int:
    in_store = len(store.retrieve([a, b]))
    objects = sum(1 for k in ("a", "b") for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="round").get("Contents", [])
                  if o["Key"].endswith(f"/{k}.jpg") and not o["Key"].startswith(".trash/")
                  and point_id_for_object(BUCKET, o["Key"]) in (a, b))
    assert in_store == objects  # the point and its object go together
    return in_store


def test_swapped_resolves_never_remove_every_copy(backend_store, s3):
    curation, _ = services(backend_store, s3)
    outcomes: Counter[str] = Counter()
    for n in range(ROUNDS):
        a, b = pair(backend_store, s3, n)
        results = at_once(functools.partial(curation.resolve, Resolution(keep=a, remove=[b])),
                          functools.partial(curation.resolve, Resolution(keep=b, remove=[a])))
        outcomes.update(type(r).__name__ if isinstance(r, Exception) else "resolved" for r in results)
        assert live_copies(backend_store, s3, a, b) >= 1, results
        assert sum(1 for r in results if isinstance(r, dict)) <= 1
    # Both kinds of losing happened over the rounds, or at least the race was lost by one side every time.
    assert outcomes["resolved"] >= 1 and outcomes["resolved"] + outcomes["Busy"] + outcomes["KeepInTrash"] == 2 * ROUNDS


def test_a_delete_racing_a_resolve_leaves_a_copy_or_was_asked_for(backend_store, s3):
    curation, trash = services(backend_store, s3)
    for n in range(ROUNDS):
        a, b = pair(backend_store, s3, 100 + n)
        results = at_once(functools.partial(curation.resolve, Resolution(keep=a, remove=[b])),
                          functools.partial(trash.delete, a))
        resolved, deleted = (not isinstance(r, Exception) for r in results)
        # Each operation either happened whole or not at all (the person deleting a asked for it; a resolve that
        # comes second finds its keep in the trash and removes nothing).
        assert live_copies(backend_store, s3, a, b) == 2 - int(resolved) - int(deleted)
