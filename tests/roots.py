"""Composition roots for tests and benchmarks (not collected by pytest).

A test builds the root it needs from the same variables a deployment sets (``imgsim.settings.load`` of a mapping),
never by editing ``os.environ``: ``make_root(tmp_path, {"IMGSIM_DEDUPE": "off"})``. The model is loaded once per
test session and shared by every root whose decoding settings match (a root with other guard rails gets its own).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from imgsim.composition import Root, boto3_client_factory, model_embedder
from imgsim.embedder import Embedder
from imgsim.settings import Settings, load
from imgsim.store import Catalog

REGION = "us-east-1"
_DECODE_FIELDS = ("max_image_bytes", "max_pixels", "max_decode_mb", "max_decode_ms", "num_threads", "model_dir")
_shared: dict[str, Embedder] = {}


def shared_embedders(model: str, settings: Settings) -> Embedder:
    """The session's embedder of ``model`` when ``settings`` decode as the defaults do, else a new one."""
    defaults = Settings()
    if any(getattr(settings, name) != getattr(defaults, name) for name in _DECODE_FIELDS):
        return model_embedder(model, settings)
    if model not in _shared:
        _shared[model] = model_embedder(model, defaults)
    return _shared[model]


def server_catalogs() -> Callable[[Settings], Catalog]:
    """One fresh Qdrant (the REST stand-in, over HTTP), shared by every catalog the root opens: a server outlives a
    root's ``close()`` as it outlives a function's execution environment."""
    from imgsim.store.server import ServerCatalog
    from store_backends import server_client

    server = server_client()

    class SharedServer(ServerCatalog):
        def close(self) -> None:
            pass

    return lambda _settings: SharedServer(server, retries=0)


def make_root(
    tmp_path: Path, variables: Mapping[str, str] | None = None, *, backend: str = "edge",
    embedders: Callable[[str, Settings], Any] | None = None, catalogs: Callable[[Settings], Catalog] | None = None,
    read_secret: Callable[[str], str] | None = None,
) -> Root:
    """A root on a fresh embedded store under ``tmp_path`` (``backend="server"``: the Qdrant REST stand-in),
    configured by ``variables``; boto3 clients in us-east-1 (moto, when a test runs under it)."""
    settings = load({"QDRANT_PATH": str(tmp_path / "qdrant"), **(variables or {})})
    if catalogs is None and backend == "server":
        catalogs = server_catalogs()
    return Root(settings, clients=boto3_client_factory(region=REGION), embedders=embedders or shared_embedders,
                catalogs=catalogs, read_secret=read_secret)
