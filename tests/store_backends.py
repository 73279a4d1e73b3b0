"""The store backends every contract and indexing test runs against (not collected by pytest).

- ``edge``: the embedded Qdrant Edge engine, in a fresh folder.
- ``server``: ``ServerStore``, the backend the functions use, over real HTTP to the Qdrant REST API stand-in of
  tests/qdrant_standin.py (one server per test process, a fresh instance per store or catalog), which checks every
  request body against Qdrant's OpenAPI models and answers as a server does.

``in_process_server()`` is the same stand-in without a socket (``QdrantHttp(send=...)``: the same encoding,
decoding and error handling, ~30 us a request instead of ~1 ms), for the fast tier and the tests that make
thousands of calls.
"""

from __future__ import annotations

import threading
from pathlib import Path

from imgsim.store import Catalog, StorageOptions, VectorStore
from imgsim.store.rest import QdrantHttp
from qdrant_standin import QdrantStandin, StandinServer, standin_url

BACKENDS = ("edge", "server")

_lock = threading.Lock()
_served: StandinServer | None = None


def served_base() -> str:
    """The process's stand-in served over HTTP (started on first use, a daemon thread for the process's life)."""
    global _served
    with _lock:
        if _served is None:
            _served = StandinServer(QdrantStandin())
            _served.start()
        return _served.url


def server_client() -> QdrantHttp:
    """A client of a fresh, empty Qdrant (its own stand-in instance), over HTTP."""
    return QdrantHttp(standin_url(served_base()), timeout_s=10)


def in_process_server() -> QdrantHttp:
    """A client of a fresh, empty Qdrant in this process (no socket)."""
    return QdrantHttp("http://qdrant-standin", send=QdrantStandin().send)


def make_store(
    kind: str, tmp_path: Path, dim: int, *, collection: str = "images", options: StorageOptions | None = None,
    retries: int = 0,
) -> VectorStore:
    if kind == "edge":
        from imgsim.store.edge import EdgeStore

        return EdgeStore(str(tmp_path / "edge"), collection, dim=dim, options=options)
    if kind == "server":
        from imgsim.store.server import ServerStore

        return ServerStore(server_client(), collection, dim=dim, options=options, retries=retries,
                           where="Qdrant REST stand-in")
    raise ValueError(kind)


def make_catalog(kind: str, tmp_path: Path) -> Catalog:
    """The collections and aliases of a fresh embedded folder, or of a fresh Qdrant (the REST stand-in)."""
    if kind == "edge":
        from imgsim.store.edge import EdgeCatalog

        return EdgeCatalog(str(tmp_path / "edge"))
    if kind == "server":
        from imgsim.store.server import ServerCatalog

        return ServerCatalog(server_client(), retries=0, where="Qdrant REST stand-in")
    raise ValueError(kind)
