"""Per-process singletons for the Lambda handlers, the CLI and the local stack.

Lambda reuses an execution environment across invocations: the interpreter,
the Qdrant client and boto3 clients are built on first use and then kept.
Secrets are read here, not in the handlers: when ``QDRANT_API_KEY_PARAM`` names
an SSM SecureString (the deployed stack), it is fetched once with powertools
parameters (cached) and used instead of ``QDRANT_API_KEY``.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from functools import cache, lru_cache
from typing import Any

from .config import Settings
from .embedder import Embedder
from .store import VectorStore, open_store

_lock = threading.Lock()


def read_secret_parameter(name: str) -> str:
    """An SSM SecureString (or a Secrets Manager secret, as ``secretsmanager:NAME``), cached 5 min."""
    from aws_lambda_powertools.utilities import parameters

    if name.startswith("secretsmanager:"):
        return str(parameters.get_secret(name.split(":", 1)[1], max_age=300))
    return str(parameters.get_parameter(name, decrypt=True, max_age=300))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    settings = Settings.from_env()
    param = os.environ.get("QDRANT_API_KEY_PARAM")
    # Only a Qdrant server needs a key: the embedded store (no QDRANT_URL) never reads SSM.
    if param and settings.qdrant_url and not settings.qdrant_api_key:
        settings = dataclasses.replace(settings, qdrant_api_key=read_secret_parameter(param))
    return settings


def get_embedder() -> Embedder:
    with _lock:
        return _embedder()


@lru_cache(maxsize=1)
def _embedder() -> Embedder:
    return Embedder(settings=get_settings())


def get_store() -> VectorStore:
    with _lock:
        return _store()


@lru_cache(maxsize=1)
def _store() -> VectorStore:
    settings = get_settings()
    return open_store(settings, dim=_embedder().dim)


@cache
def get_boto3_client(service: str) -> Any:
    """boto3 honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 etc., which the local stack sets."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "adaptive", "max_attempts": 5})
    if service == "s3":
        # Presigned URLs (search API) must be SigV4: botocore may still presign with the deprecated SigV2.
        config = config.merge(Config(signature_version="s3v4"))
    return boto3.client(service, config=config)  # type: ignore[call-overload]  # any service name, by design


def reset() -> None:
    """Forget every singleton (tests; the local stack after changing the environment)."""
    with _lock:
        if _store.cache_info().currsize:
            _store().close()
        for cached in (get_settings, _embedder, _store, get_boto3_client):
            cached.cache_clear()
