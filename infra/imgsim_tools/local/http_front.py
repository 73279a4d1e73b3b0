"""API Gateway HTTP API in front of SearchFunction: uvicorn (h11) turning requests into format-2.0 events.

It talks to the rest of the stack through the function to invoke (``Invoke``) and, for the stack's own
``/_local/reindex`` route, the API key and the reindex it starts (``ReindexRoute``): not the stack itself.

Keys and tokens side by side on one port: on AWS a stack with an OIDC issuer has two APIs, the key API (no
authorizer) and the token API (template ``TokenApi``: a JWT authorizer on every route but the public ones). Here a
request with an ``Authorization: Bearer`` token is handled as the token API would (``tokens``: validated, refused
with 401, or passed on with its claims in the event); any other request as the key API.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..events import http_api_event
from ..reindex_stack import ROUTE as REINDEX_ROUTE
from .common import (
    HTTP_API_BODY_LIMIT,
    LAMBDA_PAYLOAD_LIMIT,
    SEARCH_TIMEOUT_S,
    Invoke,
    StackStopping,
    log,
)
from .tokens import (
    UNAUTHORIZED_BODY,
    TokenRefused,
    TokenVerifier,
    bearer_token,
    unauthorized_headers,
)


class ReindexRoute(Protocol):
    """`imgsim reindex --stack`'s side in the stack (imgsim_tools.reindex_stack.StackReindex)."""

    def status(self) -> dict[str, Any]: ...

    def start(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]: ...


# -- API Gateway HTTP API emulation ---------------------------------------------------------------------------------

# The token API's routes without its authorizer (template TokenApi; tests/test_template.py checks they agree).
PUBLIC_ROUTES = frozenset({("GET", "/"), ("GET", "/health"), ("GET", "/openapi.json")})


def request_event(method: str, target: str, headers: Any, body: bytes, source_ip: str, port: int,
                  authorizer: dict[str, Any] | None = None) -> dict:
    """The HTTP API event for one request (imgsim_tools.events knows the shape; the tests use it too);
    ``authorizer``: the claims of the token the JWT authorizer validated."""
    split = urlsplit(target)
    joined: dict[str, str] = {}
    for name, value in headers:  # repeated headers: one comma-joined value, as API Gateway does
        lname = name.lower()
        joined[lname] = f"{joined[lname]},{value}" if lname in joined else value
    joined.setdefault("x-forwarded-proto", "http")
    joined.setdefault("x-forwarded-port", str(port))
    return http_api_event(method, split.path or "/", query=split.query, headers=joined, body=body,
                          source_ip=source_ip, api_id="local", authorizer=authorizer)


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def http_response(result: Any) -> HttpResponse:
    """API Gateway's reading of a format-2.0 Lambda response (including its inference when statusCode is absent)."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # No statusCode: API Gateway treats the whole return value as a JSON body with status 200.
        body = result if isinstance(result, str) else json.dumps(result)
        return HttpResponse(200, [("content-type", "application/json")], body.encode())
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()
               if str(k).lower() not in ("content-length", "transfer-encoding", "connection")]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(v)) for v in values)
    headers.extend(("set-cookie", str(c)) for c in result.get("cookies") or [])
    raw = result.get("body")
    if raw is None:
        body = b""
    elif result.get("isBase64Encoded"):
        body = base64.b64decode(raw)
    else:
        body = str(raw).encode()
    return HttpResponse(int(result["statusCode"]), headers, body)


def _json_error(status: int, code: str, message: str) -> HttpResponse:
    """Errors of the front end itself, in the API's documented shape."""
    return HttpResponse(status, [("content-type", "application/json")],
                        json.dumps({"error": {"code": code, "message": message}}).encode())


# Header block limit: API Gateway HTTP APIs take 10,240 bytes of request line and headers.
MAX_HEADER_BYTES = 10 * 1024


class JsonErrorsH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11), answering malformed requests in the API's JSON error shape.

    uvicorn writes its own plain-text 400 for every request h11 rejects (a bad request line, an
    invalid or negative Content-Length, a body cut short, headers over the limit). h11's error
    carries the right status (431 for oversized headers); this keeps it and sends JSON instead.
    """

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._protocol_error: h11.RemoteProtocolError | None = None
        next_event = self.conn.next_event

        def recording_next_event() -> Any:
            try:
                return next_event()
            except h11.RemoteProtocolError as exc:
                self._protocol_error = exc
                raise

        self.conn.next_event = recording_next_event  # type: ignore[method-assign]

    def eof_received(self) -> bool | None:
        """The client half-closed. A body still short of its Content-Length can never complete:
        answer 400 and never run it (http.server ran it truncated). A complete request in flight
        keeps the connection open for its response; an idle one closes."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return None
        if cycle.more_body:
            self._protocol_error = h11.RemoteProtocolError("the body ended before its Content-Length", 400)
            cycle.disconnected = True
            cycle.message_event.set()
            self.send_400_response("")
            return None
        return True

    def send_400_response(self, msg: str) -> None:
        error = self._protocol_error
        status = getattr(error, "error_status_hint", 400) or 400
        code = "request_header_too_large" if status == 431 else "bad_request"
        detail = f"malformed HTTP request: {error}" if error else msg
        body = json.dumps({"error": {"code": code, "message": detail}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        try:
            # One write: the response, its body and the end together, then close.
            self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers))
                                 + (self.conn.send(h11.Data(data=body)) or b"")
                                 + (self.conn.send(h11.EndOfMessage()) or b""))
        except h11.LocalProtocolError:  # a response had already begun: nothing more to say
            pass
        log.info("rejected a malformed request (%d): %s", status, detail)
        self.transport.close()


class ApiApp:
    """ASGI app: each HTTP request -> an API Gateway HTTP API event -> SearchFunction's handler.

    ``api_key`` guards the ``reindex`` route (without one, that path goes to the function like any other);
    ``tokens`` validates bearer tokens as the token API's JWT authorizer does (None: a bearer header is passed on,
    as the key API does, and the function ignores it)."""

    def __init__(self, invoke: Invoke, port: int, *, api_key: str = "", reindex: ReindexRoute | None = None,
                 tokens: TokenVerifier | None = None) -> None:
        self.invoke = invoke
        self.port = port
        self.api_key = api_key
        self.reindex = reindex
        self.tokens = tokens

    def authorize(self, method: str, path: str, headers: dict[str, str]) -> tuple[dict[str, Any] | None,
                                                                                 HttpResponse | None]:
        """(the token's claims, None), (None, API Gateway's 401), or (None, None) for a request the key API takes."""
        token = bearer_token(headers.get("authorization")) if self.tokens is not None else None
        if token is None or self.tokens is None or (method, path) in PUBLIC_ROUTES:
            return None, None
        try:
            return self.tokens.claims(token), None
        except TokenRefused as exc:
            log.info("refused a bearer token on %s %s: %s", method, path, exc)
            return None, HttpResponse(401, unauthorized_headers(str(exc)), UNAUTHORIZED_BODY)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        began = time.perf_counter()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        lowered = {k.lower(): v for k, v in headers}
        response: HttpResponse | None = None
        header_bytes = len(scope["method"]) + len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        header_bytes += sum(len(k) + len(v) + 4 for k, v in scope["headers"])
        if header_bytes > MAX_HEADER_BYTES:
            # h11 bounds only a header block still arriving; one read can bring a larger complete one.
            response = _json_error(431, "request_header_too_large", f"request line and headers over {MAX_HEADER_BYTES} bytes")
        elif "chunked" in lowered.get("transfer-encoding", "").lower():
            response = _json_error(411, "length_required", "send a Content-Length (API Gateway takes no chunked bodies)")
        elif int(lowered.get("content-length") or 0) > HTTP_API_BODY_LIMIT:
            response = _json_error(413, "body_too_large", f"request body over {HTTP_API_BODY_LIMIT} bytes")
        request_id = "-"
        if response is None:
            body = b""
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client went away, or the body was cut short (answered by the protocol)
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            target = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            client = scope.get("client") or ("127.0.0.1", 0)
            claims, refused = self.authorize(scope["method"], scope["path"], lowered)
            event = request_event(scope["method"], target, headers, body, client[0], self.port, claims)
            request_id = event["requestContext"]["requestId"]
            if scope["path"] == REINDEX_ROUTE and self.reindex is not None:
                response = await asyncio.to_thread(self._reindex, scope["method"], lowered, body)
            elif refused is not None:
                response = refused
            elif len(json.dumps(event)) > LAMBDA_PAYLOAD_LIMIT:
                response = _json_error(413, "body_too_large", "request over Lambda's 6 MB payload limit")
            else:
                response = await asyncio.to_thread(self._invoke, event, scope["method"], scope["path"])
        out_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        out_headers += [(b"apigw-requestid", request_id.encode()), (b"content-length", str(len(response.body)).encode())]
        await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
        # HEAD: the headers a GET would have, no body (API Gateway does the same).
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else response.body})
        log.info("%s %s -> %d (%.0f ms)", scope["method"], scope["path"], response.status,
                 (time.perf_counter() - began) * 1000)

    def _reindex(self, method: str, headers: dict[str, str], body: bytes) -> HttpResponse:
        """The local stack's own route for `imgsim reindex --stack` (imgsim_tools.reindex_stack)."""
        import hmac

        assert self.reindex is not None
        if not self.api_key or not hmac.compare_digest(headers.get("x-api-key", ""), self.api_key):
            return _json_error(401, "unauthorized", "missing or wrong x-api-key")
        if method == "GET":
            status, document = 200, self.reindex.status()
        elif method == "POST":
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                return _json_error(400, "invalid_json", "the body is not JSON")
            status, document = self.reindex.start(request if isinstance(request, dict) else {})
        else:
            return _json_error(405, "method_not_allowed", "GET or POST")
        return HttpResponse(status, [("content-type", "application/json")], json.dumps(document).encode())

    def _invoke(self, event: dict, method: str, path: str) -> HttpResponse:
        try:
            result = self.invoke("SearchFunction", event, SEARCH_TIMEOUT_S)
            return http_response(result)
        except StackStopping:
            return _json_error(503, "stopping", "imgsim serve is stopping")
        except Exception:  # noqa: BLE001 - as API Gateway: a failed invocation is a bare 500
            log.error("SearchFunction failed on %s %s\n%s", method, path, traceback.format_exc())
            return _json_error(500, "internal_error", "Internal Server Error")


class ApiServer:
    """uvicorn serving ``ApiApp`` on an already-bound socket, on its own thread (no signal handlers:
    the stack handles Ctrl-C). No ``Server`` banner; keep-alive for the page's many small requests."""

    def __init__(self, sock: socket.socket, invoke: Invoke, *, api_key: str = "",
                 reindex: ReindexRoute | None = None, tokens: TokenVerifier | None = None) -> None:
        import uvicorn

        self.sock = sock
        app = ApiApp(invoke, sock.getsockname()[1], api_key=api_key, reindex=reindex, tokens=tokens)
        config = uvicorn.Config(
            app, http=JsonErrorsH11Protocol, lifespan="off", access_log=False,
            log_config=None, server_header=False, timeout_keep_alive=60,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        )
        self.server = uvicorn.Server(config)

    def serve_forever(self) -> None:
        self.server.run(sockets=[self.sock])

    def shutdown(self) -> None:
        self.server.should_exit = True

    def server_close(self) -> None:
        self.sock.close()


