"""imgsim.services.images with fakes: an image's details and its duplicate group, presigned uploads."""

from __future__ import annotations

import re

import pytest
from fakes_services import BUCKET, link, put, settings
from imgsim.errors import (
    InvalidRequest,
    NotConfigured,
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


def test_get_gives_the_details_and_the_group_it_is_in(store, service):
    original = put(store, "cats/a.jpg", width=1000, height=800)
    copy = put(store, "cats/a-copy.jpg", width=500, height=400, sig="s1:internal")
    link(store, copy, original, 0.93)
    body = service.get(copy)
    assert body["id"] == copy and body["key"] == "cats/a-copy.jpg"
    assert not {"dirs", "sig", "dup_links", "dup_scores", "dup_etags"} & set(body)  # bookkeeping is not shown
    assert body["duplicate_of"] == original and body["duplicate_key"] == "cats/a.jpg" and body["duplicate_score"] == 0.93
    assert body["url"] == f"https://s3.test/{BUCKET}/cats/a-copy.jpg?get&expires=900"
    assert service.get(original)["duplicates"] == 1
    store.delete([original])  # the match went away: no group
    body = service.get(copy)
    assert not {"duplicate_of", "duplicate_score", "duplicate_key", "duplicates"} & set(body)


def test_get_unknown_or_malformed_ids(service):
    with pytest.raises(NotFound):
        service.get("00000000-0000-0000-0000-000000000000")
    with pytest.raises(InvalidRequest):
        service.get("12")


def test_create_upload_signs_a_bounded_post_of_that_type_under_the_upload_prefix(store, objects, service):
    upload = service.create_upload(UploadRequest(filename="../My Holiday (1).JPG", content_type="Image/JPEG"))
    key = upload["key"]
    assert re.fullmatch(r"uploads/[0-9a-f]{32}-My_Holiday_1_\.JPG", key)
    assert upload["id"] == point_id_for_object(BUCKET, key) and upload["bucket"] == BUCKET
    assert upload["method"] == "POST" and "headers" not in upload
    assert upload["url"] == f"https://s3.test/{BUCKET}"
    # The fake echoes what the service asked S3Objects to sign: this key and type, the settings' limit and TTL.
    assert upload["fields"] == {"key": key, "Content-Type": "image/jpeg", "policy": f"max={25 * 2**20}&expires=900"}
    assert upload["max_bytes"] == 25 * 2**20 and upload["expires_in"] == 900
    assert service.create_upload(UploadRequest("x.heic", "image/heic"))["fields"]["Content-Type"] == "image/heic"
    small = service_for(store, objects, max_upload_bytes=1000).create_upload(UploadRequest("a.png", "image/png"))
    assert small["max_bytes"] == 1000 and small["fields"]["policy"] == "max=1000&expires=900"


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
