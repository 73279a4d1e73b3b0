"""Search, compare and health: the search API's read operations, in imgsim's terms.

Requests come as value objects (``SearchRequest``), results as the JSON documents the API returns; refusals are
imgsim's errors (``InvalidRequest``, ``NotFound``, ``StoreUnavailable``, ``ImageError``...), never HTTP statuses:
``imgsim.http.errors`` maps them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..dedupe import LINK_ETAGS_FIELD, LINKS_FIELD
from ..errors import InvalidRequest, NotFound, Unavailable
from ..scoring import percent_from_score, score_from_cosine
from ..settings import ApiSettings
from ..store import FieldEquals, FieldRange, SearchHit, VectorStore, Where
from .common import point_id, result
from .ports import ImageEmbedder, ObjectStorage, PhaseTimer

if TYPE_CHECKING:
    from ..deployment import Layout

# collapse=true reads up to this many hits to fill a page after folding duplicates away.
COLLAPSE_FETCH_MAX = 1000


@dataclass(frozen=True)
class ImageQuery:
    """What a search searches with: new image bytes, or an indexed image by id or by key (exactly one)."""

    image: bytes | None = None
    point_id: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if sum(value is not None for value in (self.image, self.point_id, self.key)) != 1:
            raise InvalidRequest("give exactly one of 'image' (base64), 'id' or 'key'")


@dataclass(frozen=True)
class SearchFilters:
    """Filters beside ``prefix``: all indexed payload fields, applied inside Qdrant."""

    min_width: int | None = None
    min_height: int | None = None
    content_type: str | None = None
    indexed_after: str | None = None  # RFC 3339, normalized to UTC ("...Z")
    indexed_before: str | None = None

    def where(self) -> Where | None:
        must: list[Any] = []
        if self.min_width:
            must.append(FieldRange("width", gte=self.min_width))
        if self.min_height:
            must.append(FieldRange("height", gte=self.min_height))
        if self.content_type:
            must.append(FieldEquals("content_type", self.content_type))
        if self.indexed_after or self.indexed_before:
            must.append(FieldRange("indexed_at", gte=self.indexed_after, lte=self.indexed_before, datetime=True))
        return Where(must=tuple(must)) if must else None


@dataclass(frozen=True)
class SearchRequest:
    """One search: the query image, how many results from where (``offset``, paging by ``next_offset``), and which.

    ``collapse`` folds each hit recorded as a duplicate into the best-ranked hit of its picture;
    ``similar_threshold`` (None: ``ApiSettings.similar_threshold``) marks results as ``similar``.
    """

    query: ImageQuery
    limit: int = 10
    min_score: float | None = None
    prefix: str | None = None
    filters: SearchFilters = field(default_factory=SearchFilters)
    offset: int = 0
    collapse: bool = False
    similar_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.limit < 1 or self.offset < 0:
            raise InvalidRequest("'limit' must be at least 1 and 'offset' at least 0")


@dataclass(frozen=True)
class Health:
    """What GET /health reports: the served collection, model and point count, or why the store is unavailable."""

    details: dict[str, Any]
    problem: Unavailable | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


class _Elapsed:
    """The PhaseTimer of a caller that wants no phases: only the total (for ``took_ms``)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def add(self, phase: str, since: float) -> float:
        return time.perf_counter()

    def total_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000.0


def collapse_duplicates(hits: list[SearchHit]) -> tuple[list[SearchHit], dict[str, int]]:
    """Fold each hit that is a duplicate of a better-ranked hit (a duplicate link between the two holds, see
    ``imgsim.dedupe``) into that hit. {kept id: how many were folded into it}."""
    kept: list[SearchHit] = []
    folded: dict[str, int] = {}
    for hit in hits:
        holder = next((k for k in kept if _linked(hit, k) or _linked(k, hit)), None)
        if holder is not None:
            folded[holder.id] = folded.get(holder.id, 0) + 1
            continue
        kept.append(hit)
    return kept, folded


def _linked(a: SearchHit, b: SearchHit) -> bool:
    """``a`` wrote a link to ``b`` as it is now (the same ETag)."""
    etags = a.payload.get(LINK_ETAGS_FIELD) or {}
    return b.id in (a.payload.get(LINKS_FIELD) or ()) and (etags.get(b.id) or None) == (b.payload.get("etag") or None)


class SearchService:
    """Search, compare, health. The store and embedder come from callables: the served collection (and its model)
    can change during a model switch (``imgsim.deployment``), so they are asked for on each request."""

    def __init__(
        self,
        settings: ApiSettings,
        *,
        embedder: Callable[[], ImageEmbedder],
        store: Callable[[], VectorStore],
        objects: Callable[[], ObjectStorage],
        layout: Callable[[], Layout] | None = None,
    ) -> None:
        """``layout``: the deployment's collections (``imgsim.deployment``), for ``health``."""
        self.settings = settings
        self._embedder = embedder
        self._store = store
        self._objects = objects
        self._layout = layout

    def search(self, request: SearchRequest, timer: PhaseTimer | None = None) -> dict[str, Any]:
        """Results best first: ``{"results", "took_ms", "model", "offset", "next_offset"}``. Phases reported to
        ``timer``: embed (a new image) or lookup (an indexed one), qdrant, presign."""
        timer = timer or _Elapsed()
        embedder = self._embedder()
        store = self._store()
        query = request.query
        exclude: list[str] = []
        vector: Sequence[float]
        mark = time.perf_counter()
        if query.image is not None:
            vector = embedder.embed(query.image).tolist()
            mark = timer.add("embed", mark)
        else:
            if query.point_id is not None:
                record = store.get(point_id(query.point_id), with_vector=True)
                missing = f"no indexed image with id {query.point_id}"
            else:
                record = store.find_by_key(str(query.key), bucket=self.settings.images_bucket, with_vector=True)
                missing = f"no indexed image with key {query.key!r}"
            mark = timer.add("lookup", mark)
            if record is None or record.vector is None:
                raise NotFound(missing)
            vector = record.vector
            exclude.append(str(record.id))
        # Paging by offset, and collapsing (which folds some hits away), read further than the page itself.
        wanted = request.offset + request.limit
        fetch = min(wanted * 3 + 10, COLLAPSE_FETCH_MAX) if request.collapse else wanted
        hits = store.search(vector, limit=fetch, min_score=request.min_score, prefix=request.prefix or None,
                            exclude_ids=exclude, where=request.filters.where())
        mark = timer.add("qdrant", mark)
        folded: dict[str, int] = {}
        if request.collapse:
            hits, folded = collapse_duplicates(hits)
        objects = self._objects()
        similar = self.settings.similar_threshold if request.similar_threshold is None else request.similar_threshold
        results = [result(hit, objects, self.settings.url_ttl, similar) for hit in hits[request.offset:wanted]]
        if request.collapse:
            for item in results:
                item["duplicates"] = folded.get(item["id"], 0)
        timer.add("presign", mark)
        return {"results": results, "took_ms": round(timer.total_ms(), 1), "model": embedder.model_name,
                "offset": request.offset, "next_offset": wanted if len(results) == request.limit else None}

    def compare(self, a: bytes, b: bytes, timer: PhaseTimer | None = None) -> dict[str, Any]:
        """Similarity of two images: ``{"score", "percent", "model", "took_ms"}``."""
        timer = timer or _Elapsed()
        embedder = self._embedder()
        mark = time.perf_counter()
        vectors = embedder.embed_decoded([embedder.decode(a), embedder.decode(b)])
        timer.add("embed", mark)
        score = score_from_cosine(float(vectors[0] @ vectors[1]))
        return {"score": round(score, 6), "percent": percent_from_score(score), "model": embedder.model_name,
                "took_ms": round(timer.total_ms(), 1)}

    def health(self) -> Health:
        """The alias clients name, the collection behind it, a model switch in progress, and the point count; what
        could be learnt before Qdrant failed, with the failure (a cold start during an outage cannot even resolve
        the alias)."""
        details: dict[str, Any] = {}
        try:
            store = self._store()
            details.update(collection=store.collection, model=self._embedder().model_name)
            layout = self._layout() if self._layout else None
            if layout is not None:
                details.update(collection=layout.alias, serving=layout.serving.collection)
                if layout.building is not None:
                    details["building"] = {"collection": layout.building.collection, "model": layout.building.model}
            details["points"] = store.count()
        except Unavailable as exc:
            return Health(details, exc)
        return Health(details)
