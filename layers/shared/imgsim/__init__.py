"""imgsim: image similarity search shared by the Lambda functions, the CLI and the local stack."""

from .decode import DecodedImage, decode_image
from .embedder import Embedder
from .errors import (
    ChecksumMismatch,
    CollectionMismatch,
    ConfigError,
    CorruptImage,
    DecodeTooCostly,
    EmptyImage,
    ImageError,
    ImageTooLarge,
    ImgsimError,
    ModelNotFound,
    NotAnImage,
    StoreError,
    StoreUnavailable,
    TooManyPixels,
)
from .ids import point_id_for_file, point_id_for_object
from .scoring import percent_from_score, score_from_cosine
from .settings import Settings
from .store import Record, SearchHit, StoredPoint, VectorStore, open_store

__all__ = [
    "ChecksumMismatch",
    "CollectionMismatch",
    "ConfigError",
    "CorruptImage",
    "DecodeTooCostly",
    "DecodedImage",
    "Embedder",
    "EmptyImage",
    "ImageError",
    "ImageTooLarge",
    "ImgsimError",
    "ModelNotFound",
    "NotAnImage",
    "Record",
    "SearchHit",
    "Settings",
    "StoreError",
    "StoreUnavailable",
    "StoredPoint",
    "TooManyPixels",
    "VectorStore",
    "decode_image",
    "open_store",
    "percent_from_score",
    "point_id_for_file",
    "point_id_for_object",
    "score_from_cosine",
]
