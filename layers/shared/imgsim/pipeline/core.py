"""The pipeline: the named stages composed, and the interface it shares with its variants (``variants``).

``Pipeline.process_events`` runs one batch through the stages in order — admit (ignored prefixes, one event per
key), read the keys' state and triage, fetch, decode (``_prepare``); embed (``_embed``); deletes, duplicate check,
ordered write (``_store``); report — and returns its ``BatchReport``. ``process_messages`` does the same for one SQS
batch (the S3 source parses it first, and the Lambda context's remaining time bounds the work); ``stream`` runs
many batches with the three steps overlapping (``imgsim index``, ``imgsim backfill``, ``imgsim reindex``).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from numpy.typing import NDArray

from ..errors import StoreUnavailable
from ..ordering import KeyState
from ..store import VectorStore
from ..tenants import tenant_problem
from ..trash import RESTORED_AT_FIELD, TRASH_PREFIX
from .decoding import Decode
from .duplicate_check import DuplicateCheck
from .embedding import Embed, ImageEmbedder
from .events import PUT, Deadline, Item, ObjectEvent
from .fetch import Fetch
from .ordered_write import OrderedWrite, newest_per_key
from .report import (
    DELETED,
    FAILED,
    INDEXED,
    SKIPPED,
    BatchReport,
    Reporter,
)

# One SQS message: (message_id, body[, ApproximateReceiveCount]).
Message = tuple[Any, ...]


class IndexingPipeline(Protocol):
    """What the IndexFunction, ``imgsim index``, ``imgsim backfill`` and ``imgsim reindex`` call."""

    def process_messages(
        self, messages: Iterable[Message], *, remaining_ms: Callable[[], int] | None = None
    ) -> BatchReport: ...

    def process_events(self, events: Sequence[ObjectEvent], report: BatchReport | None = None) -> BatchReport: ...

    def stream(self, batches: Iterable[Sequence[ObjectEvent]]) -> Iterator[BatchReport]: ...


@dataclass
class _Batch:
    """A batch on its way: prepared (state, fetch, decode), embedded, stored."""

    report: BatchReport
    started: float
    first: int  # the first outcome this run added: the reporter hears from there on
    state: KeyState | None = None
    deletes: list[ObjectEvent] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    good: list[Item] = field(default_factory=list)  # decoded puts, in order
    vectors: NDArray[Any] | None = None  # their search vectors


class Pipeline:
    """The stages over one store, one embedder and the fetchers of the origins it serves (all reused)."""

    def __init__(
        self, *, fetch: Fetch, decode: Decode, embed: Embed, write: OrderedWrite, duplicates: DuplicateCheck | None,
        reporter: Reporter, ignore_prefixes: Iterable[str] = (),
    ) -> None:
        self.fetch = fetch
        self.decode = decode
        self.embed = embed
        self.write = write
        self.duplicates = duplicates  # None: IMGSIM_DEDUPE=off
        self.reporter = reporter
        self.ignore_prefixes = tuple(ignore_prefixes)

    @property
    def embedder(self) -> ImageEmbedder:
        return self.embed.embedder

    @property
    def store(self) -> VectorStore:
        return self.write.store

    @property
    def tombstones(self) -> VectorStore:
        return self.write.tombstones

    def ensure_collections(self) -> None:
        """Create or check every collection the pipeline writes: the images' and their tombstones'. Otherwise the first batch does it (a one-off: creating an embedded
        collection is ~0.1 s on an idle disk, up to ~1 s on a busy one)."""
        self.store.ensure_collection()
        self.tombstones.ensure_collection()

    # -- entry points -------------------------------------------------------------------------------------------

    def process_messages(
        self, messages: Iterable[Message], *, remaining_ms: Callable[[], int] | None = None
    ) -> BatchReport:
        """``(message_id, body[, receive_count])`` of one SQS batch -> report.

        ``remaining_ms`` (the Lambda context's ``get_remaining_time_in_millis``) bounds the work:
        objects not started with ``DEADLINE_MARGIN_S`` left fail for redelivery instead of the
        function being killed mid-batch (which would redeliver every message).
        """
        # Imported here: powertools takes ~70 ms to import, which `imgsim index` never needs.
        from .sqs import parse_message

        deadline = Deadline.from_remaining(remaining_ms)
        report = BatchReport()
        events: list[ObjectEvent] = []
        for message_id, body, *rest in messages:
            report.message_ids.append(message_id)
            parsed, skipped = parse_message(message_id, body, int(rest[0]) if rest and rest[0] else 1)
            events.extend(parsed)
            report.outcomes.extend(skipped)
        return self._run(events, report, 0, deadline)

    def process_events(self, events: Sequence[ObjectEvent], report: BatchReport | None = None) -> BatchReport:
        report = report if report is not None else BatchReport()
        return self._run(events, report, len(report.outcomes), Deadline.none())

    def stream(self, batches: Iterable[Sequence[ObjectEvent]]) -> Iterator[BatchReport]:
        """The report of each batch, in order, the stages overlapping: while one batch is stored (duplicate check,
        ordered write), the next is embedded and the one after it read, fetched and decoded, each on its own
        thread (Pillow and the interpreter release the GIL). At most three batches are in flight.

        A batch is stored only once the caller has taken the previous report, and an interrupt (Ctrl-C) while a
        batch is being stored waits for it and yields its report before going on: a caller counting the reports
        counts exactly what was written."""
        pending = iter(batches)
        preparing = ThreadPoolExecutor(1, thread_name_prefix="imgsim-prepare")
        embedding = ThreadPoolExecutor(1, thread_name_prefix="imgsim-embed")
        storing = ThreadPoolExecutor(1, thread_name_prefix="imgsim-store")

        def start(events: Sequence[ObjectEvent]) -> Future[_Batch]:
            prepared = preparing.submit(self._prepare, list(events), BatchReport(), 0, Deadline.none())
            return embedding.submit(_after, prepared, self._embed)

        try:
            ahead = deque(start(events) for events in itertools.islice(pending, 2))
            while ahead:
                stored: Future[_Batch] | None = None
                try:
                    stored = storing.submit(_after, ahead.popleft(), self._store)
                    batch = stored.result()
                except KeyboardInterrupt:
                    finished = _finished_quietly(stored) if stored is not None else None
                    if finished is not None:
                        self._report(finished)
                        yield finished.report
                    raise
                ahead.extend(start(events) for events in itertools.islice(pending, 1))
                self._report(batch)
                yield batch.report
        finally:
            # Stopped early (an error, an interrupt, the caller): what has not started never starts.
            for pool in (preparing, embedding, storing):
                pool.shutdown(wait=True, cancel_futures=True)

    # -- the stages in order ------------------------------------------------------------------------------------

    def _run(self, events: Sequence[ObjectEvent], report: BatchReport, first: int, deadline: Deadline) -> BatchReport:
        batch = self._store(self._embed(self._prepare(events, report, first, deadline)))
        self._report(batch)
        return report

    def _prepare(self, events: Sequence[ObjectEvent], report: BatchReport, first: int, deadline: Deadline) -> _Batch:
        """Admit, read the state, triage, fetch and decode: nothing is written yet."""
        batch = _Batch(report, time.perf_counter(), first)
        for event in events:
            if event.message_id not in report.message_ids:
                report.message_ids.append(event.message_id)
        live: list[ObjectEvent] = []
        for event in events:
            if event.key.startswith(self.ignore_prefixes):
                report.add(event.outcome(SKIPPED, "ignored_prefix"))
            elif event.origin == "s3" and event.key.startswith(TRASH_PREFIX):
                report.add(event.outcome(SKIPPED, "in_trash"))  # imgsim.trash: a deleted image waiting, not a new one
            elif event.origin == "s3" and event.action == PUT and (problem := tenant_problem(event.key)):
                # Under tenants/ but in no valid tenant: whose it is cannot be known, so nobody sees it. Deletes go
                # on (a point indexed there before tenants existed can still leave).
                report.add(event.outcome(SKIPPED, problem))
            else:
                live.append(event)
        live, superseded = newest_per_key(live)
        for event in superseded:
            report.add(event.outcome(SKIPPED, "superseded_in_batch"))
        if not live:
            return batch
        try:
            t0 = time.perf_counter()
            state = self.write.read_state(live)
            report.timings_ms["state"] = _ms_since(t0)
        except StoreUnavailable as exc:
            for event in live:
                report.add(event.outcome(FAILED, f"store_unavailable: {exc}", exc))
            return batch
        puts, batch.deletes, skips = self.write.triage(live, state)
        for outcome in skips:
            report.add(outcome)
        restored = [e for e in batch.deletes if RESTORED_AT_FIELD in state.points.get(e.point_id, {})]
        if restored:
            # A point a restore wrote back, and a delete event (the queued one of its move to the trash): when the
            # object is there again, the delete is older than the restore (imgsim.pipeline.fetch.Fetch.recreated).
            again = self.fetch.recreated(restored)
            for event in batch.deletes:
                if event.point_id in again:  # restored, or put again: its put event follows and wins
                    report.add(event.outcome(SKIPPED, "recreated"))
            batch.deletes = [event for event in batch.deletes if event.point_id not in again]
        batch.state = state
        batch.items = [Item(event) for event in puts]
        if batch.items:
            self.fetch.refuse_oversized(batch.items)
            t0 = time.perf_counter()
            self.fetch.run(batch.items, deadline)
            report.timings_ms["fetch"] = _ms_since(t0)
            t0 = time.perf_counter()
            self.decode.run(batch.items, deadline)
            report.timings_ms["decode"] = _ms_since(t0)
        return batch

    def _embed(self, batch: _Batch) -> _Batch:
        """The search vectors of the decoded puts (nothing is written yet)."""
        batch.good = [i for i in batch.items if i.outcome is None and i.image is not None]
        if batch.good:
            t0 = time.perf_counter()
            batch.vectors = self.embed.run(batch.good)
            batch.report.timings_ms["embed"] = _ms_since(t0)
        return batch

    def _store(self, batch: _Batch) -> _Batch:
        """Deletes, then the puts: poison that replaced an image, the duplicate check, the ordered write."""
        if batch.state is not None:
            self._delete(batch.deletes, batch.state, batch.report)
            self._put(batch, batch.state, batch.report)
        batch.report.timings_ms["total"] = _ms_since(batch.started)
        return batch

    def _delete(self, deletes: Sequence[ObjectEvent], state: KeyState, report: BatchReport) -> None:
        if not deletes:
            return
        t0 = time.perf_counter()
        failures = self.write.remove(deletes, state)
        report.timings_ms["delete"] = _ms_since(t0)
        for event in deletes:
            if event.point_id in failures:
                reason, error = failures[event.point_id]
                report.add(event.outcome(FAILED, reason, error))
            else:
                report.add(event.outcome(DELETED))

    def _put(self, batch: _Batch, state: KeyState, report: BatchReport) -> None:
        items, good = batch.items, batch.good
        replaced = [i for i in items if i.poison and i.event.point_id in state.points]
        if replaced:
            # The key held an image and now holds poison: the old vector no longer shows
            # what is there. Remove it, with a tombstone so a late older put cannot bring it back.
            failures = self.write.remove([i.event for i in replaced], state)
            for item in replaced:
                if item.event.point_id in failures:
                    item.fail(*failures[item.event.point_id])
        for item in items:
            if item.outcome is not None:
                report.add(item.outcome)
        if not good or batch.vectors is None:
            return
        signed: dict[str, dict[str, Any]] = {}
        if self.duplicates is not None:
            t0 = time.perf_counter()
            signed = self.duplicates.sign(good)
            report.timings_ms["signature"] = _ms_since(t0)

        points = []
        for item, vector in zip(good, batch.vectors, strict=True):
            points.append(self.write.point(item, vector, signed.get(item.event.point_id, {}), state))
            item.image = None  # free the pixels before the upsert round trip
        t0 = time.perf_counter()
        outcomes = self.write.write(points, state)
        report.timings_ms["upsert"] = _ms_since(t0)
        for item in good:
            status, reason, error = outcomes[item.event.point_id]
            report.add(item.event.outcome(status, reason, error))
        if self.duplicates is not None:
            t0 = time.perf_counter()
            report.duplicates += self.duplicates.link([p for p in points if outcomes[p.id][0] == INDEXED])
            report.timings_ms["dedupe"] = _ms_since(t0) + report.timings_ms.get("signature", 0.0)

    def _report(self, batch: _Batch) -> None:
        for outcome in batch.report.outcomes[batch.first:]:
            self.reporter.outcome(outcome)


def _after(previous: Future[_Batch], stage: Callable[[_Batch], _Batch]) -> _Batch:
    """Run ``stage`` on the batch ``previous`` yields (its error, if it had one, goes on)."""
    return stage(previous.result())


def _finished_quietly(future: Future[_Batch]) -> _Batch | None:
    """Wait for ``future`` through further interrupts; its batch, or None when it ended in an error."""
    while True:
        try:
            wait([future])
            break
        except KeyboardInterrupt:
            continue
    return future.result() if future.exception() is None else None


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


__all__ = ["IndexingPipeline", "Message", "Pipeline"]
