"""Bounded retries for a remote store, and the classification of its failures.

The REST client (``rest``) raises one of three exceptions; this module decides what may pass
(tests/store/test_server_errors.py drives each case through a real HTTP exchange):

| what happened | ``rest`` raises | imgsim |
|---|---|---|
| 429 with ``Retry-After`` | ``HttpStatusError`` (``retry_after``) | waits that long if the budget allows, else ``StoreUnavailable(retry_after=...)`` |
| 429 without it, 500-599 | ``HttpStatusError`` | retried with backoff, then ``StoreUnavailable`` |
| connection refused / reset, DNS, TLS, timeouts | ``TransportError`` | retried, then ``StoreUnavailable`` |
| a 2xx body that is not Qdrant's envelope | ``BadResponse`` | ``StoreError`` (not retried) |
| a result without what the API promises | (``server`` reading it) | ``StoreError`` |
| 400-499 (bad request, 401/403 wrong key, 404) | ``HttpStatusError`` | ``StoreError`` with the server's message |

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
    from .rest import BadResponse, HttpStatusError, TransportError

    if isinstance(exc, HttpStatusError):
        if exc.status == 429:
            return Transient(f"rate limited (429): {exc.message}", retry_after=exc.retry_after)
        if exc.status >= 500:
            return Transient(str(exc), retry_after=exc.retry_after)
        return StoreError(f"Qdrant answered HTTP {exc.status}: {exc.message}")
    if isinstance(exc, (TransportError, ConnectionError, TimeoutError)):
        return Transient(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, BadResponse):
        return StoreError(f"Qdrant sent a response imgsim cannot read: {exc}")
    return exc


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
