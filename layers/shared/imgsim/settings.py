"""Every setting imgsim reads, in one place: the variable names, their defaults, and their validation.

Nothing else in ``imgsim`` or ``imgsim_tools`` reads ``os.environ`` for imgsim's own configuration: each process
calls ``load()`` once (the Lambda handlers on their first invocation, the CLI from its options, the local stack
from its own mapping) and hands the frozen result to a composition root (``imgsim.composition``). A bad value is a
``ConfigError`` of one line naming the variable and what it accepts; the process stops before serving anything.

Defaults are documented in docs/configuration.md (a test keeps that table, the template and this module in step).
Names are module constants, as powertools keeps its own in one constants module: a typo is an import error, not a
silently ignored variable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .access import KeyEntry, parse_key_ring
from .errors import ConfigError

# -- names ------------------------------------------------------------------------------------------------------------

# Model and decoding
MODEL = "IMGSIM_MODEL"
MODEL_DIR = "IMGSIM_MODEL_DIR"
NUM_THREADS = "IMGSIM_NUM_THREADS"
BATCH_SIZE = "IMGSIM_BATCH_SIZE"
MAX_IMAGE_BYTES = "IMGSIM_MAX_IMAGE_BYTES"
MAX_PIXELS = "IMGSIM_MAX_PIXELS"
MAX_DECODE_MB = "IMGSIM_MAX_DECODE_MB"
MAX_DECODE_MS = "IMGSIM_MAX_DECODE_MS"
# Qdrant
QDRANT_URL = "QDRANT_URL"
QDRANT_API_KEY = "QDRANT_API_KEY"
QDRANT_API_KEY_PARAM = "QDRANT_API_KEY_PARAM"
QDRANT_PATH = "QDRANT_PATH"
QDRANT_COLLECTION = "QDRANT_COLLECTION"
QDRANT_TIMEOUT = "QDRANT_TIMEOUT"
QDRANT_RETRIES = "QDRANT_RETRIES"
QDRANT_RETRY_BUDGET = "QDRANT_RETRY_BUDGET"
QDRANT_SHARDS = "QDRANT_SHARDS"
QDRANT_REPLICATION_FACTOR = "QDRANT_REPLICATION_FACTOR"
QDRANT_WRITE_CONSISTENCY_FACTOR = "QDRANT_WRITE_CONSISTENCY_FACTOR"
QDRANT_ON_DISK_PAYLOAD = "QDRANT_ON_DISK_PAYLOAD"
QDRANT_WRITE_ORDERING = "QDRANT_WRITE_ORDERING"
QDRANT_READ_CONSISTENCY = "QDRANT_READ_CONSISTENCY"
QUANTIZATION = "IMGSIM_QUANTIZATION"
VECTORS_ON_DISK = "IMGSIM_VECTORS_ON_DISK"
OVERSAMPLING = "IMGSIM_OVERSAMPLING"
HNSW_EF = "IMGSIM_HNSW_EF"
INDEX_THRESHOLD = "IMGSIM_INDEX_THRESHOLD"
ALIAS_TTL = "IMGSIM_ALIAS_TTL"
# Indexing
IGNORE_PREFIXES = "IMGSIM_IGNORE_PREFIXES"
FETCH_CONCURRENCY = "IMGSIM_FETCH_CONCURRENCY"
ISOLATE_AFTER = "IMGSIM_ISOLATE_AFTER"
ISOLATED_TIMEOUT = "IMGSIM_ISOLATED_TIMEOUT"
DEDUPE = "IMGSIM_DEDUPE"
DUPLICATE_THRESHOLD = "IMGSIM_DUPLICATE_THRESHOLD"
# Search API
IMAGES_BUCKET = "IMAGES_BUCKET"
UPLOAD_PREFIX = "IMGSIM_UPLOAD_PREFIX"
URL_TTL = "IMGSIM_URL_TTL"
CORS_ORIGIN = "IMGSIM_CORS_ORIGIN"
MAX_BODY_BYTES = "IMGSIM_MAX_BODY_BYTES"
API_KEY = "IMGSIM_API_KEY"
API_KEY_PARAM = "IMGSIM_API_KEY_PARAM"
API_KEYS = "IMGSIM_API_KEYS"
API_KEYS_PARAM = "IMGSIM_API_KEYS_PARAM"
TENANT_CLAIM = "IMGSIM_TENANT_CLAIM"
MAX_UPLOAD_MB = "IMGSIM_MAX_UPLOAD_MB"
SIMILAR_THRESHOLD = "IMGSIM_SIMILAR_THRESHOLD"
TRASH_DAYS = "IMGSIM_TRASH_DAYS"

QUANTIZATION_CHOICES = ("none", "int8", "binary")
WRITE_ORDERING_CHOICES = ("weak", "medium", "strong")
READ_CONSISTENCY_CHOICES = ("majority", "quorum", "all")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

# Calibrated on the labelled pairs of tests/data/duplicate_labels.json (tests/bench/bench_duplicates.py): the lowest
# threshold at which at most 1 in 30 look-alike pairs passes (docs/duplicates.md has the table).
DEFAULT_DUPLICATE_THRESHOLD = 0.74  # = imgsim.signature.DEFAULT_DUPLICATE_THRESHOLD (tests/unit/test_settings.py)
# Raw cosine of the search vectors above which two images count as "similar": passed by 1 in ~900 random pairs
# of photos of different animals and by every labelled look-alike pair (bench_duplicates.py).
DEFAULT_SIMILAR_THRESHOLD = 0.5
# Lambda accepts at most 6 MiB of invocation payload, and HTTP API delivers binary bodies base64-encoded (4/3
# larger), so about 4.7 MB of raw image fits; keep room for headers and the rest of the event.
DEFAULT_MAX_BODY_BYTES = 4_500_000
DEFAULT_URL_TTL = 900
DEFAULT_UPLOAD_PREFIX = "uploads/"
# How long a deleted image stays restorable (imgsim.services.trash): Immich keeps 30 days, Google Photos 60.
DEFAULT_TRASH_DAYS = 30
MIB = 1024 * 1024
DEFAULT_MAX_IMAGE_BYTES = 25 * MIB
DEFAULT_MAX_UPLOAD_MB = 25  # = DEFAULT_MAX_IMAGE_BYTES in MiB (_max_upload_bytes)

Environ = Mapping[str, str]
N = TypeVar("N", int, float)


# -- readers ------------------------------------------------------------------------------------------------------------


class _Reader:
    """Typed reads of one environment mapping; every failure names the variable and what it accepts."""

    def __init__(self, environ: Environ) -> None:
        self.environ = environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        return None if value is None or value.strip() == "" else value

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def optional(self, name: str) -> str | None:
        return self.raw(name)

    def _number(self, name: str, default: N, parse: Callable[[str], N], kind: str, minimum: N | None) -> N:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            value = parse(raw.strip())
        except ValueError as exc:
            raise ConfigError(f"{name} must be {kind}, got {raw!r}") from exc
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {raw!r}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
        return value

    def integer(self, name: str, default: int, *, minimum: int | None = None) -> int:
        return self._number(name, default, int, "an integer", minimum)

    def number(self, name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
        value = self._number(name, default, float, "a number", minimum)
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be at most {maximum}, got {self.raw(name)!r}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self.raw(name)
        if raw is None:
            return default
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.raw(name)
        if raw is None:
            return default
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ConfigError(f"{name} must be one of {', '.join(_TRUE + _FALSE)}, got {raw!r}")

    def optional_flag(self, name: str) -> bool | None:
        return None if self.raw(name) is None else self.flag(name, False)


# -- the settings ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The engine: model, decoding guard rails, Qdrant and how vectors are stored. Used by every process."""

    # Model
    model_name: str | None = None  # None: the manifest's default
    model_dir: str | None = None  # None: /opt/model (the layer), then <repo>/model
    num_threads: int = 1
    batch_size: int = 16
    # Guard rails
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_pixels: int = 64_000_000
    max_decode_mb: int = 320  # estimated peak memory of one decode (imgsim.decode_cost)
    max_decode_ms: float = 1500.0  # estimated decode time on one core
    # Qdrant
    qdrant_url: str | None = None
    qdrant_api_key: str | None = field(default=None, repr=False)
    qdrant_api_key_param: str | None = None  # an SSM SecureString read when qdrant_api_key is not given
    qdrant_path: str = "./.data/qdrant"
    collection: str = "images"
    qdrant_timeout: float = 5.0
    qdrant_retries: int = 3
    qdrant_retry_budget: float = 3.0  # seconds of retrying per call, Retry-After waits included
    # Storage of the vectors (docs/performance.md "Memory and quantization")
    quantization: str = "int8"  # none | int8 | binary
    vectors_on_disk: bool = True  # float originals on disk when quantized (rescoring reads them)
    oversampling: float = 2.0
    hnsw_ef: int | None = None  # None: the engine's default (ef_construct, 100)
    index_threshold: int = 20_000  # embedded store: unindexed points that start a background HNSW build
    # A Qdrant cluster (imgsim.store.ClusterOptions): None = the server's default
    qdrant_shards: int | None = None
    qdrant_replication_factor: int | None = None
    qdrant_write_consistency_factor: int | None = None
    qdrant_on_disk_payload: bool | None = None
    qdrant_write_ordering: str = "medium"  # weak | medium | strong
    qdrant_read_consistency: str = "majority"  # majority | quorum | all
    # Seconds between re-reads of the collection alias, so warm functions follow a model switch (imgsim.deployment)
    alias_ttl_s: float = 30.0

    @classmethod
    def from_env(cls, environ: Environ | None = None) -> Settings:
        return _engine(_Reader(os.environ if environ is None else environ))


@dataclass(frozen=True)
class IndexSettings:
    """How the indexing pipeline runs (imgsim.pipeline)."""

    ignore_prefixes: tuple[str, ...] = ()  # keys under these prefixes are acknowledged and skipped
    fetch_concurrency: int = 8  # concurrent S3 GETs per batch
    isolate_after: int = 2  # records delivered this often or more decode in a forked child (imgsim.isolation)
    isolated_timeout_s: float = 30.0
    dedupe: bool = True  # the duplicate check at upload (imgsim.dedupe)
    duplicate_threshold: float = DEFAULT_DUPLICATE_THRESHOLD

    @property
    def duplicate_check(self) -> float | None:
        """The threshold the pipeline checks new images against, or None with the check off."""
        return self.duplicate_threshold if self.dedupe else None

    @classmethod
    def from_env(cls, environ: Environ | None = None) -> IndexSettings:
        return _index(_Reader(os.environ if environ is None else environ))


@dataclass(frozen=True)
class ApiSettings:
    """The search API (imgsim.services, functions/search)."""

    images_bucket: str | None = None
    upload_prefix: str = DEFAULT_UPLOAD_PREFIX
    url_ttl: int = DEFAULT_URL_TTL
    cors_origin: str = "*"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    api_key: str | None = field(default=None, repr=False)
    api_key_param: str | None = None
    # The key ring (imgsim.access): IMGSIM_API_KEYS parsed at load, or the SSM parameter read per request (cached 60 s).
    api_keys: tuple[KeyEntry, ...] = field(default=(), repr=False)
    api_keys_param: str | None = None
    # The JWT claim that names a token's tenant (None: tokens carry no tenant).
    tenant_claim: str | None = None
    # The largest upload /uploads allows, which S3 enforces (a presigned POST's content-length-range).
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * MIB
    # Results at or above it are marked "similar": true (tests/bench/bench_duplicates.py calibrates it).
    similar_threshold: float = DEFAULT_SIMILAR_THRESHOLD
    # The duplicate threshold the curation routes group by (the indexer's; with IMGSIM_DEDUPE=off groups still list
    # what was recorded).
    duplicate_threshold: float = DEFAULT_DUPLICATE_THRESHOLD
    # Days a deleted image stays in the trash, restorable (the bucket's lifecycle rule on the trash prefix too).
    trash_days: int = DEFAULT_TRASH_DAYS

    @classmethod
    def from_env(cls, environ: Environ | None = None) -> ApiSettings:
        return _api(_Reader(os.environ if environ is None else environ))


@dataclass(frozen=True)
class AppSettings:
    """Everything one process needs, read once."""

    engine: Settings = field(default_factory=Settings)
    index: IndexSettings = field(default_factory=IndexSettings)
    api: ApiSettings = field(default_factory=ApiSettings)


def _engine(read: _Reader) -> Settings:
    return Settings(
        model_name=read.optional(MODEL),
        model_dir=read.optional(MODEL_DIR),
        num_threads=read.integer(NUM_THREADS, 1, minimum=1),
        batch_size=read.integer(BATCH_SIZE, 16, minimum=1),
        max_image_bytes=read.integer(MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_BYTES, minimum=1),
        max_pixels=read.integer(MAX_PIXELS, 64_000_000, minimum=1),
        max_decode_mb=read.integer(MAX_DECODE_MB, 320, minimum=1),
        max_decode_ms=read.number(MAX_DECODE_MS, 1500.0, minimum=1.0),
        qdrant_url=read.optional(QDRANT_URL),
        qdrant_api_key=read.optional(QDRANT_API_KEY),
        qdrant_api_key_param=read.optional(QDRANT_API_KEY_PARAM),
        qdrant_path=read.text(QDRANT_PATH, "./.data/qdrant"),
        collection=read.text(QDRANT_COLLECTION, "images"),
        qdrant_timeout=read.number(QDRANT_TIMEOUT, 5.0, minimum=0.001),
        qdrant_retries=read.integer(QDRANT_RETRIES, 3, minimum=0),
        qdrant_retry_budget=read.number(QDRANT_RETRY_BUDGET, 3.0, minimum=0),
        quantization=read.choice(QUANTIZATION, "int8", QUANTIZATION_CHOICES),
        vectors_on_disk=read.flag(VECTORS_ON_DISK, True),
        oversampling=read.number(OVERSAMPLING, 2.0, minimum=1.0),
        hnsw_ef=read.integer(HNSW_EF, 0, minimum=0) or None,
        index_threshold=read.integer(INDEX_THRESHOLD, 20_000, minimum=1),
        qdrant_shards=read.integer(QDRANT_SHARDS, 0, minimum=0) or None,
        qdrant_replication_factor=read.integer(QDRANT_REPLICATION_FACTOR, 0, minimum=0) or None,
        qdrant_write_consistency_factor=read.integer(QDRANT_WRITE_CONSISTENCY_FACTOR, 0, minimum=0) or None,
        qdrant_on_disk_payload=read.optional_flag(QDRANT_ON_DISK_PAYLOAD),
        qdrant_write_ordering=read.choice(QDRANT_WRITE_ORDERING, "medium", WRITE_ORDERING_CHOICES),
        qdrant_read_consistency=read.choice(QDRANT_READ_CONSISTENCY, "majority", READ_CONSISTENCY_CHOICES),
        alias_ttl_s=read.number(ALIAS_TTL, 30.0, minimum=0.0),
    )


def _index(read: _Reader) -> IndexSettings:
    prefixes = tuple(p.strip() for p in (read.optional(IGNORE_PREFIXES) or "").split(",") if p.strip())
    return IndexSettings(
        ignore_prefixes=prefixes,
        fetch_concurrency=read.integer(FETCH_CONCURRENCY, 8, minimum=1),
        isolate_after=read.integer(ISOLATE_AFTER, 2, minimum=1),
        isolated_timeout_s=read.number(ISOLATED_TIMEOUT, 30.0, minimum=1.0),
        dedupe=read.flag(DEDUPE, True),
        duplicate_threshold=read.number(DUPLICATE_THRESHOLD, DEFAULT_DUPLICATE_THRESHOLD, minimum=0.0, maximum=1.0),
    )


def _api(read: _Reader) -> ApiSettings:
    environ = read.environ
    return ApiSettings(
        images_bucket=read.optional(IMAGES_BUCKET),
        # An empty prefix is a choice (uploads at the bucket's root), so only an unset variable takes the default.
        upload_prefix=environ.get(UPLOAD_PREFIX, DEFAULT_UPLOAD_PREFIX),
        url_ttl=read.integer(URL_TTL, DEFAULT_URL_TTL, minimum=1),
        cors_origin=read.text(CORS_ORIGIN, "*"),
        max_body_bytes=read.integer(MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES, minimum=1),
        api_key=read.optional(API_KEY),
        api_key_param=read.optional(API_KEY_PARAM),
        api_keys=_key_ring(read),
        api_keys_param=read.optional(API_KEYS_PARAM),
        tenant_claim=read.optional(TENANT_CLAIM),
        max_upload_bytes=_max_upload_bytes(read),
        similar_threshold=read.number(SIMILAR_THRESHOLD, DEFAULT_SIMILAR_THRESHOLD, minimum=0.0, maximum=1.0),
        duplicate_threshold=read.number(DUPLICATE_THRESHOLD, DEFAULT_DUPLICATE_THRESHOLD, minimum=0.0, maximum=1.0),
        trash_days=read.integer(TRASH_DAYS, DEFAULT_TRASH_DAYS, minimum=1),
    )


def _key_ring(read: _Reader) -> tuple[KeyEntry, ...]:
    raw = read.optional(API_KEYS)
    return parse_key_ring(raw, API_KEYS) if raw is not None else ()


def _max_upload_bytes(read: _Reader) -> int:
    """IMGSIM_MAX_UPLOAD_MB, by default the indexer's IMGSIM_MAX_IMAGE_BYTES rounded up to whole MiB: a bigger upload
    would only be refused at indexing (``image_too_large``), after S3 stored it."""
    image_bytes = read.integer(MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_BYTES, minimum=1)
    default_mb = max(1, math.ceil(image_bytes / MIB))
    return read.integer(MAX_UPLOAD_MB, default_mb, minimum=1) * MIB


def load(environ: Environ | None = None) -> AppSettings:
    """Every setting from ``environ`` (default: this process's environment), validated."""
    read = _Reader(os.environ if environ is None else environ)
    return AppSettings(engine=_engine(read), index=_index(read), api=_api(read))


# Every variable this module reads: docs/configuration.md lists exactly these (tests/test_docs.py).
VARIABLES = tuple(sorted(
    value for name, value in dict(globals()).items()
    if name.isupper() and isinstance(value, str) and (value.startswith(("IMGSIM_", "QDRANT_")) or value == IMAGES_BUCKET)
    and not name.startswith("DEFAULT_")
))

__all__ = ["VARIABLES", "ApiSettings", "AppSettings", "IndexSettings", "Settings", "load"]
