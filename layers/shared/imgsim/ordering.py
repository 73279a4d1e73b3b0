"""The ordering protocol: S3 sequencers, tombstones and compare-and-set writes, on any store backend.

S3 does not deliver notifications in order. Every put and delete carries a
``sequencer`` that grows per key; the one that last changed a key is kept in the
point's payload, or, once the key is deleted, in a tombstone in the companion
collection ``<collection>_tombstones`` (same point id, a 1-d dummy vector). An
event whose sequencer is not newer than the stored one is stale, so a late put
can neither resurrect a deleted image nor replace a newer vector. Tombstones
live in their own collection so that searches never see them.

Concurrency. Several invocations may handle events for the same key at once (a
standard queue hands them to different batches). Every write is therefore
conditional on the sequencer read at the start of the batch (``only_if`` on
upsert, a filter on delete: compare-and-set), and is read back afterwards: a put
that lost to an older concurrent write is retried, a put undone by a concurrent
newer delete removes itself, and a delete removes any older point written behind
its back.

On a replicated Qdrant cluster the compare-and-set only holds if every replica applies a point's
writes in one order and the read-backs see what a majority has: the server backend sends every
write with ``ordering=medium`` (the shard leader orders them; Qdrant's default *weak* lets replicas
apply concurrent writes in different orders, so one replica could keep the put another dropped)
and every retrieve/scroll with ``consistency=majority`` (``imgsim.store.ClusterOptions``;
``QDRANT_WRITE_ORDERING``, ``QDRANT_READ_CONSISTENCY``; docs/operations.md "Qdrant: collections and clusters"). ``strong`` would
also order them but stops writes while the fixed leader's node is down. The protocol is the same.
This module only uses ``VectorStore``'s interface: both backends run exactly this code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .points import utc_now_iso
from .store import StoredPoint, VectorStore, Where, field_unchanged

TOMBSTONE_SUFFIX = "_tombstones"
SEQUENCER_FIELD = "sequencer"

# Verdicts of a conditional write, per point.
WRITTEN = "written"  # ours is what the store now holds
STALE = "stale"  # something newer won: nothing to do, acknowledge
RETRY = "retry"  # an older concurrent write won, or ours vanished: redeliver


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


def seq(payload: Mapping[str, Any] | None) -> str | None:
    return (payload or {}).get(SEQUENCER_FIELD) or None


def unchanged_since_read(expected: Mapping[str, str | None]) -> Where:
    """Points still carrying the sequencer we read (None: no sequencer), per id."""
    return field_unchanged(SEQUENCER_FIELD, expected)


@dataclass
class KeyState:
    """What the store reflects now, per point id: the point's and the tombstone's payloads."""

    points: dict[str, dict[str, Any]]
    tombs: dict[str, dict[str, Any]]

    def is_stale(self, point_id: str, sequencer: str | None, *, is_put: bool) -> bool:
        """A put is stale if the key already reflects it or something later. A delete equal to
        the tombstone is re-applied: harmless, and it removes a point that an unordered writer
        (backfill) may have added since."""
        stored = self.points.get(point_id, {})
        tomb = self.tombs.get(point_id)
        tomb_wins = (
            not is_newer(sequencer, seq(tomb)) if is_put else strictly_newer(seq(tomb), sequencer)
        )
        return not is_newer(sequencer, seq(stored)) or (tomb is not None and tomb_wins)


@dataclass(frozen=True)
class Removal:
    point_id: str
    sequencer: str | None
    bucket: str
    key: str


class OrderedStore:
    """The images collection and its tombstones, written only through the protocol above."""

    def __init__(self, store: VectorStore) -> None:
        self.store = store
        self.tombstones = store.companion(TOMBSTONE_SUFFIX, dim=1)

    def read_state(self, ids: Sequence[str]) -> KeyState:
        return KeyState(
            points={p.id: p.payload for p in self.store.retrieve(ids)},
            tombs={p.id: p.payload for p in self.tombstones.retrieve(ids)},
        )

    def remove(self, removals: Sequence[Removal], state: KeyState) -> dict[str, str]:
        """Remove points (S3 deletes, or keys that now hold poison) and leave a tombstone with
        each removal's sequencer. Both writes are conditional on ``state``, then read back: a
        point older than the delete that a concurrent writer added in between is removed too.
        Returns ``{point_id: reason}`` for what must be retried; the rest is done.
        ``StoreUnavailable`` propagates: the caller retries the whole of it.
        """
        if not removals:
            return {}
        ids = [r.point_id for r in removals]
        now = utc_now_iso()
        # Tombstone first: should the point delete fail, the retried event finds the
        # point older than the tombstone and deletes it then.
        self.tombstones.upsert(
            [StoredPoint(r.point_id, [1.0], {"bucket": r.bucket, "key": r.key, SEQUENCER_FIELD: r.sequencer,
                                             "deleted_at": now}) for r in removals],
            only_if=unchanged_since_read({i: seq(state.tombs.get(i)) for i in ids}),
        )
        self.store.delete_where(unchanged_since_read({i: seq(state.points.get(i)) for i in ids}))
        after = self.read_state(ids)
        leftovers: dict[str, str | None] = {}
        failures: dict[str, str] = {}
        for removal in removals:
            point = after.points.get(removal.point_id)
            if point is not None and strictly_newer(seq(point), removal.sequencer):
                continue  # a later put won: nothing of this delete is left to do
            if point is not None:
                leftovers[removal.point_id] = seq(point)  # written concurrently, older than the delete
            tomb = after.tombs.get(removal.point_id)
            if tomb is None or strictly_newer(removal.sequencer, seq(tomb)):
                failures[removal.point_id] = "concurrent_update: tombstone overwritten, retrying"
        if leftovers:
            self.store.delete_where(unchanged_since_read(leftovers))
        return failures

    def write(self, points: Sequence[StoredPoint], state: KeyState) -> dict[str, tuple[str, str]]:
        """Conditional upsert of ``points`` against ``state``, then read back, per point:
        ours (WRITTEN), a later write (STALE), an older concurrent write or a vanished point
        (RETRY), or ours resurrected by a delete that landed in between (undone, STALE)."""
        if not points:
            return {}
        self.store.upsert(points, only_if=unchanged_since_read({p.id: seq(state.points.get(p.id)) for p in points}))
        after = self.read_state([p.id for p in points])
        verdicts: dict[str, tuple[str, str]] = {}
        undo: dict[str, str | None] = {}
        stale_tombs: dict[str, str | None] = {}
        for point in points:
            ours = seq(point.payload)
            current = after.points.get(point.id)
            tomb = after.tombs.get(point.id)
            if current is None:
                deleted_since = tomb is not None and not strictly_newer(ours, seq(tomb))
                verdicts[point.id] = (STALE, "stale_event") if deleted_since else (
                    RETRY, "concurrent_update: point vanished, retrying")
            elif seq(current) != ours:
                verdicts[point.id] = (STALE, "stale_event") if strictly_newer(seq(current), ours) else (
                    RETRY, "concurrent_update: an older write won, retrying")
            elif tomb is not None and strictly_newer(seq(tomb), ours):
                undo[point.id] = ours
                verdicts[point.id] = (STALE, "stale_event")
            else:
                verdicts[point.id] = (WRITTEN, "")
                if tomb is not None:
                    # The key exists again; its newer sequencer now lives in the point.
                    stale_tombs[point.id] = seq(tomb)
        if undo:
            self.store.delete_where(unchanged_since_read(undo))
        if stale_tombs:
            self.tombstones.delete_where(unchanged_since_read(stale_tombs))
        return verdicts
