"""imgsim_tools.events: the sample events in events/ are exactly what the builders make, and the S3 and SQS
builders follow AWS's conventions (what the indexer reads back from them)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from imgsim.pipeline.sqs import parse_message
from imgsim_tools.events import (
    http_api_event,
    queue_arn,
    received_message,
    s3_notification,
    s3_record,
    sqs_event,
)

EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"
SAMPLE_TIME = "2026-01-01T12:00:00.000Z"
SAMPLE_KEY = "photos/cats/photo 00000.jpg"


def index_sample(created: bool) -> dict:
    """events/index_put.json or index_delete.json: one SQS message carrying S3's notification for SAMPLE_KEY."""
    if created:
        record = s3_record("imgsim-images", SAMPLE_KEY, size=9790, etag="0c6e9f0bd3f4a6b5e2b0b4b1f0d7a8c9",
                           sequencer="0065A1B2C3D4E5F601", event_time=SAMPLE_TIME)
        message_id = "5d2c1a3e-6f7b-4c8d-9e0f-1a2b3c4d5e6f"
    else:
        record = s3_record("imgsim-images", SAMPLE_KEY, event_name="ObjectRemoved:Delete",
                           sequencer="0065A1B2C3D4E5F602", event_time=SAMPLE_TIME)
        message_id = "7e8f9a0b-1c2d-4e3f-8a5b-6c7d8e9f0a1b"
    message = received_message(json.dumps(s3_notification(record)), message_id=message_id,
                               receipt_handle="AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...", receive_count=1,
                               sent_ms=1767268800000, first_receive_ms=1767268800010)
    return sqs_event([message], queue_arn("imgsim-index"))


@pytest.mark.parametrize("name, created", [("index_put.json", True), ("index_delete.json", False)])
def test_index_samples_are_the_builders_events(name, created):
    assert json.loads((EVENTS_DIR / name).read_text()) == index_sample(created)


HTTP_SAMPLES = ["search.json", "search_by_key.json", "health.json", "compare.json", "upload.json"]
# What http_api_event adds to the headers a client sends.
ADDED_HEADERS = {"host", "user-agent", "x-forwarded-for", "x-forwarded-port", "x-forwarded-proto", "x-amzn-trace-id",
                 "content-length"}


@pytest.mark.parametrize("name", HTTP_SAMPLES)
def test_http_samples_are_the_builders_events(name):
    """Each HTTP sample, rebuilt from its request (method, path, query, the client's headers, body), is itself."""
    sample = json.loads((EVENTS_DIR / name).read_text())
    body = sample.get("body")
    if body is not None and sample["isBase64Encoded"]:
        body = base64.b64decode(body)
    context = sample["requestContext"]
    rebuilt = http_api_event(
        context["http"]["method"], sample["rawPath"], query=sample["rawQueryString"],
        headers={k: v for k, v in sample["headers"].items() if k not in ADDED_HEADERS}, body=body,
        route_key=sample["routeKey"], request_id=context["requestId"], trace_id=sample["headers"]["x-amzn-trace-id"],
        now=datetime.fromtimestamp(context["timeEpoch"] / 1000, UTC),
    )
    assert rebuilt == sample


def test_s3_records_read_back_as_the_indexer_expects():
    put = s3_record("b", "a dir/ä+b.jpg", size=12, etag='"e1"', sequencer="01", only_if_changed=True)
    removed = s3_record("b", "a dir/ä+b.jpg", event_name="ObjectRemoved:Delete", size=12, etag="e1")
    assert put["s3"]["object"] == {"key": "a+dir%2F%C3%A4%2Bb.jpg", "size": 12, "eTag": "e1", "sequencer": "01"}
    assert removed["s3"]["object"] == {"key": "a+dir%2F%C3%A4%2Bb.jpg"}  # S3 sends no size or ETag on removal
    events, skipped = parse_message("m", json.dumps(s3_notification(put, removed)))
    assert skipped == []
    assert [(e.action, e.key, e.etag, e.size, e.only_if_changed) for e in events] == [
        ("put", "a dir/ä+b.jpg", "e1", 12, True), ("delete", "a dir/ä+b.jpg", None, None, False)]


def test_sqs_event_is_lambdas_shape_of_received_messages():
    message = received_message("body", receive_count=2, sent_ms=5)
    message["Attributes"]["SqsManagedSseEnabled"] = "true"  # ReceiveMessage's extras do not reach Lambda
    message["MessageAttributes"] = {"kind": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}}
    (record,) = sqs_event([message], queue_arn("q", "eu-west-1"), "eu-west-1")["Records"]
    assert record["attributes"] == {"ApproximateReceiveCount": "2", "SentTimestamp": "5",
                                    "SenderId": "AIDAEXAMPLEQUEUE"}
    assert record["messageAttributes"] == {"kind": {"stringListValues": [], "binaryListValues": [],
                                                    "dataType": "Binary", "binaryValue": "AAE="}}
    assert record["eventSourceARN"] == "arn:aws:sqs:eu-west-1:123456789012:q" and record["awsRegion"] == "eu-west-1"
    assert record["md5OfBody"] == "841a2d689ad86bd1611447453c22c6fc"  # md5("body"), as SQS computes it
