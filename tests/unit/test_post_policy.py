"""imgsim_tools.local.post_policy: the local stack's S3 refuses a POST upload as S3 does (moto checks no policy).
The policies are the ones the API hands out (``S3Objects.presign_post`` on a boto3 client: signing is local)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

import boto3
import pytest
from imgsim.composition import _client_config
from imgsim.objects import S3Objects
from imgsim_tools.local.post_policy import PostPolicy
from urllib3 import encode_multipart_formdata
from werkzeug.test import Client

BUCKET = "imgsim-images"
KEY = "uploads/0123456789abcdef0123456789abcdef-dog.jpg"
MAX = 1000


class Moto:
    """The wrapped app: records what reached it (the body as it will read it)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        self.seen.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], body))
        start_response("204 No Content", [])
        return [b""]


@pytest.fixture
def presigned():
    client = boto3.client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:4566",
                          config=_client_config("s3"), aws_access_key_id="imgsim-local",
                          aws_secret_access_key="imgsim-local")
    return S3Objects(lambda: client).presign_post(BUCKET, KEY, content_type="image/jpeg", max_bytes=MAX,
                                                  expires_in=900)


@pytest.fixture
def moto():
    return Moto()


def client(moto, **options):
    return Client(PostPolicy(moto, **options))


def post(http, parts, *, path=f"/{BUCKET}", headers=None):
    body, content_type = encode_multipart_formdata(parts)
    return http.post(path, data=body, headers={"Content-Type": content_type, **(headers or {})})


def form(fields, data=b"x" * MAX, **changes):
    """The browser's form: the fields in their order (changed as asked), then the file."""
    values = {**fields, **changes}
    return [*[(name, value) for name, value in values.items() if value is not None],
            ("file", ("dog.jpg", data, "image/jpeg"))]


def error(response):
    root = ElementTree.fromstring(response.get_data())
    return response.status_code, root.findtext("Code"), root.findtext("Message"), root


def test_a_right_sized_upload_reaches_moto_unchanged(moto, presigned):
    _, fields = presigned
    parts = form(fields)
    response = post(client(moto), parts)
    assert response.status_code == 204
    ((method, path, body),) = moto.seen
    assert (method, path) == ("POST", f"/{BUCKET}") and b"x" * MAX in body and fields["policy"].encode() in body
    assert post(client(moto), form(fields, data=b"y")).status_code == 204  # the lower bound: 1 byte


def test_an_oversized_file_is_entity_too_large_and_never_reaches_moto(moto, presigned):
    _, fields = presigned
    status, code, message, root = error(post(client(moto), form(fields, data=b"x" * (MAX + 1))))
    assert (status, code, message) == (400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
    assert root.findtext("ProposedSize") == str(MAX + 1) and root.findtext("MaxSizeAllowed") == str(MAX)
    assert moto.seen == []


def test_an_empty_file_is_entity_too_small(moto, presigned):
    _, fields = presigned
    assert error(post(client(moto), form(fields, data=b"")))[:2] == (400, "EntityTooSmall")
    assert moto.seen == []


@pytest.mark.parametrize("field,value", [("key", "uploads/other.jpg"), ("Content-Type", "image/png"),
                                         ("key", KEY + "x")])
def test_another_key_or_type_is_access_denied_naming_the_condition(moto, presigned, field, value):
    _, fields = presigned
    status, code, message, _ = error(post(client(moto), form(fields, **{field: value})))
    assert (status, code) == (403, "AccessDenied")
    assert message == ("Invalid according to Policy: Policy Condition failed: "
                       + json.dumps(["eq", f"${field}", fields[field]]))
    assert moto.seen == []


def test_an_expired_policy_is_access_denied(moto, presigned):
    _, fields = presigned
    later = client(moto, now=lambda: datetime.now(UTC) + timedelta(seconds=901))
    assert error(post(later, form(fields)))[:3] == (403, "AccessDenied",
                                                    "Invalid according to Policy: Policy expired.")
    assert post(client(moto, now=lambda: datetime.now(UTC) + timedelta(seconds=890)), form(fields)).status_code == 204


def test_a_rewritten_policy_still_needs_its_fields_to_match(moto, presigned):
    """A client raising the limit in the policy itself: the signature would fail on S3 (not verified here), and a
    policy without the key's condition leaves the key field unnamed (extra input)."""
    _, fields = presigned
    policy = json.loads(base64.b64decode(fields["policy"]))
    policy["conditions"] = [c for c in policy["conditions"] if c != {"key": KEY}]
    rewritten = base64.b64encode(json.dumps(policy).encode()).decode()
    status, code, message, _ = error(post(client(moto), form(fields, policy=rewritten)))
    assert (status, code, message) == (403, "AccessDenied", "Invalid according to Policy: Extra input fields: key")


@pytest.mark.parametrize("missing", ["key", "policy", "x-amz-signature", "x-amz-credential"])
def test_a_missing_field_is_invalid_argument(moto, presigned, missing):
    _, fields = presigned
    status, code, message, root = error(post(client(moto), form(fields, **{missing: None})))
    assert (status, code) == (400, "InvalidArgument") and f"must contain a field named '{missing}'" in message
    assert root.findtext("ArgumentName") == missing and moto.seen == []


def test_fields_after_the_file_do_not_count(moto, presigned):
    _, fields = presigned
    parts = [(name, value) for name, value in fields.items() if name != "key"]
    parts += [("file", ("dog.jpg", b"x", "image/jpeg")), ("key", fields["key"])]
    assert error(post(client(moto), parts))[:2] == (400, "InvalidArgument")
    no_file = [(name, value) for name, value in fields.items()]
    assert error(post(client(moto), no_file))[:3] == (400, "InvalidArgument",
                                                      "POST requires exactly one file upload per request.")
    assert moto.seen == []


def test_an_extra_field_must_be_named_by_the_policy(moto, presigned):
    _, fields = presigned
    assert error(post(client(moto), form(fields, acl="public-read")))[:3] == (
        403, "AccessDenied", "Invalid according to Policy: Extra input fields: acl")
    assert post(client(moto), form(fields, **{"x-ignore-note": "kept out"})).status_code == 204


def test_malformed_bodies_are_refused_as_s3_does(moto, presigned):
    http = client(moto)
    cut = http.post(f"/{BUCKET}", data=b"--b\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nabc",
                    headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert error(cut)[:2] == (400, "MalformedPOSTRequest")
    _, fields = presigned
    garbled = error(post(http, form(fields, policy="not base64!")))
    assert garbled[:2] == (400, "InvalidPolicyDocument")
    assert moto.seen == []


def test_other_requests_pass_through(moto):
    http = client(moto)
    http.put(f"/{BUCKET}/{KEY}", data=b"x" * (MAX * 10), headers={"Content-Type": "image/jpeg"})
    http.post(f"/{BUCKET}", query_string="delete", data=b"<Delete/>", headers={"Content-Type": "application/xml"})
    http.post(f"/{BUCKET}/{KEY}", query_string="uploads", data=b"")
    http.get(f"/{BUCKET}")
    assert [(method, path) for method, path, _ in moto.seen] == [
        ("PUT", f"/{BUCKET}/{KEY}"), ("POST", f"/{BUCKET}"), ("POST", f"/{BUCKET}/{KEY}"), ("GET", f"/{BUCKET}")]


def test_refusals_carry_cors_headers_for_an_allowed_origin(moto, presigned):
    _, fields = presigned
    allowed = client(moto, cors_origin=lambda bucket, origin: bucket == BUCKET and origin == "http://page")
    oversized = form(fields, data=b"x" * (MAX + 1))
    response = post(allowed, oversized, headers={"Origin": "http://page"})
    assert response.status_code == 400 and response.headers["Access-Control-Allow-Origin"] == "http://page"
    other = post(allowed, oversized, headers={"Origin": "http://elsewhere"})
    assert other.status_code == 400 and "Access-Control-Allow-Origin" not in other.headers
