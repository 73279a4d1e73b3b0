"""imgsim.pipeline: the batch logic, against moto S3 and embedded Qdrant (no Lambda).

Events here are built the way S3 writes them (URL-encoded keys, hex sequencers);
the handler tests (test_index_handler.py) run the real moto S3 -> SQS path.
"""

from __future__ import annotations

import io
import json
import socket

import numpy as np
import pytest
from botocore.exceptions import ClientError
from imgsim.ids import point_id_for_object
from imgsim.ordering import is_newer
from imgsim.pipeline import (
    DELETE,
    FAILED,
    INDEXED,
    PUT,
    SKIPPED,
    ObjectEvent,
    build,
    newest_per_key,
)
from imgsim.settings import IndexSettings
from imgsim.store import key_dirs
from imgsim_tools.events import s3_notification, s3_record
from PIL import Image

BUCKET = "imgsim-images"
NO_DEDUPE = IndexSettings(dedupe=False)  # these tests are about ordering and poison (test_dedupe.py: duplicates)


def s3_body(key: str, action: str = PUT, *, sequencer: str | None = None, size: int | None = None,
            etag: str = "0123456789abcdef0123456789abcdef", bucket: str = BUCKET) -> str:
    """One S3 notification as S3 sends it to SQS (imgsim_tools.events): the key URL-encoded with '+' for spaces."""
    record = s3_record(bucket, key, event_name="ObjectCreated:Put" if action == PUT else "ObjectRemoved:Delete",
                       size=size if size is not None else 1000, etag=etag, sequencer=sequencer,
                       event_time="2026-01-01T00:00:00.000Z")
    return json.dumps(s3_notification(record))


@pytest.fixture
def s3(moto_s3):
    return moto_s3


@pytest.fixture
def store(backend_store):
    """The ordering protocol runs unchanged on both backends: every test here runs on each."""
    return backend_store


@pytest.fixture
def indexer(store, embedder, s3):
    return build(store=store, embedder=embedder, s3=s3, options=IndexSettings(dedupe=False, fetch_concurrency=4))


def put_photo(s3, key: str, path) -> int:
    data = path.read_bytes()
    s3.put_object(Bucket=BUCKET, Key=key, Body=data, ContentType="image/jpeg")
    return len(data)


def statuses(report) -> dict[str, tuple[str, str]]:
    return {o.message_id: (o.status, o.reason) for o in report.outcomes}


# -- pure helpers ---------------------------------------------------------------


def test_sequencer_comparison_is_numeric_hex_after_left_padding():
    assert is_newer("0100", "FF")  # shorter value is left-padded: 0x0100 > 0x00FF
    assert not is_newer("00FF", "0100")
    assert is_newer("0055B7A2D6B3E1C0A1", "55B7A2D6B3E1C0A0")
    assert not is_newer("ABC", "abc")  # equal: a redelivery, not newer
    assert is_newer(None, "ABC") and is_newer("ABC", None)  # nothing to compare: apply


def test_newest_event_per_key_wins_within_a_batch():
    events = [
        ObjectEvent("m1", PUT, BUCKET, "a.jpg", sequencer="0A"),
        ObjectEvent("m2", DELETE, BUCKET, "a.jpg", sequencer="0C"),
        ObjectEvent("m3", PUT, BUCKET, "a.jpg", sequencer="0B"),
        ObjectEvent("m4", PUT, BUCKET, "b.jpg", sequencer="01"),
    ]
    kept, superseded = newest_per_key(events)
    assert sorted(e.message_id for e in kept) == ["m2", "m4"]
    assert sorted(e.message_id for e in superseded) == ["m1", "m3"]


def test_ignore_prefixes_parsing():
    assert IndexSettings.from_env({"IMGSIM_IGNORE_PREFIXES": " thumbs/, tmp/ ,,"}).ignore_prefixes == ("thumbs/", "tmp/")
    assert IndexSettings.from_env({}).ignore_prefixes == ()


# -- keys -------------------------------------------------------------------------


def test_url_encoded_keys_spaces_unicode_plus_and_deep_prefixes(indexer, store, s3, photos):
    keys = [
        "photos/my cat on the sofa.jpg",
        "photos/ünïcödé/猫の写真 1.jpg",
        "photos/a+b=c&d.jpg",
        "photos/2024/06/01/holiday/day one/deep.jpg",
    ]
    messages = []
    for i, key in enumerate(keys):
        size = put_photo(s3, key, photos[i * 400])
        messages.append((f"m{i}", s3_body(key, size=size, sequencer=f"00{i:02X}")))
    report = indexer.process_messages(messages)
    assert [o.status for o in report.outcomes] == [INDEXED] * 4, report.outcomes
    for key in keys:
        record = store.get(point_id_for_object(BUCKET, key))
        assert record is not None, key
        assert record.payload["key"] == key
        assert record.payload["dirs"] == key_dirs(key)
        assert record.payload["bucket"] == BUCKET
    assert store.count() == 4


def test_payload_has_every_field(indexer, store, s3, photos):
    size = put_photo(s3, "photos/cat.jpg", photos[0])
    indexer.process_messages([("m1", s3_body("photos/cat.jpg", size=size, sequencer="005F"))])
    payload = store.get(point_id_for_object(BUCKET, "photos/cat.jpg")).payload
    head = s3.head_object(Bucket=BUCKET, Key="photos/cat.jpg")
    with Image.open(photos[0]) as img:
        width, height = img.size
    assert payload["bucket"] == BUCKET and payload["key"] == "photos/cat.jpg"
    assert payload["etag"] == head["ETag"].strip('"')
    assert payload["size"] == size
    assert payload["content_type"] == "image/jpeg"
    assert (payload["width"], payload["height"]) == (width, height)
    assert payload["model"] == indexer.embedder.model_name
    assert payload["sequencer"] == "005F"
    assert payload["indexed_at"].endswith("Z")
    assert payload["dirs"] == ["photos/"]


# -- idempotency and ordering -----------------------------------------------------


def test_redelivery_overwrites_instead_of_duplicating(indexer, store, s3, photos):
    size = put_photo(s3, "photos/dog.jpg", photos[500])
    body = s3_body("photos/dog.jpg", size=size, sequencer="0062A1")
    first = indexer.process_messages([("m1", body)])
    again = indexer.process_messages([("m1", body)])  # SQS at-least-once: same message again
    assert statuses(first) == {"m1": (INDEXED, "")}
    assert statuses(again) == {"m1": (SKIPPED, "stale_event")}  # already reflected
    # Without a sequencer (hand-made events) it is re-indexed onto the same point id.
    unsequenced = s3_body("photos/dog.jpg", size=size)
    assert statuses(indexer.process_messages([("m2", unsequenced)])) == {"m2": (INDEXED, "")}
    assert statuses(indexer.process_messages([("m3", unsequenced)])) == {"m3": (INDEXED, "")}
    assert store.count() == 1


def test_delete_delivered_before_an_older_put_does_not_resurrect(indexer, store, s3, photos):
    key = "photos/monkey.jpg"
    size = put_photo(s3, key, photos[900])  # the object still exists when the late put is handled
    delete = indexer.process_messages([("del", s3_body(key, DELETE, sequencer="00000000000000B2"))])
    late_put = indexer.process_messages([("put", s3_body(key, size=size, sequencer="00000000000000B1"))])
    assert statuses(delete) == {"del": ("deleted", "")}
    assert statuses(late_put) == {"put": (SKIPPED, "stale_event")}
    assert store.get(point_id_for_object(BUCKET, key)) is None
    assert store.count() == 0
    tomb = indexer.tombstones.get(point_id_for_object(BUCKET, key))
    assert tomb is not None and tomb.payload["sequencer"] == "00000000000000B2"


def test_older_put_after_newer_put_keeps_the_newer_vector(indexer, store, s3, photos, embedder):
    key = "photos/changing.jpg"
    size_new = put_photo(s3, key, photos[1200])  # the object now holds the newer upload
    new = indexer.process_messages([("new", s3_body(key, size=size_new, sequencer="0A10"))])
    old = indexer.process_messages([("old", s3_body(key, size=1234, sequencer="0A0F"))])
    assert statuses(new)["new"][0] == INDEXED
    assert statuses(old) == {"old": (SKIPPED, "stale_event")}
    record = store.get(point_id_for_object(BUCKET, key), with_vector=True)
    assert record.payload["sequencer"] == "0A10"
    expected = embedder.embed(photos[1200].read_bytes())
    assert float(np.dot(np.asarray(record.vector), expected)) > 0.999


def test_put_newer_than_tombstone_recreates_and_clears_tombstone(indexer, store, s3, photos):
    key = "photos/again.jpg"
    indexer.process_messages([("del", s3_body(key, DELETE, sequencer="10"))])
    size = put_photo(s3, key, photos[3])
    report = indexer.process_messages([("put", s3_body(key, size=size, sequencer="11"))])
    assert statuses(report) == {"put": (INDEXED, "")}
    assert store.get(point_id_for_object(BUCKET, key)) is not None
    assert indexer.tombstones.get(point_id_for_object(BUCKET, key)) is None


def test_put_then_delete_in_one_batch_leaves_nothing(indexer, store, s3, photos):
    key = "photos/brief.jpg"
    size = put_photo(s3, key, photos[4])
    report = indexer.process_messages([
        ("del", s3_body(key, DELETE, sequencer="21")),  # delivered first but newer
        ("put", s3_body(key, size=size, sequencer="20")),
    ])
    assert statuses(report) == {"del": ("deleted", ""), "put": (SKIPPED, "superseded_in_batch")}
    assert store.count() == 0


def test_put_for_an_object_deleted_since_is_acknowledged(indexer, store):
    report = indexer.process_messages([("m1", s3_body("photos/gone.jpg", sequencer="01"))])
    assert statuses(report) == {"m1": (SKIPPED, "object_missing")}
    assert report.failed_message_ids == []
    assert store.count() == 0


# -- poison input -----------------------------------------------------------------


def _png_bomb() -> bytes:
    # 10,000 x 10,000 = 100 M pixels (limit 64 M), a few kB on disk.
    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buf, "PNG")
    return buf.getvalue()


def test_one_poison_object_in_a_batch_of_ten(indexer, store, s3, photos):
    messages = []
    for i in range(9):
        key = f"photos/good-{i}.jpg"
        size = put_photo(s3, key, photos[i * 150])
        messages.append((f"good{i}", s3_body(key, size=size, sequencer=f"{i + 1:04X}")))
    s3.put_object(Bucket=BUCKET, Key="photos/notes.jpg", Body=b"these are my notes, not a photo")
    messages.insert(4, ("poison", s3_body("photos/notes.jpg", size=31, sequencer="0100")))
    report = indexer.process_messages(messages)
    assert report.count(INDEXED) == 9
    assert statuses(report)["poison"][0] == SKIPPED
    assert statuses(report)["poison"][1].startswith("not_an_image")
    assert report.failed_message_ids == []
    assert store.count() == 9


def test_every_poison_kind_is_skipped_not_failed(indexer, store, s3, photos):
    jpeg = photos[7].read_bytes()
    limit = indexer.embedder.settings.max_image_bytes
    poison = {
        "photos/text.jpg": b"plain text pretending to be a photo\n",
        "photos/truncated.jpg": jpeg[: len(jpeg) // 3],
        "photos/bomb.png": _png_bomb(),
        "photos/empty.jpg": b"",
        "photos/huge.jpg": jpeg + bytes(limit + 1 - len(jpeg)),
        "photos/huge-no-size-in-event.jpg": jpeg + bytes(limit + 1 - len(jpeg)),
    }
    messages = []
    for i, (key, data) in enumerate(poison.items()):
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        # One event without a size: the limit is then enforced from the GET's Content-Length.
        size = None if "no-size" in key else len(data)
        body = json.loads(s3_body(key, size=size or 0, sequencer=f"{i + 1:02X}"))
        if size is None:
            del body["Records"][0]["s3"]["object"]["size"]
        messages.append((key, json.dumps(body)))
    report = indexer.process_messages(messages)
    got = statuses(report)
    assert {k: v[0] for k, v in got.items()} == {k: SKIPPED for k in poison}
    codes = {k: v[1].split(":")[0] for k, v in got.items()}
    assert codes == {
        "photos/text.jpg": "not_an_image",
        "photos/truncated.jpg": "corrupt_image",
        "photos/bomb.png": "too_many_pixels",
        "photos/empty.jpg": "empty_image",
        "photos/huge.jpg": "image_too_large",
        "photos/huge-no-size-in-event.jpg": "image_too_large",
    }
    assert store.count() == 0


# -- skips ------------------------------------------------------------------------


def test_test_events_foreign_messages_and_ignored_prefixes_are_skipped(store, embedder, s3, photos):
    indexer = build(store=store, embedder=embedder, s3=s3,
                    options=IndexSettings(dedupe=False, ignore_prefixes=("thumbs/", "tmp/")))
    size = put_photo(s3, "photos/kept.jpg", photos[10])
    put_photo(s3, "thumbs/kept.jpg", photos[10])
    test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent",
                             "Time": "2026-01-01T00:00:00.000Z", "Bucket": BUCKET})
    report = indexer.process_messages([
        ("test", test_event),
        ("thumb", s3_body("thumbs/kept.jpg", size=size, sequencer="01")),
        ("tmpdel", s3_body("tmp/x.jpg", DELETE, sequencer="02")),
        ("junk", "not json at all"),
        ("photo", s3_body("photos/kept.jpg", size=size, sequencer="03")),
    ])
    assert statuses(report) == {
        "test": (SKIPPED, "test_event"),
        "thumb": (SKIPPED, "ignored_prefix"),
        "tmpdel": (SKIPPED, "ignored_prefix"),
        "junk": (SKIPPED, "not_an_s3_event"),
        "photo": (INDEXED, ""),
    }
    assert store.count() == 1


# -- transient faults ---------------------------------------------------------------


def test_s3_throttling_fails_only_the_affected_record(indexer, store, s3, photos, monkeypatch):
    messages = []
    for i in range(5):
        key = f"photos/t{i}.jpg"
        size = put_photo(s3, key, photos[i * 300])
        messages.append((f"m{i}", s3_body(key, size=size, sequencer=f"0{i + 1}")))
    real_get = s3.get_object

    def throttled_get(**kwargs):
        if kwargs["Key"] == "photos/t2.jpg":
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
                               "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject")
        return real_get(**kwargs)

    monkeypatch.setattr(s3, "get_object", throttled_get)
    report = indexer.process_messages(messages)
    assert report.failed_message_ids == ["m2"]
    assert statuses(report)["m2"] == (FAILED, "s3_error: SlowDown")
    assert report.count(INDEXED) == 4
    # SQS redelivers m2; the throttling is over by then.
    monkeypatch.setattr(s3, "get_object", real_get)
    assert statuses(indexer.process_messages([messages[2]])) == {"m2": (INDEXED, "")}
    assert store.count() == 5


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_qdrant_down_fails_every_record_and_loses_nothing(embedder, s3, photos):
    from imgsim.store.server import ServerStore, connect

    client = connect(f"http://127.0.0.1:{closed_port()}", None, 1)
    down = ServerStore(client, "images", dim=embedder.dim, retries=1)
    indexer = build(store=down, embedder=embedder, s3=s3, options=NO_DEDUPE)
    messages = []
    for i in range(3):
        key = f"photos/q{i}.jpg"
        size = put_photo(s3, key, photos[i])
        messages.append((f"m{i}", s3_body(key, size=size, sequencer=f"0{i + 1}")))
    messages.append(("del", s3_body("photos/old.jpg", DELETE, sequencer="09")))
    report = indexer.process_messages(messages)
    assert report.failed_message_ids == ["m0", "m1", "m2", "del"]
    assert all(o.reason.startswith("store_unavailable") for o in report.outcomes)
    down.close()


def test_qdrant_failing_the_upsert_fails_the_puts_only(embedder, s3, photos, store, monkeypatch):
    """Qdrant reachable for reads but failing the write (5xx after retries)."""
    from imgsim.errors import StoreUnavailable

    def failing_upsert(points, **kwargs):
        raise StoreUnavailable("Qdrant upsert failed after 2 attempts: 503")

    monkeypatch.setattr(store, "upsert", failing_upsert)
    flaky = store
    indexer = build(store=flaky, embedder=embedder, s3=s3, options=NO_DEDUPE)
    size = put_photo(s3, "photos/p.jpg", photos[0])
    report = indexer.process_messages([
        ("put", s3_body("photos/p.jpg", size=size, sequencer="01")),
        ("poison", s3_body("photos/missing.jpg", sequencer="01")),
    ])
    assert statuses(report) == {"put": (FAILED, "store_unavailable: Qdrant upsert failed after 2 attempts: 503"),
                                "poison": (SKIPPED, "object_missing")}
    assert report.failed_message_ids == ["put"]


def test_image_replaced_by_poison_leaves_the_index(indexer, store, s3, photos):
    key = "photos/overwritten.jpg"
    size = put_photo(s3, key, photos[20])
    indexer.process_messages([("good", s3_body(key, size=size, sequencer="30"))])
    assert store.count() == 1
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"oops, a text file")
    report = indexer.process_messages([("bad", s3_body(key, size=17, sequencer="31"))])
    assert statuses(report)["bad"][0] == SKIPPED and statuses(report)["bad"][1].startswith("not_an_image")
    assert store.count() == 0  # the old vector no longer shows what is at that key
    # The older put of the image, delivered late, does not bring it back.
    assert statuses(indexer.process_messages([("late", s3_body(key, size=size, sequencer="30"))])) == {
        "late": (SKIPPED, "stale_event")}
    assert store.count() == 0


# -- concurrent invocations (two Lambdas handling events for the same key at once) ------


class EmbedderWithHook:
    """The real embedder, running ``hook`` once when embedding starts: i.e. after the
    indexer has read the stored state and before it writes (the race window)."""

    def __init__(self, embedder, hook):
        self._embedder, self._hook = embedder, hook

    def __getattr__(self, name):
        return getattr(self._embedder, name)

    def embed_decoded(self, images):
        hook, self._hook = self._hook, None
        if hook:
            hook()
        return self._embedder.embed_decoded(images)


def test_delete_landing_during_a_put_does_not_resurrect(store, embedder, s3, photos):
    key = "photos/race-delete.jpg"
    size = put_photo(s3, key, photos[30])
    other = build(store=store, embedder=embedder, s3=s3, options=NO_DEDUPE)  # the concurrent invocation
    racing = build(store=store, s3=s3, options=NO_DEDUPE, embedder=EmbedderWithHook(
        embedder, lambda: other.process_messages([("del", s3_body(key, DELETE, sequencer="11"))])))
    report = racing.process_messages([("put", s3_body(key, size=size, sequencer="10"))])
    assert statuses(report) == {"put": (SKIPPED, "stale_event")}
    assert store.count() == 0
    assert racing.tombstones.get(point_id_for_object(BUCKET, key)).payload["sequencer"] == "11"


def test_older_put_winning_the_race_makes_the_newer_retry(store, embedder, s3, photos):
    key = "photos/race-puts.jpg"
    size = put_photo(s3, key, photos[40])
    other = build(store=store, embedder=embedder, s3=s3, options=NO_DEDUPE)
    racing = build(store=store, s3=s3, options=NO_DEDUPE, embedder=EmbedderWithHook(
        embedder, lambda: other.process_messages([("old", s3_body(key, size=size, sequencer="20"))])))
    report = racing.process_messages([("new", s3_body(key, size=size, sequencer="21"))])
    assert statuses(report)["new"][0] == FAILED and report.failed_message_ids == ["new"]
    assert store.get(point_id_for_object(BUCKET, key)).payload["sequencer"] == "20"
    # SQS redelivers the newer event; now it wins.
    assert statuses(racing.process_messages([("new", s3_body(key, size=size, sequencer="21"))])) == {
        "new": (INDEXED, "")}
    assert store.get(point_id_for_object(BUCKET, key)).payload["sequencer"] == "21"
    assert store.count() == 1


def test_newer_put_landing_during_a_delete_survives(store, embedder, s3, photos, monkeypatch):
    key = "photos/race-put-after-delete.jpg"
    size = put_photo(s3, key, photos[50])
    other = build(store=store, embedder=embedder, s3=s3, options=NO_DEDUPE)
    deleting = build(store=store, embedder=embedder, s3=s3, options=NO_DEDUPE)
    real_upsert = deleting.tombstones.upsert

    def upsert_after_the_put(points, **kwargs):
        other.process_messages([("put", s3_body(key, size=size, sequencer="31"))])
        return real_upsert(points, **kwargs)

    monkeypatch.setattr(deleting.tombstones, "upsert", upsert_after_the_put)
    report = deleting.process_messages([("del", s3_body(key, DELETE, sequencer="30"))])
    assert statuses(report) == {"del": ("deleted", "")}
    record = store.get(point_id_for_object(BUCKET, key))
    assert record is not None and record.payload["sequencer"] == "31"


def test_older_put_losing_the_race_does_not_overwrite_the_newer(store, embedder, s3, photos):
    key = "photos/race-stale.jpg"
    size = put_photo(s3, key, photos[60])
    other = build(store=store, embedder=embedder, s3=s3, options=NO_DEDUPE)
    racing = build(store=store, s3=s3, options=NO_DEDUPE, embedder=EmbedderWithHook(
        embedder, lambda: other.process_messages([("new", s3_body(key, size=size, sequencer="41"))])))
    report = racing.process_messages([("old", s3_body(key, size=size, sequencer="40"))])
    assert statuses(report) == {"old": (SKIPPED, "stale_event")}
    assert store.get(point_id_for_object(BUCKET, key)).payload["sequencer"] == "41"


def test_a_delete_marker_in_a_versioned_bucket_removes_the_point(indexer, store, s3, photos):
    """With BucketVersioning Enabled, a DELETE leaves a delete marker: S3 sends ObjectRemoved:DeleteMarkerCreated."""
    size = put_photo(s3, "photos/versioned.jpg", photos[40])
    indexer.process_messages([("m1", s3_body("photos/versioned.jpg", size=size, sequencer="0A"))])
    point_id = point_id_for_object(BUCKET, "photos/versioned.jpg")
    assert store.get(point_id) is not None
    marker = json.loads(s3_body("photos/versioned.jpg", "delete", sequencer="0B"))
    marker["Records"][0]["eventName"] = "ObjectRemoved:DeleteMarkerCreated"
    report = indexer.process_messages([("m2", json.dumps(marker))])
    assert statuses(report)["m2"][0] == "deleted" and store.get(point_id) is None
