"""The API client (imgsim_tools.api_client) against a stub (httpx.MockTransport): retries after Retry-After, every
kind of error answer as one ApiError, the key sent to the API and never to S3, streamed uploads, paging, URLs.
The same client against the real API: tests/test_api_cli.py."""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from imgsim_tools import api_client
from imgsim_tools.api_client import ApiClient, ApiError
from imgsim_tools.local.post_policy import read_upload
from werkzeug.http import parse_options_header

API = "https://abc123.execute-api.eu-west-1.amazonaws.com/"
KEY = "secret-key"
UPLOAD_URL = "https://imgsim-images.s3.amazonaws.com/"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A stub API: answers in turn (the last one repeated), every request and every pause recorded."""

    def __init__(self, *answers: httpx.Response | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []
        self.sleeps: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(request.read())
        answer = self.answers[min(len(self.requests) - 1, len(self.answers) - 1)]
        return answer(request) if callable(answer) else answer

    def client(self, base_url: str = API, **options: Any) -> ApiClient:
        return ApiClient(base_url, KEY, transport=httpx.MockTransport(self), sleep=self.sleeps.append, **options)


def envelope(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}}, headers=headers)


def ok(body: Any) -> httpx.Response:
    return httpx.Response(200, json=body)


PAGE = {"results": [], "took_ms": 1.0, "model": "m", "offset": 0, "next_offset": None}


# -- retries ------------------------------------------------------------------------------------------------------


def test_429_and_503_are_retried_after_their_retry_after():
    stub = Recorder(httpx.Response(429, json={"message": "Too Many Requests"}, headers={"Retry-After": "2"}),
                    envelope(503, "store_unavailable", "Qdrant is busy", {"Retry-After": "5"}), ok(PAGE))
    page = stub.client().search(b"jpeg bytes", limit=5)
    assert page == PAGE
    assert stub.sleeps == [2.0, 5.0]
    assert len(stub.requests) == 3 and stub.bodies == [b"jpeg bytes"] * 3  # the body sent again, whole


def test_retry_after_as_an_http_date():
    when = datetime(2026, 12, 3, 8, 0, 0, tzinfo=UTC)
    response = httpx.Response(503, headers={"Retry-After": format_datetime(when, usegmt=True)})
    wait = api_client.retry_after(response, now=lambda: when - timedelta(seconds=7))
    assert wait == 7.0
    assert api_client.retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) is None
    assert api_client.retry_after(httpx.Response(503)) is None


def test_without_retry_after_the_waits_back_off():
    """API Gateway's 429 names no wait: 0.5, 1, 2 s, each with up to a quarter more (jitter)."""
    throttled = httpx.Response(429, json={"message": "Too Many Requests"})
    stub = Recorder(throttled, throttled, throttled, ok(PAGE))
    assert stub.client(retries=3).search(b"x") == PAGE
    assert len(stub.sleeps) == 3
    for wait, base in zip(stub.sleeps, (0.5, 1.0, 2.0), strict=True):
        assert base <= wait <= base * 1.25


def test_retries_run_out_into_the_last_answer():
    stub = Recorder(envelope(503, "store_unavailable", "Qdrant is busy", {"Retry-After": "1"}))
    with pytest.raises(ApiError) as caught:
        stub.client(retries=2).get_image("9d76bfe7-11b1-532f-bb20-09a3ae6cd3f8")
    assert (caught.value.status, caught.value.code, caught.value.message) == (503, "store_unavailable", "Qdrant is busy")
    assert caught.value.retry_after == 1.0
    assert len(stub.requests) == 3 and stub.sleeps == [1.0, 1.0]


def test_a_retry_after_longer_than_the_most_the_client_waits_is_raised_at_once():
    stub = Recorder(envelope(503, "unavailable", "down for maintenance", {"Retry-After": "3600"}))
    with pytest.raises(ApiError) as caught:
        stub.client(max_retry_wait=30).trash()
    assert caught.value.retry_after == 3600.0 and len(stub.requests) == 1 and stub.sleeps == []


@pytest.mark.parametrize("status", [400, 401, 404, 409, 413, 500, 502, 504])
def test_other_failures_are_not_retried(status):
    stub = Recorder(envelope(status, "some_code", "no", {"Retry-After": "1"}))
    with pytest.raises(ApiError) as caught:
        stub.client().delete_image("9d76bfe7-11b1-532f-bb20-09a3ae6cd3f8")
    assert caught.value.status == status and len(stub.requests) == 1 and stub.sleeps == []


# -- errors ------------------------------------------------------------------------------------------------------


def test_the_api_error_envelope():
    stub = Recorder(envelope(401, "invalid_api_key", "the x-api-key header does not match"))
    with pytest.raises(ApiError) as caught:
        stub.client().compare(b"a", b"b")
    error = caught.value
    assert (error.status, error.code, error.message) == (401, "invalid_api_key", "the x-api-key header does not match")
    assert (error.method, error.url) == ("POST", API + "compare")
    assert str(error) == "the x-api-key header does not match (HTTP 401 invalid_api_key)"


@pytest.mark.parametrize(("response", "code", "message"), [
    # API Gateway's own answers: throttling, a route it does not have, its integration failing.
    (httpx.Response(429, json={"message": "Too Many Requests"}), "too_many_requests", "Too Many Requests"),
    (httpx.Response(404, json={"message": "Not Found"}), "not_found", "Not Found"),
    (httpx.Response(500, json={"message": "Internal Server Error"}), "internal_server_error", "Internal Server Error"),
    # S3's, to a presigned PUT.
    (httpx.Response(403, text="<?xml version='1.0'?><Error><Code>SignatureDoesNotMatch</Code><Message>The request "
                    "signature we calculated does not match</Message></Error>", headers={"content-type": "application/xml"}),
     "SignatureDoesNotMatch", "The request signature we calculated does not match"),
    # Anything else: a proxy's page, an empty body.
    (httpx.Response(502, text="Bad gateway\nnginx"), "bad_gateway", "Bad gateway"),
    (httpx.Response(504), "gateway_timeout", "Gateway Timeout"),
    (httpx.Response(499, text=""), "http_499", "HTTP 499"),
])
def test_error_answers_of_every_service_are_one_api_error(response, code, message):
    stub = Recorder(response)
    with pytest.raises(ApiError) as caught:
        stub.client(retries=0).duplicates()
    assert (caught.value.status, caught.value.code, caught.value.message) == (response.status_code, code, message)


def test_a_success_that_is_not_json_is_an_error():
    """The URL of something else than the API (the page, a proxy's login): said plainly."""
    stub = Recorder(httpx.Response(200, text="<html>hello</html>", headers={"content-type": "text/html"}))
    with pytest.raises(ApiError) as caught:
        stub.client().trash()
    assert caught.value.code == "bad_response" and "not JSON" in caught.value.message


def test_no_answer_is_an_api_error_without_a_status():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(ApiError) as caught:
        Recorder(refuse).client().trash()
    assert (caught.value.status, caught.value.code) == (None, "unreachable")
    assert str(caught.value) == f"cannot reach {API.rstrip('/')}: [Errno 111] Connection refused (unreachable)"
    stub = Recorder(slow)
    with pytest.raises(ApiError) as caught:
        stub.client().delete_image("9d76bfe7-11b1-532f-bb20-09a3ae6cd3f8")
    assert (caught.value.status, caught.value.code) == (None, "timeout")
    assert len(stub.requests) == 1  # a DELETE that timed out may have happened: not sent again


# -- requests --------------------------------------------------------------------------------------------------------


def presigned(**changes):
    upload = {"url": UPLOAD_URL, "method": "POST", "fields": {
        "Content-Type": "image/jpeg", "key": "uploads/abc-cat.jpg", "x-amz-algorithm": "AWS4-HMAC-SHA256",
        "x-amz-credential": "AKID/20261203/eu-west-1/s3/aws4_request", "x-amz-date": "20261203T000000Z",
        "policy": "eyJjb25kaXRpb25zIjogW119", "x-amz-signature": "f00d"}, "max_bytes": 1_000_000,
        "bucket": "imgsim-images", "key": "uploads/abc-cat.jpg", "id": "9d76bfe7-11b1-532f-bb20-09a3ae6cd3f8",
        "expires_in": 900}
    return {**upload, **changes}


def form_of(request: httpx.Request, body: bytes):
    """The multipart form as S3 reads it: the fields before the file, and the file's size (the local stack's
    reader, imgsim_tools.local.post_policy)."""
    _, options = parse_options_header(request.headers["content-type"])
    return read_upload(options["boundary"].encode(), [body])


def test_the_key_goes_to_the_api_only(tmp_path):
    upload = presigned()
    stub = Recorder(lambda r: ok(upload) if r.url.host.startswith("abc123") else httpx.Response(204))
    client = stub.client()
    client.health()
    assert client.create_upload("cat.jpg", "image/jpeg") == upload
    assert json.loads(stub.bodies[1]) == {"filename": "cat.jpg", "content_type": "image/jpeg"}
    photo = tmp_path / "cat.jpg"
    photo.write_bytes(b"jpeg")
    client.post_upload(upload, photo)
    health, create, post = stub.requests
    assert "x-api-key" not in health.headers  # /health needs none
    assert create.headers["x-api-key"] == KEY
    assert "x-api-key" not in post.headers and str(post.url) == UPLOAD_URL
    assert KEY.encode() not in stub.bodies[2]


def test_an_upload_is_a_multipart_post_streamed_with_its_length_and_progress(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(bytes(range(256)) * 600)  # 153,600 bytes: read in three 64 KiB chunks
    upload = presigned()
    stub = Recorder(httpx.Response(503, text="<Error><Code>SlowDown</Code><Message>Reduce your request rate"
                                   "</Message></Error>"), httpx.Response(204))
    progress: list[int] = []
    stub.client(retries=1).post_upload(upload, path, on_progress=progress.append)  # type: ignore[arg-type]
    for request, body in zip(stub.requests, stub.bodies, strict=True):
        assert request.method == "POST" and request.headers["content-type"].startswith("multipart/form-data")
        assert request.headers["content-length"] == str(len(body)) and "transfer-encoding" not in request.headers
        # Every field as given, in order, before the file (S3 ignores fields after it); the file whole.
        form = form_of(request, body)
        assert form.fields == {name.lower(): value for name, value in upload["fields"].items()}
        assert form.file_size == 153_600 and path.read_bytes() in body
        assert body.index(b'name="x-amz-signature"') < body.index(b'name="file"; filename="big.jpg"')
        assert b"Content-Type: image/jpeg\r\n\r\n" + path.read_bytes()[:100] in body
    # The retried attempt takes back what the first had counted: the sum is the file's size, once.
    assert progress == [65536, 65536, 22528, -153600, 65536, 65536, 22528] and sum(progress) == 153_600


def test_a_file_over_the_limit_is_refused_before_anything_is_sent(tmp_path):
    path = tmp_path / "huge.jpg"
    with path.open("wb") as file:
        file.truncate(int(31.2 * 2**20))
    stub = Recorder(httpx.Response(204))
    with pytest.raises(ApiError) as refused:
        stub.client().post_upload(presigned(max_bytes=25 * 2**20), path)
    assert stub.requests == []
    assert (refused.value.status, refused.value.code) == (None, "upload_too_large")
    assert refused.value.message == "31.2 MB is over this API's upload limit of 25 MB (IMGSIM_MAX_UPLOAD_MB)"
    just_over = tmp_path / "just-over.jpg"
    just_over.write_bytes(b"x" * 1001)
    with pytest.raises(ApiError, match=r"^1,001 bytes is over this API's upload limit of 0 MB \(1,000 bytes\)"):
        stub.client().post_upload(presigned(max_bytes=1000), just_over)
    exactly = tmp_path / "exactly.jpg"
    exactly.write_bytes(b"x" * 1000)
    stub.client().post_upload(presigned(max_bytes=1000), exactly)
    assert len(stub.requests) == 1


def test_s3_refusing_the_size_is_one_line_naming_the_limit(tmp_path):
    path = tmp_path / "cat.jpg"
    path.write_bytes(b"jpeg")
    stub = Recorder(httpx.Response(400, text="<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>EntityTooLarge"
                                   "</Code><Message>Your proposed upload exceeds the maximum allowed size</Message>"
                                   "<ProposedSize>32715571</ProposedSize><MaxSizeAllowed>26214400</MaxSizeAllowed>"
                                   "<RequestId>R</RequestId></Error>"))
    with pytest.raises(ApiError) as refused:
        stub.client().post_upload(presigned(), path)
    assert str(refused.value) == ("S3 refused the file: 31.2 MB is over this API's upload limit of 25 MB "
                                  "(IMGSIM_MAX_UPLOAD_MB) (HTTP 400 EntityTooLarge)")
    assert len(stub.requests) == 1  # a 400 is not retried
    denied = Recorder(httpx.Response(403, text="<Error><Code>AccessDenied</Code><Message>Invalid according to "
                                     "Policy: Policy expired.</Message></Error>"))
    with pytest.raises(ApiError, match=r"^Invalid according to Policy: Policy expired\. \(HTTP 403 AccessDenied\)$"):
        denied.client().post_upload(presigned(), path)


def test_upload_file_names_the_type_from_the_extension(tmp_path):
    upload = presigned(fields={"Content-Type": "image/heic", "key": "k"}, id="i", key="k", bucket="b")
    stub = Recorder(lambda r: ok(upload) if r.url.host.startswith("abc123") else httpx.Response(204))
    photo = tmp_path / "IMG_0001.HEIC"
    photo.write_bytes(b"heic")
    assert stub.client().upload_file(photo)["id"] == "i"
    assert json.loads(stub.bodies[0]) == {"filename": "IMG_0001.HEIC", "content_type": "image/heic"}
    assert b'filename="IMG_0001.HEIC"\r\nContent-Type: image/heic' in stub.bodies[1]
    notes = tmp_path / "notes.txt"
    notes.write_text("hi")
    with pytest.raises(ValueError, match="not an image type"):
        stub.client().upload_file(notes)


def test_search_forms_and_parameters():
    stub = Recorder(ok(PAGE))
    client = stub.client()
    client.search(b"\xff\xd8", limit=5, offset=10, min_score=0.5, prefix="cats/", collapse=True, box="0,0,10,10")
    client.search(id="9d76bfe7-11b1-532f-bb20-09a3ae6cd3f8")
    client.search(key="cats/a b.jpg")
    raw, by_id, by_key = stub.requests
    assert by_id.headers["content-type"] == "application/json" and dict(by_id.url.params) == {"limit": "10",
                                                                                             "offset": "0"}
    assert raw.headers["content-type"] == "application/octet-stream" and stub.bodies[0] == b"\xff\xd8"
    assert dict(raw.url.params) == {"limit": "5", "offset": "10", "min_score": "0.5", "prefix": "cats/",
                                    "collapse": "true", "box": "0,0,10,10"}
    assert json.loads(stub.bodies[1]) == {"id": "9d76bfe7-11b1-532f-bb20-09a3ae6cd3f8"}
    assert json.loads(stub.bodies[2]) == {"key": "cats/a b.jpg"} and by_key.headers["x-api-key"] == KEY
    with pytest.raises(ValueError, match="exactly one"):
        client.search(b"x", id="y")


def test_compare_sends_both_images_as_form_fields():
    stub = Recorder(ok({"score": 0.9, "percent": 90.0, "model": "m", "took_ms": 1.0}))
    assert stub.client().compare(b"AAA", b"BBB")["percent"] == 90.0
    request = stub.requests[0]
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    body = stub.bodies[0]
    assert b'name="a"' in body and b"AAA" in body and b'name="b"' in body and b"BBB" in body


def test_a_base_url_with_a_stage_and_ids_as_one_segment():
    stub = Recorder(ok({"id": "x", "url": None}))
    client = stub.client("https://api.example.com/prod")
    client.get_image("9d76bfe7-11b1-532f-bb20-09a3ae6cd3f8")
    client.get_image("photos/cat.jpg")  # not an id: reaches the route (and its 400), not another path
    assert [r.url.raw_path for r in stub.requests] == [
        b"/prod/images/9d76bfe7-11b1-532f-bb20-09a3ae6cd3f8", b"/prod/images/photos%2Fcat.jpg"]


@pytest.mark.parametrize("url", ["foo", "ftp://host/", "http://", "/images"])
def test_a_url_that_is_no_api_url_is_refused(url):
    with pytest.raises(ValueError, match="http"):
        ApiClient(url, KEY)


# -- paging and waiting ---------------------------------------------------------------------------------------------


def test_pages_follow_next_cursor():
    pages = {None: {"threshold": 0.74, "groups": [{"keep": "a", "members": []}], "next_cursor": "a"},
             "a": {"threshold": 0.74, "groups": [{"keep": "b", "members": []}], "next_cursor": None}}
    stub = Recorder(lambda r: ok(pages[r.url.params.get("cursor")]))
    read = list(stub.client().all_duplicates(threshold=0.8, page_size=1))
    assert [g["keep"] for page in read for g in page["groups"]] == ["a", "b"]
    assert [dict(r.url.params) for r in stub.requests] == [{"threshold": "0.8", "limit": "1"},
                                                          {"threshold": "0.8", "limit": "1", "cursor": "a"}]
    trash = {None: {"items": [{"id": "t1"}], "next_cursor": "1", "trash_days": 30},
             "1": {"items": [{"id": "t2"}], "next_cursor": None, "trash_days": 30}}
    stub = Recorder(lambda r: ok(trash[r.url.params.get("cursor")]))
    assert [i["id"] for page in stub.client().all_trash(page_size=1) for i in page["items"]] == ["t1", "t2"]


def test_wait_indexed_asks_in_order_and_pauses_at_the_first_missing_image():
    indexed_after = {"a": 1, "b": 1, "c": 3}  # how many times each is asked for before it is there
    asked: dict[str, int] = {}

    def answer(request: httpx.Request) -> httpx.Response:
        image = request.url.path.rsplit("/", 1)[1]
        asked[image] = asked.get(image, 0) + 1
        if asked[image] > indexed_after[image] - 1:
            return ok({"id": image, "url": None})
        return envelope(404, "not_found", f"no indexed image with id {image}")

    stub = Recorder(answer)
    seen: list[str] = []
    missing = stub.client().wait_indexed(["a", "b", "c"], timeout=60, interval=2, on_indexed=lambda i: seen.append(i["id"]))
    assert missing == [] and seen == ["a", "b", "c"]
    assert [r.url.path[-1] for r in stub.requests] == ["a", "b", "c", "c", "c"] and stub.sleeps == [2, 2]


def test_wait_indexed_gives_up_at_its_timeout_with_the_missing_ids():
    stub = Recorder(envelope(404, "not_found", "no indexed image"))
    assert stub.client().wait_indexed(["a", "b"], timeout=0) == ["a", "b"]
    stub = Recorder(envelope(401, "invalid_api_key", "no"))  # anything but "not indexed yet" is raised
    with pytest.raises(ApiError):
        stub.client().wait_indexed(["a"], timeout=0)


# -- the module ----------------------------------------------------------------------------------------------------


def test_the_client_imports_only_the_standard_library_and_httpx():
    """Importable on its own: nothing of imgsim (the layer) nor of the CLI, at any level of the module."""
    tree = ast.parse(Path(api_client.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {str(node.module).split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0}
    relative = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level > 0]
    assert relative == []
    assert imported - set(sys.stdlib_module_names) == {"httpx"}

