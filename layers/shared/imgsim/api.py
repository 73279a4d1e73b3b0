"""The search API's logic, kept out of the Lambda handler so it can be tested and reused.

``functions/search/app.py`` only routes HTTP API events here (powertools
``APIGatewayHttpResolver``). This module parses request bodies (raw
``image/*``, multipart form-data, JSON with base64), checks the API key,
turns store hits into JSON with presigned URLs, and defines the one error type
(``ApiError``) the handler maps to ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from python_multipart import FormParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from .decode import EXTRA_CONTENT_TYPES, FORMAT_CONTENT_TYPES
from .errors import DecodeTooCostly, ImageError, ImageTooLarge, StoreUnavailable
from .ids import point_id_for_object
from .scoring import percent_from_score, score_from_cosine
from .settings import ApiSettings
from .store import FieldEquals, FieldRange, Where

RETRY_AFTER_SECONDS = 5

# Content types POST /uploads accepts: what the indexer can decode.
UPLOAD_CONTENT_TYPES = frozenset(FORMAT_CONTENT_TYPES.values()) | EXTRA_CONTENT_TYPES
IMAGE_BODY_TYPES = ("image/", "application/octet-stream")

ApiConfig = ApiSettings  # the search API's settings (imgsim.settings)


class ApiError(Exception):
    """A request the API answers with a 4xx/5xx JSON error instead of a result."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def api_error_from(exc: Exception) -> ApiError:
    """Map imgsim's own exceptions to HTTP errors (the handler catches everything else as 500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, (ImageTooLarge, DecodeTooCostly)):
        return ApiError(413, exc.code, str(exc))
    if isinstance(exc, ImageError):
        return ApiError(400, exc.code, str(exc))
    if isinstance(exc, StoreUnavailable):
        # A rate-limited server's own Retry-After (429) is passed on when it asks for longer.
        wait = max(RETRY_AFTER_SECONDS, math.ceil(exc.retry_after or 0))
        return ApiError(
            503, "store_unavailable", "the vector store is unreachable or busy; try again shortly",
            {"Retry-After": str(wait)},
        )
    raise TypeError(f"no HTTP mapping for {type(exc).__name__}")


# -- request bodies -------------------------------------------------------------


def body_too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413, "body_too_large",
        f"request body is {size} bytes; the limit is {limit} bytes (API Gateway passes at most 6 MB "
        "to Lambda and binary bodies arrive base64-encoded, a third larger). For larger images, "
        "POST /uploads for a presigned upload URL, then search with {\"key\": ...}",
    )


def read_body(body: str | None, is_base64_encoded: bool | None, max_bytes: int) -> bytes:
    """The request body as bytes, within ``max_bytes`` (413 otherwise)."""
    raw = body or ""
    if is_base64_encoded:
        # Reject on the encoded length first: no point decoding a body we refuse.
        if len(raw) // 4 * 3 > max_bytes + 2:
            raise body_too_large(len(raw) // 4 * 3, max_bytes)
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ApiError(400, "bad_body", "request body is not valid base64") from exc
    else:
        data = raw.encode("utf-8")
    if len(data) > max_bytes:
        raise body_too_large(len(data), max_bytes)
    return data


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """``"Multipart/Form-Data; boundary=x"`` -> ``("multipart/form-data", {"boundary": "x"})``.

    A header value outside Latin-1 (HTTP's header charset) names no media type: ``("", {})``,
    which every route answers with 415."""
    try:
        mime, params = parse_options_header(content_type or "")
    except UnicodeEncodeError:
        return "", {}
    return mime.decode("latin-1").lower(), {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in params.items()}


def form_fields(content_type: str, body: bytes, max_bytes: int) -> dict[str, bytes]:
    """Every field of a multipart/form-data body, files and plain fields alike, by name.

    python-multipart does the parsing; files stay in memory (the body is
    already bounded by ``max_bytes``).
    """
    _, params = media_type(content_type)
    boundary = params.get("boundary")
    if not boundary:
        raise ApiError(400, "bad_body", "multipart/form-data without a boundary parameter")
    fields: dict[str, bytes] = {}

    def on_field(f: Any) -> None:
        if f.field_name is not None:
            fields.setdefault(f.field_name.decode("utf-8", "replace"), f.value or b"")

    def on_file(f: Any) -> None:
        if f.field_name is not None:
            f.file_object.seek(0)
            fields.setdefault(f.field_name.decode("utf-8", "replace"), f.file_object.read())

    parser = FormParser(
        "multipart/form-data", on_field, on_file, boundary=boundary.encode("latin-1"),
        config={"MAX_MEMORY_FILE_SIZE": max_bytes + 1, "MAX_BODY_SIZE": max_bytes + 1},
    )
    try:
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError) as exc:
        raise ApiError(400, "bad_body", f"malformed multipart/form-data body: {exc}") from exc
    return fields


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; anything else is 400 ``bad_json``.

    ``ValueError`` covers malformed JSON, bad UTF-8 and integers longer than Python's
    4,300-digit conversion limit; ``RecursionError`` covers deep nesting (``[[[[...``).
    """
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise ApiError(400, "bad_json", f"request body is not valid JSON: {reason}") from exc
    if not isinstance(value, dict):
        raise ApiError(400, "bad_json", "request body must be a JSON object")
    return value


def base64_field(obj: dict[str, Any], name: str) -> bytes:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(400, "bad_parameter", f"{name!r} must be a base64 string")
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]  # a data: URL, as FileReader.readAsDataURL gives
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "bad_parameter", f"{name!r} is not valid base64") from exc


def unsupported_media_type(content_type: str | None, accepted: str) -> ApiError:
    given = content_type or "none"
    return ApiError(415, "unsupported_media_type", f"Content-Type {given!r} is not accepted here; send {accepted}")


@dataclass(frozen=True)
class ImageQuery:
    """What POST /search searches with: new image bytes, or an indexed point by id or key."""

    image: bytes | None = None
    point_id: str | None = None
    key: str | None = None


SEARCH_BODY_FORMS = "image/* (raw bytes), multipart/form-data (file field 'image') or application/json"


def parse_search_body(content_type: str | None, body: bytes, max_bytes: int) -> ImageQuery:
    mime, _ = media_type(content_type)
    if not body:
        raise ApiError(400, "empty_body", f"no query image; send {SEARCH_BODY_FORMS}")
    if mime.startswith(IMAGE_BODY_TYPES):
        return ImageQuery(image=body)
    if mime == "multipart/form-data":
        fields = form_fields(content_type or "", body, max_bytes)
        if "image" not in fields:
            raise ApiError(400, "bad_parameter", "multipart body has no 'image' field")
        return ImageQuery(image=fields["image"])
    if mime == "application/json":
        obj = json_object(body)
        given = [name for name in ("image", "id", "key") if obj.get(name) is not None]
        if len(given) != 1:
            raise ApiError(400, "bad_parameter", "give exactly one of 'image' (base64), 'id' or 'key'")
        if given[0] == "image":
            return ImageQuery(image=base64_field(obj, "image"))
        value = obj[given[0]]
        if not isinstance(value, str) or not value:
            raise ApiError(400, "bad_parameter", f"{given[0]!r} must be a non-empty string")
        if given[0] == "id":
            return ImageQuery(point_id=parse_point_id(value))
        return ImageQuery(key=value)
    raise unsupported_media_type(content_type, SEARCH_BODY_FORMS)


COMPARE_BODY_FORMS = "multipart/form-data (fields 'a' and 'b') or application/json {\"a\": base64, \"b\": base64}"


def parse_compare_body(content_type: str | None, body: bytes, max_bytes: int) -> tuple[bytes, bytes]:
    mime, _ = media_type(content_type)
    if not body:
        raise ApiError(400, "empty_body", f"no images; send {COMPARE_BODY_FORMS}")
    if mime == "multipart/form-data":
        fields = form_fields(content_type or "", body, max_bytes)
        missing = [name for name in ("a", "b") if name not in fields]
        if missing:
            raise ApiError(400, "bad_parameter", f"multipart body lacks field(s) {', '.join(missing)}")
        return fields["a"], fields["b"]
    if mime == "application/json":
        obj = json_object(body)
        return base64_field(obj, "a"), base64_field(obj, "b")
    raise unsupported_media_type(content_type, COMPARE_BODY_FORMS)


def parse_point_id(value: str) -> str:
    """Point ids are UUIDs (see ``imgsim.ids``); anything else is a bad parameter, not a 500 from Qdrant."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError) as exc:
        raise ApiError(400, "bad_parameter", f"{value!r} is not an image id (a UUID)") from exc


# -- API key --------------------------------------------------------------------


class ApiKeyCheck:
    """Checks ``x-api-key`` against IMGSIM_API_KEY or the SSM parameter IMGSIM_API_KEY_PARAM.

    With neither configured, protected routes answer 503 ``not_configured``:
    the API must never be open by accident, and 401 would wrongly tell the
    caller their key is the problem.
    """

    def __init__(self, config: ApiConfig, read_secret: Callable[[str], str] | None = None) -> None:
        self.config = config
        self._read_secret = read_secret

    def expected_key(self) -> str:
        if self.config.api_key:
            return self.config.api_key
        if self.config.api_key_param:
            read = self._read_secret
            if read is None:
                from .runtime import (
                    read_secret_parameter,  # powertools parameters, cached 5 min
                )

                read = read_secret_parameter
            try:
                key = read(self.config.api_key_param)
            except Exception as exc:
                raise ApiError(
                    503, "auth_unavailable", "the API key could not be loaded; try again shortly",
                    {"Retry-After": str(RETRY_AFTER_SECONDS)},
                ) from exc
            if key:
                return key
        raise ApiError(
            503, "not_configured",
            "no API key is configured on the server (set IMGSIM_API_KEY or IMGSIM_API_KEY_PARAM)",
        )

    def check(self, provided: str | None) -> None:
        expected = self.expected_key()
        if not provided:
            raise ApiError(401, "missing_api_key", "send the API key in the x-api-key header")
        # Constant time, so response timing does not reveal how much of a guess was right.
        if not hmac.compare_digest(provided.encode("utf-8"), expected.encode("utf-8")):
            raise ApiError(401, "invalid_api_key", "the x-api-key header does not match")


# -- presigning and results -----------------------------------------------------

_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_filename(filename: str, max_length: int = 100) -> str:
    """A safe last key segment: no folders, no spaces or odd characters, bounded length."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_FILENAME_CHARS.sub("_", name).strip("._")
    if len(name) > max_length:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: max_length - len(ext) - 1] + dot + ext) if dot and len(ext) < 10 else name[:max_length]
    return name or "image"


def presigned_get_url(s3: Any, bucket: str | None, key: str | None, ttl: int) -> str | None:
    if not bucket or not key:
        return None  # a point indexed from a local file (source "file") has no S3 object
    url: str = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=ttl)
    return url


RESULT_FIELDS = ("bucket", "key", "width", "height", "content_type", "size", "indexed_at")


class Timer:
    """Milliseconds spent per phase of one request (for took_ms, Server-Timing and metrics)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.phases: dict[str, float] = {}

    def add(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + (now - since) * 1000.0
        return now

    def total_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000.0

    def server_timing(self) -> str:
        parts = [f"{name};dur={ms:.1f}" for name, ms in self.phases.items()]
        parts.append(f"total;dur={self.total_ms():.1f}")
        return ", ".join(parts)


# collapse=true reads up to this many hits to fill a page after folding duplicates away.
COLLAPSE_FETCH_MAX = 1000


@dataclass(frozen=True)
class SearchFilters:
    """Filters of POST /search beside ``prefix``: all indexed payload fields, applied inside Qdrant."""

    min_width: int | None = None
    min_height: int | None = None
    content_type: str | None = None
    indexed_after: str | None = None  # RFC 3339
    indexed_before: str | None = None

    def where(self) -> Where | None:
        must: list[Any] = []
        if self.min_width:
            must.append(FieldRange("width", gte=self.min_width))
        if self.min_height:
            must.append(FieldRange("height", gte=self.min_height))
        if self.content_type:
            must.append(FieldEquals("content_type", self.content_type))
        if self.indexed_after or self.indexed_before:
            must.append(FieldRange("indexed_at", gte=self.indexed_after, lte=self.indexed_before, datetime=True))
        return Where(must=tuple(must)) if must else None


def parse_instant(name: str, value: str | None) -> str | None:
    """An RFC 3339 instant (``2026-11-26T08:00:00Z``) or a date (``2026-11-26``, midnight UTC), normalized."""
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC).isoformat().replace("+00:00", "Z")
    except (ValueError, OverflowError) as exc:
        raise ApiError(400, "bad_parameter", f"{name} must be an RFC 3339 time or a date, e.g. 2026-11-26T08:00:00Z") from exc


def collapse_duplicates(hits: list[Any]) -> tuple[list[Any], dict[str, int]]:
    """Fold each hit recorded as a duplicate (``duplicate_of``) into the best-ranked hit of its picture: the
    image it duplicates, or another duplicate of that image. {kept id: how many were folded into it}."""
    kept: list[Any] = []
    picture_of: dict[str, str] = {}  # picture (root id) -> the kept hit's id
    folded: dict[str, int] = {}
    for hit in hits:
        root = str(hit.payload.get("duplicate_of") or hit.id)
        holder = picture_of.get(root) or picture_of.get(str(hit.id))
        if holder is not None:
            folded[holder] = folded.get(holder, 0) + 1
            continue
        kept.append(hit)
        picture_of.setdefault(root, str(hit.id))
        picture_of.setdefault(str(hit.id), str(hit.id))
    return kept, folded


class SearchService:
    """The API's operations. The shared objects come from callables so the
    handler passes the per-process singletons of ``imgsim.runtime`` and tests
    pass their own."""

    def __init__(
        self,
        config: ApiConfig,
        *,
        embedder: Callable[[], Any],
        store: Callable[[], Any],
        s3: Callable[[], Any],
        layout: Callable[[], Any] | None = None,
    ) -> None:
        """``layout``: the deployment's collections (``imgsim.deployment.Layout``), for /health."""
        self.config = config
        self._embedder = embedder
        self._store = store
        self._s3 = s3
        self._layout = layout

    # -- search -------------------------------------------------------------

    def search(
        self,
        query: ImageQuery,
        *,
        limit: int = 10,
        min_score: float | None = None,
        prefix: str | None = None,
        timer: Timer | None = None,
        filters: SearchFilters | None = None,
        offset: int = 0,
        collapse: bool = False,
        similar_threshold: float | None = None,
    ) -> dict[str, Any]:
        timer = timer or Timer()
        embedder = self._embedder()
        store = self._store()
        exclude: list[str] = []
        mark = time.perf_counter()
        if query.image is not None:
            vector = embedder.embed(query.image)
            mark = timer.add("embed", mark)
        else:
            if query.point_id is not None:
                record = store.get(query.point_id, with_vector=True)
                missing = f"no indexed image with id {query.point_id}"
            else:
                record = store.find_by_key(query.key, bucket=self.config.images_bucket, with_vector=True)
                missing = f"no indexed image with key {query.key!r}"
            mark = timer.add("lookup", mark)
            if record is None or record.vector is None:
                raise ApiError(404, "not_found", missing)
            vector = record.vector
            exclude.append(str(record.id))
        where = (filters or SearchFilters()).where()
        # Paging by offset, and collapsing (which folds some hits away), read further than the page itself.
        wanted = offset + limit
        fetch = min(wanted * 3 + 10, COLLAPSE_FETCH_MAX) if collapse else wanted
        hits = store.search(vector, limit=fetch, min_score=min_score, prefix=prefix or None, exclude_ids=exclude,
                            where=where)
        mark = timer.add("qdrant", mark)
        folded: dict[str, int] = {}
        if collapse:
            hits, folded = collapse_duplicates(hits)
        hits = hits[offset:wanted]
        s3 = self._s3()
        results = [self._result(hit.id, hit.score, hit.percent, hit.payload, s3) for hit in hits]
        similar = self.config.similar_threshold if similar_threshold is None else similar_threshold
        for result in results:
            result["similar"] = result["score"] >= similar
        if collapse:
            for result in results:
                result["duplicates"] = folded.get(result["id"], 0)
        timer.add("presign", mark)
        return {"results": results, "took_ms": round(timer.total_ms(), 1), "model": embedder.model_name,
                "offset": offset, "next_offset": wanted if len(results) == limit else None}

    def _result(self, point_id: str, score: float, percent: float, payload: dict[str, Any], s3: Any) -> dict[str, Any]:
        item: dict[str, Any] = {"id": point_id, "score": round(score, 6), "percent": percent}
        for name in RESULT_FIELDS:
            item[name] = payload.get(name)
        item["url"] = presigned_get_url(s3, payload.get("bucket"), payload.get("key"), self.config.url_ttl)
        return item

    def compare(self, a: bytes, b: bytes, *, timer: Timer | None = None) -> dict[str, Any]:
        timer = timer or Timer()
        embedder = self._embedder()
        mark = time.perf_counter()
        vectors = embedder.embed_decoded([embedder.decode(a), embedder.decode(b)])
        timer.add("embed", mark)
        score = score_from_cosine(float(vectors[0] @ vectors[1]))
        return {"score": round(score, 6), "percent": percent_from_score(score), "model": embedder.model_name,
                "took_ms": round(timer.total_ms(), 1)}

    # -- images ---------------------------------------------------------------

    def _payload(self, point_id: str) -> dict[str, Any]:
        record = self._store().get(parse_point_id(point_id))
        if record is None:
            raise ApiError(404, "not_found", f"no indexed image with id {point_id}")
        return dict(record.payload or {})

    def get_image(self, point_id: str) -> dict[str, Any]:
        payload = self._payload(point_id)
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
        url = presigned_get_url(self._s3(), payload.get("bucket"), payload.get("key"), self.config.url_ttl)
        return {"id": parse_point_id(point_id), **payload, "url": url}

    def delete_image(self, point_id: str) -> dict[str, Any]:
        """Delete the S3 object; the indexer removes the point when S3 reports the ObjectRemoved event."""
        payload = self._payload(point_id)
        bucket, key = payload.get("bucket"), payload.get("key")
        if not bucket or not key:
            raise ApiError(409, "not_deletable", "this image was indexed from a local file, not an S3 object")
        if self.config.images_bucket and bucket != self.config.images_bucket:
            raise ApiError(409, "not_deletable", f"the image is in bucket {bucket!r}, which this API does not manage")
        self._s3().delete_object(Bucket=bucket, Key=key)
        return {"id": parse_point_id(point_id), "bucket": bucket, "key": key, "status": "deleting"}

    def create_upload(self, body: bytes) -> dict[str, Any]:
        """A presigned PUT the browser sends the file to, and the key and id it will have once indexed."""
        obj = json_object(body) if body else {}
        filename, content_type = obj.get("filename"), obj.get("content_type")
        if not isinstance(filename, str) or not filename.strip():
            raise ApiError(400, "bad_parameter", "'filename' must be a non-empty string")
        if not isinstance(content_type, str) or not content_type:
            raise ApiError(400, "bad_parameter", "'content_type' must be given, e.g. \"image/jpeg\"")
        mime, _ = media_type(content_type)
        if mime not in UPLOAD_CONTENT_TYPES:
            raise ApiError(
                415, "unsupported_media_type",
                f"content_type {content_type!r} is not an image type the indexer decodes; "
                f"use one of {', '.join(sorted(UPLOAD_CONTENT_TYPES))}",
            )
        bucket = self.require_bucket()
        key = f"{self.config.upload_prefix}{uuid.uuid4().hex}-{sanitize_filename(filename)}"
        url = self._s3().generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": key, "ContentType": mime}, ExpiresIn=self.config.url_ttl
        )
        return {
            "url": url,
            "method": "PUT",
            # Signed into the URL: the PUT must send exactly this Content-Type.
            "headers": {"Content-Type": mime},
            "bucket": bucket,
            "key": key,
            "id": point_id_for_object(bucket, key),
            "expires_in": self.config.url_ttl,
        }

    def require_bucket(self) -> str:
        if not self.config.images_bucket:
            raise ApiError(503, "not_configured", "IMAGES_BUCKET is not set on the server")
        return self.config.images_bucket

    # -- health ---------------------------------------------------------------

    def health(self) -> tuple[int, dict[str, Any], dict[str, str]]:
        store = self._store()
        body: dict[str, Any] = {"collection": store.collection, "model": self._embedder().model_name}
        try:
            layout = self._layout() if self._layout else None
            if layout is not None:
                # The alias clients name; the collection behind it; a model switch in progress.
                body.update(collection=layout.alias, serving=layout.serving.collection)
                if layout.building is not None:
                    body["building"] = {"collection": layout.building.collection, "model": layout.building.model}
            body["points"] = store.count()
        except StoreUnavailable as exc:
            error = api_error_from(exc)
            return 503, {"status": "unavailable", **body, **error.body()}, error.headers
        return 200, {"status": "ok", **body}, {}
