"""Who is calling, and may they: every route but the page, /health and /openapi.json needs a credential and a scope.

A credential is a token (a JWT) API Gateway's JWT authorizer validated, or an API key in the ``x-api-key`` header,
matched against the key ring (``imgsim.services.keys``; hashes only, constant time: ``imgsim.access``). The token comes
first: ``token_principal`` reads the claims the gateway put in the event's ``requestContext.authorizer.jwt`` after
checking the signature, issuer, audience and expiry (the template's ``TokenApi``; ``imgsim serve --jwks`` does the
same locally). The function never decodes an ``Authorization`` header itself: only claims the gateway filled in count,
so a bearer header sent to the key API, which has no authorizer, is ignored (401 without a key).

``protected(services, scope)`` gives a route both the check (a powertools middleware) and its OpenAPI ``security``
(the scope named in the requirement), so the document and the enforcement cannot disagree. The middleware puts the ``Principal`` in the resolver's context; the routes read it with
``principal_of(app)`` and pass its tenant to the services. A missing or unknown key is 401; a known key without the
route's scope is 403 ``missing_scope``, naming the scope; a token without the tenant claim (when
``IMGSIM_TENANT_CLAIM`` names one) is 403 ``missing_tenant``.

The principal's name (never the key) is added to the request's log lines (``api_key``, ``tenant``) and to the
metrics' metadata; the handler clears the logger's keys at the start of each invocation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware

from ..access import SCOPES, TENANT_PATTERN, Principal
from ..services import Services
from .errors import InvalidApiKey, MissingApiKey, MissingScope, MissingTenant

API_KEY_HEADER = "x-api-key"
PRINCIPAL = "principal"  # the resolver context's key
# A token's scopes are OAuth scopes of the resource server `imgsim` (Cognito: "<resource server id>/<scope>").
TOKEN_SCOPES = {f"imgsim/{scope}": scope for scope in SCOPES}

logger = Logger(child=True)
metrics = Metrics()


def security(scope: str | None) -> list[dict[str, list[str]]]:
    """The OpenAPI security requirements of a route that needs ``scope`` (None: any credential): an API key with the
    scope, or (the alternative) a token with ``imgsim/<scope>``."""
    return [{"apiKey": [scope] if scope else []}, {"token": [f"imgsim/{scope}"] if scope else []}]


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


def _claim_values(value: Any) -> list[str]:
    """A claim's values: API Gateway passes every claim as a string, an array as "[a b]" (``scp`` of Okta or Entra
    ID); a space-separated string (``scope``, RFC 8693) splits on spaces."""
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value or "").strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return text.split()


def token_scopes(claims: Mapping[str, Any], granted: list[str] | None = None) -> frozenset[str]:
    """imgsim's scopes among the token's: ``imgsim/search`` -> ``search``; any other scope (openid, another API's)
    grants nothing here. From the ``scope`` claim (Cognito, Auth0, Keycloak) or ``scp``, and the scopes the gateway
    matched against a route's authorization scopes when it lists them."""
    names = [*_claim_values(claims.get("scope")), *_claim_values(claims.get("scp")), *(granted or [])]
    return frozenset(TOKEN_SCOPES[name] for name in names if name in TOKEN_SCOPES)


def token_principal(app: APIGatewayHttpResolver, services: Services) -> Principal | None:
    """The principal of the token API Gateway validated, or None when the request came without one (the key API)."""
    authorizer = app.current_event.request_context.authorizer
    claims = authorizer.jwt_claim
    if not claims:
        return None
    name = str(claims.get("sub") or claims.get("client_id") or "token")
    claim = services.settings.tenant_claim
    tenant = None
    if claim:
        value = claims.get(claim)
        if not value:
            raise MissingTenant(f"token '{name}' has no '{claim}' claim naming its tenant (IMGSIM_TENANT_CLAIM)")
        tenant = str(value)
        if not re.match(TENANT_PATTERN, tenant):
            raise MissingTenant(f"token '{name}': its '{claim}' claim {tenant[:64]!r} is not a tenant name "
                                f"({TENANT_PATTERN})")
    return Principal(name, token_scopes(claims, authorizer.jwt_scopes or []), tenant, "token")


def authenticate(app: APIGatewayHttpResolver, services: Services) -> Principal:
    """The token first (the gateway validated it), then the API key."""
    return token_principal(app, services) or key_principal(app, services)


Middleware = Callable[[APIGatewayHttpResolver, NextMiddleware], Response[Any]]


def require(services: Callable[[], Services], scope: str | None) -> Middleware:
    def auth_middleware(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
        principal = authenticate(app, services())
        # Until the next invocation (the handler's inject_lambda_context(clear_state=True) drops them), so the
        # answer's own log line ("rejected request") names the caller too.
        logger.append_keys(api_key=principal.name, tenant=principal.tenant)
        metrics.add_metadata(key="api_key", value=principal.name)
        if scope is not None and not principal.allows(scope):
            prefix = "imgsim/" if principal.via == "token" else ""  # as the token names its scopes
            held = ", ".join(prefix + s for s in sorted(principal.scopes)) or "none"
            raise MissingScope(f"{principal.via} '{principal.name}' lacks the '{prefix}{scope}' scope this route "
                               f"needs (it has: {held})")
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
