"""Stage: decoded images to search vectors, and the embedder the pipeline needs.

One ``embed_decoded`` call per batch: the interpreter is serialized by its own lock and invoked image by image
(batch 1 is ~1.37 ms per image, batch 16 ~1.59 ms on this runtime: ``imgsim.embedder``), so the stage is a thin
name for that call; its figure is the batch's ``EmbedMs`` metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from numpy.typing import NDArray

from ..decode import DecodedImage
from ..settings import Settings
from .events import Item


class InputSpec(Protocol):
    @property
    def input_size(self) -> tuple[int, int]: ...

    @property
    def input_range(self) -> tuple[float, float]: ...


class ImageEmbedder(Protocol):
    """What the pipeline and the duplicate check use of ``imgsim.embedder.Embedder`` (tests/fakes.py has a fake)."""

    @property
    def dim(self) -> int: ...

    @property
    def model_name(self) -> str: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def spec(self) -> InputSpec: ...

    def decode(self, data: bytes) -> DecodedImage: ...

    def embed_decoded(self, images: Sequence[DecodedImage]) -> NDArray[Any]: ...

    def embed_tensors(self, tensors: Sequence[NDArray[Any]]) -> NDArray[Any]: ...


class Embed:
    """The stage: one vector per decoded item, in order."""

    def __init__(self, embedder: ImageEmbedder) -> None:
        self.embedder = embedder

    def run(self, items: Sequence[Item]) -> NDArray[Any]:
        images = [item.image for item in items if item.image is not None]
        if len(images) != len(items):
            raise ValueError("the embed stage only takes decoded items")
        return self.embedder.embed_decoded(images)


__all__ = ["Embed", "ImageEmbedder", "InputSpec"]
