"""The one module that talks to Qdrant (through qdrant-client).

``QDRANT_URL`` (+ ``QDRANT_API_KEY``) selects a server such as Qdrant Cloud;
without it the embedded local mode stores data at ``QDRANT_PATH``
(``:memory:`` for a throwaway store). The collection is created on first use
with the model's dimension and Cosine distance; an existing collection with
another dimension or distance is an error, never silently reused.
"""

from __future__ import annotations

import logging
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from .config import Settings
from .errors import CollectionMismatch, StoreError, StoreUnavailable
from .scoring import percent_from_score, score_from_cosine

log = logging.getLogger(__name__)
T = TypeVar("T")

# Payload fields with a keyword index: exact-key lookups and "folder" prefix filters.
KEY_FIELD = "key"
DIRS_FIELD = "dirs"


def key_dirs(key: str) -> list[str]:
    """Every folder prefix of a key: ``a/b/c.jpg`` -> ``["a/", "a/b/"]``.

    Stored in the payload so a prefix filter on whole folders is an indexed
    keyword match; Qdrant has no native string-prefix match on keyword fields.
    """
    parts = key.split("/")[:-1]
    return ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]


@dataclass(frozen=True)
class SearchHit:
    id: str
    score: float  # max(0, cosine), in [0, 1]
    percent: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class StoredPoint:
    id: str
    vector: Sequence[float]
    payload: dict[str, Any]


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code is None or exc.status_code >= 500 or exc.status_code == 429
    return isinstance(exc, (ResponseHandlingException, httpx.TransportError, ConnectionError, TimeoutError))


class VectorStore:
    def __init__(self, client: QdrantClient, collection: str, *, dim: int, retries: int = 3) -> None:
        self.client = client
        self.collection = collection
        self.dim = dim
        self.retries = max(0, retries)
        self._ready = False

    @classmethod
    def from_settings(cls, settings: Settings, *, dim: int) -> "VectorStore":
        return cls(make_client(settings), settings.collection, dim=dim, retries=settings.qdrant_retries)

    # -- plumbing -------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` with bounded retries and jittered exponential backoff.

        qdrant-client has no retry policy of its own; this loop is all we need,
        so no retry library is pulled into the Lambda layer for it.
        """
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classified below
                if not _is_transient(exc):
                    if isinstance(exc, UnexpectedResponse):
                        raise StoreError(f"Qdrant {what} failed: HTTP {exc.status_code}: {exc.content!r}") from exc
                    raise
                if attempt >= self.retries:
                    raise StoreUnavailable(f"Qdrant {what} failed after {attempt + 1} attempts: {exc}") from exc
                delay = min(2.0, 0.1 * 2**attempt) * (0.5 + random.random() / 2)
                log.warning("Qdrant %s failed (%s), retry %d in %.2fs", what, exc, attempt + 1, delay)
                time.sleep(delay)
                attempt += 1

    def ensure_collection(self) -> None:
        """Create the collection and payload indexes once, or check the existing one matches."""
        if self._ready:
            return
        exists = self._call("collection_exists", lambda: self.client.collection_exists(self.collection))
        if not exists:
            self._call(
                "create_collection",
                lambda: self.client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(size=self.dim, distance=models.Distance.COSINE),
                ),
            )
            for field in (KEY_FIELD, DIRS_FIELD):
                with warnings.catch_warnings():
                    # Embedded Qdrant warns that it ignores payload indexes; servers use them.
                    warnings.filterwarnings("ignore", "Payload indexes have no effect", UserWarning)
                    self._call(
                        "create_payload_index",
                        lambda field=field: self.client.create_payload_index(
                            self.collection, field, field_schema=models.PayloadSchemaType.KEYWORD
                        ),
                    )
        else:
            info = self._call("get_collection", lambda: self.client.get_collection(self.collection))
            vectors = info.config.params.vectors
            if not isinstance(vectors, models.VectorParams):
                raise CollectionMismatch(
                    f"collection {self.collection!r} uses named vectors; imgsim needs one unnamed vector"
                )
            if vectors.size != self.dim or vectors.distance != models.Distance.COSINE:
                raise CollectionMismatch(
                    f"collection {self.collection!r} has vectors of size {vectors.size} with "
                    f"{vectors.distance.value} distance, but the model needs size {self.dim} with Cosine; "
                    "use another QDRANT_COLLECTION or delete this one"
                )
        self._ready = True

    # -- writes ---------------------------------------------------------------

    def upsert(self, points: Sequence[StoredPoint], *, update_filter: models.Filter | None = None) -> None:
        """``update_filter``: existing points are only overwritten when they match it
        (new ids are always inserted) - a compare-and-set for concurrent writers."""
        if not points:
            return
        self.ensure_collection()
        structs = [
            models.PointStruct(id=p.id, vector=[float(x) for x in p.vector], payload=p.payload) for p in points
        ]
        self._call(
            "upsert",
            lambda: self.client.upsert(self.collection, points=structs, wait=True, update_filter=update_filter),
        )

    def delete(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if not ids:
            return
        self.ensure_collection()
        self._call(
            "delete",
            lambda: self.client.delete(self.collection, points_selector=models.PointIdsList(points=ids), wait=True),
        )

    def delete_matching(self, points_filter: models.Filter) -> None:
        """Delete the points matching a filter (e.g. these ids, only if unchanged since read)."""
        self.ensure_collection()
        self._call(
            "delete",
            lambda: self.client.delete(
                self.collection, points_selector=models.FilterSelector(filter=points_filter), wait=True
            ),
        )

    # -- reads ----------------------------------------------------------------

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[models.Record]:
        self.ensure_collection()
        return self._call(
            "retrieve",
            lambda: self.client.retrieve(self.collection, ids=list(ids), with_payload=True, with_vectors=with_vectors),
        )

    def get(self, point_id: str, *, with_vector: bool = False) -> models.Record | None:
        records = self.retrieve([point_id], with_vectors=with_vector)
        return records[0] if records else None

    def find_by_key(self, key: str, *, bucket: str | None = None, with_vector: bool = False) -> models.Record | None:
        self.ensure_collection()
        must = [models.FieldCondition(key=KEY_FIELD, match=models.MatchValue(value=key))]
        if bucket is not None:
            must.append(models.FieldCondition(key="bucket", match=models.MatchValue(value=bucket)))
        records, _ = self._call(
            "scroll",
            lambda: self.client.scroll(
                self.collection, scroll_filter=models.Filter(must=must), limit=1,
                with_payload=True, with_vectors=with_vector,
            ),
        )
        return records[0] if records else None

    def count(self) -> int:
        self.ensure_collection()
        return self._call("count", lambda: self.client.count(self.collection, exact=True)).count

    def search(
        self,
        vector: Sequence[float],
        *,
        limit: int = 10,
        min_score: float | None = None,
        prefix: str | None = None,
        exclude_ids: Iterable[str] = (),
    ) -> list[SearchHit]:
        """Nearest points, best first, scores mapped to [0, 1] (see ``scoring``).

        ``prefix`` keeps keys that start with it: the folder part is an indexed
        filter; a partial last segment is checked here while paging on.
        """
        self.ensure_collection()
        must: list[models.Condition] = []
        folder = prefix[: prefix.rfind("/") + 1] if prefix else ""
        if folder:
            must.append(models.FieldCondition(key=DIRS_FIELD, match=models.MatchAny(any=[folder])))
        exclude = [str(i) for i in exclude_ids]
        must_not: list[models.Condition] = [models.HasIdCondition(has_id=exclude)] if exclude else []
        query_filter = models.Filter(must=must or None, must_not=must_not or None) if (must or must_not) else None
        needs_post_filter = bool(prefix) and prefix != folder
        page = limit if not needs_post_filter else max(limit * 4, 64)
        hits: list[SearchHit] = []
        offset = 0
        while True:
            response = self._call(
                "query_points",
                lambda: self.client.query_points(
                    self.collection, query=[float(x) for x in vector], limit=page, offset=offset,
                    query_filter=query_filter, score_threshold=min_score if min_score else None,
                    with_payload=True,
                ),
            )
            for point in response.points:
                payload = point.payload or {}
                if needs_post_filter and not str(payload.get(KEY_FIELD, "")).startswith(prefix):
                    continue
                score = score_from_cosine(point.score)
                hits.append(SearchHit(str(point.id), score, percent_from_score(score), payload))
                if len(hits) == limit:
                    return hits
            if len(response.points) < page:
                return hits
            offset += page

    def close(self) -> None:
        self.client.close()


def make_client(settings: Settings) -> QdrantClient:
    if settings.qdrant_url:
        return QdrantClient(
            url=settings.qdrant_url,
            api_key=settings.qdrant_api_key,
            timeout=max(1, round(settings.qdrant_timeout)),
            # The version probe is one more blocking round trip on every cold start
            # (and a warning when the server is briefly unreachable); skip it.
            check_compatibility=False,
        )
    if settings.qdrant_path == ":memory:":
        return QdrantClient(location=":memory:")
    os.makedirs(settings.qdrant_path, exist_ok=True)
    return QdrantClient(path=settings.qdrant_path)
