"""The events AWS hands the two functions, built the way AWS builds them: one place that knows each shape.

Used by the local stack (its S3 notifications and its SQS event source mapping, its HTTP front end),
``imgsim backfill --via-queue``, the tests, and the sample events in ``events/`` (tests/test_events.py checks
that each sample is exactly what these builders make), so every caller feeds a handler what AWS would.

API Gateway HTTP API (payload format 2.0), ``http_api_event``: header names are lower-cased and repeated headers
joined with commas; cookies move to ``cookies``; the query string is kept raw in ``rawQueryString`` and parsed
into ``queryStringParameters`` (repeated names joined with commas); the body is base64 with ``isBase64Encoded:
true`` unless it is text (``text/*``, JSON, XML, form URL-encoded), and absent when empty. Behind a JWT authorizer,
the token's claims, once validated, are in ``requestContext.authorizer.jwt.claims``, every value a string (an array
``"[a b]"``, a number ``"1700000000"``), as ``jwt_claims`` writes them; the ``Authorization`` header stays in the
headers.

S3 event notifications, ``s3_record`` / ``s3_notification``: what S3 sends to the index queue for a created or
removed object. Keys are URL-encoded with ``+`` for spaces, as S3 does; a removal carries no size or ETag.

Lambda's SQS event source mapping, ``sqs_event``: messages as ``ReceiveMessage`` returns them, turned into the
event Lambda passes (attribute names and casing as Lambda has them, binary attributes base64).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlencode

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # AWS's documentation account (moto's default too)

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
    request_id: str | None = None,
    trace_id: str | None = None,
    now: datetime | None = None,
    authorizer: Mapping[str, Any] | None = None,
    authorizer_scopes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """An HTTP API v2 event.

    ``authorizer``: the claims of the token the API's JWT authorizer validated (as decoded from the token), passed
    on as API Gateway does after validation; ``authorizer_scopes``: the ``jwt.scopes`` it adds when the route lists
    authorization scopes (otherwise null).

    ``route_key`` is the matched API Gateway route, e.g. ``"GET /images/{id}"``
    (pass ``path_parameters`` with it); the default ``$default`` is the
    catch-all route. The search handler routes on the path and method, so it
    answers the same either way. ``request_id``, ``trace_id`` and ``now`` fix
    what is otherwise new for each event (the sample events fix them).
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
    lowered.setdefault("x-amzn-trace-id", trace_id or f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}")
    now = now or datetime.now(UTC)
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
            "requestId": request_id or base64.b32encode(uuid.uuid4().bytes).decode()[:16],
            "routeKey": route_key or "$default",
            "stage": stage,
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if authorizer is not None:
        event["requestContext"]["authorizer"] = {"jwt": {
            "claims": jwt_claims(authorizer),
            "scopes": list(authorizer_scopes) if authorizer_scopes is not None else None}}
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


def _claim_text(value: Any) -> str:
    """One claim value as API Gateway writes it: strings as they are, arrays ``[a b]``, numbers and booleans in
    JSON's spelling, objects as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + " ".join(_claim_text(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def jwt_claims(claims: Mapping[str, Any]) -> dict[str, str]:
    """A validated token's claims as the HTTP API passes them to the function (payload 2.0): every value a string."""
    return {name: _claim_text(value) for name, value in claims.items()}


# -- S3 event notifications ----------------------------------------------------------------------------------------


def s3_record(
    bucket: str,
    key: str,
    *,
    event_name: str = "ObjectCreated:Put",
    size: int | None = None,
    etag: str | None = None,
    sequencer: str | None = None,
    only_if_changed: bool = False,
    region: str = REGION,
    event_time: str | None = None,
    configuration_id: str = "imgsim-index",
    principal_id: str = "AWS:AIDAEXAMPLE",
    source_ip: str = "203.0.113.10",
    request_id: str = "C3D13FE58DE4C810",
    host_id: str = "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
    owner_id: str = "A3NL1KOZZKExample",
) -> dict[str, Any]:
    """One S3 notification record for ``key`` (URL-encoded here). ``event_name`` ``ObjectCreated:*`` records
    carry ``size`` and ``etag`` (quotes dropped, as S3 sends it); ``ObjectRemoved:*`` ones never do.

    ``sequencer`` is S3's per-key order of events; records not made by S3 (a backfill, the local stack's
    catch-up) have none. ``only_if_changed`` adds imgsim's own ``imgsimBackfill`` flag: the indexer skips the
    object when its point already has this ETag and the current model (imgsim.pipeline)."""
    obj: dict[str, Any] = {"key": quote_plus(key)}
    if event_name.startswith("ObjectCreated:"):
        obj.update((name, value) for name, value in (("size", size), ("eTag", etag.strip('"') if etag else None))
                   if value is not None)
    if sequencer is not None:
        obj["sequencer"] = sequencer
    record: dict[str, Any] = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": event_time or datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "eventName": event_name,
        "userIdentity": {"principalId": principal_id},
        "requestParameters": {"sourceIPAddress": source_ip},
        "responseElements": {"x-amz-request-id": request_id, "x-amz-id-2": host_id},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": configuration_id,
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": owner_id}, "arn": f"arn:aws:s3:::{bucket}"},
            "object": obj,
        },
    }
    if only_if_changed:
        record["imgsimBackfill"] = True
    return record


def s3_notification(*records: dict[str, Any]) -> dict[str, Any]:
    """The message body S3 sends to the queue: its records (one per event, in practice)."""
    return {"Records": list(records)}


# -- Lambda's SQS event source mapping -------------------------------------------------------------------------------

# The message attributes (ReceiveMessage's names) Lambda passes on, in its order.
LAMBDA_ATTRIBUTES = ("ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp",
                     "AWSTraceHeader", "SequenceNumber", "MessageGroupId", "MessageDeduplicationId")


def received_message(
    body: str, *, message_id: str | None = None, receipt_handle: str | None = None, receive_count: int = 0,
    sent_ms: int | None = None, sender_id: str = "AIDAEXAMPLEQUEUE", first_receive_ms: int | None = None,
) -> dict[str, Any]:
    """A message as ``ReceiveMessage`` returns it (``AttributeNames=["All"]``), for a queue that is not SQS:
    the local stack's catch-up, tests."""
    attributes = {"ApproximateReceiveCount": str(receive_count),
                  "SentTimestamp": str(int(time.time() * 1000) if sent_ms is None else sent_ms), "SenderId": sender_id}
    if first_receive_ms is not None:
        attributes["ApproximateFirstReceiveTimestamp"] = str(first_receive_ms)
    return {
        "MessageId": message_id or str(uuid.uuid4()), "ReceiptHandle": receipt_handle or uuid.uuid4().hex,
        "Body": body, "MD5OfBody": hashlib.md5(body.encode()).hexdigest(), "MessageAttributes": {},
        "Attributes": attributes,
    }


def sqs_event(messages: Sequence[Mapping[str, Any]], queue_arn: str, region: str = REGION) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping passes for messages from ``ReceiveMessage``."""
    records = []
    for message in messages:
        attributes = message.get("Attributes", {})
        records.append({
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": {name: attributes[name] for name in LAMBDA_ATTRIBUTES if name in attributes},
            "messageAttributes": {
                name: _lambda_message_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        })
    return {"Records": records}


def queue_arn(name: str, region: str = REGION, account_id: str = ACCOUNT_ID) -> str:
    return f"arn:aws:sqs:{region}:{account_id}:{name}"


def _lambda_message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    binary = value.get("BinaryValue")
    converted: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [base64.b64encode(v).decode() for v in value.get("BinaryListValues", [])],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        converted["stringValue"] = value["StringValue"]
    if binary is not None:
        converted["binaryValue"] = base64.b64encode(binary).decode()
    return converted
