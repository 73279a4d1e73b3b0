"""Lambda's SQS event source mapping for IndexFunction, and the S3 notifications it carries.

It talks to the rest of the stack through three things only: the function to invoke (``Invoke``), the stack's
stop signal (a ``threading.Event``) and a callback told which notifications were handled (``settle``).
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from ..events import REGION, received_message, sqs_event
from .common import (
    INDEX_BATCH_SIZE,
    INDEX_TIMEOUT_S,
    RECEIVE_WAIT_S,
    SETTINGS,
    Invoke,
    StackStopping,
    log,
)


def s3_changes(bodies: list[str]) -> list[tuple[str, str, str | None]]:
    """(key, "put" | "delete", ETag) for each S3 record in these queue messages (test events and anything
    else ignored): what the stack's durable bucket needs to know was handled."""
    changes: list[tuple[str, str, str | None]] = []
    for body in bodies:
        try:
            records = json.loads(body).get("Records") or []
        except (ValueError, AttributeError):
            continue
        for record in records:
            try:
                name = str(record["eventName"])
                obj = record["s3"]["object"]
                key = unquote_plus(str(obj["key"]))
            except (KeyError, TypeError):
                continue
            if name.startswith("ObjectCreated:"):
                changes.append((key, "put", str(obj.get("eTag") or "") or None))
            elif name.startswith("ObjectRemoved:"):
                changes.append((key, "delete", None))
    return changes


def failed_message_ids(response: Any, message_ids: list[str]) -> set[str]:
    """Lambda's reading of a ReportBatchItemFailures response: anything malformed fails the whole batch."""
    if response is None:
        return set()
    if not isinstance(response, dict):
        return set(message_ids)
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return set(message_ids)
    failed: set[str] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not identifier or identifier not in message_ids:
            return set(message_ids)
        failed.add(identifier)
    return failed


class SqsPoller:
    """Lambda's SQS event source mapping with ReportBatchItemFailures, for one concurrent invocation.

    moto's ReceiveMessage scans every message in the queue for each call (measured: ~220 ms per
    call with 600 queued, ~40 messages/s at best), so a burst of uploads made the local indexer
    fall ever further behind (36 images/s end to end against 157/s inside the handler). A drain
    thread therefore moves notifications out of moto as they arrive (receive + delete, keeping
    its queue short and cheap), and the poller feeds the handler from this in-process buffer,
    as the event source mapping would: batches of up to INDEX_BATCH_SIZE, each message's
    ApproximateReceiveCount, messages in ``batchItemFailures`` redelivered after the queue's
    visibility timeout (``redelivery_delay_s``), and after ``max_receive_count`` receives moved
    to the DLQ (a real message in moto's DLQ, inspectable with the AWS CLI). Objects reach the
    data dir when they are written (``WriteThrough``), not from here.
    """

    def __init__(self, sqs: Any, queue_url: str, queue_arn: str, *, invoke: Invoke, stopping: threading.Event,
                 settle: Callable[[list[str]], None] | None = None, region: str = REGION, dlq_url: str = "",
                 redelivery_delay_s: float = SETTINGS.visibility_timeout_s,
                 max_receive_count: int = SETTINGS.max_receive_count) -> None:
        """``invoke``: IndexFunction's invocations; ``stopping``: set when the stack stops; ``settle``: called
        with the bodies of the messages handled (or dead-lettered), which are no longer owed to the function."""
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.dlq_url = dlq_url
        self._invoke = invoke
        self._stopping = stopping
        self._settle = settle
        self.region = region
        self.redelivery_delay_s = redelivery_delay_s
        self.max_receive_count = max_receive_count
        self._ready: list[dict] = []  # messages to deliver, oldest first
        self._waiting: list[tuple[float, dict]] = []  # (visible again at, message) after a failure
        self._cond = threading.Condition()
        self.invocations = 0

    # -- ingress: moto's queue -> the buffer ---------------------------------------------------------------------

    def drain(self) -> None:
        while not self._stopping.is_set():
            try:
                if not self.drain_once():
                    # Short polls with a pause rather than a 1 s long poll: a stop is noticed in 0.1 s.
                    self._stopping.wait(0.1)
            except Exception as exc:  # noqa: BLE001 - the drain must survive a hiccup of the emulator
                if self._stopping.is_set():
                    return
                log.warning("queue drain failed: %s", exc)
                self._stopping.wait(1)

    def drain_once(self) -> int:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=INDEX_BATCH_SIZE, WaitTimeSeconds=0,
            AttributeNames=["All"], MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        for message in messages:
            message.setdefault("Attributes", {})["ApproximateReceiveCount"] = "0"
        with self._cond:
            self._ready.extend(messages)
            self._cond.notify_all()
        self.sqs.delete_message_batch(
            QueueUrl=self.queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
        )
        return len(messages)

    def enqueue(self, bodies: list[str]) -> None:
        """Messages for the function as if they had arrived on the queue (the start-up catch-up's)."""
        if not bodies:
            return
        now_ms = int(time.time() * 1000)
        messages = [received_message(body, sent_ms=now_ms) for body in bodies]
        with self._cond:
            self._ready.extend(messages)
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._ready) + len(self._waiting)

    # -- delivery: the buffer -> IndexFunction ---------------------------------------------------------------------

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.poll_once()
            except StackStopping:
                return
            except Exception as exc:  # noqa: BLE001 - the poller must survive a hiccup of the emulator
                if self._stopping.is_set():
                    return
                log.warning("queue poll failed: %s", exc)
                self._stopping.wait(1)

    def _take(self, wait_s: float) -> list[dict]:
        with self._cond:
            deadline = time.monotonic() + wait_s
            while True:
                now = time.monotonic()
                due = [m for at, m in self._waiting if at <= now]
                if due:
                    self._waiting = [(at, m) for at, m in self._waiting if at > now]
                    self._ready.extend(due)
                if self._ready or now >= deadline or self._stopping.is_set():
                    batch, self._ready = self._ready[:INDEX_BATCH_SIZE], self._ready[INDEX_BATCH_SIZE:]
                    return batch
                next_due = min((at for at, _ in self._waiting), default=deadline)
                self._cond.wait(max(0.01, min(deadline, next_due) - now))

    def poll_once(self, wait_s: float = RECEIVE_WAIT_S) -> int:
        messages = self._take(wait_s)
        if not messages:
            return 0
        now_ms = str(int(time.time() * 1000))
        for message in messages:
            attributes = message["Attributes"]
            attributes["ApproximateReceiveCount"] = str(int(attributes["ApproximateReceiveCount"]) + 1)
            attributes.setdefault("ApproximateFirstReceiveTimestamp", now_ms)
        event = sqs_event(messages, self.queue_arn, self.region)
        ids = [m["MessageId"] for m in messages]
        began = time.perf_counter()
        try:
            result = self._invoke("IndexFunction", event, INDEX_TIMEOUT_S)
            failed = failed_message_ids(result, ids)
            log.info("IndexFunction: batch of %d in %.1f ms", len(ids), (time.perf_counter() - began) * 1000)
        except StackStopping:
            with self._cond:  # not delivered after all: back to the front
                self._ready[:0] = messages
            raise
        except Exception:  # noqa: BLE001 - as Lambda: an error fails the whole batch, logged
            log.error("IndexFunction failed; the batch of %d will be redelivered\n%s", len(ids), traceback.format_exc())
            failed = set(ids)
        self.invocations += 1
        dead: list[dict] = []
        if failed:
            dead = self._redeliver_or_dead_letter([m for m in messages if m["MessageId"] in failed], len(ids))
        if self._settle is not None:  # handled, or in the DLQ: either way no longer owed to the function
            self._settle([m["Body"] for m in messages if m["MessageId"] not in failed or m in dead])
        return len(messages)

    def _redeliver_or_dead_letter(self, failed: list[dict], batch_size: int) -> list[dict]:
        dead = [m for m in failed if int(m["Attributes"]["ApproximateReceiveCount"]) >= self.max_receive_count]
        retry = [m for m in failed if m not in dead]
        if retry:
            log.warning("IndexFunction reported %d of %d messages failed; they will be redelivered in %.0f s",
                        len(retry), batch_size, self.redelivery_delay_s)
            with self._cond:
                self._waiting.extend((time.monotonic() + self.redelivery_delay_s, m) for m in retry)
                self._cond.notify_all()
        for message in dead:
            log.warning("message %s failed %s times: moved to the DLQ", message["MessageId"],
                        message["Attributes"]["ApproximateReceiveCount"])
            if self.dlq_url:
                self.sqs.send_message(QueueUrl=self.dlq_url, MessageBody=message["Body"])
        return dead


