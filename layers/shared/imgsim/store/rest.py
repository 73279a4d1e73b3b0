"""Qdrant's REST API over urllib3: the sixteen calls imgsim makes, as JSON.

Why not qdrant-client here: importing it takes ~440 ms on Lambda's Python 3.13 (bench_cold_start: its ~600
generated pydantic REST models are built, then rebuilt once more for their forward references), which alone is
~1.9x the whole cold-start floor (numpy, Pillow, LiteRT, boto3 and the model: ~230 ms), and issue 21 allows the
first request that reaches the store 2x. imgsim sends a handful of body shapes to sixteen endpoints; urllib3 is
loaded by boto3 in both functions already (0 ms more), pools connections, and speaks TLS with the system's CAs.
Leaving qdrant-client also takes it, grpcio and protobuf out of the layer.

What keeps this honest: every test of the server backend talks to ``tests/qdrant_standin.py``, which parses each
request body with qdrant-client's generated models (Qdrant's OpenAPI, ``extra="forbid"``) and answers with what
Qdrant's server returns; a body a real server would reject fails a test here.

Failures leave as three exceptions that ``retry.classify`` sorts: ``HttpStatusError`` (an answer with a non-2xx
status: the server's message and Retry-After kept), ``TransportError`` (no answer: refused, reset, DNS, timeout)
and ``BadResponse`` (a 2xx that is not the API's envelope).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

Send = Callable[[str, str, bytes | None, Mapping[str, str]], tuple[int, Mapping[str, str], bytes]]
"""``send(method, target, body, headers) -> (status, headers, body)``: one HTTP exchange; ``target`` is the URL
(or, for an in-process server in the tests, the path and query)."""


class HttpStatusError(Exception):
    """Qdrant answered with a status other than 2xx."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


class TransportError(Exception):
    """No answer: connection refused or reset, DNS, TLS, timeout."""


class BadResponse(Exception):
    """A 2xx whose body is not Qdrant's ``{"result": ...}`` envelope."""


def segment(name: str) -> str:
    """A collection name as one path segment."""
    return quote(name, safe="")


class QdrantHttp:
    """One Qdrant server (``url`` may carry a path prefix, as behind a proxy); thread-safe, connections pooled."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout_s: float = 10.0,
                 send: Send | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._headers = {"content-type": "application/json", "accept": "application/json",
                         "user-agent": "imgsim"}
        if api_key:
            self._headers["api-key"] = api_key
        self._send = send
        self._pool: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"QdrantHttp({self.url!r})"  # never the key

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        """``method path?params`` with ``body`` as JSON; the envelope's ``result``. ``None`` params are left out."""
        query = urlencode({k: _param(v) for k, v in params.items() if v is not None})
        target = path + ("?" + query if query else "")
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        if self._send is not None:
            status, headers, raw = self._send(method, target, data, self._headers)
        else:
            status, headers, raw = self._exchange(method, self.url + target, data)
        return _result(status, headers, raw)

    def _exchange(self, method: str, url: str, data: bytes | None) -> tuple[int, Mapping[str, str], bytes]:
        import urllib3

        try:
            response = self._pooled().request(method, url, body=data, headers=self._headers)
        except urllib3.exceptions.HTTPError as exc:  # every transport failure urllib3 raises
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        return response.status, response.headers, response.data

    def _pooled(self) -> Any:
        with self._lock:
            if self._pool is None:
                import urllib3

                # Retries are imgsim's (retry.call_with_retries: a total budget, the server's Retry-After);
                # urllib3's own would multiply them. 10 connections: the local stack's threads share one client.
                self._pool = urllib3.PoolManager(
                    num_pools=2, maxsize=10, retries=False,
                    timeout=urllib3.Timeout(connect=min(5.0, self.timeout_s), read=self.timeout_s),
                )
            return self._pool

    def reset(self) -> None:
        """Drop pooled connections; the client stays usable and the next request opens new ones (what a SnapStart
        restore needs: no socket of the snapshot is reused)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.clear()

    def close(self) -> None:
        """The same as ``reset``: closing only releases sockets, so stores sharing this client never break."""
        self.reset()


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _result(status: int, headers: Mapping[str, str], raw: bytes) -> Any:
    if not 200 <= status < 300:
        raise HttpStatusError(status, _message(raw), _seconds(headers.get("retry-after") or headers.get("Retry-After")))
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise BadResponse(f"a body that is not JSON: {raw[:120]!r}") from exc
    if not isinstance(doc, dict) or "result" not in doc:
        raise BadResponse(f"no 'result' in {raw[:120]!r}")
    return doc["result"]


def _message(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    status = doc.get("status") if isinstance(doc, dict) else None
    if isinstance(status, dict) and status.get("error"):
        return str(status["error"])[:300]
    return raw[:200].decode("utf-8", "replace") or "(empty body)"


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
