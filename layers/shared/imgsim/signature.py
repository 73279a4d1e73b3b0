"""The duplicate signature of one image, and the pair score of two: is one a copy, crop, mirror or edit of the other?

One cosine threshold on the search vector cannot separate duplicates from look-alikes: on labelled pairs
from the shared photos and transformed copies (resize, JPEG q20, exposure, grey, crops of 64 % and 49 % of the
area, mirror, an overlay band, mirror + crop), raw cosine reaches recall 0.86 when at most one look-alike pair in
30 may pass, and grey copies score 0.3 recall (tests/bench/bench_duplicates.py, README "Duplicates"). The signal
that separates them is a **signature** of embeddings of the *grey* image: the whole image, its mirror, and five
crops of 70 % of the area (four corners and the centre). Grey makes colour edits (grey, exposure, tint) vanish;
the mirror catches flipped copies; the crops catch crops and overlays in both directions.

The pair score is **symmetric** (``score(a, b) == score(b, a)``): the best cosine of whole/mirror vs whole/crops
and crops vs whole/mirror, every term taken both ways. So whether two images are duplicates never depends on
which of them was indexed first (the groups of ``imgsim.duplicates`` are a function of the set of images).

A signature is stored with its image (``encode``: one compact string in the point's payload, ``sig``) and read
back with ``decode``; comparing two is numpy on a few small arrays, no search.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

CROP_AREA = 0.7
N_CROPS = 5
# Calibrated on tests/data/duplicate_labels.json and the transformed copies (bench_duplicates): the lowest
# threshold at which at most 1 in 30 look-alike pairs passes. IMGSIM_DUPLICATE_THRESHOLD overrides it.
DEFAULT_DUPLICATE_THRESHOLD = 0.79
# Duplicate candidates: the nearest images by the search vector, at most CANDIDATES of them with a store score
# (imgsim.scoring: the cosine clipped to [0, 1]) of at least CANDIDATE_MIN_SCORE; the signature decides among them.
CANDIDATES = 16
CANDIDATE_MIN_SCORE = 0.4
_VERSION = "s1:"  # the encoding's version: a signature of another version decodes to None (re-index to renew it)
_ROWS = 2 + N_CROPS  # whole, mirror, crops


class SignatureEmbedder(Protocol):
    """What computing signatures needs of the embedder: its input spec and a batch of prepared tensors."""

    @property
    def spec(self) -> Any: ...

    def embed_tensors(self, tensors: Sequence[NDArray[Any]]) -> NDArray[Any]: ...


@dataclass(frozen=True)
class Signature:
    """Unit vectors of the grey image: whole (dim,), mirror (dim,), crops (N_CROPS, dim)."""

    full: NDArray[Any]
    mirror: NDArray[Any]
    crops: NDArray[Any]


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


def compute(embedder: SignatureEmbedder, pixel_arrays: Sequence[NDArray[Any]]) -> list[Signature]:
    """Signatures of many images (seven embeddings each, one batch)."""
    spec = embedder.spec
    tensors = [t for pixels in pixel_arrays for t in signature_tensors(pixels, spec.input_size, spec.input_range)]
    if not tensors:
        return []
    vectors = np.asarray(embedder.embed_tensors(tensors), dtype=np.float32)
    return [Signature(vectors[i], vectors[i + 1], vectors[i + 2:i + _ROWS]) for i in range(0, len(vectors), _ROWS)]


def encode(sig: Signature) -> str:
    """The payload form: a version tag and the rows as float16, base64."""
    rows = np.vstack([sig.full[None], sig.mirror[None], sig.crops]).astype(np.float16)
    return _VERSION + base64.b64encode(rows.tobytes()).decode("ascii")


def decode(text: object) -> Signature | None:
    """A stored signature, or None when there is none or it is of another version (re-indexing renews it)."""
    if not isinstance(text, str) or not text.startswith(_VERSION):
        return None
    try:
        raw = base64.b64decode(text[len(_VERSION):], validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw or len(raw) % (2 * _ROWS):
        return None
    rows = np.frombuffer(raw, dtype=np.float16).astype(np.float32).reshape(_ROWS, -1)
    return Signature(rows[0], rows[1], rows[2:])


def _wholes(sig: Signature) -> NDArray[Any]:
    return np.vstack([sig.full[None], sig.mirror[None]])


def score(a: Signature, b: Signature) -> float:
    """The pair score in [0, 1]: the best of whole/mirror vs whole/mirror/crops, crops vs whole/mirror (symmetric)."""
    return float(score_many(a, [b])[0])


def score_many(a: Signature, others: Sequence[Signature]) -> NDArray[Any]:
    """``score(a, o)`` for each of ``others`` at once (numpy on stacked arrays: the indexer scores each image
    against all its candidates in one call)."""
    if not others:
        return np.empty(0, dtype=np.float32)
    qa = _wholes(a)  # (2, d)
    wholes = np.stack([_wholes(o) for o in others])  # (k, 2, d)
    crops = np.stack([o.crops for o in others])  # (k, c, d)
    best = np.einsum("qd,kwd->kqw", qa, wholes).max(axis=(1, 2))  # whole/mirror vs whole/mirror
    best = np.maximum(best, np.einsum("qd,kcd->kqc", qa, crops).max(axis=(1, 2)))  # a's wholes vs o's crops
    best = np.maximum(best, np.einsum("cd,kwd->kcw", a.crops, wholes).max(axis=(1, 2)))  # a's crops vs o's wholes
    clipped: NDArray[Any] = np.clip(best, 0.0, 1.0)
    return clipped


__all__ = [
    "CANDIDATES", "CANDIDATE_MIN_SCORE", "CROP_AREA", "DEFAULT_DUPLICATE_THRESHOLD", "Signature", "SignatureEmbedder", "compute", "crop_boxes", "decode",
    "encode", "score", "score_many", "signature_tensors",
]
