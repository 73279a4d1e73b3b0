"""`imgsim reindex --model NAME [s3://bucket[/prefix]]`: a model switch without downtime.

Builds ``<QDRANT_COLLECTION>__NAME`` from the bucket with the backfill machinery (the same
``imgsim.pipeline`` the Lambda runs, the new model's embedder), then points the alias
``QDRANT_COLLECTION`` at it in one step (imgsim.deployment). Meanwhile searches keep using the
served collection, and the functions, once deployed with ``Model=NAME``, write every upload and
delete to both collections.

Passes, each safe to interrupt and re-run (an object whose point already has the listed ETag and
model is skipped without being downloaded, so a re-run resumes where the last one stopped):

1. **fill**: every object of the listing, indexed into the new collection;
2. **catch-up**: a second listing; what was uploaded or replaced during the fill is indexed (the
   rest is skipped as unchanged), and points whose object is gone are removed through the
   indexer's delete path (tombstones included) — only points indexed before this listing
   started, so an upload indexed by the functions meanwhile is never taken for a leftover;
3. **switch**: only when nothing failed (transient failures: run again). A collection from before
   per-model names cannot share its name with an alias: it is dropped first, so searches see a gap
   of one request there; with per-model collections the switch is atomic.

Running functions follow the alias within ``IMGSIM_ALIAS_TTL`` (30 s). ``--drop-old`` waits twice
that, then deletes the previous collection and its companions.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from imgsim.deployment import collection_for, resolve
from imgsim.pipeline import (
    DELETE,
    FAILED,
    INDEXED,
    SKIPPED,
    BatchReport,
    IndexingPipeline,
    ObjectEvent,
    build,
)
from imgsim.points import utc_now_iso
from imgsim.settings import IndexSettings
from imgsim.store import Catalog, StorageOptions

from .backfill import chunks, list_objects, listed_events, parse_s3_uri


@dataclass
class Progress:
    """Where a reindex is: what the CLI's progress bar and the local stack's status route show."""

    model: str
    target: str
    phase: str = "starting"  # fill, catch-up, switch, done, failed
    listed: int = 0
    indexed: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    removed: int = 0
    switched: bool = False
    previous: str | None = None
    error: str | None = None
    failures: list[str] = field(default_factory=list)

    def count(self, report: BatchReport) -> None:
        self.indexed += report.count(INDEXED)
        self.failed += report.count(FAILED)
        reasons = report.skipped_by_reason()
        self.unchanged += reasons.pop("unchanged", 0)
        self.skipped += sum(reasons.values())
        self.failures.extend(f"{o.key}: {o.reason}" for o in report.outcomes if o.status == FAILED)
        del self.failures[20:]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Reindexer:
    """Fill, catch up, switch (module docstring). ``on_progress`` is called after every batch."""

    def __init__(
        self, *, catalog: Catalog, alias: str, model: str, embedder: Any, s3: Any, bucket: str, prefix: str = "",
        options: StorageOptions | None = None, dims: dict[str, int] | None = None, batch_size: int = 32,
        concurrency: int = 8, on_progress: Callable[[Progress], None] | None = None,
        index_options: IndexSettings | None = None,
    ) -> None:
        """``index_options``: how the pipeline indexes (the process's IMGSIM_* settings; ``concurrency`` wins
        over their fetch concurrency)."""
        self.catalog, self.alias, self.model, self.embedder = catalog, alias, model, embedder
        self.s3, self.bucket, self.prefix = s3, bucket, prefix
        self.options = options
        self.index_options = index_options or IndexSettings()
        self.dims = {**(dims or {}), model: embedder.dim}
        self.batch_size, self.concurrency = max(1, batch_size), max(1, concurrency)
        self.on_progress = on_progress or (lambda progress: None)
        self.progress = Progress(model=model, target=collection_for(alias, model))

    def run(self, *, switch: bool = True) -> Progress:
        progress = self.progress
        try:
            layout = resolve(self.catalog, self.alias, self.model, dim_of=self.dims, options=self.options)
            progress.previous = layout.serving.collection
            store = self.catalog.open_store(progress.target, dim=self.embedder.dim, options=self.options)
            pipeline = build(store=store, embedder=self.embedder, s3=self.s3,
                             options=dataclasses.replace(self.index_options, fetch_concurrency=self.concurrency))
            progress.phase = "fill"
            self._index_listing(pipeline)
            progress.phase = "catch-up"
            since = utc_now_iso()
            keys = self._index_listing(pipeline)
            self._remove_gone(pipeline, store, keys, since)
            if progress.failed:
                progress.phase = "failed"
                progress.error = f"{progress.failed} objects failed (transient): run again, it resumes"
            elif switch and layout.serving.collection != progress.target:
                progress.phase = "switch"
                if layout.serving.collection == self.alias:  # a collection named like the alias: no atomic swap
                    self.catalog.drop(self.alias)
                self.catalog.switch_alias(self.alias, progress.target)
                progress.switched = True
                progress.phase = "done"
            else:
                progress.phase = "done"
        except Exception as exc:
            progress.phase, progress.error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.on_progress(progress)
        return progress

    def _index_listing(self, pipeline: IndexingPipeline) -> set[str]:
        keys: set[str] = set()

        def batches() -> Iterator[list[ObjectEvent]]:
            for chunk in chunks(list_objects(self.s3, self.bucket, self.prefix), self.batch_size):
                keys.update(obj["Key"] for obj in chunk)
                self.progress.listed += len(chunk)
                yield listed_events(self.bucket, chunk, "ObjectCreated:Reindex", only_if_changed=True)

        for report in pipeline.stream(batches()):
            self.progress.count(report)
            self.on_progress(self.progress)
        return keys

    def _remove_gone(self, pipeline: IndexingPipeline, store: Any, keys: set[str], since: str) -> None:
        """Points of this bucket and prefix whose object was not in the last listing, indexed before it began."""
        offset: str | None = None
        gone: list[ObjectEvent] = []
        while True:
            records, offset = store.scroll(limit=1000, offset=offset, fields=["bucket", "key", "indexed_at"])
            for record in records:
                key, bucket = record.payload.get("key"), record.payload.get("bucket")
                if (bucket == self.bucket and isinstance(key, str) and key.startswith(self.prefix)
                        and key not in keys and str(record.payload.get("indexed_at", "")) < since):
                    gone.append(ObjectEvent(message_id=key, action=DELETE, bucket=bucket, key=key,
                                            event_name="ObjectRemoved:Reindex"))
            if offset is None:
                break
        for start in range(0, len(gone), self.batch_size):
            report = pipeline.process_events(gone[start:start + self.batch_size])
            self.progress.removed += sum(1 for o in report.outcomes if o.status not in (FAILED, SKIPPED))
            self.progress.count(report)
            self.on_progress(self.progress)

    def drop_previous(self, wait_s: float) -> bool:
        """After a switch: wait until running functions have re-read the alias, then drop the old collection."""
        previous = self.progress.previous
        if not self.progress.switched or not previous or previous in (self.progress.target, self.alias):
            return False
        time.sleep(wait_s)
        self.catalog.drop(previous)
        return True


# ------------------------------------------------------------------------------------------------ CLI


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


def bucket_and_prefix(uri: str | None) -> tuple[str, str]:
    import os

    from imgsim.errors import ConfigError

    if uri:
        return parse_s3_uri(uri)
    bucket = os.environ.get("IMAGES_BUCKET")
    if not bucket:
        raise ConfigError("name the bucket (s3://bucket[/prefix]) or set IMAGES_BUCKET")
    return bucket, ""


def reindexer_from_runtime(model: str, uri: str | None, *, batch_size: int = 32, concurrency: int = 8,
                           on_progress: Callable[[Progress], None] | None = None) -> Reindexer:
    """A Reindexer on the process's runtime (its catalog, embedders and S3 client: shared with the
    functions when run inside the local stack)."""
    from imgsim import runtime
    from imgsim.store import storage_options

    bucket, prefix = bucket_and_prefix(uri)
    settings = runtime.get_settings()
    embedder = runtime.get_embedder(model)
    dims = {runtime.configured_model(): runtime.get_embedder(runtime.configured_model()).dim}
    return Reindexer(
        catalog=runtime.get_catalog(), alias=settings.collection, model=model, embedder=embedder,
        s3=runtime.get_boto3_client("s3"), bucket=bucket, prefix=prefix, options=storage_options(settings),
        dims=dims, batch_size=batch_size, concurrency=concurrency, on_progress=on_progress,
        index_options=runtime.get_app_settings().index,
    )


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


class Bar:
    """tqdm over the listed objects, its postfix the counts (none with --quiet or without tqdm)."""

    def __init__(self, quiet: bool) -> None:
        self.bar: Any = None
        if not quiet:
            try:
                from tqdm import tqdm

                self.bar = tqdm(unit="obj", desc="reindex", file=sys.stderr)
            except ImportError:
                pass
        self.lock = threading.Lock()

    def update(self, progress: Progress) -> None:
        if self.bar is None:
            return
        with self.lock:
            self.bar.set_description(f"reindex ({progress.phase})")
            self.bar.n = progress.listed
            self.bar.set_postfix(indexed=progress.indexed, unchanged=progress.unchanged, failed=progress.failed,
                                 refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    from imgsim import runtime

    from imgsim_tools.reindex_stack import run_in_stack

    if args.stack:
        return run_in_stack(args)
    from imgsim.errors import StoreLocked

    started = time.perf_counter()
    bar = Bar(args.quiet)
    try:
        reindexer = reindexer_from_runtime(args.model, args.uri, batch_size=args.batch_size,
                                           concurrency=args.concurrency, on_progress=bar.update)
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
        wait = 2 * runtime.get_settings().alias_ttl_s
        print(f"  waiting {wait:.0f} s for running functions to follow the alias, then dropping {progress.previous}")
        if reindexer.drop_previous(wait):
            print(f"  dropped {progress.previous}")
    return 0 if progress.phase == "done" else 1
