"""The API key check: every route but the page, /health and /openapi.json needs the ``x-api-key`` header.

Which key is expected is the services' (``imgsim.services.keys``: IMGSIM_API_KEY or an SSM parameter); here, how a
request presents it. ``protected(services)`` gives a route both the check (a powertools middleware) and its OpenAPI
``security``, so the document and the enforcement cannot disagree.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware

from ..services import Services
from .errors import InvalidApiKey, MissingApiKey

API_KEY_HEADER = "x-api-key"
API_KEY_SECURITY: list[dict[str, list[str]]] = [{"apiKey": []}]


def check_api_key(provided: str | None, expected: Callable[[], str]) -> None:
    """``expected()`` first: with no key configured the answer is 503 ``not_configured``, for every caller."""
    key = expected()
    if not provided:
        raise MissingApiKey(f"send the API key in the {API_KEY_HEADER} header")
    # Constant time, so response timing does not reveal how much of a guess was right.
    if not hmac.compare_digest(provided.encode("utf-8"), key.encode("utf-8")):
        raise InvalidApiKey(f"the {API_KEY_HEADER} header does not match")


Middleware = Callable[[APIGatewayHttpResolver, NextMiddleware], Response[Any]]


def require_api_key(services: Callable[[], Services]) -> Middleware:
    def api_key_middleware(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
        check_api_key(app.current_event.headers.get(API_KEY_HEADER), services().keys.expected)
        return next_middleware(app)

    return api_key_middleware


def protected(services: Callable[[], Services]) -> dict[str, Any]:
    """Route options of a route that needs the API key: ``@app.post(path, **protected(services), ...)``."""
    return {"security": API_KEY_SECURITY, "middlewares": [require_api_key(services)]}
