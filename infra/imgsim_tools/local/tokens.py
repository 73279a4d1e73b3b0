"""API Gateway's JWT authorizer, for the local stack: ``imgsim serve --jwks FILE --oidc-issuer ISS --oidc-audience AUD``.

On AWS the token API's JWT authorizer validates an ``Authorization: Bearer`` token before the function runs and puts
its claims in the event (``requestContext.authorizer.jwt.claims``); the function only reads them
(imgsim.http.auth). The local stack does the same checks here, with joserfc (kept, and already installed with moto's
server), against the keys of a JWKS file instead of the issuer's ``/.well-known/jwks.json``:

- the token is a JWS signed with an RSA key (RS256/384/512: API Gateway supports only RSA-based algorithms) whose
  ``kid`` names a key of the set;
- ``iss`` is the issuer; ``aud`` holds the audience, or, without ``aud``, ``client_id`` is the audience (Cognito's
  access tokens carry ``client_id`` only);
- ``exp`` is in the future; ``nbf`` and ``iat``, when present, in the past.

A token that fails any check is refused with API Gateway's answer: 401 ``{"message": "Unauthorized"}`` and a
``www-authenticate`` header saying why. Hand-written here: only the audience-or-client_id rule (joserfc's registry
checks ``aud`` alone).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

ALGORITHMS = ("RS256", "RS384", "RS512")


class TokenRefused(Exception):
    """The token is not one the authorizer accepts; the message says why (it goes into ``www-authenticate``)."""


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None for any other header (or none)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


@dataclass(frozen=True)
class TokenVerifier:
    keys: KeySet
    issuer: str
    audience: str

    @classmethod
    def from_file(cls, jwks: Path, issuer: str, audience: str) -> TokenVerifier:
        """ValueError naming the file when it is not a JWKS with at least one key."""
        try:
            document = json.loads(jwks.read_text(encoding="utf-8"))
            keys = KeySet.import_key_set(document)
        except (OSError, ValueError, TypeError, KeyError, JoseError) as exc:
            raise ValueError(f"{jwks}: not a readable JWKS ({{\"keys\": [...]}}): {exc}") from exc
        if not keys.keys:
            raise ValueError(f"{jwks}: the JWKS holds no key")
        if not issuer or not audience:
            raise ValueError("a token needs both an issuer (--oidc-issuer) and an audience (--oidc-audience)")
        return cls(keys, issuer, audience)

    def claims(self, token: str) -> dict[str, Any]:
        """The claims of a token the authorizer accepts; TokenRefused otherwise."""
        try:
            decoded = jwt.decode(token, self.keys, algorithms=list(ALGORITHMS))
            claims: dict[str, Any] = dict(decoded.claims)
            jwt.JWTClaimsRegistry(iss={"essential": True, "value": self.issuer},
                                  exp={"essential": True}).validate(claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise TokenRefused(_reason(exc)) from exc
        self._check_audience(claims)
        return claims

    def _check_audience(self, claims: Mapping[str, Any]) -> None:
        audience = claims.get("aud")
        if audience is not None:
            audiences = audience if isinstance(audience, list) else [audience]
            if self.audience not in audiences:
                raise TokenRefused(f"the token's audience {audiences} is not {self.audience!r}")
        elif claims.get("client_id") != self.audience:
            raise TokenRefused(f"the token has no aud, and its client_id is not {self.audience!r}")


def _reason(exc: Exception) -> str:
    text = getattr(exc, "description", None) or getattr(exc, "error", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def unauthorized_headers(reason: str) -> list[tuple[str, str]]:
    """API Gateway's headers of a refused token (RFC 6750's error="invalid_token")."""
    detail = reason.replace('"', "'")
    return [("content-type", "application/json"),
            ("www-authenticate", f'Bearer error="invalid_token" error_description="{detail}"')]


UNAUTHORIZED_BODY = b'{"message":"Unauthorized"}'
