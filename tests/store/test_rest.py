"""imgsim's Qdrant REST client (``imgsim.store.rest``): what goes on the wire, what comes back.

The exchanges themselves are tested against a stub HTTP server (test_server_errors.py) and the Qdrant stand-in
(the contract suite); here a recording ``send`` shows the requests byte for byte.
"""

from __future__ import annotations

import json

import pytest
from imgsim.store.rest import BadResponse, HttpStatusError, QdrantHttp, TransportError


class Recorder:
    def __init__(self, status: int = 200, body: bytes = b'{"result": true, "status": "ok", "time": 0}',
                 headers: dict[str, str] | None = None) -> None:
        self.answer = (status, headers or {}, body)
        self.sent: list[tuple[str, str, bytes | None, dict[str, str]]] = []

    def __call__(self, method, target, body, headers):
        self.sent.append((method, target, body, dict(headers)))
        return self.answer


def test_a_request_is_json_with_the_key_header_and_encoded_params():
    send = Recorder()
    client = QdrantHttp("https://xyz.cloud.qdrant.io:6333/", api_key="s3cret", send=send)
    assert client.request("PUT", "/collections/images/points", {"points": [{"id": "a", "vector": [0.5]}]},
                          wait=True, ordering="medium", offset=None) is True
    ((method, target, body, headers),) = send.sent
    assert (method, target) == ("PUT", "/collections/images/points?wait=true&ordering=medium")
    assert json.loads(body) == {"points": [{"id": "a", "vector": [0.5]}]}
    assert headers["api-key"] == "s3cret" and headers["content-type"] == "application/json"
    assert "s3cret" not in repr(client)


def test_no_key_no_header_and_a_get_has_no_body():
    send = Recorder()
    QdrantHttp("http://localhost:6333", send=send).request("GET", "/aliases")
    ((_, target, body, headers),) = send.sent
    assert target == "/aliases" and body is None and "api-key" not in headers


def test_an_error_status_keeps_the_servers_message_and_retry_after():
    send = Recorder(429, b'{"status": {"error": "Too many requests"}, "time": 0}', {"Retry-After": "7"})
    with pytest.raises(HttpStatusError) as info:
        QdrantHttp("http://q", send=send).request("POST", "/collections/c/points/count", {})
    assert (info.value.status, info.value.message, info.value.retry_after) == (429, "Too many requests", 7.0)


@pytest.mark.parametrize("body", [b"<html>bad gateway</html>", b"", b'{"status": "ok"}', b"[1, 2]"])
def test_a_2xx_that_is_not_the_envelope_is_a_bad_response(body):
    with pytest.raises(BadResponse):
        QdrantHttp("http://q", send=Recorder(200, body)).request("GET", "/collections")


def test_an_error_page_that_is_not_json_is_quoted():
    with pytest.raises(HttpStatusError, match="upstream connect error"):
        QdrantHttp("http://q", send=Recorder(503, b"upstream connect error")).request("GET", "/collections")


def test_unreachable_is_a_transport_error_and_reset_reopens():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = QdrantHttp(f"http://127.0.0.1:{port}", timeout_s=1)
    with pytest.raises(TransportError):
        client.request("GET", "/collections")
    client.reset()  # a SnapStart restore: pooled sockets dropped, the client still usable
    with pytest.raises(TransportError):
        client.request("GET", "/collections")
