"""What decoding an image will cost, from its header alone: peak memory and time.

Measured on this machine class (2 cores, one decode at a time, Pillow 12, tests/bench and
docs/performance.md "Decoding"): 16 MP and 36 MP files of every format and mode, peak RSS above the
process baseline (VmHWM) and wall time of ``decode_image``. The figures below are those
measurements rounded up by ~15-25 %, so an estimate is an upper bound (re-checked at 12 MP by
tests/bench/bench_formats.py, which raised RGB to 5.4 B/px, palette/grey to 1.9 and BMP to 5 ns/px). Large images are
reduced band by band (``decode._reduce_to_rgb``), so the peak is the decoded image in its
own mode plus small temporaries; WebP is the exception (libwebp decodes into its own
full-size RGBA buffers: ~16 bytes/pixel, and Pillow offers no reduced WebP decode).

JPEG is decoded at 1/2, 1/4 or 1/8 scale (DCT scaling): a baseline file costs little at
any size, a progressive one keeps every coefficient of the full image (~3 bytes/pixel).
Only the first frame of a multi-frame GIF, WebP or TIFF is ever decoded.

A progressive JPEG's time grows with its number of scans: each one is another pass over every
block, and a refinement scan of a flat region is a few bytes, so a 660 KB file of 8000x8000 with
3,000 extra scans took 67 s to decode (300: 7.2 s). Measured: ~0.35 ns per pixel per extra scan
beyond the usual ~10 (rounded up to 0.45), and libjpeg-turbo's own tools cap scans at 500.
"""

from __future__ import annotations

from dataclasses import dataclass

# Peak bytes per pixel of the decoded (post-draft) image, by Pillow mode.
BYTES_PER_PIXEL = {
    "1": 1.9, "L": 1.9, "P": 1.9,
    "I;16": 3.9, "I;16B": 3.9, "I;16L": 3.9, "I;16N": 3.9,
    "RGB": 5.4, "YCbCr": 5.4, "LAB": 5.4, "HSV": 5.4,
    "CMYK": 5.2, "RGBA": 5.8, "RGBa": 5.8, "RGBX": 5.8, "LA": 5.8, "La": 5.8, "PA": 5.8,
    "I": 6.3, "F": 6.3,
}
UNKNOWN_MODE_BYTES = 8.0
WEBP_BYTES_PER_PIXEL = 17.0
# JPEG: per pixel of the full image (coefficients), plus BYTES_PER_PIXEL of the draft size.
JPEG_PROGRESSIVE_BYTES = 3.4
JPEG_BASELINE_BYTES = 0.3

# Nanoseconds per pixel of the full image, by format (8-bit; 16-bit/float and alpha cost more).
NS_PER_PIXEL = {"PNG": 26.0, "GIF": 9.0, "BMP": 5.0, "WEBP": 24.0, "TIFF": 26.0}
PNG_NS_BY_MODE = {"L": 12.0, "P": 12.0, "1": 12.0, "I;16": 23.0, "I;16B": 23.0, "RGBA": 42.0, "LA": 42.0, "PA": 42.0}
JPEG_PROGRESSIVE_NS = 11.0
JPEG_BASELINE_NS = 3.0
# Progressive JPEG scans: what JPEG_PROGRESSIVE_NS covers, the cost of each further one, the hard cap.
JPEG_USUAL_SCANS = 10
JPEG_NS_PER_EXTRA_SCAN = 0.45
MAX_JPEG_SCANS = 500


# HEIF (HEVC, libheif + libde265) and AVIF (AV1, libavif + dav1d) have no reduced decode: the whole image
# is decoded (YUV planes, then RGB(A)), then handed to Pillow. Measured at 12, 24 and 48 MP (tests/bench/
# bench_decode.py): peak 7.3 B/pixel (HEIF RGB), 9.6 (HEIF RGBA), 9.2 (AVIF RGB); time grows with the
# pixels and with the bitstream (HEIF 5 MB at 12 MP: 0.83 s, 9.4 MB: 1.05 s; AVIF 0.14-0.2 s), so the
# estimate has a per-pixel and a per-byte term (fitted, rounded up ~15 %).
HEIF_BYTES_PER_PIXEL = {"RGB": 8.5, "RGBA": 11.0}
AVIF_BYTES_PER_PIXEL = {"RGB": 10.5, "RGBA": 12.5}
HEIF_NS = (63.0, 46.0)  # per pixel, per byte of the file
AVIF_NS = (14.0, 35.0)


@dataclass(frozen=True)
class DecodeCost:
    bytes: int
    ms: float
    scans: int = 0


def jpeg_scans(data: bytes) -> int:
    """Start-of-scan markers in a JPEG: 0xFFDA never occurs inside entropy-coded data (a 0xFF there is
    followed by a stuffed 0x00 or a restart marker), so counting it is exact, in one C-speed pass.
    An embedded EXIF thumbnail adds its own scan: an upper bound, which is what a budget needs."""
    return data.count(b"\xff\xda")


def estimate(fmt: str, mode: str, full_size: tuple[int, int], decoded_size: tuple[int, int],
             *, progressive: bool = False, scans: int = 0, file_bytes: int = 0) -> DecodeCost:
    """``full_size``: the file's pixel size; ``decoded_size``: after JPEG's draft (else the same);
    ``file_bytes``: the file's size (HEIF and AVIF decode time grows with the bitstream)."""
    full = full_size[0] * full_size[1]
    if fmt in ("HEIF", "AVIF"):
        table, (ns_pixel, ns_byte) = (HEIF_BYTES_PER_PIXEL, HEIF_NS) if fmt == "HEIF" else (AVIF_BYTES_PER_PIXEL, AVIF_NS)
        per_pixel = table["RGBA"] if "A" in mode else table["RGB"]
        return DecodeCost(int(full * per_pixel), (full * ns_pixel + file_bytes * ns_byte) / 1e6)
    decoded = decoded_size[0] * decoded_size[1]
    per_pixel = BYTES_PER_PIXEL.get(mode, UNKNOWN_MODE_BYTES)
    if fmt in ("JPEG", "MPO"):
        coefficients = JPEG_PROGRESSIVE_BYTES if progressive else JPEG_BASELINE_BYTES
        ns = JPEG_PROGRESSIVE_NS + JPEG_NS_PER_EXTRA_SCAN * max(0, scans - JPEG_USUAL_SCANS) if progressive \
            else JPEG_BASELINE_NS
        return DecodeCost(int(full * coefficients + decoded * per_pixel), full * ns / 1e6, scans)
    if fmt == "WEBP":
        return DecodeCost(int(full * WEBP_BYTES_PER_PIXEL), full * NS_PER_PIXEL["WEBP"] / 1e6)
    ns = PNG_NS_BY_MODE.get(mode, NS_PER_PIXEL["PNG"]) if fmt == "PNG" else NS_PER_PIXEL.get(fmt, 26.0)
    return DecodeCost(int(full * per_pixel), full * ns / 1e6)
