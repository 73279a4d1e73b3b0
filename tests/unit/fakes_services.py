"""Fakes for unit tests of the search API's services (imgsim.services): no model file, no AWS, no process.

``FakeEmbedder`` turns "images" (bytes starting with ``IMG:``, whose bytes are their one row of pixels) into
deterministic unit vectors, and a region of one into that of its pixels; ``FakeObjects`` stands in for S3 and records
what the services asked of it; ``memory_store`` is a real store in memory
(``imgsim.store.server.ServerStore`` on the Qdrant REST stand-in, in process), so filters, paging and the duplicate
records behave as they do deployed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from imgsim.decode import DecodedImage, Region
from imgsim.errors import NotAnImage
from imgsim.ids import point_id_for_object
from imgsim.settings import ApiSettings
from imgsim.store import IdIn, StoredPoint, VectorStore, Where, key_dirs
from numpy.typing import NDArray

DIM = 16
BUCKET = "imgsim-images"
MAGIC = b"IMG:"


def unit(seed: bytes | str, dim: int = DIM) -> NDArray[np.float32]:
    """A deterministic unit vector for ``seed``."""
    raw = seed.encode() if isinstance(seed, str) else seed
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(raw).digest()[:8], "big"))
    vector = rng.standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def image(name: str) -> bytes:
    """The bytes of a fake image (what FakeEmbedder accepts)."""
    return MAGIC + name.encode()


class FakeEmbedder:
    """``imgsim.services.ImageEmbedder``: the vector of an image is ``unit(its bytes)``."""

    model_name = "fake-model"
    max_image_bytes = 10_000

    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim
        self.calls: list[str] = []

    def decode(self, data: bytes, region: Region | None = None) -> DecodedImage:
        if not data.startswith(MAGIC):
            raise NotAnImage("not a fake image")
        self.calls.append("decode" if region is None else f"decode {region}")
        pixels = region_of(pixels_of(data), region)
        return DecodedImage(pixels=pixels, width=pixels.shape[1], height=1, format="JPEG")

    def embed_decoded(self, images: Sequence[DecodedImage]) -> NDArray[Any]:
        self.calls.append("embed")
        return np.stack([unit(image.pixels.tobytes(), self.dim) for image in images])

    def embed(self, data: bytes) -> NDArray[Any]:
        vector: NDArray[Any] = self.embed_decoded([self.decode(data)])[0]
        return vector


def pixels_of(data: bytes) -> NDArray[Any]:
    """A fake image's picture: its bytes as one row of RGB pixels."""
    padded = data + b"\0" * (-len(data) % 3)
    return np.frombuffer(padded, dtype=np.uint8).reshape(1, -1, 3)


def region_of(pixels: NDArray[Any], region: Region | None) -> NDArray[Any]:
    """The columns of the row ``region`` covers (its x and w; a one-pixel row has no height to cut)."""
    if region is None:
        return pixels
    x, _, w, _ = region
    width = pixels.shape[1]
    left = min(width - 1, round(x * width))
    return pixels[:, left:max(left + 1, round((x + w) * width))]


def vector_of(name: str, dim: int = DIM, region: Region | None = None) -> NDArray[Any]:
    """The vector FakeEmbedder gives ``image(name)`` (or a region of it)."""
    embedder = FakeEmbedder(dim)
    return embedder.embed_decoded([embedder.decode(image(name), region)])[0]


class FakeObjects:
    """``imgsim.services.ObjectStorage``: URLs that say what they sign; deletes and copies recorded; ``stored``: the
    objects copies made (what ``exists`` answers for); ``blobs``: objects' bytes (what ``get`` reads, recorded in
    ``read``)."""

    def __init__(self) -> None:
        self.deleted: list[tuple[str, str]] = []
        self.copied: list[tuple[str, str, str]] = []
        self.stored: set[tuple[str, str]] = set()
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.read: list[tuple[str, str, int]] = []

    def get(self, bucket: str, key: str, *, max_bytes: int) -> bytes | None:
        self.read.append((bucket, key, max_bytes))
        data = self.blobs.get((bucket, key))
        return None if data is None else data[: max_bytes + 1]

    def copy(self, bucket: str, source: str, target: str) -> None:
        self.copied.append((bucket, source, target))
        self.stored.add((bucket, target))

    def exists(self, bucket: str, key: str) -> bool:
        return (bucket, key) in self.stored

    def presign_get(self, bucket: str, key: str, *, expires_in: int) -> str:
        return f"https://s3.test/{bucket}/{key}?get&expires={expires_in}"

    def presign_post(self, bucket: str, key: str, *, content_type: str, max_bytes: int,
                     expires_in: int) -> tuple[str, dict[str, str]]:
        return f"https://s3.test/{bucket}", {"key": key, "Content-Type": content_type,
                                             "policy": f"max={max_bytes}&expires={expires_in}"}

    def delete(self, bucket: str, key: str) -> None:
        self.deleted.append((bucket, key))
        self.stored.discard((bucket, key))


def memory_store(dim: int = DIM) -> VectorStore:
    """``ServerStore`` on the Qdrant REST stand-in, in process (tests/store_backends.py): ~10 ms a store. The
    embedded engine in memory (``open_store(Settings(qdrant_path=":memory:"))``) takes ~1.5 s to create a collection
    and close it again, too slow for a test each."""
    from imgsim.store.server import ServerStore
    from store_backends import in_process_server

    return ServerStore(in_process_server(), "images", dim=dim, retries=0, where="Qdrant REST stand-in")


def settings(**changes: Any) -> ApiSettings:
    values: dict[str, Any] = {"images_bucket": BUCKET, "api_key": "test-key"}
    values.update(changes)
    return ApiSettings(**values)


def payload(key: str, *, bucket: str | None = BUCKET, **fields: Any) -> dict[str, Any]:
    """What the indexer stores for an image (imgsim.points), trimmed to what the services read."""
    base: dict[str, Any] = {"source": "s3" if bucket else "file", "key": key, "dirs": key_dirs(key),
                            "width": 640, "height": 480, "content_type": "image/jpeg", "size": 1000,
                            "indexed_at": "2026-11-26T08:00:00Z", "model": FakeEmbedder.model_name}
    if bucket:
        base["bucket"] = bucket
    base.update(fields)
    return base


def link(store: VectorStore, a: str, b: str, score: float = 0.9) -> None:
    """Record that ``a`` found ``b`` as a duplicate (what the indexer writes after a's write, imgsim.dedupe)."""
    record = store.get(a)
    assert record is not None
    partner = store.get(b)
    links = dict(record.payload.get("dup_scores") or {})
    links[b] = score
    etags = dict(record.payload.get("dup_etags") or {})
    etags[b] = partner.payload.get("etag") if partner is not None else None
    store.set_fields(Where(must=(IdIn((a,)),)), {"dup_links": sorted(links), "dup_scores": links, "dup_etags": etags})


def put(store: VectorStore, key: str, vector: NDArray[Any] | None = None, **fields: Any) -> str:
    """Index a fake image under ``key`` (its vector: that of ``image(key)`` unless given); its point id."""
    bucket = fields.pop("bucket", BUCKET)
    point_id = point_id_for_object(bucket or "local", key)
    if vector is None:
        vector = vector_of(key, store.dim)
    store.upsert([StoredPoint(point_id, vector, payload(key, bucket=bucket, **fields))])
    return point_id
