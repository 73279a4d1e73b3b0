"""Deterministic point ids: the same object always maps to the same Qdrant point.

Re-indexing an object (redelivery, re-upload, backfill) therefore overwrites its
point instead of adding a duplicate.
"""

from __future__ import annotations

import os
import uuid

# A fixed namespace of our own, so ids never collide with other UUIDv5 users of URLs.
IMGSIM_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/imgsim/imgsim")


def object_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def point_id_for_object(bucket: str, key: str) -> str:
    """UUIDv5 of ``s3://bucket/key`` (the key already URL-decoded)."""
    return str(uuid.uuid5(IMGSIM_NAMESPACE, object_uri(bucket, key)))


def point_id_for_file(path: str | os.PathLike[str]) -> str:
    """UUIDv5 of the absolute, normalized path of a local file."""
    return str(uuid.uuid5(IMGSIM_NAMESPACE, os.path.abspath(os.fspath(path))))
