"""The fast tier (`make test-fast`): unit tests of every stage and service with fakes.

Guarded, so the tier stays fast as it grows: a test here that loads the real model, starts a process or opens a
browser fails at once instead of quietly slowing the tier down.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest


class FastTierViolation(AssertionError):
    """A unit test reached for something the fast tier does not allow."""


@pytest.fixture(autouse=True)
def _fast_tier_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def no_model(*_args: Any, **_kwargs: Any) -> None:
        raise FastTierViolation("tests/unit uses a fake embedder (tests/fakes.py), never the model file")

    def no_process(*_args: Any, **_kwargs: Any) -> None:
        raise FastTierViolation("tests/unit starts no process; test that path in tests/")

    monkeypatch.setattr("imgsim.embedder.Embedder.__init__", no_model)
    monkeypatch.setattr(subprocess.Popen, "__init__", no_process)
    yield


@pytest.fixture
def store() -> Iterator[Any]:
    """The services' store: the Qdrant REST stand-in in process (~10 ms a collection; an embedded one takes ~1.5 s)."""
    from fakes_services import memory_store

    store = memory_store()
    yield store
    store.close()


@pytest.fixture
def objects() -> Any:
    """S3 as the services see it (presign, delete), recorded."""
    from fakes_services import FakeObjects

    return FakeObjects()
