"""POST /search and POST /compare: the body is an image in one of several forms (imgsim.http.inputs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.metrics import MetricUnit
from imgsim.access import SEARCH
from imgsim.http.auth import principal_of, protected
from imgsim.http.inputs import (
    BOX_FORMAT,
    CompareBody,
    Instant,
    SearchBody,
    parse_box,
    parse_compare_body,
    parse_search_body,
    request_body,
)
from imgsim.http.responses import Timer, json_response
from imgsim.services import SearchFilters, SearchRequest, Services

if TYPE_CHECKING:
    from imgsim.http import contract as c

metrics = Metrics()

LIMIT = Annotated[int, Query(ge=1, le=100, description="How many results, 1-100")]
MIN_SCORE = Annotated[float | None, Query(ge=0, le=1, description="Drop results scoring below this (0-1)")]
# 256 characters: any request the document calls valid stays within API Gateway's 10,240 bytes of request line and
# headers, even with every string parameter at its longest in 4-byte characters (12 bytes each, percent-encoded).
PREFIX = Annotated[str | None, Query(max_length=256, description="Only keys starting with this")]
OFFSET = Annotated[int, Query(ge=0, le=1000, description="Skip this many results (paging; next_offset)")]
MIN_SIDE = Annotated[int | None, Query(ge=1, le=100_000, description="Only images at least this many pixels")]
CONTENT_TYPE = Annotated[str | None, Query(max_length=100, description="Only this content type, e.g. image/png")]
INSTANT = Annotated[Instant | None, Query(description="An RFC 3339 time (2026-11-26T08:00:00Z) or a date (2026-11-26, "
                                           "midnight UTC)")]
SIMILAR = Annotated[float | None, Query(ge=0, le=1, description="Mark results at or above this as similar "
                                       "(default IMGSIM_SIMILAR_THRESHOLD, 0.5)")]
COLLAPSE = Annotated[bool, Query(description="Fold each result's recorded duplicates into it (\"duplicates\": n)")]
# A format of its own ("box", described; its text form is inputs.BOX_PATTERN): what makes a box valid (w and h above 0,
# x + w and y + h at most 1) is beyond a JSON Schema pattern, so the document names the format and parse_box
# checks it and says what is wrong (a pattern would declare "0,0,0,0" or "0.9,0,0.5,1" valid: fuzzers rightly
# flag a 400 to a schema-valid value). tests/schemathesis_hooks.py generates boxes of this format.
BOX = Annotated[str | None, Query(
    max_length=100, examples=["0.25,0.25,0.5,0.5"], json_schema_extra={"format": "box"},
    description=f"Search with this region of the query image only, {BOX_FORMAT}. Works with every form of the "
                "query; for an indexed image (id or key) its S3 object is read (an image indexed from a local file "
                "has none: 400). An empty box or one past an edge is 400.")]

SERVER_TIMING = {"Server-Timing": "Milliseconds per phase (embed or lookup, qdrant, presign; total)"}
IMAGE_PARTS = {"contentType": "image/*"}


def contract() -> dict[tuple[str, str], c.Operation]:
    """For the OpenAPI document (imgsim.http.contract): these routes read the body themselves, in several forms."""
    # Imported here: only GET /openapi.json needs them (~20 ms of a cold start otherwise).
    from imgsim.http import contract as c
    from imgsim.http.outputs import Comparison, SearchResults

    return {
        ("/search", "post"): c.Operation(
            ok=SearchResults, ok_headers=SERVER_TIMING,
            body={"image/*": c.BINARY, "application/octet-stream": c.BINARY,
                  "multipart/form-data": {"type": "object", "required": ["image"], "properties": {"image": c.BINARY}},
                  "application/json": SearchBody},
            encoding={"multipart/form-data": {"image": IMAGE_PARTS}},
            errors=(*c.IMAGE_BODY, *c.NOT_FOUND, *c.STORE, *c.S3)),
        ("/compare", "post"): c.Operation(
            ok=Comparison, ok_headers=SERVER_TIMING,
            body={"multipart/form-data": {"type": "object", "required": ["a", "b"],
                                          "properties": {"a": c.BINARY, "b": c.BINARY}},
                  "application/json": CompareBody},
            encoding={"multipart/form-data": {"a": IMAGE_PARTS, "b": IMAGE_PARTS}},
            errors=c.IMAGE_BODY),
    }


def timed_response(body: dict[str, Any], timer: Timer) -> Response:
    for phase, ms in timer.phases.items():
        metrics.add_metric(name=f"{phase.capitalize()}Ms", unit=MetricUnit.Milliseconds, value=ms)
    return json_response(200, body, {"Server-Timing": timer.server_timing()})


def register(app: APIGatewayHttpResolver, services: Callable[[], Services]) -> None:
    def callers() -> Services:
        """The services as the caller's tenant sees them (imgsim.services.Services.for_tenant)."""
        return services().for_tenant(principal_of(app).tenant)

    @app.post("/search", **protected(services, SEARCH), tags=["search"],
              summary="Find indexed images similar to a query image (new bytes, or an indexed image by id or key), "
                      "or to a region of it (box)")
    def search(limit: LIMIT = 10, min_score: MIN_SCORE = None, prefix: PREFIX = None, offset: OFFSET = 0,
               min_width: MIN_SIDE = None, min_height: MIN_SIDE = None, content_type: CONTENT_TYPE = None,
               indexed_after: INSTANT = None, indexed_before: INSTANT = None, collapse: COLLAPSE = False,
               similar_threshold: SIMILAR = None, box: BOX = None):
        timer = Timer()
        filters = SearchFilters(min_width=min_width, min_height=min_height, content_type=content_type or None,
                                indexed_after=indexed_after, indexed_before=indexed_before)
        region = parse_box(box)
        max_bytes = services().settings.max_body_bytes
        mime, body = request_body(app.current_event, max_bytes)
        request = SearchRequest(query=parse_search_body(mime, body, max_bytes, region), limit=limit,
                                min_score=min_score, prefix=prefix, filters=filters, offset=offset, collapse=collapse,
                                similar_threshold=similar_threshold)
        result = callers().search.search(request, timer)
        metrics.add_metric(name="SearchRequests", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="SearchMs", unit=MetricUnit.Milliseconds, value=timer.total_ms())
        return timed_response(result, timer)

    @app.post("/compare", **protected(services, SEARCH), tags=["search"],
              summary="Similarity of two images (score 0-1 and percent)")
    def compare():
        timer = Timer()
        max_bytes = services().settings.max_body_bytes
        a, b = parse_compare_body(*request_body(app.current_event, max_bytes), max_bytes)
        return timed_response(callers().search.compare(a, b, timer), timer)
