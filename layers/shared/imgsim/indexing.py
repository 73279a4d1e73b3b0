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

Ordering and concurrency (S3 sequencers, tombstones, compare-and-set writes
with read-back) live in ``imgsim.ordering``, on the store interface.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError

from .decode import DecodedImage, check_header, probe_cost
from .dedupe import (
    DuplicateIndex,
    Match,
    Signature,
    one_way,
    one_way_many,
    signatures,
)
from .duplicates import (
    HAS_DUPLICATES,
    HAS_DUPLICATES_FIELD,
    NOT_DUPLICATES_FIELD,
    mark_targets,
)
from .errors import ImageError, ImageTooLarge, StoreUnavailable
from .ids import point_id_for_object
from .isolation import IsolatedDecodeFailed, decode_in_child
from .ordering import RETRY, STALE, KeyState, OrderedStore, Removal, is_newer
from .points import DUPLICATE_OF_FIELD, DUPLICATE_SCORE_FIELD, image_payload
from .settings import IndexSettings
from .store import FieldIn, StoredPoint, VectorStore, Where, field_unchanged

log = logging.getLogger(__name__)

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

# Work not started with this much of the invocation left fails for redelivery (the upsert
# and the response still need a moment).
DEADLINE_MARGIN_S = 5.0
# Bytes fetched to judge a large object from its header before downloading it whole.
PRECHECK_RANGE = 64 * 1024

# S3 error codes meaning "the object is gone": not an error for a put event,
# the delete event that removed it follows (or already came) and wins.
MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def parse_ignore_prefixes(raw: str | None) -> tuple[str, ...]:
    """``IMGSIM_IGNORE_PREFIXES``: comma-separated key prefixes, blanks dropped."""
    return tuple(p.strip() for p in (raw or "").split(",") if p.strip())


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
    # SQS's ApproximateReceiveCount of the message: >= 2 means a delivery before this one failed.
    receive_count: int = 1

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
    duplicates: int = 0  # indexed images recorded as a duplicate of one already indexed

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
                receive_count=receive_count,
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
        isolate_after: int = 2,
        isolated_timeout_s: float = 30.0,
        precheck_bytes: int = 1024 * 1024,
        duplicate_threshold: float | None = None,
    ) -> None:
        """``isolate_after``: records delivered this many times or more are decoded each in a forked
        child (``imgsim.isolation``); ``precheck_bytes``: larger objects are first judged from a
        ranged GET of their header (``PRECHECK_RANGE``) and not downloaded when it rules them out."""
        self.store = store
        self.ordered = OrderedStore(store)
        self.tombstones = self.ordered.tombstones
        self.embedder = embedder
        self.s3 = s3_client
        self.ignore_prefixes = tuple(ignore_prefixes)
        self.fetch_concurrency = max(1, fetch_concurrency)
        self.log = logger or log
        self.isolate_after = max(1, isolate_after)
        self.isolated_timeout_s = isolated_timeout_s
        self.precheck_bytes = precheck_bytes
        # Duplicate check at upload (imgsim.dedupe); None turns it off.
        self.duplicate_threshold = duplicate_threshold
        self.duplicates = DuplicateIndex(store, embedder.dim) if duplicate_threshold is not None else None
        self._deadline: float | None = None

    # -- entry points ---------------------------------------------------------

    def process_messages(
        self, messages: Iterable[tuple[Any, ...]], *, remaining_ms: Callable[[], int] | None = None
    ) -> BatchReport:
        """``(message_id, body[, receive_count])`` of one SQS batch -> report.

        ``remaining_ms`` (the Lambda context's ``get_remaining_time_in_millis``) bounds the work:
        objects not started with ``DEADLINE_MARGIN_S`` left fail for redelivery instead of the
        function being killed mid-batch (which would redeliver every message).
        """
        report = BatchReport()
        events: list[ObjectEvent] = []
        self._deadline = time.monotonic() + remaining_ms() / 1000.0 - DEADLINE_MARGIN_S if remaining_ms else None
        for message_id, body, *rest in messages:
            report.message_ids.append(message_id)
            parsed, skipped = parse_message(message_id, body, int(rest[0]) if rest and rest[0] else 1)
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
        try:
            t0 = time.perf_counter()
            state = self.ordered.read_state([e.point_id for e in live])
            report.timings_ms["state"] = _ms_since(t0)
        except StoreUnavailable as exc:
            for event in live:
                self._record(report, self._outcome(event, FAILED, f"store_unavailable: {exc}"))
            report.timings_ms["total"] = _ms_since(started)
            return report

        puts: list[ObjectEvent] = []
        deletes: list[ObjectEvent] = []
        for event in live:
            stored = state.points.get(event.point_id, {})
            if state.is_stale(event.point_id, event.sequencer, is_put=event.action == PUT):
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

        self._apply_deletes(deletes, state, report)
        self._apply_puts(puts, state, report)
        report.timings_ms["total"] = _ms_since(started)
        return report
    # -- deletes --------------------------------------------------------------

    def _apply_deletes(self, deletes: Sequence[ObjectEvent], state: KeyState, report: BatchReport) -> None:
        if not deletes:
            return
        t0 = time.perf_counter()
        failures = self._remove(deletes, state)
        report.timings_ms["delete"] = _ms_since(t0)
        removed = [e.point_id for e in deletes if e.point_id not in failures]
        if self.duplicates is not None and removed:
            try:
                self.duplicates.remove(removed)
                self._recheck_duplicates_of(removed, gone=True)
            except StoreUnavailable as exc:
                self.log.warning("duplicate bookkeeping after a delete failed: %s", exc)
        for event in deletes:
            if event.point_id in failures:
                self._record(report, self._outcome(event, FAILED, failures[event.point_id]))
            else:
                self._record(report, self._outcome(event, DELETED))

    def _remove(self, events: Sequence[ObjectEvent], state: KeyState) -> dict[str, str]:
        """Remove the points of ``events`` with tombstones (``OrderedStore.remove``);
        ``{point_id: reason}`` for the events SQS must redeliver."""
        try:
            return self.ordered.remove(
                [Removal(e.point_id, e.sequencer, e.bucket, e.key) for e in events], state
            )
        except StoreUnavailable as exc:
            return {e.point_id: f"store_unavailable: {exc}" for e in events}

    # -- puts -----------------------------------------------------------------

    def _apply_puts(self, puts: Sequence[ObjectEvent], state: KeyState, report: BatchReport) -> None:
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
        # Pillow releases the GIL while decoding, so decoding runs in parallel too: one image
        # per CPU, and only while the estimated peaks in flight fit the decode budget together.
        pending = [i for i in items if i.outcome is None]
        t0 = time.perf_counter()
        gate = BudgetGate(self.embedder.settings.max_decode_mb * 2**20)
        with ThreadPoolExecutor(max_workers=max(1, min(len(pending), os.cpu_count() or 1))) as pool:
            list(pool.map(lambda item: self._decode(item, gate), pending))
        report.timings_ms["decode"] = _ms_since(t0)

        replaced = [i for i in items if i.poison and i.event.point_id in state.points]
        if replaced:
            # The key held an image and now holds poison: the old vector no longer shows
            # what is there. Remove it, with a tombstone so a late older put cannot bring it back.
            failures = self._remove([i.event for i in replaced], state)
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
        matches = self._find_duplicates(good, report, state)

        stored_points = []
        for item, vector in zip(good, vectors, strict=True):
            event = item.event
            # A backfill event has no sequencer: keep the stored one so that
            # notifications still in flight keep their order against it.
            sequencer = event.sequencer or state.points.get(event.point_id, {}).get("sequencer")
            assert item.image is not None  # "good" items are the decoded ones
            payload = image_payload(
                key=event.key,
                image=item.image,
                size=item.size,
                model=self.embedder.model_name,
                bucket=event.bucket,
                etag=item.etag or event.etag,
                sequencer=sequencer,
            )
            match = matches.get(event.point_id)
            if match is not None:
                payload.update({DUPLICATE_OF_FIELD: match.point_id, DUPLICATE_SCORE_FIELD: round(match.score, 4)})
            prior = state.points.get(event.point_id, {})
            if prior.get(HAS_DUPLICATES_FIELD):
                payload[HAS_DUPLICATES_FIELD] = HAS_DUPLICATES  # its duplicates are re-checked below; an empty group is skipped
            if prior.get(NOT_DUPLICATES_FIELD) and prior.get("etag") and prior.get("etag") == payload.get("etag"):
                payload[NOT_DUPLICATES_FIELD] = prior[NOT_DUPLICATES_FIELD]  # the same picture: decisions stand
            stored_points.append(StoredPoint(event.point_id, vector, payload))
            item.image = None  # free the pixels before the upsert round trip

        t0 = time.perf_counter()
        try:
            verdicts = self.ordered.write(stored_points, state)
            outcomes = {
                point_id: (FAILED, reason) if verdict == RETRY else (SKIPPED, reason) if verdict == STALE
                else (INDEXED, "")
                for point_id, (verdict, reason) in verdicts.items()
            }
        except StoreUnavailable as exc:
            outcomes = {i.event.point_id: (FAILED, f"store_unavailable: {exc}") for i in good}
        finally:
            report.timings_ms["upsert"] = _ms_since(t0)
        for item in good:
            status, reason = outcomes[item.event.point_id]
            self._record(report, self._outcome(item.event, status, reason))
        if self.duplicates is not None:
            written = [i.event.point_id for i in good if outcomes[i.event.point_id][0] == INDEXED]
            report.duplicates += sum(1 for point_id in written if point_id in matches)
            not_written = [i.event.point_id for i in good if outcomes[i.event.point_id][0] != INDEXED]
            try:
                if not_written:  # their signatures went in before the write: take them out again
                    self.duplicates.remove(not_written)
                mark_targets(self.store, [m.point_id for point_id, m in matches.items() if point_id in written])
                # Images that named a replaced image as their match: their best match may have changed.
                self._recheck_duplicates_of(written)
            except StoreUnavailable as exc:
                self.log.warning("duplicate bookkeeping after the write failed: %s", exc)

    def _find_duplicates(self, good: Sequence[_Fetched], report: BatchReport, state: KeyState) -> dict[str, Match]:
        """Best existing match at or above the threshold for each image: among the stored signatures, and
        among the earlier images of this batch (compared here, so the batch's signatures go to the store in
        one write at the end)."""
        if self.duplicates is None or not good:
            return {}
        t0 = time.perf_counter()
        found: dict[str, Match] = {}
        batch: dict[str, Signature] = {}
        try:
            sigs = signatures(self.embedder, [i.image.pixels for i in good if i.image is not None])
            for item, sig in zip(good, sigs, strict=True):
                point_id = item.event.point_id
                prior = state.points.get(point_id, {})
                same = bool(prior.get("etag")) and prior.get("etag") == (item.etag or item.event.etag)
                refused = [str(i) for i in prior.get(NOT_DUPLICATES_FIELD) or []] if same else []
                match = self.duplicates.best_match(point_id, sig, exclude=refused)
                others = [other for other in batch if other != point_id and other not in refused]
                scores = one_way_many(sig, [batch[other] for other in others])
                if len(scores):
                    top = int(np.argmax(scores))
                    if match is None or float(scores[top]) > match.score:
                        match = Match(others[top], float(scores[top]))
                if match is not None and match.score >= (self.duplicate_threshold or 0.0):
                    found[point_id] = self._to_root(point_id, sig, match, found, refused, batch)
                batch[point_id] = sig
            self.duplicates.add(list(batch.items()))
        except StoreUnavailable as exc:
            # The duplicate check never holds up indexing: the image goes in without its match.
            self.log.warning("duplicate check skipped for this batch: %s", exc)
        report.timings_ms["dedupe"] = _ms_since(t0)
        return found

    def _to_root(self, point_id: str, sig: Signature, match: Match, found: dict[str, Match],
                 refused: Sequence[str], batch: Mapping[str, Signature]) -> Match:
        """Link to the image the match is itself a duplicate of, when this one is a duplicate of it too
        (checked directly, so no chain): one group per picture instead of a group per copy."""
        assert self.duplicates is not None
        if match.point_id in found:
            root: str | None = found[match.point_id].point_id
        else:
            record = self.store.get(match.point_id)
            root = (str(record.payload.get(DUPLICATE_OF_FIELD) or "") or None) if record is not None else None
        if not root or root == point_id or root in refused:
            return match
        stored = (batch[root].full, batch[root].crops) if root in batch else self.duplicates.stored(root)
        if stored is None:
            return match
        score = one_way(sig, *stored)
        return Match(root, score) if score >= (self.duplicate_threshold or 0.0) else match

    def _recheck_duplicates_of(self, point_ids: Sequence[str], *, gone: bool = False) -> None:
        """Points recorded as duplicates of ``point_ids`` (now replaced, or ``gone``): find their best match
        again from their stored signatures, and rewrite the record only if that point is unchanged since."""
        if self.duplicates is None or not point_ids:
            return
        dependents = self.store.scroll(where=Where(must=(FieldIn(DUPLICATE_OF_FIELD, tuple(point_ids)),)),
                                       limit=1000, with_vectors=True)[0]
        exclude = tuple(point_ids) if gone else ()
        targets: list[str] = []
        for record in dependents:
            stored = self.duplicates.stored(record.id)
            payload = dict(record.payload)
            payload.pop(DUPLICATE_OF_FIELD, None)
            payload.pop(DUPLICATE_SCORE_FIELD, None)
            if stored is not None:
                whole, crops = stored
                # The mirror of a stored image is not kept: its whole stands in (mirrored pairs still meet
                # through the other side's mirror when that one arrives).
                refused = [str(i) for i in record.payload.get(NOT_DUPLICATES_FIELD) or []]
                match = self.duplicates.best_match(record.id, Signature(whole, whole, crops),
                                                   exclude=(*exclude, *refused))
                if match is not None and match.score >= (self.duplicate_threshold or 0.0):
                    payload.update({DUPLICATE_OF_FIELD: match.point_id, DUPLICATE_SCORE_FIELD: round(match.score, 4)})
                    targets.append(match.point_id)
            if record.vector is None:
                continue
            unchanged = field_unchanged("etag", {record.id: record.payload.get("etag")})
            self.store.upsert([StoredPoint(record.id, record.vector, payload)], only_if=unchanged)
        mark_targets(self.store, targets)

    def _fetch(self, item: _Fetched, max_bytes: int) -> None:
        event = item.event
        if self._out_of_time():
            item.outcome = self._outcome(event, FAILED, "deadline: not enough time left in this invocation")
            return
        try:
            if (event.size is None or event.size > self.precheck_bytes) and self._refused_from_header(item):
                return
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

    def _refused_from_header(self, item: _Fetched) -> bool:
        """Judge a large object from its first PRECHECK_RANGE bytes: poison over a limit is skipped
        without downloading it. Anything inconclusive leaves the decision to the full decode."""
        settings = self.embedder.settings
        head = self.s3.get_object(Bucket=item.event.bucket, Key=item.event.key, Range=f"bytes=0-{PRECHECK_RANGE - 1}")
        try:
            check_header(head["Body"].read(), max_pixels=settings.max_pixels,
                         max_decode_bytes=settings.max_decode_mb * 2**20, max_decode_ms=settings.max_decode_ms)
        except ImageError as exc:
            item.outcome = self._outcome(item.event, SKIPPED, f"{exc.code}: {exc} (judged from the header)")
            item.poison = True
            return True
        return False

    def _decode(self, item: _Fetched, gate: BudgetGate | None = None) -> None:
        data = item.data or b""
        try:
            if self._out_of_time():
                item.outcome = self._outcome(item.event, FAILED, "deadline: not enough time left in this invocation")
                return
            cost = probe_cost(data)
            with gate.hold(cost.bytes if cost else 0) if gate else nullcontext():
                if item.event.receive_count >= self.isolate_after:
                    # Delivered before: a previous attempt may have died on this batch.
                    timeout = self.isolated_timeout_s
                    if self._deadline is not None:
                        timeout = max(1.0, min(timeout, self._deadline - time.monotonic()))
                    item.image = decode_in_child(self.embedder.decode, data, timeout_s=timeout)
                else:
                    item.image = self.embedder.decode(data)
        except ImageError as exc:
            item.outcome = self._outcome(item.event, SKIPPED, f"{exc.code}: {exc}")
            item.poison = True
        except IsolatedDecodeFailed as exc:
            # Fails alone; after maxReceiveCount deliveries SQS moves it to the DLQ for a look.
            item.outcome = self._outcome(item.event, FAILED, f"isolated_decode_failed: {exc}")
        finally:
            item.data = None  # the encoded bytes are not needed any more

    def _out_of_time(self) -> bool:
        return self._deadline is not None and time.monotonic() > self._deadline

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


class BudgetGate:
    """Decodes start only while the estimated peaks in flight fit ``budget`` bytes together (one
    over budget on its own still runs, alone). Hand-written: a weighted semaphore is 20 lines and
    no library in the layer has one."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._used = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, cost: int) -> Iterator[None]:
        cost = min(max(0, cost), self.budget)
        with self._cond:
            while self._used and self._used + cost > self.budget:
                self._cond.wait()
            self._used += cost
        try:
            yield
        finally:
            with self._cond:
                self._used -= cost
                self._cond.notify_all()


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


class RebuildingIndexer:
    """While a model switch is in progress (imgsim.deployment): every batch is indexed into the served
    collection and into the one being built, each with its own model, so uploads and deletes made
    during ``imgsim reindex`` land in both.

    Two independent passes of the same machinery (each fetches the object: double S3 GETs during a
    rebuild only). The served collection's report is the one returned, with the building pass's
    transient failures added, so SQS redelivers a message until both collections have it (both
    passes are idempotent: the redelivered copy is skipped where it is already indexed).
    """

    def __init__(self, serving: Indexer, building: Indexer) -> None:
        self.serving = serving
        self.building = building

    def _merge(self, report: BatchReport, extra: BatchReport) -> BatchReport:
        for outcome in extra.outcomes:
            if outcome.status == FAILED:
                report.add(EventOutcome(outcome.message_id, FAILED, f"building collection: {outcome.reason}",
                                        bucket=outcome.bucket, key=outcome.key))
        for stage, ms in extra.timings_ms.items():
            report.timings_ms[f"rebuild_{stage}"] = report.timings_ms.get(f"rebuild_{stage}", 0.0) + ms
        return report

    def process_messages(
        self, messages: Iterable[tuple[Any, ...]], *, remaining_ms: Callable[[], int] | None = None
    ) -> BatchReport:
        batch = list(messages)
        report = self.serving.process_messages(batch, remaining_ms=remaining_ms)
        return self._merge(report, self.building.process_messages(batch, remaining_ms=remaining_ms))

    def process_events(self, events: Sequence[ObjectEvent], report: BatchReport | None = None) -> BatchReport:
        report = self.serving.process_events(events, report)
        return self._merge(report, self.building.process_events(events))


class UnavailableIndexer:
    """The store could not even be located (Qdrant unreachable at a cold start): every message fails
    for redelivery, as when Qdrant goes down mid-batch, and nothing is acknowledged."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def process_messages(
        self, messages: Iterable[tuple[Any, ...]], *, remaining_ms: Callable[[], int] | None = None
    ) -> BatchReport:
        report = BatchReport()
        for message_id, *_ in messages:
            report.message_ids.append(message_id)
            report.add(EventOutcome(message_id, FAILED, f"store_unavailable: {self.reason}"))
        return report

    def process_events(self, events: Sequence[ObjectEvent], report: BatchReport | None = None) -> BatchReport:
        report = report if report is not None else BatchReport()
        for event in events:
            report.message_ids.append(event.message_id)
            report.add(EventOutcome(event.message_id, FAILED, f"store_unavailable: {self.reason}",
                                    bucket=event.bucket, key=event.key))
        return report


def indexer_from_runtime(
    *, logger: Any | None = None, fetch_concurrency: int | None = None,
) -> Indexer | RebuildingIndexer | UnavailableIndexer:
    """An Indexer on the per-process singletons of ``imgsim.runtime`` (built once, reused)."""
    from . import runtime

    options = runtime.get_app_settings().index
    if fetch_concurrency is None:
        fetch_concurrency = options.fetch_concurrency
    try:
        serving = indexer_for(runtime.get_store(), runtime.get_embedder(), logger=logger,
                              fetch_concurrency=fetch_concurrency)
        building = runtime.get_building()
    except StoreUnavailable as exc:  # Qdrant unreachable before the alias is known: redeliver everything
        return UnavailableIndexer(str(exc))
    if building is None:
        return serving
    store, embedder = building
    return RebuildingIndexer(serving, indexer_for(store, embedder, logger=logger, fetch_concurrency=fetch_concurrency))


def indexer_for(store: VectorStore, embedder: Any, *, logger: Any | None = None,
                fetch_concurrency: int = 8, options: IndexSettings | None = None) -> Indexer:
    """An Indexer on ``store`` and ``embedder`` with the process's indexing settings."""
    from . import runtime

    options = options or runtime.get_app_settings().index
    return Indexer(
        store=store,
        embedder=embedder,
        s3_client=runtime.get_boto3_client("s3"),
        ignore_prefixes=options.ignore_prefixes,
        fetch_concurrency=fetch_concurrency,
        logger=logger,
        isolate_after=options.isolate_after,
        isolated_timeout_s=options.isolated_timeout_s,
        duplicate_threshold=options.duplicate_check,
    )


def duplicate_threshold_from_env() -> float | None:
    """The process's duplicate check threshold (None: IMGSIM_DEDUPE=off)."""
    from . import runtime

    return runtime.get_app_settings().index.duplicate_check
