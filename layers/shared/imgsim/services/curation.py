"""Curation: duplicate groups (``imgsim.duplicates``), resolving them safely, and "more like this" recommendations.

A resolve deletes (to the trash) only images that are duplicates of the one kept *now*: in the same group, or
with a pair score at or above the threshold; anything else is refused with 409 ``not_a_duplicate`` before
anything changes. It runs under leases on every image it names (``imgsim.trash.Locks``), so two reviewers
resolving the same pair with keep and remove swapped never remove both copies: one of them answers 409 ``busy``
(the other holds a lease) or 409 ``keep_in_trash`` (the other went first). A retried resolve is harmless: images
it already moved to the trash are reported as ``trashed`` again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dedupe import pair_score
from ..duplicates import (
    PAGE_LIMIT_MAX,
    DuplicateGraph,
    DuplicateGroups,
    record_not_duplicates,
)
from ..errors import InvalidRequest, KeepInTrash, NotADuplicate, NotFound
from ..settings import ApiSettings
from ..store import Record, VectorStore
from .common import image_url, point_id, result
from .images import ImageService
from .ports import ImageEmbedder, ObjectStorage
from .trash import TrashService

RECOMMEND_MAX_EXAMPLES = 100  # positive or negative examples of one recommendation


@dataclass(frozen=True)
class DuplicatesQuery:
    """One page of duplicate groups. ``threshold`` None: ``ApiSettings.duplicate_threshold`` (the indexer's)."""

    threshold: float | None = None
    prefix: str | None = None
    limit: int = 20
    cursor: str | None = None  # next_cursor of the previous page


@dataclass(frozen=True)
class Resolution:
    """Keep one image; delete others' objects (``remove``) and/or remember pairs that are not duplicates."""

    keep: str
    remove: Sequence[str] = ()
    not_duplicates: Sequence[str] = ()


@dataclass(frozen=True)
class RecommendRequest:
    """More like ``positive`` (and unlike ``negative``): indexed images by id or key."""

    positive: Sequence[str]
    negative: Sequence[str] = ()
    limit: int = 10
    similar_threshold: float | None = None  # None: ApiSettings.similar_threshold
    prefix: str | None = None

    def __post_init__(self) -> None:
        if not self.positive:
            raise InvalidRequest("'positive' needs at least one image id or key")
        if len(self.positive) > RECOMMEND_MAX_EXAMPLES or len(self.negative) > RECOMMEND_MAX_EXAMPLES:
            raise InvalidRequest(f"give at most {RECOMMEND_MAX_EXAMPLES} positive and negative examples")
        if not 1 <= self.limit <= 100:
            raise InvalidRequest("'limit' must be an integer from 1 to 100")


def _unique(ids: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(ids))


class CurationService:
    """The store and embedder come from callables: the served collection can change (a model switch)."""

    def __init__(self, settings: ApiSettings, *, embedder: Callable[[], ImageEmbedder],
                 store: Callable[[], VectorStore], objects: Callable[[], ObjectStorage],
                 images: ImageService | None = None, trash: TrashService | None = None) -> None:
        """``images``: for the rule of which objects may be deleted; ``trash``: where removed images go (both made
        from the same dependencies if None)."""
        self.settings = settings
        self._embedder = embedder
        self._store = store
        self._objects = objects
        self._images = images or ImageService(settings, store=store, objects=objects)
        self._trash = trash or TrashService(settings, store=store, objects=objects, images=self._images)

    # -- duplicates -----------------------------------------------------------------------------------------

    def duplicates(self, query: DuplicatesQuery) -> dict[str, Any]:
        """``{"threshold", "groups", "next_cursor"}``; each member with a presigned URL (the page's thumbnails)."""
        threshold = self.settings.duplicate_threshold if query.threshold is None else query.threshold
        groups, next_cursor = DuplicateGroups(self._store()).page(
            threshold=threshold, prefix=query.prefix or None, limit=min(query.limit, PAGE_LIMIT_MAX),
            cursor=point_id(query.cursor) if query.cursor else None,
        )
        objects = self._objects()
        documents = []
        for group in groups:
            doc = group.as_json()
            for member, (record, _) in zip(doc["members"], group.members, strict=True):
                member["url"] = image_url(objects, record.payload, self.settings.url_ttl)
            documents.append(doc)
        return {"threshold": threshold, "groups": documents, "next_cursor": next_cursor}

    def resolve(self, resolution: Resolution) -> dict[str, Any]:
        """Move the removed images to the trash and remember the pairs that are not duplicates:
        ``{"keep", "removed": [{"id", "key", "status": "trashed", "trash_id", "expires_at"}], "not_duplicates"}``.
        Every id is checked (exists, deletable, a duplicate of the keep) under the leases before anything changes."""
        keep = point_id(resolution.keep)
        remove = [point_id(v) for v in _unique(resolution.remove)]
        apart = [point_id(v) for v in _unique(resolution.not_duplicates)]
        if not remove and not apart:
            raise InvalidRequest("give 'remove' and/or 'not_duplicates' (lists of image ids)")
        # Looked up once before the leases: ids the caller cannot see (absent, or another tenant's) are a 404
        # without ever being leased, so nobody can make another tenant's delete or resolve answer 409 busy.
        self._look_up(keep, remove, apart, with_vectors=False)
        with self._trash.locks().held([keep, *remove, *apart]):
            store = self._store()
            found, already = self._look_up(keep, remove, apart, with_vectors=True)
            # After the lookups: an id nobody has is a 404 whatever else the body says (a rule across fields, which
            # the OpenAPI document can state but not check, refuses only requests about images that exist).
            if keep in remove or keep in apart or set(remove) & set(apart):
                raise InvalidRequest("an image can only be kept, removed or marked not a duplicate")
            going = [found[i] for i in remove if i in found]
            for record in going:
                self._images.check_deletable(record.id, record.payload)
            self._check_duplicates(found[keep], going)
            removed = [*already.values(), *self._trash.move(going)]
            if apart:
                record_not_duplicates(store, keep, apart)
        return {"keep": keep, "removed": removed, "not_duplicates": apart}

    def _look_up(self, keep: str, remove: list[str], apart: list[str], *, with_vectors: bool
                 ) -> tuple[dict[str, Record], dict[str, dict[str, Any]]]:
        """The images named that are indexed, and those of ``remove`` a previous resolve already moved to the
        trash; ``KeepInTrash`` or ``NotFound`` when another is neither."""
        found = {r.id: r for r in self._store().retrieve([keep, *remove, *apart], with_vectors=with_vectors)}
        if keep not in found:
            if self._already_trashed([keep]):
                raise KeepInTrash(f"the image to keep, {keep}, is in the trash: restore it first")
            raise NotFound(f"no indexed image with id {keep} (the image to keep)")
        already = self._already_trashed([i for i in remove if i not in found])
        missing = [i for i in (*remove, *apart) if i not in found and i not in already]
        if missing:
            raise NotFound(f"no indexed image with id {', '.join(missing)}")
        return found, already

    def _check_duplicates(self, keep: Record, going: list[Record]) -> None:
        """Each image to remove is in the keep's group, or scores at or above the threshold with it right now."""
        if not going:
            return
        graph = DuplicateGraph(self._store(), self.settings.duplicate_threshold)
        group = graph.group_of(keep.id)
        grouped = set(group.ids) if group is not None else set()
        refused = []
        for record in going:
            if record.id in grouped:
                continue
            score = pair_score(keep, record)
            if score is None or score < self.settings.duplicate_threshold:
                shown = "no signature" if score is None else f"score {score:.3f}"
                refused.append(f"{record.id} ({shown})")
        if refused:
            raise NotADuplicate(
                f"not a duplicate of {keep.id} (below the duplicate threshold "
                f"{self.settings.duplicate_threshold} and not in its group): {', '.join(refused)}")

    def _already_trashed(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Images a previous (retried) resolve moved to the trash: reported again, nothing done."""
        if not ids:
            return {}
        entries = self._trash.entries_of(ids)
        return {image: {"id": image, "bucket": e.payload.get("bucket"), "key": e.payload.get("key"),
                        "status": "trashed", "trash_id": e.id, "expires_at": e.payload.get("expires_at")}
                for image, e in entries.items()}

    # -- recommend ------------------------------------------------------------------------------------------

    def recommend(self, request: RecommendRequest) -> dict[str, Any]:
        """Qdrant's recommendation with its default ``average_vector`` strategy: search with
        ``avg(positive) + (avg(positive) - avg(negative))``, the examples themselves excluded."""
        began = time.perf_counter()
        store = self._store()
        pos = [self._example(store, ref) for ref in _unique(request.positive)]
        neg = [self._example(store, ref) for ref in _unique(request.negative)]
        mean_pos = np.mean(np.array([r.vector for r in pos], dtype=np.float32), axis=0)
        query = mean_pos if not neg else 2 * mean_pos - np.mean(np.array([r.vector for r in neg], dtype=np.float32), axis=0)
        norm = float(np.linalg.norm(query))
        if norm == 0.0:
            raise InvalidRequest("the positive and negative examples cancel out")
        hits = store.search((query / norm).tolist(), limit=request.limit, prefix=request.prefix or None,
                            exclude_ids=[r.id for r in pos + neg])
        objects = self._objects()
        similar = self.settings.similar_threshold if request.similar_threshold is None else request.similar_threshold
        results = [result(hit, objects, self.settings.url_ttl, similar) for hit in hits]
        return {"results": results, "model": self._embedder().model_name,
                "took_ms": round((time.perf_counter() - began) * 1000, 1)}

    def _example(self, store: VectorStore, ref: str) -> Record:
        """An example given by id (a UUID) or by key."""
        record: Record | None
        try:
            parsed = point_id(ref)
        except InvalidRequest:
            record = store.find_by_key(ref, bucket=self.settings.images_bucket, with_vector=True)
        else:
            record = store.get(parsed, with_vector=True)
        if record is None or record.vector is None:
            raise NotFound(f"no indexed image with id or key {ref!r}")
        return record
