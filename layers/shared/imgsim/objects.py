"""S3 objects as the search API's services use them: presigned GETs and POSTs (uploads), deletes, copies (the trash), and reading
an image's bytes (search by a box of an indexed image).

Wraps a boto3 S3 client (``imgsim.composition.Root.s3``: SigV4 presigning, adaptive retries) and turns
S3's failures into imgsim's errors, so the services raise nothing else: S3 unreachable is
``ObjectStorageUnavailable`` (try again), S3 refusing (a bucket gone, access denied) ``ObjectStorageError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from .errors import ObjectStorageError, ObjectStorageUnavailable


@contextmanager
def _s3_failures() -> Iterator[None]:
    try:
        yield
    except EndpointConnectionError as exc:
        raise ObjectStorageUnavailable("S3 is unreachable; try again shortly") from exc
    except (ClientError, BotoCoreError) as exc:
        # The caller gets no S3 internals (bucket names, error codes); the cause stays chained for the log.
        raise ObjectStorageError("S3 refused the request") from exc


class S3Objects:
    """``imgsim.services.ports.ObjectStorage`` on a boto3 S3 client (made on first use: importing boto3 costs)."""

    def __init__(self, client: Callable[[], Any]) -> None:
        self._client = client

    def presign_get(self, bucket: str, key: str, *, expires_in: int) -> str:
        with _s3_failures():
            url: str = self._client().generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in)
        return url

    def presign_post(self, bucket: str, key: str, *, content_type: str, max_bytes: int,
                     expires_in: int) -> tuple[str, dict[str, str]]:
        """A presigned POST (browser-based upload): the URL and the form fields to send before the file. Its signed
        policy fixes the key and the Content-Type and bounds the file with ``content-length-range`` 1..``max_bytes``,
        so S3 itself refuses a larger file (400 ``EntityTooLarge``) or another key or type (403 ``AccessDenied``). A
        presigned PUT cannot bound the size: whoever held its URL could store up to 5 GB. botocore adds the
        ``bucket`` and ``key`` conditions itself."""
        with _s3_failures():
            post: dict[str, Any] = self._client().generate_presigned_post(
                Bucket=bucket, Key=key, Fields={"Content-Type": content_type},
                Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
                ExpiresIn=expires_in)
        return str(post["url"]), {str(name): str(value) for name, value in post["fields"].items()}

    def delete(self, bucket: str, key: str) -> None:
        with _s3_failures():
            self._client().delete_object(Bucket=bucket, Key=key)

    def copy(self, bucket: str, source: str, target: str) -> None:
        """Server-side copy within the bucket (up to 5 GB: S3's CopyObject limit, far above an image's)."""
        with _s3_failures():
            self._client().copy_object(Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": source})

    def get(self, bucket: str, key: str, *, max_bytes: int) -> bytes | None:
        """The object's first ``max_bytes`` + 1 bytes at most (a ranged GET: one byte over the limit is enough for the
        decoder to refuse an oversized file without reading all of it); None when no object is stored at ``key``."""
        try:
            with _s3_failures():
                response = self._client().get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{max_bytes}")
                data: bytes = response["Body"].read()
        except ObjectStorageError as exc:
            code = _error_code(exc)
            if code in ("404", "NoSuchKey"):
                return None
            if code == "InvalidRange":  # what S3 answers a range of an empty object
                return b""
            raise
        return data

    def exists(self, bucket: str, key: str) -> bool:
        """Whether an object is stored at ``key`` (a HEAD)."""
        try:
            with _s3_failures():
                self._client().head_object(Bucket=bucket, Key=key)
        except ObjectStorageError as exc:
            if _error_code(exc) in ("404", "NoSuchKey"):
                return False
            raise
        return True


def _error_code(exc: ObjectStorageError) -> str | None:
    """S3's error code behind a refusal (``NoSuchKey``, ``404``...), None for other failures."""
    cause = exc.__cause__
    if isinstance(cause, ClientError):
        code = cause.response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None
