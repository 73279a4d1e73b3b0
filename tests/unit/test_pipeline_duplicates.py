"""The duplicate check stage: signatures, matches in the store and within the batch, root linking, "not duplicates"
decisions, and the bookkeeping after writes and deletes (FakeEmbedder: copies and mirrors score 1.0, unrelated
pictures below 0.7)."""

from __future__ import annotations

import pytest
from fakes import DIM, FakeEmbedder, RecordingReporter, encode, memory_store, picture
from imgsim.dedupe import DEDUPE_SUFFIX, companion_ids
from imgsim.duplicates import HAS_DUPLICATES, HAS_DUPLICATES_FIELD, NOT_DUPLICATES_FIELD
from imgsim.errors import StoreUnavailable
from imgsim.ordering import KeyState
from imgsim.pipeline import DuplicateCheck, Item, ObjectEvent
from imgsim.points import DUPLICATE_OF_FIELD, DUPLICATE_SCORE_FIELD
from imgsim.store import StoredPoint
from PIL import ImageOps

THRESHOLD = 0.79


@pytest.fixture
def store():
    with memory_store() as store:
        yield store


@pytest.fixture
def reporter():
    return RecordingReporter()


@pytest.fixture
def check(store, reporter):
    return DuplicateCheck(store, FakeEmbedder(), THRESHOLD, reporter)


def item(key: str, img, etag: str = "e") -> Item:
    return Item(ObjectEvent(key, "put", "pics", key, etag=etag), etag=etag, image=FakeEmbedder().decode(encode(img)))


def no_state() -> KeyState:
    return KeyState(points={}, tombs={})


def stored(store, it: Item, **payload) -> None:
    """The point of an item as the write stage would leave it."""
    store.upsert([StoredPoint(it.event.point_id, [1.0] + [0.0] * (DIM - 1), {"key": it.event.key, "etag": it.etag,
                                                                            **payload})])


def test_copies_match_within_the_batch_and_unrelated_pictures_do_not(check, store):
    a, mirror, other = item("a.jpg", picture(1)), item("m.jpg", ImageOps.mirror(picture(1))), item("o.jpg", picture(2))
    found = check.find([a, mirror, other], no_state())
    assert set(found) == {mirror.event.point_id}
    assert found[mirror.event.point_id].point_id == a.event.point_id and found[mirror.event.point_id].score > 0.99
    companion = store.companion(DEDUPE_SUFFIX, dim=DIM)
    assert len(companion.retrieve(companion_ids([a.event.point_id, mirror.event.point_id, other.event.point_id]))) == 18


def test_a_copy_matches_an_image_stored_by_an_earlier_batch(check):
    original = item("a.jpg", picture(3))
    check.find([original], no_state())
    copy = item("copy.jpg", picture(3).resize((80, 60)))
    assert check.find([copy], no_state())[copy.event.point_id].point_id == original.event.point_id


def test_a_duplicate_of_a_duplicate_is_linked_to_the_root(check, store):
    root, first = item("root.jpg", picture(4)), item("first.jpg", ImageOps.mirror(picture(4)))
    check.find([root, first], no_state())
    stored(store, root)
    stored(store, first, **{DUPLICATE_OF_FIELD: root.event.point_id, DUPLICATE_SCORE_FIELD: 1.0})
    second = item("second.jpg", picture(4).convert("L"))
    assert check.find([second], no_state())[second.event.point_id].point_id == root.event.point_id


def test_a_not_duplicates_decision_on_the_same_picture_stands(check):
    a = item("a.jpg", picture(5))
    check.find([a], no_state())
    b = item("b.jpg", picture(5), etag="same")
    decided = KeyState(points={b.event.point_id: {"etag": "same", NOT_DUPLICATES_FIELD: [a.event.point_id]}}, tombs={})
    assert check.find([b], decided) == {}
    changed = KeyState(points={b.event.point_id: {"etag": "before", NOT_DUPLICATES_FIELD: [a.event.point_id]}},
                       tombs={})
    assert check.find([b], changed)[b.event.point_id].point_id == a.event.point_id  # another picture now


def test_a_store_failure_never_holds_up_indexing(check, reporter, monkeypatch):
    def unavailable(*args, **kwargs):
        raise StoreUnavailable("Qdrant query failed after 3 attempts")

    monkeypatch.setattr(check.index, "best_match", unavailable)
    assert check.find([item("a.jpg", picture(6))], no_state()) == {}
    assert reporter.warnings == ["duplicate check skipped for this batch: Qdrant query failed after 3 attempts"]


def test_after_the_write_targets_are_marked_and_unwritten_signatures_removed(check, store):
    a, copy, lost = item("a.jpg", picture(7)), item("c.jpg", ImageOps.mirror(picture(7))), item("l.jpg", picture(8))
    matches = check.find([a, copy, lost], no_state())
    record = {DUPLICATE_OF_FIELD: a.event.point_id, DUPLICATE_SCORE_FIELD: 1.0}
    stored(store, a)
    stored(store, copy, **record)
    written = [a.event.point_id, copy.event.point_id]
    assert check.written(written, [lost.event.point_id], matches, no_state()) == 1
    assert store.get(a.event.point_id).payload[HAS_DUPLICATES_FIELD] == HAS_DUPLICATES
    assert check.index.stored(lost.event.point_id) is None and check.index.stored(a.event.point_id) is not None
    # New images have no dependents but the ones just matched: the mirror keeps its record.
    assert store.get(copy.event.point_id).payload[DUPLICATE_OF_FIELD] == a.event.point_id
    # A replaced image's dependents are found again from their stored signatures (which keep no mirror).
    replaced = KeyState(points={a.event.point_id: {"etag": "before"}}, tombs={})
    check.written([a.event.point_id], [], {}, replaced)
    assert DUPLICATE_OF_FIELD not in store.get(copy.event.point_id).payload


def test_when_a_match_goes_its_duplicates_look_again(check, store):
    # (Not mirrors: a stored image keeps no mirror, so a mirrored pair only meets when one of them arrives.)
    a, b, c = item("a.jpg", picture(9)), item("b.jpg", picture(9).convert("L")), item("c.jpg", picture(9).resize((80, 60)))
    check.find([a, b, c], no_state())
    stored(store, a, **{HAS_DUPLICATES_FIELD: HAS_DUPLICATES})
    stored(store, b, **{DUPLICATE_OF_FIELD: a.event.point_id, DUPLICATE_SCORE_FIELD: 1.0})
    stored(store, c, **{DUPLICATE_OF_FIELD: a.event.point_id, DUPLICATE_SCORE_FIELD: 1.0})
    check.removed([a.event.point_id])  # a is deleted: b and c now name each other's picture
    assert check.index.stored(a.event.point_id) is None
    b_now, c_now = (store.get(x.event.point_id).payload for x in (b, c))
    assert {b_now[DUPLICATE_OF_FIELD], c_now[DUPLICATE_OF_FIELD]} <= {b.event.point_id, c.event.point_id}
    assert b_now[DUPLICATE_OF_FIELD] != b.event.point_id and c_now[DUPLICATE_OF_FIELD] != c.event.point_id

    check.removed([b.event.point_id, c.event.point_id])
    lonely = item("d.jpg", picture(10))
    check.find([lonely], no_state())
    stored(store, lonely, **{DUPLICATE_OF_FIELD: "gone", DUPLICATE_SCORE_FIELD: 0.9})
    check.recheck(["gone"], gone=True)  # nothing else matches: the record goes
    assert DUPLICATE_OF_FIELD not in store.get(lonely.event.point_id).payload
