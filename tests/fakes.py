"""Fakes for the fast tier (tests/unit): an embedder without a model, an S3 client without a network, a store in memory.

``FakeEmbedder`` has the surface the pipeline and the duplicate check use (``imgsim.pipeline.ImageEmbedder``):
``dim``, ``model_name``, ``settings``, ``spec.input_size`` / ``spec.input_range``, ``decode``, ``embed_decoded``,
``embed_tensors``, ``embed``. Its vectors come from the pixels — a grey 32x32 thumbnail, flattened to 1024 values,
centred and L2-normalized — so they are deterministic, the same picture scores 1.0 with itself (its mirror with its
mirror), and unrelated pictures score near 0: enough for the duplicate check's logic, with no model file.
Decoding is imgsim's own (``imgsim.decode.decode_image``: Pillow, with the settings' guard rails).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from botocore.exceptions import ClientError
from imgsim.decode import DecodedImage, decode_image
from imgsim.settings import Settings
from PIL import Image

SIDE = 32
DIM = SIDE * SIDE


@dataclass(frozen=True)
class FakeSpec:
    input_size: tuple[int, int] = (SIDE, SIDE)
    input_range: tuple[float, float] = (0.0, 1.0)


def unit(values: np.ndarray) -> np.ndarray:
    flat = values.astype(np.float32).ravel()
    flat = flat - flat.mean()
    norm = float(np.linalg.norm(flat))
    return flat / norm if norm > 1e-12 else np.full_like(flat, 1.0 / np.sqrt(flat.size))


class FakeEmbedder:
    """Deterministic vectors from pixel content; counts what it was asked to embed."""

    def __init__(self, model_name: str = "fake-model", settings: Settings | None = None) -> None:
        self.model_name = model_name
        self.settings = settings or Settings()
        self.spec = FakeSpec()
        self.dim = DIM
        self.embedded = 0  # images embedded for their search vector
        self.tensors = 0  # signature inputs embedded

    def decode(self, data: bytes) -> DecodedImage:
        s = self.settings
        return decode_image(data, max_bytes=s.max_image_bytes, max_pixels=s.max_pixels,
                            max_decode_bytes=s.max_decode_mb * 2**20, max_decode_ms=s.max_decode_ms)

    def embed_pixels(self, pixel_arrays: Sequence[np.ndarray]) -> np.ndarray:
        out = np.empty((len(pixel_arrays), self.dim), dtype=np.float32)
        for i, pixels in enumerate(pixel_arrays):
            grey = Image.fromarray(np.ascontiguousarray(pixels)).convert("L").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
            plane = np.asarray(grey, dtype=np.float32)
            # Mirror-invariant, as MobileNet's search vectors nearly are (a mirrored copy is a near neighbour).
            out[i] = unit(plane + plane[:, ::-1])
        self.embedded += len(pixel_arrays)
        return out

    def embed_decoded(self, images: Sequence[DecodedImage]) -> np.ndarray:
        return self.embed_pixels([image.pixels for image in images])

    def embed_tensors(self, tensors: Sequence[np.ndarray]) -> np.ndarray:
        out = np.empty((len(tensors), self.dim), dtype=np.float32)
        for i, tensor in enumerate(tensors):
            plane = np.asarray(tensor, dtype=np.float32).mean(axis=2)
            if plane.shape != (SIDE, SIDE):
                plane = np.asarray(Image.fromarray(plane).resize((SIDE, SIDE), Image.Resampling.BILINEAR))
            out[i] = unit(plane)
        self.tensors += len(tensors)
        return out

    def embed(self, data: bytes) -> np.ndarray:
        vector: np.ndarray = self.embed_decoded([self.decode(data)])[0]
        return vector


# -- pictures ---------------------------------------------------------------------------------------------------------


def picture(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A smooth random RGB picture (a 6x5 colour grid, upscaled): distinct seeds are unrelated pictures."""
    rng = np.random.default_rng(seed)
    cells = (rng.random((5, 6, 3)) * 255).astype(np.uint8)
    return Image.fromarray(cells).resize(size, Image.Resampling.BICUBIC)


def encode(img: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, fmt, **({"quality": 95} if fmt == "JPEG" else {}) | options)
    return out.getvalue()


# -- S3 ---------------------------------------------------------------------------------------------------------------


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self.closed = False

    def read(self) -> bytes:
        return self._data

    def close(self) -> None:
        self.closed = True


def client_error(code: str, operation: str = "GetObject", status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       operation)


@dataclass
class FakeS3:
    """``get_object`` (with ``Range``) and ``head_object`` over a dict of objects; ``errors`` maps a key to the
    exception its GET raises. ``calls`` records every GET as ``(key, range)``, every HEAD as ``(key, "HEAD")``."""

    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    calls: list[tuple[str, str | None]] = field(default_factory=list)

    def put(self, bucket: str, key: str, data: bytes) -> str:
        self.objects[(bucket, key)] = data
        return self.etag(bucket, key)

    def etag(self, bucket: str, key: str) -> str:
        return hashlib.md5(self.objects[(bucket, key)], usedforsecurity=False).hexdigest()

    def delete(self, bucket: str, key: str) -> None:
        self.objects.pop((bucket, key), None)

    def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        self.calls.append((Key, "HEAD"))
        if (Bucket, Key) not in self.objects:
            raise client_error("404", "HeadObject", status=404)
        return {"ContentLength": len(self.objects[(Bucket, Key)]), "ETag": f'"{self.etag(Bucket, Key)}"'}

    def get_object(self, *, Bucket: str, Key: str, Range: str | None = None) -> dict[str, Any]:
        self.calls.append((Key, Range))
        if Key in self.errors:
            raise self.errors[Key]
        if (Bucket, Key) not in self.objects:
            raise client_error("NoSuchKey", status=404)
        data = self.objects[(Bucket, Key)]
        if Range is not None:
            first, last = (int(n) for n in Range.removeprefix("bytes=").split("-"))
            data = data[first:last + 1]
        return {"Body": _Body(data), "ContentLength": len(data), "ETag": f'"{self.etag(Bucket, Key)}"'}


# -- store ------------------------------------------------------------------------------------------------------------


@contextmanager
def memory_store(dim: int = DIM, collection: str = "images") -> Iterator[Any]:
    """An embedded Qdrant Edge store that lives in a temporary folder (``:memory:``), on tmpfs when the machine has
    one: creating a shard is a few fsyncs, ~0.1 s on tmpfs and up to ~1 s on a busy disk."""
    from imgsim.store.edge import EdgeStore

    saved = tempfile.tempdir
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        tempfile.tempdir = "/dev/shm"
    try:
        store = EdgeStore(":memory:", collection, dim=dim)
    finally:
        tempfile.tempdir = saved
    try:
        yield store
    finally:
        store.close()


# -- report -----------------------------------------------------------------------------------------------------------


@dataclass
class RecordingReporter:
    """An ``imgsim.pipeline.Reporter`` that keeps what it hears."""

    outcomes: list[Any] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def outcome(self, outcome: Any) -> None:
        self.outcomes.append(outcome)

    def warning(self, message: str) -> None:
        self.warnings.append(message)
