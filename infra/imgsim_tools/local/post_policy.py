"""S3's POST policy, enforced in front of moto: the local stack's uploads are bounded as the deployed bucket's are.

``POST /uploads`` answers a presigned POST whose signed policy fixes the key and the Content-Type and bounds the
file (``content-length-range`` 1..``IMGSIM_MAX_UPLOAD_MB``). S3 enforces that policy; moto (5.2) stores whatever a
POST sends (``moto/s3/responses.py`` ``_bucket_response_post``: no policy decoded, no condition checked). Without
this wrapper an oversized upload would be stored and indexed locally, and the page's and the CLI's handling of S3's
refusal could not be tried.

``PostPolicy`` is WSGI middleware around moto's app. A POST of ``multipart/form-data`` to a bucket (path style, as the
local stack's endpoint is) is an upload: its fields are read up to the file (S3 ignores fields after it), then
checked as S3 checks them, in S3's order:

* the signature fields (``policy``, ``x-amz-algorithm``, ``x-amz-credential``, ``x-amz-date``,
  ``x-amz-signature``) and ``key`` are present: else 400 ``InvalidArgument`` "Bucket POST must contain a field
  named ..."; ``file`` is present: else 400 ``InvalidArgument``;
* the policy has not expired: else 403 ``AccessDenied`` "Invalid according to Policy: Policy expired.";
* every condition holds (``eq`` as ``{"name": value}`` or ``["eq", "$name", value]``, ``starts-with``, ``bucket``):
  else 403 ``AccessDenied`` "Invalid according to Policy: Policy Condition failed: [...]";
* every field sent is named by a condition (bar ``policy``, ``x-amz-signature``, ``file`` and ``x-ignore-*``):
  else 403 ``AccessDenied`` "Invalid according to Policy: Extra input fields: ...";
* the file's size is within ``content-length-range``: else 400 ``EntityTooLarge`` "Your proposed upload exceeds the
  maximum allowed size" (or ``EntityTooSmall``), with ``ProposedSize`` and ``MaxSizeAllowed`` as S3 gives them.

A refused upload never reaches moto: nothing is stored, so nothing is indexed. The signature itself is not verified
(its fields must be there; the local stack's credentials are fixed placeholders, and what is checked is that the
policy the API handed out is kept). The error answers carry the bucket's CORS headers when the request's Origin is
allowed, as S3's do, so a page reads the refusal instead of a CORS failure.

The multipart body is read with werkzeug's sans-IO ``MultipartDecoder`` (werkzeug comes with moto's server): it
gives the parts in order, which S3's rules need (fields after the file do not count); ``parse_form_data`` would
give a dict and lose it. The XML is built with ElementTree. Hand-written: only the policy's few condition forms,
which no kept library checks outside S3 itself.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree

from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import (
    Data,
    Epilogue,
    Field,
    File,
    MultipartDecoder,
    NeedData,
)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# The fields S3 requires of a SigV4 POST, in the order it reports a missing one; ``key`` too.
REQUIRED_FIELDS = ("key", "policy", "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature")
# Fields a policy need not name (S3: "each form field that you specify in a form (except x-amz-signature, file,
# policy, and field names that have an x-ignore- prefix) must appear in the list of conditions").
UNCONDITIONED = ("policy", "x-amz-signature", "file")
READ_CHUNK = 64 * 1024
FILE = "\x00file"  # read_upload's marker of the file part (no field name has a NUL)
MAX_FIELDS_BYTES = 1024 * 1024  # of the form's fields before the file (a policy is a few kB)


class Refusal(Exception):
    """What S3 answers instead of storing: its status, code, message and extra elements."""

    def __init__(self, status: int, code: str, message: str, **extra: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def xml(self) -> bytes:
        root = ElementTree.Element("Error")
        for name, value in (("Code", self.code), ("Message", self.message), *self.extra.items(),
                            ("RequestId", uuid.uuid4().hex[:16].upper()), ("HostId", "imgsim-local")):
            ElementTree.SubElement(root, name).text = value
        return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root)


class Upload:
    """One POST upload as S3 sees it: the fields before the file (names lower-cased: S3 matches them so) and the
    file's size."""

    def __init__(self, fields: dict[str, str], file_size: int | None) -> None:
        self.fields = fields
        self.file_size = file_size


def read_upload(boundary: bytes, chunks: Iterable[bytes]) -> Upload:
    """The fields up to the ``file`` part and the file's size (its bytes are counted, not kept)."""
    decoder = MultipartDecoder(boundary)
    fields: dict[str, str] = {}
    part: str | None = None  # the field whose data is being read; FILE: the file's; None: a part S3 ignores
    value = bytearray()
    fields_bytes = 0
    size: int | None = None  # the file's size, once its part began
    source = iter(chunks)
    try:
        while not isinstance(event := decoder.next_event(), Epilogue):
            if isinstance(event, NeedData):
                decoder.receive_data(next(source, None))  # None: the body ended (a part cut short is a ValueError)
            elif isinstance(event, (Field, File)):
                if size is not None:
                    part = None  # S3 ignores the parts after the file
                elif isinstance(event, File) and event.name == "file":
                    part, size = FILE, 0
                else:
                    part = event.name.lower()
                    value.clear()
            elif isinstance(event, Data) and part == FILE and size is not None:
                size += len(event.data)
            elif isinstance(event, Data) and part is not None:
                value.extend(event.data)
                fields_bytes += len(event.data)
                if fields_bytes > MAX_FIELDS_BYTES:
                    raise Refusal(400, "MaxPostPreDataLengthExceeded",
                                  "Your POST request fields preceeding the upload file was too large.")
                if not event.more_data:
                    fields.setdefault(part, value.decode("utf-8", "replace"))
    except ValueError as exc:  # werkzeug: a body that is not well-formed multipart
        raise Refusal(400, "MalformedPOSTRequest",
                      "The body of your POST request is not well-formed multipart/form-data.") from exc
    return Upload(fields, size)


def check(upload: Upload, bucket: str, now: datetime) -> None:
    """Raise the ``Refusal`` S3 gives this upload, if any."""
    fields = upload.fields
    for name in REQUIRED_FIELDS:
        if name not in fields:
            raise Refusal(400, "InvalidArgument", f"Bucket POST must contain a field named '{name}'.  If it is "
                          "specified, please check the order of the fields.", ArgumentName=name, ArgumentValue="")
    if upload.file_size is None:
        raise Refusal(400, "InvalidArgument", "POST requires exactly one file upload per request.",
                      ArgumentName="file", ArgumentValue="0")
    try:
        policy = json.loads(base64.b64decode(fields["policy"], validate=True))
        expiration = datetime.strptime(policy["expiration"].replace(".000Z", "Z"), "%Y-%m-%dT%H:%M:%SZ")
        conditions = policy["conditions"]
        if not isinstance(conditions, list):
            raise TypeError("conditions")
    except (binascii.Error, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Refusal(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.") from exc
    if expiration.replace(tzinfo=UTC) <= now:
        raise Refusal(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
    values = {**fields, "bucket": bucket}
    named: set[str] = set()
    length_range: tuple[int, int] | None = None
    for condition in conditions:
        if isinstance(condition, list) and len(condition) == 3 and condition[0] == "content-length-range":
            length_range = (int(condition[1]), int(condition[2]))
            continue
        operator, name, expected = _condition(condition)
        named.add(name.lower())
        value = values.get(name.lower(), "")
        if not (value == expected if operator == "eq" else value.startswith(expected)):
            raise Refusal(403, "AccessDenied", "Invalid according to Policy: Policy Condition failed: "
                          + json.dumps([operator, f"${name}", expected]))
    extra = sorted(name for name in fields
                   if name not in named and name not in UNCONDITIONED and not name.startswith("x-ignore-"))
    if extra:
        raise Refusal(403, "AccessDenied", f"Invalid according to Policy: Extra input fields: {', '.join(extra)}")
    if length_range is not None:
        low, high = length_range
        if upload.file_size > high:
            raise Refusal(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size",
                          ProposedSize=str(upload.file_size), MaxSizeAllowed=str(high))
        if upload.file_size < low:
            raise Refusal(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size",
                          ProposedSize=str(upload.file_size), MinSizeAllowed=str(low))


def _condition(condition: Any) -> tuple[str, str, str]:
    """``{"key": v}`` or ``["eq"|"starts-with", "$key", v]`` -> (operator, field name as written, value)."""
    if isinstance(condition, dict) and len(condition) == 1:
        ((name, value),) = condition.items()
        return "eq", str(name), str(value)
    if (isinstance(condition, list) and len(condition) == 3 and condition[0] in ("eq", "starts-with")
            and isinstance(condition[1], str) and condition[1].startswith("$")):
        return str(condition[0]), condition[1][1:], str(condition[2])
    raise Refusal(400, "InvalidPolicyDocument", f"Invalid Policy: Invalid Simple-Condition: {json.dumps(condition)}")


class PostPolicy:
    """WSGI middleware: POST uploads to a bucket are checked against their policy before ``app`` (moto) sees them.

    ``cors_origin(bucket, origin)``: whether the bucket's CORS rules allow ``origin`` (its refusals then carry
    ``Access-Control-Allow-Origin`` as S3's do). ``now``: for tests."""

    def __init__(self, app: WsgiApp, *, cors_origin: Callable[[str, str], bool] = lambda bucket, origin: False,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.app = app
        self.cors_origin = cors_origin
        self.now = now

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        bucket = _upload_bucket(environ)
        if bucket is None:
            return self.app(environ, start_response)
        length = int(environ["CONTENT_LENGTH"])
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)  # moto reads it again
        _, options = parse_options_header(environ.get("CONTENT_TYPE", ""))
        try:
            check(read_upload(options.get("boundary", "").encode("latin-1"), _chunks(body)), bucket, self.now())
        except Refusal as refusal:
            return self._refuse(refusal, bucket, environ, start_response)
        return self.app(environ, start_response)

    def _refuse(self, refusal: Refusal, bucket: str, environ: dict[str, Any],
                start_response: StartResponse) -> Iterable[bytes]:
        body = refusal.xml()
        headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
        origin = environ.get("HTTP_ORIGIN")
        if origin and self.cors_origin(bucket, origin):
            headers += [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        phrase = {400: "Bad Request", 403: "Forbidden"}[refusal.status]
        start_response(f"{refusal.status} {phrase}", headers)
        return [body]


def _upload_bucket(environ: dict[str, Any]) -> str | None:
    """The bucket a browser-style POST upload goes to; None for any other request (moto's as it is). A POST without
    a Content-Length goes to moto too (it answers 411, as S3 does)."""
    if environ.get("REQUEST_METHOD") != "POST" or not environ.get("CONTENT_LENGTH"):
        return None
    media_type, _ = parse_options_header(environ.get("CONTENT_TYPE", ""))
    if media_type != "multipart/form-data":  # whatever the query string: S3 treats every form POST as an upload
        return None
    path = environ.get("PATH_INFO", "").strip("/")
    return path if path and "/" not in path else None


def _chunks(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), READ_CHUNK):
        yield body[start:start + READ_CHUNK]


def moto_cors(account_id: str) -> Callable[[str, str], bool]:
    """``PostPolicy``'s ``cors_origin`` on moto's buckets: whether a CORS rule of the bucket allows the origin (moto's
    own matching, as its answers to the same origin use)."""

    def allowed(bucket: str, origin: str) -> bool:
        from moto.s3.models import s3_backends
        from moto.s3.utils import cors_matches_origin

        try:
            rules = s3_backends[account_id]["aws"].get_bucket(bucket).cors
        except Exception:  # noqa: BLE001 - moto's MissingBucket and friends: no bucket, no CORS
            return False
        return any(rule.allowed_origins and cors_matches_origin(origin, rule.allowed_origins) for rule in rules)

    return allowed
