"""Who is calling, and may they: every route but the page, /health and /openapi.json needs a credential and a scope.

A credential is an API key in the ``x-api-key`` header, matched against the key ring (``imgsim.services.keys``;
hashes only, constant time: ``imgsim.access``). ``protected(services, scope)`` gives a route both the check (a
powertools middleware) and its OpenAPI ``security`` (the scope named in the requirement), so the document and the
enforcement cannot disagree. The middleware puts the ``Principal`` in the resolver's context; the routes read it with
``principal_of(app)`` and pass its tenant to the services. A missing or unknown key is 401; a known key without the
route's scope is 403 ``missing_scope``, naming the scope.

The principal's name (never the key) is added to the request's log lines (``api_key``, ``tenant``) and to the
metrics' metadata; the handler clears the logger's keys at the start of each invocation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware

from ..access import Principal
from ..services import Services
from .errors import InvalidApiKey, MissingApiKey, MissingScope

API_KEY_HEADER = "x-api-key"
PRINCIPAL = "principal"  # the resolver context's key

logger = Logger(child=True)
metrics = Metrics()


def security(scope: str | None) -> list[dict[str, list[str]]]:
    """The OpenAPI security requirement of a route that needs ``scope`` (None: any credential)."""
    return [{"apiKey": [scope] if scope else []}]


def key_principal(app: APIGatewayHttpResolver, services: Services) -> Principal:
    """The principal of the request's API key. The ring is read first: with no key configured the answer is 503
    ``not_configured`` for every caller."""
    ring = services.keys.ring()
    presented = app.current_event.headers.get(API_KEY_HEADER)
    if not presented:
        raise MissingApiKey(f"send an API key in the {API_KEY_HEADER} header")
    principal = ring.identify(presented)
    if principal is None:
        raise InvalidApiKey(f"the {API_KEY_HEADER} header is not a key this API accepts (revoked, or mistyped)")
    return principal


def authenticate(app: APIGatewayHttpResolver, services: Services) -> Principal:
    return key_principal(app, services)


Middleware = Callable[[APIGatewayHttpResolver, NextMiddleware], Response[Any]]


def require(services: Callable[[], Services], scope: str | None) -> Middleware:
    def auth_middleware(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
        principal = authenticate(app, services())
        # Until the next invocation (the handler's inject_lambda_context(clear_state=True) drops them), so the
        # answer's own log line ("rejected request") names the caller too.
        logger.append_keys(api_key=principal.name, tenant=principal.tenant)
        metrics.add_metadata(key="api_key", value=principal.name)
        if scope is not None and not principal.allows(scope):
            raise MissingScope(f"{principal.via} '{principal.name}' lacks the '{scope}' scope this route needs "
                               f"(it has: {', '.join(sorted(principal.scopes)) or 'none'})")
        app.context[PRINCIPAL] = principal  # cleared after each request, as append_context's
        return next_middleware(app)

    return auth_middleware


def principal_of(app: APIGatewayHttpResolver) -> Principal:
    """The request's principal (set by ``require``; only protected routes have one)."""
    principal = app.context.get(PRINCIPAL)
    assert isinstance(principal, Principal), "principal_of() on a route without protected()"
    return principal


def protected(services: Callable[[], Services], scope: str | None) -> dict[str, Any]:
    """Route options of a route that needs ``scope`` (None: any valid credential):
    ``@app.post(path, **protected(services, SEARCH), ...)``."""
    return {"security": security(scope), "middlewares": [require(services, scope)]}
