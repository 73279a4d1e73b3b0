"""Source: S3 object notifications, as SQS delivers them to the IndexFunction, turned into object events.

powertools' event data classes read the notification (``S3Event``: records, bucket, object, the
IntelligentTiering ``get_object`` variant, ``eTag``); what they leave to the caller is done here: keys are
URL-encoded in S3 events ('+' for a space), ``size`` and ``sequencer`` may be absent (deletes, moto, hand-made
events), and the ``imgsimBackfill`` flag is imgsim's own (``imgsim backfill --via-queue``). Messages are
untrusted input: anything that is not an S3 notification is acknowledged and skipped (``not_an_s3_event``), never
retried, and never raises.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes.s3_event import S3Event, S3EventRecord

from .events import DELETE, PUT, ObjectEvent
from .report import SKIPPED, EventOutcome

# S3 sends it once to a queue when the notification configuration is saved.
TEST_EVENT = "s3:TestEvent"


def parse_message(
    message_id: str, body: str | Mapping[str, Any], receive_count: int = 1
) -> tuple[list[ObjectEvent], list[EventOutcome]]:
    """One SQS message body (an S3 notification) -> object events, plus outcomes for what is skipped."""
    try:
        doc = json.loads(body) if isinstance(body, str) else dict(body)
    except (TypeError, ValueError):
        return [], [EventOutcome(message_id, SKIPPED, "not_an_s3_event")]
    if not isinstance(doc, dict):
        return [], [EventOutcome(message_id, SKIPPED, "not_an_s3_event")]
    if doc.get("Event") == TEST_EVENT:
        return [], [EventOutcome(message_id, SKIPPED, "test_event", bucket=doc.get("Bucket"))]
    records = doc.get("Records")
    if not isinstance(records, list) or not records:
        return [], [EventOutcome(message_id, SKIPPED, "not_an_s3_event")]
    events: list[ObjectEvent] = []
    skipped: list[EventOutcome] = []
    for record in S3Event(doc).records:
        try:
            event = _object_event(message_id, record, receive_count)
        except (KeyError, TypeError, AttributeError, ValueError):
            skipped.append(EventOutcome(message_id, SKIPPED, "not_an_s3_event"))
            continue
        if isinstance(event, EventOutcome):
            skipped.append(event)
        else:
            events.append(event)
    return events, skipped


def _object_event(message_id: str, record: S3EventRecord, receive_count: int) -> ObjectEvent | EventOutcome:
    """One record; raises KeyError/TypeError for a record that is no S3 notification."""
    bucket = record.s3.bucket.name
    obj = record.s3.get_object
    key = unquote_plus(obj.key)
    name = str(record.raw_event.get("eventName", ""))
    if name.startswith("ObjectCreated:"):
        action = PUT
    elif name.startswith("ObjectRemoved:"):
        action = DELETE
    else:  # restore, tagging, ACL, replication... nothing to index
        return EventOutcome(message_id, SKIPPED, "unhandled_event", bucket=bucket, key=key)
    size = obj.raw_event.get("size")
    return ObjectEvent(
        message_id=message_id,
        action=action,
        bucket=bucket,
        key=key,
        sequencer=obj.raw_event.get("sequencer") or None,
        etag=obj.etag.strip('"') or None,
        size=int(size) if size not in (None, "") else None,
        event_name=name,
        only_if_changed=bool(record.raw_event.get("imgsimBackfill")),
        receive_count=receive_count,
    )


__all__ = ["TEST_EVENT", "parse_message"]
