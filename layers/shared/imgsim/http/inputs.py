"""Request bodies and query values into the services' value objects.

POST /search takes raw ``image/*`` bytes, multipart form-data or JSON (base64, or an indexed image by id or key);
POST /compare multipart or JSON; the other POST routes JSON only. python-multipart parses form-data; every JSON
body is validated with a pydantic model (the same one documents it in the OpenAPI document). Failures are 4xx
errors (``imgsim.http.errors``), never 500: ``read_body``'s size limit comes before any parsing, JSON nested past
the recursion limit or with integers past Python's 4,300-digit limit is ``bad_json``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, TypeVar

from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)
from python_multipart import FormParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from ..errors import InvalidRequest
from ..services import Box, ImageQuery
from ..services.images import UPLOAD_CONTENT_TYPES
from .errors import (
    BodyTooLarge,
    EmptyBody,
    MalformedBody,
    MalformedJson,
    UnsupportedMediaType,
)

IMAGE_BODY_TYPES = ("image/", "application/octet-stream")
SEARCH_BODY_FORMS = "image/* (raw bytes), multipart/form-data (file field 'image') or application/json"
COMPARE_BODY_FORMS = "multipart/form-data (fields 'a' and 'b') or application/json {\"a\": base64, \"b\": base64}"

# -- the body -------------------------------------------------------------------------------------------------------


def read_body(body: str | None, is_base64_encoded: bool | None, max_bytes: int) -> bytes:
    """The request body as bytes, within ``max_bytes`` (``BodyTooLarge`` otherwise)."""
    raw = body or ""
    if is_base64_encoded:
        # Reject on the encoded length first: no point decoding a body we refuse.
        if len(raw) // 4 * 3 > max_bytes + 2:
            raise body_too_large(len(raw) // 4 * 3, max_bytes)
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedBody("request body is not valid base64") from exc
    else:
        data = raw.encode("utf-8")
    if len(data) > max_bytes:
        raise body_too_large(len(data), max_bytes)
    return data


def body_too_large(size: int, limit: int) -> BodyTooLarge:
    return BodyTooLarge(
        f"request body is {size} bytes; the limit is {limit} bytes (API Gateway passes at most 6 MB "
        "to Lambda and binary bodies arrive base64-encoded, a third larger). For larger images, "
        "POST /uploads for a presigned upload URL, then search with {\"key\": ...}"
    )


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """``"Multipart/Form-Data; boundary=x"`` -> ``("multipart/form-data", {"boundary": "x"})``.

    A header value outside Latin-1 (HTTP's header charset) names no media type: ``("", {})``,
    which every route answers with 415."""
    try:
        mime, params = parse_options_header(content_type or "")
    except UnicodeEncodeError:
        return "", {}
    return mime.decode("latin-1").lower(), {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in params.items()}


def unsupported_media_type(content_type: str | None, accepted: str) -> UnsupportedMediaType:
    given = content_type or "none"
    return UnsupportedMediaType(f"Content-Type {given!r} is not accepted here; send {accepted}")


def form_fields(content_type: str, body: bytes, max_bytes: int) -> dict[str, bytes]:
    """Every field of a multipart/form-data body, files and plain fields alike, by name.

    python-multipart does the parsing; files stay in memory (the body is
    already bounded by ``max_bytes``).
    """
    _, params = media_type(content_type)
    boundary = params.get("boundary")
    if not boundary:
        raise MalformedBody("multipart/form-data without a boundary parameter")
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
        raise MalformedBody(f"malformed multipart/form-data body: {exc}") from exc
    return fields


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; anything else is ``bad_json``.

    ``ValueError`` covers malformed JSON, bad UTF-8 and integers longer than Python's
    4,300-digit conversion limit; ``RecursionError`` covers deep nesting (``[[[[...``).
    """
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise MalformedJson(f"request body is not valid JSON: {reason}") from exc
    if not isinstance(value, dict):
        raise MalformedJson("request body must be a JSON object")
    return value


def base64_image(name: str, value: str) -> bytes:
    """A base64 field's bytes; a data: URL (as FileReader.readAsDataURL gives) is accepted too."""
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"{name!r} is not valid base64") from exc


# -- ids -------------------------------------------------------------------------------------------------------------
# An image id is a UUID (``imgsim.ids``) in its canonical 8-4-4-4-12 form, the JSON Schema ``uuid`` format: the
# pattern makes the validation exactly what the document says (pydantic's UUID type would also take 32 bare hex
# digits, braces or a urn: prefix, which the ``uuid`` format does not).

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
UUID_FORMAT = {"format": "uuid"}
ImageId = Annotated[str, Field(pattern=UUID_PATTERN, json_schema_extra=UUID_FORMAT)]

# -- JSON bodies -------------------------------------------------------------------------------------------------------
# Strict: a number is not a string, true is not 1 (as the hand-written checks before them). Each model documents its
# route's body in the OpenAPI document (``imgsim.http.contract``): a field added here is documented with it. Rules
# across fields that the services enforce (exactly one query form; something to resolve) are stated in the schema
# too (``json_schema_extra``), so that every body the document calls valid is one the API accepts.

# No minLength: "" is the base64 of no bytes, refused like any bytes that are not an image (400 empty_image).
Base64 = Annotated[str, Field(description="An image (JPEG, PNG, GIF, WebP, TIFF, BMP, HEIC, AVIF) in base64, or as a "
                              "data: URL", json_schema_extra={"format": "byte"})]
ImageRef = Annotated[str, Field(min_length=1)]


def _integral(value: Any) -> Any:
    """JSON Schema's integer is any number without a fractional part (``10.0`` too); strict pydantic wants an int."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


JSON_INT = BeforeValidator(_integral)
IdList = Annotated[list[ImageId], Field(max_length=100)]


def _exactly_one_of(*names: str) -> Callable[[dict[str, Any]], None]:
    """JSON Schema for "exactly one of these fields is given and not null" (each may be null otherwise).

    Each branch requires one field with the non-null form of its own schema (not ``{"not": {"type": "null"}}``:
    a generator reads that as "anything but null" and makes values the field's own schema refuses)."""

    def extra(schema: dict[str, Any]) -> None:
        branches = []
        for name in names:
            field_schema = schema["properties"][name]
            given = [s for s in field_schema.get("anyOf", [field_schema]) if s.get("type") != "null"]
            branches.append({"required": [name], "properties": {name: given[0] if len(given) == 1 else {"anyOf": given}}})
        schema["oneOf"] = branches

    return extra


def _one_non_empty(*names: str) -> dict[str, Any]:
    """JSON Schema for "at least one of these list fields is given with an item"."""
    return {"anyOf": [{"required": [name], "properties": {name: {"minItems": 1}}} for name in names]}


class _Body(BaseModel):
    # defer_build: the validators are built on a model's first use, not at import (cold start: ~10 ms for these five
    # models, which a search with a raw image body never uses).
    model_config = ConfigDict(strict=True, frozen=True, defer_build=True)


class SearchBody(_Body):
    """POST /search as JSON: exactly one of a base64 image, an indexed image's id, or its key."""

    model_config = ConfigDict(json_schema_extra=_exactly_one_of("image", "id", "key"))

    image: Base64 | None = None
    id: ImageId | None = None
    key: Annotated[str | None, Field(min_length=1, description="An indexed image's S3 key")] = None


class CompareBody(_Body):
    """POST /compare as JSON: two base64 images."""

    a: Base64
    b: Base64


# A character that is white space to none of the three readers of this pattern: JSON Schema's (ECMA-262) \s, pydantic's
# (Rust regex: Unicode White_Space) and Python's str.strip, which UploadRequest applies (it also strips \x1c-\x1f).
NOT_ONLY_SPACE = r"[^\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"


class UploadBody(_Body):
    """POST /uploads: the file's name and the Content-Type its PUT will send."""

    filename: Annotated[str, Field(min_length=1, pattern=NOT_ONLY_SPACE, description="kept, sanitized, in the key")]
    # The types the indexer decodes (the service also takes their parameters and any letter case: "Image/JPEG").
    content_type: Annotated[str, Field(min_length=1, examples=["image/jpeg"],
                                       json_schema_extra={"enum": sorted(UPLOAD_CONTENT_TYPES)})]


class ResolveBody(_Body):
    """POST /duplicates/resolve: keep one image; remove others and/or mark them not duplicates of it. Each image is
    named once: kept, removed or marked (a rule JSON Schema cannot state; otherwise 400 bad_parameter)."""

    model_config = ConfigDict(json_schema_extra=_one_non_empty("remove", "not_duplicates"))

    keep: ImageId
    remove: IdList = []
    not_duplicates: IdList = []


class RecommendBody(_Body):
    """POST /recommend: more like ``positive``, unlike ``negative`` (ids or keys)."""

    positive: Annotated[list[ImageRef], Field(min_length=1, max_length=100, description="ids or keys")]
    negative: Annotated[list[ImageRef], Field(max_length=100, description="ids or keys")] = []
    limit: Annotated[int, Field(ge=1, le=100), JSON_INT] = 10
    similar_threshold: Annotated[float | None, Field(ge=0, le=1)] = None
    prefix: Annotated[str | None, Field(max_length=1024)] = None


Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], obj: dict[str, Any]) -> Model:
    """``obj`` as ``model``; its problems, all of them, as one ``bad_parameter``."""
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(part) for part in error.get("loc", ()))
            problems.append(f"{where}: {error['msg']}" if where else error["msg"])
        raise InvalidRequest("; ".join(problems) or "invalid request body") from exc


def json_body(model: type[Model], body: bytes) -> Model:
    """A JSON-only route's body as ``model``: ``empty_body``, ``bad_json`` or ``bad_parameter`` otherwise."""
    if not body.strip():
        raise EmptyBody("no request body; send a JSON object")
    return validated(model, json_object(body))


# -- POST /search and /compare ---------------------------------------------------------------------------------------


def parse_search_body(content_type: str | None, body: bytes, max_bytes: int, box: Box | None = None) -> ImageQuery:
    """The query image in any of its forms; ``box`` (the ``box`` query parameter, ``parse_box``): only that region."""
    mime, _ = media_type(content_type)
    if not body:
        raise EmptyBody(f"no query image; send {SEARCH_BODY_FORMS}")
    if mime.startswith(IMAGE_BODY_TYPES):
        return ImageQuery(image=body, box=box)
    if mime == "multipart/form-data":
        fields = form_fields(content_type or "", body, max_bytes)
        if "image" not in fields:
            raise InvalidRequest("multipart body has no 'image' field")
        return ImageQuery(image=fields["image"], box=box)
    if mime == "application/json":
        parsed = validated(SearchBody, json_object(body))
        return ImageQuery(image=base64_image("image", parsed.image) if parsed.image is not None else None,
                          point_id=parsed.id, key=parsed.key, box=box)
    raise unsupported_media_type(content_type, SEARCH_BODY_FORMS)


def parse_compare_body(content_type: str | None, body: bytes, max_bytes: int) -> tuple[bytes, bytes]:
    mime, _ = media_type(content_type)
    if not body:
        raise EmptyBody(f"no images; send {COMPARE_BODY_FORMS}")
    if mime == "multipart/form-data":
        fields = form_fields(content_type or "", body, max_bytes)
        missing = [name for name in ("a", "b") if name not in fields]
        if missing:
            raise InvalidRequest(f"multipart body lacks field(s) {', '.join(missing)}")
        return fields["a"], fields["b"]
    if mime == "application/json":
        parsed = validated(CompareBody, json_object(body))
        return base64_image("a", parsed.a), base64_image("b", parsed.b)
    raise unsupported_media_type(content_type, COMPARE_BODY_FORMS)


# -- query values ------------------------------------------------------------------------------------------------------

# A box (``imgsim.services.Box``) as text: "x,y,w,h", four decimals from 0 to 1 (no sign, no exponent; spaces around
# the commas allowed). [0-9], not \d: the pattern is also the OpenAPI document's, an ECMA-262 one, where \d is ASCII
# only and Python's \d would take any script's digits (which float() reads).
_FRACTION = r"(?:0(?:\.[0-9]*)?|1(?:\.0*)?|\.[0-9]+)"
BOX_PATTERN = rf"^ *{_FRACTION} *(?:, *{_FRACTION} *){{3}}$"
BOX_FORMAT = ("x,y,w,h: the region's top left corner and size, each a fraction (0..1) of the width or height of the "
              "query image as shown upright, e.g. 0.25,0.25,0.5,0.5 for the middle quarter")


def parse_box(value: str | None) -> Box | None:
    """The ``box`` query parameter (``BOX_PATTERN``) as a ``Box``; anything else is ``bad_parameter`` naming what is
    wrong with it (malformed here; empty or past an edge: ``Box`` itself)."""
    if value is None:
        return None
    if not re.fullmatch(BOX_PATTERN, value):
        raise InvalidRequest(_box_problem(value))
    x, y, w, h = (float(part) for part in value.split(","))
    return Box(x, y, w, h)


def _box_problem(value: str) -> str:
    """What is wrong with a box that does not match ``BOX_PATTERN``."""
    parts = [part.strip() for part in value.split(",")]
    if len(parts) != 4:
        return f"box must be four numbers separated by commas, got {len(parts)} in {value[:100]!r}: {BOX_FORMAT}"
    for name, part in zip("xywh", parts):
        if re.fullmatch(_FRACTION, part):
            continue
        try:
            number = float(part) if re.fullmatch(r"[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?", part) else math.nan
        except ValueError:
            number = math.nan
        if number > 1:
            return (f"box: {name} = {part} is more than 1; x, y, w and h are fractions of the image's width and "
                    f"height, not pixels ({BOX_FORMAT})")
        if number < 0:
            return f"box: {name} = {part} is negative; the box must lie within the image ({BOX_FORMAT})"
        return f"box: {name} = {part[:40]!r} is not a decimal number from 0 to 1 ({BOX_FORMAT})"
    return f"box {value[:100]!r} is malformed: {BOX_FORMAT}"


# RFC 3339's date-time (section 5.6: the JSON Schema ``date-time`` format) and full-date (``date``): exactly what
# the document declares. datetime.fromisoformat alone would also take ISO 8601 forms outside both ("20261126",
# "2026-W48", a time without its offset), which the document would then not describe.
_DATE_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _rfc3339(value: str) -> datetime:
    """``value`` as an aware datetime; ValueError when it is neither an RFC 3339 date-time nor a date.

    An instant before year 1 or after 9999 in UTC (``0001-01-01T00:00:00+01:00``: valid RFC 3339) is clamped to
    the earliest or latest time Python has: as a bound of a filter it means the same. A leap second (``:60``) is the
    last microsecond of its minute."""
    if match := _DATE.fullmatch(value):
        year, month, day = map(int, match.groups())
        return datetime(year, month, day, tzinfo=UTC)
    match = _DATE_TIME.fullmatch(value)
    if not match:
        raise ValueError("not an RFC 3339 date-time or date")
    year, month, day, hour, minute, second = map(int, match.groups()[:6])
    fraction, zulu, sign, off_hours, off_minutes = match.groups()[6:]
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if second == 60:
        second, micro = 59, 999_999
    if not zulu and (int(off_hours) > 23 or int(off_minutes) > 59):
        raise ValueError("the offset's hours or minutes are out of range")
    offset = timedelta(0) if zulu else timedelta(hours=int(off_hours), minutes=int(off_minutes))
    local = datetime(year, month, day, hour, minute, second, micro)
    try:
        return local.replace(tzinfo=timezone(-offset if sign == "-" else offset)).astimezone(UTC)
    except OverflowError:
        return _EARLIEST if (sign == "+" and year == 1) else _LATEST


def parse_instant(name: str, value: str | None) -> str | None:
    """An RFC 3339 instant (``2026-11-26T08:00:00Z``) or a date (``2026-11-26``, midnight UTC), normalized to UTC."""
    if value is None or value == "":
        return None
    try:
        parsed = _rfc3339(value)
    except ValueError as exc:
        raise InvalidRequest(f"{name} must be an RFC 3339 time or a date, e.g. 2026-11-26T08:00:00Z") from exc
    return parsed.isoformat().replace("+00:00", "Z")


def _instant(value: str) -> str:
    try:
        return _rfc3339(value).isoformat().replace("+00:00", "Z")
    except ValueError as exc:
        raise ValueError("must be an RFC 3339 time or a date, e.g. 2026-11-26T08:00:00Z or 2026-11-26") from exc


# A query parameter's type: validated (and normalized to UTC) by powertools with the other parameters, and documented
# as what it takes.
Instant = Annotated[str, AfterValidator(_instant), WithJsonSchema({"anyOf": [
    {"type": "string", "format": "date-time"}, {"type": "string", "format": "date"}]})]


def request_body(event: BaseProxyEvent, max_bytes: int) -> tuple[str | None, bytes]:
    """The request's Content-Type and its body as bytes, within ``max_bytes``."""
    return event.headers.get("content-type"), read_body(event.body, event.is_base64_encoded, max_bytes)
