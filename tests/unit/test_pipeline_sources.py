"""The sources: SQS messages of S3 notifications (imgsim.pipeline.sqs) and local files (imgsim.pipeline.files)."""

from __future__ import annotations

import json
import os

from imgsim.ids import point_id_for_file, point_id_for_object
from imgsim.pipeline import DELETE, FILE, PUT, S3, SKIPPED, file_event, file_events
from imgsim.pipeline.sqs import parse_message


def notification(*records: dict) -> str:
    return json.dumps({"Records": list(records)})


def record(key: str, name: str = "ObjectCreated:Put", **obj: object) -> dict:
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": name,
            "s3": {"bucket": {"name": "pics"}, "object": {"key": key, **obj}}}


def test_a_put_notification_becomes_an_event_with_a_decoded_key_and_its_fields():
    body = notification(record("photos/my+cat+%C3%BC%2B.jpg", size=1234, eTag='"abc"', sequencer="0A1B"))
    events, skipped = parse_message("m1", body, receive_count=3)
    assert skipped == []
    [event] = events
    assert (event.message_id, event.action, event.bucket, event.key) == ("m1", PUT, "pics", "photos/my cat ü+.jpg")
    assert (event.size, event.etag, event.sequencer, event.event_name) == (1234, "abc", "0A1B", "ObjectCreated:Put")
    assert event.receive_count == 3 and event.origin == S3 and not event.only_if_changed
    assert event.point_id == point_id_for_object("pics", "photos/my cat ü+.jpg")


def test_deletes_and_delete_markers_are_deletes_without_size_or_etag():
    events, _ = parse_message("m", notification(record("a.jpg", "ObjectRemoved:Delete", sequencer="02"),
                                                record("b.jpg", "ObjectRemoved:DeleteMarkerCreated")))
    assert [(e.action, e.key, e.size, e.etag, e.sequencer) for e in events] == [
        (DELETE, "a.jpg", None, None, "02"), (DELETE, "b.jpg", None, None, None)]


def test_a_backfill_record_asks_to_skip_unchanged_objects_and_dict_bodies_are_read_too():
    body = {"Records": [{**record("x.jpg", size=5, eTag="e"), "imgsimBackfill": True}]}
    [event], _ = parse_message("m", body)
    assert event.only_if_changed and event.etag == "e"


def test_intelligent_tiering_records_name_the_object_get_object():
    rec = record("t.jpg", "ObjectCreated:Copy")
    rec["s3"]["get_object"] = rec["s3"].pop("object")
    [event], _ = parse_message("m", notification(rec))
    assert event.key == "t.jpg"


def test_what_is_not_an_object_event_is_skipped_with_its_reason():
    test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "pics"})
    cases = {
        "test": (test_event, [("test_event", "pics", None)]),
        "junk": ("not json at all", [("not_an_s3_event", None, None)]),
        "list": ("[1, 2]", [("not_an_s3_event", None, None)]),
        "empty": (json.dumps({"Records": []}), [("not_an_s3_event", None, None)]),
        "nobucket": (notification({"eventName": "ObjectCreated:Put", "s3": {"object": {"key": "k"}}}),
                     [("not_an_s3_event", None, None)]),
        "string record": (notification("oops"), [("not_an_s3_event", None, None)]),
        "tagging": (notification(record("k.jpg", "ObjectTagging:Put")), [("unhandled_event", "pics", "k.jpg")]),
        "no name": (notification({"s3": {"bucket": {"name": "pics"}, "object": {"key": "k.jpg"}}}),
                    [("unhandled_event", "pics", "k.jpg")]),
        "bad size": (notification(record("k.jpg", size="lots")), [("not_an_s3_event", None, None)]),
    }
    for name, (body, expected) in cases.items():
        events, skipped = parse_message(name, body)
        assert events == [], name
        assert [(o.reason, o.bucket, o.key) for o in skipped] == expected, name
        assert all(o.status == SKIPPED and o.message_id == name for o in skipped)


def test_a_malformed_record_is_skipped_and_the_others_of_its_message_kept():
    events, skipped = parse_message("m", notification(record("good.jpg", size=1), {"s3": None}))
    assert [e.key for e in events] == ["good.jpg"] and [o.reason for o in skipped] == ["not_an_s3_event"]


def test_a_local_file_is_a_put_of_its_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    event = file_event("sub/../cat.jpg")
    assert event.message_id == "sub/../cat.jpg"  # as the user named it, for messages
    assert event.key == os.path.join(str(tmp_path), "cat.jpg") and event.bucket is None
    assert (event.action, event.origin, event.sequencer, event.only_if_changed) == (PUT, FILE, None, False)
    assert event.point_id == point_id_for_file(tmp_path / "cat.jpg")
    assert [e.key for e in file_events([tmp_path / "a.jpg", "b.jpg"])] == [str(tmp_path / "a.jpg"),
                                                                        str(tmp_path / "b.jpg")]
