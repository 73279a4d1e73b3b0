"""The payload stored with every point: enough to show and filter results without a second lookup."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .decode import DecodedImage
from .quality import QUALITY_FIELD, jpeg_quality_of, measure
from .store import TENANT_FIELD, key_dirs


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def image_payload(
    *,
    key: str,
    image: DecodedImage,
    size: int,
    model: str,
    bucket: str | None = None,
    etag: str | None = None,
    sequencer: str | None = None,
    content_type: str | None = None,
    source: str = "s3",
    tenant: str | None = None,
) -> dict[str, Any]:
    """``key`` is the S3 object key, or a local file's absolute path (``source="file"``); ``tenant``: whose image it
    is (``imgsim.tenants``; None: no tenant, and no field)."""
    payload: dict[str, Any] = {
        "source": source,
        "key": key,
        "dirs": key_dirs(key),
        "size": size,
        "content_type": content_type or image.content_type,
        "format": image.format,
        "width": image.width,
        "height": image.height,
        "model": model,
        "indexed_at": utc_now_iso(),
        QUALITY_FIELD: measure(image.pixels, width=image.width, height=image.height, source_format=image.format,
                               jpeg_quality=jpeg_quality_of(image.jpeg_table)),
    }
    if bucket is not None:
        payload["bucket"] = bucket
    if etag is not None:
        payload["etag"] = etag
    if sequencer is not None:
        payload["sequencer"] = sequencer
    if tenant is not None:
        payload[TENANT_FIELD] = tenant
    return payload
