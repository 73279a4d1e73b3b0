"""Bounded retries for a remote store, and the classification of qdrant-client's exceptions.

qdrant-client has no retry policy of its own and raises a different exception
per failure (measured against its REST path, tests/store/test_server_errors.py):

| what happened | qdrant-client raises | imgsim |
|---|---|---|
| 429 with ``Retry-After`` | ``ResourceExhaustedResponse`` (``retry_after_s``) | waits that long if the budget allows, else ``StoreUnavailable(retry_after=...)`` |
| 429 without it, 500-599 | ``UnexpectedResponse`` | retried with backoff, then ``StoreUnavailable`` |
| connection refused / reset, DNS, timeouts | ``ResponseHandlingException`` around an ``httpx.TransportError`` | retried, then ``StoreUnavailable`` |
| a 2xx body that is not what the API promises | ``ResponseHandlingException`` (pydantic ``ValidationError``), a JSON ``ValueError``, or an ``AssertionError`` (no ``result``) | ``StoreError`` (not retried) |
| 400-499 (bad request, 401/403 wrong key, 404) | ``UnexpectedResponse`` | ``StoreError`` with the server's message |

The loop is written here because no library in the layer does "retry with a
total time budget and honour the server's Retry-After" and it is 30 lines.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import StoreError, StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
_sleep = time.sleep  # the tests record waits instead of sleeping


class Transient(Exception):
    """Internal: a failure worth retrying, with the server's requested delay if it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def classify(exc: BaseException) -> BaseException:
    """``Transient`` for what may pass, ``StoreError`` for what will not; other exceptions unchanged."""
    import httpx
    from qdrant_client.common.client_exceptions import (
        QdrantException,
        ResourceExhaustedResponse,
    )
    from qdrant_client.http.exceptions import (
        ResponseHandlingException,
        UnexpectedResponse,
    )

    if isinstance(exc, ResourceExhaustedResponse):
        return Transient(f"rate limited (429): {exc}", retry_after=float(exc.retry_after_s))
    if isinstance(exc, UnexpectedResponse):
        status = exc.status_code
        detail = _server_message(exc.content)
        if status is None or status >= 500 or status == 429:
            retry_after = _header_seconds(exc.headers.get("Retry-After") if exc.headers else None)
            return Transient(f"HTTP {status}: {detail}", retry_after=retry_after)
        return StoreError(f"Qdrant answered HTTP {status}: {detail}")
    if isinstance(exc, ResponseHandlingException):
        source = exc.source
        if isinstance(source, (httpx.TransportError, ConnectionError, TimeoutError)):
            return Transient(f"{type(source).__name__}: {source}")
        return StoreError(f"Qdrant sent a response imgsim cannot read ({type(source).__name__}): {str(source)[:200]}")
    if isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError)):
        return Transient(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, QdrantException):  # e.g. a Retry-After that is no number
        return StoreError(f"Qdrant client error: {exc}")
    if isinstance(exc, ValueError) and "JSON" in type(exc).__name__ + str(exc):
        return StoreError(f"Qdrant sent a body that is not JSON: {exc}")
    if isinstance(exc, AssertionError):  # qdrant-client asserts on a 2xx without a "result"
        return StoreError(f"Qdrant sent an incomplete response: {exc}")
    return exc


def _server_message(content: bytes | None) -> str:
    import json

    raw = content or b""
    try:
        doc = json.loads(raw)
        message = doc.get("status", {}).get("error") if isinstance(doc, dict) else None
        if message:
            return str(message)[:300]
    except (ValueError, AttributeError):
        pass
    return raw[:200].decode("utf-8", "replace") or "(empty body)"


def _header_seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def call_with_retries(what: str, fn: Callable[[], T], *, retries: int, budget_s: float) -> T:
    """Run ``fn``; retry transient failures at most ``retries`` times within ``budget_s`` seconds in all.

    Backoff is jittered exponential from 0.1 s; a server's Retry-After replaces it. When the next
    wait would pass the budget, the call ends at once as ``StoreUnavailable`` carrying the
    server's delay, so the API can pass it on as its own Retry-After instead of holding the request.
    """
    deadline = time.monotonic() + budget_s
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            verdict = classify(exc)
            if not isinstance(verdict, Transient):
                if verdict is exc:
                    raise
                raise verdict from exc
            delay = verdict.retry_after
            if delay is None:
                delay = min(2.0, 0.1 * 2**attempt) * (0.5 + random.random() / 2)
            if attempt >= retries or time.monotonic() + delay > deadline:
                raise StoreUnavailable(
                    f"Qdrant {what} failed after {attempt + 1} attempt(s): {verdict}", retry_after=verdict.retry_after
                ) from exc
            log.warning("Qdrant %s failed (%s), retry %d in %.2fs", what, verdict, attempt + 1, delay)
            _sleep(delay)
            attempt += 1
