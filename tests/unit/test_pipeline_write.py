"""The ordered write stage and the embed stage: one event per key, triage against the stored state, payloads,
tombstones and compare-and-set verdicts (imgsim.ordering) on an in-memory embedded store."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import DIM, FakeEmbedder, encode, memory_store, picture
from imgsim.dedupe import LINKS_FIELD, NOT_DUPLICATES_FIELD, SIG_FIELD
from imgsim.errors import StoreUnavailable
from imgsim.pipeline import (
    DELETE,
    FAILED,
    INDEXED,
    PUT,
    SKIPPED,
    Embed,
    Item,
    ObjectEvent,
    OrderedWrite,
    file_event,
    newest_per_key,
)
from imgsim.store import StoredPoint

BUCKET = "pics"


@pytest.fixture
def store():
    with memory_store() as store:
        yield store


@pytest.fixture
def write(store):
    return OrderedWrite(store, "fake-model")


def event(key: str, action: str = PUT, sequencer: str | None = None, **kw) -> ObjectEvent:
    return ObjectEvent(f"m-{key}-{sequencer}", action, BUCKET, key, sequencer=sequencer, **kw)


def embedded(ev: ObjectEvent, seed: int, etag: str | None = "e1") -> tuple[Item, np.ndarray]:
    embedder = FakeEmbedder()
    item = Item(ev, size=123, etag=etag, image=embedder.decode(encode(picture(seed))))
    return item, Embed(embedder).run([item])[0]


def test_one_event_per_key_the_highest_sequencer_or_the_last_delivered():
    events = [event("a", sequencer="0A"), event("a", DELETE, "0C"), event("a", sequencer="0B"),
              event("b", sequencer="01"), event("c"), event("c")]
    kept, superseded = newest_per_key(events)
    assert [(e.key, e.sequencer, e.message_id) for e in kept] == [
        ("a", "0C", "m-a-0C"), ("b", "01", "m-b-01"), ("c", None, events[5].message_id)]
    assert sorted(e.sequencer or "-" for e in superseded) == ["-", "0A", "0B"]


def test_a_put_is_written_with_its_payload_and_a_redelivery_is_stale(write, store):
    ev = event("photos/cat.jpg", sequencer="05", etag="e1")
    state = write.read_state([ev])
    puts, deletes, skips = write.triage([ev], state)
    assert (puts, deletes, skips) == ([ev], [], [])
    item, vector = embedded(ev, 1)
    point = write.point(item, vector, {}, state)
    assert write.write([point], state) == {ev.point_id: (INDEXED, "", None)}
    payload = store.get(ev.point_id).payload
    assert {k: payload[k] for k in ("source", "bucket", "key", "etag", "sequencer", "model", "size", "dirs")} == {
        "source": "s3", "bucket": BUCKET, "key": "photos/cat.jpg", "etag": "e1", "sequencer": "05",
        "model": "fake-model", "size": 123, "dirs": ["photos/"]}
    _, _, skips = write.triage([ev], write.read_state([ev]))
    assert [(o.status, o.reason) for o in skips] == [(SKIPPED, "stale_event")]


def test_a_backfill_put_of_an_unchanged_object_is_skipped_and_keeps_the_stored_sequencer(write, store):
    ev = event("a.jpg", sequencer="09", etag="same")
    state = write.read_state([ev])
    write.write([write.point(*embedded(ev, 2, etag="same"), {}, state)], state)
    listed = event("a.jpg", etag="same", only_if_changed=True)
    _, _, skips = write.triage([listed], write.read_state([listed]))
    assert [o.reason for o in skips] == ["unchanged"]
    changed = event("a.jpg", etag="other", only_if_changed=True)
    state = write.read_state([changed])
    assert write.triage([changed], state)[0] == [changed]
    point = write.point(*embedded(changed, 3, etag="other"), {}, state)
    assert point.payload["sequencer"] == "09"  # notifications still in flight keep their order against it


def test_a_delete_leaves_a_tombstone_that_an_older_put_cannot_pass(write, store):
    put = event("b.jpg", sequencer="10")
    state = write.read_state([put])
    write.write([write.point(*embedded(put, 4), {}, state)], state)
    delete = event("b.jpg", DELETE, "12")
    assert write.remove([delete], write.read_state([delete])) == {}
    assert store.get(put.point_id) is None
    assert write.tombstones.get(put.point_id).payload["sequencer"] == "12"
    late = event("b.jpg", sequencer="11")
    assert [o.reason for o in write.triage([late], write.read_state([late]))[2]] == ["stale_event"]
    newer = event("b.jpg", sequencer="13")
    state = write.read_state([newer])
    assert write.write([write.point(*embedded(newer, 5), {}, state)], state)[newer.point_id][0] == INDEXED
    assert write.tombstones.get(put.point_id) is None  # the key exists again


def test_an_older_write_that_won_the_race_makes_ours_retry(write, store):
    ev = event("c.jpg", sequencer="21")
    state = write.read_state([ev])  # read before the concurrent writer
    point = write.point(*embedded(ev, 6), {}, state)
    store.upsert([StoredPoint(ev.point_id, list(point.vector), {**point.payload, "sequencer": "20"})])
    status, reason, _ = write.write([point], state)[ev.point_id]
    assert (status, reason) == (FAILED, "concurrent_update: an older write won, retrying")


def test_a_file_point_has_no_bucket_and_its_source(write, store, tmp_path):
    ev = file_event(tmp_path / "x.jpg")
    state = write.read_state([ev])
    payload = write.point(*embedded(ev, 7, etag="md5"), {}, state).payload
    assert payload["source"] == "file" and payload["key"] == str(tmp_path / "x.jpg") and "bucket" not in payload
    assert payload["etag"] == "md5" and "sequencer" not in payload


def test_the_signature_and_what_the_stored_point_carries_over(write, store):
    ev = event("d.jpg", etag="e1")
    prior = {LINKS_FIELD: ["old"], NOT_DUPLICATES_FIELD: ["x"], "etag": "e1"}
    store.upsert([StoredPoint(ev.point_id, [1.0] * DIM, prior)])
    state = write.read_state([ev])
    payload = write.point(*embedded(ev, 8, etag="e1"), {SIG_FIELD: "s1:..."}, state).payload
    assert payload[SIG_FIELD] == "s1:..." and payload[NOT_DUPLICATES_FIELD] == ["x"]  # the same picture: decisions stand
    assert LINKS_FIELD not in payload  # links are found again after the write
    payload = write.point(*embedded(ev, 8, etag="e2"), {}, state).payload  # another picture: decisions go
    assert NOT_DUPLICATES_FIELD not in payload and SIG_FIELD not in payload


def test_store_failures_are_outcomes_with_their_error(write, store, monkeypatch):
    ev = event("e.jpg", sequencer="01")
    state = write.read_state([ev])
    point = write.point(*embedded(ev, 9), {}, state)
    down = StoreUnavailable("Qdrant upsert failed after 4 attempts: timed out")

    def unavailable(*args, **kwargs):
        raise down

    monkeypatch.setattr(store, "upsert", unavailable)
    monkeypatch.setattr(write.tombstones, "upsert", unavailable)
    assert write.write([point], state) == {ev.point_id: (FAILED, f"store_unavailable: {down}", down)}
    assert write.remove([ev], state) == {ev.point_id: (f"store_unavailable: {down}", down)}


def test_the_embed_stage_takes_decoded_items_in_order():
    embedder = FakeEmbedder()
    items = [Item(event(f"{i}.jpg"), image=embedder.decode(encode(picture(i)))) for i in range(3)]
    vectors = Embed(embedder).run(items)
    assert vectors.shape == (3, DIM) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert float(vectors[0] @ vectors[0]) == pytest.approx(1.0) and abs(float(vectors[0] @ vectors[1])) < 0.9
    with pytest.raises(ValueError):
        Embed(embedder).run([Item(event("undecoded.jpg"))])


def test_a_tenants_object_carries_its_tenant_and_others_carry_none(write, store, tmp_path):
    for key, tenant in (("tenants/acme/photos/a.jpg", "acme"), ("photos/a.jpg", None), ("tenants/acme", None)):
        ev = event(key, sequencer="01")
        state = write.read_state([ev])
        point = write.point(*embedded(ev, 1), {}, state)
        assert point.payload.get("tenant") == tenant and ("tenant" in point.payload) == (tenant is not None)
    local = file_event(str(tmp_path / "tenants" / "acme" / "a.jpg"))  # a local file is no tenant's, wherever it is
    assert local.tenant is None


def test_a_backfill_fills_the_tenant_into_a_point_from_before_tenants(write, store):
    """Triage: "unchanged" only when the tenant matches too, so backfill, reindex and rebuild add the field
    without --force."""
    ev = event("tenants/acme/a.jpg", sequencer="09", etag="same")
    state = write.read_state([ev])
    old = write.point(*embedded(ev, 2, etag="same"), {}, state)
    del old.payload["tenant"]  # as an imgsim before tenants wrote it
    write.write([old], state)
    listed = event("tenants/acme/a.jpg", etag="same", only_if_changed=True)
    state = write.read_state([listed])
    puts, _, skips = write.triage([listed], state)
    assert puts == [listed] and skips == []
    write.write([write.point(*embedded(listed, 2, etag="same"), {}, state)], state)
    assert store.get(listed.point_id).payload["tenant"] == "acme"
    again = event("tenants/acme/a.jpg", etag="same", only_if_changed=True)
    assert [o.reason for o in write.triage([again], write.read_state([again]))[2]] == ["unchanged"]
