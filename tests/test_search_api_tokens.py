"""Tokens (JWTs) on the search API, as the function sees them behind API Gateway's JWT authorizer: the event carries
the validated claims in ``requestContext.authorizer.jwt`` (imgsim_tools.events builds it as the gateway does). The
tokens are signed with a key made here; the function never checks a signature (the gateway did), and never decodes an
``Authorization`` header itself: a bearer header on the key API (no authorizer) is ignored.

The local stack's own validation of tokens (``imgsim serve --jwks``) is tested in tests/test_local_stack_tokens.py.
"""

from __future__ import annotations

import json
import sys
import time

import pytest
from imgsim.access import hash_key
from imgsim_tools.events import http_api_event, jwt_claims
from joserfc import jwt
from joserfc.jwk import RSAKey
from roots import make_root
from support import SEARCH_APP_PATH as APP_PATH
from support import load_module_from_path

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")

ISSUER = "https://cognito-idp.eu-central-1.amazonaws.com/eu-central-1_Example"
AUDIENCE = "imgsim-app-client"
TENANT_CLAIM = "custom:tenant"
IMAGE_ID = "0b7e1a52-9c1f-5d0e-8d7a-3f2b6c4e9a10"
KEY = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig", "alg": "RS256"})


def token(**claims) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": now, "exp": now + 300, **claims}
    return jwt.encode({"alg": "RS256", "kid": "test-key"}, {k: v for k, v in payload.items() if v is not None}, KEY)


def validated(encoded: str) -> dict:
    """The claims of a token, read after checking its signature, as API Gateway's authorizer does before it calls."""
    decoded = jwt.decode(encoded, KEY, algorithms=["RS256"])
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": ISSUER}, aud={"essential": True, "value": AUDIENCE},
                          exp={"essential": True}).validate(decoded.claims)
    return decoded.claims


@pytest.fixture(scope="module")
def search_app():
    module = load_module_from_path("imgsim_search_app_tokens", APP_PATH, register=True)
    yield module
    sys.modules.pop(module.__name__, None)


@pytest.fixture
def call(search_app, tmp_path):
    """``call(method, path, token=..., key=..., variables=..., gateway=True)``: the function's answer (status, body).
    ``gateway=False``: the token is sent as a header to the key API, which has no authorizer."""
    roots = []

    def request(method, path, *, token=None, key=None, variables=None, gateway=True, scopes=None, body=None):
        root = make_root(tmp_path / str(len(roots)), {"IMGSIM_API_KEY": "admin-key", **(variables or {})})
        roots.append(root)
        search_app.use_root(root)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        if key:
            headers["x-api-key"] = key
        authorizer = validated(token) if token and gateway else None
        event = http_api_event(method, path, headers=headers, authorizer=authorizer, authorizer_scopes=scopes,
                               body=json.dumps(body) if body is not None else None)
        response = search_app.app.resolve(event, {})
        return response["statusCode"], json.loads(response["body"])

    yield request
    for root in roots:
        root.close()


def test_the_event_carries_the_claims_as_api_gateway_writes_them():
    encoded = token(scope="imgsim/search openid", scp=["imgsim/upload", "x"], email_verified=True, custom=None)
    event = http_api_event("GET", "/me", headers={"authorization": f"Bearer {encoded}"}, authorizer=validated(encoded))
    claims = event["requestContext"]["authorizer"]["jwt"]["claims"]
    assert claims["scope"] == "imgsim/search openid" and claims["scp"] == "[imgsim/upload x]"
    assert claims["email_verified"] == "true" and claims["exp"].isdigit() and claims["iss"] == ISSUER
    assert event["requestContext"]["authorizer"]["jwt"]["scopes"] is None  # no authorization scopes on the route
    assert event["headers"]["authorization"] == f"Bearer {encoded}"  # the gateway passes the header on
    assert jwt_claims({"n": 1.5, "o": {"a": 1}, "l": [1, "b"]}) == {"n": "1.5", "o": '{"a":1}', "l": "[1 b]"}
    assert "authorizer" not in http_api_event("GET", "/me")["requestContext"]


@pytest.mark.parametrize("granted, scopes", [
    ({"scope": "imgsim/search"}, ["search"]),
    ({"scope": "imgsim/upload"}, ["upload"]),
    ({"scope": "imgsim/delete"}, ["delete"]),
    ({"scope": "openid imgsim/search profile imgsim/delete"}, ["search", "delete"]),
    ({"scp": ["imgsim/upload", "imgsim/search"]}, ["search", "upload"]),  # Okta, Entra ID: an array ("[a b]")
    ({"scp": "imgsim/delete"}, ["delete"]),
    # Not imgsim's: another resource server's scopes of the same names, a bare name, a prefix of one.
    ({"scope": "search other/upload imgsim imgsim/ imgsim/searchall IMGSIM/delete"}, []),
    ({}, []),
])
def test_each_token_scope_maps_to_imgsim_scopes(call, granted, scopes):
    status, me = call("GET", "/me", token=token(**granted))
    assert status == 200, me
    assert me == {"name": "user-1", "tenant": None, "scopes": scopes, "via": "token",
                  "max_upload_bytes": 25 * 1024 * 1024, "images": 0}


def test_scopes_the_gateway_lists_count_too(call):
    status, me = call("GET", "/me", token=token(), scopes=["imgsim/upload", "aws.cognito.signin.user.admin"])
    assert (status, me["scopes"]) == (200, ["upload"])


def test_the_name_is_the_subject_or_the_client(call):
    # Cognito's client-credentials tokens carry client_id (and sub, the same value); user tokens carry sub.
    assert call("GET", "/me", token=token(sub=None, client_id="back-office"))[1]["name"] == "back-office"
    assert call("GET", "/me", token=token(sub="u-42", client_id="app"))[1]["name"] == "u-42"


def test_a_token_without_the_routes_scope_is_403_naming_the_scope(call):
    reader = token(scope="imgsim/search")
    status, body = call("DELETE", f"/images/{IMAGE_ID}", token=reader)
    assert (status, body["error"]["code"]) == (403, "missing_scope")
    assert body["error"]["message"] == ("token 'user-1' lacks the 'imgsim/delete' scope this route needs "
                                        "(it has: imgsim/search)")
    status, body = call("POST", "/search", token=token(scope="imgsim/upload"), body={"id": IMAGE_ID})
    assert (status, body["error"]["code"]) == (403, "missing_scope")
    assert "'imgsim/search' scope" in body["error"]["message"] and "(it has: imgsim/upload)" in body["error"]["message"]
    status, body = call("POST", "/uploads", token=token(scope="openid"),
                        body={"filename": "a.jpg", "content_type": "image/jpeg"})
    assert (status, body["error"]["code"]) == (403, "missing_scope")
    assert "'imgsim/upload' scope" in body["error"]["message"] and "(it has: none)" in body["error"]["message"]


def test_the_tenant_comes_from_the_configured_claim(call):
    variables = {"IMGSIM_TENANT_CLAIM": TENANT_CLAIM}
    status, me = call("GET", "/me", token=token(scope="imgsim/search", **{TENANT_CLAIM: "acme"}), variables=variables)
    assert (status, me["tenant"], me["scopes"]) == (200, "acme", ["search"])
    # No claim configured: tokens carry no tenant, whatever claims they hold.
    status, me = call("GET", "/me", token=token(**{TENANT_CLAIM: "acme"}))
    assert (status, me["tenant"]) == (200, None)


@pytest.mark.parametrize("value, says", [
    (None, "has no 'custom:tenant' claim"),
    ("", "has no 'custom:tenant' claim"),
    ("Acme Corp", "is not a tenant name"),
    ("../other", "is not a tenant name"),
    (["acme", "globex"], "is not a tenant name"),  # an array arrives as "[acme globex]"
])
def test_a_token_without_a_valid_tenant_is_403_missing_tenant(call, value, says):
    variables = {"IMGSIM_TENANT_CLAIM": TENANT_CLAIM}
    claims = {"scope": "imgsim/search", TENANT_CLAIM: value}
    for method, path in (("GET", "/me"), ("GET", f"/images/{IMAGE_ID}"), ("GET", "/trash")):
        status, body = call(method, path, token=token(**claims), variables=variables)
        assert (status, body["error"]["code"]) == (403, "missing_tenant"), (path, body)
        assert says in body["error"]["message"]


def test_the_token_comes_before_the_key(call):
    """Both sent: the token (validated by the gateway) is who calls; the key is not looked at."""
    reader = token(scope="imgsim/search")
    status, me = call("GET", "/me", token=reader, key="admin-key")
    assert (status, me["via"], me["scopes"]) == (200, "token", ["search"])
    status, body = call("DELETE", f"/images/{IMAGE_ID}", token=reader, key="admin-key")
    assert (status, body["error"]["code"]) == (403, "missing_scope")
    # A token needs no key configured: the key ring is not read (no 503 not_configured).
    status, me = call("GET", "/me", token=reader, variables={"IMGSIM_API_KEY": ""})
    assert (status, me["via"]) == (200, "token")


def test_a_bearer_header_without_the_authorizer_is_ignored(call):
    """The key API has no authorizer: a token sent there, however well signed, is not a credential."""
    admin = token(scope="imgsim/search imgsim/upload imgsim/delete")
    status, body = call("GET", "/me", token=admin, gateway=False)
    assert (status, body["error"]["code"]) == (401, "missing_api_key")
    status, me = call("GET", "/me", token=admin, key="admin-key", gateway=False)
    assert (status, me["via"], me["name"]) == (200, "key", "default")
    # Keys keep working beside tokens, with their own scopes.
    ring = {"IMGSIM_API_KEYS": json.dumps({"keys": [{"name": "web", "sha256": hash_key("web-key"),
                                                     "scopes": ["search"]}]})}
    status, me = call("GET", "/me", key="web-key", variables=ring)
    assert (status, me["via"], me["scopes"]) == (200, "key", ["search"])
