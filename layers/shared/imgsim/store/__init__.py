"""The vector store: one interface (``VectorStore``) in imgsim's own types, two backends.

- ``QDRANT_URL`` set: a Qdrant server (Qdrant Cloud when deployed) through qdrant-client
  (``imgsim.store.server``).
- otherwise: embedded Qdrant Edge at ``QDRANT_PATH`` (``imgsim.store.edge``; ``:memory:``
  for a throwaway store). Not in the Lambda layer.

Backends are imported on first use, so a process on one never loads the other's
library (qdrant-client alone takes ~0.5 s to import).
"""

from __future__ import annotations

from ..config import Settings
from ..errors import ConfigError
from .base import QUANTIZATION_CHOICES, ScoredRecord, StorageOptions, VectorStore
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


def open_store(settings: Settings, *, dim: int, collection: str | None = None, one_shot: bool = False) -> VectorStore:
    """The store ``settings`` describe. Opening is lazy: the first call creates or checks the collection.

    ``one_shot``: the process makes one search and exits (``imgsim search``); see
    ``StorageOptions.search_quantized``."""
    name = collection or settings.collection
    options = storage_options(settings, one_shot=one_shot)
    if settings.qdrant_url:
        from .server import ServerStore, connect

        return ServerStore(
            connect(settings.qdrant_url, settings.qdrant_api_key, settings.qdrant_timeout), name, dim=dim,
            options=options, retries=settings.qdrant_retries, retry_budget_s=settings.qdrant_retry_budget,
            where=f"Qdrant server {settings.qdrant_url}",
        )
    try:
        from .edge import EdgeStore
    except ImportError as exc:  # the Lambda layer has no embedded engine: deployed functions use a server
        raise ConfigError(
            "QDRANT_URL is not set and the embedded store (qdrant-edge-py) is not installed here; set QDRANT_URL "
            "to a Qdrant server, or install imgsim's 'edge' extra for an embedded store"
        ) from exc
    return EdgeStore(settings.qdrant_path, name, dim=dim, options=options)


__all__ = [
    "BUCKET_FIELD",
    "DIRS_FIELD",
    "KEY_FIELD",
    "QUANTIZATION_CHOICES",
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
    "field_unchanged",
    "ids_in",
    "in_bucket",
    "key_dirs",
    "key_is",
    "open_store",
    "storage_options",
    "where_all",
]
