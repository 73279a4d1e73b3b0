"""The HTTP side of the search API: what the Lambda handler (``functions/search``) needs beyond routing.

- ``errors``: the HTTP-only errors and THE table mapping every imgsim error to a status and the error envelope
  ``{"error": {"code", "message"}}``
- ``inputs``: request bodies in their several forms (raw ``image/*``, multipart form-data, JSON with base64) into
  the services' value objects; the JSON bodies' pydantic models
- ``auth``: the ``x-api-key`` check
- ``responses``: JSON responses, errors as responses, per-phase timing (``Server-Timing``)

The services (``imgsim.services``) know nothing of this package.
"""
