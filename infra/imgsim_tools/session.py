"""What one command runs with: the settings, read once, and the objects built from them on first use.

The dispatcher (``imgsim_tools.cli``) reads the environment once, applies the global options (``--qdrant-url``,
``--qdrant-path``, ``--collection``) with ``read_settings`` and hands the command a ``Session``: no command reads or
writes ``os.environ``. The session builds what the command asks for, once, and ``close`` releases it (an embedded
store holds a lock on its folder until then). Two views of the same Qdrant:

* one model's collection, by name (``store``, ``embedder``): the configured model's collection behind the alias,
  as ``imgsim embed``, ``index``, ``search``, ``compare`` and ``migrate`` read and write it;
* the deployment as the functions see it (``layout``, ``served_store``, ``indexer``): what is served and what is
  being built during a model switch (imgsim.deployment), for ``backfill``, ``duplicates`` and ``reindex``.

``RuntimeSession`` is the same on the process's ``imgsim.runtime`` objects: the local stack runs
``imgsim reindex --stack`` inside its own process on the very store its functions use (the embedded store is
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

from imgsim import runtime
from imgsim import settings as names
from imgsim.deployment import Layout, open_in_catalog, resolve
from imgsim.embedder import Embedder
from imgsim.errors import StoreUnavailable
from imgsim.settings import AppSettings, Settings, load
from imgsim.store import Catalog, VectorStore, open_catalog, storage_options

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
        engine = dataclasses.replace(engine, qdrant_api_key=runtime.read_secret_parameter(engine.qdrant_api_key_param))
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
        overrides: Mapping[str, str] | None = None, verbose: bool = False,
    ) -> None:
        self.app_settings = app_settings
        self.environ: Mapping[str, str] = MappingProxyType(dict(environ or {}))
        self.overrides: Mapping[str, str] = MappingProxyType(dict(overrides or {}))
        self.verbose = verbose
        self._embedders: dict[str, Embedder] = {}
        self._configured: str | None = None
        self._catalog: Catalog | None = None
        self._store: VectorStore | None = None
        self._layout: Layout | None = None
        self._served: dict[str, VectorStore] = {}

    @property
    def settings(self) -> Settings:
        """The engine's settings (model, decoding, Qdrant)."""
        return self.app_settings.engine

    # -- one model's collection ------------------------------------------------------------------------------------

    def configured_model(self) -> str:
        """IMGSIM_MODEL, or the manifest's default model."""
        return self.embedder.model_name

    @property
    def embedder(self) -> Embedder:
        """The configured model's embedder."""
        if self._configured is None:
            embedder = self._build_embedder(None)
            self._configured = embedder.model_name
            self._embedders.setdefault(embedder.model_name, embedder)
        return self._embedders[self._configured]

    def embedder_for(self, model: str | None = None) -> Embedder:
        """The embedder of ``model`` (default: the configured one), built once."""
        if model is None:
            return self.embedder
        if model not in self._embedders:
            self._embedders[model] = self._build_embedder(model)
        return self._embedders[model]

    def _build_embedder(self, model: str | None) -> Embedder:
        with _fd2_silenced(enabled=not self.verbose):
            return Embedder(model, settings=self.settings)

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
        if self._catalog is None:
            self._catalog = open_catalog(self.settings)
        return self._catalog

    def layout(self) -> Layout:
        """Which collection is served (and with which model), and which one is being built."""
        if self._layout is None:
            configured = self.configured_model()
            self._layout = resolve(self.catalog, self.settings.collection, configured,
                                   dim_of={configured: self.embedder.dim}, options=storage_options(self.settings))
        return self._layout

    def _open(self, collection: str, model: str) -> VectorStore:
        if collection not in self._served:
            self._served[collection] = self.catalog.open_store(
                collection, dim=self.embedder_for(model).dim, options=storage_options(self.settings))
        return self._served[collection]

    def served_store(self) -> VectorStore:
        """The collection searches read (through the alias QDRANT_COLLECTION)."""
        serving = self.layout().serving
        return self._open(serving.collection, serving.model)

    def served_embedder(self) -> Embedder:
        """The embedder of the served collection's model (queries against it are embedded with it)."""
        return self.embedder_for(self.layout().serving.model)

    def building(self) -> tuple[VectorStore, Embedder] | None:
        """The configured model's collection and embedder while another model's is served, else None."""
        building = self.layout().building
        if building is None:
            return None
        return self._open(building.collection, building.model), self.embedder_for(building.model)

    def indexer(self, fetch_concurrency: int | None = None) -> Any:
        """The indexer IndexFunction runs, on these objects: into the served collection, and into the one being
        built during a model switch (``RebuildingIndexer``); every event fails when Qdrant is unreachable."""
        from imgsim.indexing import RebuildingIndexer, UnavailableIndexer, indexer_for

        options = self.app_settings.index
        concurrency = fetch_concurrency or options.fetch_concurrency
        try:
            serving = indexer_for(self.served_store(), self.served_embedder(), fetch_concurrency=concurrency,
                                  options=options)
            building = self.building()
        except StoreUnavailable as exc:
            return UnavailableIndexer(str(exc))
        if building is None:
            return serving
        store, embedder = building
        return RebuildingIndexer(serving, indexer_for(store, embedder, fetch_concurrency=concurrency, options=options))

    def client(self, service: str) -> Any:
        """The process's boto3 client for ``service`` (the one the indexer fetches objects with)."""
        return runtime.get_boto3_client(service)

    def close(self) -> None:
        if self._catalog is not None:
            # Closes the stores opened from it; embedded Qdrant holds a file lock on its folder until then.
            self._catalog.close()
        self._catalog = self._store = self._layout = None
        self._served.clear()


class RuntimeSession(Session):
    """A Session on ``imgsim.runtime``'s per-process objects (and its settings); ``close`` leaves them to it."""

    def __init__(self) -> None:
        super().__init__(dataclasses.replace(runtime.get_app_settings(), engine=runtime.get_settings()))

    def configured_model(self) -> str:
        return runtime.configured_model()

    @property
    def embedder(self) -> Embedder:
        return runtime.get_embedder(runtime.configured_model())

    def embedder_for(self, model: str | None = None) -> Embedder:
        return runtime.get_embedder(model or runtime.configured_model())

    @property
    def catalog(self) -> Catalog:
        return runtime.get_catalog()

    def layout(self) -> Layout:
        return runtime.get_layout()

    def served_store(self) -> VectorStore:
        return runtime.get_store()

    def served_embedder(self) -> Embedder:
        return runtime.get_embedder()

    def building(self) -> tuple[VectorStore, Embedder] | None:
        return runtime.get_building()

    def indexer(self, fetch_concurrency: int | None = None) -> Any:
        from imgsim.indexing import indexer_from_runtime

        return indexer_from_runtime(fetch_concurrency=fetch_concurrency)

    def close(self) -> None:
        """Nothing to close: the runtime keeps its objects for the process (``runtime.reset`` closes them)."""
