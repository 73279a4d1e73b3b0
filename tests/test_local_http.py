"""The local API front end (uvicorn + h11): malformed HTTP never reaches the function, every error
is JSON in the API's shape, no version banner, HEAD as API Gateway answers it.

Raw sockets against ``ApiServer`` with a fake stack that records invocations, so each case shows
exactly what reached the handler."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import pytest
from imgsim_tools.local import http_front as local_stack


class FakeStack:
    search_handler = object()

    def __init__(self) -> None:
        self.events: list[dict] = []

    def invoke(self, function, event, timeout_s):
        self.events.append(event)
        body = event.get("body")
        if body is not None and event.get("isBase64Encoded"):
            body = base64.b64decode(body).decode()
        return {"statusCode": 200, "headers": {"content-type": "application/json"},
                "body": json.dumps({"method": event["requestContext"]["http"]["method"], "body": body})}


@pytest.fixture
def server():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    stack = FakeStack()
    api = local_stack.ApiServer(sock, stack.invoke)
    thread = threading.Thread(target=api.serve_forever, daemon=True)
    thread.start()
    port = sock.getsockname()[1]
    deadline = time.monotonic() + 10
    while not api.server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield port, stack
    api.shutdown()
    thread.join(10)
    api.server_close()


def exchange(port: int, raw: bytes, *, half_close: bool = False, head: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(raw)
        if half_close:
            conn.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                data = conn.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            chunks.append(data)
            if not half_close and b"\r\n\r\n" in b"".join(chunks):
                header_block, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in header_block.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                if head or len(rest) >= length:
                    break
        return b"".join(chunks)


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def assert_json_error(raw: bytes, status: int, code: str) -> dict[str, str]:
    got, headers, body = parse(raw)
    assert got == status, raw[:300]
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == code and error["message"]
    assert "server" not in headers
    return headers


def test_a_good_request_reaches_the_function_with_keep_alive(server):
    port, stack = server
    raw = exchange(port, b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    status, headers, body = parse(raw)
    assert status == 200 and json.loads(body) == {"method": "POST", "body": "hello"}
    assert "server" not in headers and headers["apigw-requestid"]
    assert len(stack.events) == 1


@pytest.mark.parametrize("length", [b"abc", b"-1", b"1e3", b"5, 6"])
def test_invalid_content_length_is_400_closes_and_runs_nothing(server, length):
    port, stack = server
    smuggled = b"DELETE /images/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    raw = exchange(port, b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n" + smuggled)
    headers = assert_json_error(raw, 400, "bad_request")
    assert headers["connection"] == "close"
    assert raw.count(b"HTTP/1.1") == 1  # no second response: the hidden DELETE never ran
    assert stack.events == []


def test_bad_request_line_is_json_400(server):
    port, stack = server
    assert_json_error(exchange(port, b"THIS IS NOT HTTP\r\n\r\n"), 400, "bad_request")
    assert stack.events == []


def test_oversized_headers_are_431(server):
    port, stack = server
    raw = exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
    assert_json_error(raw, 431, "request_header_too_large")
    assert stack.events == []


def test_chunked_bodies_are_411_and_large_ones_413(server):
    port, stack = server
    chunked = b"POST /search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    assert_json_error(exchange(port, chunked), 411, "length_required")
    big = b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\n\r\n"
    assert_json_error(exchange(port, big), 413, "body_too_large")
    assert stack.events == []


def test_a_body_cut_short_is_never_processed(server):
    port, stack = server
    raw = exchange(port, b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part", half_close=True)
    assert_json_error(raw, 400, "bad_request")
    assert stack.events == []


def test_head_has_the_get_headers_and_no_body(server):
    port, stack = server
    raw = exchange(port, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n", head=True)
    status, headers, body = parse(raw)
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    assert stack.events[0]["requestContext"]["http"]["method"] == "HEAD"


def test_any_method_token_reaches_the_function_as_api_gateway_routes_it(server):
    port, _stack = server
    status, _, body = parse(exchange(port, b"BREW /pot HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"))
    assert status == 200 and json.loads(body)["method"] == "BREW"
