"""The vector store: one interface (``VectorStore``) in imgsim's own types, two backends.

- ``QDRANT_URL`` set: a Qdrant server (Qdrant Cloud when deployed) through qdrant-client
  (``imgsim.store.server``).
- otherwise: embedded Qdrant Edge at ``QDRANT_PATH`` (``imgsim.store.edge``; ``:memory:``
  for a throwaway store). Not in the Lambda layer.

Backends are imported on first use, so a process on one never loads the other's
library (qdrant-client alone takes ~0.5 s to import).
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
    Condition,
    FieldEquals,
    FieldIn,
    FieldMissing,
    FieldRange,
    IdIn,
    Record,
    SearchHit,
    StoredPoint,
    Where,
    field_unchanged,
    ids_in,
    in_bucket,
    key_dirs,
    key_is,
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
    settings: Settings, *, dim: int, collection: str | None = None, one_shot: bool = False, model: str | None = None,
) -> VectorStore:
    """The store ``settings`` describe, through its alias when the name is one (imgsim.deployment).

    ``model``: the model whose vectors the caller reads or writes. The name is resolved (one request
    to a server): an alias leads to its collection; when nothing exists under the name yet, that
    model's collection is created behind the name as an alias (as the functions do); when the name
    leads to another model's collection, ConfigError (searching or writing across models would be
    wrong). Without ``model`` the name is used as it is and opening is lazy (the first call
    creates or checks the collection).
    ``one_shot``: the process makes one search and exits (``imgsim search``); see
    ``StorageOptions.search_quantized``."""
    from ..deployment import model_of, resolve

    name = collection or settings.collection
    options = storage_options(settings, one_shot=one_shot)
    if model is None:
        return _open_named(settings, name, dim, options)
    catalog = open_catalog(settings)
    try:
        physical = catalog.alias_target(name)
        if physical is not None:
            served = model_of(name, physical)
            if model is not None and served is not None and served != model:
                raise ConfigError(
                    f"{name!r} serves model {served!r} (collection {physical!r}), not {model!r}: set IMGSIM_MODEL="
                    f"{served}, or build that model's collection with `imgsim reindex --model {model}`"
                )
        elif model is not None and not catalog.exists(name):
            physical = resolve(catalog, name, model, dim_of={model: dim}, options=options).serving.collection
        return catalog.open_owned(physical or name, dim=dim, options=options)
    except BaseException:
        catalog.close()
        raise


def cluster_options(settings: Settings) -> ClusterOptions:
    """QDRANT_SHARDS and friends (README "Qdrant clusters"), checked together."""
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
    "Catalog",
    "ClusterOptions",
    "Condition",
    "FieldEquals",
    "FieldIn",
    "FieldMissing",
    "FieldRange",
    "IdIn",
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
    "where_all",
]
