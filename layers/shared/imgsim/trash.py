"""The trash: where images deleted through imgsim wait ``IMGSIM_TRASH_DAYS`` (30) before they are gone.

**The choice** (issue 19): a trash *prefix* in the images bucket, not bucket versioning. Deleting moves the
object to ``.trash/<time>/<key>`` (a server-side copy, then the delete) and the point to the companion
collection ``<collection>_trash``; the bucket's lifecycle rule expires ``.trash/`` objects after the trash
period (template.yaml), so on AWS the trash costs the stored bytes and nothing else, and the expiry is S3's job.
Versioning would also cost only bytes, but it cannot be turned off again once on (only suspended), keeps every
overwritten version of every object whether imgsim deleted it or not, and needs ListObjectVersions to find
what to restore; a prefix behaves the same on S3, moto and the local stack's durable S3, and the trash is a
listing of one collection. The indexer skips keys under the prefix (``in_trash``), so a trashed copy is never
indexed as a new image. An object deleted directly in S3 (not through imgsim) still just leaves search.

**Locks.** Two reviewers resolving the same pair with keep and remove swapped must not delete both copies.
Every delete and resolve first takes a short lease on each image it touches (``Locks``: one point per image
id in ``<collection>_locks``, taken by a compare-and-set and read back), checks the images again under the
leases, then moves them: of two operations on overlapping images, one waits for nothing and answers 409
``busy`` instead. A lease expires after ``LEASE_SECONDS``, so a crashed holder never blocks for long.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from .errors import Busy
from .store import (
    FieldEquals,
    FieldMissing,
    FieldRange,
    IdIn,
    StoredPoint,
    VectorStore,
    Where,
)

TRASH_PREFIX = ".trash/"
TRASH_SUFFIX = "_trash"
LOCKS_SUFFIX = "_locks"
LEASE_SECONDS = 60.0
# Fields a trash entry adds to the image's payload.
IMAGE_ID_FIELD = "image_id"
TRASHED_AT_FIELD = "trashed_at"
EXPIRES_AT_FIELD = "expires_at"
TRASH_KEY_FIELD = "trash_key"
# On a point a restore wrote back, until the put event of its restored object re-indexes it: a delete event that
# arrives meanwhile (the queued one of its move to the trash) is checked against S3 first (imgsim.pipeline.core).
RESTORED_AT_FIELD = "restored_at"
ENTRY_FIELDS = (IMAGE_ID_FIELD, TRASHED_AT_FIELD, EXPIRES_AT_FIELD, TRASH_KEY_FIELD)
_NAMESPACE = uuid.UUID("0b5d3c52-8a4e-4d55-9a3e-5c1f0e7b7e21")


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def trash_key(key: str, moment: float) -> str:
    """Where a deleted object waits: under the prefix, by the time it was deleted, then its own key (readable in
    the console, and never the same for two deletes of one key)."""
    stamp = datetime.fromtimestamp(moment, UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{TRASH_PREFIX}{stamp}/{key}"


def entry_id(image_id: str, moment: float) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{image_id}/{moment!r}"))


def trash_store(store: VectorStore) -> VectorStore:
    return store.companion(TRASH_SUFFIX, dim=store.dim)


class Locks:
    """Leases on image ids (``<collection>_locks``, one point per leased id)."""

    def __init__(self, store: VectorStore, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self.store = store.companion(LOCKS_SUFFIX, dim=1)
        self.lease_seconds = lease_seconds

    def _take(self, point_id: str, token: str) -> bool:
        now = time.time()
        free = Where(should=(Where(must=(IdIn((point_id,)), FieldMissing("owner"))),
                             Where(must=(IdIn((point_id,)), FieldRange("expires", lte=now)))))
        # A new id is inserted; an existing lease is overwritten only when free or expired: a compare-and-set,
        # read back to learn who won.
        self.store.upsert([StoredPoint(point_id, [1.0], {"owner": token, "expires": now + self.lease_seconds})],
                          only_if=free)
        held = self.store.get(point_id)
        return held is not None and held.payload.get("owner") == token

    def _give_back(self, point_ids: Sequence[str], token: str) -> None:
        for point_id in point_ids:
            self.store.delete_where(Where(must=(IdIn((point_id,)), FieldEquals("owner", token))))

    @contextmanager
    def held(self, point_ids: Sequence[str]) -> Iterator[None]:
        """Lease every id (in sorted order) or none: ``Busy`` when another operation holds one."""
        token = uuid.uuid4().hex
        taken: list[str] = []
        try:
            for point_id in sorted(set(point_ids)):
                if not self._take(point_id, token):
                    raise Busy("another delete or resolve of these images is under way; try again in a moment")
                taken.append(point_id)
            yield
        finally:
            self._give_back(taken, token)


__all__ = [
    "ENTRY_FIELDS", "EXPIRES_AT_FIELD", "IMAGE_ID_FIELD", "LEASE_SECONDS", "LOCKS_SUFFIX", "RESTORED_AT_FIELD",
    "TRASHED_AT_FIELD",
    "TRASH_KEY_FIELD", "TRASH_PREFIX", "TRASH_SUFFIX", "Locks", "entry_id", "iso", "trash_key", "trash_store",
]
