"""One indexed image: its details, deleting it, and uploading a new one (a presigned PUT)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..decode import EXTRA_CONTENT_TYPES, FORMAT_CONTENT_TYPES
from ..errors import (
    InvalidRequest,
    NotConfigured,
    NotDeletable,
    NotFound,
    UnsupportedImageType,
)
from ..ids import point_id_for_object
from ..settings import ApiSettings
from ..store import VectorStore
from .common import image_url, point_id
from .ports import ObjectStorage

# Content types an upload may announce: what the indexer can decode.
UPLOAD_CONTENT_TYPES = frozenset(FORMAT_CONTENT_TYPES.values()) | EXTRA_CONTENT_TYPES

_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_filename(filename: str, max_length: int = 100) -> str:
    """A safe last key segment: no folders, no spaces or odd characters, bounded length."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_FILENAME_CHARS.sub("_", name).strip("._")
    if len(name) > max_length:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: max_length - len(ext) - 1] + dot + ext) if dot and len(ext) < 10 else name[:max_length]
    return name or "image"


def media_type_of(content_type: str) -> str:
    """``"Image/JPEG; charset=x"`` -> ``"image/jpeg"``: the type without its parameters."""
    return content_type.split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class UploadRequest:
    """A file the caller is about to upload: its name (kept, sanitized, as the key's last segment) and type."""

    filename: str
    content_type: str

    def __post_init__(self) -> None:
        if not self.filename.strip():
            raise InvalidRequest("'filename' must be a non-empty string")
        if not self.content_type.strip():
            raise InvalidRequest("'content_type' must be given, e.g. \"image/jpeg\"")


class ImageService:
    """Get, delete, upload. The store comes from a callable: the served collection can change (a model switch)."""

    def __init__(self, settings: ApiSettings, *, store: Callable[[], VectorStore],
                 objects: Callable[[], ObjectStorage]) -> None:
        self.settings = settings
        self._store = store
        self._objects = objects

    def _payload(self, image_id: str) -> tuple[str, dict[str, Any]]:
        parsed = point_id(image_id)
        record = self._store().get(parsed)
        if record is None:
            raise NotFound(f"no indexed image with id {image_id}")
        return parsed, dict(record.payload or {})

    def get(self, image_id: str) -> dict[str, Any]:
        """The stored details (payload), the key of the image it duplicates if any, and a presigned GET URL."""
        parsed, payload = self._payload(image_id)
        payload.pop("dirs", None)  # an index helper for prefix filters, not information
        duplicate_of = payload.get("duplicate_of")
        if duplicate_of:
            # Recorded at indexing (imgsim.dedupe); the match's key makes it readable ("a duplicate of cats/1.jpg").
            match = self._store().get(str(duplicate_of))
            if match is None:  # deleted a moment ago; the indexer is re-checking this image
                payload.pop("duplicate_of", None)
                payload.pop("duplicate_score", None)
            else:
                payload["duplicate_key"] = match.payload.get("key")
        url = image_url(self._objects(), payload, self.settings.url_ttl)
        return {"id": parsed, **payload, "url": url}

    def check_deletable(self, image_id: str, payload: dict[str, Any]) -> tuple[str, str]:
        """The image's bucket and key, when its object is one this deployment manages; else ``NotDeletable``."""
        bucket, key = payload.get("bucket"), payload.get("key")
        if not bucket or not key:
            raise NotDeletable(f"image {image_id} was indexed from a local file, not an S3 object")
        if self.settings.images_bucket and bucket != self.settings.images_bucket:
            raise NotDeletable(f"image {image_id} is in bucket {bucket!r}, which this API does not manage")
        return str(bucket), str(key)

    def delete(self, image_id: str) -> dict[str, Any]:
        """Delete the S3 object; the indexer removes the point when S3 reports the ObjectRemoved event."""
        parsed, payload = self._payload(image_id)
        bucket, key = self.check_deletable(parsed, payload)
        self._objects().delete(bucket, key)
        return {"id": parsed, "bucket": bucket, "key": key, "status": "deleting"}

    def create_upload(self, request: UploadRequest) -> dict[str, Any]:
        """A presigned PUT the browser sends the file to, and the key and id it will have once indexed."""
        mime = media_type_of(request.content_type)
        if mime not in UPLOAD_CONTENT_TYPES:
            raise UnsupportedImageType(
                f"content_type {request.content_type!r} is not an image type the indexer decodes; "
                f"use one of {', '.join(sorted(UPLOAD_CONTENT_TYPES))}")
        bucket = self.require_bucket()
        key = f"{self.settings.upload_prefix}{uuid.uuid4().hex}-{sanitize_filename(request.filename)}"
        url = self._objects().presign_put(bucket, key, content_type=mime, expires_in=self.settings.url_ttl)
        return {
            "url": url,
            "method": "PUT",
            # Signed into the URL: the PUT must send exactly this Content-Type.
            "headers": {"Content-Type": mime},
            "bucket": bucket,
            "key": key,
            "id": point_id_for_object(bucket, key),
            "expires_in": self.settings.url_ttl,
        }

    def require_bucket(self) -> str:
        if not self.settings.images_bucket:
            raise NotConfigured("IMAGES_BUCKET is not set on the server")
        return self.settings.images_bucket
