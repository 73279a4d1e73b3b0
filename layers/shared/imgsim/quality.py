"""Placeholder until the quality measures land: the keep rank from pixels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def keep_rank(payload: Mapping[str, Any]) -> tuple[Any, ...]:
    pixels = int(payload.get("width") or 0) * int(payload.get("height") or 0)
    return (-pixels,)
