"""POST /search and POST /compare: the body is an image in one of several forms (imgsim.http.inputs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.metrics import MetricUnit
from imgsim.http.auth import protected
from imgsim.http.inputs import (
    BOX_FORMAT,
    BOX_PATTERN,
    CompareBody,
    SearchBody,
    openapi_schema,
    parse_box,
    parse_compare_body,
    parse_instant,
    parse_search_body,
    request_body,
)
from imgsim.http.responses import Timer, json_response
from imgsim.services import SearchFilters, SearchRequest, Services

metrics = Metrics()

LIMIT = Annotated[int, Query(ge=1, le=100, description="How many results, 1-100")]
MIN_SCORE = Annotated[float | None, Query(ge=0, le=1, description="Drop results scoring below this (0-1)")]
PREFIX = Annotated[str | None, Query(max_length=1024, description="Only keys starting with this")]
OFFSET = Annotated[int, Query(ge=0, le=1000, description="Skip this many results (paging; next_offset)")]
MIN_SIDE = Annotated[int | None, Query(ge=1, le=100_000, description="Only images at least this many pixels")]
CONTENT_TYPE = Annotated[str | None, Query(max_length=100, description="Only this content type, e.g. image/png")]
INSTANT = Annotated[str | None, Query(max_length=40, description="RFC 3339 time or date (UTC), e.g. 2026-11-26")]
SIMILAR = Annotated[float | None, Query(ge=0, le=1, description="Mark results at or above this as similar "
                                       "(default IMGSIM_SIMILAR_THRESHOLD, 0.5)")]
COLLAPSE = Annotated[bool, Query(description="Fold each result's recorded duplicates into it (\"duplicates\": n)")]
# The pattern is documented, not enforced here: parse_box checks it and says what is wrong with a box that misses it.
BOX = Annotated[str | None, Query(
    max_length=100, examples=["0.25,0.25,0.5,0.5"], json_schema_extra={"pattern": BOX_PATTERN},
    description=f"Search with this region of the query image only, {BOX_FORMAT}. Works with every form of the "
                "query; for an indexed image (id or key) its S3 object is read (an image indexed from a local file "
                "has none: 400). An empty box or one past an edge is 400.")]

BINARY = {"type": "string", "format": "binary"}


def request_bodies() -> dict[tuple[str, str], dict[str, Any]]:
    """For the OpenAPI document: these routes read the body themselves, in several forms."""
    return {
        ("/search", "post"): {"required": True, "content": {
            "image/*": {"schema": BINARY},
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {"image": BINARY}}},
            "application/json": {"schema": openapi_schema(SearchBody)},
        }},
        ("/compare", "post"): {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["a", "b"],
                                               "properties": {"a": BINARY, "b": BINARY}}},
            "application/json": {"schema": openapi_schema(CompareBody)},
        }},
    }


def timed_response(body: dict[str, Any], timer: Timer) -> Response:
    for phase, ms in timer.phases.items():
        metrics.add_metric(name=f"{phase.capitalize()}Ms", unit=MetricUnit.Milliseconds, value=ms)
    return json_response(200, body, {"Server-Timing": timer.server_timing()})


def register(app: APIGatewayHttpResolver, services: Callable[[], Services]) -> None:
    @app.post("/search", **protected(services), tags=["search"],
              summary="Find indexed images similar to a query image (new bytes, or an indexed image by id or key), "
                      "or to a region of it (box)")
    def search(limit: LIMIT = 10, min_score: MIN_SCORE = None, prefix: PREFIX = None, offset: OFFSET = 0,
               min_width: MIN_SIDE = None, min_height: MIN_SIDE = None, content_type: CONTENT_TYPE = None,
               indexed_after: INSTANT = None, indexed_before: INSTANT = None, collapse: COLLAPSE = False,
               similar_threshold: SIMILAR = None, box: BOX = None):
        timer = Timer()
        filters = SearchFilters(min_width=min_width, min_height=min_height, content_type=content_type or None,
                                indexed_after=parse_instant("indexed_after", indexed_after),
                                indexed_before=parse_instant("indexed_before", indexed_before))
        region = parse_box(box)
        max_bytes = services().settings.max_body_bytes
        mime, body = request_body(app.current_event, max_bytes)
        request = SearchRequest(query=parse_search_body(mime, body, max_bytes, region), limit=limit,
                                min_score=min_score, prefix=prefix, filters=filters, offset=offset, collapse=collapse,
                                similar_threshold=similar_threshold)
        result = services().search.search(request, timer)
        metrics.add_metric(name="SearchRequests", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="SearchMs", unit=MetricUnit.Milliseconds, value=timer.total_ms())
        return timed_response(result, timer)

    @app.post("/compare", **protected(services), tags=["search"],
              summary="Similarity of two images (score 0-1 and percent)")
    def compare():
        timer = Timer()
        max_bytes = services().settings.max_body_bytes
        a, b = parse_compare_body(*request_body(app.current_event, max_bytes), max_bytes)
        return timed_response(services().search.compare(a, b, timer), timer)
