"""Duplicate groups: a partition of the images, computed from the duplicate links when read.

**The rule.** Two images are duplicates when a link between them holds (``imgsim.dedupe``: the symmetric
signature score is at or above the threshold, both images are live with the content that was scored, and
nobody decided "not duplicates" for the pair). Take the connected components of that relation. Within a
component, the best copy (``rank``: ``imgsim.quality.keep_rank``, then the id) becomes the centre of a group
made of it and every image *directly* a duplicate of it; those leave the component, and the best of the rest
starts the next group, until no image left has a duplicate left. So:

- every image is in at most one group (a partition);
- every member of a group is a duplicate of its centre: a chain of look-alikes (A like B, B like C, A unlike C)
  never puts A and C together unless both are duplicates of the best copy between them;
- the groups are a function of the set of images and their links, which do not depend on the order, batches or
  concurrency they were indexed in (``imgsim.dedupe``), nor on anything else the rule reads — so the same set of
  images always gives the same groups, and deleting, replacing or restoring an image regroups at once.

The suggested keep is the group's best copy by ``keep_rank``, ties broken by the earliest indexed (then the
id); it is the centre unless copies tie on quality. Each member's ``score`` is its pair score with the keep.

Listing walks the images that hold links (an indexed filter) in id order, one page at a time from a cursor;
a component is listed when the walk reaches its first image, so paging lists each group once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import quality
from .dedupe import (
    LINKS_FIELD,
    NOT_DUPLICATES_FIELD,
    link_holds,
    linking_to,
    not_duplicates,
    pair_score,
    stored_links,
)
from .store import FieldIn, FieldMissing, Record, VectorStore, Where, field_unchanged

MEMBER_FIELDS = ("key", "width", "height", "size", "indexed_at")
PAGE_LIMIT_MAX = 100
MAX_COMPONENT = 2000  # a guard: a component is never read past this many images (a wrong threshold, not photos)


def rank(record: Record) -> tuple[Any, ...]:
    """Order-independent: which copy a group forms around (the best first)."""
    return (quality.keep_rank(record.payload), record.id)


def keep_order(record: Record) -> tuple[Any, ...]:
    """The suggested keep: the best copy, then the earliest indexed, then the smaller id."""
    return (quality.keep_rank(record.payload), str(record.payload.get("indexed_at") or "~"), record.id)


@dataclass(frozen=True)
class Group:
    keep: Record
    members: list[tuple[Record, float]]  # (image, similarity to the kept one), the kept one first at 1.0

    @property
    def ids(self) -> list[str]:
        return [record.id for record, _ in self.members]

    def as_json(self) -> dict[str, Any]:
        return {"keep": self.keep.id, "members": [
            {"id": record.id, "score": round(score, 4), **{f: record.payload.get(f) for f in MEMBER_FIELDS}}
            for record, score in self.members
        ]}


class DuplicateGraph:
    """The duplicate relation among the live images of one store, read lazily and cached for one request."""

    def __init__(self, store: VectorStore, threshold: float, *, prefix: str | None = None) -> None:
        self.store = store
        self.threshold = threshold
        self.prefix = prefix or None
        self._records: dict[str, Record | None] = {}
        self._edges: dict[str, dict[str, float]] = {}
        self._components: dict[str, frozenset[str]] = {}

    # -- reading ----------------------------------------------------------------------------------------------

    def records(self, ids: Iterable[str]) -> dict[str, Record]:
        missing = [i for i in dict.fromkeys(ids) if i not in self._records]
        if missing:
            found = {r.id: r for r in self.store.retrieve(missing)}
            for point_id in missing:
                self._records[point_id] = found.get(point_id)
        return {i: r for i in ids if (r := self._records.get(i)) is not None}

    def record(self, point_id: str) -> Record | None:
        return self.records([point_id]).get(point_id)

    def _in_scope(self, record: Record) -> bool:
        return not self.prefix or str(record.payload.get("key", "")).startswith(self.prefix)

    def _counts(self, a: Record, b: Record, score: float) -> bool:
        return (score >= self.threshold and self._in_scope(a) and self._in_scope(b)
                and b.id not in not_duplicates(a.payload) and a.id not in not_duplicates(b.payload))

    def _load_edges(self, ids: Sequence[str]) -> None:
        """The edges of several images at once: their own links and the links naming them."""
        todo = [i for i in ids if i not in self._edges]
        if not todo:
            return
        own = self.records(todo)
        naming = linking_to(self.store, todo, limit=10_000)
        for record in naming:
            self._records.setdefault(record.id, record)
        partners = {link.partner for r in own.values() for link in stored_links(r)}
        self.records(partners)
        for point_id in todo:
            self._edges[point_id] = {}
        for record in [*own.values(), *naming]:
            for link in stored_links(record):
                partner = self._records.get(link.partner)
                if partner is None or not link_holds(link, partner) or not self._counts(record, partner, link.score):
                    continue
                for a, b in ((record.id, partner.id), (partner.id, record.id)):
                    if a in self._edges:
                        self._edges[a][b] = max(self._edges[a].get(b, 0.0), link.score)

    def neighbours(self, point_id: str) -> dict[str, float]:
        self._load_edges([point_id])
        return self._edges[point_id]

    def component(self, point_id: str) -> frozenset[str]:
        """Every image connected to this one by duplicate edges (itself included), read breadth first."""
        if point_id in self._components:
            return self._components[point_id]
        seen = {point_id}
        frontier = [point_id]
        while frontier and len(seen) < MAX_COMPONENT:
            self._load_edges(frontier)
            nxt = []
            for node in frontier:
                for other in self._edges[node]:
                    if other not in seen:
                        seen.add(other)
                        nxt.append(other)
            frontier = nxt
        self._load_edges(list(seen))
        component = frozenset(seen)
        for node in component:
            self._components[node] = component
        return component

    # -- the partition ----------------------------------------------------------------------------------------

    def partition(self, component: Iterable[str]) -> list[Group]:
        """The groups of one component (the rule in the module docstring), best group first."""
        records = self.records(component)
        left = {i: r for i, r in records.items() if self._in_scope(r)}
        groups = []
        for centre in sorted(left.values(), key=rank):
            if centre.id not in left:
                continue
            members = [left[i] for i in self._edges.get(centre.id, {}) if i in left and i != centre.id]
            if not members:
                continue
            group = [centre, *members]
            for record in group:
                del left[record.id]
            groups.append(self._group(group))
        return groups

    def _group(self, records: Sequence[Record]) -> Group:
        keep = min(records, key=keep_order)
        scored: list[tuple[Record, float]] = [(keep, 1.0)]
        edges = self._edges.get(keep.id, {})
        others = sorted((r for r in records if r.id != keep.id), key=keep_order)
        # A member's score: its link with the keep (the keep is the group's centre unless copies tie), else the
        # pair score from both records' signatures and vectors.
        unlinked = [r.id for r in others if r.id not in edges]
        with_vectors = {r.id: r for r in self.store.retrieve([keep.id, *unlinked], with_vectors=True)} if unlinked else {}
        for record in others:
            score = edges.get(record.id)
            if score is None:
                exact = pair_score(with_vectors.get(record.id, record), with_vectors.get(keep.id, keep))
                score = exact if exact is not None else 0.0
            scored.append((record, score))
        return Group(keep, scored)

    def group_of(self, point_id: str) -> Group | None:
        """The group this image is in, or None."""
        for group in self.partition(self.component(point_id)):
            if point_id in group.ids:
                return group
        return None


class DuplicateGroups:
    """Listing the groups of one store, page by page."""

    def __init__(self, store: VectorStore) -> None:
        self.store = store

    def page(self, *, threshold: float, prefix: str | None = None, limit: int = 20,
             cursor: str | None = None) -> tuple[list[Group], str | None]:
        """Up to ``limit`` groups (a component's groups are never split over pages), from ``cursor``; the next
        cursor or None."""
        limit = max(1, min(limit, PAGE_LIMIT_MAX))
        graph = DuplicateGraph(self.store, threshold, prefix=prefix)
        must: list[Any] = []
        folder = prefix[: prefix.rfind("/") + 1] if prefix else ""
        if folder:
            must.append(FieldIn("dirs", (folder,)))
        where = Where(must=tuple(must), must_not=(FieldMissing(LINKS_FIELD),))
        groups: list[Group] = []
        offset = cursor
        while True:
            targets, next_offset = self.store.scroll(where=where, limit=max(limit, 32), offset=offset)
            for target in targets:
                if prefix and not str(target.payload.get("key", "")).startswith(prefix):
                    continue
                component = graph.component(target.id)
                first = min(i for i in component if self._listed(graph, i, prefix))
                if first != target.id:
                    continue  # listed when the walk reached its first image
                found = graph.partition(component)
                if groups and len(groups) + len(found) > limit:
                    return groups, target.id  # scroll offsets are inclusive: this component starts the next page
                groups.extend(found)
                if len(groups) >= limit:
                    rest = [t.id for t in targets if t.id > target.id]
                    return groups, rest[0] if rest else next_offset
            if next_offset is None:
                return groups, None
            offset = next_offset

    @staticmethod
    def _listed(graph: DuplicateGraph, point_id: str, prefix: str | None) -> bool:
        """Would the walk visit this image (it holds links, and is in the prefix)?"""
        record = graph.record(point_id)
        return (record is not None and bool(record.payload.get(LINKS_FIELD))
                and (not prefix or str(record.payload.get("key", "")).startswith(prefix)))

    def all(self, *, threshold: float, prefix: str | None = None) -> list[Group]:
        groups: list[Group] = []
        cursor = None
        while True:
            page, cursor = self.page(threshold=threshold, prefix=prefix, limit=PAGE_LIMIT_MAX, cursor=cursor)
            groups.extend(page)
            if cursor is None:
                return groups


def record_not_duplicates(store: VectorStore, keep: str, others: Sequence[str]) -> list[str]:
    """Remember that ``keep`` and each of ``others`` are not duplicates (on both, so re-indexing either keeps it:
    the indexer carries the decision over for the same content); the ids that changed."""
    ids = [keep, *others]
    records = {r.id: r for r in store.retrieve(ids)}
    changed = []
    for point_id in ids:
        record = records.get(point_id)
        if record is None:
            continue
        partners = set(others) if point_id == keep else {keep}
        decided = sorted((not_duplicates(record.payload) | partners) - {point_id})
        store.set_fields(field_unchanged("etag", {record.id: record.payload.get("etag")}),
                         {NOT_DUPLICATES_FIELD: decided})
        changed.append(point_id)
    return changed


__all__ = [
    "MEMBER_FIELDS", "PAGE_LIMIT_MAX", "DuplicateGraph", "DuplicateGroups", "Group", "keep_order", "rank", "record_not_duplicates",
]
