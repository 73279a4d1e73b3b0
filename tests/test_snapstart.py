"""SnapStart's runtime hooks (imgsim.composition), called as Lambda's Python runtime calls them.

Lambda's runtime imports the function module (the init phase), runs the callables registered with
``snapshot_restore_py.register_before_snapshot`` (the last registered first), takes the snapshot, and in every
environment it resumes from that snapshot runs the ``register_after_restore`` ones (in order) before the first
invocation. A fake ``snapshot_restore_py`` with the real module's API (PyPI ``snapshot-restore-py`` 1.0.0, which the
python3.12+ runtimes carry) stands in for it here, and ``run_before_snapshot`` / ``run_after_restore`` do what the
runtime does with its registries (awslambdaric). Two restores of one snapshot are simulated by putting the process's
random state back to what it was at the snapshot before each.

The functions run on moto's S3 and SSM (the Qdrant key and the API key are SecureStrings, read through
``read_secret_parameter`` as deployed) and qdrant-client's in-memory server stand-in (QDRANT_URL set, so the
server backend and its key are what is exercised).
"""

from __future__ import annotations

import base64
import json
import random
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from imgsim.composition import (
    Root,
    RootHolder,
    boto3_client_factory,
    read_secret_parameter,
    renew_process_state,
)
from imgsim.settings import Settings, load
from imgsim_tools.events import (
    http_api_event,
    queue_arn,
    received_message,
    s3_notification,
    s3_record,
    sqs_event,
)
from roots import server_catalogs, shared_embedders
from support import INDEX_APP_PATH, SEARCH_APP_PATH, handler_on_root, lambda_context

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

REGION = "us-east-1"
BUCKET = "imgsim-images"
QDRANT_KEY_PARAM = "/imgsim/qdrant-api-key"
API_KEY_PARAM = "/imgsim/api-key"
COMMON = {"QDRANT_URL": "http://qdrant.snapstart.test:6333", "QDRANT_API_KEY_PARAM": QDRANT_KEY_PARAM,
          "QDRANT_COLLECTION": "images"}
SEARCH = {**COMMON, "IMAGES_BUCKET": BUCKET, "IMGSIM_API_KEY_PARAM": API_KEY_PARAM}


# -- the runtime's side ------------------------------------------------------------------------------------------------


def fake_snapshot_restore_py() -> types.ModuleType:
    """``snapshot_restore_py`` as the runtime provides it: two registries of (callable, args, kwargs)."""
    module = types.ModuleType("snapshot_restore_py")
    before: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
    after: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []

    def register_before_snapshot(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[..., Any]:
        before.append((func, args, kwargs))
        return func

    def register_after_restore(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[..., Any]:
        after.append((func, args, kwargs))
        return func

    module.register_before_snapshot = register_before_snapshot  # type: ignore[attr-defined]
    module.register_after_restore = register_after_restore  # type: ignore[attr-defined]
    module.get_before_snapshot = lambda: before  # type: ignore[attr-defined]
    module.get_after_restore = lambda: after  # type: ignore[attr-defined]
    return module


def run_before_snapshot(hooks: types.ModuleType) -> None:
    """What the runtime does before the snapshot: the callables in the reverse order of their registration."""
    callables = hooks.get_before_snapshot()
    while callables:
        func, args, kwargs = callables.pop()
        func(*args, **kwargs)


def run_after_restore(hooks: types.ModuleType) -> None:
    """What the runtime does after each restore: the callables in the order of their registration."""
    for func, args, kwargs in hooks.get_after_restore():
        func(*args, **kwargs)


def load_function(monkeypatch: pytest.MonkeyPatch, name: str, path: Path, root: Root) -> tuple[Any, types.ModuleType]:
    """A function's module imported with the runtime's hook module present (each function: its own process, its own
    registries), then running on ``root``."""
    hooks = fake_snapshot_restore_py()
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", hooks)
    module = handler_on_root(name, path, root)
    monkeypatch.delitem(sys.modules, name)  # two tests load the same function
    return module, hooks


# -- a deployment: moto S3 and SSM, the Qdrant server stand-in, recorded ------------------------------------------------


class Recorded:
    """What a root built: boto3 clients, catalogs (with the Qdrant key each was given), embedders, inferences."""

    def __init__(self) -> None:
        self.clients: list[tuple[str, Any]] = []
        self.catalogs: list[RecordingCatalog] = []
        self.embedders: list[str] = []
        self.inferences = 0


class RecordingCatalog:
    def __init__(self, catalog: Any, api_key: str | None) -> None:
        self._catalog = catalog
        self.api_key = api_key
        self.closed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._catalog, name)

    def close(self) -> None:
        self.closed = True
        self._catalog.close()


class CountingEmbedder:
    def __init__(self, embedder: Any, recorded: Recorded) -> None:
        self._embedder = embedder
        self._recorded = recorded

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)

    def embed(self, data: bytes) -> Any:
        self._recorded.inferences += 1
        return self._embedder.embed(data)


@pytest.fixture
def aws() -> Iterator[Any]:
    import boto3
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp, mock_aws():
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        ssm = boto3.client("ssm", region_name=REGION)
        ssm.put_parameter(Name=QDRANT_KEY_PARAM, Value="qdrant-key-1", Type="SecureString")
        ssm.put_parameter(Name=API_KEY_PARAM, Value="api-key-1", Type="SecureString")
        yield s3, ssm


@pytest.fixture
def deployment(aws: Any) -> Iterator[Callable[[dict[str, str]], tuple[Root, Recorded]]]:
    """Roots as a function's environment builds them (boto3, SSM through powertools, the model), on one Qdrant."""
    server = server_catalogs()
    roots: list[Root] = []

    def build(variables: dict[str, str]) -> tuple[Root, Recorded]:
        recorded = Recorded()
        clients = boto3_client_factory(region=REGION)

        def make_client(service: str) -> Any:
            client = clients(service)
            recorded.clients.append((service, client))
            return client

        def make_catalog(settings: Settings) -> Any:
            catalog = RecordingCatalog(server(settings), settings.qdrant_api_key)
            recorded.catalogs.append(catalog)
            return catalog

        def make_embedder(model: str, settings: Settings) -> Any:
            recorded.embedders.append(model)
            return CountingEmbedder(shared_embedders(model, settings), recorded)

        root = Root(load(variables), clients=make_client, read_secret=read_secret_parameter,
                    embedders=make_embedder, catalogs=make_catalog)
        roots.append(root)
        return root, recorded

    yield build
    for root in roots:
        root.close()
    renew_process_state()  # no secret read here outlives moto


def index_event(s3: Any, key: str, data: bytes) -> dict[str, Any]:
    """The SQS event that S3's notification of a put of ``key`` becomes."""
    s3.put_object(Bucket=BUCKET, Key=key, Body=data, ContentType="image/jpeg")
    etag = s3.head_object(Bucket=BUCKET, Key=key)["ETag"]
    body = json.dumps(s3_notification(s3_record(BUCKET, key, size=len(data), etag=etag)))
    return sqs_event([received_message(body)], queue_arn("imgsim-index"))


def search(app: Any, data: bytes, api_key: str) -> tuple[int, Any]:
    event = http_api_event("POST", "/search", body=data, headers={"content-type": "image/jpeg", "x-api-key": api_key})
    response = app.handler(event, lambda_context("SearchFunction", timeout_s=15))
    text = response.get("body") or ""
    if response.get("isBase64Encoded"):
        text = base64.b64decode(text).decode()
    return response["statusCode"], json.loads(text)


def cold_start_flags() -> tuple[bool, ...]:
    from aws_lambda_powertools.logging import logger
    from aws_lambda_powertools.metrics.provider import cold_start

    return logger.is_cold_start, cold_start.is_cold_start


# -- tests -------------------------------------------------------------------------------------------------------------


def test_the_index_function_across_a_snapshot_and_two_restores(monkeypatch, aws, deployment, photos):
    s3, ssm = aws
    root, recorded = deployment(COMMON)
    app, hooks = load_function(monkeypatch, "snapstart_index_app", INDEX_APP_PATH, root)
    # The module registered one hook of each kind, the root holder's, with the runtime.
    assert [(f.__name__, args, kwargs) for f, args, kwargs in hooks.get_before_snapshot()] == [
        ("before_snapshot", (), {})]
    assert [f.__name__ for f, _, _ in hooks.get_after_restore()] == ["after_restore"]

    flags = cold_start_flags()
    run_before_snapshot(hooks)
    # Warmed: the configured model loaded and run once. Nothing else built: no AWS client, no Qdrant catalog (no
    # connection), no secret read (SSM was not asked: the key is read below with the value it has then).
    assert recorded.embedders == [root.configured_model()] and recorded.inferences == 1
    assert recorded.clients == [] and recorded.catalogs == []
    assert cold_start_flags() == flags  # no invocation ran: the first one after a restore reports the cold start
    assert "imgsim.store.server" in sys.modules  # the backend's import is in the snapshot too

    ssm.put_parameter(Name=QDRANT_KEY_PARAM, Value="qdrant-key-2", Type="SecureString", Overwrite=True)
    run_after_restore(hooks)
    response = app.handler(index_event(s3, "photos/a.jpg", photos[0].read_bytes()), lambda_context("IndexFunction"))
    assert response == {"batchItemFailures": []}
    assert root.store().count() == 1
    (first_catalog,) = recorded.catalogs
    assert first_catalog.api_key == "qdrant-key-2"  # read after the restore, not frozen at the snapshot
    assert [service for service, _ in recorded.clients] == ["s3"]
    assert recorded.embedders == [root.configured_model()]  # the snapshot's model serves: not loaded again

    # A second environment resumed from the same snapshot (its own credentials and key): every client, catalog and
    # secret is made anew on next use, the model is the snapshot's.
    ssm.put_parameter(Name=QDRANT_KEY_PARAM, Value="qdrant-key-3", Type="SecureString", Overwrite=True)
    run_after_restore(hooks)
    assert first_catalog.closed
    response = app.handler(index_event(s3, "photos/b.jpg", photos[500].read_bytes()), lambda_context("IndexFunction"))
    assert response == {"batchItemFailures": []}
    assert root.store().count() == 2
    assert [c.api_key for c in recorded.catalogs] == ["qdrant-key-2", "qdrant-key-3"]
    (_, s3_first), (_, s3_second) = recorded.clients
    assert s3_second is not s3_first
    assert recorded.embedders == [root.configured_model()]


def test_the_search_function_answers_after_a_restore(monkeypatch, aws, deployment, photos):
    s3, ssm = aws
    index_root, _ = deployment(COMMON)
    search_root, recorded = deployment(SEARCH)
    index_app, index_hooks = load_function(monkeypatch, "snapstart_index_app", INDEX_APP_PATH, index_root)
    search_app, search_hooks = load_function(monkeypatch, "snapstart_search_app", SEARCH_APP_PATH, search_root)

    run_before_snapshot(index_hooks)
    run_before_snapshot(search_hooks)
    assert recorded.inferences == 1 and recorded.clients == [] and recorded.catalogs == []
    run_after_restore(index_hooks)
    run_after_restore(search_hooks)

    photo = photos[900].read_bytes()
    assert index_app.handler(index_event(s3, "photos/wanted.jpg", photo),
                             lambda_context("IndexFunction")) == {"batchItemFailures": []}
    status, body = search(search_app, photo, "api-key-1")
    assert status == 200, body
    assert body["results"][0]["key"] == "photos/wanted.jpg" and body["results"][0]["score"] > 0.999
    assert recorded.catalogs[0].api_key == "qdrant-key-1"

    # The API key read before a restore is not carried over: after the next one, the key SSM holds then is the key.
    ssm.put_parameter(Name=API_KEY_PARAM, Value="api-key-2", Type="SecureString", Overwrite=True)
    assert search(search_app, photo, "api-key-1")[0] == 200  # cached (5 min) within one environment
    run_after_restore(search_hooks)
    assert search(search_app, photo, "api-key-1")[0] == 401
    status, body = search(search_app, photo, "api-key-2")
    assert status == 200 and body["results"][0]["key"] == "photos/wanted.jpg"
    assert len(recorded.catalogs) == 2 and recorded.catalogs[0].closed


def test_random_state_differs_between_restores_of_one_snapshot():
    """Two environments resumed from one snapshot start with the snapshot's random state; after_restore reseeds the
    generators from the OS, so their draws (retry jitter, anything random) differ."""
    snapshot = random.getstate(), np.random.get_state()

    def resume(renew: bool) -> tuple[float, float]:
        random.setstate(snapshot[0])
        np.random.set_state(snapshot[1])
        if renew:
            renew_process_state()  # what the holder's after_restore does first (test below)
        return random.random(), float(np.random.random())

    assert resume(renew=False) == resume(renew=False)  # what a restore without the hook would give both environments
    first, second = resume(renew=True), resume(renew=True)
    assert first[0] != second[0] and first[1] != second[1]


def test_the_holder_renews_the_process_then_the_root(monkeypatch):
    calls: list[str] = []

    class StubRoot:
        def before_snapshot(self) -> None:
            calls.append("root.before_snapshot")

        def after_restore(self) -> None:
            calls.append("root.after_restore")

    monkeypatch.setattr("imgsim.composition.renew_process_state", lambda: calls.append("renew_process_state"))
    holder = RootHolder()
    holder.use(StubRoot())  # type: ignore[arg-type]
    holder.before_snapshot()
    holder.after_restore()
    assert calls == ["root.before_snapshot", "renew_process_state", "root.after_restore"]


def test_renewal_drops_boto3s_default_session():
    import boto3

    boto3.setup_default_session(region_name=REGION)
    assert boto3.DEFAULT_SESSION is not None
    renew_process_state()
    assert boto3.DEFAULT_SESSION is None


def test_without_the_runtime_module_nothing_is_registered_and_nothing_fails(monkeypatch, aws, photos):
    """The local stack, the tests and the CLI have no snapshot_restore_py: registering is a no-op, the functions
    import and answer."""
    s3, _ = aws
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # importing it raises ImportError
    assert RootHolder().register_snapshot_hooks() is False
    root = Root(load({**COMMON, "IMAGES_BUCKET": BUCKET, "IMGSIM_API_KEY": "k"}), catalogs=server_catalogs(),
                embedders=shared_embedders, clients=boto3_client_factory(region=REGION))
    index_app = handler_on_root("snapstart_plain_index_app", INDEX_APP_PATH, root)
    search_app = handler_on_root("snapstart_plain_search_app", SEARCH_APP_PATH, root)
    try:
        photo = photos[3].read_bytes()
        assert index_app.handler(index_event(s3, "photos/plain.jpg", photo),
                                 lambda_context("IndexFunction")) == {"batchItemFailures": []}
        status, body = search(search_app, photo, "k")
        assert status == 200 and body["results"][0]["key"] == "photos/plain.jpg", body
    finally:
        for name in ("snapstart_plain_index_app", "snapstart_plain_search_app"):
            sys.modules.pop(name, None)
        root.close()
        renew_process_state()
