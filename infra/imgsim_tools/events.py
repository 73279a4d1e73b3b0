"""API Gateway HTTP API (payload format 2.0) events, built the way AWS builds them.

Used by the tests, the sample events in ``events/`` and anything that runs the
search handler without API Gateway (the local stack): one place that knows the
shape, so every caller feeds the handler what AWS would.

What AWS does, and this mirrors: header names are lower-cased and repeated
headers joined with commas; cookies move to ``cookies``; the query string is
kept raw in ``rawQueryString`` and parsed into ``queryStringParameters``
(repeated names joined with commas); the body is base64 with
``isBase64Encoded: true`` unless it is text (``text/*``, JSON, XML, form
URL-encoded), and absent when empty.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
              "application/x-www-form-urlencoded")


def _is_text(content_type: str | None) -> bool:
    ct = (content_type or "").lower()
    return ct.startswith(TEXT_TYPES) or ct.endswith(("+json", "+xml"))


def http_api_event(
    method: str,
    path: str,
    *,
    query: Mapping[str, str] | str | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes | str | None = None,
    route_key: str | None = None,
    path_parameters: Mapping[str, str] | None = None,
    source_ip: str = "203.0.113.10",
    stage: str = "$default",
    api_id: str = "a1b2c3d4e5",
) -> dict[str, Any]:
    """An HTTP API v2 event.

    ``route_key`` is the matched API Gateway route, e.g. ``"GET /images/{id}"``
    (pass ``path_parameters`` with it); the default ``$default`` is the
    catch-all route. The search handler routes on the path and method, so it
    answers the same either way.
    """
    method = method.upper()
    raw_query = query if isinstance(query, str) else urlencode(query or {})
    lowered: dict[str, str] = {}
    for name, value in (headers or {}).items():
        name = name.lower()
        lowered[name] = f"{lowered[name]},{value}" if name in lowered else str(value)
    cookies = [c.strip() for c in lowered.pop("cookie", "").split(";") if c.strip()]
    domain = f"{api_id}.execute-api.us-east-1.amazonaws.com"
    lowered.setdefault("host", domain)
    lowered.setdefault("user-agent", "curl/8.5.0")
    lowered.setdefault("x-forwarded-for", source_ip)
    lowered.setdefault("x-forwarded-port", "443")
    lowered.setdefault("x-forwarded-proto", "https")
    lowered.setdefault("x-amzn-trace-id", f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}")
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key or "$default",
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": lowered,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": api_id,
            "domainName": domain,
            "domainPrefix": api_id,
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": lowered["user-agent"],
            },
            "requestId": base64.b32encode(uuid.uuid4().bytes).decode()[:16],
            "routeKey": route_key or "$default",
            "stage": stage,
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if raw_query:
        params: dict[str, str] = {}
        for name, value in parse_qsl(raw_query, keep_blank_values=True):
            params[name] = f"{params[name]},{value}" if name in params else value
        event["queryStringParameters"] = params
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if body is not None and len(body) > 0:
        data = body.encode("utf-8") if isinstance(body, str) else body
        if _is_text(lowered.get("content-type")):
            try:
                event["body"] = data.decode("utf-8")
            except UnicodeDecodeError:
                event["body"], event["isBase64Encoded"] = base64.b64encode(data).decode(), True
        else:
            event["body"], event["isBase64Encoded"] = base64.b64encode(data).decode(), True
        lowered.setdefault("content-length", str(len(data)))
    return event
