"""What one command runs with: the settings, read once, and the objects built from them on first use.

The dispatcher (``imgsim_tools.cli``) reads the environment once, applies the global options (``--qdrant-url``,
``--qdrant-path``, ``--collection``) with ``read_settings`` and hands the command a ``Session``: no command reads or
writes ``os.environ``. The session builds what the command asks for, once, and ``close`` releases it (an embedded
store holds a lock on its folder until then). Two views of the same Qdrant:

* one model's collection, by name (``store``, ``embedder``): the configured model's collection behind the alias,
  as ``imgsim embed``, ``index``, ``search``, ``compare`` and ``migrate`` read and write it;
* the deployment as the functions see it (``layout``, ``served_store``, ``indexer``): what is served and what is
  being built during a model switch (imgsim.deployment), for ``backfill``, ``duplicates`` and ``reindex``.

Everything is built by one composition root (``imgsim.composition.Root``), the same the functions run on.
``Session.on_root(root)`` runs a command on a root built elsewhere, left open at the end: the local stack runs
``imgsim reindex --stack`` inside its own process on the very root its functions use (the embedded store is
locked by the process that opened it), and tests use it to inspect what a command did.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

from imgsim import settings as names
from imgsim.composition import Root, read_secret_parameter
from imgsim.deployment import Layout, open_in_catalog
from imgsim.embedder import Embedder
from imgsim.pipeline import IndexingPipeline
from imgsim.settings import AppSettings, Settings, load
from imgsim.store import Catalog, VectorStore, storage_options

from .commands.common import UsageError

# The global options and the variables they stand for.
GLOBAL_OPTIONS = {"qdrant_url": names.QDRANT_URL, "qdrant_path": names.QDRANT_PATH,
                  "collection": names.QDRANT_COLLECTION}


def global_overrides(args: argparse.Namespace) -> dict[str, str]:
    """The variables the global options set; UsageError for a server and a folder at once."""
    given = {variable: getattr(args, option, None) for option, variable in GLOBAL_OPTIONS.items()}
    if given[names.QDRANT_URL] and given[names.QDRANT_PATH]:
        raise UsageError("give either --qdrant-url or --qdrant-path, not both")
    return {variable: value for variable, value in given.items() if value}


def read_settings(environ: Mapping[str, str], overrides: Mapping[str, str] | None = None) -> AppSettings:
    """Every setting from ``environ`` with ``overrides`` applied, validated; a Qdrant server's key read from
    SSM (``QDRANT_API_KEY_PARAM``) as the functions read it."""
    effective = {**environ, **(overrides or {})}
    if overrides and names.QDRANT_PATH in overrides and names.QDRANT_URL not in overrides:
        effective.pop(names.QDRANT_URL, None)  # an explicit local folder wins over a server in the environment
    app = load(effective)
    engine = app.engine
    if engine.qdrant_url and engine.qdrant_api_key_param and not engine.qdrant_api_key:
        engine = dataclasses.replace(engine, qdrant_api_key=read_secret_parameter(engine.qdrant_api_key_param))
        app = dataclasses.replace(app, engine=engine)
    return app


@contextmanager
def _fd2_silenced(enabled: bool = True) -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the duration.

    TFLite's C++ runtime prints "INFO: Created TensorFlow Lite XNNPACK delegate"
    straight to fd 2 (not through Python) when an interpreter is built; no setting
    turns it off, and it would otherwise interleave with our own messages.
    """
    try:
        if not enabled:
            raise ValueError("not silencing")
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class Session:
    """The settings of one command and the objects built from them, on first use; ``close`` at the end.

    ``environ``: the environment the settings were read from, for what a command names by variable
    (``imgsim migrate --api-key-env NAME``); ``overrides``: the variables the global options set, for a
    command that starts other processes with them (``imgsim serve``).
    """

    def __init__(
        self, app_settings: AppSettings, *, environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, str] | None = None, verbose: bool = False, root: Root | None = None,
    ) -> None:
        self.app_settings = app_settings
        self.environ: Mapping[str, str] = MappingProxyType(dict(environ or {}))
        self.overrides: Mapping[str, str] = MappingProxyType(dict(overrides or {}))
        self.verbose = verbose
        self._owns_root = root is None
        self.root = root or Root(app_settings, embedders=self._build_embedder)
        self._store: VectorStore | None = None

    @classmethod
    def on_root(cls, root: Root) -> Session:
        """A session on ``root``'s objects and settings; ``close`` leaves them to the root's owner."""
        return cls(root.settings, root=root)

    @property
    def settings(self) -> Settings:
        """The engine's settings (model, decoding, Qdrant)."""
        return self.app_settings.engine

    # -- one model's collection ------------------------------------------------------------------------------------

    def configured_model(self) -> str:
        """IMGSIM_MODEL, or the manifest's default model."""
        return self.root.configured_model()

    @property
    def embedder(self) -> Embedder:
        """The configured model's embedder."""
        return self.root.embedder(self.configured_model())

    def embedder_for(self, model: str | None = None) -> Embedder:
        """The embedder of ``model`` (default: the configured one), built once."""
        return self.root.embedder(model or self.configured_model())

    def _build_embedder(self, model: str, settings: Settings) -> Embedder:
        with _fd2_silenced(enabled=not self.verbose):
            return Embedder(model, settings=settings)

    @property
    def store(self) -> VectorStore:
        """The configured model's collection behind the name QDRANT_COLLECTION (imgsim.deployment)."""
        return self.open_store()

    def open_store(self, *, one_shot: bool = False) -> VectorStore:
        """``store``, opened on first use; ``one_shot``: for one search before the process exits
        (``StorageOptions.search_quantized``)."""
        if self._store is None:
            embedder = self.embedder
            self._store = open_in_catalog(
                self.catalog, self.settings.collection, model=embedder.model_name, dim=embedder.dim,
                options=storage_options(self.settings, one_shot=one_shot),
            )
        return self._store

    # -- the deployment, as the functions see it -------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        return self.root.catalog()

    def layout(self) -> Layout:
        """Which collection is served (and with which model), and which one is being built."""
        return self.root.layout()

    def served_store(self) -> VectorStore:
        """The collection searches read (through the alias QDRANT_COLLECTION)."""
        return self.root.store()

    def served_embedder(self) -> Embedder:
        """The embedder of the served collection's model (queries against it are embedded with it)."""
        return self.root.embedder()

    def building(self) -> tuple[VectorStore, Embedder] | None:
        """The configured model's collection and embedder while another model's is served, else None."""
        return self.root.building()

    def indexer(self, fetch_concurrency: int | None = None) -> IndexingPipeline:
        """The pipeline IndexFunction runs (imgsim.pipeline), on these objects (``Root.pipeline``)."""
        return self.root.pipeline(fetch_concurrency=fetch_concurrency)

    def client(self, service: str) -> Any:
        """The root's boto3 client for ``service`` (the one the pipeline fetches objects with)."""
        return self.root.client(service)

    def close(self) -> None:
        self._store = None
        if self._owns_root:
            # Closes the stores opened from it; embedded Qdrant holds a file lock on its folder until then.
            self.root.close()
