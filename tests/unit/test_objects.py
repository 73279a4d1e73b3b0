"""imgsim.objects.S3Objects.presign_post on a real boto3 client (signing is local: no S3, no network): the policy
S3 enforces is decoded and its conditions checked, since moto enforces none of them."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from imgsim.composition import _client_config
from imgsim.errors import ObjectStorageError
from imgsim.objects import S3Objects

BUCKET = "imgsim-images"
KEY = "uploads/0123456789abcdef0123456789abcdef-dog.jpg"


@pytest.fixture
def client():
    """S3 as the composition root configures it (SigV4 presigning), with role-like credentials."""
    return boto3.client("s3", region_name="eu-west-1", config=_client_config("s3"), aws_access_key_id="AKIDEXAMPLE",
                        aws_secret_access_key="secret", aws_session_token="session-token")


def policy_of(fields: dict[str, str]) -> dict:
    return json.loads(base64.b64decode(fields["policy"]))


def test_the_policy_fixes_key_type_and_size(client):
    before = datetime.now(UTC)
    url, fields = S3Objects(lambda: client).presign_post(BUCKET, KEY, content_type="image/jpeg",
                                                         max_bytes=25 * 2**20, expires_in=900)
    assert url == f"https://{BUCKET}.s3.amazonaws.com/"
    assert fields["key"] == KEY and fields["Content-Type"] == "image/jpeg"
    assert {"x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature", "x-amz-security-token"} <= set(
        fields)
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    policy = policy_of(fields)
    conditions = policy["conditions"]
    assert {"bucket": BUCKET} in conditions and {"key": KEY} in conditions
    assert {"Content-Type": "image/jpeg"} in conditions
    assert ["content-length-range", 1, 25 * 2**20] in conditions
    assert {"x-amz-security-token": "session-token"} in conditions  # Lambda's role credentials are signed in too
    # No condition leaves the key, the type or the size open (a starts-with would let a client choose).
    assert not [c for c in conditions if isinstance(c, list) and c[0] == "starts-with"]
    expires = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before + timedelta(seconds=899) <= expires <= datetime.now(UTC) + timedelta(seconds=901)
    # Every signed field is one the policy names (S3 refuses a form field no condition covers).
    named = {name.lower() for c in conditions if isinstance(c, dict) for name in c}
    assert {name.lower() for name in fields} - {"policy", "x-amz-signature"} <= named


def test_a_local_endpoint_gives_a_path_style_url():
    local = boto3.client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:4566", config=_client_config("s3"),
                         aws_access_key_id="imgsim-local", aws_secret_access_key="imgsim-local")
    url, fields = S3Objects(lambda: local).presign_post(BUCKET, KEY, content_type="image/png", max_bytes=1000,
                                                        expires_in=60)
    assert url == f"http://127.0.0.1:4566/{BUCKET}"
    assert ["content-length-range", 1, 1000] in policy_of(fields)["conditions"]


def test_a_failing_client_is_an_object_storage_error():
    from botocore.exceptions import NoCredentialsError

    class NoCredentials:
        def generate_presigned_post(self, **kwargs):
            raise NoCredentialsError()

    with pytest.raises(ObjectStorageError):
        S3Objects(lambda: NoCredentials()).presign_post(BUCKET, KEY, content_type="image/jpeg", max_bytes=1,
                                                        expires_in=60)
