"""One indexed image: its details, the rule of which images may be deleted, and uploading a new one (a presigned
POST bounded in size). Deleting is the trash's (``imgsim.services.trash``)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..decode import EXTRA_CONTENT_TYPES, FORMAT_CONTENT_TYPES
from ..dedupe import INTERNAL_FIELDS
from ..duplicates import DuplicateGraph
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
from ..store.scoped import ALL_TENANTS, Visibility
from ..tenants import tenant_key
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
    """Get, upload. The store comes from a callable: the served collection can change (a model switch)."""

    def __init__(self, settings: ApiSettings, *, store: Callable[[], VectorStore],
                 objects: Callable[[], ObjectStorage], visibility: Visibility = ALL_TENANTS) -> None:
        """``visibility``: whose images ``store`` shows (``imgsim.store.scoped``); a tenant's uploads go under its
        folder (``imgsim.tenants``)."""
        self.settings = settings
        self._store = store
        self._objects = objects
        self._tenant = visibility if isinstance(visibility, str) else None

    def _payload(self, image_id: str) -> tuple[str, dict[str, Any]]:
        parsed = point_id(image_id)
        record = self._store().get(parsed)
        if record is None:
            raise NotFound(f"no indexed image with id {image_id}")
        return parsed, dict(record.payload or {})

    def get(self, image_id: str) -> dict[str, Any]:
        """The stored details (payload, without bookkeeping fields), the image's duplicate group if it is in one,
        and a presigned GET URL. In a group and not its suggested keep: ``duplicate_of`` (the keep), its key as
        ``duplicate_key`` and the pair's ``duplicate_score``; the keep: ``duplicates`` (how many others)."""
        parsed, payload = self._payload(image_id)
        group = DuplicateGraph(self._store(), self.settings.duplicate_threshold).group_of(parsed)
        shown = {k: v for k, v in payload.items() if k not in INTERNAL_FIELDS}
        if group is not None:
            if group.keep.id == parsed:
                shown["duplicates"] = len(group.members) - 1
            else:
                score = next(score for record, score in group.members if record.id == parsed)
                shown.update({"duplicate_of": group.keep.id, "duplicate_key": group.keep.payload.get("key"),
                              "duplicate_score": round(score, 4)})
        url = image_url(self._objects(), payload, self.settings.url_ttl)
        return {"id": parsed, **shown, "url": url}

    def check_deletable(self, image_id: str, payload: dict[str, Any]) -> tuple[str, str]:
        """The image's bucket and key, when its object is one this deployment manages; else ``NotDeletable``."""
        bucket, key = payload.get("bucket"), payload.get("key")
        if not bucket or not key:
            raise NotDeletable(f"image {image_id} was indexed from a local file, not an S3 object")
        if self.settings.images_bucket and bucket != self.settings.images_bucket:
            raise NotDeletable(f"image {image_id} is in bucket {bucket!r}, which this API does not manage")
        return str(bucket), str(key)

    def create_upload(self, request: UploadRequest) -> dict[str, Any]:
        """A presigned POST the browser sends the file to (S3 refuses more than ``max_upload_bytes``), and the key
        and id it will have once indexed."""
        mime = media_type_of(request.content_type)
        if mime not in UPLOAD_CONTENT_TYPES:
            raise UnsupportedImageType(
                f"content_type {request.content_type!r} is not an image type the indexer decodes; "
                f"use one of {', '.join(sorted(UPLOAD_CONTENT_TYPES))}")
        bucket = self.require_bucket()
        key = tenant_key(self._tenant,  # a tenant's upload goes in its folder: the server picks, never the caller
                         f"{self.settings.upload_prefix}{uuid.uuid4().hex}-{sanitize_filename(request.filename)}")
        max_bytes = self.settings.max_upload_bytes
        url, fields = self._objects().presign_post(bucket, key, content_type=mime, max_bytes=max_bytes,
                                                   expires_in=self.settings.url_ttl)
        return {
            "url": url,
            "method": "POST",
            # multipart/form-data: these fields first, in this order, then the file as the last part, "file".
            "fields": fields,
            "max_bytes": max_bytes,
            "bucket": bucket,
            "key": key,
            "id": point_id_for_object(bucket, key),
            "expires_in": self.settings.url_ttl,
        }

    def require_bucket(self) -> str:
        if not self.settings.images_bucket:
            raise NotConfigured("IMAGES_BUCKET is not set on the server")
        return self.settings.images_bucket
