"""The vector store: one interface (``VectorStore``) in imgsim's own types, two backends.

- ``QDRANT_URL`` set: a Qdrant server (Qdrant Cloud when deployed) through its REST API
  (``imgsim.store.server`` over ``imgsim.store.rest``).
- otherwise: embedded Qdrant Edge at ``QDRANT_PATH`` (``imgsim.store.edge``; ``:memory:``
  for a throwaway store). Not in the Lambda layer.

Which collection a name leads to (aliases, one collection per model) is ``imgsim.deployment``'s business,
built on the ``Catalog`` here: this package never imports it.

Backends are imported on first use, so a process on one never loads the other's
library (qdrant-edge-py is not even in the Lambda layer).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..settings import Settings
from .base import (
    QUANTIZATION_CHOICES,
    Catalog,
    ClusterOptions,
    ScoredRecord,
    StorageOptions,
    VectorStore,
)
from .types import (
    BUCKET_FIELD,
    DIRS_FIELD,
    KEY_FIELD,
    TENANT_FIELD,
    Condition,
    FieldEquals,
    FieldIn,
    FieldMissing,
    FieldRange,
    IdIn,
    PayloadIndex,
    Record,
    SearchHit,
    StoredPoint,
    Where,
    field_unchanged,
    ids_in,
    in_bucket,
    key_dirs,
    key_is,
    tenant_is,
    where_all,
)


def storage_options(settings: Settings, *, one_shot: bool = False) -> StorageOptions:
    return StorageOptions(
        quantization=settings.quantization,
        originals_on_disk=settings.vectors_on_disk,
        oversampling=settings.oversampling,
        rescore=True,
        hnsw_ef=settings.hnsw_ef,
        search_quantized=not one_shot,
    )


def open_store(
    settings: Settings, *, dim: int, collection: str | None = None, one_shot: bool = False,
) -> VectorStore:
    """The collection named in ``settings`` (or ``collection``), used as it is: opening is lazy (the first call
    creates or checks the collection). To open one model's collection through the alias, as the functions
    and the CLI do: ``imgsim.deployment.open_model_store``.
    ``one_shot``: the process makes one search and exits; see ``StorageOptions.search_quantized``."""
    return _open_named(settings, collection or settings.collection, dim,
                       storage_options(settings, one_shot=one_shot))


def cluster_options(settings: Settings) -> ClusterOptions:
    """QDRANT_SHARDS and friends (docs/operations.md "Qdrant: collections and clusters"), checked together."""
    try:
        return ClusterOptions(
            shard_number=settings.qdrant_shards, replication_factor=settings.qdrant_replication_factor,
            write_consistency_factor=settings.qdrant_write_consistency_factor,
            on_disk_payload=settings.qdrant_on_disk_payload, write_ordering=settings.qdrant_write_ordering,
            read_consistency=settings.qdrant_read_consistency,
        )
    except ValueError as exc:
        raise ConfigError(f"Qdrant cluster settings: {exc}") from exc


def _open_named(settings: Settings, name: str, dim: int, options: StorageOptions) -> VectorStore:
    if settings.qdrant_url:
        from .server import ServerStore, connect

        return ServerStore(
            connect(settings.qdrant_url, settings.qdrant_api_key, settings.qdrant_timeout), name, dim=dim,
            options=options, retries=settings.qdrant_retries, retry_budget_s=settings.qdrant_retry_budget,
            where=f"Qdrant server {settings.qdrant_url}", cluster=cluster_options(settings),
        )
    store: VectorStore = _edge_module().EdgeStore(settings.qdrant_path, name, dim=dim, options=options)
    return store


def _edge_module() -> Any:
    try:
        from . import edge
    except ImportError as exc:  # the Lambda layer has no embedded engine: deployed functions use a server
        raise ConfigError(
            "QDRANT_URL is not set and the embedded store (qdrant-edge-py) is not installed here; set QDRANT_URL "
            "to a Qdrant server, or install imgsim's 'edge' extra for an embedded store"
        ) from exc
    return edge


def open_catalog(settings: Settings) -> Catalog:
    """The collections and aliases of the Qdrant ``settings`` describe (imgsim.deployment's model switch)."""
    if settings.qdrant_url:
        from .server import ServerCatalog, connect

        return ServerCatalog(
            connect(settings.qdrant_url, settings.qdrant_api_key, settings.qdrant_timeout),
            retries=settings.qdrant_retries, retry_budget_s=settings.qdrant_retry_budget,
            where=f"Qdrant server {settings.qdrant_url}", cluster=cluster_options(settings),
        )
    catalog: Catalog = _edge_module().EdgeCatalog(settings.qdrant_path)
    return catalog


__all__ = [
    "BUCKET_FIELD",
    "DIRS_FIELD",
    "KEY_FIELD",
    "QUANTIZATION_CHOICES",
    "TENANT_FIELD",
    "Catalog",
    "ClusterOptions",
    "Condition",
    "FieldEquals",
    "FieldIn",
    "FieldMissing",
    "FieldRange",
    "IdIn",
    "PayloadIndex",
    "Record",
    "ScoredRecord",
    "SearchHit",
    "StorageOptions",
    "StoredPoint",
    "VectorStore",
    "Where",
    "cluster_options",
    "field_unchanged",
    "ids_in",
    "in_bucket",
    "key_dirs",
    "key_is",
    "open_catalog",
    "open_store",
    "storage_options",
    "tenant_is",
    "where_all",
]
