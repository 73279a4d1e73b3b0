"""Routes of the curation API: duplicate groups, resolving them, "more like this" (imgsim.curation does the work).

``register(app, ...)`` adds them to the function's resolver. Not a powertools ``Router``: a Router object is
bound to the last resolver that includes it, and ``imgsim serve`` loads this function's module once per
execution environment in one process (several resolvers, one imported module), so each resolver gets its
own route functions here instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from imgsim.curation import CurationService

THRESHOLD = Annotated[float | None, Query(ge=0, le=1, description="Duplicate threshold 0-1 (default: the indexer's)")]
GROUP_LIMIT = Annotated[int, Query(ge=1, le=100, description="Groups per page, 1-100")]
CURSOR = Annotated[str | None, Query(max_length=64, description="next_cursor of the previous page")]
PREFIX = Annotated[str | None, Query(max_length=1024, description="Only groups whose image to keep starts with this")]

REQUEST_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("/duplicates/resolve", "post"): {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["keep"],
        "properties": {"keep": {"type": "string", "format": "uuid"},
                       "remove": {"type": "array", "items": {"type": "string", "format": "uuid"}},
                       "not_duplicates": {"type": "array", "items": {"type": "string", "format": "uuid"}}}}}}},
    ("/recommend", "post"): {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["positive"],
        "properties": {"positive": {"type": "array", "items": {"type": "string"}, "description": "ids or keys"},
                       "negative": {"type": "array", "items": {"type": "string"}, "description": "ids or keys"},
                       "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                       "similar_threshold": {"type": "number", "minimum": 0, "maximum": 1},
                       "prefix": {"type": "string"}}}}}},
}


def register(
    app: APIGatewayHttpResolver,
    *,
    curation: Callable[[], CurationService],
    json_response: Callable[..., Response],
    request_bytes: Callable[[], bytes],
    middlewares: list[Callable[..., Any]],
    security: list[dict[str, list[str]]],
) -> None:
    @app.get("/duplicates", security=security, middlewares=middlewares, tags=["duplicates"],
             summary="Groups of duplicate images recorded at indexing, with the one to keep; paged by cursor")
    def list_duplicates(threshold: THRESHOLD = None, prefix: PREFIX = None, limit: GROUP_LIMIT = 20,
                        cursor: CURSOR = None):
        return json_response(200, curation().duplicates(threshold=threshold, prefix=prefix, limit=limit,
                                                        cursor=cursor))

    @app.post("/duplicates/resolve", security=security, middlewares=middlewares, tags=["duplicates"],
              summary="Keep one image; delete others' objects and/or remember pairs that are not duplicates")
    def resolve_duplicates():
        return json_response(200, curation().resolve(request_bytes()))

    @app.post("/recommend", security=security, middlewares=middlewares, tags=["search"],
              summary="More like these (and unlike those): indexed images by id or key")
    def recommend():
        return json_response(200, curation().recommend(request_bytes()))
