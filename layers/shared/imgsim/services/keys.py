"""Which API key the deployment expects: IMGSIM_API_KEY, or the SSM parameter IMGSIM_API_KEY_PARAM names.

Comparing it with what a request presents is the HTTP side's (``imgsim.http.auth``: the header, constant time).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import NotConfigured, SecretUnavailable
from ..settings import ApiSettings


class ApiKeys:
    def __init__(self, settings: ApiSettings, *, read_secret: Callable[[str], str]) -> None:
        """``read_secret``: an SSM SecureString by name (``imgsim.composition.read_secret_parameter``: powertools
        parameters, cached 5 min)."""
        self.settings = settings
        self._read_secret = read_secret

    def expected(self) -> str:
        """The key. With none configured, ``NotConfigured``: the API must never be open by accident (and "unauthorized"
        would wrongly tell the caller their key is the problem); an unreadable parameter is ``SecretUnavailable``."""
        if self.settings.api_key:
            return self.settings.api_key
        if self.settings.api_key_param:
            try:
                key = self._read_secret(self.settings.api_key_param)
            except Exception as exc:  # powertools raises its own GetParameterError, and boto3's errors pass through
                raise SecretUnavailable("the API key could not be loaded; try again shortly") from exc
            if key:
                return key
        raise NotConfigured(
            "no API key is configured on the server (set IMGSIM_API_KEY or IMGSIM_API_KEY_PARAM)")
