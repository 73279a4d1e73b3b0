"""Two SearchFunction execution environments in one process, answering at once, as `imgsim serve` runs them: each
request is answered for its own credential (powertools keeps the current event on its class; imgsim's resolver keeps
it per environment: imgsim.http.resolver)."""

from __future__ import annotations

import json
import random
import sys
import threading
import uuid

import pytest
from imgsim.access import hash_key
from imgsim.store import StoredPoint
from imgsim_tools.events import http_api_event
from roots import make_root
from support import SEARCH_APP_PATH, handler_on_root, lambda_context

REQUESTS = 150


@pytest.fixture
def switch_often():
    """Threads switch every microsecond, so interleavings that a busy machine would produce happen here every run."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_concurrent_environments_answer_each_request_for_its_own_key(tmp_path, switch_often):
    ring = {"keys": [{"name": "acme", "sha256": hash_key("acme-key"), "scopes": ["search"], "tenant": "acme"},
                     {"name": "globex", "sha256": hash_key("globex-key"), "scopes": ["search"], "tenant": "globex"}]}
    (tmp_path / "ring.json").write_text(json.dumps(ring))
    # The ring as the local stack reads it (a file, on every request: a read between the event and the header).
    root = make_root(tmp_path / "root", {"IMGSIM_API_KEYS_PARAM": f"file:{tmp_path / 'ring.json'}"})
    try:
        store = root.store()
        acme_image = str(uuid.uuid4())
        vector = [random.random() for _ in range(store.dim)]
        store.upsert([StoredPoint(acme_image, vector, {"key": "tenants/acme/secret.jpg", "tenant": "acme"})])
        environments = [handler_on_root(f"imgsim_search_env_{n}", SEARCH_APP_PATH, root) for n in range(3)]
        answers: dict[str, list[tuple[int, str]]] = {"acme": [], "globex": [], "nobody": []}

        def call(environment, caller: str, key: str | None) -> None:
            for _ in range(REQUESTS):
                headers = {"x-api-key": key} if key else {}
                response = environment.handler(http_api_event("GET", f"/images/{acme_image}", headers=headers),
                                               lambda_context("imgsim-search", timeout_s=29))
                answers[caller].append((response["statusCode"], json.loads(response["body"]).get("key", "")))

        # One environment per thread: an environment answers one request at a time, as on Lambda.
        threads = [threading.Thread(target=call, args=(environment, caller, key)) for environment, (caller, key)
                   in zip(environments, [("acme", "acme-key"), ("globex", "globex-key"), ("nobody", None)], strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers["acme"] == [(200, "tenants/acme/secret.jpg")] * REQUESTS
        assert {status for status, _ in answers["globex"]} == {404}
        assert {status for status, _ in answers["nobody"]} == {401}
    finally:
        for n in range(3):
            sys.modules.pop(f"imgsim_search_env_{n}", None)
        root.close()
