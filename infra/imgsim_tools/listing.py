"""A bucket's objects as ``imgsim backfill`` and ``imgsim reindex`` read them: one listing, one conversion.

Both walk ``s3://bucket/prefix`` with boto3's ``list_objects_v2`` paginator in batches and hand each batch to
the indexer as put events carrying the ETag and size S3 lists, so an object already indexed unchanged is
skipped without being downloaded (``only_if_changed``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlparse

from imgsim.errors import ConfigError
from imgsim.pipeline import PUT, ObjectEvent

Listed = dict[str, Any]  # one entry of list_objects_v2's Contents: Key, ETag, Size, LastModified


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket[/prefix]`` -> (bucket, prefix)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigError(f"expected s3://bucket[/prefix], got {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def list_objects(s3: Any, bucket: str, prefix: str, *, page_size: int = 1000) -> Iterator[Listed]:
    """Every object under ``prefix`` (list_objects_v2 pages), folder markers left out."""
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):
                yield obj


def batches(items: Iterable[Listed], size: int) -> Iterator[list[Listed]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    batch: list[Listed] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def etag_of(obj: Listed) -> str | None:
    """The listed ETag without the quotes S3 puts around it."""
    return str(obj.get("ETag", "")).strip('"') or None


def listed_events(bucket: str, listed: list[Listed], event_name: str, *, only_if_changed: bool) -> list[ObjectEvent]:
    """Put events for listed objects (their ETag and size as S3 lists them), for the indexer."""
    return [
        ObjectEvent(message_id=obj["Key"], action=PUT, bucket=bucket, key=obj["Key"], etag=etag_of(obj),
                    size=obj.get("Size"), event_name=event_name, only_if_changed=only_if_changed)
        for obj in listed
    ]
