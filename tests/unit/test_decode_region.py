"""imgsim.decode with a region (search by a box): the region of the upright picture, cut before the reduction, as a
file cropped to it decodes; EXIF orientations, the JPEG draft scale and its budget, wide greyscale."""

from __future__ import annotations

import io

import numpy as np
import pytest
from imgsim.decode import REDUCE_TO_LONG_SIDE, _jpeg_draft_size, decode_image
from PIL import Image, ImageOps

LIMITS = {"max_bytes": 50 * 2**20, "max_pixels": 64_000_000}


def texture(width: int, height: int, seed: int = 0) -> Image.Image:
    """Asymmetric, detailed RGB content: any mirror, turn or shift of a crop shows."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def with_orientation(img: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(img, "PNG", exif=exif.tobytes())


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    # np.array_equal: numpy.testing probes the CPU with a process on first use, which the fast tier forbids.
    assert a.shape == b.shape and np.array_equal(a, b), (a.shape, b.shape)


def pixel_crop(img: Image.Image, region) -> Image.Image:
    x, y, w, h = region
    return img.crop((round(x * img.width), round(y * img.height), round((x + w) * img.width),
                     round((y + h) * img.height)))


# Edges on whole pixels of a 64 x 40 picture either way up (dyadic fractions: exact in binary).
REGIONS = [(0.25, 0.125, 0.5, 0.375), (0.0, 0.0, 0.125, 1.0), (0.75, 0.5, 0.25, 0.5), (0.0, 0.0, 1.0, 1.0)]


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("region", REGIONS)
def test_the_region_is_of_the_upright_picture_for_every_orientation(orientation, region):
    stored = texture(64, 40)
    data = with_orientation(stored, orientation)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    decoded = decode_image(data, region=region, **LIMITS)
    expected = np.asarray(pixel_crop(upright, region))
    assert_same(decoded.pixels, expected)
    assert (decoded.width, decoded.height) == (expected.shape[1], expected.shape[0])


def test_the_whole_picture_as_a_region_is_the_picture():
    for data in (with_orientation(texture(64, 40), 6), encoded(texture(2400, 1600), "JPEG", quality=90)):
        whole = decode_image(data, **LIMITS)
        assert_same(decode_image(data, region=(0.0, 0.0, 1.0, 1.0), **LIMITS).pixels, whole.pixels)


def test_a_region_of_a_large_jpeg_decodes_as_the_file_cropped_to_it():
    """Cut before the reduction: a fifth of a 2400 px photo is 480 px of detail (reduced to 448), where cutting the
    448 px picture would leave 90 px of it."""
    original = texture(2400, 1600, seed=1)
    data = encoded(original, "JPEG", quality=92)
    region = (0.1, 0.3, 0.2, 0.2)
    decoded = decode_image(data, region=region, **LIMITS)
    cropped_file = encoded(pixel_crop(Image.open(io.BytesIO(data)).convert("RGB"), region), "PNG")
    assert_same(decoded.pixels, decode_image(cropped_file, **LIMITS).pixels)
    assert decoded.pixels.shape == (299, REDUCE_TO_LONG_SIDE, 3)
    assert (decoded.width, decoded.height) == (480, 320)
    assert decode_image(data, **LIMITS).pixels.shape == (299, REDUCE_TO_LONG_SIDE, 3)  # the whole picture, as ever


def test_a_region_never_costs_a_refusal_the_whole_picture_would_not_get():
    """Over the decode budget at the region's scale: the region is cut from the whole picture's scale instead."""
    data = encoded(texture(2400, 1600, seed=2), "JPEG", quality=90)
    budget = {**LIMITS, "max_decode_bytes": 10 * 2**20}  # 1/1 scale: ~22 MB estimated; 1/4: ~2.4 MB
    decoded = decode_image(data, region=(0.4, 0.4, 0.2, 0.2), **budget)
    assert decoded.pixels.shape == (80, 120, 3)  # a fifth of the 600 x 400 draft
    assert decode_image(data, region=(0.4, 0.4, 0.2, 0.2), **LIMITS).pixels.shape == (299, 448, 3)  # 480 x 320, reduced


@pytest.mark.parametrize("size, requested", [((2400, 1600), (448, 299)), ((2400, 1600), (2240, 1494)),
                                             ((4000, 3000), (1000, 750)), ((4000, 3000), (999, 1)),
                                             ((1001, 999), (448, 447)), ((640, 480), (640, 480))])
def test_the_draft_size_is_what_pillows_draft_decodes_at(size, requested):
    jpeg = Image.open(io.BytesIO(encoded(Image.new("RGB", size, (90, 120, 200)), "JPEG")))
    jpeg.draft("RGB", requested)
    assert _jpeg_draft_size(size, requested) == jpeg.size


def test_wide_greyscale_regions_keep_the_whole_pictures_scale():
    """Float greyscale in 0..1 is scaled by 255, above 1 taken as levels: a dark region of a bright picture keeps
    the picture's scale (as its pixels in the whole picture), not the one its own range would give."""
    values = np.zeros((40, 64), dtype=np.float32)
    values[:, 32:] = 200.0
    values[:, :32] = np.linspace(0.0, 0.9, 32, dtype=np.float32)
    data = encoded(Image.fromarray(values, "F"), "TIFF")
    whole = decode_image(data, **LIMITS).pixels
    region = decode_image(data, region=(0.0, 0.0, 0.5, 1.0), **LIMITS).pixels
    assert_same(region, whole[:, :32])
    assert region.max() <= 1
