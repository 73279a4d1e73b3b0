"""Every failure a Qdrant server can hand imgsim's REST client, through a real HTTP exchange.

A stub HTTP server on 127.0.0.1 answers from a script (status, headers, body, delay);
``ServerStore`` talks to it with the same ``connect(url, ...)`` client the functions use.
Transient failures must end as ``StoreUnavailable`` (API 503 + Retry-After, indexer
batchItemFailures), the rest as a plain ``StoreError``, never a raw urllib3 or JSON error.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import imgsim.store.retry
import pytest
from imgsim.errors import StoreError, StoreUnavailable
from imgsim.http.errors import problem
from imgsim.store.server import ServerStore, connect

COUNT_OK = (200, {}, json.dumps({"result": {"count": 3}, "status": "ok", "time": 0.001}), 0.0)


def qdrant_error(status: int, message: str, headers: dict | None = None) -> tuple:
    return (status, headers or {}, json.dumps({"status": {"error": message}, "time": 0.0}), 0.0)


class Stub:
    def __init__(self) -> None:
        self.script: list[tuple] = []
        self.requests: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                stub.requests.append(f"{self.command} {self.path}")
                status, headers, body, delay = stub.script.pop(0) if stub.script else COUNT_OK
                if delay:
                    time.sleep(delay)
                data = body.encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout test)

            do_GET = do_POST

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    yield server
    server.close()


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Backoff and Retry-After waits, recorded instead of slept."""
    recorded: list[float] = []
    monkeypatch.setattr(imgsim.store.retry, "_sleep", recorded.append)
    return recorded


def store_for(url: str, *, retries: int = 3, budget: float = 3.0, timeout: float = 1.0) -> ServerStore:
    store = ServerStore(connect(url, None, timeout), "images", dim=4, retries=retries, retry_budget_s=budget)
    store._ready = True  # the collection checks are other requests; these tests script one call
    return store


def test_429_with_retry_after_waits_as_asked_then_succeeds(stub, sleeps):
    stub.script = [qdrant_error(429, "Too many requests", {"Retry-After": "2"})]
    assert store_for(stub.url).count() == 3
    assert sleeps == [2.0] and len(stub.requests) == 2


def test_429_asking_for_longer_than_the_budget_fails_at_once_and_passes_the_delay_on(stub, sleeps):
    stub.script = [qdrant_error(429, "rate limit", {"Retry-After": "30"})]
    with pytest.raises(StoreUnavailable, match="rate limited") as info:
        store_for(stub.url, budget=3.0).count()
    assert info.value.retry_after == 30 and sleeps == [] and len(stub.requests) == 1
    answer = problem(info.value)
    assert answer is not None and answer.status == 503 and answer.headers["Retry-After"] == "30"


def test_429_without_retry_after_is_retried_with_backoff(stub, sleeps):
    stub.script = [qdrant_error(429, "slow down")] * 2
    assert store_for(stub.url).count() == 3
    assert len(sleeps) == 2 and all(0 < s <= 2.0 for s in sleeps)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retried_then_unavailable(stub, sleeps, status):
    stub.script = [qdrant_error(status, "boom")] * 10
    with pytest.raises(StoreUnavailable, match=f"after 3 attempt.*HTTP {status}"):
        store_for(stub.url, retries=2).count()
    assert len(stub.requests) == 3 and len(sleeps) == 2 and sleeps[0] < 2.0


def test_5xx_then_success_recovers(stub, sleeps):
    stub.script = [qdrant_error(503, "busy"), qdrant_error(502, "bad gateway")]
    assert store_for(stub.url).count() == 3 and len(stub.requests) == 3


@pytest.mark.parametrize("status,message", [(400, "Wrong input: bad filter"), (401, "Invalid api-key"),
                                            (403, "forbidden"), (404, "Collection `images` doesn't exist!")])
def test_4xx_is_a_clear_store_error_not_retried(stub, sleeps, status, message):
    stub.script = [qdrant_error(status, message)]
    with pytest.raises(StoreError) as info:
        store_for(stub.url).count()
    assert not isinstance(info.value, StoreUnavailable)
    assert f"HTTP {status}" in str(info.value) and message in str(info.value)
    assert len(stub.requests) == 1 and sleeps == []


@pytest.mark.parametrize("body", [
    json.dumps({"result": {"count": "many"}, "status": "ok", "time": 0}),  # fails the response model
    "<html>proxy error page</html>",  # not JSON at all
    "",
    json.dumps({"status": "ok", "time": 0}),  # no "result"
])
def test_malformed_2xx_bodies_are_store_errors(stub, sleeps, body):
    stub.script = [(200, {"Content-Type": "text/html"}, body, 0.0)]
    with pytest.raises(StoreError) as info:
        store_for(stub.url).count()
    assert not isinstance(info.value, StoreUnavailable) and len(stub.requests) == 1


def test_timeouts_are_transient(stub, sleeps):
    stub.script = [(200, {}, "{}", 2.5)]  # longer than the client's 1 s timeout; the retry gets COUNT_OK
    assert store_for(stub.url, timeout=1).count() == 3
    assert len(sleeps) == 1


def test_connection_refused_is_unavailable(sleeps):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreUnavailable, match="NewConnectionError|ConnectionRefused"):
        store_for(f"http://127.0.0.1:{port}", retries=1).count()
    assert len(sleeps) == 1


def test_the_indexer_reports_a_rate_limited_store_as_batch_item_failures(stub, sleeps, embedder):
    from imgsim.pipeline import FAILED, build
    from imgsim.settings import IndexSettings

    stub.script = [qdrant_error(429, "rate limit", {"Retry-After": "60"})] * 4
    store = store_for(stub.url)
    indexer = build(store=store, embedder=embedder, options=IndexSettings(dedupe=False))
    body = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"},
                                                                 "object": {"key": "k.jpg", "sequencer": "01"}}}]}
    report = indexer.process_messages([("m1", body)])
    assert report.failed_message_ids == ["m1"]
    assert report.outcomes[0].status == FAILED and "rate limited" in report.outcomes[0].reason
