"""The store backends every contract and indexing test runs against (not collected by pytest).

- ``edge``: the embedded Qdrant Edge engine, in a fresh folder.
- ``server``: ``ServerStore`` on qdrant-client's in-memory mode, the stand-in for a Qdrant
  server's API (the same client calls and models as the REST transport; the REST path
  itself is exercised against a stub HTTP server in tests/store/test_server_errors.py).
  One call at a time (``serialized``), as a server applies each request whole: the in-memory
  mode itself is not thread-safe (two threads inserting new points at once fail with an
  IndexError inside it), and the concurrency tests run threads against it.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

from imgsim.store import Catalog, StorageOptions, VectorStore

BACKENDS = ("edge", "server")


class serialized:
    """A client whose calls run one at a time (see the module docstring)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._client, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return call


def make_store(
    kind: str, tmp_path: Path, dim: int, *, collection: str = "images", options: StorageOptions | None = None,
    retries: int = 0,
) -> VectorStore:
    if kind == "edge":
        from imgsim.store.edge import EdgeStore

        return EdgeStore(str(tmp_path / "edge"), collection, dim=dim, options=options)
    if kind == "server":
        from imgsim.store.server import ServerStore
        from qdrant_client import QdrantClient

        return ServerStore(
            serialized(QdrantClient(location=":memory:")), collection, dim=dim, options=options, retries=retries,
            where="qdrant-client in-memory",
        )
    raise ValueError(kind)


def make_catalog(kind: str, tmp_path: Path) -> Catalog:
    """The collections and aliases of a fresh embedded folder, or of qdrant-client's in-memory server stand-in."""
    if kind == "edge":
        from imgsim.store.edge import EdgeCatalog

        return EdgeCatalog(str(tmp_path / "edge"))
    if kind == "server":
        from imgsim.store.server import ServerCatalog
        from qdrant_client import QdrantClient

        return ServerCatalog(QdrantClient(location=":memory:"), retries=0, where="qdrant-client in-memory")
    raise ValueError(kind)
