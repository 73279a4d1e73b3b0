"""Settings, read from environment variables once; every default is documented in README.md."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from .errors import ConfigError

N = TypeVar("N", int, float)


def _number(name: str, default: N, parse: Callable[[str], N], kind: str, minimum: N | None = None) -> N:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be {kind}, got {raw!r}") from exc
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    return _number(name, default, int, "an integer", minimum)


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    return _number(name, default, float, "a number", minimum)


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (os.environ.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def env_bool(name: str, default: bool) -> bool:
    raw = (os.environ.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _str(name: str, default: str | None) -> str | None:
    raw = os.environ.get(name)
    return default if raw is None or raw == "" else raw


@dataclass(frozen=True)
class Settings:
    # Model
    model_name: str | None = None  # None: the manifest's default
    model_dir: str | None = None  # None: search IMGSIM_MODEL_DIR, /opt/model, <repo>/model
    num_threads: int = 1
    batch_size: int = 16
    # Guard rails
    max_image_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 64_000_000
    max_decode_mb: int = 320  # estimated peak memory of one decode (imgsim.decode_cost)
    max_decode_ms: float = 1500.0  # estimated decode time on one core
    # Qdrant
    qdrant_url: str | None = None
    qdrant_api_key: str | None = field(default=None, repr=False)
    qdrant_path: str = "./.data/qdrant"
    collection: str = "images"
    qdrant_timeout: float = 5.0
    qdrant_retries: int = 3
    qdrant_retry_budget: float = 3.0  # seconds of retrying per call, Retry-After waits included
    # Storage of the vectors (README "Memory and quantization")
    quantization: str = "int8"  # none | int8 | binary
    vectors_on_disk: bool = True  # float originals on disk when quantized (rescoring reads them)
    oversampling: float = 2.0
    hnsw_ef: int | None = None  # None: the engine's default (ef_construct, 100)
    index_threshold: int = 20_000  # embedded store: unindexed points that start a background HNSW build
    # A Qdrant cluster (README "Qdrant clusters"; imgsim.store.ClusterOptions): None = the server's default
    qdrant_shards: int | None = None
    qdrant_replication_factor: int | None = None
    qdrant_write_consistency_factor: int | None = None
    qdrant_on_disk_payload: bool | None = None
    qdrant_write_ordering: str = "medium"  # weak | medium | strong
    qdrant_read_consistency: str = "majority"  # majority | quorum | all

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            model_name=_str("IMGSIM_MODEL", None),
            model_dir=_str("IMGSIM_MODEL_DIR", None),
            num_threads=env_int("IMGSIM_NUM_THREADS", 1),
            batch_size=env_int("IMGSIM_BATCH_SIZE", 16),
            max_image_bytes=env_int("IMGSIM_MAX_IMAGE_BYTES", 25 * 1024 * 1024),
            max_pixels=env_int("IMGSIM_MAX_PIXELS", 64_000_000),
            max_decode_mb=env_int("IMGSIM_MAX_DECODE_MB", 320, minimum=1),
            max_decode_ms=env_float("IMGSIM_MAX_DECODE_MS", 1500.0, minimum=1.0),
            qdrant_url=_str("QDRANT_URL", None),
            qdrant_api_key=_str("QDRANT_API_KEY", None),
            qdrant_path=_str("QDRANT_PATH", "./.data/qdrant") or "./.data/qdrant",
            collection=_str("QDRANT_COLLECTION", "images") or "images",
            qdrant_timeout=env_float("QDRANT_TIMEOUT", 5.0),
            qdrant_retries=env_int("QDRANT_RETRIES", 3, minimum=0),
            qdrant_retry_budget=env_float("QDRANT_RETRY_BUDGET", 3.0, minimum=0),
            quantization=env_choice("IMGSIM_QUANTIZATION", "int8", ("none", "int8", "binary")),
            vectors_on_disk=env_bool("IMGSIM_VECTORS_ON_DISK", True),
            oversampling=env_float("IMGSIM_OVERSAMPLING", 2.0, minimum=1.0),
            hnsw_ef=env_int("IMGSIM_HNSW_EF", 0, minimum=0) or None,
            index_threshold=env_int("IMGSIM_INDEX_THRESHOLD", 20_000, minimum=1),
            qdrant_shards=env_int("QDRANT_SHARDS", 0, minimum=0) or None,
            qdrant_replication_factor=env_int("QDRANT_REPLICATION_FACTOR", 0, minimum=0) or None,
            qdrant_write_consistency_factor=env_int("QDRANT_WRITE_CONSISTENCY_FACTOR", 0, minimum=0) or None,
            qdrant_on_disk_payload=env_bool("QDRANT_ON_DISK_PAYLOAD", False) if os.environ.get(
                "QDRANT_ON_DISK_PAYLOAD") else None,
            qdrant_write_ordering=env_choice("QDRANT_WRITE_ORDERING", "medium", ("weak", "medium", "strong")),
            qdrant_read_consistency=env_choice("QDRANT_READ_CONSISTENCY", "majority", ("majority", "quorum", "all")),
        )
