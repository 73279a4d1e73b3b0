"""imgsim.services.trash with fakes: deleting to the trash, listing, restoring (object, point, links), expiry."""

from __future__ import annotations

import pytest
from fakes_services import BUCKET, link, put, settings
from imgsim.dedupe import LINKS_FIELD
from imgsim.duplicates import DuplicateGraph
from imgsim.errors import InvalidRequest, KeyTaken, NotDeletable, NotFound
from imgsim.services import TrashService
from imgsim.trash import trash_store


class Clock:
    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def service(store, objects, clock):
    return TrashService(settings(trash_days=30), store=lambda: store, objects=lambda: objects, clock=clock)


def test_delete_moves_the_object_and_the_point_to_the_trash(store, objects, service):
    point_id = put(store, "cats/a.jpg")
    result = service.delete(point_id)
    assert result["id"] == point_id and result["status"] == "trashed" and result["key"] == "cats/a.jpg"
    assert result["expires_at"] == "2026-10-21T14:13:20.000Z"  # 30 days after the clock's moment
    (bucket, source, stashed), = objects.copied
    assert (bucket, source) == (BUCKET, "cats/a.jpg") and stashed.startswith(".trash/") and stashed.endswith("/cats/a.jpg")
    assert objects.deleted == [(BUCKET, "cats/a.jpg")]
    assert store.get(point_id) is None  # gone from search at once
    listed = service.list()
    assert listed["trash_days"] == 30 and listed["next_cursor"] is None
    (item,) = listed["items"]
    assert item["id"] == result["trash_id"] and item["image_id"] == point_id and item["key"] == "cats/a.jpg"
    assert item["url"] == f"https://s3.test/{BUCKET}/{stashed}?get&expires=900"


def test_delete_refuses_objects_this_deployment_does_not_manage(store, objects, service):
    local = put(store, "/home/me/a.jpg", bucket=None)
    elsewhere = put(store, "a.jpg", bucket="other-bucket")
    for point_id in (local, elsewhere):
        with pytest.raises(NotDeletable):
            service.delete(point_id)
    assert objects.deleted == [] and objects.copied == []
    with pytest.raises(NotFound):
        service.delete("00000000-0000-0000-0000-000000000000")


def test_restore_brings_back_the_object_the_point_and_its_group(store, objects, service):
    original = put(store, "cats/a.jpg", width=1000, height=800)
    copy = put(store, "cats/b.jpg", width=500, height=400)
    link(store, copy, original)
    trash_id = service.delete(original)["trash_id"]
    assert DuplicateGraph(store, 0.74).group_of(copy) is None
    restored = service.restore(trash_id)
    assert restored == {"id": original, "bucket": BUCKET, "key": "cats/a.jpg", "status": "restored"}
    assert objects.copied[-1][1:] == (objects.copied[0][2], "cats/a.jpg")  # the trash copy back to its key
    assert objects.deleted[-1] == (BUCKET, objects.copied[0][2])  # the trash copy removed
    assert store.get(original) is not None and service.list()["items"] == []
    group = DuplicateGraph(store, 0.74).group_of(copy)
    assert group is not None and set(group.ids) == {original, copy}
    with pytest.raises(NotFound):
        service.restore(trash_id)  # once


def test_restore_never_overwrites_an_object_stored_at_the_key_since(store, objects, service):
    point_id = put(store, "cats/a.jpg")
    trash_id = service.delete(point_id)["trash_id"]
    objects.stored.add((BUCKET, "cats/a.jpg"))  # a new upload under the same key
    with pytest.raises(KeyTaken):
        service.restore(trash_id)
    assert len(service.list()["items"]) == 1


def test_entries_expire_after_the_trash_period(store, objects, service, clock):
    first = service.delete(put(store, "a.jpg"))
    clock.now += 10 * 86_400
    service.delete(put(store, "b.jpg"))
    assert [i["key"] for i in service.list()["items"]] == ["b.jpg", "a.jpg"]  # newest first
    clock.now += 25 * 86_400  # a is 35 days old, b 25
    assert [i["key"] for i in service.list()["items"]] == ["b.jpg"]
    with pytest.raises(NotFound):
        service.restore(first["trash_id"])
    assert (BUCKET, first["trash_id"]) not in objects.deleted and any(k.startswith(".trash/") for _, k in objects.deleted)
    assert service.empty() == 1 and service.list()["items"] == []


def test_listing_pages_and_refusals(store, service, clock):
    for n in range(5):
        clock.now += 1
        service.delete(put(store, f"{n}.jpg"))
    first = service.list(limit=2)
    second = service.list(limit=2, cursor=first["next_cursor"])
    third = service.list(limit=2, cursor=second["next_cursor"])
    keys = [i["key"] for page in (first, second, third) for i in page["items"]]
    assert keys == ["4.jpg", "3.jpg", "2.jpg", "1.jpg", "0.jpg"] and third["next_cursor"] is None
    for bad in ({"limit": 0}, {"limit": 101}, {"cursor": "x"}):
        with pytest.raises(InvalidRequest):
            service.list(**bad)
    assert trash_store(store).count() == 5 and LINKS_FIELD == "dup_links"
