"""Run the whole stack on this machine: local S3, queue, API and web page (see imgsim_tools.local.stack).

The stack runs the project's handlers and reads its template: it needs a checkout (found as imgsim_tools.project
says), reported in one line when there is none.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..project import ProjectNotFound, handler_file, project_root
from .common import UsageError

if TYPE_CHECKING:
    from ..session import Session

log = logging.getLogger("imgsim.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    try:
        root = project_root()
    except ProjectNotFound as exc:
        raise UsageError(f"imgsim serve: {exc}") from exc
    parser.add_argument("--port", type=int, default=3000, help="HTTP port of the page and the API (default 3000)")
    parser.add_argument("--s3-port", type=int, default=4566, help="port of the S3 + SQS emulator (default 4566)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--data-dir", default="./.data",
        help="where the index (qdrant/, unless QDRANT_PATH is set) and the stored images (s3/) persist "
        "(default ./.data)",
    )
    parser.add_argument(
        "--search-concurrency", type=int, default=4, metavar="N",
        help="SearchFunction environments started on demand when requests overlap, as Lambda scales out "
        "(default 4; 1 serializes every request)",
    )
    # Hidden: run the stack around other handlers (the stack's own tests use tiny stand-ins).
    parser.add_argument("--index-handler", default=str(handler_file("index", root)), help=argparse.SUPPRESS)
    parser.add_argument("--search-handler", default=str(handler_file("search", root)), help=argparse.SUPPRESS)


def run(args: argparse.Namespace, session: Session) -> int:
    # Imported here: the stack's modules read the checkout's template when imported (add_arguments checked it).
    from ..local.common import StackError
    from ..local.stack import LocalStack

    _configure_logging()
    stack = LocalStack(
        host=args.host, port=args.port, s3_port=args.s3_port, data_dir=Path(args.data_dir),
        index_handler=Path(args.index_handler), search_handler=Path(args.search_handler),
        search_concurrency=args.search_concurrency, variables=session.overrides,
    )
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        if stop.is_set():
            # A second Ctrl-C while stopping: give up waiting (embedded Qdrant is consistent after every write).
            print("imgsim serve: forced stop", file=sys.stderr, flush=True)
            os._exit(130)
        print(f"\n{signal.Signals(signum).name}: stopping ...", flush=True)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            stack.start()
        except StackError as exc:
            print(f"imgsim serve: {exc}", file=sys.stderr)
            return exc.exit_code
        print(stack.banner(), flush=True)
        while not stop.wait(0.1):
            pass
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if stack.started:
            print("imgsim serve: stopped", flush=True)
    if stack.started and getattr(args, "exit_process", True):
        # Everything durable is closed by now (the index, the bucket's listing). What remains is moto's
        # memory: freeing up to a million keys one by one at interpreter exit took ~1.3 s per 100,000
        # (docs/development.md "The local stack"), so the process ends here.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    # Metrics are off locally (no CloudWatch), so powertools' "no metrics to publish" warning is noise here.
    warnings.filterwarnings("ignore", "No application metrics to publish", UserWarning)
    # moto's WSGI server logs every S3/SQS request (the poller makes one a second): keep only problems.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


