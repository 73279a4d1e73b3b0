"""Per-process singletons for the Lambda handlers, the CLI and the local stack.

Lambda reuses an execution environment across invocations: the interpreter,
the Qdrant client and boto3 clients are built on first use and then kept.
Secrets are read here, not in the handlers: when ``QDRANT_API_KEY_PARAM`` names
an SSM SecureString (the deployed stack), it is fetched once with powertools
parameters (cached) and used instead of ``QDRANT_API_KEY``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from .embedder import Embedder
from .errors import ImgsimError
from .settings import AppSettings, Settings, load
from .store import Catalog, VectorStore, open_catalog, storage_options

if TYPE_CHECKING:
    from .deployment import Layout

_lock = threading.RLock()
log = logging.getLogger(__name__)


def read_secret_parameter(name: str) -> str:
    """An SSM SecureString (or a Secrets Manager secret, as ``secretsmanager:NAME``), cached 5 min."""
    from aws_lambda_powertools.utilities import parameters

    if name.startswith("secretsmanager:"):
        return str(parameters.get_secret(name.split(":", 1)[1], max_age=300))
    return str(parameters.get_parameter(name, decrypt=True, max_age=300))


@lru_cache(maxsize=1)
def get_app_settings() -> AppSettings:
    return load()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    settings = get_app_settings().engine
    param = settings.qdrant_api_key_param
    # Only a Qdrant server needs a key: the embedded store (no QDRANT_URL) never reads SSM.
    if param and settings.qdrant_url and not settings.qdrant_api_key:
        settings = dataclasses.replace(settings, qdrant_api_key=read_secret_parameter(param))
    return settings


ALIAS_TTL_ENV = "IMGSIM_ALIAS_TTL"  # imgsim.settings.ALIAS_TTL
_embedders: dict[str, Embedder] = {}
_stores: dict[str, VectorStore] = {}
_layout: dict[str, Any] = {"layout": None, "checked": 0.0}


def configured_model() -> str:
    """IMGSIM_MODEL, or the manifest's default model."""
    settings = get_settings()
    if settings.model_name:
        return settings.model_name
    from .models import find_model_dir, load_manifest

    default, _ = load_manifest(find_model_dir(settings.model_dir) / "models.json")
    return default


def _model_embedder(model: str) -> Embedder:
    if model not in _embedders:
        _embedders[model] = Embedder(model, settings=get_settings())
    return _embedders[model]


@lru_cache(maxsize=1)
def get_catalog() -> Catalog:
    return open_catalog(get_settings())


def _current_layout(refresh: bool = False) -> Layout:
    from .deployment import resolve

    layout: Layout | None = _layout["layout"]
    if layout is None or refresh:
        settings = get_settings()
        configured = configured_model()
        dims = {configured: _model_embedder(configured).dim}
        if layout is not None:
            dims.update({m: e.dim for m, e in _embedders.items()})
        layout = resolve(get_catalog(), settings.collection, configured, dim_of=dims,
                         options=storage_options(settings))
        _layout.update(layout=layout, checked=time.monotonic())
    return layout


def get_layout() -> Layout:
    """Which collection is served (and with which model), and which one is being built."""
    with _lock:
        return _current_layout()


def refresh() -> None:
    """Re-read the alias when IMGSIM_ALIAS_TTL seconds (default 30) have passed: called by the handlers
    at the start of each invocation, so warm environments follow ``imgsim reindex``'s switch."""
    ttl = get_settings().alias_ttl_s
    with _lock:
        if _layout["layout"] is not None and time.monotonic() - _layout["checked"] >= ttl:
            try:
                _current_layout(refresh=True)
            except ImgsimError as exc:  # Qdrant unreachable for a moment: keep serving what was resolved
                _layout["checked"] = time.monotonic()
                log.warning("could not re-read the collection alias (%s); keeping %s", exc,
                            _layout["layout"].serving.collection)


def get_embedder(model: str | None = None) -> Embedder:
    """The embedder of ``model``, by default of the model the served collection holds."""
    with _lock:
        return _model_embedder(model or _current_layout().serving.model)


def get_store() -> VectorStore:
    """The served collection (through the alias QDRANT_COLLECTION; imgsim.deployment)."""
    with _lock:
        layout = _current_layout()
        return _open(layout.serving.collection, _model_embedder(layout.serving.model).dim)


def get_building() -> tuple[VectorStore, Embedder] | None:
    """The configured model's collection and embedder while another model's is served, else None."""
    with _lock:
        building = _current_layout().building
        if building is None:
            return None
        embedder = _model_embedder(building.model)
        return _open(building.collection, embedder.dim), embedder


def _open(collection: str, dim: int) -> VectorStore:
    """One store object per collection and process (it remembers that its collection is checked)."""
    store = _stores.get(collection)
    if store is None or store.dim != dim:
        store = _stores[collection] = get_catalog().open_store(
            collection, dim=dim, options=storage_options(get_settings()))
    return store


@cache
def get_boto3_client(service: str) -> Any:
    """boto3 honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 etc., which the local stack sets."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "adaptive", "max_attempts": 5})
    if service == "s3":
        # Presigned URLs (search API) must be SigV4: botocore may still presign with the deprecated SigV2.
        config = config.merge(Config(signature_version="s3v4"))
    return boto3.client(service, config=config)  # type: ignore[call-overload]  # any service name, by design


def reset() -> None:
    """Forget every singleton (tests; the local stack after changing the environment)."""
    with _lock:
        if get_catalog.cache_info().currsize:
            get_catalog().close()
        _embedders.clear()
        _stores.clear()
        _layout.update(layout=None, checked=0.0)
        for cached in (get_app_settings, get_settings, get_catalog, get_boto3_client):
            cached.cache_clear()
