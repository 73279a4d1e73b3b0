"""SearchFunction: the HTTPS API (API Gateway HTTP API, payload format 2.0).

Routing, validation of query parameters, CORS and the OpenAPI document come
from powertools' APIGatewayHttpResolver; the work is done by
``imgsim.api.SearchService`` with the per-process singletons of
``imgsim.runtime``. Every error leaves as ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import curation_routes  # beside this file: /var/task on Lambda
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import (
    APIGatewayHttpResolver,
    CORSConfig,
    Response,
    content_types,
)
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from imgsim import runtime
from imgsim.api import (
    ApiConfig,
    ApiError,
    ApiKeyCheck,
    SearchFilters,
    SearchService,
    Timer,
    api_error_from,
    error_body,
    parse_compare_body,
    parse_instant,
    parse_search_body,
    read_body,
)
from imgsim.curation import CurationService
from imgsim.dedupe import DEFAULT_DUPLICATE_THRESHOLD
from imgsim.errors import ImageError, StoreUnavailable
from imgsim.tracing import make_tracer

logger = Logger()
tracer = make_tracer()  # powertools Tracer only when tracing is on (imgsim.tracing)
metrics = Metrics()

STATIC_DIR = Path(__file__).resolve().parent / "static"
API_KEY_SECURITY = [{"apiKey": []}]


@lru_cache(maxsize=1)
def get_config() -> ApiConfig:
    return ApiConfig.from_env()


@lru_cache(maxsize=1)
def get_service() -> SearchService:
    return SearchService(
        get_config(), embedder=runtime.get_embedder, store=runtime.get_store,
        s3=lambda: runtime.get_boto3_client("s3"), layout=runtime.get_layout,
    )


@lru_cache(maxsize=1)
def get_key_check() -> ApiKeyCheck:
    return ApiKeyCheck(get_config())


@lru_cache(maxsize=1)
def get_curation() -> CurationService:
    return CurationService(
        get_config(), embedder=runtime.get_embedder, store=runtime.get_store,
        s3=lambda: runtime.get_boto3_client("s3"), duplicate_threshold=duplicate_threshold(),
    )


def duplicate_threshold() -> float:
    """The indexer's (IMGSIM_DUPLICATE_THRESHOLD); with IMGSIM_DEDUPE=off groups still list what was recorded."""
    return runtime.get_app_settings().index.duplicate_check or DEFAULT_DUPLICATE_THRESHOLD


def reset() -> None:
    """Forget configuration and service (tests, after changing the environment)."""
    for cached in (get_config, get_service, get_key_check, get_curation):
        cached.cache_clear()


app = APIGatewayHttpResolver(
    cors=CORSConfig(
        allow_origin=ApiConfig.from_env().cors_origin,
        allow_headers=["x-api-key", "content-type"],
        expose_headers=["server-timing", "retry-after"],
        max_age=600,
    ),
    enable_validation=True,
)


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body, headers=headers)


def require_api_key(app: APIGatewayHttpResolver, next_middleware):
    get_key_check().check(app.current_event.headers.get("x-api-key"))
    return next_middleware(app)


def request_bytes() -> bytes:
    event = app.current_event
    return read_body(event.body, event.is_base64_encoded, get_config().max_body_bytes)


def timed_response(body: dict[str, Any], timer: Timer) -> Response:
    for phase, ms in timer.phases.items():
        metrics.add_metric(name=f"{phase.capitalize()}Ms", unit=MetricUnit.Milliseconds, value=ms)
    return json_response(200, body, {"Server-Timing": timer.server_timing()})


# -- errors ---------------------------------------------------------------------


@app.exception_handler(ApiError)
def handle_api_error(exc: ApiError) -> Response:
    if exc.status >= 500:
        logger.warning("request failed", extra={"code": exc.code, "error": exc.message})
    return json_response(exc.status, exc.body(), exc.headers)


@app.exception_handler([ImageError, StoreUnavailable])
def handle_imgsim_error(exc: Exception) -> Response:
    error = api_error_from(exc)
    logger.info("rejected request", extra={"code": error.code, "error": error.message})
    if isinstance(exc, ImageError):
        metrics.add_metric(name="BadImages", unit=MetricUnit.Count, value=1)
    return handle_api_error(error)


@app.exception_handler(RequestValidationError)
def handle_validation_error(exc: RequestValidationError) -> Response:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("query", "path"))
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return json_response(400, error_body("bad_parameter", "; ".join(problems) or "invalid request"))


@app.exception_handler([EndpointConnectionError])
def handle_s3_unreachable(exc: Exception) -> Response:
    logger.warning("S3 unreachable", extra={"error": str(exc)})
    return handle_api_error(ApiError(503, "storage_unavailable", "S3 is unreachable; try again shortly",
                                     {"Retry-After": "5"}))


@app.exception_handler(Exception)
def handle_unexpected(exc: Exception) -> Response:
    # Logged with its stack trace; the caller gets no internals.
    logger.exception("unhandled error")
    if isinstance(exc, (ClientError, BotoCoreError)):
        return json_response(502, error_body("storage_error", "S3 refused the request"))
    return json_response(500, error_body("internal_error", "internal error; it has been logged"))


@app.not_found
def handle_not_found(exc: Exception) -> Response:
    event = app.current_event
    return json_response(404, error_body("not_found", f"no route {event.http_method} {event.path}"))


# -- routes -----------------------------------------------------------------------

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


@app.post(
    "/search", security=API_KEY_SECURITY, middlewares=[require_api_key], tags=["search"],
    summary="Find indexed images similar to a query image (new bytes, or an indexed image by id or key)",
)
def search(limit: LIMIT = 10, min_score: MIN_SCORE = None, prefix: PREFIX = None, offset: OFFSET = 0,
           min_width: MIN_SIDE = None, min_height: MIN_SIDE = None, content_type: CONTENT_TYPE = None,
           indexed_after: INSTANT = None, indexed_before: INSTANT = None, collapse: COLLAPSE = False,
           similar_threshold: SIMILAR = None):
    timer = Timer()
    filters = SearchFilters(min_width=min_width, min_height=min_height, content_type=content_type or None,
                            indexed_after=parse_instant("indexed_after", indexed_after),
                            indexed_before=parse_instant("indexed_before", indexed_before))
    query = parse_search_body(app.current_event.headers.get("content-type"), request_bytes(), get_config().max_body_bytes)
    body = get_service().search(query, limit=limit, min_score=min_score, prefix=prefix, timer=timer,
                                filters=filters, offset=offset, collapse=collapse,
                                similar_threshold=similar_threshold)
    metrics.add_metric(name="SearchRequests", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="SearchMs", unit=MetricUnit.Milliseconds, value=timer.total_ms())
    return timed_response(body, timer)


@app.post(
    "/compare", security=API_KEY_SECURITY, middlewares=[require_api_key], tags=["search"],
    summary="Similarity of two images (score 0-1 and percent)",
)
def compare():
    timer = Timer()
    a, b = parse_compare_body(app.current_event.headers.get("content-type"), request_bytes(), get_config().max_body_bytes)
    return timed_response(get_service().compare(a, b, timer=timer), timer)


@app.post(
    "/uploads", security=API_KEY_SECURITY, middlewares=[require_api_key], tags=["images"],
    summary="A presigned upload (url, method, headers) and the key and id the image will have",
)
def create_upload():
    return json_response(200, get_service().create_upload(request_bytes()))


@app.get(
    "/images/<id>", security=API_KEY_SECURITY, middlewares=[require_api_key], tags=["images"],
    summary="An indexed image's stored details and a presigned URL",
)
def get_image(id: str):
    return json_response(200, get_service().get_image(id))


@app.delete(
    "/images/<id>", security=API_KEY_SECURITY, middlewares=[require_api_key], tags=["images"],
    summary="Delete the image's S3 object; the indexer then removes it from the index",
)
def delete_image(id: str):
    result = get_service().delete_image(id)
    metrics.add_metric(name="ImagesDeleteRequested", unit=MetricUnit.Count, value=1)
    return json_response(202, result)


curation_routes.register(app, curation=get_curation, json_response=json_response, request_bytes=request_bytes,
                         middlewares=[require_api_key], security=API_KEY_SECURITY)


@app.get("/health", tags=["meta"], summary="Status, collection, point count and model (no API key)")
def health():
    status, body, headers = get_service().health()
    return json_response(status, body, headers)


@lru_cache(maxsize=1)
def _page() -> str:
    return (STATIC_DIR / "index.html").read_text(encoding="utf-8")


@app.get("/", tags=["meta"], summary="The web page (no API key)")
def page():
    return Response(status_code=200, content_type="text/html; charset=utf-8", body=_page(),
                    headers={"Cache-Control": "no-cache"})


# Request bodies powertools cannot derive from the signatures (the routes read
# the raw body themselves, to accept several forms); merged into the document.
BINARY = {"type": "string", "format": "binary"}
REQUEST_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("/search", "post"): {
        "required": True,
        "content": {
            "image/*": {"schema": BINARY},
            "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                               "properties": {"image": BINARY}}},
            "application/json": {"schema": {"type": "object", "description": "exactly one of image, id, key",
                                            "properties": {"image": {"type": "string", "format": "byte"},
                                                           "id": {"type": "string", "format": "uuid"},
                                                           "key": {"type": "string"}}}},
        },
    },
    ("/compare", "post"): {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["a", "b"],
                                               "properties": {"a": BINARY, "b": BINARY}}},
            "application/json": {"schema": {"type": "object", "required": ["a", "b"],
                                            "properties": {"a": {"type": "string", "format": "byte"},
                                                           "b": {"type": "string", "format": "byte"}}}},
        },
    },
    ("/uploads", "post"): {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["filename", "content_type"],
            "properties": {"filename": {"type": "string"}, "content_type": {"type": "string"}}}}},
    },
}


@lru_cache(maxsize=1)
def openapi_document() -> str:
    # Imported here: powertools' OpenAPI document models are needed only for this route (import cost README
    # "Cold start"); request validation uses the lighter params module.
    from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn

    document = json.loads(app.get_openapi_json_schema(
        title="imgsim", version="0.1.0",
        description="Image similarity search. Errors are {\"error\": {\"code\", \"message\"}}.",
        security_schemes={"apiKey": APIKey(name="x-api-key", in_=APIKeyIn.header)},
    ))
    for (path, method), request_body in {**REQUEST_BODIES, **curation_routes.REQUEST_BODIES}.items():
        document["paths"][path][method]["requestBody"] = request_body
    return json.dumps(document)


@app.get("/openapi.json", tags=["meta"], summary="This API's OpenAPI 3 document (no API key)")
def openapi():
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=openapi_document())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict, context: Any) -> dict:
    runtime.refresh()  # follow a model switch (imgsim.deployment) within IMGSIM_ALIAS_TTL
    return app.resolve(event, context)
