"""imgsim.services.keys: which API key the deployment expects; never an open API."""

from __future__ import annotations

import pytest
from fakes_services import settings
from imgsim.errors import NotConfigured, SecretUnavailable
from imgsim.services import ApiKeys


def unreadable(name: str) -> str:
    raise RuntimeError(f"cannot read {name}")


def test_the_key_from_settings_wins_over_the_parameter():
    keys = ApiKeys(settings(api_key="k1", api_key_param="/p"), read_secret=unreadable)
    assert keys.expected() == "k1"


def test_the_key_from_a_parameter():
    read = []
    keys = ApiKeys(settings(api_key=None, api_key_param="/imgsim/api-key"),
                   read_secret=lambda name: read.append(name) or "from-ssm")
    assert keys.expected() == "from-ssm" and read == ["/imgsim/api-key"]


def test_an_unreadable_parameter_is_transient_and_none_configured_is_not():
    with pytest.raises(SecretUnavailable) as info:
        ApiKeys(settings(api_key=None, api_key_param="/p"), read_secret=unreadable).expected()
    assert info.value.transient
    for configured in (settings(api_key=None), settings(api_key=None, api_key_param="/empty")):
        with pytest.raises(NotConfigured) as missing:
            ApiKeys(configured, read_secret=lambda name: "").expected()
        assert not missing.value.transient
