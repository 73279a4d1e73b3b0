"""Index a batch of S3 object events: parse, order, fetch, decode, embed, upsert, delete.

This is the whole of the IndexFunction's work, kept free of Lambda so that the
handler, ``imgsim backfill`` and the tests run the same code. One call to
``Indexer.process_messages`` handles one SQS batch and returns a ``BatchReport``
with one outcome per SQS message; the handler turns failed outcomes into
``batchItemFailures`` so that only those messages are redelivered.

Outcomes, and why:
- indexed / deleted: done.
- skipped: acknowledged on purpose and never retried — S3 test events, keys
  under an ignored prefix, poison objects (not an image, truncated, bomb, empty,
  too large), an object deleted since the put (its delete event follows), and
  events older than what the store already reflects (``sequencer``).
- failed: a transient fault (Qdrant unavailable, S3 throttling / 5xx /
  connection errors, or any unexpected S3 error). SQS redelivers the message
  and, after maxReceiveCount, moves it to the DLQ: nothing is lost.

Ordering. S3 does not deliver notifications in order. Every put and delete
carries a ``sequencer`` that grows per key; the one that last changed a key is
kept in the point's payload, or, once the key is deleted, in a tombstone in the
companion collection ``<collection>_tombstones`` (same point id, a 1-d dummy
vector). An event whose sequencer is not newer than the stored one is dropped,
so a late put can neither resurrect a deleted image nor replace a newer vector.
Tombstones live in their own collection so that searches never see them and
the images collection holds exactly the images that exist.

Concurrency. Several invocations may handle events for the same key at once
(a standard queue hands them to different batches). Every write is therefore
conditional on the sequencer read at the start of the batch (Qdrant's
``update_filter`` on upsert, a filter on delete: compare-and-set), and is read
back afterwards: a put that lost to an older concurrent write fails and is
redelivered, a put undone by a concurrent newer delete removes itself, and a
delete removes any older point written behind its back.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from botocore.exceptions import BotoCoreError, ClientError
from qdrant_client import models

from .config import env_int
from .decode import DecodedImage
from .errors import ImageError, ImageTooLarge, StoreUnavailable
from .ids import point_id_for_object
from .points import image_payload, utc_now_iso
from .store import StoredPoint, VectorStore

log = logging.getLogger(__name__)

TOMBSTONE_SUFFIX = "_tombstones"
SEQUENCER_FIELD = "sequencer"

# Outcome kinds (strings, so they log and serialize as themselves).
INDEXED = "indexed"
DELETED = "deleted"
SKIPPED = "skipped"
FAILED = "failed"

# Skips that are part of normal operation (everything else is bad input).
ROUTINE_SKIPS = frozenset(
    {"test_event", "ignored_prefix", "superseded_in_batch", "stale_event", "unchanged", "object_missing",
     "unhandled_event"}
)

PUT = "put"
DELETE = "delete"

# S3 error codes meaning "the object is gone": not an error for a put event,
# the delete event that removed it follows (or already came) and wins.
MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def parse_ignore_prefixes(raw: str | None) -> tuple[str, ...]:
    """``IMGSIM_IGNORE_PREFIXES``: comma-separated key prefixes, blanks dropped."""
    return tuple(p.strip() for p in (raw or "").split(",") if p.strip())


def sequencer_key(sequencer: str | None) -> int | None:
    """S3 sequencers are hex strings of varying length; AWS says to left-pad the
    shorter one with zeros before comparing, which is comparing them as numbers."""
    if not sequencer:
        return None
    try:
        return int(sequencer, 16)
    except ValueError:
        return None


def is_newer(candidate: str | None, stored: str | None) -> bool:
    """Whether an event with sequencer ``candidate`` should replace state stamped ``stored``.

    Without a sequencer on either side there is nothing to compare (moto, the
    backfill, hand-made events): the event applies, last writer wins.
    """
    new, old = sequencer_key(candidate), sequencer_key(stored)
    if new is None or old is None:
        return True
    return new > old


def strictly_newer(a: str | None, b: str | None) -> bool:
    """Both sequencers known and ``a`` later than ``b``."""
    ka, kb = sequencer_key(a), sequencer_key(b)
    return ka is not None and kb is not None and ka > kb


def _seq(payload: Mapping[str, Any] | None) -> str | None:
    return (payload or {}).get("sequencer") or None


def unchanged_since_read(expected: Mapping[str, str | None]) -> models.Filter:
    """Points still carrying the sequencer we read (none: no sequencer), per id.

    Used as the condition of an upsert or delete, this is a compare-and-set:
    a write made by a concurrent invocation in between is never overwritten
    blindly; the verification read afterwards sorts out who won.
    """
    per_id = []
    for point_id, sequencer in expected.items():
        same = (
            models.FieldCondition(key=SEQUENCER_FIELD, match=models.MatchValue(value=sequencer))
            if sequencer
            else models.IsEmptyCondition(is_empty=models.PayloadField(key=SEQUENCER_FIELD))
        )
        per_id.append(models.Filter(must=[models.HasIdCondition(has_id=[point_id]), same]))
    return models.Filter(should=per_id)


def tombstone_store(store: VectorStore) -> VectorStore:
    """The companion collection ``<collection>_tombstones`` (1-d dummy vectors, same client).

    Created on first use like the images collection; ``ensure_collection()`` on it
    creates it ahead of time."""
    return VectorStore(store.client, store.collection + TOMBSTONE_SUFFIX, dim=1, retries=store.retries)


@dataclass
class ObjectEvent:
    """One S3 object event, key already URL-decoded."""

    message_id: str
    action: str  # PUT or DELETE
    bucket: str
    key: str
    sequencer: str | None = None
    etag: str | None = None
    size: int | None = None
    event_name: str = ""
    # Backfill: skip the object when the stored point has this etag and model already.
    only_if_changed: bool = False

    @property
    def point_id(self) -> str:
        return point_id_for_object(self.bucket, self.key)


@dataclass
class EventOutcome:
    message_id: str
    status: str  # INDEXED, DELETED, SKIPPED, FAILED
    reason: str = ""
    bucket: str | None = None
    key: str | None = None


@dataclass
class BatchReport:
    """What happened to a batch: per-message status, per-event outcomes, stage timings."""

    message_ids: list[str] = field(default_factory=list)
    outcomes: list[EventOutcome] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def add(self, outcome: EventOutcome) -> None:
        self.outcomes.append(outcome)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def skipped_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.outcomes:
            if o.status == SKIPPED:
                counts[o.reason] = counts.get(o.reason, 0) + 1
        return counts

    @property
    def failed_message_ids(self) -> list[str]:
        """Messages to report in ``batchItemFailures``: any of their events failed."""
        failed = {o.message_id for o in self.outcomes if o.status == FAILED}
        return [m for m in self.message_ids if m in failed]

    def message_failed(self, message_id: str) -> bool:
        return any(o.message_id == message_id and o.status == FAILED for o in self.outcomes)

    def failure_reason(self, message_id: str) -> str:
        reasons = [o.reason for o in self.outcomes if o.message_id == message_id and o.status == FAILED]
        return "; ".join(reasons)


def parse_message(message_id: str, body: str | Mapping[str, Any]) -> tuple[list[ObjectEvent], list[EventOutcome]]:
    """One SQS message body (an S3 notification) -> object events, plus outcomes for what is skipped."""
    try:
        doc = json.loads(body) if isinstance(body, str) else dict(body)
    except (TypeError, ValueError):
        return [], [EventOutcome(message_id, SKIPPED, "not_an_s3_event")]
    if not isinstance(doc, dict):
        return [], [EventOutcome(message_id, SKIPPED, "not_an_s3_event")]
    if doc.get("Event") == "s3:TestEvent":
        # Sent by S3 once when the notification configuration is saved.
        return [], [EventOutcome(message_id, SKIPPED, "test_event", bucket=doc.get("Bucket"))]
    records = doc.get("Records")
    if not isinstance(records, list) or not records:
        return [], [EventOutcome(message_id, SKIPPED, "not_an_s3_event")]
    events: list[ObjectEvent] = []
    skipped: list[EventOutcome] = []
    for record in records:
        try:
            s3 = record["s3"]
            bucket = s3["bucket"]["name"]
            obj = s3.get("object") or s3["get_object"]
            key = unquote_plus(obj["key"])  # S3 event keys are URL-encoded, '+' for space
            name = str(record.get("eventName", ""))
        except (KeyError, TypeError):
            skipped.append(EventOutcome(message_id, SKIPPED, "not_an_s3_event"))
            continue
        if name.startswith("ObjectCreated:"):
            action = PUT
        elif name.startswith("ObjectRemoved:"):
            action = DELETE
        else:  # restore, tagging, ACL, replication... nothing to index
            skipped.append(EventOutcome(message_id, SKIPPED, "unhandled_event", bucket=bucket, key=key))
            continue
        size = obj.get("size")
        events.append(
            ObjectEvent(
                message_id=message_id,
                action=action,
                bucket=bucket,
                key=key,
                sequencer=obj.get("sequencer") or None,
                etag=(obj.get("eTag") or "").strip('"') or None,
                size=int(size) if size not in (None, "") else None,
                event_name=name,
                only_if_changed=bool(record.get("imgsimBackfill")),
            )
        )
    return events, skipped


def newest_per_key(events: Sequence[ObjectEvent]) -> tuple[list[ObjectEvent], list[ObjectEvent]]:
    """Keep one event per (bucket, key): the highest sequencer, or the last delivered without one."""
    chosen: dict[tuple[str, str], ObjectEvent] = {}
    superseded: list[ObjectEvent] = []
    for event in events:
        slot = (event.bucket, event.key)
        current = chosen.get(slot)
        if current is None:
            chosen[slot] = event
        elif is_newer(event.sequencer, current.sequencer):
            superseded.append(current)
            chosen[slot] = event
        else:
            superseded.append(event)
    return list(chosen.values()), superseded


@dataclass
class _Fetched:
    event: ObjectEvent
    data: bytes | None = None
    size: int = 0
    etag: str | None = None
    image: DecodedImage | None = None
    outcome: EventOutcome | None = None  # set when the event ends before embedding
    poison: bool = False  # the object is there but is no image imgsim can embed


def _is_missing(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    return str(error.get("Code")) in MISSING_OBJECT_CODES


class Indexer:
    """Batch indexing against one store, one embedder and one S3 client (all reused)."""

    def __init__(
        self,
        *,
        store: VectorStore,
        embedder: Any,
        s3_client: Any,
        ignore_prefixes: Iterable[str] = (),
        fetch_concurrency: int = 8,
        logger: logging.Logger | Any | None = None,
    ) -> None:
        self.store = store
        self.tombstones = tombstone_store(store)
        self.embedder = embedder
        self.s3 = s3_client
        self.ignore_prefixes = tuple(ignore_prefixes)
        self.fetch_concurrency = max(1, fetch_concurrency)
        self.log = logger or log

    # -- entry points ---------------------------------------------------------

    def process_messages(self, messages: Iterable[tuple[str, str | Mapping[str, Any]]]) -> BatchReport:
        """``(message_id, body)`` pairs of one SQS batch -> report."""
        report = BatchReport()
        events: list[ObjectEvent] = []
        for message_id, body in messages:
            report.message_ids.append(message_id)
            parsed, skipped = parse_message(message_id, body)
            events.extend(parsed)
            for outcome in skipped:
                self._record(report, outcome)
        self.process_events(events, report)
        return report

    def process_events(self, events: Sequence[ObjectEvent], report: BatchReport | None = None) -> BatchReport:
        report = report if report is not None else BatchReport()
        for event in events:
            if event.message_id not in report.message_ids:
                report.message_ids.append(event.message_id)
        started = time.perf_counter()

        live: list[ObjectEvent] = []
        for event in events:
            if event.key.startswith(self.ignore_prefixes):
                self._record(report, self._outcome(event, SKIPPED, "ignored_prefix"))
            else:
                live.append(event)
        live, superseded = newest_per_key(live)
        for event in superseded:
            self._record(report, self._outcome(event, SKIPPED, "superseded_in_batch"))
        if not live:
            report.timings_ms["total"] = _ms_since(started)
            return report

        # What the store reflects now, per key: the point and/or its tombstone.
        ids = [e.point_id for e in live]
        try:
            t0 = time.perf_counter()
            points = {str(p.id): p.payload or {} for p in self.store.retrieve(ids)}
            tombs = {str(p.id): p.payload or {} for p in self.tombstones.retrieve(ids)}
            report.timings_ms["state"] = _ms_since(t0)
        except StoreUnavailable as exc:
            for event in live:
                self._record(report, self._outcome(event, FAILED, f"store_unavailable: {exc}"))
            report.timings_ms["total"] = _ms_since(started)
            return report

        puts: list[ObjectEvent] = []
        deletes: list[ObjectEvent] = []
        for event in live:
            stored = points.get(event.point_id, {})
            tomb = tombs.get(event.point_id)
            # A put is stale if the key already reflects it or something later. A delete
            # equal to the tombstone is re-applied: harmless, and it removes a point that
            # an unordered writer (backfill) may have added since.
            tomb_wins = (
                not is_newer(event.sequencer, _seq(tomb))
                if event.action == PUT
                else strictly_newer(_seq(tomb), event.sequencer)
            )
            if not is_newer(event.sequencer, _seq(stored)) or (tomb is not None and tomb_wins):
                self._record(report, self._outcome(event, SKIPPED, "stale_event"))
            elif (
                event.action == PUT
                and event.only_if_changed
                and stored
                and event.etag
                and stored.get("etag") == event.etag
                and stored.get("model") == self.embedder.model_name
            ):
                self._record(report, self._outcome(event, SKIPPED, "unchanged"))
            elif event.action == PUT:
                puts.append(event)
            else:
                deletes.append(event)

        self._apply_deletes(deletes, points, tombs, report)
        self._apply_puts(puts, points, tombs, report)
        report.timings_ms["total"] = _ms_since(started)
        return report

    # -- deletes --------------------------------------------------------------

    def _apply_deletes(
        self,
        deletes: Sequence[ObjectEvent],
        points: Mapping[str, Mapping[str, Any]],
        tombs: Mapping[str, Mapping[str, Any]],
        report: BatchReport,
    ) -> None:
        if not deletes:
            return
        t0 = time.perf_counter()
        failures = self._remove(deletes, points, tombs)
        report.timings_ms["delete"] = _ms_since(t0)
        for event in deletes:
            if event.point_id in failures:
                self._record(report, self._outcome(event, FAILED, failures[event.point_id]))
            else:
                self._record(report, self._outcome(event, DELETED))

    def _remove(
        self,
        events: Sequence[ObjectEvent],
        points: Mapping[str, Mapping[str, Any]],
        tombs: Mapping[str, Mapping[str, Any]],
    ) -> dict[str, str]:
        """Remove the points of ``events`` (S3 deletes, or keys that now hold poison) and
        leave a tombstone with each event's sequencer.

        Both writes are conditional on the state read at the start of the batch, then
        read back: a point older than the delete that a concurrent invocation wrote
        in between is removed too. Returns ``{point_id: reason}`` for the events that
        must be retried (SQS redelivers them); the others are done.
        """
        ids = [e.point_id for e in events]
        now = utc_now_iso()
        try:
            # Tombstone first: should the point delete fail, the redelivered event
            # finds the point older than the tombstone and deletes it then.
            self.tombstones.upsert(
                [
                    StoredPoint(e.point_id, [1.0],
                                {"bucket": e.bucket, "key": e.key, SEQUENCER_FIELD: e.sequencer, "deleted_at": now})
                    for e in events
                ],
                update_filter=unchanged_since_read({i: _seq(tombs.get(i)) for i in ids}),
            )
            self.store.delete_matching(unchanged_since_read({i: _seq(points.get(i)) for i in ids}))
            now_points = {str(p.id): p.payload or {} for p in self.store.retrieve(ids)}
            now_tombs = {str(p.id): p.payload or {} for p in self.tombstones.retrieve(ids)}
            leftovers: dict[str, str | None] = {}
            failures: dict[str, str] = {}
            for event in events:
                point = now_points.get(event.point_id)
                if point is not None and strictly_newer(_seq(point), event.sequencer):
                    continue  # a later put won: nothing of this delete is left to do
                if point is not None:
                    leftovers[event.point_id] = _seq(point)  # written concurrently, older than the delete
                tomb = now_tombs.get(event.point_id)
                if tomb is None or strictly_newer(event.sequencer, _seq(tomb)):
                    failures[event.point_id] = "concurrent_update: tombstone overwritten, retrying"
            if leftovers:
                self.store.delete_matching(unchanged_since_read(leftovers))
            return failures
        except StoreUnavailable as exc:
            return {i: f"store_unavailable: {exc}" for i in ids}

    # -- puts -----------------------------------------------------------------

    def _apply_puts(
        self,
        puts: Sequence[ObjectEvent],
        points: Mapping[str, Mapping[str, Any]],
        tombs: Mapping[str, Mapping[str, Any]],
        report: BatchReport,
    ) -> None:
        if not puts:
            return
        max_bytes = self.embedder.settings.max_image_bytes
        items: list[_Fetched] = []
        for event in puts:
            item = _Fetched(event)
            if event.size is not None and event.size > max_bytes:
                # Known from the event alone: do not download it at all.
                item.outcome = self._outcome(
                    event, SKIPPED, f"{ImageTooLarge.code}: {event.size} bytes > limit {max_bytes}"
                )
                item.poison = True
            items.append(item)

        # S3 latency dominates a batch: fetch concurrently. boto3 clients are thread-safe.
        pending = [i for i in items if i.outcome is None]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=min(self.fetch_concurrency, max(1, len(pending)))) as pool:
            list(pool.map(lambda item: self._fetch(item, max_bytes), pending))
        report.timings_ms["fetch"] = _ms_since(t0)
        # Pillow releases the GIL while decoding, so decoding runs in parallel too, but
        # only one image per CPU: more gains nothing, and each large PNG in flight can
        # take a few hundred MB of pixels before it is reduced.
        pending = [i for i in items if i.outcome is None]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, min(len(pending), os.cpu_count() or 1))) as pool:
            list(pool.map(self._decode, pending))
        report.timings_ms["decode"] = _ms_since(t0)

        replaced = [i for i in items if i.poison and i.event.point_id in points]
        if replaced:
            # The key held an image and now holds poison: the old vector no longer shows
            # what is there. Remove it, with a tombstone so a late older put cannot bring it back.
            failures = self._remove([i.event for i in replaced], points, tombs)
            for item in replaced:
                if item.event.point_id in failures:
                    item.outcome = self._outcome(item.event, FAILED, failures[item.event.point_id])
        for item in items:
            if item.outcome is not None:
                self._record(report, item.outcome)
        good = [i for i in items if i.outcome is None and i.image is not None]
        if not good:
            return

        t0 = time.perf_counter()
        vectors = self.embedder.embed_decoded([i.image for i in good])
        report.timings_ms["embed"] = _ms_since(t0)

        stored_points = []
        for item, vector in zip(good, vectors, strict=True):
            event = item.event
            # A backfill event has no sequencer: keep the stored one so that
            # notifications still in flight keep their order against it.
            sequencer = event.sequencer or points.get(event.point_id, {}).get("sequencer")
            payload = image_payload(
                key=event.key,
                image=item.image,
                size=item.size,
                model=self.embedder.model_name,
                bucket=event.bucket,
                etag=item.etag or event.etag,
                sequencer=sequencer,
            )
            stored_points.append(StoredPoint(event.point_id, vector, payload))
            item.image = None  # free the pixels before the upsert round trip

        t0 = time.perf_counter()
        try:
            self.store.upsert(
                stored_points,
                update_filter=unchanged_since_read({p.id: _seq(points.get(p.id)) for p in stored_points}),
            )
            outcomes = self._verify_puts(stored_points, good)
        except StoreUnavailable as exc:
            outcomes = {i.event.point_id: (FAILED, f"store_unavailable: {exc}") for i in good}
        finally:
            report.timings_ms["upsert"] = _ms_since(t0)
        for item in good:
            status, reason = outcomes[item.event.point_id]
            self._record(report, self._outcome(item.event, status, reason))

    def _verify_puts(self, written: Sequence[StoredPoint], good: Sequence[_Fetched]) -> dict[str, tuple[str, str]]:
        """Read back what the conditional upsert left, per point: ours, a later
        write (fine), an older concurrent write (retry), or ours resurrected by a
        delete that landed in between (undo it)."""
        ids = [p.id for p in written]
        now_points = {str(p.id): p.payload or {} for p in self.store.retrieve(ids)}
        now_tombs = {str(p.id): p.payload or {} for p in self.tombstones.retrieve(ids)}
        outcomes: dict[str, tuple[str, str]] = {}
        undo: dict[str, str | None] = {}
        stale_tombs: dict[str, str | None] = {}
        for point in written:
            ours = _seq(point.payload)
            current = now_points.get(point.id)
            tomb = now_tombs.get(point.id)
            if current is None:
                deleted_since = tomb is not None and not strictly_newer(ours, _seq(tomb))
                outcomes[point.id] = (SKIPPED, "stale_event") if deleted_since else (
                    FAILED, "concurrent_update: point vanished, retrying")
            elif _seq(current) != ours:
                outcomes[point.id] = (SKIPPED, "stale_event") if strictly_newer(_seq(current), ours) else (
                    FAILED, "concurrent_update: an older write won, retrying")
            elif tomb is not None and strictly_newer(_seq(tomb), ours):
                undo[point.id] = ours
                outcomes[point.id] = (SKIPPED, "stale_event")
            else:
                outcomes[point.id] = (INDEXED, "")
                if tomb is not None:
                    # The key exists again; its newer sequencer now lives in the point.
                    stale_tombs[point.id] = _seq(tomb)
        if undo:
            self.store.delete_matching(unchanged_since_read(undo))
        if stale_tombs:
            self.tombstones.delete_matching(unchanged_since_read(stale_tombs))
        return outcomes

    def _fetch(self, item: _Fetched, max_bytes: int) -> None:
        event = item.event
        try:
            response = self.s3.get_object(Bucket=event.bucket, Key=event.key)
            length = int(response.get("ContentLength") or 0)
            if length > max_bytes:
                response["Body"].close()
                item.outcome = self._outcome(
                    event, SKIPPED, f"{ImageTooLarge.code}: {length} bytes > limit {max_bytes}"
                )
                item.poison = True
                return
            item.data = response["Body"].read()
            item.size = len(item.data)
            item.etag = str(response.get("ETag") or "").strip('"') or None
        except ClientError as exc:
            if _is_missing(exc):
                item.outcome = self._outcome(event, SKIPPED, "object_missing")
            else:
                # Throttling, 5xx, access denied...: redeliver; the DLQ catches what never succeeds.
                code = exc.response.get("Error", {}).get("Code", "ClientError")
                item.outcome = self._outcome(event, FAILED, f"s3_error: {code}")
        except (BotoCoreError, OSError) as exc:  # connection errors, timeouts, truncated reads
            item.outcome = self._outcome(event, FAILED, f"s3_error: {type(exc).__name__}: {exc}")

    def _decode(self, item: _Fetched) -> None:
        try:
            item.image = self.embedder.decode(item.data or b"")
        except ImageError as exc:
            item.outcome = self._outcome(item.event, SKIPPED, f"{exc.code}: {exc}")
            item.poison = True
        finally:
            item.data = None  # the encoded bytes are not needed any more

    # -- bookkeeping ----------------------------------------------------------

    @staticmethod
    def _outcome(event: ObjectEvent, status: str, reason: str = "") -> EventOutcome:
        return EventOutcome(event.message_id, status, reason, bucket=event.bucket, key=event.key)

    def _record(self, report: BatchReport, outcome: EventOutcome) -> None:
        report.add(outcome)
        extra = {"s3_bucket": outcome.bucket, "s3_key": outcome.key, "message_id": outcome.message_id,
                 "outcome": outcome.status, "reason": outcome.reason}
        if outcome.status == FAILED:
            self.log.warning("object event failed, SQS will redeliver it", extra=extra)
        elif outcome.status == SKIPPED and outcome.reason not in ROUTINE_SKIPS:
            # Poison input or a foreign message: acknowledged, but worth a look.
            self.log.warning("object event skipped", extra=extra)
        elif outcome.status == SKIPPED:
            self.log.info("object event skipped", extra=extra)
        else:
            self.log.info(f"object {outcome.status}", extra=extra)


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


def indexer_from_runtime(*, logger: Any | None = None, fetch_concurrency: int | None = None) -> Indexer:
    """An Indexer on the per-process singletons of ``imgsim.runtime`` (built once, reused).

    ``IMGSIM_IGNORE_PREFIXES`` (default empty) and ``IMGSIM_FETCH_CONCURRENCY``
    (default 8) are read here: they only concern indexing.
    """
    from . import runtime

    if fetch_concurrency is None:
        fetch_concurrency = env_int("IMGSIM_FETCH_CONCURRENCY", 8, minimum=1)
    return Indexer(
        store=runtime.get_store(),
        embedder=runtime.get_embedder(),
        s3_client=runtime.get_boto3_client("s3"),
        ignore_prefixes=parse_ignore_prefixes(os.environ.get("IMGSIM_IGNORE_PREFIXES")),
        fetch_concurrency=fetch_concurrency,
        logger=logger,
    )
