"""The fetch stage: S3 GETs with the ranged header pre-check, local file reads, concurrency and the deadline."""

from __future__ import annotations

import hashlib
import io

from botocore.exceptions import EndpointConnectionError
from fakes import FakeS3, client_error, encode, picture
from imgsim.pipeline import (
    FAILED,
    PRECHECK_RANGE,
    SKIPPED,
    Deadline,
    Fetch,
    FileFetch,
    Item,
    ObjectEvent,
    S3Fetch,
)
from imgsim.pipeline.files import file_event
from imgsim.settings import Settings
from PIL import Image

BUCKET = "pics"
SETTINGS = Settings()


def put_item(key: str, size: int | None = None, origin: str = "s3") -> Item:
    return Item(ObjectEvent(key, "put", BUCKET, key, size=size, origin=origin))


def test_a_small_object_is_fetched_in_one_get():
    s3 = FakeS3()
    data = encode(picture(1))
    etag = s3.put(BUCKET, "a.jpg", data)
    item = put_item("a.jpg", size=len(data))
    S3Fetch(s3, SETTINGS).fetch(item)
    assert item.pending and (item.data, item.size, item.etag) == (data, len(data), etag)
    assert s3.calls == [("a.jpg", None)]


def test_a_large_object_is_judged_from_its_header_first():
    s3 = FakeS3()
    bomb = io.BytesIO()
    Image.new("L", (2000, 2000)).save(bomb, "PNG")  # 4 M pixels in a small file, over a 1 M limit
    s3.put(BUCKET, "huge.png", bomb.getvalue())
    item = put_item("huge.png", size=None)  # unknown size: judged from the header
    S3Fetch(s3, Settings(max_pixels=1_000_000)).fetch(item)
    assert item.outcome is not None and item.outcome.status == SKIPPED and item.poison
    assert item.outcome.reason.startswith("too_many_pixels") and "judged from the header" in item.outcome.reason
    assert s3.calls == [("huge.png", f"bytes=0-{PRECHECK_RANGE - 1}")]  # never downloaded whole


def test_an_inconclusive_header_leaves_the_decision_to_the_full_download():
    s3 = FakeS3()
    data = encode(picture(2))
    s3.put(BUCKET, "ok.jpg", data)
    item = put_item("ok.jpg", size=len(data))
    S3Fetch(s3, SETTINGS, precheck_bytes=0).fetch(item)
    assert item.pending and item.data == data
    assert [rng for _, rng in s3.calls] == [f"bytes=0-{PRECHECK_RANGE - 1}", None]


def test_a_body_over_the_limit_is_poison_and_not_read():
    s3 = FakeS3()
    s3.put(BUCKET, "big.jpg", bytes(2000))
    item = put_item("big.jpg", size=10)  # the event said small; the GET says otherwise
    S3Fetch(s3, Settings(max_image_bytes=1000)).fetch(item)
    assert item.outcome is not None and (item.outcome.status, item.outcome.reason) == (
        SKIPPED, "image_too_large: 2000 bytes > limit 1000")
    assert item.poison and item.data is None


def test_missing_objects_are_skipped_and_s3_faults_fail_for_redelivery():
    s3 = FakeS3(errors={"slow.jpg": client_error("SlowDown", status=503),
                        "net.jpg": EndpointConnectionError(endpoint_url="https://s3")})
    items = {key: put_item(key, size=10) for key in ("gone.jpg", "slow.jpg", "net.jpg")}
    for item in items.values():
        S3Fetch(s3, SETTINGS).fetch(item)
    outcomes = {key: (i.outcome.status, i.outcome.reason) for key, i in items.items() if i.outcome is not None}
    assert outcomes["gone.jpg"] == (SKIPPED, "object_missing")
    assert outcomes["slow.jpg"] == (FAILED, "s3_error: SlowDown")
    assert outcomes["net.jpg"][0] == FAILED and outcomes["net.jpg"][1].startswith("s3_error: EndpointConnectionError")
    assert not any(i.poison for i in items.values())


def test_a_file_is_read_up_to_one_byte_over_the_limit_with_its_md5_as_etag(tmp_path):
    small = tmp_path / "small.jpg"
    small.write_bytes(b"x" * 100)
    large = tmp_path / "large.jpg"
    large.write_bytes(b"y" * 5000)
    fetch = FileFetch(max_bytes=1000)
    item, big = Item(file_event(small)), Item(file_event(large))
    fetch.fetch(item)
    fetch.fetch(big)
    assert (item.data, item.size, item.etag) == (b"x" * 100, 100, hashlib.md5(b"x" * 100).hexdigest())
    assert big.size == 1001 and big.etag is None  # the decoder refuses it as too large


def test_an_unreadable_file_fails_with_its_error(tmp_path):
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    item = Item(file_event(tmp_path / "dangling.jpg"))
    FileFetch(max_bytes=1000).fetch(item)
    assert item.outcome is not None and item.outcome.status == FAILED
    assert item.outcome.reason == "read_error: No such file or directory"
    assert isinstance(item.outcome.error, FileNotFoundError)


def test_the_stage_routes_by_origin_refuses_sizes_over_the_limit_and_stops_at_the_deadline(tmp_path):
    s3 = FakeS3()
    s3.put(BUCKET, "a.jpg", b"abc")
    path = tmp_path / "f.jpg"
    path.write_bytes(b"def")
    stage = Fetch({"s3": S3Fetch(s3, SETTINGS), "file": FileFetch(SETTINGS.max_image_bytes)},
                  max_bytes=SETTINGS.max_image_bytes, concurrency=4)
    items = [put_item("a.jpg", size=3), Item(file_event(path)), put_item("huge.jpg", size=SETTINGS.max_image_bytes + 1),
             Item(ObjectEvent("m", "put", None, "x", origin="ftp"))]
    stage.refuse_oversized(items)
    stage.run(items, Deadline.none())
    assert [i.data for i in items[:2]] == [b"abc", b"def"]
    assert items[2].poison and items[2].outcome is not None and items[2].outcome.reason.startswith("image_too_large")
    assert items[3].outcome is not None and items[3].outcome.reason.startswith("no_source")
    assert ("huge.jpg", None) not in s3.calls  # known too large from the event: never downloaded

    late = put_item("a.jpg", size=3)
    stage.run([late], Deadline(0.0))  # long passed
    assert late.outcome is not None and (late.outcome.status, late.outcome.reason) == (FAILED, Deadline.OUT_OF_TIME)
