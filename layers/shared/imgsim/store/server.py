"""Backend for a Qdrant server (Qdrant Cloud when deployed) through qdrant-client's REST transport.

Also accepts any ``QdrantClient`` (tests pass qdrant-client's in-memory mode as
a stand-in for the server's API). Every call goes through ``call_with_retries``
(see ``retry``): transient failures end as ``StoreUnavailable``, the rest as
``StoreError``; no qdrant-client exception or model escapes this module.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from qdrant_client import QdrantClient, models

from ..errors import CollectionMismatch, StoreError
from .base import (
    COMPANION_SUFFIXES,
    Catalog,
    ClusterOptions,
    ScoredRecord,
    StorageOptions,
    VectorStore,
    floats,
)
from .retry import call_with_retries
from .types import INDEXED_FIELDS, IdIn, Record, StoredPoint, Where, translate

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Filters:
    """qdrant-client's filter models, for ``translate``."""

    @staticmethod
    def combine(must: list[Any], should: list[Any], must_not: list[Any]) -> models.Filter:
        return models.Filter(must=must or None, should=should or None, must_not=must_not or None)

    @staticmethod
    def equals(field: str, value: str | int | bool) -> Any:
        return models.FieldCondition(key=field, match=models.MatchValue(value=value))

    @staticmethod
    def any_of(field: str, values: list[str]) -> Any:
        return models.FieldCondition(key=field, match=models.MatchAny(any=values))

    @staticmethod
    def missing(field: str) -> Any:
        return models.IsEmptyCondition(is_empty=models.PayloadField(key=field))

    @staticmethod
    def has_ids(ids: list[str]) -> Any:
        return models.HasIdCondition(has_id=list(ids))

    @staticmethod
    def range(field: str, gte: float | str | None, lte: float | str | None, datetime: bool) -> Any:
        if datetime:  # qdrant-client parses RFC 3339 strings into its datetime fields
            bounds: Any = models.DatetimeRange.model_validate({"gte": gte, "lte": lte})
        else:
            bounds = models.Range(gte=None if gte is None else float(gte), lte=None if lte is None else float(lte))
        return models.FieldCondition(key=field, range=bounds)


def to_filter(where: Where | None) -> models.Filter | None:
    return translate(where, _Filters())


def quantization_config(options: StorageOptions) -> Any:
    if options.quantization == "int8":
        return models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
        )
    if options.quantization == "binary":
        return models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
    return None


def search_params(options: StorageOptions) -> models.SearchParams | None:
    if not options.quantized and options.hnsw_ef is None:
        return None
    quant = (
        models.QuantizationSearchParams(rescore=options.rescore, oversampling=options.oversampling)
        if options.quantized
        else None
    )
    return models.SearchParams(hnsw_ef=options.hnsw_ef, quantization=quant)


class ServerStore(VectorStore):
    backend = "server"

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        *,
        dim: int,
        options: StorageOptions | None = None,
        retries: int = 3,
        retry_budget_s: float = 3.0,
        where: str = "Qdrant server",
        owns_client: bool = True,
        cluster: ClusterOptions | None = None,
    ) -> None:
        super().__init__(collection, dim=dim, options=options)
        self._client = client
        self.cluster = cluster or ClusterOptions()
        self._ordering = models.WriteOrdering(self.cluster.write_ordering)
        self._consistency = models.ReadConsistencyType(self.cluster.read_consistency)
        self.retries = max(0, retries)
        self.retry_budget_s = retry_budget_s
        self._where = where
        self._owns_client = owns_client
        self._params = search_params(self.options)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return call_with_retries(what, fn, retries=self.retries, budget_s=self.retry_budget_s)

    def describe(self) -> str:
        return self._where

    # -- collection -------------------------------------------------------------------------------------------

    def _create_or_check(self) -> None:
        client, name = self._client, self.collection
        if not self._call("collection_exists", lambda: client.collection_exists(name)):
            quantized = self.options.quantized
            self._call(
                "create_collection",
                lambda: client.create_collection(
                    name,
                    vectors_config=models.VectorParams(
                        size=self.dim,
                        distance=models.Distance.COSINE,
                        on_disk=True if quantized and self.options.originals_on_disk else None,
                    ),
                    quantization_config=quantization_config(self.options),
                    shard_number=self.cluster.shard_number,
                    replication_factor=self.cluster.replication_factor,
                    write_consistency_factor=self.cluster.write_consistency_factor,
                    on_disk_payload=self.cluster.on_disk_payload,
                ),
            )
            for field in INDEXED_FIELDS:
                self._call("create_payload_index", _index_creator(client, name, field))
            return
        info = self._call("get_collection", lambda: client.get_collection(name))
        vectors = info.config.params.vectors
        if not isinstance(vectors, models.VectorParams):
            raise CollectionMismatch(f"collection {name!r} uses named vectors; imgsim needs one unnamed vector")
        if vectors.size != self.dim or vectors.distance != models.Distance.COSINE:
            raise CollectionMismatch(
                f"collection {name!r} has vectors of size {vectors.size} with "
                f"{vectors.distance.value} distance, but the model needs size {self.dim} with Cosine; "
                "use another QDRANT_COLLECTION or delete this one"
            )
        for field in INDEXED_FIELDS:  # a collection from an older imgsim lacks the newer ones
            if field not in (info.payload_schema or {}):
                self._call("create_payload_index", _index_creator(client, name, field))
        self._check_cluster(name, info.config.params)
        existing = _quantization_name(info.config.quantization_config or vectors.quantization_config)
        if existing != self.options.quantization and self.dim > 1:
            # Harmless for correctness: searches still work, only memory and recall differ.
            log.warning(
                "collection %r is stored with quantization %s but IMGSIM_QUANTIZATION is %s; keeping the "
                "collection as it is (change it with Qdrant's update_collection)", name, existing,
                self.options.quantization,
            )

    def _check_cluster(self, name: str, params: Any) -> None:
        """The existing collection against the configured cluster settings: a write consistency its replicas
        cannot meet is an error (no write would be acknowledged); other differences are warnings, with
        the way to change them (the data is right either way)."""
        replicas = params.replication_factor or 1
        if (self.cluster.write_consistency_factor or 1) > replicas:
            raise CollectionMismatch(
                f"collection {name!r} has {replicas} replica(s) per shard but QDRANT_WRITE_CONSISTENCY_FACTOR is "
                f"{self.cluster.write_consistency_factor}: no write could be acknowledged; raise its replication "
                "factor (update_collection + replicate shards) or lower the setting"
            )
        wanted = {"shard_number": self.cluster.shard_number, "replication_factor": self.cluster.replication_factor,
                  "write_consistency_factor": self.cluster.write_consistency_factor,
                  "on_disk_payload": self.cluster.on_disk_payload}
        how = {"shard_number": "fixed at creation: Qdrant Cloud's resharding, or a new collection (imgsim reindex)",
               "replication_factor": "update_collection(replication_factor=...), then Qdrant replicates the shards",
               "write_consistency_factor": "update_collection(write_consistency_factor=...)",
               "on_disk_payload": "update_collection(on_disk_payload=...)"}
        for field, value in wanted.items():
            actual = getattr(params, field, None)
            if value is not None and actual != value:
                log.warning("collection %r has %s=%s but the configuration asks for %s; keeping it (%s)",
                            name, field, actual, value, how[field])

    # -- primitives -------------------------------------------------------------------------------------------

    def _upsert(self, points: Sequence[StoredPoint], only_if: Where | None) -> None:
        structs = [models.PointStruct(id=p.id, vector=floats(p.vector), payload=p.payload) for p in points]
        self._call(
            "upsert",
            lambda: self._client.upsert(self.collection, points=structs, wait=True, update_filter=to_filter(only_if),
                                        ordering=self._ordering),
        )

    def _delete(self, selector: IdIn | Where) -> None:
        chosen: Any = (
            models.PointIdsList(points=list(selector.ids))
            if isinstance(selector, IdIn)
            else models.FilterSelector(filter=to_filter(selector) or models.Filter())
        )
        self._call("delete", lambda: self._client.delete(self.collection, points_selector=chosen, wait=True,
                                                         ordering=self._ordering))

    def _set_fields(self, where: Where, fields: Mapping[str, Any]) -> None:
        selector = models.FilterSelector(filter=to_filter(where) or models.Filter())
        self._call("set_payload", lambda: self._client.set_payload(self.collection, payload=dict(fields),
                                                                     points=selector, wait=True,
                                                                     ordering=self._ordering))

    def _retrieve(self, ids: Sequence[str], with_vectors: bool) -> list[Record]:
        found = self._call(
            "retrieve",
            lambda: self._client.retrieve(self.collection, ids=list(ids), with_payload=True, with_vectors=with_vectors,
                                          consistency=self._consistency),
        )
        return [_record(p) for p in found]

    def _scroll(
        self, where: Where | None, limit: int, offset: str | None, with_vectors: bool, fields: Sequence[str] | None
    ) -> tuple[list[Record], str | None]:
        found, next_offset = self._call(
            "scroll",
            lambda: self._client.scroll(
                self.collection, scroll_filter=to_filter(where), limit=limit, offset=offset,
                with_payload=list(fields) if fields is not None else True, with_vectors=with_vectors,
                consistency=self._consistency,
            ),
        )
        return [_record(p) for p in found], (str(next_offset) if next_offset is not None else None)

    def _count(self, where: Where | None) -> int:
        return self._call(
            "count", lambda: self._client.count(self.collection, count_filter=to_filter(where), exact=True)
        ).count

    def _query(
        self, vector: Sequence[float], limit: int, offset: int, where: Where | None, score_threshold: float | None
    ) -> list[ScoredRecord]:
        response = self._call(
            "query_points",
            lambda: self._client.query_points(
                self.collection, query=list(vector), limit=limit, offset=offset, query_filter=to_filter(where),
                score_threshold=score_threshold, with_payload=True, search_params=self._params,
            ),
        )
        return [ScoredRecord(str(p.id), float(p.score), dict(p.payload or {})) for p in response.points]

    def _query_batch(self, requests: Sequence[tuple[Sequence[float], int, Where | None]], score_threshold: float | None,
                     fields: Sequence[str] | None) -> list[list[ScoredRecord]]:
        payload: Any = list(fields) if fields is not None else True
        batch = [models.QueryRequest(query=list(vector), limit=limit, filter=to_filter(where), with_payload=payload,
                                     score_threshold=score_threshold, params=self._params)
                 for vector, limit, where in requests]
        responses = self._call("query_batch_points",
                               lambda: self._client.query_batch_points(self.collection, requests=batch))
        return [[ScoredRecord(str(p.id), float(p.score), dict(p.payload or {})) for p in r.points] for r in responses]

    def companion(self, suffix: str, *, dim: int, options: StorageOptions | None = None) -> ServerStore:
        return ServerStore(
            self._client, self.collection + suffix, dim=dim, options=options or StorageOptions(quantization="none"),
            retries=self.retries, retry_budget_s=self.retry_budget_s, where=self._where, owns_client=False,
            cluster=self.cluster,  # companions are replicated like their collection
        )

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


class ServerCatalog(Catalog):
    """Collections and aliases of a Qdrant server; the stores it opens share its client."""

    def __init__(self, client: QdrantClient, *, retries: int = 3, retry_budget_s: float = 3.0,
                 where: str = "Qdrant server", cluster: ClusterOptions | None = None) -> None:
        self._client = client
        self.cluster = cluster
        self.retries = max(0, retries)
        self.retry_budget_s = retry_budget_s
        self._where = where
        self._stores: dict[str, ServerStore] = {}

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return call_with_retries(what, fn, retries=self.retries, budget_s=self.retry_budget_s)

    def describe(self) -> str:
        return self._where

    def open_store(self, collection: str, *, dim: int, options: StorageOptions | None = None) -> ServerStore:
        """One store object per collection (it remembers its collection is checked)."""
        store = self._stores.get(collection)
        if store is None or store.dim != dim:
            store = self._stores[collection] = ServerStore(
                self._client, collection, dim=dim, options=options, retries=self.retries,
                retry_budget_s=self.retry_budget_s, where=self._where, owns_client=False, cluster=self.cluster)
        return store

    def open_owned(self, collection: str, *, dim: int, options: StorageOptions | None = None) -> ServerStore:
        store = self.open_store(collection, dim=dim, options=options)
        store._owns_client = True
        return store

    def alias_target(self, alias: str) -> str | None:
        response = self._call("get_aliases", self._client.get_aliases)
        return next((a.collection_name for a in response.aliases if a.alias_name == alias), None)

    def exists(self, collection: str) -> bool:
        names = self._call("get_collections", self._client.get_collections)
        return any(c.name == collection for c in names.collections)

    def switch_alias(self, alias: str, collection: str) -> None:
        if not self.exists(collection):
            raise StoreError(f"no collection {collection!r} on {self._where}: an alias must lead to one")
        # One request: Qdrant applies the alias operations of a request atomically.
        operations: list[Any] = []
        if self.alias_target(alias) is not None:
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)))
        self._call("update_collection_aliases",
                   lambda: self._client.update_collection_aliases(change_aliases_operations=operations))

    def drop(self, collection: str) -> None:
        for name in (collection, *(collection + suffix for suffix in COMPANION_SUFFIXES)):
            if self.exists(name):
                self._call("delete_collection", functools.partial(self._client.delete_collection, name))

    def close(self) -> None:
        self._client.close()


def _index_creator(client: QdrantClient, collection: str, field: str) -> Callable[[], Any]:
    return lambda: client.create_payload_index(collection, field, field_schema=models.PayloadSchemaType.KEYWORD)


def _record(point: Any) -> Record:
    vector = point.vector
    if vector is not None and not isinstance(vector, list):  # named vectors: not imgsim's layout
        vector = None
    return Record(str(point.id), dict(point.payload or {}), floats(vector) if vector else None)


def _quantization_name(config: Any) -> str:
    if isinstance(config, models.ScalarQuantization):
        return "int8"
    if isinstance(config, models.BinaryQuantization):
        return "binary"
    if config is None:
        return "none"
    return type(config).__name__


def connect(url: str, api_key: str | None, timeout_s: float) -> QdrantClient:
    return QdrantClient(
        url=url,
        api_key=api_key,
        timeout=max(1, round(timeout_s)),
        # The version probe is one more blocking round trip on every cold start
        # (and a warning when the server is briefly unreachable); skip it.
        check_compatibility=False,
    )
