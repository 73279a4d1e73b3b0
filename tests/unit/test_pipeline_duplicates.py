"""The duplicate check stage: signatures into the payload before the write, links after it (FakeEmbedder: copies and
mirrors score 1.0, unrelated pictures below 0.7); links that lapse with their partner's content; "not duplicates"
decisions; a store failure never holds up indexing."""

from __future__ import annotations

import pytest
from fakes import FakeEmbedder, RecordingReporter, encode, memory_store, picture
from imgsim.dedupe import (
    LINK_ETAGS_FIELD,
    LINKS_FIELD,
    NOT_DUPLICATES_FIELD,
    SIG_FIELD,
    DuplicateLinks,
    link_holds,
    stored_links,
)
from imgsim.duplicates import DuplicateGraph
from imgsim.errors import StoreUnavailable
from imgsim.pipeline import DuplicateCheck, Item, ObjectEvent
from imgsim.store import StoredPoint
from PIL import ImageOps

THRESHOLD = 0.74


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


def write(check: DuplicateCheck, store, items: list[Item], **extra) -> list[StoredPoint]:
    """What the pipeline does around the ordered write: sign, write the points, link."""
    signed = check.sign(items)
    vectors = FakeEmbedder().embed_decoded([i.image for i in items])
    points = [StoredPoint(i.event.point_id, v.tolist(), {"key": i.event.key, "etag": i.etag, **extra,
                                                          **signed[i.event.point_id]})
              for i, v in zip(items, vectors, strict=True)]
    store.upsert(points)
    check.link(points)
    return points


def edges(store) -> set[frozenset[str]]:
    """The duplicate relation as the groups read it."""
    graph = DuplicateGraph(store, THRESHOLD)
    records, _ = store.scroll(limit=1000)
    return {frozenset((r.id, other)) for r in records for other in graph.neighbours(r.id)}


def test_every_point_carries_its_signature(check, store):
    a = item("a.jpg", picture(1))
    write(check, store, [a])
    assert store.get(a.event.point_id).payload[SIG_FIELD].startswith("s")


def test_copies_link_within_the_batch_and_unrelated_pictures_do_not(check, store):
    a, mirror, other = item("a.jpg", picture(1)), item("m.jpg", ImageOps.mirror(picture(1))), item("o.jpg", picture(2))
    write(check, store, [a, mirror, other])
    assert edges(store) == {frozenset((a.event.point_id, mirror.event.point_id))}
    links = stored_links(store.get(mirror.event.point_id))
    assert [link.partner for link in links] == [a.event.point_id] and links[0].score > 0.99 and links[0].etag == "e"


def test_a_copy_links_to_an_image_stored_by_an_earlier_batch(check, store):
    original = item("a.jpg", picture(3))
    write(check, store, [original])
    copy = item("copy.jpg", picture(3).resize((80, 60)))
    write(check, store, [copy])
    assert edges(store) == {frozenset((original.event.point_id, copy.event.point_id))}


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 0, 2)])
def test_the_relation_is_the_same_in_any_order_and_batching(order, reporter):
    """Symmetric scores, store-then-look: whichever image comes first, one by one or all at once."""
    pictures = [picture(4), ImageOps.mirror(picture(4)), picture(4).convert("L")]
    relations = []
    for batches in ([[i] for i in order], [list(order)]):
        with memory_store() as store:
            check = DuplicateCheck(store, FakeEmbedder(), THRESHOLD, reporter)
            for batch in batches:
                write(check, store, [item(f"{i}.jpg", pictures[i]) for i in batch])
            relations.append(edges(store))
    assert relations[0] == relations[1] and len(relations[0]) == 3


def test_a_not_duplicates_decision_is_respected(check, store):
    a = item("a.jpg", picture(5))
    write(check, store, [a])
    b = item("b.jpg", picture(5))
    write(check, store, [b], **{NOT_DUPLICATES_FIELD: [a.event.point_id]})
    assert edges(store) == set()


def test_links_lapse_when_the_partner_is_replaced_and_come_back_with_it(check, store):
    a, copy = item("a.jpg", picture(7)), item("c.jpg", picture(7).resize((90, 70)))
    write(check, store, [a, copy])
    assert edges(store)
    link = stored_links(store.get(copy.event.point_id))[0]
    replaced = item("a.jpg", picture(8), etag="new")  # another picture under a's key
    write(check, store, [replaced])
    assert not link_holds(link, store.get(a.event.point_id)) and edges(store) == set()
    write(check, store, [item("a.jpg", picture(7))])  # the first picture again (same ETag)
    assert edges(store) == {frozenset((a.event.point_id, copy.event.point_id))}


def test_links_are_written_only_onto_the_point_as_it_was_written(check, store):
    a, copy = item("a.jpg", picture(9)), item("c.jpg", picture(9).resize((90, 70)))
    write(check, store, [a])
    signed = check.sign([copy])
    vector = FakeEmbedder().embed_decoded([copy.image])[0].tolist()
    point = StoredPoint(copy.event.point_id, vector, {"key": "c.jpg", "etag": "e", **signed[copy.event.point_id]})
    store.upsert([point])
    store.upsert([StoredPoint(point.id, vector, {**point.payload, "etag": "newer"})])  # replaced meanwhile
    check.link([point])
    assert LINKS_FIELD not in store.get(point.id).payload
    store.delete([point.id])  # deleted meanwhile: never created again
    check.link([point])
    assert store.get(point.id) is None


def test_a_store_failure_never_holds_up_indexing(check, store, reporter, monkeypatch):
    def unavailable(*args, **kwargs):
        raise StoreUnavailable("Qdrant query failed after 3 attempts")

    monkeypatch.setattr(store, "search_batch", unavailable)
    points = write(check, store, [item("a.jpg", picture(6))])
    assert store.get(points[0].id) is not None and LINK_ETAGS_FIELD not in store.get(points[0].id).payload
    assert reporter.warnings == ["duplicate check skipped for this batch: Qdrant query failed after 3 attempts"]


def test_the_same_photo_in_two_tenants_is_a_duplicate_within_each_never_across(check, store):
    """The duplicate recorded at upload: links only within a tenant (or within the images of no tenant)."""
    pictures = {"a": picture(7), "copy": ImageOps.mirror(picture(7))}
    ids: dict[str, str] = {}
    for owner in ("acme", "globex", None):
        folder = f"tenants/{owner}/" if owner else "shared/"
        items = [item(f"{folder}{name}.jpg", img) for name, img in pictures.items()]
        write(check, store, items, **({"tenant": owner} if owner else {}))
        ids.update({f"{owner}/{name}": i.event.point_id for name, i in zip(pictures, items, strict=True)})
    assert edges(store) == {frozenset((ids[f"{o}/a"], ids[f"{o}/copy"])) for o in ("acme", "globex", None)}
    # relink (a restore, backfill --relink) keeps to the tenant too
    records = store.retrieve(list(ids.values()), with_vectors=True)
    DuplicateLinks(store, THRESHOLD).relink(records)
    assert edges(store) == {frozenset((ids[f"{o}/a"], ids[f"{o}/copy"])) for o in ("acme", "globex", None)}
