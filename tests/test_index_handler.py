"""functions/index/app.py end to end, in process: moto S3 -> moto SQS -> handler -> embedded Qdrant.

moto sends real S3 notifications to the queue for puts and deletes (and the
s3:TestEvent when the configuration is saved), but its events carry no
``sequencer``. The ``s3_sequencers`` fixture adds one at the moment moto
creates each event, increasing per bucket, the way S3 stamps its events; one
test runs without it to show that unsequenced events still work.
"""

from __future__ import annotations

import itertools
import json
import socket
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from imgsim.composition import model_embedder
from imgsim.ids import point_id_for_object
from imgsim_tools.events import sqs_event
from roots import make_root
from support import INDEX_APP_PATH, handler_on_root, lambda_context, notifying_bucket

REPO_ROOT = Path(__file__).resolve().parents[1]
BUCKET = "imgsim-images"
QUEUE = "imgsim-index"
REGION = "us-east-1"


def load_handler_module(root):
    """functions/index/app.py as Lambda loads it (its own module; search has an app.py too), on ``root``."""
    return handler_on_root("index_app", INDEX_APP_PATH, root)


def FakeLambdaContext():
    return lambda_context("IndexFunction", timeout_s=60)


@pytest.fixture
def s3_sequencers(monkeypatch):
    """Give moto's S3 events the ``sequencer`` real S3 puts in them (hex, growing with each event)."""
    from moto.s3 import notifications

    counter = itertools.count(0x5F3A2B1C00000000)
    real = notifications._get_s3_event

    def with_sequencer(*args, **kwargs):
        event = real(*args, **kwargs)
        for record in event["Records"]:
            record["s3"]["object"]["sequencer"] = f"{next(counter):016X}"
        return event

    monkeypatch.setattr(notifications, "_get_s3_event", with_sequencer)


@pytest.fixture
def aws():
    """moto S3 bucket notifying a moto SQS queue."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url, queue_arn = notifying_bucket(s3, sqs, BUCKET, QUEUE)
        yield s3, sqs, queue_url, queue_arn


@pytest.fixture
def roots(aws, tmp_path):
    """Build roots on the embedded Qdrant in tmp_path (moto's AWS), each configured by its variables; closed at the
    end."""
    built = []

    def build(variables=None, **kwargs):
        root = make_root(tmp_path, {"QDRANT_COLLECTION": "images", **(variables or {})}, **kwargs)
        built.append(root)
        return root

    yield build
    for root in built:
        root.close()


@pytest.fixture
def root(roots):
    """The function's composition root on the embedded Qdrant in tmp_path."""
    return roots()


def receive_lambda_event(sqs, queue_url: str, queue_arn: str, max_records: int = 10) -> dict:
    """Receive up to ``max_records`` messages and shape them exactly as Lambda's SQS poller does
    (imgsim_tools.events, the local stack's event source mapping's too)."""
    messages = []
    while len(messages) < max_records:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=min(10, max_records - len(messages)),
                                  AttributeNames=["All"], MessageAttributeNames=["All"], WaitTimeSeconds=0)
        if not got.get("Messages"):
            break
        messages.extend(got["Messages"])
    return sqs_event(messages, queue_arn, REGION)


def acknowledge(sqs, queue_url: str, event: dict, response: dict) -> None:
    """What Lambda does after the handler returns: delete every message not in batchItemFailures.

    The failed ones become visible again when their visibility timeout ends;
    here at once, so the test need not wait.
    """
    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    for record in event["Records"]:
        if record["messageId"] in failed:
            sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"],
                                          VisibilityTimeout=0)
        else:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"])


def drain(app, sqs, queue_url, queue_arn) -> list[dict]:
    """Invoke the handler batch by batch until the queue is empty; return the responses."""
    responses = []
    while True:
        event = receive_lambda_event(sqs, queue_url, queue_arn)
        if not event["Records"]:
            return responses
        response = app.handler(event, FakeLambdaContext())
        acknowledge(sqs, queue_url, event, response)
        responses.append(response)


def emf_metrics(captured: str) -> dict[str, float]:
    """Sum every metric in the EMF JSON lines powertools printed to stdout."""
    totals: dict[str, float] = {}
    for line in captured.splitlines():
        line = line.strip()
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        doc = json.loads(line)
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "imgsim"
            for metric in directive["Metrics"]:
                value = doc[metric["Name"]]
                values = value if isinstance(value, list) else [value]
                totals[metric["Name"]] = totals.get(metric["Name"], 0) + sum(values)
    return totals


def test_end_to_end_put_search_delete(aws, root, photos, s3_sequencers, capsys):
    s3, sqs, queue_url, queue_arn = aws
    app = load_handler_module(root)
    # 12 photos from all four animal blocks, under keys that need URL-decoding.
    chosen = photos[::141][:12]
    keys = {f"photos/{'cats' if i < 6 else 'more pets'}/photo {i}+ü.jpg": path for i, path in enumerate(chosen)}
    for key, path in keys.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes(), ContentType="image/jpeg")

    responses = drain(app, sqs, queue_url, queue_arn)
    assert responses and all(r == {"batchItemFailures": []} for r in responses)
    store = root.store()
    assert store.count() == len(keys)
    for key, path in keys.items():
        record = store.get(point_id_for_object(BUCKET, key))
        assert record is not None, key
        payload = record.payload
        assert payload["key"] == key and payload["bucket"] == BUCKET
        assert payload["etag"] == s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
        assert payload["size"] == path.stat().st_size
        assert payload["content_type"] == "image/jpeg"
        assert payload["width"] > 0 and payload["height"] > 0
        assert payload["model"] == root.embedder().model_name
        assert int(payload["sequencer"], 16) > 0
        assert payload["indexed_at"]
        # Each photo finds itself first.
        hits = store.search(root.embedder().embed(path.read_bytes()), limit=3)
        assert hits[0].payload["key"] == key and hits[0].score > 0.99

    metrics = emf_metrics(capsys.readouterr().out)
    assert metrics["ImagesIndexed"] == len(keys)
    assert metrics["ImagesSkipped"] == 1  # the s3:TestEvent sent when notifications were configured
    assert metrics["ImagesFailed"] == 0
    assert metrics["EmbedMs"] > 0 and metrics["FetchMs"] > 0 and metrics["UpsertMs"] > 0

    deleted = list(keys)[:7]
    for key in deleted:
        s3.delete_object(Bucket=BUCKET, Key=key)
    responses = drain(app, sqs, queue_url, queue_arn)
    assert all(r == {"batchItemFailures": []} for r in responses)
    assert store.count() == len(keys) - len(deleted)
    for key in deleted:
        assert store.get(point_id_for_object(BUCKET, key)) is None
    remaining = {r.payload["key"] for r in store.search(root.embedder().embed(chosen[0].read_bytes()), limit=20)}
    assert remaining == set(keys) - set(deleted)
    assert emf_metrics(capsys.readouterr().out)["ImagesDeleted"] == len(deleted)


def test_moto_events_without_sequencer_index_and_delete(aws, root, photos):
    s3, sqs, queue_url, queue_arn = aws
    app = load_handler_module(root)
    s3.put_object(Bucket=BUCKET, Key="photos/plain.jpg", Body=photos[1].read_bytes())
    assert drain(app, sqs, queue_url, queue_arn) == [{"batchItemFailures": []}]
    assert root.store().count() == 1
    s3.delete_object(Bucket=BUCKET, Key="photos/plain.jpg")
    assert drain(app, sqs, queue_url, queue_arn) == [{"batchItemFailures": []}]
    assert root.store().count() == 0


def test_poison_object_in_a_batch_of_ten_is_acked_and_counted(aws, root, photos, s3_sequencers, capsys):
    s3, sqs, queue_url, queue_arn = aws
    app = load_handler_module(root)
    receive_lambda_event(sqs, queue_url, queue_arn)  # drop the s3:TestEvent: a batch of exactly ten
    for i in range(9):
        s3.put_object(Bucket=BUCKET, Key=f"photos/ok-{i}.jpg", Body=photos[i * 180].read_bytes())
    s3.put_object(Bucket=BUCKET, Key="photos/broken.jpg", Body=photos[0].read_bytes()[:700])
    event = receive_lambda_event(sqs, queue_url, queue_arn)
    assert len(event["Records"]) == 10
    response = app.handler(event, FakeLambdaContext())
    assert response == {"batchItemFailures": []}
    assert root.store().count() == 9
    metrics = emf_metrics(capsys.readouterr().out)
    assert (metrics["ImagesIndexed"], metrics["ImagesSkipped"], metrics["ImagesFailed"]) == (9, 1, 0)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_qdrant_down_reports_every_record_and_nothing_is_lost(aws, roots, photos, s3_sequencers, capsys):
    s3, sqs, queue_url, queue_arn = aws
    app = load_handler_module(roots())
    receive_lambda_event(sqs, queue_url, queue_arn)  # the s3:TestEvent
    for i in range(4):
        s3.put_object(Bucket=BUCKET, Key=f"photos/down-{i}.jpg", Body=photos[i].read_bytes())
    app.use_root(roots({"QDRANT_URL": f"http://127.0.0.1:{closed_port()}", "QDRANT_RETRIES": "1",
                        "QDRANT_TIMEOUT": "1"}))
    event = receive_lambda_event(sqs, queue_url, queue_arn)
    response = app.handler(event, FakeLambdaContext())
    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == sorted(
        r["messageId"] for r in event["Records"])
    assert emf_metrics(capsys.readouterr().out)["ImagesFailed"] == 4
    acknowledge(sqs, queue_url, event, response)

    # Qdrant is back: the redelivered messages index everything.
    root = roots()
    app.use_root(root)
    responses = drain(app, sqs, queue_url, queue_arn)
    assert all(r == {"batchItemFailures": []} for r in responses)
    assert root.store().count() == 4


def test_s3_throttling_on_one_object_fails_only_its_record(aws, root, photos, s3_sequencers, monkeypatch):
    s3, sqs, queue_url, queue_arn = aws
    app = load_handler_module(root)
    receive_lambda_event(sqs, queue_url, queue_arn)  # the s3:TestEvent
    for i in range(5):
        s3.put_object(Bucket=BUCKET, Key=f"photos/slow-{i}.jpg", Body=photos[i * 200].read_bytes())
    client = root.s3()
    real_get = client.get_object

    def throttled(**kwargs):
        if kwargs["Key"] == "photos/slow-3.jpg":
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
                               "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject")
        return real_get(**kwargs)

    monkeypatch.setattr(client, "get_object", throttled)
    event = receive_lambda_event(sqs, queue_url, queue_arn)
    response = app.handler(event, FakeLambdaContext())
    slow = [r["messageId"] for r in event["Records"] if "slow-3.jpg" in r["body"]]
    assert response == {"batchItemFailures": [{"itemIdentifier": slow[0]}]}
    assert root.store().count() == 4


def test_ignored_prefix_from_environment(aws, roots, photos, capsys):
    s3, sqs, queue_url, queue_arn = aws
    root = roots({"IMGSIM_IGNORE_PREFIXES": "thumbnails/,uploads/tmp/"})
    app = load_handler_module(root)
    s3.put_object(Bucket=BUCKET, Key="thumbnails/a.jpg", Body=photos[0].read_bytes())
    s3.put_object(Bucket=BUCKET, Key="uploads/tmp/b.jpg", Body=photos[1].read_bytes())
    s3.put_object(Bucket=BUCKET, Key="photos/c.jpg", Body=photos[2].read_bytes())
    assert all(r == {"batchItemFailures": []} for r in drain(app, sqs, queue_url, queue_arn))
    assert [r.payload["key"] for r in root.store().scroll()[0]] == ["photos/c.jpg"]
    metrics = emf_metrics(capsys.readouterr().out)
    assert metrics["ImagesSkipped"] == 3 and metrics["ImagesIndexed"] == 1  # test event + 2 ignored


def test_clients_and_model_are_built_once_per_execution_environment(aws, roots, photos, monkeypatch):
    s3, sqs, queue_url, queue_arn = aws
    root = roots(embedders=model_embedder)  # its own model, not the session's shared one: built here, once
    app = load_handler_module(root)
    from imgsim import embedder as embedder_module

    built = []
    real_init = embedder_module.Embedder.__init__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(embedder_module.Embedder, "__init__", counting_init)
    seen = []
    for i in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"photos/warm-{i}.jpg", Body=photos[i].read_bytes())
        drain(app, sqs, queue_url, queue_arn)
        seen.append((id(root.store()), id(root.store().companion("_tombstones", dim=1)), id(root.embedder()),
                     id(root.s3())))
    assert len(built) == 1
    assert len(set(seen)) == 1
    assert root.store().count() == 3


def test_structured_logs_carry_request_id_and_s3_key(aws, root, photos, caplog):
    s3, sqs, queue_url, queue_arn = aws
    app = load_handler_module(root)
    s3.put_object(Bucket=BUCKET, Key="photos/logged one.jpg", Body=photos[5].read_bytes())
    event = receive_lambda_event(sqs, queue_url, queue_arn)
    context = FakeLambdaContext()
    with caplog.at_level("INFO"):
        app.handler(event, context)
    # Format the captured records the way the Lambda log stream gets them (powertools JSON).
    logs = [json.loads(app.logger.registered_formatter.format(r)) for r in caplog.records]
    indexed = [entry for entry in logs if entry.get("outcome") == "indexed"]
    assert indexed and indexed[0]["s3_key"] == "photos/logged one.jpg"
    assert indexed[0]["function_request_id"] == context.aws_request_id


def test_sample_events_for_sam_local_invoke(aws, root, photos):
    """events/index_put.json and events/index_delete.json work as they are."""
    s3, _sqs, _queue_url, _queue_arn = aws
    app = load_handler_module(root)
    put = json.loads((REPO_ROOT / "events" / "index_put.json").read_text())
    delete = json.loads((REPO_ROOT / "events" / "index_delete.json").read_text())
    key = "photos/cats/photo 00000.jpg"  # the events carry it URL-encoded, as S3 does
    s3.put_object(Bucket=BUCKET, Key=key, Body=photos[0].read_bytes())
    assert app.handler(put, FakeLambdaContext()) == {"batchItemFailures": []}
    assert root.store().get(point_id_for_object(BUCKET, key)) is not None
    assert app.handler(delete, FakeLambdaContext()) == {"batchItemFailures": []}
    assert root.store().get(point_id_for_object(BUCKET, key)) is None
    # The put delivered again after the delete (SQS is at-least-once, unordered): no resurrection.
    assert app.handler(put, FakeLambdaContext()) == {"batchItemFailures": []}
    assert root.store().count() == 0


def test_redelivered_batch_is_acknowledged_without_duplicates(aws, root, photos, s3_sequencers, capsys):
    s3, sqs, queue_url, queue_arn = aws
    app = load_handler_module(root)
    for i in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"photos/again-{i}.jpg", Body=photos[i * 400].read_bytes())
    event = receive_lambda_event(sqs, queue_url, queue_arn)
    assert app.handler(event, FakeLambdaContext()) == {"batchItemFailures": []}
    # The same batch again (e.g. the function timed out after Qdrant had the points).
    assert app.handler(event, FakeLambdaContext()) == {"batchItemFailures": []}
    assert root.store().count() == 3
    metrics = emf_metrics(capsys.readouterr().out)
    assert metrics["ImagesIndexed"] == 3 and metrics["EventsStale"] == 3
