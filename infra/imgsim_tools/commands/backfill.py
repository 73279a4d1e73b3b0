"""`imgsim backfill s3://bucket/prefix`: index objects that were in the bucket before the queue was.

By default the objects are indexed directly from this machine through the same
``imgsim.pipeline`` the Lambda runs (concurrent fetch, batch embed, one
upsert per batch): it needs no deployed stack, and its progress and summary are
exact because it sees every outcome. ``--via-queue URL`` instead sends each
object as an S3-shaped notification to the index queue, for buckets so large
that the work should fan out over Lambda; the summary then only counts what
was enqueued (watch the queue and the DLQ).

Safe to re-run: point ids derive from bucket and key (no duplicates), and an
object whose stored point already has the listed ETag and the current model is
skipped without being downloaded, unless ``--force``. Objects listed but gone
by the time they are fetched are skipped; poison objects are skipped and
counted, exactly as in the Lambda.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from imgsim.pipeline import FAILED, INDEXED, SKIPPED, BatchReport, ObjectEvent

from ..events import s3_notification, s3_record
from ..listing import batches, etag_of, list_objects, listed_events, parse_s3_uri
from ..progress import Bar
from .common import EXIT_FAILURE, EXIT_OK

if TYPE_CHECKING:
    from ..session import Session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", help="s3://bucket or s3://bucket/prefix to index")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="parallel S3 downloads (default 8)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="objects per embed batch and upsert request (default 32)")
    parser.add_argument("--force", action="store_true",
                        help="re-index objects even when the stored ETag and model match")
    parser.add_argument("--via-queue", metavar="QUEUE_URL",
                        help="enqueue S3-shaped events on the index queue instead of indexing here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, session: Session) -> int:
    bucket, prefix = parse_s3_uri(args.uri)
    s3 = session.client("s3")
    started = time.perf_counter()
    if args.via_queue:
        return _enqueue(s3, session.client("sqs"), bucket, prefix, args, started)

    pipeline = session.indexer(fetch_concurrency=args.concurrency)
    total = BatchReport()
    bar = Bar(unit="obj", desc="backfill", quiet=args.quiet)
    listed = 0

    def listing() -> Iterator[list[ObjectEvent]]:
        nonlocal listed
        for batch in batches(list_objects(s3, bucket, prefix), max(1, args.batch_size)):
            listed += len(batch)
            yield listed_events(bucket, batch, "ObjectCreated:Backfill", only_if_changed=not args.force)

    # The next batch is listed and fetched while this one is embedded and written (Pipeline.stream).
    for report in pipeline.stream(listing()):
        total.outcomes.extend(report.outcomes)
        for stage, ms in report.timings_ms.items():
            total.timings_ms[stage] = total.timings_ms.get(stage, 0.0) + ms
        bar.update(len(report.message_ids))
        bar.show(indexed=total.count(INDEXED), skipped=total.count(SKIPPED), failed=total.count(FAILED))
    bar.close()
    print_summary(args.uri, listed, total, time.perf_counter() - started)
    return EXIT_FAILURE if total.count(FAILED) else EXIT_OK


def print_summary(uri: str, listed: int, report: BatchReport, seconds: float, out: Any = None) -> None:
    out = out or sys.stdout
    indexed = report.count(INDEXED)
    reasons = report.skipped_by_reason()
    unchanged = reasons.pop("unchanged", 0)
    print(f"backfill {uri}: {listed} objects listed in {seconds:.1f} s", file=out)
    print(f"  indexed   {indexed}" + (f" ({indexed / seconds:.1f} images/s)" if seconds > 0 and indexed else ""),
          file=out)
    print(f"  unchanged {unchanged} (already indexed with the same ETag and model; --force re-indexes)", file=out)
    print(f"  skipped   {sum(reasons.values())}", file=out)
    for reason, n in sorted(reasons.items()):
        print(f"    {n:6d}  {reason.split(':')[0]}", file=out)
    failed = [o for o in report.outcomes if o.status == FAILED]
    print(f"  failed    {len(failed)}" + (" (transient: run the backfill again)" if failed else ""), file=out)
    for outcome in failed[:20]:
        print(f"    {outcome.key}: {outcome.reason}", file=out)
    if len(failed) > 20:
        print(f"    ... and {len(failed) - 20} more", file=out)


def backfill_record(bucket: str, obj: dict[str, Any], *, force: bool) -> dict[str, Any]:
    """The S3 notification record for a listed object, as the index queue expects it: no ``sequencer`` (S3
    only stamps real events); unless ``force``, the indexer skips the object when it is indexed unchanged."""
    return s3_record(bucket, obj["Key"], size=obj["Size"], etag=etag_of(obj), only_if_changed=not force,
                     principal_id="imgsim-backfill")


def _enqueue(s3: Any, sqs: Any, bucket: str, prefix: str, args: argparse.Namespace, started: float) -> int:
    bar = Bar(unit="obj", desc="backfill", quiet=args.quiet)
    listed = sent = 0
    failed: list[str] = []
    for batch in batches(list_objects(s3, bucket, prefix), 10):  # SendMessageBatch takes 10 entries
        listed += len(batch)
        entries = [
            {"Id": str(i), "MessageBody": json.dumps(s3_notification(backfill_record(bucket, obj, force=args.force)))}
            for i, obj in enumerate(batch)
        ]
        response = sqs.send_message_batch(QueueUrl=args.via_queue, Entries=entries)
        sent += len(response.get("Successful", []))
        failed.extend(batch[int(f["Id"])]["Key"] for f in response.get("Failed", []))
        bar.update(len(batch))
    bar.close()
    seconds = time.perf_counter() - started
    print(f"backfill {args.uri}: {listed} objects listed, {sent} enqueued on {args.via_queue} in {seconds:.1f} s")
    if failed:
        print(f"  {len(failed)} could not be enqueued (run again): {', '.join(failed[:20])}")
    return EXIT_FAILURE if failed else EXIT_OK
