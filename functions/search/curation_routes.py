"""Duplicate groups, resolving them, "more like this" (imgsim.services.curation does the work).

Every route module here has ``register(app, services)``, adding its routes to the function's resolver, and
``contract()``: each route's body, answers and errors for the OpenAPI document (``imgsim.http.contract``). Not a powertools ``Router``: a Router object is bound to the last
resolver that includes it, and ``imgsim serve`` loads this function's module once per execution environment in one
process (several resolvers, one imported module), so each resolver gets its own route functions instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.openapi.params import Query
from imgsim.access import DELETE, SEARCH
from imgsim.http.auth import principal_of, protected
from imgsim.http.inputs import (
    ImageId,
    RecommendBody,
    ResolveBody,
    json_body,
    request_body,
)
from imgsim.http.responses import json_response
from imgsim.services import DuplicatesQuery, RecommendRequest, Resolution, Services

if TYPE_CHECKING:
    from imgsim.http import contract as c

THRESHOLD = Annotated[float | None, Query(ge=0, le=1, description="Duplicate threshold 0-1 (default: the indexer's)")]
GROUP_LIMIT = Annotated[int, Query(ge=1, le=100, description="Groups per page, 1-100")]
CURSOR = Annotated[ImageId | None, Query(description="next_cursor of the previous page (an image's id)")]
# 256 characters: within API Gateway's 10,240 bytes of request line and headers however it is written (search_routes).
PREFIX = Annotated[str | None, Query(max_length=256, description="Only groups whose image to keep starts with this")]


def contract() -> dict[tuple[str, str], c.Operation]:
    # Imported here: only GET /openapi.json needs them (~20 ms of a cold start otherwise).
    from imgsim.http import contract as c
    from imgsim.http.outputs import DuplicatesPage, Recommendations, Resolved

    return {
        ("/duplicates", "get"): c.Operation(ok=DuplicatesPage, errors=(*c.STORE, *c.S3)),
        ("/duplicates/resolve", "post"): c.Operation(ok=Resolved, body={"application/json": ResolveBody},
                                                     errors=(*c.JSON_BODY, *c.RESOLVE, *c.STORE, *c.S3)),
        ("/recommend", "post"): c.Operation(ok=Recommendations, body={"application/json": RecommendBody},
                                            errors=(*c.JSON_BODY, *c.NOT_FOUND, *c.STORE, *c.S3)),
    }


def register(app: APIGatewayHttpResolver, services: Callable[[], Services]) -> None:
    def body_bytes() -> bytes:
        return request_body(app.current_event, services().settings.max_body_bytes)[1]

    def callers() -> Services:
        """The services as the caller's tenant sees them (imgsim.services.Services.for_tenant)."""
        return services().for_tenant(principal_of(app).tenant)

    @app.get("/duplicates", **protected(services, SEARCH), tags=["duplicates"],
             summary="Groups of duplicate images recorded at indexing, with the one to keep; paged by cursor")
    def list_duplicates(threshold: THRESHOLD = None, prefix: PREFIX = None, limit: GROUP_LIMIT = 20,
                        cursor: CURSOR = None):
        query = DuplicatesQuery(threshold=threshold, prefix=prefix, limit=limit, cursor=cursor)
        return json_response(200, callers().curation.duplicates(query))

    @app.post("/duplicates/resolve", **protected(services, DELETE), tags=["duplicates"],
              summary="Keep one image; delete others' objects and/or remember pairs that are not duplicates")
    def resolve_duplicates():
        body = json_body(ResolveBody, body_bytes())
        resolution = Resolution(keep=body.keep, remove=body.remove, not_duplicates=body.not_duplicates)
        return json_response(200, callers().curation.resolve(resolution))

    @app.post("/recommend", **protected(services, SEARCH), tags=["search"],
              summary="More like these (and unlike those): indexed images by id or key")
    def recommend():
        body = json_body(RecommendBody, body_bytes())
        request = RecommendRequest(positive=body.positive, negative=body.negative, limit=body.limit,
                                   similar_threshold=body.similar_threshold, prefix=body.prefix)
        return json_response(200, callers().curation.recommend(request))
