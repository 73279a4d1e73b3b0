"""imgsim.services.keys and imgsim.access: which keys the deployment accepts (hashes only, several at once, revoked
within a minute), what each may do; never an open API."""

from __future__ import annotations

import json

import pytest
from fakes_services import settings
from imgsim.access import (
    ALL_SCOPES,
    KeyEntry,
    KeyRing,
    hash_key,
    key_ring_document,
    new_key,
    parse_key_ring,
)
from imgsim.errors import ConfigError, NotConfigured, SecretNotFound, SecretUnavailable
from imgsim.services import ApiKeys
from imgsim.services.keys import KEY_RING_MAX_AGE_S


def unreadable(name: str, **_: object) -> str:
    raise RuntimeError(f"cannot read {name}")


def ring_text(*entries: dict) -> str:
    return json.dumps({"keys": list(entries)})


def entry(name: str, key: str, scopes: list[str], tenant: str | None = None) -> dict:
    found = {"name": name, "sha256": hash_key(key), "scopes": scopes}
    if tenant:
        found["tenant"] = tenant
    return found


def test_the_legacy_key_from_settings_has_every_scope_and_no_tenant():
    keys = ApiKeys(settings(api_key="k1", api_key_param="/p"), read_secret=unreadable)
    principal = keys.identify("k1")
    assert principal is not None and principal.scopes == ALL_SCOPES and principal.tenant is None
    assert keys.identify("k2") is None


def test_the_legacy_key_from_a_parameter():
    read = []
    keys = ApiKeys(settings(api_key=None, api_key_param="/imgsim/api-key"),
                   read_secret=lambda name, **_: read.append(name) or "from-ssm")
    assert keys.identify("from-ssm") is not None and read == ["/imgsim/api-key"]


def test_an_unreadable_parameter_is_transient_and_none_configured_is_not():
    with pytest.raises(SecretUnavailable) as info:
        ApiKeys(settings(api_key=None, api_key_param="/p"), read_secret=unreadable).ring()
    assert info.value.transient
    for configured in (settings(api_key=None), settings(api_key=None, api_key_param="/empty"),
                       settings(api_key=None, api_keys_param="/empty-ring")):
        with pytest.raises(NotConfigured) as missing:
            ApiKeys(configured, read_secret=lambda name, **_: "").ring()
        assert not missing.value.transient


def test_a_ring_parameter_that_does_not_exist_holds_no_keys():
    def missing(name: str, **_: object) -> str:
        raise SecretNotFound(name)

    keys = ApiKeys(settings(api_key="legacy", api_keys_param="/imgsim/api-keys"), read_secret=missing)
    assert [e.name for e in keys.ring().entries] == ["default"]


def test_several_keys_each_with_its_scopes_and_tenant():
    text = ring_text(entry("web", "k-web", ["search", "upload"], "acme"), entry("ops", "k-ops", ["delete"]))
    keys = ApiKeys(settings(api_key=None, api_keys=parse_key_ring(text)), read_secret=unreadable)
    web, ops = keys.identify("k-web"), keys.identify("k-ops")
    assert web is not None and web.name == "web" and web.tenant == "acme" and web.allows("upload")
    assert not web.allows("delete")
    assert ops is not None and ops.allows("delete") and ops.tenant is None
    assert keys.identify("k-web ") is None and keys.identify("") is None


def test_the_ring_parameter_is_read_with_a_one_minute_cache():
    calls = []
    text = ring_text(entry("web", "k-web", ["search"]))

    def read(name: str, **options: object) -> str:
        calls.append((name, options))
        return text

    keys = ApiKeys(settings(api_key=None, api_keys_param="/imgsim/api-keys"), read_secret=read)
    assert keys.identify("k-web") is not None
    assert calls == [("/imgsim/api-keys", {"max_age": KEY_RING_MAX_AGE_S})] and KEY_RING_MAX_AGE_S <= 60


def test_revoking_a_key_stops_it_once_the_parameter_is_read_again():
    stored = {"text": ring_text(entry("old", "k-old", ["search"]), entry("new", "k-new", ["search"]))}
    keys = ApiKeys(settings(api_key=None, api_keys_param="/p"), read_secret=lambda name, **_: stored["text"])
    assert keys.identify("k-old") and keys.identify("k-new")  # rotation: both work at once
    stored["text"] = ring_text(entry("new", "k-new", ["search"]))
    assert keys.identify("k-old") is None and keys.identify("k-new") is not None


def test_a_malformed_ring_parameter_is_not_configured_not_unauthorized():
    keys = ApiKeys(settings(api_key=None, api_keys_param="/p"), read_secret=lambda name, **_: '{"keys": [1]}')
    with pytest.raises(NotConfigured, match="malformed"):
        keys.ring()


@pytest.mark.parametrize("document, problem", [
    ("not json", "not JSON"),
    ('{"nokeys": []}', "must be"),
    (ring_text({"name": "a", "sha256": "x" * 64, "scopes": ["search"]}), "sha256"),
    (ring_text({"name": "a", "sha256": "a" * 64, "scopes": ["admin"]}), "scopes"),
    (ring_text({"name": "a", "sha256": "a" * 64, "scopes": []}), "scopes"),
    (ring_text({"name": "a", "sha256": "a" * 64, "scopes": ["search"], "tenant": "Acme Corp"}), "tenant"),
    (ring_text({"name": "a", "sha256": "a" * 64, "scopes": ["search"], "key": "plain"}), "unknown fields"),
    (ring_text({"name": "a", "sha256": "a" * 64, "scopes": ["search"]},
               {"name": "a", "sha256": "b" * 64, "scopes": ["delete"]}), "more than once"),
])
def test_a_malformed_ring_names_what_is_wrong(document, problem):
    with pytest.raises(ConfigError, match=problem):
        parse_key_ring(document)


def test_a_ring_round_trips_and_stores_no_key():
    key = new_key()
    ring = (KeyEntry("web", hash_key(key), frozenset({"search"}), "acme"),)
    text = key_ring_document(ring)
    assert key not in text and parse_key_ring(text) == ring
    assert len(key) >= 43 and KeyRing(ring).identify(key) is not None
    assert "sha256" not in repr(ring[0]) and hash_key(key) not in repr(ring[0])


def test_a_missing_parameter_is_asked_for_again_only_after_the_cache_age(monkeypatch):
    """read_secret_parameter remembers a missing name as long as a value: else every request, even one without a
    key, would call SSM while the ring's parameter is not created (and its throttling would turn into 503s)."""
    from imgsim import composition

    calls = []

    class ParameterNotFound(Exception):
        def __init__(self, name: str) -> None:
            super().__init__(name)
            self.response = {"Error": {"Code": "ParameterNotFound"}}

    class Provider:
        def get(self, name: str, **options: object) -> str:
            calls.append(name)
            raise RuntimeError("GetParameterError") from ParameterNotFound(name)

    now = [1000.0]
    monkeypatch.setattr(composition, "_secret_providers", {"ssm": Provider()})
    monkeypatch.setattr(composition, "_missing_secrets", {})
    monkeypatch.setattr(composition.time, "monotonic", lambda: now[0])
    keys = ApiKeys(settings(api_key="legacy", api_keys_param="/imgsim/api-keys"),
                   read_secret=composition.read_secret_parameter)
    for _ in range(100):
        assert keys.identify("legacy") is not None
    assert calls == ["/imgsim/api-keys"]
    now[0] += KEY_RING_MAX_AGE_S + 1
    keys.identify("legacy")
    assert calls == ["/imgsim/api-keys"] * 2
    with pytest.raises(SecretNotFound):
        composition.read_secret_parameter("file:/nonexistent/ring.json")


def test_the_legacy_parameter_is_read_with_the_same_one_minute_cache():
    calls = []
    keys = ApiKeys(settings(api_key=None, api_key_param="/imgsim/api-key"),
                   read_secret=lambda name, **options: calls.append(options) or "legacy")
    assert keys.identify("legacy") is not None and calls == [{"max_age": KEY_RING_MAX_AGE_S}]


def test_a_ring_key_also_given_as_the_legacy_key_keeps_its_tenant_and_scopes():
    """`export IMGSIM_API_KEY=<a ring key>` (for `imgsim --api`) in the shell that then starts `imgsim serve`."""
    text = ring_text(entry("web", "shared-key", ["search"], "acme"))
    keys = ApiKeys(settings(api_key="shared-key", api_keys=parse_key_ring(text)), read_secret=unreadable)
    principal = keys.identify("shared-key")
    assert principal is not None and (principal.name, principal.tenant, principal.scopes) == (
        "web", "acme", frozenset({"search"}))
