"""Stage: the batch's effect on the store, in S3's order, safe against concurrent invocations.

S3 does not deliver notifications in order, and a standard queue hands events for one key to different
invocations at once. ``imgsim.ordering`` holds the protocol — each key's ``sequencer`` in its point or, once
deleted, in a tombstone (``<collection>_tombstones``); every write a compare-and-set on what was read at the
start of the batch, then read back — and this stage applies it to a batch:

1. one event per key (the highest sequencer, ``superseded_in_batch`` for the others);
2. the state of every key in one read: events not newer than it are ``stale_event``; a backfill put whose
   object the point already shows (same ETag and model) is ``unchanged`` and never downloaded;
3. deletes, and keys whose new object is poison, are removed with a tombstone (a late older put cannot bring
   the old vector back);
4. the puts are written with their payload and read back: ours (indexed), a later write won (``stale_event``),
   or an older concurrent write won (failed: SQS redelivers, the retry wins).

Local files go the same way: no sequencer (last writer wins) and no tombstones in practice, one write per batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..dedupe import NOT_DUPLICATES_FIELD
from ..errors import StoreUnavailable
from ..ordering import RETRY, STALE, KeyState, OrderedStore, Removal, is_newer
from ..points import image_payload
from ..store import TENANT_FIELD, StoredPoint, VectorStore
from ..trash import RESTORED_AT_FIELD
from .events import DELETE, PUT, Item, ObjectEvent
from .report import FAILED, INDEXED, SKIPPED, EventOutcome


def newest_per_key(events: Sequence[ObjectEvent]) -> tuple[list[ObjectEvent], list[ObjectEvent]]:
    """Keep one event per (bucket, key): the highest sequencer, or the last delivered without one."""
    chosen: dict[tuple[str | None, str], ObjectEvent] = {}
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


class OrderedWrite:
    """The stage, on one store and its tombstones."""

    def __init__(self, store: VectorStore, model_name: str) -> None:
        self.store = store
        self.ordered = OrderedStore(store)
        self.model_name = model_name

    @property
    def tombstones(self) -> VectorStore:
        return self.ordered.tombstones

    def read_state(self, events: Sequence[ObjectEvent]) -> KeyState:
        """What the store reflects now, per key: the point and/or its tombstone (``StoreUnavailable`` propagates)."""
        return self.ordered.read_state([e.point_id for e in events])

    def triage(self, events: Sequence[ObjectEvent], state: KeyState
               ) -> tuple[list[ObjectEvent], list[ObjectEvent], list[EventOutcome]]:
        """(puts, deletes, skips): events the store already reflects, and backfill puts of unchanged objects (and
        the put events of restored ones)."""
        puts: list[ObjectEvent] = []
        deletes: list[ObjectEvent] = []
        skips: list[EventOutcome] = []
        for event in events:
            stored = state.points.get(event.point_id, {})
            if state.is_stale(event.point_id, event.sequencer, is_put=event.action == PUT):
                skips.append(event.outcome(SKIPPED, "stale_event"))
            elif (
                event.action == PUT
                # A backfill's put, or the put event of an object a restore put back (the restore wrote its point
                # as it was, links included: indexing it again would only drop its links until the duplicate check
                # wrote them back, a moment a listing of the groups would show).
                and (event.only_if_changed or RESTORED_AT_FIELD in stored)
                and stored
                and event.etag
                and stored.get("etag") == event.etag
                and stored.get("model") == self.model_name
                and (stored.get(TENANT_FIELD) or None) == event.tenant  # a point from before tenants gets its field
            ):
                skips.append(event.outcome(SKIPPED, "unchanged"))
            elif event.action == DELETE:
                deletes.append(event)
            else:
                puts.append(event)
        return puts, deletes, skips

    def remove(self, events: Sequence[ObjectEvent], state: KeyState) -> dict[str, tuple[str, BaseException | None]]:
        """Remove the points of ``events`` with tombstones (``OrderedStore.remove``);
        ``{point_id: (reason, error)}`` for the events SQS must redeliver."""
        try:
            failures = self.ordered.remove(
                [Removal(e.point_id, e.sequencer, e.bucket or "", e.key) for e in events], state
            )
        except StoreUnavailable as exc:
            return {e.point_id: (f"store_unavailable: {exc}", exc) for e in events}
        return {point_id: (reason, None) for point_id, reason in failures.items()}

    def point(self, item: Item, vector: Any, extra: Mapping[str, Any], state: KeyState) -> StoredPoint:
        """The point of one embedded item: its payload (``imgsim.points``) with ``extra`` (its duplicate
        signature), and what the stored point carries over ("not duplicates" decisions on the same picture)."""
        event = item.event
        assert item.image is not None  # only decoded items are embedded
        prior = state.points.get(event.point_id, {})
        # A backfill event has no sequencer: keep the stored one so that
        # notifications still in flight keep their order against it.
        sequencer = event.sequencer or prior.get("sequencer")
        payload = image_payload(
            key=event.key,
            image=item.image,
            size=item.size,
            model=self.model_name,
            bucket=event.bucket,
            etag=item.etag or event.etag,
            sequencer=sequencer,
            source=event.origin,
            tenant=event.tenant,
        )
        payload.update(extra)
        if prior.get(NOT_DUPLICATES_FIELD) and prior.get("etag") and prior.get("etag") == payload.get("etag"):
            payload[NOT_DUPLICATES_FIELD] = prior[NOT_DUPLICATES_FIELD]  # the same picture: decisions stand
        return StoredPoint(event.point_id, vector, payload)

    def write(self, points: Sequence[StoredPoint], state: KeyState) -> Mapping[str, tuple[str, str, BaseException | None]]:
        """Conditional upsert and read-back: ``{point_id: (INDEXED | SKIPPED | FAILED, reason, error)}``."""
        try:
            verdicts = self.ordered.write(points, state)
        except StoreUnavailable as exc:
            return {p.id: (FAILED, f"store_unavailable: {exc}", exc) for p in points}
        return {
            point_id: ((FAILED, reason, None) if verdict == RETRY else (SKIPPED, reason, None) if verdict == STALE
                       else (INDEXED, "", None))
            for point_id, (verdict, reason) in verdicts.items()
        }


__all__ = ["OrderedWrite", "newest_per_key"]
