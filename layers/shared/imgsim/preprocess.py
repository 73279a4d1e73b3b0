"""Pixels -> model input tensor, exactly as the reference runtime does it.

MediaPipe Tasks' ImageEmbedder (the model's reference runtime) stretches the
whole image to the input size with OpenCV ``warpAffine`` (bilinear, border
replicate) on uint8 pixels. Three details decide whether we agree with it to a
cosine of 0.999+ rather than ~0.997:

* the mapping is corner-aligned: output pixel ``x`` samples source ``x * W / w``
  (no half-pixel offset, unlike ``cv2.resize`` or Pillow);
* OpenCV quantizes the fractional sample position to 1/32 pixel;
* the warped result is rounded back to uint8 before scaling to the input range.

There is no antialiasing: large images are reduced beforehand (``decode.py``).
This is hand-written because neither Pillow nor numpy offers this exact sampler,
and OpenCV is too large a dependency for a Lambda layer just for this.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_FRACTION_STEPS = 32  # OpenCV INTER_TAB_SIZE


@lru_cache(maxsize=256)
def _sample_plan(src_len: int, dst_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = np.arange(dst_len, dtype=np.float64) * (src_len / dst_len)
    lower = np.floor(pos)
    frac = np.round((pos - lower) * _FRACTION_STEPS) / _FRACTION_STEPS
    lower = lower.astype(np.intp)
    upper = np.minimum(lower + 1, src_len - 1)  # border replicate
    lower = np.minimum(lower, src_len - 1)
    return lower, upper, frac.astype(np.float32)


def resize_like_reference(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (height, width, 3), reference-runtime bilinear."""
    src_h, src_w = pixels.shape[:2]
    y0, y1, fy = _sample_plan(src_h, height)
    x0, x1, fx = _sample_plan(src_w, width)
    rows_top = pixels[y0].astype(np.float32)
    rows_bottom = pixels[y1].astype(np.float32)
    fx3 = fx[None, :, None]
    top = rows_top[:, x0] * (1.0 - fx3) + rows_top[:, x1] * fx3
    bottom = rows_bottom[:, x0] * (1.0 - fx3) + rows_bottom[:, x1] * fx3
    fy3 = fy[:, None, None]
    out = top * (1.0 - fy3) + bottom * fy3
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_input_tensor(
    pixels: np.ndarray, input_size: tuple[int, int], input_range: tuple[float, float]
) -> np.ndarray:
    """uint8 RGB pixels -> float32 (h, w, 3) in the model's input range."""
    height, width = input_size
    resized = resize_like_reference(pixels, height, width)
    low, high = input_range
    return resized.astype(np.float32) * np.float32((high - low) / 255.0) + np.float32(low)
