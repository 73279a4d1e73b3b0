"""Backend for a Qdrant server (Qdrant Cloud when deployed), through Qdrant's REST API (``rest.QdrantHttp``).

Request bodies are built here as the JSON the REST API documents (Qdrant's OpenAPI: the shapes
tests/qdrant_standin.py checks with qdrant-client's generated models). Every call goes through
``call_with_retries`` (see ``retry``): transient failures end as ``StoreUnavailable``, the rest as
``StoreError``, and a result without what the API promises is a ``StoreError`` too; nothing else escapes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

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
from .rest import HttpStatusError, QdrantHttp, segment
from .retry import call_with_retries
from .types import (
    INDEXED_FIELDS,
    TENANT_INDEXED,
    IdIn,
    PayloadIndex,
    Record,
    StoredPoint,
    Where,
    translate,
)

log = logging.getLogger(__name__)
Json = dict[str, Any]


class _Filters:
    """Qdrant's REST filter JSON, for ``translate``."""

    @staticmethod
    def combine(must: list[Any], should: list[Any], must_not: list[Any]) -> Json:
        return {k: v for k, v in (("must", must), ("should", should), ("must_not", must_not)) if v}

    @staticmethod
    def equals(field: str, value: str | int | bool) -> Any:
        return {"key": field, "match": {"value": value}}

    @staticmethod
    def any_of(field: str, values: list[str]) -> Any:
        return {"key": field, "match": {"any": list(values)}}

    @staticmethod
    def missing(field: str) -> Any:
        return {"is_empty": {"key": field}}

    @staticmethod
    def has_ids(ids: list[str]) -> Any:
        return {"has_id": list(ids)}

    @staticmethod
    def range(field: str, gte: float | str | None, lte: float | str | None, datetime: bool) -> Any:
        if datetime:  # RFC 3339 strings: the server parses them as a DatetimeRange
            bounds = {"gte": gte, "lte": lte}
        else:
            bounds = {"gte": None if gte is None else float(gte), "lte": None if lte is None else float(lte)}
        return {"key": field, "range": {k: v for k, v in bounds.items() if v is not None}}


def to_filter(where: Where | None) -> Json | None:
    return translate(where, _Filters())


def quantization_config(options: StorageOptions) -> Json | None:
    if options.quantization == "int8":
        return {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}}
    if options.quantization == "binary":
        return {"binary": {"always_ram": True}}
    return None


def search_params(options: StorageOptions) -> Json | None:
    if not options.quantized and options.hnsw_ef is None:
        return None
    params: Json = {}
    if options.hnsw_ef is not None:
        params["hnsw_ef"] = options.hnsw_ef
    if options.quantized:
        params["quantization"] = {"rescore": options.rescore, "oversampling": options.oversampling}
    return params


def _dropping_none(doc: Json) -> Json:
    return {k: v for k, v in doc.items() if v is not None}


@contextmanager
def reading(what: str) -> Iterator[None]:
    """A result that lacks what Qdrant's API promises is the server's fault: a ``StoreError``, not a crash."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise StoreError(f"Qdrant's {what} result is not what its API describes ({type(exc).__name__}: "
                         f"{str(exc)[:200]})") from exc


class ServerStore(VectorStore):
    backend = "server"

    def __init__(
        self,
        client: QdrantHttp,
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
        self.retries = max(0, retries)
        self.retry_budget_s = retry_budget_s
        self._where = where
        self._owns_client = owns_client
        self._params = search_params(self.options)
        self._path = "/collections/" + segment(collection)

    def _call(self, what: str, method: str, path: str, body: Any = None, **params: Any) -> Any:
        client = self._client
        return call_with_retries(what, lambda: client.request(method, path, body, **params), retries=self.retries,
                                 budget_s=self.retry_budget_s)

    def _write(self, what: str, path: str, body: Json, method: str = "POST") -> None:
        self._call(what, method, self._path + path, body, wait=True, ordering=self.cluster.write_ordering)

    def describe(self) -> str:
        return self._where

    # -- collection -------------------------------------------------------------------------------------------

    def _create_or_check(self) -> None:
        name = self.collection
        with reading("collection_exists"):
            exists = bool(self._call("collection_exists", "GET", self._path + "/exists")["exists"])
        if not exists:
            quantized = self.options.quantized
            vectors: Json = {"size": self.dim, "distance": "Cosine"}
            if quantized and self.options.originals_on_disk:
                vectors["on_disk"] = True
            try:
                self._create(vectors)
            except StoreError as exc:
                # Two environments creating one collection at once: the loser gets 409 "already exists" and goes
                # on to check what the winner created (measured with the stand-in: 15 of 20 racing creates lost).
                if not (isinstance(exc.__cause__, HttpStatusError) and exc.__cause__.status == 409):
                    raise
                log.info("collection %r was created meanwhile by another process; checking it", name)
                self._check_existing()
                return
            for field in INDEXED_FIELDS:
                self._create_index(field)
            return
        self._check_existing()

    def _create(self, vectors: Json) -> None:
        self._call("create_collection", "PUT", self._path, _dropping_none({
                "vectors": vectors,
                "quantization_config": quantization_config(self.options),
                "shard_number": self.cluster.shard_number,
                "replication_factor": self.cluster.replication_factor,
                "write_consistency_factor": self.cluster.write_consistency_factor,
                "on_disk_payload": self.cluster.on_disk_payload,
            }))

    def _check_existing(self) -> None:
        name = self.collection
        info = self._call("get_collection", "GET", self._path)
        with reading("get_collection"):
            params = info["config"]["params"]
            vectors = params["vectors"]
            if not isinstance(vectors, dict) or "size" not in vectors:
                raise CollectionMismatch(f"collection {name!r} uses named vectors; imgsim needs one unnamed vector")
            size, distance = vectors["size"], vectors["distance"]
            schema = info.get("payload_schema") or {}
            quantization = info["config"].get("quantization_config") or vectors.get("quantization_config")
        if size != self.dim or distance != "Cosine":
            raise CollectionMismatch(
                f"collection {name!r} has vectors of size {size} with {distance} distance, but the model needs "
                f"size {self.dim} with Cosine; use another QDRANT_COLLECTION or delete this one"
            )
        for field in INDEXED_FIELDS:  # a collection from an older imgsim lacks the newer ones
            if field not in schema:
                self._create_index(field)
        self._check_cluster(name, params)
        existing = _quantization_name(quantization)
        if existing != self.options.quantization and self.dim > 1:
            # Harmless for correctness: searches still work, only memory and recall differ.
            log.warning(
                "collection %r is stored with quantization %s but IMGSIM_QUANTIZATION is %s; keeping the "
                "collection as it is (change it with Qdrant's update_collection)", name, existing,
                self.options.quantization,
            )

    def payload_indexes(self) -> dict[str, PayloadIndex]:
        self.ensure_collection()
        info = self._call("get_collection", "GET", self._path)
        with reading("get_collection"):
            schema = info.get("payload_schema") or {}
            return {name: PayloadIndex(str(index["data_type"]), bool((index.get("params") or {}).get("is_tenant")))
                    for name, index in schema.items()}

    def _create_index(self, field: str) -> None:
        schema: Json | str = {"type": "keyword", "is_tenant": True} if field in TENANT_INDEXED else "keyword"
        self._call("create_payload_index", "PUT", self._path + "/index", {"field_name": field,
                                                                            "field_schema": schema}, wait=True)

    def _check_cluster(self, name: str, params: Mapping[str, Any]) -> None:
        """The existing collection against the configured cluster settings: a write consistency its replicas
        cannot meet is an error (no write would be acknowledged); other differences are warnings, with
        the way to change them (the data is right either way)."""
        replicas = params.get("replication_factor") or 1
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
            actual = params.get(field)
            if value is not None and actual != value:
                log.warning("collection %r has %s=%s but the configuration asks for %s; keeping it (%s)",
                            name, field, actual, value, how[field])

    # -- primitives -------------------------------------------------------------------------------------------

    def _upsert(self, points: Sequence[StoredPoint], only_if: Where | None) -> None:
        body: Json = {"points": [{"id": p.id, "vector": floats(p.vector), "payload": p.payload} for p in points]}
        condition = to_filter(only_if)
        if condition is not None:
            body["update_filter"] = condition
        self._write("upsert", "/points", body, method="PUT")

    def _delete(self, selector: IdIn | Where) -> None:
        body: Json = ({"points": list(selector.ids)} if isinstance(selector, IdIn)
                      else {"filter": to_filter(selector) or {}})
        self._write("delete", "/points/delete", body)

    def _set_fields(self, where: Where, fields: Mapping[str, Any]) -> None:
        self._write("set_payload", "/points/payload", {"payload": dict(fields), "filter": to_filter(where) or {}})

    def _retrieve(self, ids: Sequence[str], with_vectors: bool) -> list[Record]:
        found = self._call("retrieve", "POST", self._path + "/points",
                           {"ids": list(ids), "with_payload": True, "with_vector": with_vectors},
                           consistency=self.cluster.read_consistency)
        with reading("retrieve"):
            return [_record(p) for p in found]

    def _scroll(
        self, where: Where | None, limit: int, offset: str | None, with_vectors: bool, fields: Sequence[str] | None
    ) -> tuple[list[Record], str | None]:
        body = _dropping_none({"filter": to_filter(where), "limit": limit, "offset": offset,
                               "with_payload": list(fields) if fields is not None else True,
                               "with_vector": with_vectors})
        page = self._call("scroll", "POST", self._path + "/points/scroll", body,
                          consistency=self.cluster.read_consistency)
        with reading("scroll"):
            following = page.get("next_page_offset")
            return [_record(p) for p in page["points"]], (str(following) if following is not None else None)

    def _count(self, where: Where | None) -> int:
        counted = self._call("count", "POST", self._path + "/points/count",
                             _dropping_none({"filter": to_filter(where), "exact": True}))
        with reading("count"):
            return int(counted["count"])

    def _query(
        self, vector: Sequence[float], limit: int, offset: int, where: Where | None, score_threshold: float | None
    ) -> list[ScoredRecord]:
        response = self._call("query_points", "POST", self._path + "/points/query",
                              self._query_body(vector, limit, where, score_threshold, None, offset=offset))
        with reading("query_points"):
            return _scored(response)

    def _query_body(self, vector: Sequence[float], limit: int, where: Where | None, score_threshold: float | None,
                    fields: Sequence[str] | None, *, offset: int = 0) -> Json:
        return _dropping_none({
            "query": floats(vector), "limit": limit, "offset": offset or None, "filter": to_filter(where),
            "score_threshold": score_threshold, "with_payload": list(fields) if fields is not None else True,
            "params": self._params,
        })

    def _query_batch(self, requests: Sequence[tuple[Sequence[float], int, Where | None]], score_threshold: float | None,
                     fields: Sequence[str] | None) -> list[list[ScoredRecord]]:
        searches = [self._query_body(vector, limit, where, score_threshold, fields) for vector, limit, where in requests]
        responses = self._call("query_batch_points", "POST", self._path + "/points/query/batch",
                               {"searches": searches})
        with reading("query_batch_points"):
            return [_scored(r) for r in responses]

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

    def __init__(self, client: QdrantHttp, *, retries: int = 3, retry_budget_s: float = 3.0,
                 where: str = "Qdrant server", cluster: ClusterOptions | None = None) -> None:
        self._client = client
        self.cluster = cluster
        self.retries = max(0, retries)
        self.retry_budget_s = retry_budget_s
        self._where = where
        self._stores: dict[str, ServerStore] = {}

    def _call(self, what: str, method: str, path: str, body: Any = None) -> Any:
        client = self._client
        return call_with_retries(what, lambda: client.request(method, path, body), retries=self.retries,
                                 budget_s=self.retry_budget_s)

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
        response = self._call("get_aliases", "GET", "/aliases")
        with reading("get_aliases"):
            return next((str(a["collection_name"]) for a in response["aliases"] if a["alias_name"] == alias), None)

    def exists(self, collection: str) -> bool:
        names = self._call("get_collections", "GET", "/collections")
        with reading("get_collections"):
            return any(c["name"] == collection for c in names["collections"])

    def switch_alias(self, alias: str, collection: str) -> None:
        if not self.exists(collection):
            raise StoreError(f"no collection {collection!r} on {self._where}: an alias must lead to one")
        # One request: Qdrant applies the alias operations of a request atomically.
        actions: list[Json] = []
        if self.alias_target(alias) is not None:
            actions.append({"delete_alias": {"alias_name": alias}})
        actions.append({"create_alias": {"collection_name": collection, "alias_name": alias}})
        self._call("update_collection_aliases", "POST", "/collections/aliases", {"actions": actions})

    def drop(self, collection: str) -> None:
        for name in (collection, *(collection + suffix for suffix in COMPANION_SUFFIXES)):
            if self.exists(name):
                self._call("delete_collection", "DELETE", "/collections/" + segment(name))

    def close(self) -> None:
        self._client.close()


def _record(point: Mapping[str, Any]) -> Record:
    vector = point.get("vector")
    if vector is not None and not isinstance(vector, list):  # named vectors: not imgsim's layout
        vector = None
    return Record(str(point["id"]), dict(point.get("payload") or {}), floats(vector) if vector else None)


def _scored(response: Mapping[str, Any]) -> list[ScoredRecord]:
    return [ScoredRecord(str(p["id"]), float(p["score"]), dict(p.get("payload") or {})) for p in response["points"]]


def _quantization_name(config: Mapping[str, Any] | None) -> str:
    if not config:
        return "none"
    if "scalar" in config:
        return "int8"
    if "binary" in config:
        return "binary"
    return next(iter(config))


def connect(url: str, api_key: str | None, timeout_s: float) -> QdrantHttp:
    """A client for the server at ``url``: no request until the first call (no version probe either: it would
    be one more blocking round trip on every cold start)."""
    return QdrantHttp(url, api_key=api_key, timeout_s=max(1.0, timeout_s))
