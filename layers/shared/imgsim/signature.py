"""The duplicate signature of one image, and the pair score of two: is one a copy, crop, mirror or edit of the other?

One cosine threshold on the search vector cannot separate duplicates from look-alikes: on labelled pairs from the
shared photos and transformed copies (resize, JPEG q20, exposure, grey, crops of 64 % and 49 % of the area, mirror,
an overlay band, mirror + crop), raw cosine reaches recall 0.86 when at most one look-alike pair in 30 may pass
(tests/bench/bench_duplicates.py). Yet it fails on two kinds only: mirror, resize, JPEG, exposure, crops of 64 % and
mirror + crop pass at 0.97-1.00 and overlays at 0.81 (better than any grey signal), but grey copies at 0.35 and crops
of 49 % at 0.70. Those two are what a *grey* embedding catches.

So the pair score is two detectors, either of which may find a pair:

* the **colour cosine** of the two images' search vectors, which indexing computes anyway and the candidate search
  returns as each hit's score (``cosine`` below: nothing of it is stored here);
* the **grey signature**: the grey image embedded at 96x96, whole and its centre crop of half the area (two model
  runs at 96x96, ~0.3 ms each, where one 224x224 embedding takes ~1.15 ms), each vector projected to 128 values
  and quantized to int8. Grey makes colour edits vanish; the centre crop meets a cropped copy's whole in either
  direction.

``score = max(cosine, 1 - GREY_SCALE * (1 - grey))``: the grey similarity on the colour cosine's scale (an identical
grey image scores 1; at the default threshold the grey signature needs 0.90). GREY_SCALE splits the false-pair
budget: the thresholds at which each detector alone lets at most 1 look-alike pair in 60 through are 0.750 for the
colour cosine and 0.89-0.90 for the grey similarity (a scale of 2.3-2.5, by the projection's seed), so together they
stay within 1 in 30; scales of 2.3 to 3.0 all give recall 0.948-0.954 (the bench prints them). The threshold is then
the lowest at which at most 1 in 30 pass (0.739; look-alikes are dense there: at 0.75, 5 pass and recall is 0.945).
Measured (tests/bench/bench_signature.py: 1,378 duplicate pairs, 208 look-alikes, at most 6 may pass; times measured
alternately with one search embedding on a shared machine):

| signature | recall | false pairs | time per image (x one search embedding) | stored per image |
| --- | --- | --- | --- | --- |
| old (s1): 7 grey embeddings at 224 (whole, mirror, 5 crops of 70 %), float16 | 0.933 | 6 | x5.4-9.0 | 19,119 B |
| colour cosine alone (the search vector) | 0.861 | 6 | 0 | 0 |
| this: colour cosine + grey 96x96 whole and centre crop, 128 x int8 | 0.954 | 6 | x0.37-0.57 | 347 B |

By kind at the default threshold: grey, mirror, resize, JPEG q20, crops of 64 %, mirror + crop 1.00, exposure 0.99,
overlays 0.83, crops of 49 % 0.82, the labelled pairs 0.68; the grey signature alone finds 101 of the 150 grey copies
and 20 of the crops of 49 %. More regions buy a little for more time and bytes (three crops of half the area: 0.962,
x0.86-0.92, 687 B), fewer values lose a little (64: 0.943), a larger input does not help (112: 0.946), the grey
signature alone is weak (0.79): the colour cosine does most of the work. The mirror needs no row of its own (a
mirrored copy's colour cosine is 0.85 or more; a mirror row costs recall: 0.940). Measured offline, not kept in the
bench: the old seven regions at 112 with the colour cosine (~0.96 for x1.3-1.6), and regions pooled from the 7x7 map
of one grey 224 run (0.88 alone, ~0.94 with the colour cosine; LiteRT exposes the map only in a debugging mode).

The pair score is **symmetric** (``score(a, b, c) == score(b, a, c)``, exactly: the grey dot products are exact
integer sums of the stored int8 values), so whether two images are duplicates never depends on which of them was
indexed first, and a signature read back from the payload (``decode(encode(s))``) scores exactly as computed.

Candidates: the duplicate check compares an image with the CANDIDATES nearest images by its search vector whose raw
cosine is at least CANDIDATE_MIN_SCORE. Among the shared photos and the copies (3,042 images) that finds the
partner of 99.85 % of the pairs whichever image arrives second, and of 99.9 % of the pairs the score finds (the
misses: one labelled pair that is no duplicate at all, colour cosine -0.09; a crop of 49 % at rank 26; a grey copy at
rank 108). Grey copies are the weak point: their colour cosine is 0.30-0.6, so in a large collection more images rank
above them (bench_signature prints the figures).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

SIDE = 96  # the model's input side for the signature's regions (imgsim.embedder runs the model at this size too)
CROP_AREA = 0.5  # the centre crop's share of the image's area
DIM = 128  # values per stored vector (a fixed random projection of the model's output)
ROWS = 2  # whole, centre crop
# The grey similarity on the colour cosine's scale: 1 - GREY_SCALE * (1 - grey) (module docstring; bench_signature
# prints the calibration and other scales).
GREY_SCALE = 2.5
# The lowest threshold at which at most 1 in 30 look-alike pairs passes (tests/bench/bench_signature.py prints the
# calibration). IMGSIM_DUPLICATE_THRESHOLD overrides it.
DEFAULT_DUPLICATE_THRESHOLD = 0.74
# The duplicate check's candidates: the CANDIDATES nearest images by the search vector whose raw cosine (in
# [-1, 1]) is at least CANDIDATE_MIN_SCORE. The store's ``search(min_score=...)`` takes scores in [0, 1]
# (``imgsim.scoring.score_from_cosine``: max(0, cosine)) and hands the value to Qdrant as its raw-cosine
# threshold: for a positive value the two scales agree, so pass CANDIDATE_MIN_SCORE as it is.
CANDIDATES = 16
CANDIDATE_MIN_SCORE = 0.25
_VERSION = "s2:"  # the encoding's version: a signature of another version decodes to None (re-index to renew it)
_ENCODED_LENGTH = len(_VERSION) + 4 * ((ROWS * DIM + 2) // 3)
_CROSS = np.array([[True, True], [True, False]])  # rows compared: whole-whole, whole-crop, crop-whole (not crop-crop)


class SignatureEmbedder(Protocol):
    """What computing signatures needs of the embedder: its input range and a batch of prepared tensors of any size
    (``imgsim.embedder.Embedder.embed_tensors`` runs the model at SIDE x SIDE)."""

    @property
    def spec(self) -> Any: ...

    def embed_tensors(self, tensors: Sequence[NDArray[Any]]) -> NDArray[Any]: ...


@dataclass(frozen=True, eq=False)
class Signature:
    """The stored values: (ROWS, DIM) int8, rows whole and centre crop of the grey image (``encode``/``decode``)."""

    codes: NDArray[np.int8]


@lru_cache(maxsize=4)
def projection(dim: int) -> NDArray[np.float32]:
    """The fixed (dim, DIM) random +-1 projection, from SHAKE-256 (the same bits on every machine and numpy version).
    A random projection keeps cosines without knowing the data (no basis fitted on photos of four animals); on the
    labelled pairs 128 values separate as well as the 1,024 (0.951 against 0.948 in float16, each with the split
    budget's scale), 64 lose a little (0.943)."""
    bits = np.unpackbits(np.frombuffer(hashlib.shake_256(b"imgsim signature s2").digest(dim * DIM // 8), dtype=np.uint8))
    matrix: NDArray[np.float32] = bits.reshape(dim, DIM).astype(np.float32) * 2 - 1
    return matrix


def regions(pixels: NDArray[Any]) -> list[NDArray[np.uint8]]:
    """The signature's grey regions, SIDE x SIDE uint8: the whole image (stretched, as the search vector's input is)
    and its centre crop of CROP_AREA. Pillow in C: ~0.1 ms for both from a 448-pixel image."""
    from PIL import Image

    grey = Image.fromarray(np.ascontiguousarray(pixels)).convert("L")
    whole = grey.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    side = round(SIDE / CROP_AREA**0.5)
    margin = (side - SIDE) // 2
    crop = grey.resize((side, side), Image.Resampling.BILINEAR).crop((margin, margin, margin + SIDE, margin + SIDE))
    return [np.asarray(whole), np.asarray(crop)]


def quantize(vectors: NDArray[Any]) -> NDArray[np.int8]:
    """Rows -> int8 with a scale of their own (the scale is not kept: only directions matter)."""
    peak = np.maximum(np.abs(vectors).max(axis=-1, keepdims=True), np.float32(1e-12))
    codes: NDArray[np.int8] = np.round(vectors / peak * 127).astype(np.int8)
    return codes


def compute(embedder: SignatureEmbedder, pixel_arrays: Sequence[NDArray[Any]]) -> list[Signature]:
    """Signatures of many images (two SIDE x SIDE embeddings each, one call)."""
    low, high = embedder.spec.input_range
    scale = np.float32((high - low) / 255.0)
    tensors = []
    for pixels in pixel_arrays:
        for plane in regions(pixels):
            tensor = plane.astype(np.float32) * scale
            if low:
                tensor += np.float32(low)
            tensors.append(np.repeat(tensor[:, :, None], 3, axis=2))
    if not tensors:
        return []
    vectors = np.asarray(embedder.embed_tensors(tensors), dtype=np.float32)
    codes = quantize(vectors @ projection(vectors.shape[1]))
    return [Signature(codes[i:i + ROWS]) for i in range(0, len(codes), ROWS)]


def encode(sig: Signature) -> str:
    """The payload form: a version tag and the int8 values, base64: 347 characters, ~6 % of what a point costs on
    disk (its 1,024 float32, their int8 copy, graph links and payload: ~5.5 KB); in RAM nothing while payloads are
    kept on disk, ~23 % of the ~1.5 KB a point keeps in RAM where they are not (QDRANT_ON_DISK_PAYLOAD)."""
    return _VERSION + base64.b64encode(np.ascontiguousarray(sig.codes, dtype=np.int8).tobytes()).decode("ascii")


def decode(text: object) -> Signature | None:
    """A stored signature, or None when there is none, it is damaged, or it is of another version (re-indexing
    renews it)."""
    if not isinstance(text, str) or not text.startswith(_VERSION):
        return None
    try:
        raw = base64.b64decode(text[len(_VERSION):], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != ROWS * DIM:
        return None
    codes = np.frombuffer(raw, dtype=np.int8).reshape(ROWS, DIM).copy()
    if not codes.any(axis=1).all():  # a row of zeros has no direction: not a signature compute() makes
        return None
    return Signature(codes)


def decode_many(texts: Sequence[object]) -> list[Signature | None]:
    """``decode`` of each, the checks on one stacked array (the duplicate check decodes its ~16 candidates per image
    at once: ~4 us each instead of ~15)."""
    raws: list[bytes | None] = []
    for text in texts:
        raw = None
        if isinstance(text, str) and text.startswith(_VERSION) and len(text) == _ENCODED_LENGTH:
            try:
                raw = base64.b64decode(text[len(_VERSION):], validate=True)
            except (binascii.Error, ValueError):
                raw = None
        raws.append(raw if raw is not None and len(raw) == ROWS * DIM else None)
    good = [raw for raw in raws if raw is not None]
    if not good:
        return [None] * len(raws)
    codes = np.frombuffer(b"".join(good), dtype=np.int8).reshape(len(good), ROWS, DIM)
    usable = codes.any(axis=2).all(axis=1)
    out: list[Signature | None] = []
    n = 0
    for raw in raws:
        if raw is None:
            out.append(None)
            continue
        out.append(Signature(codes[n]) if usable[n] else None)
        n += 1
    return out


def score(a: Signature, b: Signature, cosine: float) -> float:
    """The pair score in [0, 1], symmetric: the colour ``cosine`` of the two images' search vectors (the candidate
    search's hit score for them) or their grey similarity on its scale, whichever is higher (module docstring)."""
    return float(score_many(a, [b], [cosine])[0])


def score_many(a: Signature, others: Sequence[Signature], cosines: Sequence[float]) -> NDArray[np.float64]:
    """``score(a, o, c)`` for each of ``others`` and their ``cosines`` at once (the indexer scores each image
    against its candidates in one call: ~0.05 ms for 16, ~0.1 ms more to decode them)."""
    if len(others) != len(cosines):
        raise ValueError(f"{len(others)} signatures but {len(cosines)} cosines")
    if not others:
        return np.empty(0, dtype=np.float64)
    # float64 holds every sum of int8 products exactly (|sum| < 2**21), in any order: the dot products are exact
    # integers, so the score is the same whichever signature comes first, on every machine.
    own = a.codes.astype(np.float64)  # (ROWS, DIM)
    stacked = np.stack([o.codes for o in others]).astype(np.float64)  # (k, ROWS, DIM)
    dots = own @ stacked.transpose(0, 2, 1)  # (k, ROWS of a, ROWS of o)
    norms = np.sqrt(np.einsum("krd,krd->kr", stacked, stacked))
    similarity = dots / (np.sqrt(np.einsum("rd,rd->r", own, own))[None, :, None] * norms[:, None, :])
    grey = np.where(_CROSS[None], similarity, -1.0).max(axis=(1, 2))
    best = np.maximum(np.asarray(cosines, dtype=np.float64), 1.0 - GREY_SCALE * (1.0 - grey))
    clipped: NDArray[np.float64] = np.clip(best, 0.0, 1.0)
    return clipped


__all__ = [
    "CANDIDATES", "CANDIDATE_MIN_SCORE", "CROP_AREA", "DEFAULT_DUPLICATE_THRESHOLD", "DIM", "GREY_SCALE", "ROWS", "SIDE",
    "Signature", "SignatureEmbedder", "compute", "decode", "decode_many", "encode", "projection", "quantize", "regions", "score",
    "score_many",
]
