"""The one store interface imgsim codes against, in imgsim's own types.

Backends implement a handful of primitives (``_create_or_check``, ``_upsert``,
``_delete``, ``_retrieve``, ``_scroll``, ``_count``, ``_query``); everything a
caller needs on top of them (search with folder and partial-prefix filters,
lookups by key, paging) is written once here, so both backends behave the same
and one contract test suite checks both (tests/store/test_contract.py).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from ..scoring import percent_from_score, score_from_cosine
from .types import (
    DIRS_FIELD,
    KEY_FIELD,
    FieldIn,
    IdIn,
    PayloadIndex,
    Record,
    SearchHit,
    StoredPoint,
    Where,
    key_is,
    where_all,
)

QUANTIZATION_CHOICES = ("none", "int8", "binary")


@dataclass(frozen=True)
class StorageOptions:
    """How a collection keeps its vectors (``IMGSIM_QUANTIZATION`` and friends, see docs/performance.md "Memory and quantization").

    ``quantization``: ``none`` keeps float32 vectors in RAM; ``int8`` (scalar, 4x smaller) or
    ``binary`` (32x smaller) keep a compressed copy in RAM for the HNSW search and the float
    originals on disk (``originals_on_disk``), re-scoring the best ``limit * oversampling``
    candidates with the originals (``rescore``).
    """

    quantization: str = "int8"
    originals_on_disk: bool = True
    oversampling: float = 2.0
    rescore: bool = True
    hnsw_ef: int | None = None
    # False: search the float originals only. For a process that opens the store for one search
    # (`imgsim search`): Edge reads the whole quantized copy on its first quantized search (78 ms at
    # 20k points, 23 ms without), while a long-lived process wants it.
    search_quantized: bool = True

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATION_CHOICES:
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATION_CHOICES)}, got {self.quantization!r}")

    @property
    def quantized(self) -> bool:
        return self.quantization != "none"


WRITE_ORDERINGS = ("weak", "medium", "strong")
READ_CONSISTENCIES = ("majority", "quorum", "all")


@dataclass(frozen=True)
class ClusterOptions:
    """How a collection lives on a multi-node Qdrant (docs/operations.md "Qdrant: collections and clusters"); the embedded engine,
    one process on one folder, has no use for them.

    Creation (``None``: the server's default, e.g. Qdrant Cloud's collection defaults): ``shard_number``
    is fixed at creation (at least 2 per node: the cluster can grow without resharding),
    ``replication_factor`` copies of each shard (2 for production: a node lost loses nothing and
    stops nothing), ``write_consistency_factor`` replicas that must acknowledge a write,
    ``on_disk_payload`` keeps payloads on disk (RAM for vectors only).

    Every request: ``write_ordering`` for writes and ``read_consistency`` for the indexer's read-backs.
    The indexer's ordering protocol (imgsim.ordering) is a read, then a conditional write (compare-and-
    set on the stored sequencer/ETag): on replicated shards both must see one order of writes.
    ``medium`` makes every replica apply a point's writes in the order its shard's (elected) leader
    gives them and stays writable when a node is lost; ``strong`` (a fixed leader) would stop writes
    when that node is down; ``weak`` (Qdrant's default) lets replicas apply concurrent writes in
    different orders. Read-backs ask a ``majority`` of replicas; searches use the default (the first
    replica to answer: a search a moment stale is harmless).
    """

    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None
    on_disk_payload: bool | None = None
    write_ordering: str = "medium"
    read_consistency: str = "majority"

    def __post_init__(self) -> None:
        if self.write_ordering not in WRITE_ORDERINGS:
            raise ValueError(f"write ordering must be one of {', '.join(WRITE_ORDERINGS)}, got {self.write_ordering!r}")
        if self.read_consistency not in READ_CONSISTENCIES:
            raise ValueError(f"read consistency must be one of {', '.join(READ_CONSISTENCIES)}, "
                             f"got {self.read_consistency!r}")
        for name in ("shard_number", "replication_factor", "write_consistency_factor"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if (self.write_consistency_factor or 1) > (self.replication_factor or 1):
            raise ValueError(
                f"write_consistency_factor {self.write_consistency_factor} is more than replication_factor "
                f"{self.replication_factor or 1}: no write could ever be acknowledged")


@dataclass(frozen=True)
class ScoredRecord:
    id: str
    score: float  # raw cosine from the engine
    payload: dict[str, Any]


class VectorStore(ABC):
    """One collection of unit vectors with payloads, Cosine distance."""

    backend = "abstract"

    def __init__(self, collection: str, *, dim: int, options: StorageOptions | None = None) -> None:
        self.collection = collection
        self.dim = dim
        self.options = options or StorageOptions()
        self._ready = False
        self._ready_lock = threading.Lock()

    # -- primitives a backend implements --------------------------------------------------------------------

    @abstractmethod
    def _create_or_check(self) -> None:
        """Create the collection with its payload indexes, or raise CollectionMismatch for a wrong one."""

    @abstractmethod
    def _upsert(self, points: Sequence[StoredPoint], only_if: Where | None) -> None: ...

    @abstractmethod
    def _delete(self, selector: IdIn | Where) -> None: ...

    @abstractmethod
    def _set_fields(self, where: Where, fields: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def _retrieve(self, ids: Sequence[str], with_vectors: bool) -> list[Record]: ...

    @abstractmethod
    def _scroll(
        self, where: Where | None, limit: int, offset: str | None, with_vectors: bool, fields: Sequence[str] | None
    ) -> tuple[list[Record], str | None]: ...

    @abstractmethod
    def _count(self, where: Where | None) -> int: ...

    @abstractmethod
    def _query(
        self, vector: Sequence[float], limit: int, offset: int, where: Where | None, score_threshold: float | None
    ) -> list[ScoredRecord]: ...

    def _query_batch(self, requests: Sequence[tuple[Sequence[float], int, Where | None]], score_threshold: float | None,
                     fields: Sequence[str] | None) -> list[list[ScoredRecord]]:
        """Several nearest-neighbour queries at once; backends override it with one engine call."""
        found = [self._query(vector, limit, 0, where, score_threshold) for vector, limit, where in requests]
        if fields is None:
            return found
        return [[ScoredRecord(r.id, r.score, {k: v for k, v in r.payload.items() if k in fields}) for r in rs]
                for rs in found]

    @abstractmethod
    def companion(self, suffix: str, *, dim: int, options: StorageOptions | None = None) -> VectorStore:
        """Another collection ``<collection><suffix>`` on the same connection (e.g. tombstones), unquantized."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives, for messages: a URL or a folder."""

    def optimize(self) -> None:
        """Build what makes searches fast (HNSW, quantized copies) now. Servers do it on their own."""

    def unindexed_count(self) -> int:
        """Points that searches still scan one by one (0 on a server, which indexes in the background)."""
        return 0

    @abstractmethod
    def payload_indexes(self) -> dict[str, PayloadIndex]:
        """The collection's payload indexes as the engine reports them (what ``INDEXED_FIELDS`` asked for)."""

    # -- the interface --------------------------------------------------------------------------------------

    def ensure_collection(self) -> None:
        """Create the collection and payload indexes once, or check the existing one matches."""
        if self._ready:
            return
        with self._ready_lock:
            if not self._ready:
                self._create_or_check()
                self._ready = True

    def upsert(self, points: Sequence[StoredPoint], *, only_if: Where | None = None) -> None:
        """Insert or overwrite points. ``only_if``: existing points are only overwritten when they
        match it (new ids are always inserted) - a compare-and-set for concurrent writers."""
        if not points:
            return
        self.ensure_collection()
        self._upsert(points, only_if)

    def set_fields(self, where: Where, fields: Mapping[str, Any]) -> None:
        """Set these payload fields on the existing points matching ``where`` (other fields are kept; a missing
        point is never created, unlike a conditional upsert): ``where`` with an id and an unchanged ETag is a
        compare-and-set on one field group, e.g. an image's duplicate links written after the image."""
        if not where:
            raise ValueError("set_fields needs a non-empty filter (it would change every point)")
        if fields:
            self.ensure_collection()
            self._set_fields(where, fields)

    def delete(self, ids: Iterable[str]) -> None:
        ids = [str(i) for i in ids]
        if ids:
            self.ensure_collection()
            self._delete(IdIn(tuple(ids)))

    def delete_where(self, where: Where) -> None:
        """Delete the points matching a filter (e.g. these ids, only if unchanged since read)."""
        if not where:
            raise ValueError("delete_where needs a non-empty filter (it would delete everything)")
        self.ensure_collection()
        self._delete(where)

    def retrieve(self, ids: Sequence[str], *, with_vectors: bool = False) -> list[Record]:
        if not ids:
            return []
        self.ensure_collection()
        return self._retrieve([str(i) for i in ids], with_vectors)

    def get(self, point_id: str, *, with_vector: bool = False) -> Record | None:
        records = self.retrieve([point_id], with_vectors=with_vector)
        return records[0] if records else None

    def find_by_key(self, key: str, *, bucket: str | None = None, with_vector: bool = False) -> Record | None:
        records, _ = self.scroll(where=key_is(key, bucket), limit=1, with_vectors=with_vector)
        return records[0] if records else None

    def scroll(
        self,
        *,
        where: Where | None = None,
        limit: int = 256,
        offset: str | None = None,
        with_vectors: bool = False,
        fields: Sequence[str] | None = None,
    ) -> tuple[list[Record], str | None]:
        """One page of points in id order and the offset of the next page (None: the last page).

        ``fields`` limits the payload to those keys (None: all of it)."""
        self.ensure_collection()
        return self._scroll(where, max(1, limit), offset, with_vectors, fields)

    def count(self, where: Where | None = None) -> int:
        self.ensure_collection()
        return self._count(where)

    def search(
        self,
        vector: Sequence[float],
        *,
        limit: int = 10,
        min_score: float | None = None,
        prefix: str | None = None,
        exclude_ids: Iterable[str] = (),
        where: Where | None = None,
    ) -> list[SearchHit]:
        """Nearest points, best first, scores mapped to [0, 1] (see ``scoring``).

        ``prefix`` keeps keys that start with it: the folder part is an indexed
        filter; a partial last segment is checked here while paging on.
        """
        self.ensure_collection()
        folder = prefix[: prefix.rfind("/") + 1] if prefix else ""
        exclude = tuple(str(i) for i in exclude_ids)
        query_filter = where_all(
            Where(must=(FieldIn(DIRS_FIELD, (folder,)),)) if folder else None,
            Where(must_not=(IdIn(exclude),)) if exclude else None,
            where,
        )
        needs_post_filter = bool(prefix) and prefix != folder
        page = limit if not needs_post_filter else max(limit * 4, 64)
        threshold = min_score if min_score else None
        hits: list[SearchHit] = []
        offset = 0
        while True:
            found = self._query(floats(vector), page, offset, query_filter, threshold)
            for point in found:
                if needs_post_filter and not str(point.payload.get(KEY_FIELD, "")).startswith(prefix or ""):
                    continue
                score = score_from_cosine(point.score)
                hits.append(SearchHit(point.id, score, percent_from_score(score), point.payload))
                if len(hits) == limit:
                    return hits
            if len(found) < page:
                return hits
            offset += page

    def search_batch(self, requests: Sequence[tuple[Sequence[float], int, Where | None]], *,
                     min_score: float | None = None, fields: Sequence[str] | None = None) -> list[list[SearchHit]]:
        """``(vector, limit, where)`` queries in one round trip (one planned batch on Qdrant Edge, one
        ``query_batch_points`` call on a server): the duplicate check's candidate searches, a batch's at once.
        ``min_score``: hits below it are not returned (the engine stops there); ``fields``: only these payload
        keys (None: all of it): the duplicate check reads 3 of a hit's ~15, and payloads are read from disk."""
        self.ensure_collection()
        found = self._query_batch([(floats(v), limit, where) for v, limit, where in requests],
                                  min_score if min_score else None, fields)
        out = []
        for points in found:
            hits = []
            for point in points:
                score = score_from_cosine(point.score)
                hits.append(SearchHit(point.id, score, percent_from_score(score), point.payload))
            out.append(hits)
        return out

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def floats(vector: Sequence[float]) -> list[float]:
    """A vector as the engines take it: a list of Python floats, converted in C (numpy) rather than one float() per
    value (1,024 of them: ~0.1 ms a vector, a tenth of the duplicate check's search per image)."""
    converted: list[float] = np.asarray(vector, dtype=np.float64).tolist()
    return converted


COMPANION_SUFFIXES = ("_tombstones", "_trash", "_locks", "_dedupe")  # belong to a collection (indexing, trash; "_dedupe": before issue 19)


class Catalog(ABC):
    """The collections and aliases of one Qdrant (a server, or an embedded folder).

    What a model switch needs (imgsim.deployment): a collection per model behind an alias that
    the functions read and write through; the switch of the alias is one atomic operation.
    Stores opened here share the catalog's connection; ``close`` closes them all.
    """

    @abstractmethod
    def open_store(self, collection: str, *, dim: int, options: StorageOptions | None = None) -> VectorStore: ...

    @abstractmethod
    def open_owned(self, collection: str, *, dim: int, options: StorageOptions | None = None) -> VectorStore:
        """``open_store``, for a store that is the catalog's only user: closing it closes the connection."""

    @abstractmethod
    def alias_target(self, alias: str) -> str | None:
        """The collection ``alias`` points at, or None when it is not an alias."""

    @abstractmethod
    def exists(self, collection: str) -> bool:
        """A real collection of that name (not an alias)."""

    @abstractmethod
    def switch_alias(self, alias: str, collection: str) -> None:
        """Point ``alias`` at ``collection`` in one step: readers see the old or the new, never neither."""

    @abstractmethod
    def drop(self, collection: str) -> None:
        """Delete a collection and its companions (missing ones are ignored)."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def describe(self) -> str: ...
