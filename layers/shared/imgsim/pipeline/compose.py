"""``build``: the one way to assemble a pipeline, from explicit objects (no environment, no process globals).

Every entry point builds it the same way from what it already holds: the IndexFunction from its per-process
store, embedder and S3 client (functions/index/app.py), ``imgsim index`` from the CLI's session (no S3 client:
local files only), ``imgsim backfill`` and ``imgsim reindex`` from theirs.
"""

from __future__ import annotations

import logging
from typing import Any, overload

from ..settings import IndexSettings
from ..store import VectorStore
from .core import Pipeline
from .decoding import Decode
from .duplicate_check import DuplicateCheck
from .embedding import Embed, ImageEmbedder
from .events import FILE, S3
from .fetch import PRECHECK_ABOVE, Fetch, Fetcher, FileFetch, S3Fetch
from .ordered_write import OrderedWrite
from .report import LogReporter, Reporter
from .variants import RebuildingPipeline


@overload
def build(
    *, store: VectorStore, embedder: ImageEmbedder, s3: Any = ..., options: IndexSettings = ...,
    logger: logging.Logger | Any | None = ..., reporter: Reporter | None = ..., building: None = ...,
    precheck_bytes: int = ...,
) -> Pipeline: ...


@overload
def build(
    *, store: VectorStore, embedder: ImageEmbedder, s3: Any = ..., options: IndexSettings = ...,
    logger: logging.Logger | Any | None = ..., reporter: Reporter | None = ...,
    building: tuple[VectorStore, ImageEmbedder], precheck_bytes: int = ...,
) -> RebuildingPipeline: ...


@overload
def build(
    *, store: VectorStore, embedder: ImageEmbedder, s3: Any = ..., options: IndexSettings = ...,
    logger: logging.Logger | Any | None = ..., reporter: Reporter | None = ...,
    building: tuple[VectorStore, ImageEmbedder] | None, precheck_bytes: int = ...,
) -> Pipeline | RebuildingPipeline: ...


def build(
    *, store: VectorStore, embedder: ImageEmbedder, s3: Any = None, options: IndexSettings | None = None,
    logger: logging.Logger | Any | None = None, reporter: Reporter | None = None,
    building: tuple[VectorStore, ImageEmbedder] | None = None, precheck_bytes: int = PRECHECK_ABOVE,
) -> Pipeline | RebuildingPipeline:
    """A pipeline writing to ``store`` with ``embedder``.

    ``s3``: a boto3 S3 client for S3 events (None: local files only); ``options``: ignored prefixes, fetch
    concurrency, isolation, the duplicate check (``IndexSettings()``: the defaults); ``logger``: where the default
    reporter logs each outcome (powertools' Logger in the Lambda) — or ``reporter`` to hear outcomes yourself;
    ``building``: the store and embedder of the collection a model switch is building (a ``RebuildingPipeline``
    writes both); ``precheck_bytes``: objects larger (or of unknown size) are judged from their header first.
    """
    options = options or IndexSettings()
    reporter = reporter or LogReporter(logger)
    serving = _pipeline(store, embedder, s3, options, reporter, precheck_bytes)
    if building is None:
        return serving
    other_store, other_embedder = building
    return RebuildingPipeline(serving, _pipeline(other_store, other_embedder, s3, options, reporter, precheck_bytes))


def _pipeline(store: VectorStore, embedder: ImageEmbedder, s3: Any, options: IndexSettings, reporter: Reporter,
              precheck_bytes: int) -> Pipeline:
    settings = embedder.settings
    fetchers: dict[str, Fetcher] = {FILE: FileFetch(settings.max_image_bytes)}
    if s3 is not None:
        fetchers[S3] = S3Fetch(s3, settings, precheck_bytes=precheck_bytes)
    threshold = options.duplicate_check
    return Pipeline(
        fetch=Fetch(fetchers, max_bytes=settings.max_image_bytes, concurrency=options.fetch_concurrency),
        decode=Decode(embedder.decode, budget_bytes=settings.max_decode_mb * 2**20, isolate_after=options.isolate_after,
                      isolated_timeout_s=options.isolated_timeout_s),
        embed=Embed(embedder),
        write=OrderedWrite(store, embedder.model_name),
        duplicates=DuplicateCheck(store, embedder, threshold, reporter) if threshold is not None else None,
        reporter=reporter,
        ignore_prefixes=options.ignore_prefixes,
    )


__all__ = ["build"]
