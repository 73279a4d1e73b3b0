"""The composition root: one object per process that builds the embedder, the stores, the catalog and the AWS
clients from one ``AppSettings``, each once, and hands them to the services and the pipeline.

Lambda reuses an execution environment across invocations, so the interpreter, the Qdrant client and the boto3
clients are built on first use and then kept: the handler modules hold one ``Root`` each (``functions/*/app.py``),
the CLI builds one per command from its options, the local stack one for both functions (its environments share
it: the TFLite interpreter serializes its own calls and both store backends are thread-safe), and a test builds the
one it needs. Nothing here reads the environment: the settings come in whole (``imgsim.settings.load``).

Secrets: when ``QDRANT_API_KEY_PARAM`` names an SSM SecureString (the deployed stack) and no key is given, it is
read once with powertools parameters (cached 5 min) on first use of a Qdrant server; the embedded store never
reads SSM.

SnapStart (the template's ``SnapStart`` parameter): the function modules register ``RootHolder.before_snapshot`` and
``RootHolder.after_restore`` with the runtime's hooks (``register_snapshot_hooks``). Before the snapshot the root
loads and runs the model and imports what the first request would (``Root.before_snapshot``): no connection is
opened, no credential or secret read, so none is frozen into a snapshot that many environments resume from. After a
restore what must not be shared between environments is renewed (``Root.after_restore``, ``renew_process_state``):
AWS clients and sessions, the Qdrant catalog and its connections, the secrets read, the alias resolved, the random
generators' state.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import logging
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .deployment import Layout, resolve
from .embedder import Embedder
from .errors import ImgsimError, SecretNotFound, StoreUnavailable
from .pipeline import IndexingPipeline, UnavailablePipeline, build
from .settings import AppSettings, Settings, load
from .store import Catalog, VectorStore, open_catalog, storage_options

log = logging.getLogger(__name__)

ClientFactory = Callable[[str], Any]
SecretReader = Callable[..., str]  # (name, *, max_age=300) -> the value: read_secret_parameter's signature
EmbedderFactory = Callable[[str, Settings], Embedder]
CatalogFactory = Callable[[Settings], Catalog]


def model_embedder(model: str, settings: Settings) -> Embedder:
    """The real embedder (LiteRT); tests of the fast tier pass a fake factory instead."""
    return Embedder(model, settings=settings)


_aws_lock = threading.Lock()
_aws_data: Any = None  # botocore's data loader (parsed service models), shared by every session made here
_missing_secrets: dict[str, float] = {}  # secret names found missing, when (time.monotonic): read_secret_parameter
_secret_providers: dict[str, Any] = {}  # powertools providers on such sessions, by kind ("ssm", "secretsmanager")


def aws_session() -> Any:
    """A new boto3 session: credentials found afresh (what a restored SnapStart environment needs), service models
    parsed once per process. botocore's loader only holds what it read from its data files (no credential, no
    connection) and every client of one session already shares it; sharing it across sessions makes a client of a
    new session ~15 ms instead of ~70-200 ms (S3, measured on the host: a new session parses the models again)."""
    global _aws_data
    import boto3
    import botocore.session

    core = botocore.session.get_session()
    with _aws_lock:
        if _aws_data is None:
            _aws_data = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _aws_data)
    return boto3.session.Session(botocore_session=core)


def _client_config(service: str) -> Any:
    """Adaptive retries; SigV4 presigning for S3 (botocore may still presign with the deprecated SigV2)."""
    from botocore.config import Config

    config = Config(retries={"mode": "adaptive", "max_attempts": 5})
    if service == "s3":
        config = config.merge(Config(signature_version="s3v4"))
    return config


def warm_aws_models(services: tuple[str, ...] = ("s3", "ssm")) -> None:
    """Parse the models of ``services`` into the shared loader (``aws_session``) by building one client of each with
    placeholder keys and dropping it: no credential is looked up, no connection opened."""
    session = aws_session()
    for service in services:
        session.client(service, region_name=session.region_name or "us-east-1", config=_client_config(service),
                       aws_access_key_id="snapshot", aws_secret_access_key="snapshot")


def _secret_provider(kind: str) -> Any:
    with _aws_lock:
        provider = _secret_providers.get(kind)
    if provider is None:
        from aws_lambda_powertools.utilities import parameters

        session = aws_session()
        provider = (parameters.SecretsProvider(boto3_session=session) if kind == "secretsmanager"
                    else parameters.SSMProvider(boto3_session=session))
        with _aws_lock:
            provider = _secret_providers.setdefault(kind, provider)
    return provider


_NOT_FOUND_CODES = ("ParameterNotFound", "ResourceNotFoundException")


def _not_found(exc: BaseException) -> bool:
    """SSM's or Secrets Manager's "no such name", anywhere in the chain (powertools wraps boto3's error)."""
    seen: BaseException | None = exc
    while seen is not None:
        code = (getattr(seen, "response", None) or {}).get("Error", {}).get("Code")
        if code in _NOT_FOUND_CODES or any(c in str(seen) for c in _NOT_FOUND_CODES):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def read_secret_parameter(name: str, *, max_age: int = 300) -> str:
    """An SSM SecureString (or a Secrets Manager secret, as ``secretsmanager:NAME``; a local file, as ``file:PATH``,
    read on every call: the local stack's key ring, where a change applies at once), cached ``max_age`` seconds by
    powertools; ``forget_secrets`` drops the values and the clients that read them.

    A name that does not exist raises ``SecretNotFound``, and is remembered as missing for ``max_age`` too:
    powertools caches only values, so without this every call (every API request, even one without a key, while
    the key ring's parameter is not created yet) would ask SSM, up to its throttling."""
    if name.startswith("file:"):
        try:
            with open(name.split(":", 1)[1], encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError as exc:
            raise SecretNotFound(f"{name} does not exist") from exc
    with _aws_lock:
        missing_since = _missing_secrets.get(name)
    if missing_since is not None and time.monotonic() - missing_since < max_age:
        raise SecretNotFound(f"{name} does not exist (asked {time.monotonic() - missing_since:.0f} s ago)")
    try:
        if name.startswith("secretsmanager:"):
            value = _secret_provider("secretsmanager").get(name.split(":", 1)[1], max_age=max_age)
        else:
            value = _secret_provider("ssm").get(name, decrypt=True, max_age=max_age)
    except Exception as exc:  # powertools' GetParameterError around boto3's ClientError
        if _not_found(exc):
            with _aws_lock:
                _missing_secrets[name] = time.monotonic()
            raise SecretNotFound(f"{name} does not exist") from exc
        raise
    with _aws_lock:
        _missing_secrets.pop(name, None)
    return str(value)


def forget_secrets() -> None:
    """Drop every secret read (``read_secret_parameter``'s providers and powertools' default ones) with the clients
    that read them: the next read asks SSM again, with this environment's credentials."""
    with _aws_lock:
        _secret_providers.clear()
        _missing_secrets.clear()
    parameters: Any = sys.modules.get("aws_lambda_powertools.utilities.parameters")
    if parameters is not None:
        parameters.clear_caches()


def renew_process_state() -> None:
    """After a SnapStart restore: what the process holds that must differ between the environments resumed from one
    snapshot (``Root.after_restore`` renews the root's own objects).

    - ``random`` and numpy's global generator, reseeded from the OS (uuid4 and ``secrets`` read the OS on each call:
      nothing to do); botocore's retry jitter and the Qdrant retries' (imgsim.store.retry) draw from ``random``.
    - boto3's default session (its credentials) and the secrets read (``forget_secrets``).
    - powertools' cached Lambda metadata (the Availability Zone of the environment that took the snapshot).

    Powertools' cold-start flags need nothing: no invocation runs before the snapshot, so the first one after a
    restore reports the cold start, as it should."""
    random.seed()
    numpy: Any = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    boto3: Any = sys.modules.get("boto3")
    if boto3 is not None:
        boto3.DEFAULT_SESSION = None
    forget_secrets()
    metadata: Any = sys.modules.get("aws_lambda_powertools.utilities.metadata.lambda_metadata")
    if metadata is not None:
        metadata.clear_metadata_cache()


def boto3_client_factory(
    *, endpoint_url: str | None = None, region: str | None = None, access_key: str | None = None,
    secret_key: str | None = None,
) -> ClientFactory:
    """boto3 clients with adaptive retries; SigV4 presigning for S3 (``_client_config``), each on a new session
    (``aws_session``: its own credentials, shared service models). With no arguments boto3 finds endpoint, region and
    credentials as on Lambda (its own variables and the execution role); the local stack passes its emulator's
    endpoint and dummy credentials explicitly."""

    def make(service: str) -> Any:
        kwargs: dict[str, Any] = {"config": _client_config(service)}
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        if region:
            kwargs["region_name"] = region
        if access_key and secret_key:
            kwargs.update(aws_access_key_id=access_key, aws_secret_access_key=secret_key, aws_session_token=None)
        return aws_session().client(service, **kwargs)

    return make


class Root:
    """Everything one process shares, built lazily from ``settings`` and kept until ``close()``."""

    def __init__(
        self, settings: AppSettings | None = None, *, clients: ClientFactory | None = None,
        read_secret: SecretReader | None = None, embedders: EmbedderFactory | None = None,
        catalogs: CatalogFactory | None = None,
    ) -> None:
        """``clients``, ``read_secret``, ``embedders`` and ``catalogs`` replace how AWS clients, secrets, embedders
        and the Qdrant catalog are made (the local stack's emulator endpoint; a test's fakes or a shared server
        stand-in); by default: boto3, SSM through powertools, the LiteRT model, the Qdrant the settings name."""
        self.settings = settings or AppSettings()
        self._make_embedder = embedders or model_embedder
        self._make_catalog = catalogs or open_catalog
        self._make_client = clients or boto3_client_factory()
        self._read_secret = read_secret or read_secret_parameter
        self._lock = threading.RLock()
        self._engine: Settings | None = None
        self._catalog: Catalog | None = None
        self._clients: dict[str, Any] = {}
        self._embedders: dict[str, Embedder] = {}
        self._stores: dict[str, VectorStore] = {}
        self._layout: Layout | None = None
        self._checked = 0.0

    @classmethod
    def from_env(cls, **kwargs: Any) -> Root:
        """The root of a process configured by its environment (a Lambda function)."""
        return cls(load(), **kwargs)

    # -- settings and secrets ---------------------------------------------------------------------------------------

    def read_secret(self, name: str, **options: Any) -> str:
        """``options``: ``max_age`` (seconds a read value may be reused)."""
        return self._read_secret(name, **options)

    @property
    def engine(self) -> Settings:
        """The engine settings, with the Qdrant API key read from SSM when only its parameter is given."""
        with self._lock:
            if self._engine is None:
                engine = self.settings.engine
                param = engine.qdrant_api_key_param
                if param and engine.qdrant_url and not engine.qdrant_api_key:
                    engine = dataclasses.replace(engine, qdrant_api_key=self._read_secret(param))
                self._engine = engine
            return self._engine

    # -- AWS --------------------------------------------------------------------------------------------------------

    def client(self, service: str) -> Any:
        """One boto3 client per service (thread-safe, reused)."""
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._make_client(service)
            return self._clients[service]

    def s3(self) -> Any:
        return self.client("s3")

    # -- model and store --------------------------------------------------------------------------------------------

    def configured_model(self) -> str:
        """IMGSIM_MODEL, or the manifest's default model."""
        engine = self.settings.engine  # not ``self.engine``: the model never waits on the Qdrant key from SSM
        if engine.model_name:
            return engine.model_name
        from .models import find_model_dir, load_manifest

        default, _ = load_manifest(find_model_dir(engine.model_dir) / "models.json")
        return default

    def _embedder(self, model: str) -> Embedder:
        if model not in self._embedders:
            self._embedders[model] = self._make_embedder(model, self.settings.engine)
        return self._embedders[model]

    def catalog(self) -> Catalog:
        with self._lock:
            if self._catalog is None:
                self._catalog = self._make_catalog(self.engine)
            return self._catalog

    def _current_layout(self, refresh: bool = False) -> Layout:
        layout = self._layout
        if layout is None or refresh:
            configured = self.configured_model()
            dims = {configured: self._embedder(configured).dim}
            if layout is not None:
                dims.update({m: e.dim for m, e in self._embedders.items()})
            layout = resolve(self.catalog(), self.engine.collection, configured, dim_of=dims,
                             options=storage_options(self.engine))
            self._layout, self._checked = layout, time.monotonic()
        return layout

    def layout(self) -> Layout:
        """Which collection is served (and with which model), and which one is being built (imgsim.deployment)."""
        with self._lock:
            return self._current_layout()

    def refresh(self) -> None:
        """Re-read the alias when ``alias_ttl_s`` has passed: the handlers call it at the start of each invocation,
        so warm environments follow ``imgsim reindex``'s switch."""
        with self._lock:
            if self._layout is not None and time.monotonic() - self._checked >= self.engine.alias_ttl_s:
                try:
                    self._current_layout(refresh=True)
                except ImgsimError as exc:  # Qdrant unreachable for a moment: keep serving what was resolved
                    self._checked = time.monotonic()
                    log.warning("could not re-read the collection alias (%s); keeping %s", exc,
                                self._layout.serving.collection)

    def embedder(self, model: str | None = None) -> Embedder:
        """The embedder of ``model``, by default of the model the served collection holds."""
        with self._lock:
            return self._embedder(model or self._current_layout().serving.model)

    def store(self) -> VectorStore:
        """The served collection (through the alias QDRANT_COLLECTION)."""
        with self._lock:
            layout = self._current_layout()
            return self._open(layout.serving.collection, self._embedder(layout.serving.model).dim)

    def building(self) -> tuple[VectorStore, Embedder] | None:
        """The configured model's collection and embedder while another model's is served, else None."""
        with self._lock:
            building = self._current_layout().building
            if building is None:
                return None
            embedder = self._embedder(building.model)
            return self._open(building.collection, embedder.dim), embedder

    def pipeline(self, *, logger: Any | None = None, fetch_concurrency: int | None = None) -> IndexingPipeline:
        """The indexing pipeline on this root's objects (imgsim.pipeline): into the served collection, and into the
        one being built during a model switch; every event fails for redelivery when Qdrant cannot be reached to
        find out which (a cold start during an outage). ``fetch_concurrency``: a backfill's own, instead of
        IMGSIM_FETCH_CONCURRENCY."""
        options = self.settings.index
        if fetch_concurrency is not None:
            options = dataclasses.replace(options, fetch_concurrency=max(1, fetch_concurrency))
        try:
            return build(store=self.store(), embedder=self.embedder(), s3=self.s3(), options=options, logger=logger,
                         building=self.building())
        except StoreUnavailable as exc:
            return UnavailablePipeline(str(exc))

    def _open(self, collection: str, dim: int) -> VectorStore:
        """One store object per collection (it remembers that its collection is checked)."""
        store = self._stores.get(collection)
        if store is None or store.dim != dim:
            store = self._stores[collection] = self.catalog().open_store(
                collection, dim=dim, options=storage_options(self.engine))
        return store

    def close(self) -> None:
        """Close the catalog (the embedded store's file lock) and forget everything built."""
        with self._lock:
            if self._catalog is not None:
                self._catalog.close()
            self._catalog = None
            self._embedders.clear()
            self._stores.clear()
            self._clients.clear()
            self._layout = None

    # -- SnapStart ----------------------------------------------------------------------------------------------------

    def before_snapshot(self) -> None:
        """Warm what the first request would otherwise pay for, with no I/O beyond the layer's files: the configured
        model loaded and run once on a small JPEG (decoder, preprocessing, the interpreter's first invoke), the AWS
        service models parsed (``warm_aws_models``), the Qdrant server backend and powertools' parameters imported.
        Nothing here reads a secret or opens a connection: which collection is served (the alias, on Qdrant) is
        resolved by the first request after a restore."""
        started = time.perf_counter()
        with self._lock:
            embedder = self._embedder(self.configured_model())
        embedder.embed(_warm_up_jpeg())
        try:
            warm_aws_models()
            importlib.import_module("aws_lambda_powertools.utilities.parameters")
        except ImportError as exc:  # a process without boto3 or powertools (not a function's)
            log.info("snapshot warm-up: no AWS SDK (%s)", exc)
        if self.settings.engine.qdrant_url:
            importlib.import_module(".store.server", __package__)  # what open_catalog imports for a server
        log.info("snapshot warm-up: model %s, AWS models, store backend in %.0f ms", embedder.model_name,
                 (time.perf_counter() - started) * 1000)

    def after_restore(self) -> None:
        """Renew what this root holds that must not be shared between environments resumed from one snapshot: the
        AWS clients, the catalog with its stores (their connections; closed), the engine settings (the Qdrant key
        read from SSM) and the resolved alias (the snapshot may be days old). All are rebuilt on next use; the
        embedders are kept (they are what the snapshot is for)."""
        with self._lock:
            catalog, self._catalog = self._catalog, None
            self._stores.clear()
            self._clients.clear()
            self._engine = None
            self._layout = None
        if catalog is not None:
            try:
                catalog.close()
            except Exception as exc:  # noqa: BLE001  # raising would fail the restore; the stale pool is dropped
                log.info("closing the catalog from before the snapshot: %s", exc)


def _warm_up_jpeg() -> bytes:
    """A small grey JPEG, made here: the warm-up decodes what requests bring, with nothing to ship."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (128, 128, 128)).save(buffer, format="JPEG")
    return buffer.getvalue()


class RootHolder:
    """A function module's composition root: built from the function's environment variables on first use (Lambda's
    init phase, then kept for every invocation of the execution environment), or handed over with ``use`` (the
    local stack's root, shared by its environments; a test's). ``on_change`` runs after a hand-over (to drop what
    was built on the previous root)."""

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._root: Root | None = None
        self._on_change = on_change
        self._lock = threading.Lock()

    def get(self) -> Root:
        with self._lock:
            if self._root is None:
                self._root = Root.from_env()
            return self._root

    def use(self, root: Root) -> None:
        with self._lock:
            self._root = root
        if self._on_change is not None:
            self._on_change()

    def before_snapshot(self) -> None:
        """SnapStart's hook before the snapshot (``Root.before_snapshot``)."""
        self.get().before_snapshot()

    def after_restore(self) -> None:
        """SnapStart's hook after a restore: the process's state, then the root's (``renew_process_state``,
        ``Root.after_restore``)."""
        renew_process_state()
        self.get().after_restore()

    def register_snapshot_hooks(self) -> bool:
        """Register ``before_snapshot`` and ``after_restore`` with Lambda's runtime hooks (``snapshot_restore_py``,
        which Lambda's Python runtimes 3.12+ provide; the layer does not ship it, so it cannot shadow the runtime's).
        Lambda runs them only for a SnapStart version; elsewhere on Lambda they stay registered and unused. Where the
        module is absent (the local stack, tests, the CLI) nothing is registered: False."""
        try:
            hooks = importlib.import_module("snapshot_restore_py")
        except ImportError:
            return False
        hooks.register_before_snapshot(self.before_snapshot)
        hooks.register_after_restore(self.after_restore)
        return True


__all__ = [
    "Root",
    "RootHolder",
    "aws_session",
    "boto3_client_factory",
    "forget_secrets",
    "model_embedder",
    "read_secret_parameter",
    "renew_process_state",
    "warm_aws_models",
]
