"""Search, compare and health: the search API's read operations, in imgsim's terms.

Requests come as value objects (``SearchRequest``), results as the JSON documents the API returns; refusals are
imgsim's errors (``InvalidRequest``, ``NotFound``, ``StoreUnavailable``, ``ImageError``...), never HTTP statuses:
``imgsim.http.errors`` maps them.

Search by a region: a ``Box`` on the query searches with the embedding of that part of the query image only, cut
from the decoded pixels before the reduction (``imgsim.decode``), as if the image had been cropped to it. An indexed
image's region needs its pixels: its object is read from S3 (an image indexed from a local file has none: refused).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..decode import Region
from ..dedupe import LINK_ETAGS_FIELD, LINKS_FIELD
from ..errors import InvalidRequest, NotFound, Unavailable
from ..scoring import percent_from_score, score_from_cosine
from ..settings import ApiSettings
from ..store import FieldEquals, FieldRange, Record, SearchHit, VectorStore, Where
from .common import point_id, result
from .ports import ImageEmbedder, ObjectStorage, PhaseTimer

if TYPE_CHECKING:
    from ..deployment import Layout

# collapse=true reads up to this many hits to fill a page after folding duplicates away.
COLLAPSE_FETCH_MAX = 1000


# How far past an edge a box may reach and still count as on it: what rounding its fractions to decimals leaves.
BOX_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Box:
    """A region of the query image: its top left corner (``x``, ``y``) and size (``w``, ``h``), each a fraction
    (0..1) of the width or height of the image as a viewer shows it (EXIF orientation applied).

    Fractions rather than pixels: the same box fits every form of the query (new bytes, an indexed image whose
    pixel size the caller may not know) and every size of the same picture, and a box dragged on a thumbnail or a
    page maps to it directly; AWS Rekognition's BoundingBox and Google Vision's normalized vertices are the same.
    A box that is empty, not a number, or runs past an edge is ``InvalidRequest`` naming the problem."""

    x: float
    y: float
    w: float
    h: float

    def __post_init__(self) -> None:
        values = {"x": self.x, "y": self.y, "w": self.w, "h": self.h}
        for name, value in values.items():
            if not math.isfinite(value):
                raise InvalidRequest(f"box: {name} is {value}, not a number")
        if any(value > 1 + BOX_TOLERANCE for value in values.values()):
            raise InvalidRequest(
                f"box {self}: x, y, w and h are fractions (0..1) of the image's width and height, not pixels "
                "(e.g. 0.25,0.25,0.5,0.5 is the middle quarter)")
        if self.x < 0 or self.y < 0:
            raise InvalidRequest(f"box {self}: x and y (its top left corner) must be at least 0")
        if self.w <= 0 or self.h <= 0:
            raise InvalidRequest(f"box {self} is empty: w and h (its width and height) must be greater than 0")
        if self.x + self.w > 1 + BOX_TOLERANCE:
            raise InvalidRequest(f"box {self} runs past the image's right edge: x + w = {self.x + self.w:g} > 1")
        if self.y + self.h > 1 + BOX_TOLERANCE:
            raise InvalidRequest(f"box {self} runs past the image's bottom edge: y + h = {self.y + self.h:g} > 1")

    def __str__(self) -> str:
        """"x,y,w,h" as the API's ``box`` parameter takes it (plain decimals: no exponent)."""
        return ",".join(_decimal(value) for value in (self.x, self.y, self.w, self.h))

    @property
    def region(self) -> Region:
        """The box for the decoder (``imgsim.decode.Region``), within the image (the tolerance clipped off)."""
        return self.x, self.y, min(self.w, 1.0 - self.x), min(self.h, 1.0 - self.y)


def _decimal(value: float) -> str:
    return f"{value:.10f}".rstrip("0").rstrip(".") or "0"


@dataclass(frozen=True)
class ImageQuery:
    """What a search searches with: new image bytes, or an indexed image by id or by key (exactly one); ``box``:
    only that region of it."""

    image: bytes | None = None
    point_id: str | None = None
    key: str | None = None
    box: Box | None = None

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
        ``timer``: embed (a new image, or a box), lookup (an indexed image), fetch (its object, for a box), qdrant,
        presign. An indexed image is never among its own results."""
        timer = timer or _Elapsed()
        embedder = self._embedder()
        store = self._store()
        query = request.query
        exclude: list[str] = []
        vector: Sequence[float]
        mark = time.perf_counter()
        if query.image is not None:
            vector = self._embed(embedder, query.image, query.box)
            mark = timer.add("embed", mark)
        else:
            # With a box the stored vector (of the whole image) is no use: the region is embedded from the object.
            whole = query.box is None
            if query.point_id is not None:
                record = store.get(point_id(query.point_id), with_vector=whole)
                missing = f"no indexed image with id {query.point_id}"
            else:
                record = store.find_by_key(str(query.key), bucket=self.settings.images_bucket, with_vector=whole)
                missing = f"no indexed image with key {query.key!r}"
            mark = timer.add("lookup", mark)
            if record is None:
                raise NotFound(missing)
            exclude.append(str(record.id))
            if query.box is None:
                if record.vector is None:
                    raise NotFound(missing)
                vector = record.vector
            else:
                data = self._object_of(record, embedder.max_image_bytes)
                mark = timer.add("fetch", mark)
                vector = self._embed(embedder, data, query.box)
                mark = timer.add("embed", mark)
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

    @staticmethod
    def _embed(embedder: ImageEmbedder, data: bytes, box: Box | None) -> list[float]:
        if box is None:
            whole: list[float] = embedder.embed(data).tolist()
            return whole
        region: list[float] = embedder.embed_decoded([embedder.decode(data, box.region)])[0].tolist()
        return region

    def _object_of(self, record: Record, max_bytes: int) -> bytes:
        """The bytes of an indexed image's S3 object (at most ``max_bytes`` + 1: the decoder refuses more), to cut a
        box from. As stored now: the picture the image's URL shows, even if replaced since it was indexed."""
        payload = record.payload or {}
        bucket, key = payload.get("bucket"), payload.get("key")
        if not bucket or not key:
            raise InvalidRequest(
                f"image {record.id} was indexed from a local file ({key}), which the API cannot read, so it has no "
                "pixels to cut a box from; send the image itself (raw, multipart or JSON base64) with the box")
        if self.settings.images_bucket and bucket != self.settings.images_bucket:
            raise InvalidRequest(f"image {record.id} is in bucket {bucket!r}, which this API does not read; send the "
                                 "image itself with the box")
        data = self._objects().get(str(bucket), str(key), max_bytes=max_bytes)
        if data is None:
            raise NotFound(f"image {record.id}'s object s3://{bucket}/{key} is gone (deleted since it was indexed)")
        return data

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
        """The alias clients name, the collection behind it, a model switch in progress, and whether Qdrant answers
        (a count); what could be learnt before Qdrant failed, with the failure (a cold start during an outage cannot
        even resolve the alias). No count is shown: /health is public, and the total would let anyone watch every
        tenant's uploads and deletes (``visible_images`` is a caller's own count, GET /me)."""
        details: dict[str, Any] = {}
        try:
            store = self._store()
            details.update(collection=store.collection, model=self._embedder().model_name)
            layout = self._layout() if self._layout else None
            if layout is not None:
                details.update(collection=layout.alias, serving=layout.serving.collection)
                if layout.building is not None:
                    details["building"] = {"collection": layout.building.collection, "model": layout.building.model}
            store.count()  # the probe: Qdrant answers a query on the collection
        except Unavailable as exc:
            return Health(details, exc)
        return Health(details)

    def visible_images(self) -> int | None:
        """How many images this service's caller sees (its tenant's, through the scoped store); None when Qdrant
        cannot be reached: GET /me answers who the caller is without the store."""
        try:
            return self._store().count()
        except Unavailable:
            return None
