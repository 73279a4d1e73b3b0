"""The OpenAPI document as the API's contract: what the routes' signatures cannot tell powertools.

Powertools derives each operation's parameters from its route function's signature (names, types, bounds, enums,
formats: a query parameter added to a signature is documented with it). The rest comes from here, per operation
(``Operation``, declared beside the route in ``functions/search/*_routes.py``):

- the request body, per media type, from the pydantic models that validate it (``imgsim.http.inputs``: a field
  added to a model is documented with it) or a JSON schema (raw image bytes, multipart parts);
- the success answer's JSON schema (``imgsim.http.outputs``) and headers;
- every error status with the codes it can carry, derived from the error classes a route names and the one table
  ``imgsim.http.errors.STATUS``: a route never writes a status or a code, so the document cannot drift from the
  handler. Added to every operation: ``InternalError`` (500), ``InvalidRequest`` (400) when it has parameters,
  the credential's errors (401, 403 ``missing_tenant``, 503) when it has ``security``
  (``imgsim.http.auth.protected``), and API Gateway's own answers (429 throttling, 431 headers over 10 KB, 500/503
  when the function fails or times out, 413 over the payload limits, 401 from the JWT authorizer of the token API),
  whose body is ``{"message"}``, not the envelope.

``complete(document, operations)`` applies it to powertools' document; it refuses a served route without a contract
and a contract without a route. Building the document costs ~50 ms once per execution environment (GET
/openapi.json only; nothing here is imported to answer any other request).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ..errors import (
    Busy,
    ImageError,
    ImgsimError,
    InvalidRequest,
    KeepInTrash,
    KeyTaken,
    NotADuplicate,
    NotConfigured,
    NotDeletable,
    NotFound,
    ObjectStorageError,
    ObjectStorageUnavailable,
    SecretUnavailable,
    StoreUnavailable,
    Unavailable,
    UnsupportedImageType,
)
from . import outputs
from .errors import (
    BodyTooLarge,
    EmptyBody,
    InternalError,
    InvalidApiKey,
    MalformedBody,
    MalformedJson,
    MissingApiKey,
    MissingScope,
    MissingTenant,
    UnsupportedMediaType,
    status_of,
)

REF = "#/components/schemas/{model}"
BINARY: dict[str, Any] = {"type": "string", "format": "binary"}
JSON = "application/json"

# -- the errors a route can raise, by what it does ------------------------------------------------------------------


def _subclasses(base: type[ImgsimError]) -> tuple[type[ImgsimError], ...]:
    """Every subclass of ``base`` (a category never raised itself, as ImageError), in definition order."""
    found: list[type[ImgsimError]] = []
    pending = [base]
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                pending.append(sub)
    return tuple(found)


ALWAYS: tuple[type[ImgsimError], ...] = (InternalError,)
PARAMETERS: tuple[type[ImgsimError], ...] = (InvalidRequest,)  # powertools' validation of path and query values
AUTH: tuple[type[ImgsimError], ...] = (MissingApiKey, InvalidApiKey, MissingTenant, NotConfigured, SecretUnavailable)
SCOPED: tuple[type[ImgsimError], ...] = (MissingScope,)  # a route whose security requirement names a scope
STORE: tuple[type[ImgsimError], ...] = (StoreUnavailable,)
# Presigned URLs (every answer that shows an image) and the objects' copies and deletes.
S3: tuple[type[ImgsimError], ...] = (ObjectStorageError, ObjectStorageUnavailable)
# Reading any request body (imgsim.http.inputs.request_body), then a JSON one (json_body).
BODY: tuple[type[ImgsimError], ...] = (BodyTooLarge, MalformedBody, EmptyBody)
JSON_BODY: tuple[type[ImgsimError], ...] = (*BODY, MalformedJson, InvalidRequest)
# A body that is an image in one of several forms (POST /search, /compare): every kind of ImageError, by class.
IMAGE_BODY: tuple[type[ImgsimError], ...] = (*JSON_BODY, UnsupportedMediaType, *_subclasses(ImageError))
# Changing images under their leases (imgsim.trash.Locks).
LEASED: tuple[type[ImgsimError], ...] = (Busy,)
# Named where routes use them, re-exported for the route modules.
NOT_FOUND: tuple[type[ImgsimError], ...] = (NotFound,)
DELETE: tuple[type[ImgsimError], ...] = (NotFound, NotDeletable, *LEASED)
RESOLVE: tuple[type[ImgsimError], ...] = (NotFound, KeepInTrash, NotADuplicate, NotDeletable, *LEASED)
RESTORE: tuple[type[ImgsimError], ...] = (NotFound, KeyTaken, *LEASED)
UPLOAD: tuple[type[ImgsimError], ...] = (UnsupportedImageType, NotConfigured)

# API Gateway's own answers, before or instead of the function's (body: outputs.GatewayMessage).
GATEWAY = {
    429: "API Gateway throttled the request (the template's ApiThrottlingRateLimit and ApiThrottlingBurstLimit)",
    431: "API Gateway: the request line and headers are over its 10,240-byte limit",
    500: "API Gateway: the function failed outright",
    503: "API Gateway: the function did not answer within the integration timeout (30 s)",
}
GATEWAY_BODY = {413: "API Gateway: the request is over its 10 MB limit or Lambda's 6 MB payload limit"}
# A protected route on the token API (template TokenApi), whose JWT authorizer answers before the function.
GATEWAY_TOKEN = {401: "API Gateway's JWT authorizer (token API): no bearer token, or one that is malformed, expired, "
                      "badly signed, or of another issuer or audience"}


@dataclass(frozen=True)
class Link:
    """An OpenAPI link from an operation's 200 answer to another operation: what a client (or a fuzzer) can do next
    with a value of the answer, e.g. ``Link("/trash/{id}/restore", "post", {"id": "$response.body#/trash_id"})``."""

    path: str
    method: str
    parameters: Mapping[str, str]


@dataclass(frozen=True)
class Operation:
    """One route's contract beyond its signature.

    ``ok``: the 200 answer's JSON model (or ``ok_content``: its content object, for another media type);
    ``ok_headers``: headers of the 200 answer (name -> description); ``body``: the request body per media type (a
    model, or a JSON schema), ``encoding``: per media type, the OpenAPI encoding of its parts; ``errors``: what the
    route raises beyond what every route can (see the module); ``error_details``: a model whose fields the route's own
    error answers carry beside ``error`` (GET /health); ``links``: from the 200 answer to other operations."""

    ok: type[BaseModel] | None = None
    ok_content: dict[str, Any] | None = None
    ok_headers: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, type[BaseModel] | dict[str, Any]] = field(default_factory=dict)
    encoding: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    errors: tuple[type[ImgsimError], ...] = ()
    error_details: type[BaseModel] | None = None
    links: Mapping[str, Link] = field(default_factory=dict)


Operations = Mapping[tuple[str, str], Operation]

# -- the error answers -----------------------------------------------------------------------------------------------


def error_statuses(errors: Iterable[type[ImgsimError]]) -> dict[int, dict[str, type[ImgsimError]]]:
    """{status: {code: the first class with that code}} of these errors, by the table."""
    statuses: dict[int, dict[str, type[ImgsimError]]] = {}
    for error in errors:
        status = status_of(error)
        code = getattr(error, "code", None)
        if status is None or not isinstance(code, str):
            raise ValueError(f"{error.__name__} has no status in imgsim.http.errors.STATUS or no code")
        statuses.setdefault(int(status), {}).setdefault(code, error)
    return statuses


def _example_message(error: type[ImgsimError], code: str) -> str:
    """The class's docstring (its own: a class without one has None), else the code."""
    return " ".join(error.__doc__.split()) if error.__doc__ else code


def envelope(codes: Iterable[str]) -> dict[str, Any]:
    """The error envelope with ``code`` narrowed to these codes."""
    return {"allOf": [{"$ref": REF.format(model="Error")}, {"type": "object", "properties": {"error": {
        "type": "object", "properties": {"code": {"enum": sorted(codes)}}}}}]}


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every error the API itself answers",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string", "description": "Stable: branch on it (messages may change)"},
        "message": {"type": "string", "description": "For people: what went wrong and what to do"},
    }}},
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again (a transient unavailability)",
                               "schema": {"type": "integer", "minimum": 1}}}


def error_response(status: int, by_code: Mapping[str, type[ImgsimError]], *, gateway: str | None = None,
                   details: type[BaseModel] | None = None) -> dict[str, Any]:
    schema = envelope(by_code)
    if details is not None:
        schema = {"allOf": [{"$ref": REF.format(model=details.__name__)}, schema]}
    if gateway is not None:
        schema = {"anyOf": [schema, {"$ref": REF.format(model="GatewayMessage")}]}
    examples: dict[str, Any] = {code: {"value": {"error": {"code": code, "message": _example_message(error, code)}}}
                                for code, error in sorted(by_code.items())}
    description = f"{HTTPStatus(status).phrase}: " + ", ".join(sorted(by_code))
    if gateway is not None:
        description += f"; or {{\"message\"}} from {gateway}"
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema, "examples": examples}}}
    if any(issubclass(error, Unavailable) and error.transient for error in by_code.values()):
        response["headers"] = RETRY_AFTER
    return response


def gateway_response(status: int, what: str) -> dict[str, Any]:
    """A status only API Gateway answers: its ``{"message"}`` (`imgsim serve`, emulating it, uses the envelope)."""
    return {"description": f"{HTTPStatus(status).phrase}: {what}", "content": {JSON: {
        "schema": {"anyOf": [{"$ref": REF.format(model="GatewayMessage")}, {"$ref": REF.format(model="Error")}]},
        "example": {"message": HTTPStatus(status).phrase}}}}


# -- the document ----------------------------------------------------------------------------------------------------


def _schema(value: type[BaseModel] | dict[str, Any]) -> dict[str, Any]:
    return {"$ref": REF.format(model=value.__name__)} if isinstance(value, type) else value


def responses(operation: dict[str, Any], contract: Operation) -> dict[str, Any]:
    """Every answer of one operation: 200, its errors, API Gateway's."""
    errors: list[type[ImgsimError]] = [*ALWAYS]
    if operation.get("parameters"):
        errors += PARAMETERS
    if operation.get("security"):
        errors += AUTH
        if scopes_of(operation):
            errors += SCOPED
    common = error_statuses(errors)
    own = error_statuses(contract.errors)
    ok: dict[str, Any] = {"description": "OK"}
    if contract.ok is not None:
        ok["content"] = {JSON: {"schema": _schema(contract.ok)}}
    elif contract.ok_content is not None:
        ok["content"] = contract.ok_content
    if contract.ok_headers:
        ok["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                         for name, text in contract.ok_headers.items()}
    answers: dict[str, Any] = {"200": ok}
    gateway = {**GATEWAY, **(GATEWAY_BODY if contract.body else {}), **(GATEWAY_TOKEN if operation.get("security")
                                                                         else {})}
    for status in sorted({*common, *own, *gateway}):
        by_code = {**common.get(status, {}), **own.get(status, {})}
        if not by_code:
            answers[str(status)] = gateway_response(status, gateway[status])
            continue
        details = contract.error_details if status in own else None
        answers[str(status)] = error_response(status, by_code, gateway=gateway.get(status), details=details)
    return answers


def scopes_of(operation: dict[str, Any]) -> list[str]:
    """The scopes an API key needs (its requirement comes first; a token's names the same scopes as imgsim/<scope>)."""
    requirements = operation.get("security") or [{}]
    return sorted({scope for scopes in requirements[0].values() for scope in scopes})


def request_body(contract: Operation) -> dict[str, Any]:
    content: dict[str, Any] = {}
    for media_type, schema in contract.body.items():
        content[media_type] = {"schema": _schema(schema)}
        if media_type in contract.encoding:
            content[media_type]["encoding"] = contract.encoding[media_type]
    return {"required": True, "content": content}


def _models(operations: Operations) -> tuple[list[type[BaseModel]], list[type[BaseModel]]]:
    """The request models and the answer models the operations name."""
    inputs = {m for c in operations.values() for m in c.body.values() if isinstance(m, type)}
    answers = {m for c in operations.values() for m in (c.ok, c.error_details) if m is not None}
    answers.add(outputs.GatewayMessage)
    return sorted(inputs, key=lambda m: m.__name__), sorted(answers, key=lambda m: m.__name__)


def components(operations: Operations) -> dict[str, Any]:
    """JSON schemas of every model the operations name (and the models those name), as named components."""
    inputs, answers = _models(operations)
    _, schemas = models_json_schema([(m, "validation") for m in inputs] + [(m, "serialization") for m in answers],
                                    ref_template=REF)
    return {**schemas.get("$defs", {}), "Error": ERROR_SCHEMA}


def complete(document: dict[str, Any], operations: Operations) -> dict[str, Any]:
    """Powertools' document with each operation's contract: its body, every answer, the components they name."""
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    if documented != set(operations):
        raise ValueError(f"routes without a contract: {sorted(documented - set(operations))}; "
                         f"contracts without a route: {sorted(set(operations) - documented)}")
    for (path, method), contract in operations.items():
        operation = document["paths"][path][method]
        if contract.body:
            operation["requestBody"] = request_body(contract)
        operation["responses"] = responses(operation, contract)
        if operation.get("security"):
            scopes = scopes_of(operation)
            needs = (f"Needs the `{scopes[0]}` scope (a token: `imgsim/{scopes[0]}`)." if scopes
                     else "Needs any valid API key or token (no scope).")
            operation["description"] = f"{operation['description']}\n\n{needs}" if operation.get("description") \
                else needs
    for (path, method), contract in operations.items():
        if contract.links:  # once every operation is in place: a link names its target's operationId
            document["paths"][path][method]["responses"]["200"]["links"] = {name: {
                "operationId": document["paths"][link.path][link.method]["operationId"],
                "parameters": dict(link.parameters)} for name, link in contract.links.items()}
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    # powertools' 422 and response validation, which this API never answers (bad input is a 400, bad_parameter)
    for unused in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schemas.pop(unused, None)
    schemas.update(components(operations))
    return document
