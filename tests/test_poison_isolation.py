"""One object that kills, hangs or swamps its decoder must not take the rest of its batch down.

End to end on moto SQS with the template's redrive policy (maxReceiveCount 5): the first
delivery of a batch dies with its worker; redelivered records (ApproximateReceiveCount >= 2)
are decoded each in a forked child, so nine are indexed and the killer alone ends in the DLQ.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time

import boto3
import pytest
from imgsim.embedder import Embedder
from imgsim.errors import NotAnImage
from imgsim.isolation import IsolatedDecodeFailed, decode_in_child
from imgsim.pipeline import FAILED, INDEXED, SKIPPED, BudgetGate, Pipeline, build
from imgsim.settings import IndexSettings
from moto import mock_aws
from store_backends import make_store
from test_indexing import BUCKET, s3_body

KILL_MARK = b"imgsim-test: kill the decoder"
NO_DEDUPE = IndexSettings(dedupe=False)


@pytest.fixture
def aws():
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs", region_name="us-east-1")
        dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue = sqs.create_queue(QueueName="index", Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})})["QueueUrl"]
        yield s3, sqs, queue, dlq


@pytest.fixture
def killer_embedder(embedder, monkeypatch):
    """The session's embedder, whose decode kills its process on one marked object (a native crash,
    the kernel's OOM killer, a Lambda timeout all look like this from outside)."""
    real = Embedder.decode

    def decode(self, data: bytes):
        if data.endswith(KILL_MARK):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, data)

    monkeypatch.setattr(Embedder, "decode", decode)
    return embedder


def receive(sqs, queue: str) -> list[dict]:
    return sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=0,
                               AttributeNames=["ApproximateReceiveCount"]).get("Messages", [])


def run_in_a_worker_that_may_die(indexer: Pipeline, batch: list[tuple]) -> tuple[int | None, set[str]]:
    """Like a Lambda invocation: a separate process; returns (exit code, acknowledged message ids)."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)

    def work() -> None:
        report = indexer.process_messages(batch)
        sender.send(sorted(set(report.message_ids) - set(report.failed_message_ids)))

    worker = context.Process(target=work)
    worker.start()
    sender.close()
    worker.join(120)
    try:
        acked = set(receiver.recv()) if receiver.poll(0) else set()
    except EOFError:  # the worker died before answering
        acked = set()
    return worker.exitcode, acked


def test_a_record_that_kills_its_worker_ends_alone_in_the_dlq(aws, killer_embedder, photos, tmp_path):
    s3, sqs, queue, dlq = aws
    store = make_store("server", tmp_path, killer_embedder.dim)
    indexer = build(store=store, embedder=killer_embedder, s3=s3, options=NO_DEDUPE)
    keys = [f"photos/{i}.jpg" for i in range(10)]
    for i, key in enumerate(keys):
        body = photos[i * 150].read_bytes() + (KILL_MARK if i == 4 else b"")
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        sqs.send_message(QueueUrl=queue, MessageBody=s3_body(key, size=len(body), sequencer=f"{i + 1:02}"))

    deliveries: list[tuple[int, int | None, int]] = []  # (receive count, worker exit code, acknowledged)
    first = True
    for _ in range(40):
        messages = receive(sqs, queue)
        if not messages:
            break
        batch = [(m["MessageId"], m["Body"], int(m["Attributes"]["ApproximateReceiveCount"])) for m in messages]
        if first:  # the first invocation runs the batch together, in a worker the killer takes down
            code, acked = run_in_a_worker_that_may_die(indexer, batch)
            first = False
        else:
            report = indexer.process_messages(batch)
            code, acked = 0, set(report.message_ids) - set(report.failed_message_ids)
        deliveries.append((max(b[2] for b in batch), code, len(acked)))
        for message in messages:
            if message["MessageId"] in acked:
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])

    assert deliveries[0] == (1, -signal.SIGKILL, 0)  # the whole first batch died with its worker
    assert store.count() == 9
    assert store.find_by_key("photos/4.jpg") is None
    dead = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
    assert [json.loads(m["Body"])["Records"][0]["s3"]["object"]["key"] for m in dead] == ["photos%2F4.jpg"]
    assert receive(sqs, queue) == []


def test_isolated_decoding_returns_typed_errors_and_stops_a_hanging_decoder(embedder):
    with pytest.raises(NotAnImage):
        decode_in_child(embedder.decode, b"not an image at all", timeout_s=30)

    def hang(data: bytes):
        time.sleep(60)

    started = time.monotonic()
    with pytest.raises(IsolatedDecodeFailed, match="took longer than 1 s"):
        decode_in_child(hang, b"x", timeout_s=1)
    assert time.monotonic() - started < 30  # killed, not waited for


def test_redelivered_records_that_decode_fine_are_indexed_normally(aws, embedder, photos, tmp_path):
    s3, *_ = aws
    store = make_store("edge", tmp_path, embedder.dim)
    indexer = build(store=store, embedder=embedder, s3=s3, options=NO_DEDUPE)
    data = photos[3].read_bytes()
    s3.put_object(Bucket=BUCKET, Key="photos/again.jpg", Body=data)
    report = indexer.process_messages([("m1", s3_body("photos/again.jpg", size=len(data), sequencer="01"), 3)])
    assert [(o.status, o.reason) for o in report.outcomes] == [(INDEXED, "")]
    vector = store.get(report.outcomes and store.find_by_key("photos/again.jpg").id, with_vector=True).vector
    assert abs(sum(a * b for a, b in zip(vector, embedder.embed(data), strict=True)) - 1.0) < 1e-4
    store.close()


def test_large_objects_over_the_limits_are_refused_from_their_header_without_a_full_download(
        aws, embedder, tmp_path, monkeypatch):
    import io

    from PIL import Image

    s3, *_ = aws
    out = io.BytesIO()
    Image.new("L", (12_000, 12_000)).save(out, "PNG")  # 144 M pixels, a small file
    s3.put_object(Bucket=BUCKET, Key="photos/huge.png", Body=out.getvalue())
    calls: list[dict] = []
    real = s3.get_object
    monkeypatch.setattr(s3, "get_object", lambda **kw: (calls.append(kw), real(**kw))[1])
    indexer = build(store=make_store("server", tmp_path, embedder.dim), embedder=embedder, s3=s3,
                    options=NO_DEDUPE, precheck_bytes=0)
    report = indexer.process_messages([("m1", s3_body("photos/huge.png", size=len(out.getvalue()), sequencer="01"))])
    assert report.outcomes[0].status == SKIPPED and report.outcomes[0].reason.startswith("too_many_pixels")
    assert "judged from the header" in report.outcomes[0].reason
    assert [c.get("Range") for c in calls] == ["bytes=0-65535"]


def test_the_remaining_time_bounds_the_work(aws, embedder, photos, tmp_path):
    s3, *_ = aws
    data = photos[5].read_bytes()
    s3.put_object(Bucket=BUCKET, Key="photos/late.jpg", Body=data)
    indexer = build(store=make_store("server", tmp_path, embedder.dim), embedder=embedder, s3=s3, options=NO_DEDUPE)
    report = indexer.process_messages([("m1", s3_body("photos/late.jpg", size=len(data), sequencer="01"))],
                                      remaining_ms=lambda: 2_000)  # less than the 5 s margin
    assert [(o.status, o.reason.split(":")[0]) for o in report.outcomes] == [(FAILED, "deadline")]
    assert report.failed_message_ids == ["m1"]


def test_budget_gate_lets_decodes_overlap_only_within_the_budget():
    gate = BudgetGate(100)
    inside: list[int] = []
    peak = [0]
    lock = threading.Lock()
    release = threading.Event()

    def decode(cost: int) -> None:
        with gate.hold(cost):
            with lock:
                inside.append(cost)
                peak[0] = max(peak[0], sum(inside))
            release.wait(5)
            with lock:
                inside.remove(cost)

    threads = [threading.Thread(target=decode, args=(c,)) for c in (60, 60, 30)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sum(inside) < 90:
        time.sleep(0.01)
    with lock:
        running = sorted(inside)
    release.set()
    for t in threads:
        t.join()
    assert running == [30, 60] and peak[0] <= 100  # the second 60 waited
    big = BudgetGate(100)
    with big.hold(500):  # over the budget on its own: runs, alone
        pass
