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
from .base import QUANTIZATION_CHOICES, ScoredRecord, StorageOptions, VectorStore
from .types import (
    BUCKET_FIELD,
    DIRS_FIELD,
    KEY_FIELD,
    Condition,
    FieldEquals,
    FieldIn,
    FieldMissing,
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


def storage_options(settings: Settings) -> StorageOptions:
    return StorageOptions(
        quantization=settings.quantization,
        originals_on_disk=settings.vectors_on_disk,
        oversampling=settings.oversampling,
        rescore=True,
        hnsw_ef=settings.hnsw_ef,
    )


def open_store(settings: Settings, *, dim: int, collection: str | None = None) -> VectorStore:
    """The store ``settings`` describe. Opening is lazy: the first call creates or checks the collection."""
    name = collection or settings.collection
    options = storage_options(settings)
    if settings.qdrant_url:
        from .server import ServerStore, connect

        return ServerStore(
            connect(settings.qdrant_url, settings.qdrant_api_key, settings.qdrant_timeout), name, dim=dim,
            options=options, retries=settings.qdrant_retries, retry_budget_s=settings.qdrant_retry_budget,
            where=f"Qdrant server {settings.qdrant_url}",
        )
    from .edge import EdgeStore

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
