"""The HTTP side of the search API: what the Lambda handler (``functions/search``) needs beyond routing.

- ``errors``: the HTTP-only errors and THE table mapping every imgsim error to a status and the error envelope
  ``{"error": {"code", "message"}}``
- ``inputs``: request bodies in their several forms (raw ``image/*``, multipart form-data, JSON with base64) into
  the services' value objects; the JSON bodies' pydantic models
- ``outputs``: the answers' pydantic models (their JSON schemas, for the OpenAPI document)
- ``contract``: the OpenAPI document beyond the routes' signatures: bodies, answers, every error status and code
  (derived from ``errors.STATUS``)
- ``auth``: the ``x-api-key`` check
- ``responses``: JSON responses, errors as responses, per-phase timing (``Server-Timing``)

The services (``imgsim.services``) know nothing of this package.
"""
