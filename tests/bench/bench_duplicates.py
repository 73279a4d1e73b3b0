#!/usr/bin/env python3
"""Duplicates vs look-alikes: precision and recall of each signal on labelled pairs; the calibrated threshold.

Pairs: the classes of tests/data/duplicate_labels.json (the shared photos, labelled by eye; its "about" gives
the definitions), plus transformed copies of 150 other photos (resize 1/2, JPEG q20, exposure +40 %, grey,
random crops of 64 % and 49 % of the area, mirror, an overlay band with text and a logo, mirror + crop +
contrast), each a duplicate pair with its original.

- Duplicates (the same capture: the labelled groups and the transformed copies) are the only pairs recall counts.
- Look-alikes (different photos) are the false-pair class: the threshold of a signal is the lowest at which at
  most one look-alike pair in 30 passes.
- Shoot frames (another moment of one shoot) and composites (a picture pasted together from parts of others)
  are neither: each table says how many of them the threshold would group, so a threshold that merges frames
  of one shoot shows here without moving the calibration.

Goal (issue 10): recall >= 0.9 with at most one false pair per 30 look-alike pairs. For each signal, that
threshold, its recall and what it groups; then recall per kind for imgsim.signature at the calibrated threshold
and at imgsim's default; then the signature's cost per image (seven embeddings) against the one embedding
indexing already does, measured in this run.
"""

from __future__ import annotations

import io
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

REPO_ROOT = Path(__file__).resolve().parents[2]
PHOTOS = REPO_ROOT.parent / "shared" / "datasets" / "photos"
LABELS = REPO_ROOT / "tests" / "data" / "duplicate_labels.json"

from imgsim import signature
from imgsim.decode import decode_image
from imgsim.embedder import Embedder

MAX_FALSE_RATE = 1 / 30


def decode(data: bytes) -> np.ndarray:
    return decode_image(data, max_bytes=10**9, max_pixels=10**9).pixels


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def transforms(img: Image.Image, rng: random.Random) -> dict[str, bytes]:
    w, h = img.size
    out = {"resize": jpeg(img.resize((max(1, w // 2), max(1, h // 2)))), "jpeg q20": jpeg(img, 20),
           "exposure": jpeg(ImageEnhance.Brightness(img).enhance(1.4)), "grey": jpeg(img.convert("L")),
           "mirror": jpeg(ImageOps.mirror(img))}
    for name, frac in (("crop 64%", 0.8), ("crop 49%", 0.7)):
        cw, ch = int(w * frac), int(h * frac)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        out[name] = jpeg(img.crop((x, y, x + cw, y + ch)))
    overlay = img.copy()
    draw = ImageDraw.Draw(overlay)
    draw.rectangle((0, int(h * 0.8), w, h), fill=(0, 0, 0))
    draw.text((5, int(h * 0.85)), "SALE 50% imgsim", fill=(255, 255, 255))
    draw.rectangle((int(w * 0.7), 0, w, int(h * 0.15)), fill=(255, 0, 0))
    out["overlay"] = jpeg(overlay)
    mirrored = ImageOps.mirror(img).crop((int(w * 0.1), int(h * 0.1), int(w * 0.95), int(h * 0.95)))
    out["mirror+crop"] = jpeg(ImageEnhance.Contrast(mirrored).enhance(1.2))
    return out


class Features:
    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.cache: dict[str, tuple[np.ndarray, np.ndarray, signature.Signature]] = {}

    def of(self, name: str, data: bytes) -> tuple[np.ndarray, np.ndarray, signature.Signature]:
        if name not in self.cache:
            pixels = decode(data)
            color, mirror = self.embedder.embed_pixels([pixels, np.ascontiguousarray(pixels[:, ::-1])])
            self.cache[name] = (color, mirror, signature.compute(self.embedder, [pixels])[0])
        return self.cache[name]


SIGNATURE = "grey signature (imgsim)"


def pairs_of(groups: list[list[str]]) -> list[tuple[str, str]]:
    return [(a, b) for group in groups for i, a in enumerate(group) for b in group[i + 1:]]


def signals(a: tuple, b: tuple) -> dict[str, float]:
    raw = float(a[0] @ b[0])
    return {"raw cosine": raw, "raw, mirror-aware": max(raw, float(a[0] @ b[1]), float(a[1] @ b[0])),
            SIGNATURE: signature.score(a[2], b[2], raw)}


def calibrate(pos: list[float], neg: list[float]) -> tuple[float, float, int]:
    """Lowest threshold t (score >= t is a duplicate) with at most MAX_FALSE_RATE of ``neg`` at or above t."""
    allowed = int(len(neg) * MAX_FALSE_RATE)
    ranked = sorted(neg, reverse=True)
    threshold = ranked[allowed] + 1e-6 if allowed < len(ranked) else 0.0
    recall = sum(s >= threshold for s in pos) / len(pos)
    return threshold, recall, sum(s >= threshold for s in neg)


def main() -> int:
    labels = json.loads(LABELS.read_text())
    embedder = Embedder()
    features = Features(embedder)

    def photo(name: str) -> tuple:
        return features.of(name, (PHOTOS / name).read_bytes())

    def scored(pairs: list[tuple[str, str]] | list[list[str]]) -> list[dict[str, float]]:
        return [signals(photo(a), photo(b)) for a, b in pairs]

    # (kind, scores): "real duplicate" or a transformation; look-alikes, shoot frames and composites apart.
    pos: list[tuple[str, dict[str, float]]] = [("real duplicate", s) for s in scored(pairs_of(labels["duplicate_groups"]))]
    neg = scored(labels["lookalike_pairs"])
    apart = {"shoot frames": scored(labels["shoot_frames"]), "composites": scored(labels["composite_pairs"])}
    grouped = {name for group in labels["duplicate_groups"] for name in group}
    rng = random.Random(1)
    originals = rng.sample(sorted(p.name for p in PHOTOS.glob("*.jpg") if p.name not in grouped), 150)
    for name in originals:
        img = Image.open(PHOTOS / name).convert("RGB")
        for kind, data in transforms(img, rng).items():
            pos.append((kind, signals(photo(name), features.of(f"{name}:{kind}", data))))

    real = sum(k == "real duplicate" for k, _ in pos)
    print(f"labelled pairs: {len(pos)} duplicates ({real} real, the rest transformed copies), {len(neg)} look-alikes; "
          f"apart: {len(apart['shoot frames'])} shoot-frame pairs, {len(apart['composites'])} composite pairs "
          f"(neither counted); goal: recall >= 0.9 with <= 1 false pair per 30 look-alikes\n")
    print("| signal | threshold | recall | recall, real pairs | false pairs / look-alikes | precision "
          "| shoot frames grouped | composites grouped |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    chosen = 0.0
    for signal in neg[0]:
        threshold, recall, false = calibrate([s[signal] for _, s in pos], [s[signal] for s in neg])
        tp = recall * len(pos)
        real_recall = sum(s[signal] >= threshold for k, s in pos if k == "real duplicate") / real
        frames, composites = (sum(s[signal] >= threshold for s in apart[c]) for c in ("shoot frames", "composites"))
        print(f"| {signal} | {threshold:.3f} | {recall:.3f} | {real_recall:.2f} | {false} / {len(neg)} "
              f"| {tp / (tp + false):.3f} | {frames} / {len(apart['shoot frames'])} "
              f"| {composites} / {len(apart['composites'])} |")
        if signal == SIGNATURE:
            chosen = threshold
    default = signature.DEFAULT_DUPLICATE_THRESHOLD
    print(f"\nimgsim.signature: calibrated threshold {chosen:.3f} against the default {default} "
          f"({chosen - default:+.3f}); recall per kind at each:")
    per_kind: dict[str, list[float]] = defaultdict(list)
    for kind, scores in pos:
        per_kind[kind].append(scores[SIGNATURE])
    print(f"  {'kind':<16} {'calibrated':>10} {'default':>8}")
    for kind, values in sorted(per_kind.items()):
        v = np.array(values)
        print(f"  {kind:<16} {np.mean(v >= chosen):>10.2f} {np.mean(v >= default):>8.2f}  ({len(v)} pairs)")
    at: dict[str, tuple[float, int]] = {}  # recall, false pairs
    for name, threshold in (("calibrated", chosen), ("default", default)):
        recall = sum(s[SIGNATURE] >= threshold for _, s in pos) / len(pos)
        false = sum(s[SIGNATURE] >= threshold for s in neg)
        frames, composites = (sum(s[SIGNATURE] >= threshold for s in apart[c]) for c in ("shoot frames", "composites"))
        at[name] = recall, false
        print(f"  all at {name} {threshold:.3f}: recall {recall:.3f}; look-alikes passing {false} of {len(neg)} "
              f"(1 in {len(neg) / max(false, 1):.0f}); shoot frames grouped {frames} of {len(apart['shoot frames'])}, "
              f"composites {composites} of {len(apart['composites'])}")

    # "Similar": the raw cosine of the search vectors, on pairs of the shared photos (blocks of 423: cats,
    # dogs, monkeys, squirrels): how many pairs of different animals, of the same animal, of the labelled
    # look-alikes and of the duplicates pass each threshold.
    from imgsim.settings import DEFAULT_SIMILAR_THRESHOLD

    names = sorted(p.name for p in PHOTOS.glob("*.jpg"))
    vectors = embedder.embed_pixels([decode((PHOTOS / name).read_bytes()) for name in names])
    kind = np.minimum(np.arange(len(names)) // 423, 3)
    rng_pairs = np.random.default_rng(0)
    a, b = rng_pairs.integers(0, len(names), 40000), rng_pairs.integers(0, len(names), 40000)
    keep = a != b
    cosines = np.einsum("ij,ij->i", vectors[a[keep]], vectors[b[keep]])
    same = kind[a[keep]] == kind[b[keep]]
    look = [s["raw cosine"] for s in neg]
    dups = [s["raw cosine"] for _, s in pos]
    print("\n| similar threshold (raw cosine) | different animals passing | same animal | look-alikes | duplicates |")
    print("| --- | --- | --- | --- | --- |")
    for t in (0.4, 0.45, DEFAULT_SIMILAR_THRESHOLD, 0.55, 0.6):
        print(f"| {t}{' (default)' if t == DEFAULT_SIMILAR_THRESHOLD else ''} | {np.mean(cosines[~same] >= t):.4f} | "
              f"{np.mean(cosines[same] >= t):.3f} | {np.mean(np.array(look) >= t):.2f} | {np.mean(np.array(dups) >= t):.2f} |")

    pixels = [decode((PHOTOS / name).read_bytes()) for name in originals[:50]]
    began = time.perf_counter()
    embedder.embed_pixels(pixels)
    one = (time.perf_counter() - began) * 1000 / len(pixels)
    began = time.perf_counter()
    signature.compute(embedder, pixels)
    sig = (time.perf_counter() - began) * 1000 / len(pixels)
    print(f"\ncost per image: the indexing embedding {one:.2f} ms; the signature {sig:.2f} ms (x{sig / one:.1f})")
    # The verdict is on imgsim's default: the threshold the indexer uses.
    recall, false = at["default"]
    return 0 if recall >= 0.9 and false <= int(len(neg) * MAX_FALSE_RATE) else 1


if __name__ == "__main__":
    sys.exit(main())
