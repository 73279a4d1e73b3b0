"""`imgsim backfill s3://bucket/prefix`: index objects that were in the bucket before the queue was.

By default the objects are indexed directly from this machine through the same
``imgsim.pipeline`` the Lambda runs (concurrent fetch, batch embed, one upsert per
batch, the next batch fetched while this one is embedded): it needs no deployed
stack, and its progress and summary are exact because it sees every outcome. ``--via-queue URL`` instead sends each
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
import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus, urlparse

from imgsim.errors import ConfigError, StoreUnavailable
from imgsim.pipeline import (
    FAILED,
    INDEXED,
    PUT,
    SKIPPED,
    BatchReport,
    IndexingPipeline,
    ObjectEvent,
    UnavailablePipeline,
    build,
)


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


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigError(f"expected s3://bucket[/prefix], got {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def list_objects(s3: Any, bucket: str, prefix: str, *, page_size: int = 1000) -> Iterator[dict[str, Any]]:
    """Every object under ``prefix`` (list_objects_v2 pages), folder markers left out."""
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):
                yield obj


def chunks(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def listed_events(bucket: str, listed: list[dict[str, Any]], event_name: str, *, only_if_changed: bool) -> list[ObjectEvent]:
    """Put events for listed objects (their ETag and size as S3 lists them), for the indexer."""
    return [
        ObjectEvent(message_id=obj["Key"], action=PUT, bucket=bucket, key=obj["Key"],
                    etag=str(obj.get("ETag", "")).strip('"') or None, size=obj.get("Size"),
                    event_name=event_name, only_if_changed=only_if_changed)
        for obj in listed
    ]


def pipeline_from_runtime(runtime: Any, *, concurrency: int) -> IndexingPipeline:
    """The pipeline the IndexFunction builds (functions/index/app.py), on this process's runtime, with the
    backfill's own fetch concurrency: during a model switch it writes both collections, as the functions do."""
    options = dataclasses.replace(runtime.get_app_settings().index, fetch_concurrency=max(1, concurrency))
    try:
        return build(store=runtime.get_store(), embedder=runtime.get_embedder(), s3=runtime.get_boto3_client("s3"),
                     options=options, building=runtime.get_building())
    except StoreUnavailable as exc:
        return UnavailablePipeline(str(exc))


def backfill_event(bucket: str, obj: dict[str, Any], *, force: bool) -> dict[str, Any]:
    """An S3 notification record for a listed object, as the index queue expects it.

    It has no ``sequencer`` (S3 only stamps real events); ``imgsimBackfill``
    asks the indexer to skip the object when it is already indexed unchanged.
    """
    return {
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "imgsim-backfill"},
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(obj["Key"]), "size": obj["Size"],
                          "eTag": str(obj.get("ETag", "")).strip('"')}},
        "imgsimBackfill": not force,
    }


def _progress(total: int | None, quiet: bool) -> Any:
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # the CLI extra brings tqdm; without it, the summary alone
        return None
    return tqdm(total=total, unit="obj", desc="backfill", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from imgsim import runtime

    bucket, prefix = parse_s3_uri(args.uri)
    s3 = runtime.get_boto3_client("s3")
    started = time.perf_counter()
    if args.via_queue:
        return _enqueue(s3, runtime.get_boto3_client("sqs"), bucket, prefix, args, started)

    pipeline = pipeline_from_runtime(runtime, concurrency=args.concurrency)
    total = BatchReport()
    bar = _progress(None, args.quiet)
    listed = 0

    def batches() -> Iterator[list[ObjectEvent]]:
        nonlocal listed
        for chunk in chunks(list_objects(s3, bucket, prefix), max(1, args.batch_size)):
            listed += len(chunk)
            yield listed_events(bucket, chunk, "ObjectCreated:Backfill", only_if_changed=not args.force)

    for report in pipeline.stream(batches()):
        total.outcomes.extend(report.outcomes)
        for stage, ms in report.timings_ms.items():
            total.timings_ms[stage] = total.timings_ms.get(stage, 0.0) + ms
        if bar is not None:
            bar.update(len(report.message_ids))
            bar.set_postfix(indexed=total.count(INDEXED), skipped=total.count(SKIPPED), failed=total.count(FAILED))
    if bar is not None:
        bar.close()
    print_summary(args.uri, listed, total, time.perf_counter() - started)
    return 1 if total.count(FAILED) else 0


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


def _enqueue(s3: Any, sqs: Any, bucket: str, prefix: str, args: argparse.Namespace, started: float) -> int:
    bar = _progress(None, args.quiet)
    listed = sent = 0
    failed: list[str] = []
    for chunk in chunks(list_objects(s3, bucket, prefix), 10):  # SendMessageBatch takes 10 entries
        listed += len(chunk)
        entries = [
            {"Id": str(i), "MessageBody": json.dumps({"Records": [backfill_event(bucket, obj, force=args.force)]})}
            for i, obj in enumerate(chunk)
        ]
        response = sqs.send_message_batch(QueueUrl=args.via_queue, Entries=entries)
        sent += len(response.get("Successful", []))
        failed.extend(chunk[int(f["Id"])]["Key"] for f in response.get("Failed", []))
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    print(f"backfill {args.uri}: {listed} objects listed, {sent} enqueued on {args.via_queue} in {seconds:.1f} s")
    if failed:
        print(f"  {len(failed)} could not be enqueued (run again): {', '.join(failed[:20])}")
    return 1 if failed else 0
