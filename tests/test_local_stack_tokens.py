"""The local stack's JWT authorizer (``imgsim serve --jwks FILE --oidc-issuer ISS --oidc-audience AUD``): it checks
bearer tokens as API Gateway's does (signature against the JWKS, issuer, audience or client_id, expiry), answers a
refused one as API Gateway does (401 ``{"message": "Unauthorized"}``), and passes a valid one's claims in the event;
keys keep working beside tokens in the same stack. Tokens are signed with keys made here.

The checks one by one run on the verifier itself (fast); one stack runs them end to end (slow).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from imgsim_tools.local.tokens import TokenRefused, TokenVerifier, bearer_token
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey
from serve_support import API_KEY, IMGSIM, Serve

ISSUER = "https://issuer.example/pool-1"
AUDIENCE = "imgsim-client"
TENANT_CLAIM = "custom:tenant"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})  # same kid, another key: a forged signature


def token(key=KEY, kid="k1", alg="RS256", **claims) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-7", "iat": now, "exp": now + 300,
               "scope": "imgsim/search", TENANT_CLAIM: "acme", **claims}
    return jwt.encode({"alg": alg, "kid": kid}, {k: v for k, v in payload.items() if v is not None}, key)


@pytest.fixture(scope="module")
def jwks(tmp_path_factory):
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps(KeySet([KEY]).as_dict(private=False)))
    return path


@pytest.fixture(scope="module")
def verifier(jwks):
    return TokenVerifier.from_file(jwks, ISSUER, AUDIENCE)


def test_the_jwks_file_holds_only_public_keys(jwks):
    (key,) = json.loads(jwks.read_text())["keys"]
    assert key["kty"] == "RSA" and key["kid"] == "k1" and "d" not in key


def test_bearer_token_reads_only_bearer_headers():
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer  abc") == "abc"
    assert bearer_token("Basic dXNlcjpwYXNz") is None
    assert bearer_token("Bearer ") is None and bearer_token(None) is None and bearer_token("") is None


def test_a_valid_token_gives_its_claims(verifier):
    claims = verifier.claims(token())
    assert (claims["sub"], claims["scope"], claims[TENANT_CLAIM]) == ("user-7", "imgsim/search", "acme")
    # Several audiences, one of them ours; Cognito's access tokens: no aud, the app client in client_id.
    assert verifier.claims(token(aud=["other", AUDIENCE]))["sub"] == "user-7"
    assert verifier.claims(token(aud=None, client_id=AUDIENCE))["client_id"] == AUDIENCE


@pytest.mark.parametrize("what, kwargs, says", [
    ("expired", {"exp": int(time.time()) - 60}, "expired"),
    ("no expiry", {"exp": None}, "exp"),
    ("another issuer", {"iss": "https://issuer.example/pool-2"}, "iss"),
    ("another audience", {"aud": "someone-else"}, "audience"),
    ("another client, no aud", {"aud": None, "client_id": "someone-else"}, "client_id"),
    ("not yet valid", {"nbf": int(time.time()) + 600}, "not yet valid"),
    ("issued in the future", {"iat": int(time.time()) + 600}, "issued in the future"),
    ("signed by another key", {"key": OTHER_KEY}, "signature"),
    ("a kid the JWKS lacks", {"kid": "k2"}, "k2"),
    ("an HMAC token", {"key": OctKey.generate_key(256), "alg": "HS256"}, "HS256"),
])
def test_a_token_the_authorizer_refuses(verifier, what, kwargs, says):
    with pytest.raises(TokenRefused) as refused:
        verifier.claims(token(**kwargs))
    assert says.lower() in str(refused.value).lower(), (what, str(refused.value))


def test_garbage_is_refused(verifier):
    for value in ("not-a-jwt", "a.b.c", token()[:-5]):
        with pytest.raises(TokenRefused):
            verifier.claims(value)


def test_a_bad_jwks_file_is_an_error(tmp_path):
    (tmp_path / "bad.json").write_text('{"keys": 1}')
    (tmp_path / "empty.json").write_text('{"keys": []}')
    for name in ("bad.json", "empty.json", "missing.json"):
        with pytest.raises(ValueError, match=name):
            TokenVerifier.from_file(tmp_path / name, ISSUER, AUDIENCE)


def test_serve_needs_all_three_token_options(tmp_path):
    result = subprocess.run([str(IMGSIM), "serve", "--jwks", str(tmp_path / "x.json"), "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert "missing: --oidc-issuer, --oidc-audience" in result.stderr


# -- end to end: one stack with keys and tokens side by side ---------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory, jwks):
    serve = Serve(tmp_path_factory.mktemp("tokens") / "data",
                  extra_args=["--jwks", str(jwks), "--oidc-issuer", ISSUER, "--oidc-audience", AUDIENCE],
                  env={"IMGSIM_TENANT_CLAIM": TENANT_CLAIM})
    try:
        yield serve.wait_ready()
    finally:
        serve.stop()
        serve.kill()


def call(stack, method, path, headers):
    request = urllib.request.Request(stack.api_url + path, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.mark.slow
def test_the_stack_passes_a_valid_tokens_claims_to_the_function(stack):
    assert "Tokens       Authorization: Bearer, issuer https://issuer.example/pool-1" in stack.stdout()
    status, _, me = call(stack, "GET", "/me", bearer(token(scope="imgsim/search imgsim/upload")))
    assert (status, me["name"], me["via"], me["tenant"], me["scopes"]) == (200, "user-7", "token", "acme",
                                                                          ["search", "upload"])
    status, _, body = call(stack, "DELETE", "/images/0b7e1a52-9c1f-5d0e-8d7a-3f2b6c4e9a10", bearer(token()))
    assert (status, body["error"]["code"]) == (403, "missing_scope") and "'imgsim/delete'" in body["error"]["message"]
    status, _, body = call(stack, "GET", "/me", bearer(token(**{TENANT_CLAIM: None})))
    assert (status, body["error"]["code"]) == (403, "missing_tenant")


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [{"exp": int(time.time()) - 1}, {"iss": "https://elsewhere.example"},
                                    {"aud": "another-app"}, {"key": OTHER_KEY}])
def test_the_stack_refuses_a_bad_token_as_api_gateway_does(stack, kwargs):
    for method, path in (("GET", "/me"), ("POST", "/search")):
        status, headers, body = call(stack, method, path, {**bearer(token(**kwargs)), "x-api-key": API_KEY})
        assert (status, body) == (401, {"message": "Unauthorized"}), (kwargs, body)
        assert headers["www-authenticate"].startswith('Bearer error="invalid_token"')


@pytest.mark.slow
def test_keys_and_tokens_side_by_side_in_one_stack(stack):
    status, _, me = call(stack, "GET", "/me", {"x-api-key": API_KEY})
    assert (status, me["via"], me["name"], me["tenant"]) == (200, "key", "default", None)
    status, _, me = call(stack, "GET", "/me", {**bearer(token()), "x-api-key": API_KEY})
    assert (status, me["via"]) == (200, "token")  # both: the token is who calls
    status, _, body = call(stack, "GET", "/me", {})
    assert (status, body["error"]["code"]) == (401, "missing_api_key")  # neither: the key API's answer
    status, _, body = call(stack, "GET", "/me", {"Authorization": "Basic dXNlcjpwYXNz"})
    assert (status, body["error"]["code"]) == (401, "missing_api_key")  # not a bearer token: the key API
    # The public routes take no authorizer on the token API either: a bad token there changes nothing.
    status, _, health = call(stack, "GET", "/health", bearer("not-a-jwt"))
    assert status == 200 and health["status"] == "ok"
