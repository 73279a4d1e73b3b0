"""One indexing pipeline for every entry point: the IndexFunction, ``imgsim index``, ``imgsim backfill``,
``imgsim reindex`` and the local stack all index through it, so an image indexed on a laptop is stored — vector,
payload, duplicate record — exactly as one uploaded to the bucket.

The stages, each a module with a narrow interface (a reader can follow a batch top to bottom in ``core``):

====================  ======================================================================================
source                S3 notifications from SQS (``sqs``, powertools' event classes) or local files (``files``)
                      -> ``ObjectEvent`` (``events``)
fetch                 S3 GET with a ranged header pre-check, or a file read (``fetch``)
decode                in parallel within ``IMGSIM_MAX_DECODE_MB`` (``BudgetGate``); redelivered records in a
                      forked child; bounded by the invocation's deadline (``decoding``)
embed                 one vector per image (``embedding``)
duplicate check       signatures, in-batch comparison, root linking, re-check of dependents (``duplicate_check``)
ordered write         sequencers, tombstones, compare-and-set and read-back (``ordered_write``, ``imgsim.ordering``)
report                one outcome per event, the ``BatchReport``, logging of skips and failures (``report``)
====================  ======================================================================================

``Pipeline`` (``core``) runs them; ``RebuildingPipeline`` and ``UnavailablePipeline`` (``variants``) share its
interface, ``IndexingPipeline``. ``build(store=..., embedder=..., s3=..., options=IndexSettings(...))``
(``compose``) assembles one from explicit objects: the pipeline reads no environment variable and holds no
process global; its callers hand it what they built.

Figures (docs/performance.md "Indexing", docs/duplicates.md): an SQS batch of 10 is fetched concurrently, decoded one
image per CPU, embedded at ~1.37 ms per image, checked for duplicates at ~9 ms per image (signature and searches)
and written in one conditional upsert. ``imgsim index`` and ``imgsim backfill`` stream their batches
(``Pipeline.stream``): one batch is read and decoded while the one before it is embedded and the one before that
stored.
"""

from __future__ import annotations

from .compose import build
from .core import IndexingPipeline, Message, Pipeline
from .decoding import BudgetGate, Decode
from .duplicate_check import DuplicateCheck
from .embedding import Embed, ImageEmbedder
from .events import (
    DEADLINE_MARGIN_S,
    DELETE,
    FILE,
    PUT,
    S3,
    Deadline,
    Item,
    ObjectEvent,
)
from .fetch import PRECHECK_ABOVE, PRECHECK_RANGE, Fetch, FileFetch, S3Fetch
from .files import file_event, file_events
from .ordered_write import OrderedWrite, newest_per_key
from .report import (
    DELETED,
    FAILED,
    INDEXED,
    ROUTINE_SKIPS,
    SKIPPED,
    BatchReport,
    EventOutcome,
    LogReporter,
    Reporter,
)
from .variants import RebuildingPipeline, UnavailablePipeline

__all__ = [
    "DEADLINE_MARGIN_S",
    "DELETE",
    "DELETED",
    "FAILED",
    "FILE",
    "INDEXED",
    "PRECHECK_ABOVE",
    "PRECHECK_RANGE",
    "PUT",
    "ROUTINE_SKIPS",
    "S3",
    "SKIPPED",
    "BatchReport",
    "BudgetGate",
    "Deadline",
    "Decode",
    "DuplicateCheck",
    "Embed",
    "EventOutcome",
    "Fetch",
    "FileFetch",
    "ImageEmbedder",
    "IndexingPipeline",
    "Item",
    "LogReporter",
    "Message",
    "ObjectEvent",
    "OrderedWrite",
    "Pipeline",
    "RebuildingPipeline",
    "Reporter",
    "S3Fetch",
    "UnavailablePipeline",
    "build",
    "file_event",
    "file_events",
    "newest_per_key",
]
