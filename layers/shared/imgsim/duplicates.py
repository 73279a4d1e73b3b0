"""Duplicate groups from what indexing recorded, and the decisions that resolve them.

A group is one image that others were recorded as duplicates of (``duplicate_of``, set at upload by
``imgsim.dedupe``) with those others: a star, never a chain (a duplicate of a duplicate joins its own match's
group, not the first image's, so two unrelated images never end up together through a third). The image to
keep is chosen by a documented rule: the most pixels, then the larger file, then the earliest indexed, then the
smaller id. Each member's ``score`` is its similarity to the kept image.

Listing walks the images marked as having duplicates (``has_duplicates``, kept by the indexer), one page at a
time from a cursor, and reads each one's members with an indexed filter: a page never scans the collection.
"Not duplicates" decisions are kept on both images (``not_duplicates``): the pair never appears again, and the
indexer never records it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .dedupe import DuplicateIndex, Signature, pair_score
from .points import DUPLICATE_OF_FIELD, DUPLICATE_SCORE_FIELD
from .store import (
    FieldEquals,
    FieldIn,
    Record,
    StoredPoint,
    VectorStore,
    Where,
    field_unchanged,
)

HAS_DUPLICATES_FIELD = "has_duplicates"
HAS_DUPLICATES = "yes"  # a keyword (indexed like the other filter fields; Qdrant Edge 0.9 matches no boolean)
NOT_DUPLICATES_FIELD = "not_duplicates"
MEMBER_FIELDS = ("key", "width", "height", "size", "indexed_at")
PAGE_LIMIT_MAX = 100


def keep_order(record: Record) -> tuple[Any, ...]:
    """Sort key: the first is the one to keep (most pixels, larger file, earliest, smaller id)."""
    payload = record.payload
    pixels = int(payload.get("width") or 0) * int(payload.get("height") or 0)
    return (-pixels, -int(payload.get("size") or 0), str(payload.get("indexed_at") or "~"), record.id)


def not_duplicates(record: Record) -> set[str]:
    return {str(i) for i in record.payload.get(NOT_DUPLICATES_FIELD) or []}


@dataclass(frozen=True)
class Group:
    keep: Record
    members: list[tuple[Record, float]]  # (image, similarity to the kept one), the kept one first at 1.0

    def as_json(self) -> dict[str, Any]:
        return {"keep": self.keep.id, "members": [
            {"id": record.id, "score": round(score, 4), **{f: record.payload.get(f) for f in MEMBER_FIELDS}}
            for record, score in self.members
        ]}


class DuplicateGroups:
    def __init__(self, store: VectorStore, index: DuplicateIndex) -> None:
        self.store = store
        self.index = index

    def page(self, *, threshold: float, prefix: str | None = None, limit: int = 20,
             cursor: str | None = None) -> tuple[list[Group], str | None]:
        """Up to ``limit`` groups whose members score >= ``threshold``, from ``cursor``; the next cursor or None."""
        limit = max(1, min(limit, PAGE_LIMIT_MAX))
        must: list[Any] = [FieldEquals(HAS_DUPLICATES_FIELD, HAS_DUPLICATES)]
        folder = prefix[: prefix.rfind("/") + 1] if prefix else ""
        if folder:
            must.append(FieldIn("dirs", (folder,)))
        groups: list[Group] = []
        offset = cursor
        while len(groups) < limit:
            targets, offset = self.store.scroll(where=Where(must=tuple(must)), limit=limit, offset=offset)
            for target in targets:
                if prefix and not str(target.payload.get("key", "")).startswith(prefix):
                    continue
                group = self.group_of(target, threshold)
                if group is not None:
                    groups.append(group)
                if len(groups) == limit:
                    # Resume after this target (scroll offsets are inclusive point ids).
                    rest = [t.id for t in targets if t.id > target.id]
                    return groups, rest[0] if rest else offset
            if offset is None:
                return groups, None
        return groups, offset

    def all(self, *, threshold: float, prefix: str | None = None) -> list[Group]:
        groups: list[Group] = []
        cursor = None
        while True:
            page, cursor = self.page(threshold=threshold, prefix=prefix, limit=PAGE_LIMIT_MAX, cursor=cursor)
            groups.extend(page)
            if cursor is None:
                return groups

    def group_of(self, target: Record, threshold: float) -> Group | None:
        members, _ = self.store.scroll(where=Where(must=(FieldEquals(DUPLICATE_OF_FIELD, target.id),)), limit=1000)
        refused = not_duplicates(target)
        linked = [(m, float(m.payload.get(DUPLICATE_SCORE_FIELD) or 0.0)) for m in members
                  if m.id not in refused and target.id not in not_duplicates(m)]
        linked = [(m, score) for m, score in linked if score >= threshold]
        if not linked:
            return None
        everyone = [target, *(m for m, _ in linked)]
        keep = min(everyone, key=keep_order)
        to_target = {m.id: score for m, score in linked}
        scored: list[tuple[Record, float]] = [(keep, 1.0)]
        for record in sorted((r for r in everyone if r.id != keep.id), key=keep_order):
            if keep.id == target.id:
                score = to_target[record.id]
            elif record.id == target.id:
                score = to_target[keep.id]
            else:
                score = self._score(record.id, keep.id, fallback=min(to_target[record.id], to_target[keep.id]))
            scored.append((record, score))
        return Group(keep, scored)

    def _score(self, a: str, b: str, *, fallback: float) -> float:
        """Similarity of two members that were each matched to the target, from their stored signatures."""
        first, second = self.index.stored(a), self.index.stored(b)
        if first is None or second is None:
            return fallback
        return pair_score(Signature(first[0], first[0], first[1]), Signature(second[0], second[0], second[1]))


def mark_targets(store: VectorStore, ids: Sequence[str]) -> None:
    """Set ``has_duplicates`` on these images, by compare-and-set on their ETag: never over a newer write."""
    records = [r for r in store.retrieve(list(dict.fromkeys(ids)), with_vectors=True)
               if r.payload.get(HAS_DUPLICATES_FIELD) != HAS_DUPLICATES and r.vector is not None]
    for record in records:
        payload = {**record.payload, HAS_DUPLICATES_FIELD: HAS_DUPLICATES}
        assert record.vector is not None
        store.upsert([StoredPoint(record.id, record.vector, payload)],
                     only_if=field_unchanged("etag", {record.id: record.payload.get("etag")}))


def record_not_duplicates(store: VectorStore, keep: str, others: Sequence[str]) -> list[str]:
    """Remember that ``keep`` and each of ``others`` are not duplicates (on both); the ids that changed."""
    ids = [keep, *others]
    records = {r.id: r for r in store.retrieve(ids, with_vectors=True)}
    changed = []
    for point_id in ids:
        record = records.get(point_id)
        if record is None or record.vector is None:
            continue
        partners = set(others) if point_id == keep else {keep}
        decided = not_duplicates(record) | partners
        payload = {**record.payload, NOT_DUPLICATES_FIELD: sorted(decided - {point_id})}
        if payload.get(DUPLICATE_OF_FIELD) in partners:
            payload.pop(DUPLICATE_OF_FIELD, None)
            payload.pop(DUPLICATE_SCORE_FIELD, None)
        store.upsert([StoredPoint(record.id, record.vector, payload)],
                     only_if=field_unchanged("etag", {record.id: record.payload.get("etag")}))
        changed.append(point_id)
    return changed
