"""Shared test setup: safe AWS/powertools environment, real photos, one Embedder per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = (REPO_ROOT.parent / "shared").resolve()
PHOTOS_DIR = SHARED_DIR / "datasets" / "photos"

# Never talk to real AWS from tests; powertools wants these set.
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_SERVICE_NAME": "imgsim-tests",
    "POWERTOOLS_METRICS_NAMESPACE": "imgsim",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_DEV": "false",
}.items():
    os.environ[_name] = _value
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("QDRANT_URL", None)
os.environ.pop("QDRANT_API_KEY", None)


def photo_paths() -> list[Path]:
    paths = sorted(PHOTOS_DIR.glob("*.jpg"))
    if not paths:
        # A hard failure, not a skip: the suite needs ../shared (see ../shared/README.md).
        raise RuntimeError(f"no photos in {PHOTOS_DIR}; the tests need ../shared/datasets/photos")
    return paths


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """All 1,692 real photos, in order (cats, dogs, monkeys, squirrels in blocks)."""
    return photo_paths()


@pytest.fixture(scope="session")
def embedder():
    from imgsim import Embedder

    return Embedder()


@pytest.fixture(params=["edge", "server"])
def backend(request) -> str:
    """Each store backend in turn (see tests/store_backends.py)."""
    return request.param


@pytest.fixture
def moto_s3():
    """moto's S3 with the images bucket (in-process, no server): what the indexer reads from."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="imgsim-images")
        yield client


@pytest.fixture
def backend_store(embedder, backend, tmp_path):
    """A store of the model's dimension on each backend (tests using it run once per backend)."""
    from store_backends import make_store

    store = make_store(backend, tmp_path, embedder.dim)
    yield store
    store.close()


@pytest.fixture
def root_on_backend(backend, tmp_path):
    """A composition root (``imgsim.composition.Root``, as the functions build one) on a fresh store of
    ``backend``: an embedded folder, or a fresh Qdrant (the REST stand-in) shared by every catalog the
    root opens (a server outlives ``root.close()``, as it outlives a function's execution environment).
    ``tests/roots.py`` builds roots with other variables."""
    from roots import make_root

    root = make_root(tmp_path, backend=backend)
    yield root
    root.close()
