"""Errors as HTTP sees them: the errors only HTTP has, and one table from every imgsim error to a status.

Services raise imgsim's errors (``imgsim.errors``); body parsing and the key check raise the HTTP-only ones below.
``problem(exc)`` turns any of them into a status, the envelope ``{"error": {"code", "message"}}`` and headers
(``Retry-After`` for transient unavailability). An error the table does not cover (a ``ConfigError``, a
``CollectionMismatch``...) is a fault of the deployment or a bug: the handler logs it and answers ``InternalError``.
The OpenAPI document's error answers are derived from this table too (``imgsim.http.contract``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from ..errors import (
    Conflict,
    ImageError,
    ImgsimError,
    InvalidRequest,
    NotFound,
    ObjectStorageError,
    TooCostly,
    Unavailable,
    UnsupportedImageType,
)

# The shortest wait a 503 asks for; a rate-limited Qdrant's own Retry-After is passed on when it asks for longer.
RETRY_AFTER_SECONDS = 5


class MalformedBody(InvalidRequest):
    """A body that is not what its Content-Type says (bad base64, a multipart body without its boundary)."""

    code = "bad_body"


class MalformedJson(InvalidRequest):
    """A body that should be a JSON object and is not."""

    code = "bad_json"


class EmptyBody(InvalidRequest):
    code = "empty_body"


class UnsupportedMediaType(InvalidRequest):
    """A Content-Type the route does not accept."""

    code = "unsupported_media_type"


class BodyTooLarge(TooCostly):
    """More bytes than ``IMGSIM_MAX_BODY_BYTES`` (API Gateway passes at most 6 MB to Lambda)."""

    code = "body_too_large"


class Unauthenticated(ImgsimError):
    """The request does not carry the API key."""

    code = "unauthenticated"


class MissingApiKey(Unauthenticated):
    code = "missing_api_key"


class InvalidApiKey(Unauthenticated):
    code = "invalid_api_key"


class Forbidden(ImgsimError):
    """The caller is known, but may not do this."""

    code = "forbidden"


class MissingScope(Forbidden):
    """The key (or token) lacks the scope the route needs: the message names both."""

    code = "missing_scope"


class MissingTenant(Forbidden):
    """A token (JWT) without the tenant claim ``IMGSIM_TENANT_CLAIM`` names, or whose value is not a tenant name: the
    API will not guess which images it may see."""

    code = "missing_tenant"


class InternalError(ImgsimError):
    """Anything else went wrong (a bug, a fault of the deployment): it has been logged; the caller gets no internals."""

    code = "internal_error"


# THE table: each error class to the status it answers with. An error takes the entry of the first class of its MRO
# found here (``UnsupportedImageType`` before ``InvalidRequest``; ``ImageTooLarge(TooCostly, ImageError)`` is 413).
STATUS: dict[type[ImgsimError], HTTPStatus] = {
    InvalidRequest: HTTPStatus.BAD_REQUEST,
    ImageError: HTTPStatus.BAD_REQUEST,
    UnsupportedMediaType: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    UnsupportedImageType: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    Unauthenticated: HTTPStatus.UNAUTHORIZED,
    Forbidden: HTTPStatus.FORBIDDEN,
    NotFound: HTTPStatus.NOT_FOUND,
    Conflict: HTTPStatus.CONFLICT,
    TooCostly: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    ObjectStorageError: HTTPStatus.BAD_GATEWAY,  # S3 refused: the upstream's failure, not the caller's
    Unavailable: HTTPStatus.SERVICE_UNAVAILABLE,  # + Retry-After when transient
    InternalError: HTTPStatus.INTERNAL_SERVER_ERROR,  # what the handler answers for an error the table lacks
}


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


@dataclass(frozen=True)
class Problem:
    """An error as the API answers it."""

    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)


def status_of(error_type: type[BaseException]) -> HTTPStatus | None:
    """The status an error of this class answers with; None when the table does not cover it (a 500)."""
    for cls in error_type.__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return None


def problem(exc: BaseException) -> Problem | None:
    """``exc`` as the API answers it, or None when it is not a refusal the table covers (the handler's 500)."""
    status = status_of(type(exc))
    code = getattr(exc, "code", None)
    if status is None or not isinstance(code, str):
        return None
    headers: dict[str, str] = {}
    if isinstance(exc, Unavailable) and exc.transient:
        headers["Retry-After"] = str(max(RETRY_AFTER_SECONDS, math.ceil(exc.retry_after or 0)))
    return Problem(int(status), code, str(exc), headers)
