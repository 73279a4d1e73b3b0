"""Who is calling and what they may do: scopes, tenants, and the key ring that stores only hashes of API keys.

A caller is a ``Principal``: a name (the key's, or the token's subject), the scopes it holds and the tenant it belongs
to (None: no tenant). Keys come from ``IMGSIM_API_KEYS`` or the SSM SecureString ``IMGSIM_API_KEYS_PARAM`` names, as
``{"keys": [{"name", "sha256", "scopes", "tenant"?}]}``; ``parse_key_ring`` validates that document, so a typo in a
scope fails loudly instead of silently granting less (or more). Matching a presented key against the ring is
``KeyRing.identify``: the SHA-256 of the key compared in constant time against every entry, with no early exit, so
response timing says nothing about which entry (or how much of a hash) matched.

Why SHA-256 and not a slow password hash: API keys are 32 random bytes (``new_key``), not passwords; nobody can
brute-force a 256-bit preimage, and a per-request bcrypt would add ~100 ms to every call.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

SEARCH = "search"
UPLOAD = "upload"
DELETE = "delete"
SCOPES: tuple[str, ...] = (SEARCH, UPLOAD, DELETE)
ALL_SCOPES = frozenset(SCOPES)

# A tenant names an S3 folder (tenants/<tenant>/) and a payload value: lower-case letters, digits, - and _.
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# The name the single legacy key (IMGSIM_API_KEY / IMGSIM_API_KEY_PARAM) goes by in logs and GET /me.
LEGACY_KEY_NAME = "default"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``via``: "key" (x-api-key) or "token" (a JWT API Gateway validated)."""

    name: str
    scopes: frozenset[str]
    tenant: str | None = None
    via: str = "key"

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True)
class KeyEntry:
    name: str
    sha256: str = field(repr=False)
    scopes: frozenset[str]
    tenant: str | None = None

    def principal(self) -> Principal:
        return Principal(self.name, self.scopes, self.tenant, "key")

    def document(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "sha256": self.sha256,
                                 "scopes": [s for s in SCOPES if s in self.scopes]}
        if self.tenant is not None:
            entry["tenant"] = self.tenant
        return entry


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A new API key: 32 random bytes, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def check_tenant(tenant: str, what: str = "tenant") -> str:
    if not re.match(TENANT_PATTERN, tenant):
        raise ConfigError(f"{what} {tenant!r} must match {TENANT_PATTERN} (lower-case letters, digits, - and _)")
    return tenant


def check_scopes(scopes: Iterable[str], what: str = "scopes") -> frozenset[str]:
    chosen = frozenset(scopes)
    unknown = sorted(chosen - ALL_SCOPES)
    if unknown or not chosen:
        raise ConfigError(f"{what} must be a non-empty subset of {', '.join(SCOPES)}; got {sorted(chosen)}")
    return chosen


def _entry(raw: Any, where: str) -> KeyEntry:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be an object with name, sha256, scopes and an optional tenant")
    unknown = sorted(set(raw) - {"name", "sha256", "scopes", "tenant"})
    if unknown:
        raise ConfigError(f"{where} has unknown fields {unknown}")
    name, digest, scopes, tenant = raw.get("name"), raw.get("sha256"), raw.get("scopes"), raw.get("tenant")
    if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
        raise ConfigError(f"{where}.name must match {NAME_PATTERN}; got {name!r}")
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise ConfigError(f"{where}.sha256 must be the lower-case hex SHA-256 of the key (64 characters)")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ConfigError(f"{where}.scopes must be a list of {', '.join(SCOPES)}")
    if tenant is not None and not isinstance(tenant, str):
        raise ConfigError(f"{where}.tenant must be a string")
    return KeyEntry(name, digest, check_scopes(scopes, f"{where}.scopes"),
                    check_tenant(tenant, f"{where}.tenant") if tenant is not None else None)


def parse_key_ring(text: str, source: str = "the key ring") -> tuple[KeyEntry, ...]:
    """``{"keys": [...]}`` as entries; ConfigError naming ``source`` and the entry on anything malformed."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{source} is not JSON: {exc}") from exc
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ConfigError(f'{source} must be {{"keys": [{{"name", "sha256", "scopes", "tenant"?}}, ...]}}')
    entries = tuple(_entry(raw, f"{source} keys[{i}]") for i, raw in enumerate(document["keys"]))
    names = [e.name for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{source} names {duplicates} more than once")
    return entries


def key_ring_document(entries: Iterable[KeyEntry]) -> str:
    return json.dumps({"keys": [e.document() for e in entries]}, indent=1)


class KeyRing:
    """The keys one request may present: the ring's entries and the legacy key (every scope, no tenant)."""

    def __init__(self, entries: Iterable[KeyEntry]) -> None:
        self.entries = tuple(entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def identify(self, presented: str) -> Principal | None:
        digest = hash_key(presented).encode("ascii")
        found: KeyEntry | None = None
        for entry in self.entries:  # every entry, no early exit: constant time in the ring, not in the match
            # The first match wins: the ring's entries come before the legacy key (ApiKeys.ring), so a tenant key
            # also exported as IMGSIM_API_KEY keeps its tenant and scopes.
            if hmac.compare_digest(digest, entry.sha256.encode("ascii")) and found is None:
                found = entry
        return found.principal() if found is not None else None


def legacy_entry(key: str) -> KeyEntry:
    return KeyEntry(LEGACY_KEY_NAME, hash_key(key), ALL_SCOPES, None)
