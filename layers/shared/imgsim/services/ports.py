"""What the services need from the outside, typed by interface: the embedder, S3 objects, a phase timer.

The vector store is ``imgsim.store.VectorStore`` itself (an interface with two backends). The others are
Protocols, so the real objects (``imgsim.embedder.Embedder``, ``imgsim.objects.S3Objects``, the HTTP side's
``Timer``) and a unit test's fakes fit alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from numpy.typing import NDArray

if TYPE_CHECKING:
    from ..decode import DecodedImage, Region


class ImageEmbedder(Protocol):
    """Image bytes to unit vectors (``imgsim.embedder.Embedder``)."""

    @property
    def dim(self) -> int: ...

    @property
    def model_name(self) -> str: ...

    @property
    def max_image_bytes(self) -> int:
        """The largest file ``decode`` accepts."""
        ...

    def embed(self, data: bytes) -> NDArray[Any]:
        """One image's bytes -> (dim,) float32 of unit length; ``ImageError`` for bad input."""
        ...

    def decode(self, data: bytes, region: Region | None = None) -> DecodedImage:
        """``region``: only that part of the upright picture (fractions: x, y, width, height)."""
        ...

    def embed_decoded(self, images: Sequence[DecodedImage]) -> NDArray[Any]:
        """Decoded images -> (N, dim)."""
        ...


class ObjectStorage(Protocol):
    """The S3 operations the services use (``imgsim.objects.S3Objects``). Failures are
    ``ObjectStorageError`` / ``ObjectStorageUnavailable``."""

    def presign_get(self, bucket: str, key: str, *, expires_in: int) -> str: ...

    def presign_post(self, bucket: str, key: str, *, content_type: str, max_bytes: int,
                     expires_in: int) -> tuple[str, dict[str, str]]:
        """A presigned POST: the URL and the form fields to send before the file. S3 takes only a file of 1 to
        ``max_bytes`` bytes, of exactly ``content_type``, at exactly ``key``."""
        ...

    def delete(self, bucket: str, key: str) -> None: ...

    def copy(self, bucket: str, source: str, target: str) -> None:
        """A server-side copy within the bucket."""
        ...

    def exists(self, bucket: str, key: str) -> bool: ...

    def get(self, bucket: str, key: str, *, max_bytes: int) -> bytes | None:
        """The object's first ``max_bytes`` + 1 bytes at most (all of it, when within the limit); None when no
        object is stored at ``key``."""
        ...


class PhaseTimer(Protocol):
    """Where a service reports how long each phase of a request took (the HTTP side's ``Timer``, which turns it
    into Server-Timing and metrics). ``add`` returns the current ``time.perf_counter()``, the next phase's start."""

    def add(self, phase: str, since: float) -> float: ...

    def total_ms(self) -> float:
        """Milliseconds since the request began."""
        ...
