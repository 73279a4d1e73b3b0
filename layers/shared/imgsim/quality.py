"""Per-image quality facts, measured once at indexing, and the rule that picks the copy to keep.

``measure`` turns the decoded pixels (``imgsim.decode``: upright RGB, long side at most
``REDUCE_TO_LONG_SIDE`` = 448 px) into a small JSON dict stored in the point's payload:

- ``grey``: the picture has (almost) no colour, whatever the file's colour mode: fewer than 1 % of
  the sampled pixels have max(R,G,B) - min(R,G,B) of ``GREY_CHROMA`` (12) or more. Measured on 242
  of the shared photos: a grey copy (Pillow's ``convert("L")``, saved as an RGB JPEG at q90) has
  no such pixel; colour photos have them everywhere except two near-monochrome ones.
- ``detail``: the effective linear resolution as a fraction of the file's own pixel grid (1.0
  native, about 1/8 for an 8x upscale, with or without noise added after upscaling); ``_cutoff``
  says how. None under 64 px (one tile): too small to tell.
- ``upscaled``: the upscaling shows at the decoded size (detail there below ``UPSCALED_BELOW``).
- ``jpeg_quality``: the IJG quality (1-100) whose luminance table is nearest the file's
  (``jpeg_quality_of``), None for other formats.

What it can see: only the decoded pixels. A file above 448 px is reduced before anything
measures it, so detail above 448 px is invisible: a 4000 px photo measures ``detail`` = 448/4000
at most, a lower bound, and so does its 2x upscale (8000 px, 448/8000). Copies whose content is
finer than 448 px therefore tie on effective pixels, and the rule falls back to JPEG quality and
pixel count, as before. The shared photos (120-481 px) and their upscales are inside that range.

Accuracy, on every 60th shared photo (29) upscaled bicubically (JPEG q90; noise: Gaussian sigma 8
after upscaling), effective long side read / the original's, median (max): 2x 1.07 (1.39), 2x +
noise 1.12 (1.97), 4x 1.05 (1.33), 4x + noise 1.07 (1.37), 8x 1.03 (1.34), 8x + noise 1.04 (1.32).
Upscales that stay under 448 px with full-strength noise are read worse (2x + noise of 224 px
photos: median 1.74). Originals: 1,625 of the 1,692 shared photos read 1.0, 34 (2 %) read as upscaled.

Cost: 0.5-1.0 ms per image (best of 200 on a 448x298 image, numpy 1.26, on this 2-core machine
under other load: a third of decoding that 0.8 MP JPEG in the same run), whatever the original's
size, since it only ever sees the decoded <= 448 px pixels: 12 tile FFTs and a colour count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .decode import REDUCE_TO_LONG_SIDE

# --- colour -----------------------------------------------------------------------------------------------
GREY_CHROMA = 12

# --- detail -----------------------------------------------------------------------------------------------
TILE = 64
TILE_GRID = (3, 4)  # rows x columns of tiles spread over the image: a Welch average over 12 windows
# Frequency bins, a third of an octave wide, from 1/32 to 1/2 cycle per pixel (Nyquist). Upscales up to
# about 6x at the decoded size are resolved; larger ones read as about 1/6 there.
_EDGES = 0.5 * 2.0 ** (-np.arange(0.0, 4.0 + 1e-9, 1.0 / 3.0))[::-1]
_LOG_CENTRES = np.log10(np.sqrt(_EDGES[:-1] * _EDGES[1:]))
_BINS = len(_LOG_CENTRES)
FIT_FROM = 4  # the spectrum's slope is fitted on at least the 4 lowest bins before any bin is judged
DEPARTURE = 0.5  # a bin whose signal falls this far (log10, 3.2x) under the fitted power law ends the detail
FLOOR_IS_CONTENT = 0.25  # the floor tile at low frequencies above this share of the mean: no noise floor
CLIPPED_SHARE = 0.02  # tiles with more clipped (<= 3 or >= 252) pixels show less noise: not used for the floor
UPSCALED_BELOW = 0.75  # detail at the decoded size under this: the copy is an upscale (more than 1.33x)


def _bin_matrix() -> NDArray[np.float32]:
    """(rfft2 coefficients, bins): the mean over each bin's coefficients as one matrix product."""
    fy = np.fft.fftfreq(TILE)[:, None]
    fx = np.fft.rfftfreq(TILE)[None, :]
    radius = np.sqrt(fx**2 + fy**2).ravel()
    index = np.digitize(radius, _EDGES) - 1
    index[radius >= 0.5] = _BINS - 1  # the corners beyond Nyquist join the top bin
    matrix = np.zeros((radius.size, _BINS), np.float32)
    inside = index >= 0
    matrix[np.flatnonzero(inside), index[inside]] = 1.0
    matrix /= matrix.sum(axis=0, keepdims=True)
    return matrix


_BIN_MATRIX = _bin_matrix()
_WINDOW = np.outer(np.hanning(TILE), np.hanning(TILE)).astype(np.float32)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _tile_spectra(pixels: NDArray[Any]) -> NDArray[np.float64]:
    """Each tile's radially binned power spectrum, (tiles, bins), tiles with clipped pixels left out."""
    height, width = pixels.shape[:2]
    rows = np.linspace(0, height - TILE, TILE_GRID[0]).round().astype(int)
    cols = np.linspace(0, width - TILE, TILE_GRID[1]).round().astype(int)
    tiles = np.stack([pixels[y:y + TILE, x:x + TILE] for y in rows for x in cols]).astype(np.float32) @ _LUMA
    clipped = ((tiles <= 3) | (tiles >= 252)).mean(axis=(1, 2)) > CLIPPED_SHARE
    if int((~clipped).sum()) >= 4:
        tiles = tiles[~clipped]
    tiles -= tiles.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.rfft2(tiles * _WINDOW)) ** 2
    spectra: NDArray[np.float64] = power.reshape(len(tiles), -1).astype(np.float32) @ _BIN_MATRIX
    return spectra.astype(np.float64)


def _cutoff(spectra: NDArray[np.float64]) -> float:
    """The highest frequency (fraction of Nyquist) up to which the signal follows a natural image's power law.

    Signal = the mean spectrum over the tiles less a noise floor, the second-lowest tile at each frequency:
    noise (white, or shaped by JPEG and resizing) is in every tile alike, detail in some tiles far more than
    others, so noise added after upscaling is subtracted and detail is not. Natural images have a power-law
    spectrum; an upscale's signal drops off it at the frequency the original's pixels could hold. Going up
    from the lowest bins, the power law is fitted on the bins below but one and the first bin that falls
    ``DEPARTURE`` under it marks the cut-off (interpolated in log frequency between it and the bin before).
    When even the second-smoothest tile is busy (``FLOOR_IS_CONTENT``: one texture all over, or a white or black
    background leaving few tiles), no floor is subtracted: that floor would be content."""
    mean = spectra.mean(axis=0)
    floor = np.sort(spectra, axis=0)[1] if len(spectra) > 1 else np.zeros_like(mean)
    with np.errstate(divide="ignore", invalid="ignore"):  # a flat picture: no power at all, no floor
        busy = float(np.median((floor / mean)[:FIT_FROM + 2])) > FLOOR_IS_CONTENT
    if busy:
        floor = np.zeros_like(mean)  # even the smoothest tiles are busy: their spectrum is content, not noise
    signal = np.log10(np.maximum(mean - floor, 1e-9))
    x = _LOG_CENTRES
    # Least-squares lines over the first b bins, for every b at once (running sums).
    n = np.arange(1, _BINS + 1, dtype=np.float64)
    sx, sy = np.cumsum(x), np.cumsum(signal)
    sxx, sxy = np.cumsum(x * x), np.cumsum(x * signal)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)
    intercept = (sy - slope * sx) / n
    for b in range(FIT_FROM + 1, _BINS):
        # The line through bins 0..b-2: the bin just below is left out, so the first bins of a roll-off
        # do not steepen the line that judges the next one.
        fit_slope, fit_intercept = slope[b - 2], intercept[b - 2]
        below_here = fit_intercept + fit_slope * x[b] - signal[b]
        if below_here > DEPARTURE:
            below_before = fit_intercept + fit_slope * x[b - 1] - signal[b - 1]
            share = (DEPARTURE - below_before) / (below_here - below_before) if below_here > below_before else 0.0
            share = min(1.0, max(0.0, share))
            return float(10 ** (x[b - 1] + share * (x[b] - x[b - 1])) / 0.5)
    return 1.0


def _visible_detail(pixels: NDArray[Any]) -> float | None:
    """Detail at the decoded size, 0-1 (None: under one tile, too small to tell)."""
    if pixels.ndim != 3 or min(pixels.shape[:2]) < TILE:
        return None
    return min(1.0, _cutoff(_tile_spectra(pixels)))


def _is_grey(pixels: NDArray[Any]) -> bool:
    """Fewer than 1 % of every third pixel (each way) differ by ``GREY_CHROMA`` or more between channels."""
    sample = pixels[::3, ::3]
    chroma = sample.max(axis=-1) - sample.min(axis=-1)  # uint8: max >= min, no wrap-around
    return bool(np.count_nonzero(chroma >= GREY_CHROMA) < 0.01 * chroma.size)


# --- JPEG quality ---------------------------------------------------------------------------------------
# The IJG (libjpeg) standard luminance table (ITU-T T.81 Annex K), natural order as Pillow gives it.
_IJG_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], np.int64)


def _ijg_tables() -> NDArray[np.float64]:
    """(100, 64): the luminance table libjpeg writes at quality 1..100 (jcparam.c's scaling)."""
    quality = np.arange(1, 101, dtype=np.int64)[:, None]
    scale = np.where(quality < 50, 5000 // quality, 200 - 2 * quality)  # integer arithmetic, as libjpeg's
    tables: NDArray[np.float64] = np.clip((_IJG_LUMINANCE * scale + 50) // 100, 1, 255).astype(np.float64)
    return tables


_IJG_TABLES_LOG = np.log(_ijg_tables())


def jpeg_quality_of(luminance: Sequence[int] | None) -> int | None:
    """The IJG quality whose luminance quantization table is nearest a JPEG's (Pillow's
    ``Image.quantization[0]``, natural order; ``DecodedImage.jpeg_table``), least squares on log steps:
    exact for libjpeg/Pillow files, the equivalent quality for others (cameras, Photoshop), as
    ImageMagick's ``%Q`` estimates it from the same table. None without a 64-entry table."""
    if luminance is None or len(luminance) != 64:
        return None
    table = np.clip(np.asarray(luminance, np.float64), 1.0, None)
    error = ((_IJG_TABLES_LOG - np.log(table)) ** 2).sum(axis=1)
    return int(np.argmin(error)) + 1


# --- the facts --------------------------------------------------------------------------------------------
JPEG_FORMATS = frozenset({"JPEG", "MPO"})


def measure(
    pixels: NDArray[Any], *, width: int, height: int, source_format: str | None, jpeg_quality: int | None,
) -> dict[str, Any]:
    """The quality facts of one decoded image (see the module's docstring), for its payload.

    ``pixels``: the decoded (possibly reduced) upright RGB array; ``width``/``height``: the upright original's
    size, to turn detail at the decoded size into detail on the file's own grid."""
    visible = _visible_detail(pixels)
    decoded_long = max(pixels.shape[:2]) if pixels.ndim >= 2 else 0
    original_long = max(width, height, decoded_long, 1)
    detail = None if visible is None else round(visible * decoded_long / original_long, 4)
    return {
        "grey": _is_grey(pixels) if pixels.ndim == 3 and pixels.size else False,
        "detail": detail,
        "upscaled": visible is not None and visible < UPSCALED_BELOW,
        "jpeg_quality": jpeg_quality if (source_format or "").upper() in JPEG_FORMATS else None,
    }


# --- the copy to keep -------------------------------------------------------------------------------------
QUALITY_FIELD = "quality"
# JPEG quality in coarse steps, so that near-equal encodings tie and pixel count decides between them.
# Recompressed: below 75, heavily below 50. From 75 up a copy is no better for a higher nominal quality (re-saving
# a q75 original at q95 adds nothing to it; web images are typically saved at 75-85, cameras at 85-98): those tie,
# and the earliest indexed is kept.
JPEG_QUALITY_STEPS = (75, 50)


def _quality_step(jpeg_quality: int | None) -> int:
    """2 for q >= 75 or a non-JPEG file (lossless, or a quality no header states), 1 for >= 50, else 0."""
    if jpeg_quality is None:
        return len(JPEG_QUALITY_STEPS)
    return sum(1 for step in JPEG_QUALITY_STEPS if jpeg_quality >= step)


def _pixels_step(effective_pixels: float) -> int:
    """Effective pixels in half-stops (steps of sqrt 2): estimates a few percent apart tie."""
    return math.floor(2.0 * math.log2(max(effective_pixels, 1.0)))


def keep_rank(payload: Mapping[str, Any]) -> tuple[int, int, int, int, int, int, int]:
    """Sort key of a duplicate group's members: the smallest is the copy to keep. Order-independent (nothing
    about when it was indexed); callers break ties with ``indexed_at``, then the point id.

    The rule, in order:
    1. colour before grey;
    2. the most effective pixels, width x height x detail^2 (half-stops), where an upscaled copy counts half:
       an upscale's detail can read up to ~1.4x too high (4x and 8x, with or without noise, on 29 shared
       photos: at most 1.37x), and at equal content the native copy is the better file (smaller, no
       interpolation). End to end, the original ranks before its upscale for 28 of those 29 photos at 8x
       and 4x (with noise or not) and 2x, and 23 of 29 at 2x with noise;
    3. not upscaled before upscaled;
    4. the JPEG quality step: 75 or more (or not a JPEG), 50-74, below 50 (recompressed, heavily);
    5. more pixels.
    A mirrored copy, or a copy re-saved at 75 or more, therefore ties with its original (a re-save at a higher
    nominal quality adds nothing to the picture), and the earliest indexed is kept. Points indexed before
    ``quality`` existed rank by pixels, then the larger file, as colour, non-upscaled and of top quality,
    their effective pixels capped as a measurement would be (detail on at most the decoded 448 px)."""
    width = int(payload.get("width") or 0)
    height = int(payload.get("height") or 0)
    pixels = width * height
    facts = payload.get(QUALITY_FIELD)
    if not isinstance(facts, Mapping):
        cap = min(1.0, REDUCE_TO_LONG_SIDE / max(width, height, 1))
        size = int(payload.get("size") or 0)
        return (0, -_pixels_step(pixels * cap * cap), 0, -_quality_step(None), -pixels, -100, -size)
    detail = facts.get("detail")
    detail = 1.0 if detail is None else float(detail)
    upscaled = bool(facts.get("upscaled"))
    effective = pixels * detail * detail * (0.5 if upscaled else 1.0)
    jpeg_quality = facts.get("jpeg_quality")
    quality = int(jpeg_quality) if jpeg_quality is not None else None
    return (
        1 if facts.get("grey") else 0,
        -_pixels_step(effective),
        1 if upscaled else 0,
        -_quality_step(quality),
        -pixels,
        0,
        0,
    )


__all__ = ["QUALITY_FIELD", "jpeg_quality_of", "keep_rank", "measure"]
