"""The API's curation operations: duplicate groups, resolving them, and "more like this" recommendations.

HTTP concerns (query parameters, status codes of routes) live with the routes in
functions/search/curation_routes.py; this raises ``ApiError`` for bad input, like ``imgsim.api``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .api import ApiConfig, ApiError, json_object, parse_point_id, presigned_get_url
from .dedupe import DuplicateIndex
from .duplicates import PAGE_LIMIT_MAX, DuplicateGroups, record_not_duplicates
from .store import Record

RECOMMEND_MAX_EXAMPLES = 20


def id_list(obj: dict[str, Any], name: str, *, required: bool = False) -> list[str]:
    value = obj.get(name)
    if value is None:
        if required:
            raise ApiError(400, "bad_parameter", f"{name!r} must be given")
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ApiError(400, "bad_parameter", f"{name!r} must be a list of image ids or keys (strings)")
    if len(value) > RECOMMEND_MAX_EXAMPLES * 5:
        raise ApiError(400, "bad_parameter", f"{name!r} has more than {RECOMMEND_MAX_EXAMPLES * 5} entries")
    return list(dict.fromkeys(value))


class CurationService:
    def __init__(self, config: ApiConfig, *, embedder: Callable[[], Any], store: Callable[[], Any],
                 s3: Callable[[], Any], duplicate_threshold: float) -> None:
        self.config = config
        self._embedder = embedder
        self._store = store
        self._s3 = s3
        self.duplicate_threshold = duplicate_threshold

    def _groups(self) -> DuplicateGroups:
        store = self._store()
        return DuplicateGroups(store, DuplicateIndex(store, self._embedder().dim))

    # -- duplicates -----------------------------------------------------------------------------------------

    def duplicates(self, *, threshold: float | None, prefix: str | None, limit: int,
                   cursor: str | None) -> dict[str, Any]:
        threshold = self.duplicate_threshold if threshold is None else threshold
        groups, next_cursor = self._groups().page(
            threshold=threshold, prefix=prefix or None, limit=min(limit, PAGE_LIMIT_MAX),
            cursor=parse_point_id(cursor) if cursor else None,
        )
        s3 = self._s3()
        documents = []
        for group in groups:
            doc = group.as_json()
            for member, (record, _) in zip(doc["members"], group.members, strict=True):
                # For the page's thumbnails (beyond the CLI's shape): a presigned GET, as search results have.
                member["url"] = presigned_get_url(s3, record.payload.get("bucket"), record.payload.get("key"),
                                                  self.config.url_ttl)
            documents.append(doc)
        return {"threshold": threshold, "groups": documents, "next_cursor": next_cursor}

    def resolve(self, body: bytes) -> dict[str, Any]:
        """``{"keep": id, "remove": [ids], "not_duplicates": [ids]}``: delete the removed images' objects (the
        indexer then removes their points) and remember the pairs that are not duplicates."""
        obj = json_object(body)
        keep = obj.get("keep")
        if not isinstance(keep, str) or not keep:
            raise ApiError(400, "bad_parameter", "'keep' must be an image id")
        keep = parse_point_id(keep)
        remove = [parse_point_id(v) for v in id_list(obj, "remove")]
        apart = [parse_point_id(v) for v in id_list(obj, "not_duplicates")]
        if not remove and not apart:
            raise ApiError(400, "bad_parameter", "give 'remove' and/or 'not_duplicates' (lists of image ids)")
        if keep in remove or keep in apart or set(remove) & set(apart):
            raise ApiError(400, "bad_parameter", "an image can only be kept, removed or marked not a duplicate")
        store = self._store()
        found = {r.id: r for r in store.retrieve([keep, *remove, *apart])}
        missing = [i for i in (keep, *remove, *apart) if i not in found]
        if missing:
            raise ApiError(404, "not_found", f"no indexed image with id {', '.join(missing)}")
        for point_id in remove:
            self._check_deletable(found[point_id])
        s3 = self._s3()
        removed = []
        for point_id in remove:
            payload = found[point_id].payload
            s3.delete_object(Bucket=payload["bucket"], Key=payload["key"])
            removed.append({"id": point_id, "key": payload["key"], "status": "deleting"})
        if apart:
            record_not_duplicates(store, keep, apart)
        return {"keep": keep, "removed": removed, "not_duplicates": apart}

    def _check_deletable(self, record: Record) -> None:
        bucket, key = record.payload.get("bucket"), record.payload.get("key")
        if not bucket or not key:
            raise ApiError(409, "not_deletable", f"image {record.id} was indexed from a local file, not an S3 object")
        if self.config.images_bucket and bucket != self.config.images_bucket:
            raise ApiError(409, "not_deletable", f"image {record.id} is in bucket {bucket!r}, not managed by this API")

    # -- recommend ------------------------------------------------------------------------------------------

    def recommend(self, body: bytes) -> dict[str, Any]:
        """Qdrant's recommendation with its default ``average_vector`` strategy: search with
        ``avg(positive) + (avg(positive) - avg(negative))``, the examples themselves excluded."""
        began = time.perf_counter()
        obj = json_object(body)
        positive, negative = id_list(obj, "positive", required=True), id_list(obj, "negative")
        if not positive:
            raise ApiError(400, "bad_parameter", "'positive' needs at least one image id or key")
        limit = obj.get("limit", 10)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100:
            raise ApiError(400, "bad_parameter", "'limit' must be an integer from 1 to 100")
        similar = obj.get("similar_threshold", self.config.similar_threshold)
        if not isinstance(similar, (int, float)) or isinstance(similar, bool) or not 0 <= similar <= 1:
            raise ApiError(400, "bad_parameter", "'similar_threshold' must be a number from 0 to 1")
        prefix = obj.get("prefix")
        if prefix is not None and (not isinstance(prefix, str) or len(prefix) > 1024):
            raise ApiError(400, "bad_parameter", "'prefix' must be a string of at most 1024 characters")
        store = self._store()
        pos = [self._example(store, ref) for ref in positive]
        neg = [self._example(store, ref) for ref in negative]
        mean_pos = np.mean(np.array([r.vector for r in pos], dtype=np.float32), axis=0)
        query = mean_pos if not neg else 2 * mean_pos - np.mean(np.array([r.vector for r in neg], dtype=np.float32), axis=0)
        norm = float(np.linalg.norm(query))
        if norm == 0.0:
            raise ApiError(400, "bad_parameter", "the positive and negative examples cancel out")
        hits = store.search((query / norm).tolist(), limit=limit, prefix=prefix or None,
                            exclude_ids=[r.id for r in pos + neg])
        s3 = self._s3()
        results = []
        for hit in hits:
            item: dict[str, Any] = {"id": hit.id, "score": round(hit.score, 6), "percent": hit.percent,
                                    **{f: hit.payload.get(f) for f in ("bucket", "key", "width", "height",
                                                                       "content_type", "size", "indexed_at")}}
            item["url"] = presigned_get_url(s3, hit.payload.get("bucket"), hit.payload.get("key"), self.config.url_ttl)
            item["similar"] = hit.score >= similar
            results.append(item)
        return {"results": results, "model": self._embedder().model_name,
                "took_ms": round((time.perf_counter() - began) * 1000, 1)}

    def _example(self, store: Any, ref: str) -> Record:
        """An example given by id (a UUID) or by key."""
        record: Record | None
        try:
            point_id = parse_point_id(ref)
        except ApiError:
            record = store.find_by_key(ref, bucket=self.config.images_bucket, with_vector=True)
        else:
            record = store.get(point_id, with_vector=True)
        if record is None or record.vector is None:
            raise ApiError(404, "not_found", f"no indexed image with id or key {ref!r}")
        return record
