"""`imgsim reindex --stack URL`: the reindex inside a running `imgsim serve`, the stack's side.

The embedded store is locked by the process that opened it (one writer per folder), so against a
running local stack the reindex runs in the stack's own process, on the same store objects its
functions use: the stack answers ``POST /_local/reindex`` (start) and ``GET /_local/reindex``
(progress) on its API port, with its API key. These routes are the local stack's own; the deployed
API has none (on AWS ``imgsim reindex`` talks to Qdrant Cloud directly). The command's side, which
calls these routes, is ``imgsim_tools.commands.reindex``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .reindex import Progress, reindexer_for
from .session import Session

ROUTE = "/_local/reindex"
log = logging.getLogger("imgsim.serve")
FINISHED = ("done", "failed")


class StackReindex:
    """The stack's side: at most one reindex at a time, on a thread of the stack's process, on the objects
    ``session`` gives (the stack's: on the root its functions use)."""

    def __init__(self, session: Callable[[], Session]) -> None:
        self._session = session
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._status: dict[str, Any] = {"phase": "idle"}

    def status(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._status)

    def start(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        model = request.get("model")
        if not isinstance(model, str) or not model:
            return 400, {"error": {"code": "invalid_request", "message": "JSON body needs \"model\""}}
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return 409, {"error": {"code": "reindex_running", "message": "a reindex is already running"}}

            def report(progress: Progress) -> None:
                with self._lock:
                    self._status = progress.as_dict()

            try:
                reindexer = reindexer_for(
                    self._session(), model, request.get("uri"), batch_size=int(request.get("batch_size", 32)),
                    concurrency=int(request.get("concurrency", 8)), on_progress=report)
            except Exception as exc:  # noqa: BLE001 - a bad model name or bucket: the caller's error, reported
                return 400, {"error": {"code": "invalid_request", "message": f"{type(exc).__name__}: {exc}"}}
            self._status = reindexer.progress.as_dict()

            def work() -> None:
                try:
                    reindexer.run(switch=bool(request.get("switch", True)))
                except Exception:  # also recorded in the progress (phase "failed", error) for the client
                    log.exception("reindex %s failed", model)

            self._thread = threading.Thread(target=work, name="imgsim-reindex", daemon=True)
            self._thread.start()
            return 202, dict(self._status)
