"""SearchFunction: the HTTPS API (API Gateway HTTP API, payload format 2.0).

Routing, validation of query parameters, CORS and the OpenAPI document come from powertools'
APIGatewayHttpResolver. The routes, one module per group beside this file (``search_routes``, ``image_routes``, ``trash_routes``,
``curation_routes``), parse requests (``imgsim.http``) into the services' value objects and call the services
(``imgsim.services``), which ``services()`` builds once per execution environment. Every error leaves as
``{"error": {"code", "message"}}`` with the status of ``imgsim.http.errors.STATUS``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import access_routes  # beside this file: /var/task on Lambda
import curation_routes
import image_routes
import search_routes
import trash_routes
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import (
    CORSConfig,
    Response,
    content_types,
)
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestValidationError,
)
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from imgsim.composition import RootHolder
from imgsim.errors import ImageError, ImgsimError, InvalidRequest, NotFound
from imgsim.http.errors import InternalError, problem
from imgsim.http.resolver import OwnEventResolver
from imgsim.http.responses import error_response, json_response
from imgsim.objects import S3Objects
from imgsim.services import Services
from imgsim.tracing import make_tracer

logger = Logger()
tracer = make_tracer()  # powertools Tracer only when tracing is on (imgsim.tracing)
metrics = Metrics()

STATIC_DIR = Path(__file__).resolve().parent / "static"
ROUTE_GROUPS = (search_routes, image_routes, curation_routes, trash_routes, access_routes)


# -- wiring: the one place that knows where the services' dependencies come from ----------------------------------


@lru_cache(maxsize=1)
def services() -> Services:
    """Every service the routes use, built once per root (building calls nothing: the store, the model and the S3
    client are made on first use, by the root)."""
    current = root()
    s3 = S3Objects(current.s3)
    return Services.build(
        current.settings.api, store=current.store, embedder=current.embedder, objects=lambda: s3,
        read_secret=current.read_secret, layout=current.layout,
    )


# This execution environment's composition root (imgsim.composition), built on first use; a hand-over (the local
# stack's root, a test's) drops the services built on the previous one.
_root = RootHolder(on_change=services.cache_clear)
root = _root.get
use_root = _root.use
_root.register_snapshot_hooks()  # SnapStart: warm the model before the snapshot, renew clients after a restore


app = OwnEventResolver(  # powertools' resolver, the event per environment (the local stack runs several)
    cors=CORSConfig(
        allow_origin=services().settings.cors_origin,
        allow_headers=["x-api-key", "authorization", "content-type"],
        expose_headers=["server-timing", "retry-after"],
        max_age=600,
    ),
    enable_validation=True,
)


# -- errors: statuses come from imgsim.http.errors.STATUS ----------------------------------------------------------


@app.exception_handler(ImgsimError)
def handle_imgsim_error(exc: ImgsimError) -> Response:
    answer = problem(exc)
    if answer is None:  # a fault of the deployment (ConfigError, CollectionMismatch...), not a refusal
        return handle_unexpected(exc)
    if answer.status >= 500:
        logger.warning("request failed", extra={"code": answer.code, "error": answer.message})
    else:
        logger.info("rejected request", extra={"code": answer.code, "error": answer.message})
    if isinstance(exc, ImageError):
        metrics.add_metric(name="BadImages", unit=MetricUnit.Count, value=1)
    return error_response(answer)


@app.exception_handler(RequestValidationError)
def handle_validation_error(exc: RequestValidationError) -> Response:
    """Query and path parameters powertools validated against the routes' signatures."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("query", "path"))
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return handle_imgsim_error(InvalidRequest("; ".join(problems) or "invalid request"))


@app.exception_handler(Exception)
def handle_unexpected(exc: Exception) -> Response:
    # Logged with its stack trace; the caller gets no internals.
    logger.exception("unhandled error")
    answer = problem(InternalError("internal error; it has been logged"))
    assert answer is not None  # InternalError is in the table (tests/unit/test_http_errors.py)
    return error_response(answer)


@app.not_found
def handle_not_found(exc: Exception) -> Response:
    # A method a path lacks is a 404 too, as API Gateway answers it (its routes are method and path).
    event = app.current_event
    return handle_imgsim_error(NotFound(f"no route {event.http_method} {event.path}"))


# -- routes ---------------------------------------------------------------------------------------------------------

for routes in ROUTE_GROUPS:
    routes.register(app, services)


@app.get("/health", tags=["meta"], summary="Status, collection and model, and whether Qdrant answers (no API key; no count: GET /me)")
def health():
    report = services().search.health()
    if report.problem is None:
        return json_response(200, {"status": "ok", **report.details})
    answer = problem(report.problem)
    if answer is None:  # not reached: every Unavailable has a status (tests/unit/test_http_errors.py)
        return handle_unexpected(report.problem)
    return json_response(answer.status, {"status": "unavailable", **report.details, **answer.body()}, answer.headers)


@lru_cache(maxsize=1)
def _page() -> str:
    return (STATIC_DIR / "index.html").read_text(encoding="utf-8")


@app.get("/", tags=["meta"], summary="The web page (no API key)")
def page():
    return Response(status_code=200, content_type="text/html; charset=utf-8", body=_page(),
                    headers={"Cache-Control": "no-cache"})


DESCRIPTION = """Image similarity search.

Every error the API answers is `{"error": {"code", "message"}}`: branch on `code` (each operation lists the codes
of each status), show `message`. API Gateway's own answers (429 throttling; 500 or 503 when the function fails or
times out; 413 over its payload limits) are `{"message"}` instead. A path or method the API lacks is a 404 (API
Gateway routes by method and path: no 405).

Access: every route but `/`, `/health` and `/openapi.json` needs an API key in the `x-api-key` header, and the scope
its description names: `search` (search, compare, recommend, get an image, list duplicates and the trash), `upload`
(`/uploads`) or `delete` (delete, resolve, restore). A missing or unknown key is a 401; a known key without the scope
is a 403 `missing_scope`. A key with a tenant sees only that tenant's images (another tenant's image is a 404, as an
absent one); a key without a tenant sees only images outside `tenants/`. `GET /me` tells a key what it is.

Tokens: a stack deployed with an OIDC issuer (template parameters `OidcIssuer`, `OidcAudience`) also has a token API
(output `TokenApiUrl`), where API Gateway's JWT authorizer validates an `Authorization: Bearer` access token (issuer,
audience, signature, expiry; 401 `{"message": "Unauthorized"}` otherwise) and keys are not accepted. The token's
`scope` claim grants `imgsim/search`, `imgsim/upload`, `imgsim/delete`; the claim the deployment names
(`IMGSIM_TENANT_CLAIM`) its tenant, and a token without it is a 403 `missing_tenant`. The key API ignores bearer
tokens."""


def meta_contract() -> dict[tuple[str, str], Any]:
    from imgsim.http import contract as c
    from imgsim.http.outputs import Health, HealthUnavailable

    return {
        ("/health", "get"): c.Operation(ok=Health, errors=c.STORE, error_details=HealthUnavailable),
        ("/", "get"): c.Operation(ok_content={"text/html": {"schema": {"type": "string"}}}),
        ("/openapi.json", "get"): c.Operation(ok_content={"application/json": {"schema": {"type": "object"}}}),
    }


@lru_cache(maxsize=1)
def openapi_document() -> str:
    # Imported here: powertools' OpenAPI document models and the contract's are needed only for this route (import
    # cost docs/performance.md "Cold start"); request validation uses the lighter params module.
    from aws_lambda_powertools.event_handler.openapi.models import (
        APIKey,
        APIKeyIn,
        HTTPBearer,
    )
    from imgsim.http.contract import complete

    document = json.loads(app.get_openapi_json_schema(
        title="imgsim", version="0.1.0", description=DESCRIPTION,
        security_schemes={
            "apiKey": APIKey(name="x-api-key", in_=APIKeyIn.header),
            "token": HTTPBearer(bearerFormat="JWT", description=(
                "An OIDC access token, on the token API only (output TokenApiUrl of a stack deployed with an OIDC "
                "issuer): its scope claim names imgsim/search, imgsim/upload or imgsim/delete")),
        },
    ))
    # What the signatures cannot say: bodies (the routes read them themselves, after the API key check), answers,
    # error codes (imgsim.http.contract).
    operations = meta_contract()
    for routes in ROUTE_GROUPS:
        operations.update(routes.contract())
    return json.dumps(complete(document, operations))


@app.get("/openapi.json", tags=["meta"], summary="This API's OpenAPI 3 document (no API key)")
def openapi():
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=openapi_document())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict, context: Any) -> dict:
    root().refresh()  # follow a model switch (imgsim.deployment) within IMGSIM_ALIAS_TTL
    return app.resolve(event, context)
