"""Which API keys the deployment accepts: the key ring (IMGSIM_API_KEYS, or the SSM parameter IMGSIM_API_KEYS_PARAM
names) and the legacy single key (IMGSIM_API_KEY or IMGSIM_API_KEY_PARAM: every scope, no tenant).

Reading what a request presents is the HTTP side's (``imgsim.http.auth``: the header, the scope check); matching it
against hashes is ``imgsim.access.KeyRing``.
"""

from __future__ import annotations

from collections.abc import Callable

from ..access import KeyEntry, KeyRing, Principal, legacy_entry, parse_key_ring
from ..errors import ConfigError, NotConfigured, SecretNotFound, SecretUnavailable
from ..settings import API_KEYS_PARAM, ApiSettings

# How long a warm function may keep answering to a revoked key: the key parameters are read again after this many
# seconds (powertools' cache; read_secret_parameter remembers a missing one as long). One SSM GetParameter a minute
# per parameter and warm environment.
KEY_RING_MAX_AGE_S = 60


class ApiKeys:
    def __init__(self, settings: ApiSettings, *, read_secret: Callable[..., str]) -> None:
        """``read_secret(name, *, max_age=300)``: an SSM SecureString by name
        (``imgsim.composition.read_secret_parameter``: powertools parameters, cached ``max_age`` seconds); both key
        parameters, the ring and the legacy key, are read with ``max_age=KEY_RING_MAX_AGE_S``; a missing one raises
        ``SecretNotFound``."""
        self.settings = settings
        self._read_secret = read_secret
        # The last ring text and its entries: parsing 30 keys takes ~170 µs, matching a key ~7 µs, and the text
        # changes once in a long while (powertools caches it 60 s).
        self._parsed: tuple[str, tuple[KeyEntry, ...]] = ("", ())

    def _read(self, name: str) -> str | None:
        """The parameter's value; None when it does not exist (an empty ring, not an outage)."""
        try:
            return self._read_secret(name, max_age=KEY_RING_MAX_AGE_S)
        except SecretNotFound:
            return None
        except Exception as exc:  # powertools raises its own GetParameterError, and boto3's errors pass through
            raise SecretUnavailable("the API keys could not be loaded; try again shortly") from exc

    def _parse(self, text: str) -> tuple[KeyEntry, ...]:
        if self._parsed[0] != text:
            try:
                self._parsed = (text, parse_key_ring(text, f"{API_KEYS_PARAM} ({self.settings.api_keys_param})"))
            except ConfigError as exc:  # a broken parameter locks everyone out: say so, do not answer 401
                raise NotConfigured(f"the API key ring is malformed: {exc}") from exc
        return self._parsed[1]

    def legacy(self) -> str | None:
        if self.settings.api_key:
            return self.settings.api_key
        if self.settings.api_key_param:
            return self._read(self.settings.api_key_param) or None
        return None

    def ring(self) -> KeyRing:
        """Every key accepted now. None configured is ``NotConfigured``: the API must never be open by accident (and
        "unauthorized" would wrongly tell the caller their key is the problem); an unreadable parameter is
        ``SecretUnavailable``; a parameter that does not exist holds no keys."""
        entries: list[KeyEntry] = list(self.settings.api_keys)
        if self.settings.api_keys_param:
            text = self._read(self.settings.api_keys_param)
            if text and text.strip():
                entries.extend(self._parse(text))
        legacy = self.legacy()
        if legacy:
            entries.append(legacy_entry(legacy))
        if not entries:
            raise NotConfigured("no API key is configured on the server (set IMGSIM_API_KEYS, IMGSIM_API_KEYS_PARAM, "
                                "IMGSIM_API_KEY or IMGSIM_API_KEY_PARAM)")
        return KeyRing(entries)

    def identify(self, presented: str) -> Principal | None:
        """The principal ``presented`` is the key of; None when it is no accepted key."""
        return self.ring().identify(presented)
