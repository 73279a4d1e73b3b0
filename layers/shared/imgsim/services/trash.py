"""Deleting through imgsim moves an image to the trash; restoring brings it back (``imgsim.trash`` says how).

Order of the steps, so that a crash at any point loses nothing: copy the object into the trash, record the
entry (vector and payload) in ``<collection>_trash``, take the point out of the collection (the image leaves
search and the duplicate groups at once), delete the object. Restoring runs the other way: copy the object
back, put the point back and look for its duplicates again (images indexed while it was away), drop the entry,
delete the trash copy. The copy back is an ``ObjectCreated`` event, so the indexer re-indexes the image as
well; a re-run of either after a crash finishes the job.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..dedupe import INTERNAL_FIELDS, DuplicateLinks
from ..errors import InvalidRequest, KeyTaken, NotFound
from ..settings import ApiSettings
from ..store import FieldIn, FieldRange, Record, StoredPoint, VectorStore, Where
from ..trash import (
    ENTRY_FIELDS,
    EXPIRES_AT_FIELD,
    IMAGE_ID_FIELD,
    RESTORED_AT_FIELD,
    TRASH_KEY_FIELD,
    TRASHED_AT_FIELD,
    Locks,
    entry_id,
    iso,
    trash_key,
    trash_store,
)
from .common import image_url, point_id
from .images import ImageService
from .ports import ObjectStorage

DAY = 86_400.0
LIST_LIMIT_MAX = 100
# The trash is read whole and sorted newest first: it holds what was deleted within the trash period (the
# figures of a photo library: hundreds to a few thousand entries). Past this, listing answers the newest only.
READ_MAX = 20_000
ENTRY_SHOWN = ("key", "bucket", "width", "height", "size", "content_type", "indexed_at")


class TrashService:
    """Delete (to the trash), list, restore, empty. The store comes from a callable (the served collection can change)."""

    def __init__(self, settings: ApiSettings, *, store: Callable[[], VectorStore],
                 objects: Callable[[], ObjectStorage], images: ImageService | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._store = store
        self._objects = objects
        self._images = images or ImageService(settings, store=store, objects=objects)
        self._clock = clock

    def locks(self) -> Locks:
        return Locks(self._store())

    # -- deleting ---------------------------------------------------------------------------------------------

    def delete(self, image_id: str) -> dict[str, Any]:
        """Move one image to the trash (under its lease): ``{"id", "key", "bucket", "status": "trashed", "trash_id",
        "expires_at"}``."""
        parsed = point_id(image_id)
        # Looked up before the lease: an id the caller cannot see (absent, or another tenant's) is a 404 without
        # ever leasing it, so nobody can make a delete of another tenant's image answer 409 busy.
        if self._store().get(parsed) is None:
            raise NotFound(f"no indexed image with id {parsed}")
        with self.locks().held([parsed]):
            record = self._store().get(parsed, with_vector=True)  # again, under the lease
            if record is None:
                raise NotFound(f"no indexed image with id {parsed}")
            return self.move([record])[0]

    def move(self, records: Sequence[Record]) -> builtins.list[dict[str, Any]]:
        """Move images to the trash; the caller holds their leases and has checked they may go."""
        store, objects, trash = self._store(), self._objects(), trash_store(self._store())
        targets = [(r, *self._images.check_deletable(r.id, r.payload)) for r in records]  # every check first
        moved = []
        for record, bucket, key in targets:
            now = self._clock()
            entry = entry_id(record.id, now)
            stashed = trash_key(key, now)
            expires = iso(now + self.settings.trash_days * DAY)
            objects.copy(bucket, key, stashed)
            assert record.vector is not None
            trash.upsert([StoredPoint(entry, record.vector, {
                **record.payload, IMAGE_ID_FIELD: record.id, TRASHED_AT_FIELD: iso(now), EXPIRES_AT_FIELD: expires,
                TRASH_KEY_FIELD: stashed})])
            store.delete([record.id])
            objects.delete(bucket, key)
            moved.append({"id": record.id, "bucket": bucket, "key": key, "status": "trashed", "trash_id": entry,
                          "expires_at": expires})
        return moved

    # -- the trash --------------------------------------------------------------------------------------------

    def list(self, *, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        """The trash, newest first: ``{"items": [...], "next_cursor", "trash_days"}``. Expired entries are gone."""
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise InvalidRequest(f"'limit' must be an integer from 1 to {LIST_LIMIT_MAX}")
        start = _offset(cursor)
        self.purge_expired()
        entries = self._entries()
        entries.sort(key=lambda r: (str(r.payload.get(TRASHED_AT_FIELD)), r.id), reverse=True)
        page = entries[start:start + limit]
        objects = self._objects()
        items = []
        for record in page:
            item = {"id": record.id, "image_id": record.payload.get(IMAGE_ID_FIELD),
                    "trashed_at": record.payload.get(TRASHED_AT_FIELD),
                    "expires_at": record.payload.get(EXPIRES_AT_FIELD),
                    **{f: record.payload.get(f) for f in ENTRY_SHOWN}}
            stashed = {"bucket": record.payload.get("bucket"), "key": record.payload.get(TRASH_KEY_FIELD)}
            item["url"] = image_url(objects, stashed, self.settings.url_ttl)
            items.append(item)
        nxt = str(start + limit) if start + limit < len(entries) else None
        return {"items": items, "next_cursor": nxt, "trash_days": self.settings.trash_days}

    def _entries(self, where: Where | None = None) -> builtins.list[Record]:
        trash = trash_store(self._store())
        out: builtins.list[Record] = []
        offset = None
        while len(out) < READ_MAX:
            page, offset = trash.scroll(where=where, limit=1000, offset=offset, with_vectors=False)
            out.extend(page)
            if offset is None:
                break
        return out

    def entries_of(self, image_ids: Sequence[str]) -> dict[str, Record]:
        """The newest live trash entry of each of these images (those that have one)."""
        newest: dict[str, Record] = {}
        for record in self._entries(Where(must=(FieldIn(IMAGE_ID_FIELD, tuple(image_ids)),))):
            image = str(record.payload.get(IMAGE_ID_FIELD))
            if self._expired(record):
                continue
            if image not in newest or str(record.payload.get(TRASHED_AT_FIELD)) > str(
                    newest[image].payload.get(TRASHED_AT_FIELD)):
                newest[image] = record
        return newest

    def restore(self, trash_id: str) -> dict[str, Any]:
        """Bring an image back (object, point, duplicate links): ``{"id", "key", "bucket", "status": "restored"}``."""
        parsed = point_id(trash_id)
        trash = trash_store(self._store())
        entry = trash.get(parsed, with_vector=True)
        if entry is None or self._expired(entry):
            raise NotFound(f"nothing in the trash with id {parsed}")
        image = str(entry.payload.get(IMAGE_ID_FIELD))
        with self.locks().held([image]):
            entry = trash.get(parsed, with_vector=True)  # again, under the lease: a concurrent restore took it
            if entry is None:
                raise NotFound(f"nothing in the trash with id {parsed}")
            store, objects = self._store(), self._objects()
            bucket, key = str(entry.payload["bucket"]), str(entry.payload["key"])
            stashed = str(entry.payload[TRASH_KEY_FIELD])
            if store.get(image) is not None or objects.exists(bucket, key):
                raise KeyTaken(f"another image is stored at {key!r} now; delete or move it, then restore")
            objects.copy(bucket, stashed, key)
            payload = {k: v for k, v in entry.payload.items() if k not in ENTRY_FIELDS}
            payload[RESTORED_AT_FIELD] = iso(self._clock())
            assert entry.vector is not None
            restored = StoredPoint(image, entry.vector, payload)
            store.upsert([restored])
            DuplicateLinks(store, self.settings.duplicate_threshold).relink(
                [Record(image, payload, list(entry.vector))])
            trash.delete([parsed])
            objects.delete(bucket, stashed)
        return {"id": image, "bucket": bucket, "key": key, "status": "restored"}

    def empty(self, *, expired_only: bool = False) -> int:
        """Delete trash entries and their objects for good (all of them, or those past the trash period); how many."""
        where = self._expired_filter() if expired_only else None
        entries = self._entries(where)
        trash, objects = trash_store(self._store()), self._objects()
        for record in entries:
            bucket, stashed = record.payload.get("bucket"), record.payload.get(TRASH_KEY_FIELD)
            if bucket and stashed:
                objects.delete(str(bucket), str(stashed))
            trash.delete([record.id])
        return len(entries)

    def purge_expired(self) -> int:
        """Entries past the trash period go (on AWS the lifecycle rule has already expired their objects)."""
        return self.empty(expired_only=True)

    def _expired_filter(self) -> Where:
        return Where(must=(FieldRange(EXPIRES_AT_FIELD, lte=iso(self._clock()), datetime=True),))

    def _expired(self, entry: Record) -> bool:
        return str(entry.payload.get(EXPIRES_AT_FIELD) or "") <= iso(self._clock())


def visible(payload: dict[str, Any]) -> dict[str, Any]:
    """A payload as API answers show it: without the bookkeeping fields."""
    return {k: v for k, v in payload.items() if k not in INTERNAL_FIELDS}


def _offset(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    if not cursor.isdigit():
        raise InvalidRequest("'cursor' must be the next_cursor of the previous page")
    return int(cursor)


__all__ = ["TrashService", "visible"]
