"""A model switch without downtime: what `imgsim reindex --model NAME [s3://bucket[/prefix]]` does (the command is
``imgsim_tools.commands.reindex``; inside a running `imgsim serve`, ``imgsim_tools.reindex_stack`` runs it).

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

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imgsim.deployment import collection_for, resolve
from imgsim.errors import ConfigError
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
from imgsim.store import Catalog, StorageOptions, storage_options

from .listing import batches, list_objects, listed_events, parse_s3_uri

if TYPE_CHECKING:
    from .session import Session


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

        def listing() -> Iterator[list[ObjectEvent]]:
            for batch in batches(list_objects(self.s3, self.bucket, self.prefix), self.batch_size):
                keys.update(obj["Key"] for obj in batch)
                self.progress.listed += len(batch)
                yield listed_events(self.bucket, batch, "ObjectCreated:Reindex", only_if_changed=True)

        for report in pipeline.stream(listing()):
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


def bucket_and_prefix(uri: str | None, images_bucket: str | None) -> tuple[str, str]:
    """``s3://bucket[/prefix]``, or the deployment's bucket (IMAGES_BUCKET) when no URI is given."""
    if uri:
        return parse_s3_uri(uri)
    if not images_bucket:
        raise ConfigError("name the bucket (s3://bucket[/prefix]) or set IMAGES_BUCKET")
    return images_bucket, ""


def reindexer_for(session: Session, model: str, uri: str | None, *, batch_size: int = 32, concurrency: int = 8,
                  on_progress: Callable[[Progress], None] | None = None) -> Reindexer:
    """A Reindexer on a session's catalog, embedders and S3 client (inside the local stack: the runtime's, shared
    with the functions)."""
    bucket, prefix = bucket_and_prefix(uri, session.app_settings.api.images_bucket)
    settings = session.settings
    embedder = session.embedder_for(model)
    configured = session.configured_model()
    return Reindexer(
        catalog=session.catalog, alias=settings.collection, model=model, embedder=embedder,
        s3=session.client("s3"), bucket=bucket, prefix=prefix, options=storage_options(settings),
        dims={configured: session.embedder_for(configured).dim}, batch_size=batch_size, concurrency=concurrency,
        on_progress=on_progress, index_options=session.app_settings.index,
    )
