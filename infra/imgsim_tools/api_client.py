"""A typed client of imgsim's HTTP API, for a deployed stack or ``imgsim serve``: what ``imgsim --api URL`` runs on,
and importable on its own (the standard library and httpx; nothing of ``imgsim`` or of the CLI)::

    from imgsim_tools.api_client import ApiClient, ApiError

    with ApiClient("https://abc123.execute-api.eu-west-1.amazonaws.com/", api_key) as api:
        for hit in api.search(Path("cat.jpg").read_bytes(), limit=5)["results"]:
            print(hit["percent"], hit["key"])
        upload = api.upload_file(Path("new.jpg"))     # POST /uploads, then the presigned POST to S3
        api.wait_indexed([upload["id"]], timeout=120)

Written by hand, thin over httpx, not generated from ``/openapi.json``:

* httpx is in every imgsim environment already (qdrant-client requires it), ships its types (mypy --strict without
  stubs, where requests needs types-requests), has per-phase timeouts, a connection pool, connect retries in its
  transport, and ``MockTransport`` for tests without a network.
* What this client is for lies outside any route's schema: the presigned POST to S3 that ``POST /uploads`` answers
  (multipart, streamed, with progress, the size checked first), retrying API Gateway's 429 throttling and the API's 503s after their ``Retry-After``,
  following ``next_cursor`` pages, waiting for an upload to be indexed. A generator (openapi-python-client) writes
  a package of models and per-route modules (over attrs) for the 13 routes and does none of that; the routes' few
  fields fit in the TypedDicts below. The document stays the contract: ``ROUTES`` lists every route this client
  calls, and tests/test_api_cli.py checks each one is in the served ``/openapi.json``.

Responses are TypedDicts: the JSON as the API sends it, typed for the fields it documents (nothing copied, fields
added later kept). Every failure is one exception, ``ApiError``: the HTTP status (None when no answer came), and
the code and message of the API's error envelope ``{"error": {"code", "message"}}`` (or of API Gateway's
``{"message"}``, or S3's XML error, whichever answered).
"""

from __future__ import annotations

import io
import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, NotRequired, Self, TypedDict, cast
from urllib.parse import quote
from xml.etree import ElementTree

import httpx

log = logging.getLogger("imgsim.api_client")  # under "imgsim": the CLI shows its warnings (retries) on stderr

KEY_HEADER = "x-api-key"

# API Gateway gives a Lambda integration at most 30 s; a read timeout above that reports the gateway's own 503/504
# instead of cutting the answer off. Connecting is quick or not happening at all.
DEFAULT_TIMEOUT = httpx.Timeout(35.0, connect=10.0)
# 429: API Gateway's throttling (stage or account limits); 503: the API's transient unavailability (Qdrant busy or
# rate-limited, with Retry-After, imgsim.http.errors) and S3's SlowDown. Both mean "not done, come back later", so
# every method may be retried on them; a timeout is not retried (a DELETE may have happened).
RETRY_STATUSES = frozenset({429, 503})
DEFAULT_RETRIES = 3
# A connection refused or timed out is tried once more (httpx's transport); each try waits up to the connect timeout.
CONNECT_RETRIES = 1
MAX_RETRY_WAIT = 30.0  # a Retry-After asking for longer is an answer, not a pause: the error is raised at once
BACKOFF_SECONDS = 0.5  # without Retry-After: 0.5, 1, 2 s (+ up to 25 % jitter)
MIB = 1024 * 1024  # IMGSIM_MAX_UPLOAD_MB counts these

# Every route the client calls, as the OpenAPI document names it (tests/test_api_cli.py checks the document).
ROUTES = (
    ("get", "/health"), ("get", "/openapi.json"), ("post", "/search"), ("post", "/compare"),
    ("post", "/recommend"), ("post", "/uploads"), ("get", "/images/{id}"), ("delete", "/images/{id}"),
    ("get", "/duplicates"), ("post", "/duplicates/resolve"), ("get", "/trash"), ("post", "/trash/{id}/restore"),
)

# The image types an upload may announce (the API refuses others with 415), by file extension: mimetypes' answers
# depend on the machine's /etc/mime.types, and some have no .heic or .avif.
UPLOAD_TYPES = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".jpe": "image/jpeg", ".jfif": "image/jpeg", ".mpo": "image/jpeg",
    ".png": "image/png", ".gif": "image/gif", ".webp": "image/webp", ".tif": "image/tiff", ".tiff": "image/tiff",
    ".bmp": "image/bmp", ".heic": "image/heic", ".heif": "image/heif", ".avif": "image/avif",
}


def upload_type(path: Path | str) -> str | None:
    """The Content-Type an upload of ``path`` announces, from its extension; None for a file that is no image."""
    return UPLOAD_TYPES.get(Path(path).suffix.lower())


# -- responses --------------------------------------------------------------------------------------------------------


class SearchResult(TypedDict):
    id: str
    score: float  # 0..1
    percent: float
    bucket: str | None
    key: str | None
    width: int | None
    height: int | None
    content_type: str | None
    size: int | None
    indexed_at: str | None
    url: str | None  # a presigned GET; None for an image indexed from a local file
    similar: bool
    duplicates: NotRequired[int]  # with collapse=true: the recorded duplicates folded into this result


class SearchPage(TypedDict):
    results: list[SearchResult]
    took_ms: float
    model: str
    offset: int
    next_offset: int | None


class Comparison(TypedDict):
    score: float
    percent: float
    model: str
    took_ms: float


class Recommendations(TypedDict):
    results: list[SearchResult]
    model: str
    took_ms: float


class Upload(TypedDict):
    """A presigned POST: send ``fields`` then the file (part ``file``, last) as multipart/form-data to ``url``; S3
    refuses more than ``max_bytes``. Once indexed the image has ``id``."""

    url: str
    method: str
    fields: dict[str, str]
    max_bytes: int
    bucket: str
    key: str
    id: str
    expires_in: int


class Image(TypedDict):
    """An indexed image: its stored details (which depend on how it was indexed), its group if it has
    duplicates, and a presigned URL."""

    id: str
    url: str | None
    key: NotRequired[str]
    bucket: NotRequired[str]
    source: NotRequired[str]
    width: NotRequired[int]
    height: NotRequired[int]
    size: NotRequired[int]
    content_type: NotRequired[str]
    format: NotRequired[str]
    model: NotRequired[str]
    indexed_at: NotRequired[str]
    etag: NotRequired[str]
    duplicates: NotRequired[int]  # the image to keep of a group: how many others
    duplicate_of: NotRequired[str]  # another member: the image to keep, its key, the pair's score
    duplicate_key: NotRequired[str]
    duplicate_score: NotRequired[float]


class Trashed(TypedDict):
    id: str
    bucket: str
    key: str
    status: str  # "trashed"
    trash_id: str  # for restore_from_trash
    expires_at: str


class DuplicateMember(TypedDict):
    id: str
    score: float  # the pair's with the image to keep (1.0 for that image)
    key: str | None
    width: int | None
    height: int | None
    size: int | None
    indexed_at: str | None
    url: str | None  # a presigned GET


class DuplicateGroup(TypedDict):
    keep: str  # the suggested image to keep (a member)
    members: list[DuplicateMember]


class DuplicatePage(TypedDict):
    threshold: float
    groups: list[DuplicateGroup]
    next_cursor: str | None


class Resolution(TypedDict):
    keep: str
    removed: list[Trashed]
    not_duplicates: list[str]


class TrashItem(TypedDict):
    id: str  # the trash id (restore_from_trash)
    image_id: str
    trashed_at: str
    expires_at: str
    key: str | None
    bucket: str | None
    width: int | None
    height: int | None
    size: int | None
    content_type: str | None
    indexed_at: str | None
    url: str | None


class TrashPage(TypedDict):
    items: list[TrashItem]
    next_cursor: str | None
    trash_days: int


class Restored(TypedDict):
    id: str
    bucket: str
    key: str
    status: str  # "restored"


# -- errors -------------------------------------------------------------------------------------------------------------


class ApiError(Exception):
    """What went wrong, in one line: ``status`` (None: no answer, ``code`` "unreachable" or "timeout"), and the
    ``code`` and ``message`` of the error envelope. ``str()`` is the message with the status and code."""

    def __init__(self, status: int | None, code: str, message: str, *, method: str = "", url: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.url = url
        self.retry_after = retry_after

    def __str__(self) -> str:
        answer = f"HTTP {self.status} {self.code}" if self.status is not None else self.code
        return f"{self.message} ({answer})"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _status_code(status: int) -> str:
    """An HTTP status as an error code: 429 -> "too_many_requests"."""
    return _phrase(status).lower().replace(" ", "_").replace("-", "_")


def error_of(response: httpx.Response) -> ApiError:
    """A failed response as an ApiError, whichever service answered: the API's envelope, API Gateway's
    ``{"message"}`` (throttling, its own 404s and 5xx), S3's XML (a presigned POST), or any text."""
    status = response.status_code
    code, message = _status_code(status), ""
    text = response.text
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code") or code)
        message = str(body["error"].get("message") or "")
    elif isinstance(body, dict) and isinstance(body.get("message"), str):
        message = body["message"]
    elif text.lstrip().startswith("<"):
        try:
            root = ElementTree.fromstring(text)
            code = root.findtext("Code") or code
            message = root.findtext("Message") or ""
            proposed, allowed = root.findtext("ProposedSize") or "", root.findtext("MaxSizeAllowed") or ""
            if code == "EntityTooLarge" and proposed.isdigit() and allowed.isdigit():  # a presigned POST's limit
                message = f"S3 refused the file: {too_large(int(proposed), int(allowed))}"
        except ElementTree.ParseError:
            message = ""
    else:
        message = text.strip().splitlines()[0][:200] if text.strip() else ""
    return ApiError(status, code, message or _phrase(status), method=response.request.method, url=str(response.request.url),
                    retry_after=retry_after(response))


def retry_after(response: httpx.Response, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> float | None:
    """The wait a ``Retry-After`` header asks for, in seconds (delay-seconds or an HTTP date); None without one."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


# -- the client ---------------------------------------------------------------------------------------------------------


class ApiClient:
    """One API (its base URL, with or without a stage path) and its key; one connection pool. Thread-safe (httpx's
    ``Client`` is): ``imgsim upload`` sends several files at once through one client.

    ``retries``: how many times a 429 or 503 is retried, after its ``Retry-After`` (at most ``max_retry_wait``
    seconds) or a short backoff; a failed connection is tried again once (httpx's transport).
    ``transport`` and ``sleep``: for tests (``httpx.MockTransport``, a recorder)."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, max_retry_wait: float = MAX_RETRY_WAIT,
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"the API URL must be http(s)://host[/stage], got {base_url!r}")
        self.base_url = str(url)
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self._key = api_key
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=url, timeout=timeout, transport=transport or httpx.HTTPTransport(retries=CONNECT_RETRIES),
            headers={"user-agent": "imgsim-api-client"}, follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- search --------------------------------------------------------------------------------------------------------

    def search(self, image: bytes | None = None, *, id: str | None = None, key: str | None = None, limit: int = 10,
               offset: int = 0, min_score: float | None = None, prefix: str | None = None,
               min_width: int | None = None, min_height: int | None = None, content_type: str | None = None,
               indexed_after: str | None = None, indexed_before: str | None = None, collapse: bool = False,
               similar_threshold: float | None = None, box: str | None = None) -> SearchPage:
        """``POST /search``: images like ``image`` (its bytes, sent raw), or like an indexed image by ``id`` or
        ``key``; one page (``limit`` up to 100 from ``offset``; ``next_offset`` when there may be more).
        ``box``: a region of the query image, sent as the ``box`` query parameter as given."""
        given = [name for name, value in (("image", image), ("id", id), ("key", key)) if value is not None]
        if len(given) != 1:
            raise ValueError("search takes exactly one of image, id and key")
        params = _params(limit=limit, offset=offset, min_score=min_score, prefix=prefix, min_width=min_width,
                         min_height=min_height, content_type=content_type, indexed_after=indexed_after,
                         indexed_before=indexed_before, collapse=collapse or None,
                         similar_threshold=similar_threshold, box=box)
        if image is not None:
            answer = self._call("POST", "/search", params=params, content=image,
                                headers={"content-type": "application/octet-stream"})
        else:
            answer = self._call("POST", "/search", params=params, json={"id": id} if id is not None else {"key": key})
        return cast(SearchPage, answer)

    def compare(self, a: bytes, b: bytes) -> Comparison:
        """``POST /compare``: how similar two images are (multipart, fields a and b)."""
        files = {"a": ("a", a, "application/octet-stream"), "b": ("b", b, "application/octet-stream")}
        return cast(Comparison, self._call("POST", "/compare", files=files))

    def recommend(self, positive: Sequence[str], negative: Sequence[str] = (), *, limit: int = 10,
                  similar_threshold: float | None = None, prefix: str | None = None) -> Recommendations:
        """``POST /recommend``: indexed images like ``positive`` and unlike ``negative`` (ids or keys)."""
        body: dict[str, Any] = {"positive": list(positive), "negative": list(negative), "limit": limit}
        body.update(_params(similar_threshold=similar_threshold, prefix=prefix))
        return cast(Recommendations, self._call("POST", "/recommend", json=body))

    # -- images --------------------------------------------------------------------------------------------------------

    def create_upload(self, filename: str, content_type: str) -> Upload:
        """``POST /uploads``: a presigned POST for one file, and the key and id the image will have."""
        answer = self._call("POST", "/uploads", json={"filename": filename, "content_type": content_type})
        return cast(Upload, answer)

    def post_upload(self, upload: Upload, path: Path, *, on_progress: Callable[[int], None] | None = None) -> None:
        """Send ``path`` to an upload's presigned POST: the ``fields``, then the file streamed from disk as the last
        part (httpx's multipart, with a Content-Length: S3 refuses chunked bodies); ``on_progress(n)`` after every
        chunk read for sending (negative after a retried attempt, taking back what it had counted). The API key is
        not sent: the policy carries its own signature.

        A file over ``max_bytes`` is refused here, before anything is sent (``ApiError`` ``upload_too_large``); one
        S3 finds too large after all is its ``EntityTooLarge``, the message naming the limit (``error_of``)."""
        limit = upload["max_bytes"]
        size = path.stat().st_size
        if size > limit:
            raise ApiError(None, "upload_too_large", too_large(size, limit), method="POST", url=upload["url"])
        with _CountingFile(path, on_progress) as file:

            def build() -> httpx.Request:
                file.restart()
                return self._http.build_request(upload["method"], upload["url"], data=upload["fields"],
                                                files={"file": (path.name, file, upload["fields"].get("Content-Type"))})

            self._send(build)

    def upload_file(self, path: Path, *, content_type: str | None = None,
                    on_progress: Callable[[int], None] | None = None) -> Upload:
        """Upload one file (``create_upload``, then ``post_upload``); its type from its extension unless given."""
        mime = content_type or upload_type(path)
        if mime is None:
            raise ValueError(f"{path}: not an image type the API takes ({', '.join(sorted(UPLOAD_TYPES))})")
        upload = self.create_upload(path.name, mime)
        self.post_upload(upload, path, on_progress=on_progress)
        return upload

    def get_image(self, image_id: str) -> Image:
        """``GET /images/{id}``: the image's details and a presigned URL (404 ``not_found``: not indexed)."""
        return cast(Image, self._call("GET", f"/images/{_segment(image_id)}"))

    def find_image(self, image_id: str) -> Image | None:
        """``get_image``, or None while the image is not indexed (yet)."""
        try:
            return self.get_image(image_id)
        except ApiError as exc:
            if exc.status == 404 and exc.code == "not_found":
                return None
            raise

    def wait_indexed(self, image_ids: Sequence[str], *, timeout: float, interval: float = 1.0,
                     on_indexed: Callable[[Image], None] | None = None) -> list[str]:
        """Wait until the images are indexed or ``timeout`` seconds have passed; the ids still not indexed.

        Asks for them in order, moving on at once after each one found and pausing ``interval`` at the first
        missing one: about one request per image plus one per pause, however many are waited for."""
        pending = list(dict.fromkeys(image_ids))
        deadline = time.monotonic() + timeout
        while pending:
            image = self.find_image(pending[0])
            if image is not None:
                pending.pop(0)
                if on_indexed is not None:
                    on_indexed(image)
                continue
            if time.monotonic() >= deadline:
                break
            self._sleep(interval)
        return pending

    def delete_image(self, image_id: str) -> Trashed:
        """``DELETE /images/{id}``: move the image to the trash (``restore_from_trash(result["trash_id"])``)."""
        return cast(Trashed, self._call("DELETE", f"/images/{_segment(image_id)}"))

    # -- duplicates --------------------------------------------------------------------------------------------------

    def duplicates(self, *, threshold: float | None = None, prefix: str | None = None, limit: int = 20,
                   cursor: str | None = None) -> DuplicatePage:
        """``GET /duplicates``: one page of groups (up to ``limit``, 1-100); ``next_cursor`` for the next."""
        params = _params(threshold=threshold, prefix=prefix, limit=limit, cursor=cursor)
        return cast(DuplicatePage, self._call("GET", "/duplicates", params=params))

    def all_duplicates(self, *, threshold: float | None = None, prefix: str | None = None,
                       page_size: int = 100) -> Iterator[DuplicatePage]:
        """Every page of ``duplicates``, following ``next_cursor``."""
        return _pages(lambda cursor: self.duplicates(threshold=threshold, prefix=prefix, limit=page_size,
                                                     cursor=cursor))

    def resolve_duplicates(self, keep: str, *, remove: Sequence[str] = (),
                           not_duplicates: Sequence[str] = ()) -> Resolution:
        """``POST /duplicates/resolve``: keep one image; move duplicates of it to the trash and/or remember that
        others are not duplicates of it."""
        body = {"keep": keep, "remove": list(remove), "not_duplicates": list(not_duplicates)}
        return cast(Resolution, self._call("POST", "/duplicates/resolve", json=body))

    # -- the trash ---------------------------------------------------------------------------------------------------

    def trash(self, *, limit: int = 50, cursor: str | None = None) -> TrashPage:
        """``GET /trash``: one page, newest first (``limit`` 1-100)."""
        return cast(TrashPage, self._call("GET", "/trash", params=_params(limit=limit, cursor=cursor)))

    def all_trash(self, *, page_size: int = 100) -> Iterator[TrashPage]:
        """Every page of ``trash``, following ``next_cursor``."""
        return _pages(lambda cursor: self.trash(limit=page_size, cursor=cursor))

    def restore_from_trash(self, trash_id: str) -> Restored:
        """``POST /trash/{id}/restore``: bring the image back (object, point, duplicate links)."""
        return cast(Restored, self._call("POST", f"/trash/{_segment(trash_id)}/restore"))

    # -- meta ----------------------------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /health`` (no key): ``{"status": "ok", "collection", "model", ...}``; an unhealthy API
        is an ApiError (503, its code)."""
        return cast(dict[str, Any], self._call("GET", "/health", key=False))

    def openapi(self) -> dict[str, Any]:
        """``GET /openapi.json``: the API's own description of itself."""
        return cast(dict[str, Any], self._call("GET", "/openapi.json", key=False))

    # -- HTTP --------------------------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, key: bool = True, params: Mapping[str, str] | None = None,
              json: Any = None, content: bytes | None = None, files: Mapping[str, Any] | None = None,
              headers: Mapping[str, str] | None = None) -> Any:
        """One route of the API (``path`` relative to the base URL); its JSON answer."""
        sent = {**(headers or {}), **({KEY_HEADER: self._key} if key else {})}

        def build() -> httpx.Request:
            return self._http.build_request(method, path.lstrip("/"), params=params, json=json, content=content,
                                            files=files, headers=sent)

        response = self._send(build)
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(response.status_code, "bad_response",
                           f"{method} {response.request.url} answered {response.headers.get('content-type')!r}, "
                           "not JSON: is the URL the API's?", method=method, url=str(response.request.url)) from exc

    def _send(self, build: Callable[[], httpx.Request]) -> httpx.Response:
        """Send the request ``build`` makes (anew for every attempt: a streamed body is read once), retrying
        429 and 503; a successful response, or ApiError."""
        attempt = 0
        while True:
            request = build()
            try:
                response = self._http.send(request)
            except httpx.TimeoutException as exc:
                raise ApiError(None, "timeout", f"{request.method} {_origin(request.url)}{request.url.path}: "
                               f"no answer in time ({type(exc).__name__})", method=request.method,
                               url=str(request.url)) from exc
            except httpx.TransportError as exc:
                raise ApiError(None, "unreachable", f"cannot reach {_origin(request.url)}: {exc or type(exc).__name__}",
                               method=request.method, url=str(request.url)) from exc
            if response.is_success:
                return response
            error = error_of(response)
            wait = self._retry_wait(error, attempt)
            if wait is None:
                raise error
            log.warning("%s %s: %s; retry %d of %d in %.1f s", request.method, request.url.path, error, attempt + 1,
                        self.retries, wait)
            self._sleep(wait)
            attempt += 1

    def _retry_wait(self, error: ApiError, attempt: int) -> float | None:
        """How long to wait before retrying ``error``; None: do not."""
        if error.status not in RETRY_STATUSES or attempt >= self.retries:
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.max_retry_wait else None
        backoff = BACKOFF_SECONDS * 2.0 ** attempt
        return min(backoff * (1 + random.uniform(0, 0.25)), self.max_retry_wait)  # jitter: clients throttled together spread out


def too_large(size: int, limit: int) -> str:
    """``"31.2 MB is over this API's upload limit of 25 MB (IMGSIM_MAX_UPLOAD_MB)"``: in the setting's unit (MiB), exact
    bytes when the rounded sizes would look equal."""
    shown, allowed = _megabytes(size), _megabytes(limit)
    if shown == allowed:
        shown, allowed = f"{size:,} bytes", f"{allowed} ({limit:,} bytes)"
    return f"{shown} is over this API's upload limit of {allowed} (IMGSIM_MAX_UPLOAD_MB)"


def _megabytes(size: int) -> str:
    return f"{size / MIB:.1f}".removesuffix(".0") + " MB"


class _CountingFile(io.FileIO):
    """The file httpx's multipart encoder reads (it finds the length with ``fileno``, seeks back to 0 for every
    attempt, reads 64 KiB at a time): each read is reported to ``on_progress``, and ``restart`` takes back what an
    attempt had counted before the next one."""

    def __init__(self, path: Path, on_progress: Callable[[int], None] | None) -> None:
        super().__init__(path, "r")
        self._on_progress = on_progress
        self._counted = 0

    def restart(self) -> None:
        if self._counted and self._on_progress is not None:
            self._on_progress(-self._counted)
        self._counted = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if chunk and self._on_progress is not None:
            self._counted += len(chunk)
            self._on_progress(len(chunk))
        return chunk or b""


def _params(**values: Any) -> dict[str, str]:
    """Query parameters: the values given, as the API spells them (booleans "true"/"false")."""
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def _segment(value: str) -> str:
    """An id as one path segment, percent-encoded: anything else than the UUID the API expects reaches the route
    (and gets its 400) instead of another path."""
    return quote(value, safe="")


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii')}"


def _pages(fetch: Callable[[str | None], Any]) -> Iterator[Any]:
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield page
        cursor = page.get("next_cursor")
        if not cursor:
            return

