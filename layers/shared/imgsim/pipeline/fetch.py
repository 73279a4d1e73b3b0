"""Stage: the bytes of each put — an S3 GET, or a local file read.

S3 latency dominates a batch, so objects are fetched on ``fetch_concurrency`` threads (boto3 clients are
thread-safe); local files are read inline, where a thread hop costs more than the read (400 photos of ~11 kB
through `imgsim index`: 118-210 ms on 8 threads, 33-36 ms inline). Objects whose size is known to be over ``IMGSIM_MAX_IMAGE_BYTES`` are never downloaded; objects over
``precheck_bytes`` (1 MiB) or of unknown size are first judged from a ranged GET of their first
``PRECHECK_RANGE`` bytes (``imgsim.decode.check_header``): a 144-megapixel PNG or a JPEG whose decode would
exceed the budget is skipped after 64 KiB instead of a full download. Anything inconclusive is left to the decode.

Failures are the event's outcome, never an exception: an object deleted since its put is ``object_missing``
(its delete event follows and wins), throttling / 5xx / connection errors fail it for redelivery.

The mirror case, for deletes of points a restore wrote back: ``recreated`` asks S3 (a HEAD) whether the object of
a delete event is there again. It then is, by S3's strong consistency, the object of a later put whose event
follows and wins. An image restored from the trash while the delete event of its move to the trash is still queued
gets its point back at once (the restore writes it); that late delete would remove it until the restore's own put
event re-indexes it (seen as a flaky duplicate group in the page's test, 1 run in 10). Only restored points are
checked: for any other delete the sequencers decide, as before, with no S3 request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from ..decode import check_header
from ..errors import ImageError, ImageTooLarge
from ..settings import Settings
from .events import Deadline, Item, ObjectEvent

# Bytes fetched to judge a large object from its header before downloading it whole.
PRECHECK_RANGE = 64 * 1024
# Objects larger than this (or of unknown size) are judged from their header first.
PRECHECK_ABOVE = 1024 * 1024

# S3 error codes meaning "the object is gone": not an error for a put event,
# the delete event that removed it follows (or already came) and wins.
MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class Fetcher(Protocol):
    """Fills ``item.data`` / ``size`` / ``etag``, or ends the item with an outcome. ``concurrent``: worth a thread
    per fetch (network latency), or read inline (a local file: a thread hop costs more than the read)."""

    @property
    def concurrent(self) -> bool: ...

    def fetch(self, item: Item) -> None: ...

    def exists(self, bucket: str, key: str) -> bool | None:
        """Whether the object is there now; None when that cannot be told (the delete goes on, as before)."""


def too_large(size: int, limit: int) -> str:
    return f"{ImageTooLarge.code}: {size} bytes > limit {limit}"


class S3Fetch:
    """GET of an S3 object, with the ranged header pre-check for large ones."""

    concurrent = True

    def __init__(self, s3: Any, settings: Settings, *, precheck_bytes: int = PRECHECK_ABOVE) -> None:
        self.s3 = s3
        self.settings = settings
        self.precheck_bytes = precheck_bytes

    def fetch(self, item: Item) -> None:
        event = item.event
        max_bytes = self.settings.max_image_bytes
        try:
            if (event.size is None or event.size > self.precheck_bytes) and self._refused_from_header(item):
                return
            response = self.s3.get_object(Bucket=event.bucket, Key=event.key)
            length = int(response.get("ContentLength") or 0)
            if length > max_bytes:
                response["Body"].close()
                item.skip(too_large(length, max_bytes), poison=True)
                return
            item.data = response["Body"].read()
            item.size = len(item.data)
            item.etag = str(response.get("ETag") or "").strip('"') or None
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "ClientError"))
            if code in MISSING_OBJECT_CODES:
                item.skip("object_missing")
            else:
                # Throttling, 5xx, access denied...: redeliver; the DLQ catches what never succeeds.
                item.fail(f"s3_error: {code}", exc)
        except (BotoCoreError, OSError) as exc:  # connection errors, timeouts, truncated reads
            item.fail(f"s3_error: {type(exc).__name__}: {exc}", exc)

    def exists(self, bucket: str, key: str) -> bool | None:
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            return False if code in MISSING_OBJECT_CODES else None
        except (BotoCoreError, OSError):
            return None
        return True

    def _refused_from_header(self, item: Item) -> bool:
        """Judge a large object from its first PRECHECK_RANGE bytes: poison over a limit is skipped
        without downloading it. Anything inconclusive leaves the decision to the full decode."""
        settings = self.settings
        head = self.s3.get_object(Bucket=item.event.bucket, Key=item.event.key, Range=f"bytes=0-{PRECHECK_RANGE - 1}")
        try:
            check_header(head["Body"].read(), max_pixels=settings.max_pixels,
                         max_decode_bytes=settings.max_decode_mb * 2**20, max_decode_ms=settings.max_decode_ms)
        except ImageError as exc:
            item.skip(f"{exc.code}: {exc} (judged from the header)", poison=True, error=exc)
            return True
        return False


class FileFetch:
    """A local file's bytes: one byte over the limit is enough for the decoder to refuse an oversized file
    without reading all of it."""

    concurrent = False

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def fetch(self, item: Item) -> None:
        try:
            with open(item.event.key, "rb") as fh:
                data = fh.read(self.max_bytes + 1)
        except OSError as exc:  # gone since it was listed, unreadable, a dangling link: nothing to retry here
            item.fail(f"read_error: {exc.strerror or exc}", exc)
            return
        item.data, item.size = data, len(data)
        if len(data) <= self.max_bytes:
            item.etag = hashlib.md5(data, usedforsecurity=False).hexdigest()  # S3's ETag of a single-part upload

    def exists(self, bucket: str, key: str) -> bool | None:
        """Not asked: a local file's delete comes from the command that removes its point."""
        return None


class Fetch:
    """The stage: each pending put's bytes from the fetcher of its origin, ``concurrency`` at a time."""

    def __init__(self, fetchers: Mapping[str, Fetcher], *, max_bytes: int, concurrency: int = 8) -> None:
        self.fetchers = dict(fetchers)
        self.max_bytes = max_bytes
        self.concurrency = max(1, concurrency)

    def refuse_oversized(self, items: Sequence[Item]) -> None:
        """Known from the event alone: do not download it at all."""
        for item in items:
            size = item.event.size
            if item.pending and size is not None and size > self.max_bytes:
                item.skip(too_large(size, self.max_bytes), poison=True)

    def recreated(self, deletes: Sequence[ObjectEvent]) -> set[str]:
        """The point ids of the delete events whose object is there again (a later put's event follows)."""

        def there(event: ObjectEvent) -> bool:
            fetcher = self.fetchers.get(event.origin)
            return fetcher is not None and fetcher.exists(event.bucket or "", event.key) is True

        asked = [e for e in deletes if e.origin in self.fetchers]
        if not asked:
            return set()
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(asked))) as pool:
            found = list(pool.map(there, asked))
        return {event.point_id for event, again in zip(asked, found, strict=True) if again}

    def run(self, items: Sequence[Item], deadline: Deadline) -> None:
        remote: list[Item] = []
        for item in items:
            if not item.pending:
                continue
            fetcher = self.fetchers.get(item.event.origin)
            if fetcher is None or fetcher.concurrent:
                remote.append(item)
            else:
                self._one(item, deadline)
        if remote:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(remote))) as pool:
                list(pool.map(lambda item: self._one(item, deadline), remote))

    def _one(self, item: Item, deadline: Deadline) -> None:
        if deadline.passed():
            item.fail(Deadline.OUT_OF_TIME)
            return
        fetcher = self.fetchers.get(item.event.origin)
        if fetcher is None:
            item.fail(f"no_source: this pipeline cannot fetch {item.event.origin} objects")
            return
        fetcher.fetch(item)


__all__ = ["MISSING_OBJECT_CODES", "PRECHECK_ABOVE", "PRECHECK_RANGE", "Fetch", "Fetcher", "FileFetch", "S3Fetch"]
