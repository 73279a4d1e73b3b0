"""The suggested keep on real photos (issue 19, "a better keep"): for shared photos and derivatives made from them,
``imgsim.quality.keep_rank`` of the payload the indexer stores ranks the original first.

Derivatives: an 8x bicubic upscale with Gaussian noise (sigma 8) added after upscaling, half size at JPEG quality 20,
grey, a centre crop of 64 % of the area, and a mirror (a tie: the same picture at the same quality, so the earlier
indexed copy is kept). Every file goes through the indexer's decoder and payload (``imgsim.points``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from imgsim.decode import decode_image
from imgsim.points import image_payload
from imgsim.quality import QUALITY_FIELD, jpeg_quality_of, keep_rank
from PIL import Image, ImageOps

# Every 150th shared photo: a fixed choice over all four animal blocks, not a pick.
STEP = 150
KNOWN_UPSCALE_MISSES = {"photo_01050.jpg"}  # the detail estimate's known weak spot (imgsim.quality)


def payload(data: bytes) -> dict[str, Any]:
    image = decode_image(data, max_bytes=1 << 30, max_pixels=1 << 30)
    return image_payload(key="photo.jpg", image=image, size=len(data), model="m")


def jpeg(img: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def derivatives(img: Image.Image, quality: int, seed: int) -> dict[str, bytes]:
    w, h = img.size
    big = np.asarray(img.resize((w * 8, h * 8), Image.Resampling.BICUBIC)).astype(np.float32)
    big += np.random.default_rng(seed).standard_normal(big.shape, dtype=np.float32) * np.float32(8.0)
    noisy = Image.fromarray(np.clip(big.round(), 0, 255).astype(np.uint8))
    side = 0.8  # 64 % of the area
    cw, ch = round(w * side), round(h * side)
    crop = img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    return {
        "upscale 8x + noise": jpeg(noisy, 90),
        "half size at q20": jpeg(img.resize((w // 2, h // 2), Image.Resampling.LANCZOS), 20),
        "grey": jpeg(img.convert("L"), quality),
        "crop 64 %": jpeg(crop, quality),
    }


@pytest.fixture(scope="module")
def originals(photos: list[Path]) -> list[Path]:
    return photos[::STEP]


def test_the_original_ranks_before_each_derivative(originals):
    """Every photo's original beats its half-size, grey and cropped copies. The 8x noisy upscale is judged by the
    detail estimate, which misreads some soft photos (steep spectra): measured on every 60th shared photo, the
    original beats its 8x upscale in 28 of 29 (4x: 28/29, 2x: 28/29, 2x + noise: 23/29). Among these photos the
    one it misreads is photo_01050 (a soft picture): named here, so a new miss fails and so does a fix (then
    remove it from KNOWN_UPSCALE_MISSES and say so in imgsim.quality)."""
    misses: dict[str, list[tuple[str, Any, Any]]] = {}
    for seed, path in enumerate(originals):
        data = path.read_bytes()
        original = payload(data)
        quality = jpeg_quality_of(decode_image(data, max_bytes=1 << 30, max_pixels=1 << 30).jpeg_table) or 90
        img = Image.open(io.BytesIO(data)).convert("RGB")
        for name, copy in derivatives(img, quality, seed).items():
            derived = payload(copy)
            if not keep_rank(original) < keep_rank(derived):
                misses.setdefault(name, []).append((path.name, original[QUALITY_FIELD], derived[QUALITY_FIELD]))
    assert len(originals) >= 10
    upscale_misses = misses.pop("upscale 8x + noise", [])
    assert not misses, misses
    assert {name for name, _, _ in upscale_misses} == KNOWN_UPSCALE_MISSES, upscale_misses


def test_a_mirror_ties_with_its_original(originals):
    """The original file against its mirror saved at the original's quality: same size, quality and detail."""
    ties = []
    for path in originals:
        data = path.read_bytes()
        quality = jpeg_quality_of(decode_image(data, max_bytes=1 << 30, max_pixels=1 << 30).jpeg_table) or 90
        img = Image.open(io.BytesIO(data)).convert("RGB")
        original, mirror = payload(data), payload(jpeg(ImageOps.mirror(img), quality))
        ties.append(keep_rank(original) == keep_rank(mirror))
    assert all(ties), ties
