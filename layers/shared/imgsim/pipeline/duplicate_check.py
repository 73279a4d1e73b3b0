"""Stage: which images are copies, crops, mirrors or edits of each other (``imgsim.dedupe``).

Two steps around the ordered write. Before it, each embedded image gets its duplicate signature
(``imgsim.signature``), stored in its point (``sig``). After it, each written image looks for its duplicates
among everything stored — the earlier images of its own batch included, and those another invocation wrote a
moment ago (store, then look: of two images written at once, at least the later look sees the other) — and
writes its links onto its own point, a compare-and-set on its ETag. The groups are read from the links
(``imgsim.duplicates``), so nothing else is written: a replaced or deleted image's links lapse by themselves.

The check never holds up indexing: with Qdrant failing the look, the image stays in without links (a warning);
``imgsim backfill --relink`` looks again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import signature
from ..dedupe import SIG_FIELD, DuplicateLinks, Subject
from ..errors import StoreUnavailable
from ..store import StoredPoint, VectorStore
from .embedding import ImageEmbedder
from .events import Item
from .report import Reporter


class DuplicateCheck:
    """The stage, on one store."""

    def __init__(self, store: VectorStore, embedder: ImageEmbedder, threshold: float, reporter: Reporter) -> None:
        self.embedder = embedder
        self.threshold = threshold
        self.reporter = reporter
        self.links = DuplicateLinks(store, threshold)

    def sign(self, good: Sequence[Item]) -> dict[str, dict[str, Any]]:
        """Before the write: each image's signature, as the payload fields its point carries."""
        pixels = [i.image.pixels for i in good if i.image is not None]
        sigs = signature.compute(self.embedder, pixels)
        with_image = [i for i in good if i.image is not None]
        return {item.event.point_id: {SIG_FIELD: signature.encode(sig)}
                for item, sig in zip(with_image, sigs, strict=True)}

    def link(self, written: Sequence[StoredPoint]) -> int:
        """After the write: find and write the written images' links; how many duplicate pairs they found (a pair
        written in one batch finds itself from both sides: counted once)."""
        subjects = []
        for point in written:
            sig = signature.decode(point.payload.get(SIG_FIELD))
            if sig is not None:
                subjects.append(Subject.of(point.id, point.vector, sig, point.payload))
        try:
            found = self.links.link(subjects)
        except StoreUnavailable as exc:
            self.reporter.warning(f"duplicate check skipped for this batch: {exc}")
            return 0
        return len({frozenset((point_id, link.partner)) for point_id, links in found.items() for link in links})


__all__ = ["DuplicateCheck"]
