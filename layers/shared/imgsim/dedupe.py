"""Duplicate detection: is a new image a copy, crop, mirror or edit of one already indexed?

One cosine threshold on the search vector cannot separate duplicates from look-alikes: on labelled pairs
from the shared photos (28 real duplicate pairs: copies, crops, mirrors, a poster; 208 look-alike pairs:
other photos of the same kind of animal scoring >= 0.66) and 1,350 transformed copies (resize, JPEG q20,
exposure, grey, crops of 64 % and 49 % of the area, mirror, an overlay band, mirror + crop), raw cosine
reaches recall 0.86 when at most one look-alike pair in 30 may pass, and grey copies score 0.3 recall.
Measured (tests/bench/bench_duplicates.py, README "Duplicates"), the signal that separates them best
within the functions' budget is a **signature** of seven embeddings of the *grey* image: the whole image,
its mirror, and five crops of 70 % of the area (four corners and the centre). Grey makes colour edits
(grey, exposure, tint) vanish; the mirror catches flipped copies; the crops catch crops and overlays in
both directions (a new image that is a crop of a stored one meets one of the stored crops; a new image
that contains a stored one meets it with one of its own crops).

Stored: the whole-image and crop vectors of each indexed image go to the companion collection
``<collection>_dedupe`` (six points per image, ``of`` = the image's point id); the mirror is used only
as a query. The score of a pair is the best cosine of: whole vs whole, mirror vs whole, whole or mirror vs
the other's crops, own crops vs the other's whole.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .store import FieldEquals, StoredPoint, VectorStore, Where

DEDUPE_SUFFIX = "_dedupe"
CROP_AREA = 0.7
CROP_KINDS = ("c0", "c1", "c2", "c3", "c4")
KINDS = ("full", *CROP_KINDS)
OF_FIELD = "of"
KIND_FIELD = "kind"
# Calibrated on the labelled pairs above: the lowest threshold at which at most 1 in 30 look-alike
# pairs passes (README "Duplicates" has the table). IMGSIM_DUPLICATE_THRESHOLD overrides it.
DEFAULT_DUPLICATE_THRESHOLD = 0.79
_NAMESPACE = uuid.UUID("6f2b8f0e-2c55-4a57-9d44-0d6f3b1c9a10")


@dataclass(frozen=True)
class Signature:
    """Unit vectors of the grey image: whole (dim,), mirror (dim,), crops (5, dim)."""

    full: NDArray[Any]
    mirror: NDArray[Any]
    crops: NDArray[Any]


@dataclass(frozen=True)
class Match:
    point_id: str
    score: float  # best cosine of the pair (see module docstring), clipped to [0, 1]


def crop_boxes(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of the five crops: corners and centre, CROP_AREA of the image each."""
    side = CROP_AREA**0.5
    ch, cw = max(1, int(height * side)), max(1, int(width * side))
    tops = (0, 0, height - ch, height - ch, (height - ch) // 2)
    lefts = (0, width - cw, 0, width - cw, (width - cw) // 2)
    return [(top, top + ch, left, left + cw) for top, left in zip(tops, lefts, strict=True)]


def signature_tensors(pixels: NDArray[Any], input_size: tuple[int, int], input_range: tuple[float, float]) -> list[NDArray[Any]]:
    """The seven model inputs of a signature, prepared with Pillow in C: grey ("L"), each region resized
    bilinearly to the input size. Not the reference runtime's preprocessing (the search vectors keep that
    one): a signature is only ever compared with other signatures, and this costs ~0.15 ms an input
    instead of ~0.6 ms (measured per image: 0.96 ms grey + 4.2 ms of resizing -> see README "Duplicates")."""
    from PIL import Image

    grey_image = Image.fromarray(np.ascontiguousarray(pixels)).convert("L")
    height, width = input_size
    low, high = input_range
    scale = np.float32((high - low) / 255.0)
    regions = [grey_image, grey_image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    regions += [grey_image.crop((left, top, right, bottom))
                for top, bottom, left, right in crop_boxes(grey_image.height, grey_image.width)]
    tensors = []
    for region in regions:
        plane = np.asarray(region.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32) * scale
        if low:
            plane += np.float32(low)
        tensors.append(np.repeat(plane[:, :, None], 3, axis=2))
    return tensors


def signatures(embedder: object, pixel_arrays: Sequence[NDArray[Any]]) -> list[Signature]:
    """Signatures of many images (seven embeddings each)."""
    spec = embedder.spec  # type: ignore[attr-defined]
    tensors = [t for pixels in pixel_arrays for t in signature_tensors(pixels, spec.input_size, spec.input_range)]
    if not tensors:
        return []
    vectors = embedder.embed_tensors(tensors)  # type: ignore[attr-defined]
    return [Signature(vectors[i], vectors[i + 1], vectors[i + 2:i + 7]) for i in range(0, len(vectors), 7)]


def one_way(new: Signature, stored_full: NDArray[Any], stored_crops: NDArray[Any]) -> float:
    """The pair score as seen when ``new`` arrives and the other is stored."""
    queries = np.vstack([new.full, new.mirror])
    best = float(np.max(queries @ np.vstack([stored_full[None], stored_crops]).T))
    best = max(best, float(np.max(new.crops @ stored_full)))
    return min(1.0, max(0.0, best))


def one_way_many(new: Signature, others: Sequence[Signature]) -> NDArray[Any]:
    """``one_way(new, o.full, o.crops)`` for each of ``others`` at once (the indexer compares each image
    with the earlier ones of its batch: a loop of these was ~1 ms per image at batches of 100)."""
    if not others:
        return np.empty(0, dtype=np.float32)
    wholes = np.stack([o.full for o in others])  # (k, d)
    crops = np.stack([o.crops for o in others])  # (k, 5, d)
    queries = np.vstack([new.full, new.mirror])  # (2, d)
    best = (queries @ wholes.T).max(axis=0)
    best = np.maximum(best, np.einsum("qd,kcd->kqc", queries, crops).max(axis=(1, 2)))
    best = np.maximum(best, (new.crops @ wholes.T).max(axis=0))
    clipped: NDArray[Any] = np.clip(best, 0.0, 1.0)
    return clipped


def pair_score(a: Signature, b: Signature) -> float:
    """Symmetric: the best of both arrival orders (the offline grouping and the calibration use it)."""
    return max(one_way(a, b.full, b.crops), one_way(b, a.full, a.crops))


def companion_id(point_id: str, kind: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{point_id}/{kind}"))


def companion_ids(point_ids: Iterable[str]) -> list[str]:
    return [companion_id(point_id, kind) for point_id in point_ids for kind in KINDS]


def signature_store(store: VectorStore, dim: int) -> VectorStore:
    """``<collection>_dedupe``. Six vectors per image, stored as the collection's own are (int8 in RAM by default,
    originals on disk): the signatures cost what the collection does per image, times six. A duplicate is a near
    neighbour: a smaller HNSW beam (ef 48) and four candidates per query find it; measured at 600,000 signature
    vectors, warm: ~1.2 ms for the seven queries instead of ~3 ms (tests/bench/dedupe_scale.py)."""
    options = dataclasses.replace(store.options, hnsw_ef=store.options.hnsw_ef or 48)
    return store.companion(DEDUPE_SUFFIX, dim=dim, options=options)


class DuplicateIndex:
    """The stored half of the signatures (``<collection>_dedupe``) and the search for a new image's best match."""

    def __init__(self, store: VectorStore, dim: int, *, candidates: int = 4) -> None:
        self.store = signature_store(store, dim)
        self.candidates = candidates

    def best_match(self, point_id: str, signature: Signature, *, exclude: Iterable[str] = ()) -> Match | None:
        """The stored image scoring highest with this one (never itself nor ``exclude``), or None."""
        excluded = tuple(dict.fromkeys([point_id, *exclude]))
        others = Where(must_not=tuple(FieldEquals(OF_FIELD, other) for other in excluded))
        whole_only = Where(must=(FieldEquals(KIND_FIELD, "full"),), must_not=others.must_not)
        best: dict[str, float] = {}
        searches: list[tuple[NDArray[Any], Where]] = [(signature.full, others), (signature.mirror, others)]
        searches += [(crop, whole_only) for crop in signature.crops]
        found = self.store.search_batch([(vector.tolist(), self.candidates, where) for vector, where in searches])
        for hits in found:
            for hit in hits:
                of = str(hit.payload.get(OF_FIELD))
                best[of] = max(best.get(of, 0.0), hit.score)
        if not best:
            return None
        winner = max(best, key=lambda of: (best[of], of))  # ties: the larger id, so the answer is deterministic
        return Match(winner, best[winner])

    def add(self, items: Sequence[tuple[str, Signature]]) -> None:
        points = []
        for point_id, sig in items:
            points.append(StoredPoint(companion_id(point_id, "full"), sig.full.tolist(),
                                      {OF_FIELD: point_id, KIND_FIELD: "full"}))
            for kind, crop in zip(CROP_KINDS, sig.crops, strict=True):
                points.append(StoredPoint(companion_id(point_id, kind), crop.tolist(),
                                          {OF_FIELD: point_id, KIND_FIELD: kind}))
        if points:
            self.store.upsert(points)

    def remove(self, point_ids: Iterable[str]) -> None:
        ids = companion_ids(point_ids)
        if ids:
            self.store.delete(ids)

    def stored(self, point_id: str) -> tuple[NDArray[Any], NDArray[Any]] | None:
        """(whole, crops) of an indexed image, for re-checking it when its match goes away."""
        records = {r.id: r for r in self.store.retrieve(companion_ids([point_id]), with_vectors=True)}
        vectors = [records.get(companion_id(point_id, kind)) for kind in KINDS]
        if any(r is None or r.vector is None for r in vectors):
            return None
        array = np.array([r.vector for r in vectors if r is not None], dtype=np.float32)
        return array[0], array[1:]


__all__ = [
    "DEDUPE_SUFFIX", "DEFAULT_DUPLICATE_THRESHOLD", "DuplicateIndex", "Match", "Signature", "companion_ids",
    "crop_boxes", "one_way", "pair_score", "signature_tensors", "signatures",
]
