"""imgsim.quality on generated pictures: the facts ``measure`` stores, and the copy ``keep_rank`` suggests.

The pictures are "dead leaves" (overlapping discs whose radii follow r^-3): sharp edges at every scale, the
power-law spectrum of a natural photo, and no file outside the repository. Every derivative goes through the
indexer's own decoder (``decode_image``: reduced to 448 px, as indexing sees it). Real photos: tests/test_keep_rank.py.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from imgsim.decode import DecodedImage, decode_image
from imgsim.points import image_payload
from imgsim.quality import QUALITY_FIELD, jpeg_quality_of, keep_rank, measure
from numpy.typing import NDArray
from PIL import Image, ImageOps


def dead_leaves(height: int, width: int, seed: int, discs: int = 2500) -> Image.Image:
    """Drawn at 3x and reduced (Lanczos), as a camera's photo is sharper than its pixel grid."""
    rng = np.random.default_rng(seed)
    h, w = height * 3, width * 3
    canvas = np.zeros((h, w, 3), np.float32) + rng.uniform(0, 255, 3).astype(np.float32)
    rmin, rmax = 2.0, w / 5
    u = rng.uniform(size=discs)
    radii = 1 / np.sqrt(u / rmax**2 + (1 - u) / rmin**2)  # density ~ r^-3 between rmin and rmax
    ys, xs, colours = rng.uniform(0, h, discs), rng.uniform(0, w, discs), rng.uniform(0, 255, (discs, 3))
    for r, cy, cx, colour in zip(radii, ys, xs, colours):
        y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 1)
        x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 1)
        if y0 < y1 and x0 < x1:
            yy, xx = np.mgrid[y0:y1, x0:x1]
            canvas[y0:y1, x0:x1][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = colour
    return Image.fromarray(canvas.astype(np.uint8)).resize((width, height), Image.Resampling.LANCZOS)


def encoded(img: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def decoded(data: bytes) -> DecodedImage:
    return decode_image(data, max_bytes=1 << 30, max_pixels=1 << 30)


def facts(data: bytes) -> dict[str, Any]:
    image = decoded(data)
    return measure(image.pixels, width=image.width, height=image.height, source_format=image.format,
                   jpeg_quality=jpeg_quality_of(image.jpeg_table))


def payload(data: bytes) -> dict[str, Any]:
    """The payload the indexer would store (``imgsim.points``: where ``quality`` is added)."""
    return image_payload(key="k.jpg", image=decoded(data), size=len(data), model="m")


def upscaled(img: Image.Image, factor: int, noise: float = 0.0, seed: int = 0) -> Image.Image:
    big = img.resize((img.width * factor, img.height * factor), Image.Resampling.BICUBIC)
    if not noise:
        return big
    pixels: NDArray[Any] = np.asarray(big).astype(np.float32)
    pixels += np.random.default_rng(seed).standard_normal(pixels.shape, dtype=np.float32) * np.float32(noise)
    return Image.fromarray(np.clip(pixels.round(), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def pictures() -> list[Image.Image]:
    return [dead_leaves(210, 280, seed) for seed in (0, 1, 2)]


def test_jpeg_quality_is_the_encoders_for_every_quality():
    img = dead_leaves(32, 32, 7, discs=50)
    for quality in range(1, 101):
        table = Image.open(io.BytesIO(encoded(img, quality=quality))).quantization[0]  # type: ignore[attr-defined]
        assert jpeg_quality_of(table) == quality


def test_jpeg_quality_reaches_the_payload_and_only_for_jpeg(pictures):
    img = pictures[0]
    assert payload(encoded(img, quality=37))[QUALITY_FIELD]["jpeg_quality"] == 37
    assert payload(encoded(img, "PNG"))[QUALITY_FIELD]["jpeg_quality"] is None
    assert payload(encoded(img, "WEBP", quality=37))[QUALITY_FIELD]["jpeg_quality"] is None
    assert jpeg_quality_of(None) is None and jpeg_quality_of([1] * 63) is None


def test_a_grey_picture_is_grey_in_any_colour_mode(pictures):
    img = pictures[0]
    grey = img.convert("L")
    sepia = ImageOps.colorize(grey, black=(40, 26, 13), white=(255, 240, 200))
    assert facts(encoded(img, quality=90))["grey"] is False
    assert facts(encoded(grey, quality=90))["grey"] is True  # an L-mode JPEG
    assert facts(encoded(grey.convert("RGB"), quality=90))["grey"] is True  # an RGB file holding a grey picture
    assert facts(encoded(grey.convert("RGB"), "PNG"))["grey"] is True
    assert facts(encoded(sepia, quality=90))["grey"] is False  # toned: a colour edit, not grey


def test_native_pictures_show_full_detail(pictures):
    for img in pictures:
        native = facts(encoded(img, quality=90))
        assert native["upscaled"] is False
        assert native["detail"] is not None and native["detail"] >= 0.85


@pytest.mark.parametrize("noise", [0.0, 8.0])
def test_detail_falls_with_the_upscale_factor_noise_or_not(pictures, noise):
    """An upscale k x reads about 1/k (here 0.8/k-1/k: generated discs have sharper edges than photos), with
    noise added after upscaling as without: noise is no detail."""
    for seed, img in enumerate(pictures):
        native = facts(encoded(img, quality=90))["detail"]
        previous = native
        for factor in (2, 4, 8):
            measured = facts(encoded(upscaled(img, factor, noise, seed), quality=90))
            assert measured["upscaled"] is True, (seed, factor)
            assert 0.6 / factor <= measured["detail"] <= 1.25 / factor, (seed, factor, measured)
            assert measured["detail"] < previous
            previous = measured["detail"]


def test_measure_takes_any_decoded_shape():
    """Pictures under one 64 px tile have no measurable detail (None: ranked as native); odd shapes pass."""
    tiny = measure(np.zeros((10, 10, 3), np.uint8), width=10, height=10, source_format="PNG", jpeg_quality=None)
    assert tiny == {"grey": True, "detail": None, "upscaled": False, "jpeg_quality": None}
    strip = measure(np.full((1, 500, 3), (200, 10, 10), np.uint8), width=500, height=1, source_format="JPEG",
                    jpeg_quality=80)
    assert strip == {"grey": False, "detail": None, "upscaled": False, "jpeg_quality": 80}


def test_the_original_is_kept_over_each_derivative(pictures):
    """Issue 19's derivatives of one picture: upscale 8x + noise, half size at JPEG q20, grey, crop 64 %,
    re-saved at q50, mirror (a tie: the same picture at the same quality; indexed_at decides)."""
    for seed, img in enumerate(pictures):
        original = payload(encoded(img, quality=90))
        w, h = img.size
        derivatives = {
            "upscale 8x + noise": upscaled(img, 8, 8.0, seed),
            "half size": img.resize((w // 2, h // 2), Image.Resampling.LANCZOS),
            "grey": img.convert("L"),
            "crop 64 %": img.crop((w // 10, h // 10, w - w // 10, h - h // 10)),
        }
        qualities = {"half size": 20}
        for name, derivative in derivatives.items():
            copy = payload(encoded(derivative, quality=qualities.get(name, 90)))
            assert keep_rank(original) < keep_rank(copy), (seed, name, original[QUALITY_FIELD], copy[QUALITY_FIELD])
        assert keep_rank(original) < keep_rank(payload(encoded(img, quality=50)))
        assert keep_rank(original) == keep_rank(payload(encoded(ImageOps.mirror(img), quality=90)))


def rank_of(**fields: Any) -> tuple[int, ...]:
    base: dict[str, Any] = {"width": 1000, "height": 750, "size": 100_000, "indexed_at": "2026-01-01T00:00:00Z"}
    quality = {"grey": False, "detail": 1.0, "upscaled": False, "jpeg_quality": 90}
    quality.update(fields.pop("quality", {}))
    return keep_rank({**base, **fields, QUALITY_FIELD: quality})


def test_the_rule_in_order():
    best = rank_of()
    # 1. colour before grey, even against far more effective pixels
    assert rank_of(quality={"grey": True}, width=4000, height=3000) > rank_of(width=500, height=375)
    # 2. effective pixels: a copy with half the detail has a quarter of them
    assert rank_of(quality={"detail": 0.5}) > best
    assert rank_of(width=500, height=375) > best
    # an upscale counts half: 2x upscale read at 0.55 (its content over-read by 10 %) still loses
    assert rank_of(width=2000, height=1500, quality={"detail": 0.55, "upscaled": True}) > best
    # 3. at equal effective pixels, not upscaled first
    upscale = rank_of(quality={"detail": 0.7072, "upscaled": True}, width=2000, height=1500)  # counted half
    assert upscale[1] == best[1] and upscale > best
    # 4. recompressed (below 75, heavily below 50) loses; 75 and 95 tie (a re-save adds nothing); PNG (None) too
    assert rank_of(quality={"jpeg_quality": 40}) > rank_of(quality={"jpeg_quality": 60}) > rank_of(
        quality={"jpeg_quality": 92})
    assert rank_of(quality={"jpeg_quality": 75}) == rank_of(quality={"jpeg_quality": 95})
    assert rank_of(quality={"jpeg_quality": None}) == rank_of(quality={"jpeg_quality": 95})
    # 5. then more pixels (two copies whose detail is only a lower bound: both reduced to 448 px)
    assert rank_of(width=4000, height=3000, quality={"detail": 0.112}) < rank_of(
        width=2000, height=1500, quality={"detail": 0.224})


def test_the_rank_ignores_when_and_where_a_copy_came():
    assert rank_of(indexed_at="2020-01-01T00:00:00Z", key="a") == rank_of(indexed_at="2030-01-01T00:00:00Z", key="b")
    assert rank_of(size=1) == rank_of(size=10**9)  # the file's size is no quality once quality is measured


def test_points_without_quality_rank_by_pixels_then_size():
    def legacy(width: int, height: int, size: int) -> tuple[int, ...]:
        return keep_rank({"width": width, "height": height, "size": size})

    assert legacy(1000, 750, 10) < legacy(900, 750, 10**6)
    assert legacy(1000, 750, 20) < legacy(1000, 750, 10)
    assert legacy(300, 200, 10) > legacy(400, 300, 10)
    assert keep_rank({}) == keep_rank({"width": None, "height": None, "size": None})
