"""What the search API's services share: ids as callers give them, and results as callers see them."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidRequest
from ..store import SearchHit
from .ports import ObjectStorage

# Payload fields every result carries (search, recommend).
RESULT_FIELDS = ("bucket", "key", "width", "height", "content_type", "size", "indexed_at")


def point_id(value: str) -> str:
    """Point ids are UUIDs (``imgsim.ids``); anything else is a bad parameter, not an error from Qdrant."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError) as exc:
        raise InvalidRequest(f"{value!r} is not an image id (a UUID)") from exc


def image_url(objects: ObjectStorage, payload: Mapping[str, Any], expires_in: int) -> str | None:
    """A presigned GET of the image's object; None for a point indexed from a local file (no S3 object)."""
    bucket, key = payload.get("bucket"), payload.get("key")
    if not bucket or not key:
        return None
    return objects.presign_get(str(bucket), str(key), expires_in=expires_in)


def result(hit: SearchHit, objects: ObjectStorage, expires_in: int, similar_threshold: float) -> dict[str, Any]:
    """One hit as a result: id, score, percent, the payload's RESULT_FIELDS, a URL, and whether it is "similar"."""
    item: dict[str, Any] = {"id": hit.id, "score": round(hit.score, 6), "percent": hit.percent}
    for name in RESULT_FIELDS:
        item[name] = hit.payload.get(name)
    item["url"] = image_url(objects, hit.payload, expires_in)
    item["similar"] = item["score"] >= similar_threshold
    return item
