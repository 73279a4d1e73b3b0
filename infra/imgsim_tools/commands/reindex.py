"""`imgsim reindex --model NAME [s3://bucket[/prefix]]`: a model switch without downtime.

Builds ``<QDRANT_COLLECTION>__NAME`` from the bucket, then points the alias ``QDRANT_COLLECTION`` at it in one
step; searches keep using the served collection meanwhile (``imgsim_tools.reindex`` has the passes and why each
is safe to interrupt). With ``--stack URL`` the reindex runs inside a running `imgsim serve`, whose embedded store
it could not open from here (``imgsim_tools.reindex_stack``): this command starts it there and shows its progress.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from imgsim.errors import StoreLocked

from ..progress import Bar
from ..reindex import Progress, reindexer_for
from ..reindex_stack import FINISHED, ROUTE
from .common import EXIT_FAILURE, EXIT_OK

if TYPE_CHECKING:
    from ..session import Session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="manifest name of the model to switch to")
    parser.add_argument("uri", nargs="?", help="s3://bucket[/prefix] to index (default: s3://$IMAGES_BUCKET)")
    parser.add_argument("--batch-size", type=int, default=32, help="objects per embed batch and upsert (default 32)")
    parser.add_argument("--concurrency", type=int, default=8, help="parallel S3 downloads (default 8)")
    parser.add_argument("--no-switch", action="store_true", help="build (or top up) the collection, keep the alias")
    parser.add_argument("--drop-old", action="store_true",
                        help="after the switch, wait 2 x IMGSIM_ALIAS_TTL and delete the previous collection")
    parser.add_argument("--stack", metavar="URL",
                        help="run inside a running `imgsim serve` (its embedded store is locked by it), e.g. "
                             "http://127.0.0.1:3000")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, session: Session) -> int:
    if args.stack:
        return run_in_stack(args, session)
    started = time.perf_counter()
    bar = Bar(unit="obj", desc="reindex", quiet=args.quiet)
    try:
        reindexer = reindexer_for(session, args.model, args.uri, batch_size=args.batch_size,
                                  concurrency=args.concurrency, on_progress=lambda p: show(bar, p))
    except StoreLocked as exc:  # the embedded store of a running `imgsim serve`: reindex inside it
        bar.close()
        raise StoreLocked(f"{exc}; if that is `imgsim serve`, run the reindex inside it: imgsim reindex --model "
                          f"{args.model} --stack http://127.0.0.1:3000") from exc
    try:
        progress = reindexer.run(switch=not args.no_switch)
    finally:
        bar.close()
    print_summary(progress, time.perf_counter() - started)
    if progress.switched and args.drop_old:
        wait = 2 * session.settings.alias_ttl_s
        print(f"  waiting {wait:.0f} s for running functions to follow the alias, then dropping {progress.previous}")
        if reindexer.drop_previous(wait):
            print(f"  dropped {progress.previous}")
    return EXIT_OK if progress.phase == "done" else EXIT_FAILURE


def show(bar: Bar, progress: Progress) -> None:
    """The listed objects as the bar's position, the phase and the counts beside it."""
    bar.show(progress.listed, desc=f"reindex ({progress.phase})", indexed=progress.indexed,
             unchanged=progress.unchanged, failed=progress.failed)


def print_summary(progress: Progress, seconds: float, out: Any = None) -> None:
    out = out or sys.stdout
    print(f"reindex {progress.model} into {progress.target}: {progress.listed} objects listed in {seconds:.1f} s "
          f"({progress.phase})", file=out)
    print(f"  indexed   {progress.indexed}", file=out)
    print(f"  unchanged {progress.unchanged} (already in {progress.target})", file=out)
    print(f"  skipped   {progress.skipped}  removed {progress.removed}  failed {progress.failed}", file=out)
    for line in progress.failures:
        print(f"    {line}", file=out)
    if progress.switched:
        print(f"  alias switched: {progress.previous} -> {progress.target}", file=out)
    if progress.error:
        print(f"  {progress.error}", file=out)


# -- inside a running `imgsim serve` ------------------------------------------------------------------------------


def run_in_stack(args: argparse.Namespace, session: Session) -> int:
    url = args.stack.rstrip("/") + ROUTE
    api_key = session.app_settings.api.api_key or ""
    started = time.perf_counter()
    try:
        status, body = _call(url, "POST", api_key, {
            "model": args.model, "uri": args.uri, "batch_size": args.batch_size, "concurrency": args.concurrency,
            "switch": not args.no_switch})
    except (OSError, ValueError) as exc:
        print(f"imgsim: error: cannot reach the local stack at {args.stack}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if status != 202:
        message = body.get("error", {}).get("message", body)
        print(f"imgsim: error: the local stack refused the reindex (HTTP {status}): {message}", file=sys.stderr)
        return EXIT_FAILURE
    bar = Bar(unit="obj", desc="reindex", quiet=args.quiet)
    fields = set(Progress.__dataclass_fields__)
    try:
        while True:
            progress = Progress(**{k: v for k, v in body.items() if k in fields})
            show(bar, progress)
            if progress.phase in FINISHED:
                break
            time.sleep(0.3)
            _, body = _call(url, "GET", api_key)
    finally:
        bar.close()
    print_summary(progress, time.perf_counter() - started)
    return EXIT_OK if progress.phase == "done" else EXIT_FAILURE


def _call(url: str, method: str, api_key: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "content-type": "application/json", "x-api-key": api_key})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
