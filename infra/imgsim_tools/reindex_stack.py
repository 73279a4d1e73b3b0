"""`imgsim reindex --stack URL`: run the reindex inside a running `imgsim serve`.

The embedded store is locked by the process that opened it (one writer per folder), so against a
running local stack the reindex runs in the stack's own process, on the same store objects its
functions use: the stack answers ``POST /_local/reindex`` (start) and ``GET /_local/reindex``
(progress) on its API port, with its API key. These routes are the local stack's own; the deployed
API has none (on AWS ``imgsim reindex`` talks to Qdrant Cloud directly).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

ROUTE = "/_local/reindex"
log = logging.getLogger("imgsim.serve")
FINISHED = ("done", "failed")


class StackReindex:
    """The stack's side: at most one reindex at a time, on a thread of the stack's process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._status: dict[str, Any] = {"phase": "idle"}

    def status(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._status)

    def start(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        from .reindex import Progress, reindexer_from_runtime

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
                reindexer = reindexer_from_runtime(
                    model, request.get("uri"), batch_size=int(request.get("batch_size", 32)),
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


def _call(url: str, method: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "content-type": "application/json", "x-api-key": os.environ.get("IMGSIM_API_KEY", "")})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def run_in_stack(args: argparse.Namespace) -> int:
    from .reindex import Bar, Progress, print_summary

    url = args.stack.rstrip("/") + ROUTE
    started = time.perf_counter()
    try:
        status, body = _call(url, "POST", {"model": args.model, "uri": args.uri, "batch_size": args.batch_size,
                                           "concurrency": args.concurrency, "switch": not args.no_switch})
    except (OSError, ValueError) as exc:
        print(f"imgsim: error: cannot reach the local stack at {args.stack}: {exc}", file=sys.stderr)
        return 1
    if status != 202:
        message = body.get("error", {}).get("message", body)
        print(f"imgsim: error: the local stack refused the reindex (HTTP {status}): {message}", file=sys.stderr)
        return 1
    bar = Bar(args.quiet)
    fields = set(Progress.__dataclass_fields__)
    try:
        while True:
            progress = Progress(**{k: v for k, v in body.items() if k in fields})
            bar.update(progress)
            if progress.phase in FINISHED:
                break
            time.sleep(0.3)
            _, body = _call(url, "GET")
    finally:
        bar.close()
    print_summary(progress, time.perf_counter() - started)
    return 0 if progress.phase == "done" else 1
