"""Pixels -> model input tensor, exactly as the reference runtime does it.

MediaPipe Tasks' ImageEmbedder (the model's reference runtime) stretches the
whole image to the input size with OpenCV ``warpPerspective`` (bilinear, border
replicate) on uint8 pixels. Three details decide whether we agree with it to a
cosine of 0.999+ rather than ~0.997:

* the mapping is corner-aligned: output pixel ``x`` samples source ``x * W / w``
  (no half-pixel offset, unlike ``cv2.resize`` or Pillow);
* OpenCV quantizes the fractional sample position to 1/32 pixel;
* the warped result is rounded (half up) back to uint8 before scaling to the
  input range.

The resized pixels are identical to OpenCV's (tests/test_reference.py checks it).

There is no antialiasing: large images are reduced beforehand (``decode.py``).
This is hand-written because neither Pillow nor numpy offers this exact sampler,
and OpenCV is too large a dependency for a Lambda layer just for this.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

_FRACTION_STEPS = 32  # OpenCV INTER_TAB_SIZE


@lru_cache(maxsize=256)
def _sample_plan(src_len: int, dst_len: int) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """For each output position: lower and upper source index, and the upper's weight in 1/32 steps."""
    pos = np.arange(dst_len, dtype=np.float64) * (src_len / dst_len)
    lower = np.floor(pos)
    weight = np.round((pos - lower) * _FRACTION_STEPS).astype(np.uint16)  # 0..32
    lower = lower.astype(np.intp)
    upper = np.minimum(lower + 1, src_len - 1)  # border replicate
    lower = np.minimum(lower, src_len - 1)
    return lower, upper, weight


@lru_cache(maxsize=256)
def _column_plan(src_w: int, dst_w: int, channels: int) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """The horizontal plan as indices into a row flattened to ``W * channels`` values."""
    x0, x1, wx = _sample_plan(src_w, dst_w)
    channel = np.arange(channels)
    return (
        (x0[:, None] * channels + channel).ravel(),
        (x1[:, None] * channels + channel).ravel(),
        np.repeat(wx, channels).astype(np.uint32),
    )


def _resize_levels(pixels: NDArray[Any], height: int, width: int) -> NDArray[Any]:
    """Reference bilinear sampling -> (height, width, 3) uint32 array of uint8 levels.

    Integer arithmetic with the weights in 1/32 steps, as OpenCV does: rows are
    gathered and blended vertically in uint16 (at most 255 * 32), then columns
    are gathered from the flattened (row, W * 3) array and blended horizontally
    in uint32 (at most 255 * 32 * 32); ``(sum + 512) >> 10`` rounds half up
    exactly like OpenCV's ``(sum * 32 + 2**14) >> 15``, so the result is the
    same pixels bit for bit. Bilinear is separable, so the two passes equal the
    2-D formula; small integer arrays keep numpy's passes cheap (about 5x faster
    than a float version that fancy-indexes (h, w, 3) arrays).
    """
    src_h, src_w, channels = pixels.shape
    y0, y1, wy = _sample_plan(src_h, height)
    c0, c1, wx = _column_plan(src_w, width, channels)
    flat = pixels.reshape(src_h, src_w * channels)
    wy = wy[:, None]
    rows = flat[y0] * (_FRACTION_STEPS - wy)  # uint8 * uint16 -> uint16
    rows += flat[y1] * wy
    out = np.take(rows, c0, axis=1).astype(np.uint32)
    out *= _FRACTION_STEPS - wx
    out += np.take(rows, c1, axis=1) * wx
    out += 1 << 9
    out >>= 10
    reshaped: NDArray[Any] = out.reshape(height, width, channels)
    return reshaped


def resize_like_reference(pixels: NDArray[Any], height: int, width: int) -> NDArray[Any]:
    """uint8 (H, W, 3) -> uint8 (height, width, 3), reference-runtime bilinear."""
    return _resize_levels(np.ascontiguousarray(pixels), height, width).astype(np.uint8)


def to_input_tensor(
    pixels: NDArray[Any], input_size: tuple[int, int], input_range: tuple[float, float]
) -> NDArray[Any]:
    """uint8 RGB pixels -> float32 (h, w, 3) in the model's input range."""
    height, width = input_size
    resized = _resize_levels(np.ascontiguousarray(pixels), height, width).astype(np.float32)
    low, high = input_range
    resized *= np.float32((high - low) / 255.0)
    if low:
        resized += np.float32(low)
    return resized
