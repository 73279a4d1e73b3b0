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
    from ..local.tokens import TokenVerifier
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
    tokens = parser.add_argument_group(
        "tokens", "validate Authorization: Bearer tokens as the token API's JWT authorizer does (all three, or none); "
        "keys keep working beside them")
    tokens.add_argument("--jwks", metavar="FILE", help="the issuer's signing keys (a JWKS file)")
    tokens.add_argument("--oidc-issuer", metavar="ISS", help="the iss tokens must carry (template OidcIssuer)")
    tokens.add_argument("--oidc-audience", metavar="AUD",
                        help="the aud (or client_id) tokens must carry (template OidcAudience)")
    # Hidden: run the stack around other handlers (the stack's own tests use tiny stand-ins).
    parser.add_argument("--index-handler", default=str(handler_file("index", root)), help=argparse.SUPPRESS)
    parser.add_argument("--search-handler", default=str(handler_file("search", root)), help=argparse.SUPPRESS)


def run(args: argparse.Namespace, session: Session) -> int:
    # Imported here: the stack's modules read the checkout's template when imported (add_arguments checked it).
    from ..local.common import StackError
    from ..local.stack import LocalStack

    tokens = _tokens(args)
    _configure_logging()
    stack = LocalStack(
        host=args.host, port=args.port, s3_port=args.s3_port, data_dir=Path(args.data_dir),
        index_handler=Path(args.index_handler), search_handler=Path(args.search_handler),
        search_concurrency=args.search_concurrency, variables=session.overrides, tokens=tokens,
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


def _tokens(args: argparse.Namespace) -> TokenVerifier | None:
    """The token validation --jwks, --oidc-issuer and --oidc-audience ask for (None: none of them)."""
    from ..local.tokens import TokenVerifier

    given = {"--jwks": args.jwks, "--oidc-issuer": args.oidc_issuer, "--oidc-audience": args.oidc_audience}
    if not any(given.values()):
        return None
    missing = [option for option, value in given.items() if not value]
    if missing:
        raise UsageError(f"imgsim serve: tokens need --jwks, --oidc-issuer and --oidc-audience (missing: "
                         f"{', '.join(missing)})")
    try:
        return TokenVerifier.from_file(Path(args.jwks), args.oidc_issuer, args.oidc_audience)
    except ValueError as exc:
        raise UsageError(f"imgsim serve: --jwks {exc}") from exc


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


