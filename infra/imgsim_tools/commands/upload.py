"""Upload image files and folders (recursively) to a deployed API (``--api URL``), to be indexed there.

    imgsim --api URL upload PATH [PATH ...] [--concurrency N] [--wait [--timeout S]] [--json]

Each file gets a presigned POST from ``POST /uploads`` and goes straight to the images bucket, never through the API
(so API Gateway's 6 MB body limit does not apply); the bucket's notification queues it for IndexFunction. S3 takes
at most the API's upload limit (``max_bytes``, the server's ``IMGSIM_MAX_UPLOAD_MB``, 25 MB by default): a larger
file is that file's error, found before it is sent. The key is
the API's, ``uploads/<random>-<file name>``; the id printed is the one the image has once indexed (``imgsim get``).
``--wait`` then waits until every upload is searchable, or ``--timeout`` seconds. Files whose extension names no
image type the API takes are skipped with a warning; hidden files and folders are left out, as ``imgsim index``
does. Without ``--api`` there is nothing to upload to: ``imgsim index`` puts local files into Qdrant directly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..progress import Bar
from .common import EXIT_FAILURE, EXIT_OK, UsageError, positive_int
from .index import collect_files

if TYPE_CHECKING:
    from ..api_client import ApiClient, ApiError, Upload
    from ..session import Session

# Files sent at once. Each upload is two requests (POST /uploads, then the POST to S3), mostly waiting: 100 photos of ~9 kB
# to `imgsim serve` on 2 cores took 5.9 s one at a time, 2.1 s four at a time, 1.5 s eight at a time (the summary
# line's figures). Four, not more: a deployed API throttles at ApiThrottlingRateLimit (template default 20 requests/s,
# burst 40); the 429s past it are retried after a backoff, but slow the run down.
DEFAULT_CONCURRENCY = 4
DEFAULT_TIMEOUT = 300.0  # --wait: a cold IndexFunction plus a queue backlog fit well within it


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, and folders to upload recursively")
    parser.add_argument("--concurrency", type=positive_int, default=DEFAULT_CONCURRENCY, metavar="N",
                        help=f"files sent at once (default {DEFAULT_CONCURRENCY})")
    parser.add_argument("--wait", action="store_true", help="wait until every upload is indexed (searchable)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                        help=f"--wait: give up after S seconds (default {DEFAULT_TIMEOUT:.0f})")
    parser.add_argument("--json", action="store_true",
                        help='print {"uploads": [...], "failed": [...], "skipped": [...]} as JSON')


def run(args: argparse.Namespace, session: Session) -> int:
    raise UsageError("imgsim upload sends files to a deployed API: give --api URL "
                     "(`imgsim index` puts local files into Qdrant directly)")


@dataclass
class Sent:
    """One file: its upload once sent, or why it was not; ``indexed`` after --wait."""

    path: Path
    upload: Upload | None = None
    error: str | None = None
    status: int | None = None
    code: str | None = None
    indexed: bool | None = None

    def as_json(self) -> dict[str, Any]:
        if self.upload is None:
            return {"path": str(self.path), "status": self.status, "code": self.code, "error": self.error}
        done = {"path": str(self.path), "id": self.upload["id"], "key": self.upload["key"],
                "bucket": self.upload["bucket"]}
        return done if self.indexed is None else {**done, "indexed": self.indexed}


def run_remote(args: argparse.Namespace, api: ApiClient) -> int:
    from ..api_client import upload_type

    files: list[tuple[Path, str]] = []
    skipped: list[Path] = []
    for path in collect_files(args.paths):
        mime = upload_type(path)
        if mime is None:
            print(f"imgsim: warning: skipped {path}: not an image type the API takes (by its extension)",
                  file=sys.stderr)
            skipped.append(path)
        else:
            files.append((path, mime))
    began = time.monotonic()
    sent = send_all(api, files, args)
    uploaded = [s for s in sent if s.upload is not None]
    total_bytes = sum(_size(s.path) for s in uploaded)
    seconds = time.monotonic() - began
    if not args.json:
        print(f"uploaded {len(uploaded)} ({_amount(total_bytes)} in {seconds:.1f} s, "
              f"{_amount(total_bytes / max(seconds, 1e-3))}/s), skipped {len(skipped)}, "
              f"failed {len(sent) - len(uploaded)}")
    missing = wait_indexed(api, uploaded, args) if args.wait and uploaded else 0
    if args.json:
        print(json.dumps({"uploads": [s.as_json() for s in uploaded],
                          "failed": [s.as_json() for s in sent if s.upload is None],
                          "skipped": [str(p) for p in skipped]}, indent=2))
    return EXIT_FAILURE if len(uploaded) < len(sent) or missing else EXIT_OK


def send_all(api: ApiClient, files: list[tuple[Path, str]], args: argparse.Namespace) -> list[Sent]:
    """Upload ``files`` ``args.concurrency`` at a time, with a bar of the bytes sent; each file's line as it is
    done. A failure of one file is reported and the others go on; one of the whole run (the key, the API) stops
    it, as does Ctrl-C (the files in flight finish, the others are not started)."""
    bar = Bar(total=sum(_size(p) for p, _ in files), unit="B", unit_scale=True, desc="uploading",
              terminal_only=True, leave=False)
    results: list[Sent | None] = [None] * len(files)
    pool = ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="imgsim-upload")
    try:
        futures: dict[Future[Sent], int] = {pool.submit(send, api, path, mime, bar.update): n
                                            for n, (path, mime) in enumerate(files)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                result = future.result()  # an error of the whole run: raised here, the rest cancelled below
                results[futures[future]] = result
                if result.upload is not None:
                    if not args.json:
                        bar.write(f"uploaded {result.path} -> {result.upload['key']} ({result.upload['id']})",
                                  file=sys.stdout)
                else:
                    bar.write(f"imgsim upload: {result.path}: {result.error}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
    return [r for r in results if r is not None]


def send(api: ApiClient, path: Path, mime: str, progress: Callable[[int], None]) -> Sent:
    """One file: its upload, then the POST to S3. The API refusing this file (its name, its type), the file being
    over the upload limit, or S3 refusing the POST is this file's failure; any other ApiError (the key, an API that
    is down) is raised: it ends the run."""
    from ..api_client import ApiError
    from ..remote import item_error

    try:
        upload = api.create_upload(path.name, mime)
    except ApiError as exc:
        if not item_error(exc):
            raise
        return _failed(path, exc)
    try:
        api.post_upload(upload, path, on_progress=progress)
    except ApiError as exc:  # over the limit, or S3's answer (too large, an expired policy), whatever the status
        return _failed(path, exc)
    except OSError as exc:
        return Sent(path, error=f"cannot read it: {exc.strerror or exc}")
    return Sent(path, upload=upload)


def _failed(path: Path, exc: ApiError) -> Sent:
    return Sent(path, error=str(exc), status=exc.status, code=exc.code)


def wait_indexed(api: ApiClient, uploaded: list[Sent], args: argparse.Namespace) -> int:
    """Wait for the uploads to be indexed (``ApiClient.wait_indexed``), with a bar of them; how many were not."""
    bar = Bar(total=len(uploaded), unit="img", desc="indexing", terminal_only=True, leave=False)
    began = time.monotonic()
    try:
        by_id = {s.upload["id"]: s for s in uploaded if s.upload is not None}
        missing = set(api.wait_indexed(list(by_id), timeout=args.timeout, on_indexed=lambda _image: bar.update()))
    finally:
        bar.close()
    for image_id, s in by_id.items():
        s.indexed = image_id not in missing
        if not s.indexed:
            print(f"imgsim upload: {s.path}: not indexed within {args.timeout:.0f} s ({image_id})", file=sys.stderr)
    if not args.json:
        print(f"indexed {len(by_id) - len(missing)} of {len(by_id)} in {time.monotonic() - began:.1f} s")
        if missing:
            print("files the indexer cannot decode are never indexed: the stack's dead-letter queue and "
                  "IndexFunction's logs say why", file=sys.stderr)
    return len(missing)


def _amount(size: float) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.0f} kB"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
