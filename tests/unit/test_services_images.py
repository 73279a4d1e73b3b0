"""imgsim.services.images with fakes: an image's details, deleting it, presigned uploads."""

from __future__ import annotations

import re

import pytest
from fakes_services import BUCKET, put, settings
from imgsim.errors import (
    InvalidRequest,
    NotConfigured,
    NotDeletable,
    NotFound,
    UnsupportedImageType,
)
from imgsim.ids import point_id_for_object
from imgsim.services import ImageService, UploadRequest
from imgsim.services.images import sanitize_filename


def service_for(store, objects, **changes):
    return ImageService(settings(**changes), store=lambda: store, objects=lambda: objects)


@pytest.fixture
def service(store, objects):
    return service_for(store, objects)


def test_get_gives_the_details_and_the_duplicate_it_was_recorded_as(store, service):
    original = put(store, "cats/a.jpg")
    copy = put(store, "cats/a-copy.jpg", duplicate_of=original, duplicate_score=0.93)
    body = service.get(copy)
    assert body["id"] == copy and body["key"] == "cats/a-copy.jpg" and "dirs" not in body
    assert body["duplicate_of"] == original and body["duplicate_key"] == "cats/a.jpg"
    assert body["url"] == f"https://s3.test/{BUCKET}/cats/a-copy.jpg?get&expires=900"
    store.delete([original])  # the match went away: the record is not shown (the indexer re-checks the copy)
    body = service.get(copy)
    assert "duplicate_of" not in body and "duplicate_score" not in body and "duplicate_key" not in body


def test_get_unknown_or_malformed_ids(service):
    with pytest.raises(NotFound):
        service.get("00000000-0000-0000-0000-000000000000")
    with pytest.raises(InvalidRequest):
        service.get("12")


def test_delete_removes_the_object_only(store, objects, service):
    point_id = put(store, "cats/a.jpg")
    assert service.delete(point_id) == {"id": point_id, "bucket": BUCKET, "key": "cats/a.jpg", "status": "deleting"}
    assert objects.deleted == [(BUCKET, "cats/a.jpg")]
    assert store.get(point_id) is not None  # the indexer removes the point on S3's ObjectRemoved event


def test_delete_refuses_objects_this_deployment_does_not_manage(store, objects, service):
    local = put(store, "/home/me/a.jpg", bucket=None)
    elsewhere = put(store, "a.jpg", bucket="other-bucket")
    for point_id in (local, elsewhere):
        with pytest.raises(NotDeletable):
            service.delete(point_id)
    assert objects.deleted == []


def test_create_upload_signs_a_put_of_that_type_under_the_upload_prefix(objects, service):
    upload = service.create_upload(UploadRequest(filename="../My Holiday (1).JPG", content_type="Image/JPEG"))
    key = upload["key"]
    assert re.fullmatch(r"uploads/[0-9a-f]{32}-My_Holiday_1_\.JPG", key)
    assert upload["id"] == point_id_for_object(BUCKET, key) and upload["bucket"] == BUCKET
    assert upload["method"] == "PUT" and upload["headers"] == {"Content-Type": "image/jpeg"}
    assert upload["url"] == f"https://s3.test/{BUCKET}/{key}?put&type=image/jpeg&expires=900"
    assert upload["expires_in"] == 900
    assert service.create_upload(UploadRequest("x.heic", "image/heic"))["headers"] == {"Content-Type": "image/heic"}


def test_create_upload_refusals(store, objects, service):
    for content_type in ("text/plain", "image/svg+xml"):
        with pytest.raises(UnsupportedImageType):
            service.create_upload(UploadRequest("a", content_type))
    with pytest.raises(InvalidRequest):
        UploadRequest(filename="  ", content_type="image/jpeg")
    with pytest.raises(InvalidRequest):
        UploadRequest(filename="a.jpg", content_type="")
    with pytest.raises(NotConfigured):
        service_for(store, objects, images_bucket=None).create_upload(UploadRequest("a.jpg", "image/jpeg"))


@pytest.mark.parametrize("name,expected", [
    ("photo.jpg", "photo.jpg"), ("C:\\Users\\me\\a b.png", "a_b.png"), ("...", "image"), ("", "image"),
    ("x" * 300 + ".jpeg", "x" * 95 + ".jpeg"),
])
def test_sanitize_filename(name, expected):
    assert sanitize_filename(name) == expected
