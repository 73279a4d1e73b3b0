"""Bytes -> RGB pixels, with the guard rails every uploaded file goes through.

Large photos are reduced while decoding: a 12 MP JPEG decoded in full costs far
more than the model itself, so JPEGs are decoded at 1/2, 1/4 or 1/8 scale (DCT
scaling, Pillow's ``draft``) and every image whose long side exceeds
``REDUCE_TO_LONG_SIDE`` is then area-reduced (box + antialiased bilinear) to that
size. Doing the reduction with an antialiasing filter is also what makes the
embedding resolution-invariant: the same photo at 4000 px and at 1000 px lands
on (nearly) the same 448 px image, where plain bilinear sampling of the full
image would alias the sensor noise differently at each size.

Images at or below that size are left untouched, so the final resize matches the
reference runtime exactly (see ``preprocess.py``).
"""

from __future__ import annotations

import io
import math
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from struct import (
    error as struct_error,  # Pillow leaks struct.error on some corrupt files
)
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from . import decode_cost
from .errors import (
    CorruptImage,
    DecodeTooCostly,
    EmptyImage,
    ImageTooLarge,
    NotAnImage,
    TooManyPixels,
)

# Pillow format names we accept. MPO is what many cameras write for JPEG. HEIF (iPhone photos: HEIC) is
# decoded by pi-heif (libheif + libde265, decoding only: 3.5 MB in the layer; pillow-heif's encoders would
# add 29 MB), AVIF by Pillow's own plugin (libavif, in Pillow's wheels since 11.3).
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "TIFF", "BMP", "HEIF", "AVIF"})

# Twice the model's 224 px input: large enough that the final (reference) bilinear
# resize sees what it would see on an ordinary web photo.
REDUCE_TO_LONG_SIDE = 448

# Transparent pixels are composited onto white, as an image viewer shows them.
ALPHA_BACKGROUND = (255, 255, 255)


# A region of the upright picture (EXIF orientation applied, as a viewer shows it): x, y (its top left corner), width
# and height, each a fraction of the picture's width or height (``imgsim.services.search.Box`` checks the bounds).
Region = tuple[float, float, float, float]


@dataclass(frozen=True)
class DecodedImage:
    pixels: NDArray[Any]  # uint8, (height, width, 3), RGB, upright, possibly reduced
    width: int  # of the upright original (of the region, when one was decoded), before any reduction
    height: int
    format: str  # Pillow's format name: JPEG, PNG, ...
    jpeg_table: tuple[int, ...] | None = None  # JPEG/MPO: the luminance quantization table (imgsim.quality)

    @property
    def content_type(self) -> str:
        return FORMAT_CONTENT_TYPES.get(self.format, "application/octet-stream")


FORMAT_CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
    "HEIF": "image/heic",  # what phones write; image/heif is accepted on upload too
    "AVIF": "image/avif",
}
# Content types an upload may declare beyond the canonical ones above.
EXTRA_CONTENT_TYPES = frozenset({"image/heif", "image/heic-sequence", "image/heif-sequence", "image/avif-sequence"})

# ISO base media file brands (the ftyp box): HEVC-coded HEIF, and AV1-coded (AVIF).
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_GENERIC_HEIF_BRANDS = frozenset({b"mif1", b"msf1", b"miaf"})


def _isobmff_format(data: bytes) -> str | None:
    """HEIF or AVIF from the ftyp box's brands (major + compatible), None for anything else."""
    if data[4:8] != b"ftyp" or len(data) < 12:
        return None
    size = int.from_bytes(data[0:4], "big")
    brands = {data[8:12], *(data[i:i + 4] for i in range(16, min(max(size, 16), len(data), 256) - 3, 4))}
    if brands & _HEIF_BRANDS:
        return "HEIF"
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & _GENERIC_HEIF_BRANDS:
        return "HEIF"
    return None


_heif_lock = threading.Lock()
_heif_registered = False


def _register_heif() -> None:
    """Load the HEIF decoder on the first HEIF file only (libheif + libde265: kept out of every cold
    start that never sees one). Thumbnails, depth and auxiliary images are never decoded."""
    global _heif_registered
    with _heif_lock:
        if _heif_registered:
            return
        try:
            from pi_heif import register_heif_opener
        except ImportError:  # developer machines may have the full pillow-heif instead
            from pillow_heif import register_heif_opener
        register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
        _heif_registered = True


def _open(data: bytes) -> Image.Image:
    """Pillow's open, told the format when the container says HEIF or AVIF: both are ISO media files,
    and each must reach its own decoder (the HEIF one would claim an AVIF file it cannot decode)."""
    container = _isobmff_format(data)
    if container == "HEIF":
        _register_heif()
    return Image.open(io.BytesIO(data), formats=[container] if container else None)


# Leading bytes of the supported formats. BMP's two-byte "BM" is left out: too
# weak a signature to call a short text file a damaged bitmap.
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _sniff_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    container = _isobmff_format(data)
    if container:
        return container
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    return None


def _reduced_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
BAND_ROWS = 256  # rows converted at a time: temporaries stay a few MB at any width


def _row_bands(img: Image.Image, rows: int) -> Iterator[tuple[int, Image.Image]]:
    width, height = img.size
    for top in range(0, height, rows):
        yield top, img.crop((0, top, width, min(height, top + rows)))


def wide_gray_scale(img: Image.Image) -> float:
    """The factor that maps a 16-bit, 32-bit or float greyscale image onto 0..255 (one pass over
    row bands: no full-size copy). Pillow's own convert("L") clips at 255 instead of scaling."""
    if img.mode == "F":
        peak = max((float(np.nanmax(np.asarray(band))) for _, band in _row_bands(img, BAND_ROWS)), default=0.0)
        return 255.0 if peak <= 1.0 else 1.0
    if img.mode == "I":
        peak = max((int(np.asarray(band).max()) for _, band in _row_bands(img, BAND_ROWS)), default=0)
        return 255.0 / 65535.0 if peak > 255 else 1.0
    return 255.0 / 65535.0


def _wide_gray_to_l(img: Image.Image, scale: float | None = None) -> Image.Image:
    """Wide greyscale to 8-bit, band by band (float32 temporaries of BAND_ROWS rows at most)."""
    scale = wide_gray_scale(img) if scale is None else scale
    width, height = img.size
    out = np.empty((height, width), dtype=np.uint8)
    for top, band in _row_bands(img, BAND_ROWS):
        scaled = np.nan_to_num(np.asarray(band).astype(np.float32) * np.float32(scale), nan=0.0)
        out[top:top + band.size[1]] = np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "L")


def _to_rgb(img: Image.Image, wide_scale: float | None = None) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in WIDE_GRAY_MODES:
        return _wide_gray_to_l(img, wide_scale).convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    ) or (img.mode in ("L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


# EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose).
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def reduce_factor(width: int, height: int) -> int:
    """The integer box-reduction a large image gets before anything else: the long side stays at
    least twice REDUCE_TO_LONG_SIDE (what Pillow's resize with reducing_gap=2 does itself)."""
    return max(1, int(max(width, height) / (REDUCE_TO_LONG_SIDE * 2.0)))


def _reduce_to_rgb(img: Image.Image, factor: int, wide_scale: float | None = None) -> Image.Image:
    """Convert to RGB and box-reduce by ``factor``, band by band: the only full-size buffer is the
    decoded image itself (docs/performance.md "Decoding": bytes per pixel before and after). ``wide_scale``: wide
    greyscale's scale when already known (a region: the whole picture's, not the region's own)."""
    width, height = img.size
    rows = max(factor, BAND_ROWS // factor * factor)
    scale = wide_scale if wide_scale is not None or img.mode not in WIDE_GRAY_MODES else wide_gray_scale(img)
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    for top, band in _row_bands(img, rows):
        out.paste(_to_rgb(band, scale).reduce(factor), (0, top // factor))
    return out


# -- a region of the picture (search by a box) ------------------------------------------------------------------------
# The region is cut from the pixels as decoded, before the reduction to REDUCE_TO_LONG_SIDE: the model sees the region
# at the resolution a file cropped to it would give, not a 448 px picture's few pixels of it (a tenth of a 4000 px
# photo's width is 400 px of detail, 45 px after the reduction). JPEGs are DCT-decoded at a finer scale for it, when the
# decode budget allows (else at the whole picture's scale); other formats decode every pixel anyway. Measured by
# tests/bench/bench_region.py: a box around a crop of a quarter of a photo's area pasted into a 1,200 px scene finds
# the photo first for 75 % of crops (as the crop file itself: 77 %), 52 % when cut after the reduction; on a 12 MP
# JPEG a box of 10 % of the area costs ~38 ms to decode and embed against ~30 ms for the whole, one of 1 % ~71 ms.


def _stored_region(region: Region, orientation: int) -> Region:
    """The region of the upright picture as a region of the stored pixels, before the EXIF turn (orientations 2-8
    mirror and/or turn the stored pixels; tests/unit/test_decode_region.py checks each against Pillow's transposes)."""
    x, y, w, h = region
    return {
        2: (1 - x - w, y, w, h),
        3: (1 - x - w, 1 - y - h, w, h),
        4: (x, 1 - y - h, w, h),
        5: (y, x, h, w),
        6: (y, 1 - x - w, h, w),
        7: (1 - y - h, 1 - x - w, h, w),
        8: (1 - y - h, x, h, w),
    }.get(orientation, region)


def _pixel_box(region: Region, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The region in pixels of an image of ``size``: (left, top, right, bottom), at least one pixel each way."""
    x, y, w, h = region
    width, height = size
    left = min(width - 1, max(0, math.floor(x * width + 0.5)))
    top = min(height - 1, max(0, math.floor(y * height + 0.5)))
    right = min(width, max(left + 1, math.floor((x + w) * width + 0.5)))
    bottom = min(height, max(top + 1, math.floor((y + h) * height + 0.5)))
    return left, top, right, bottom


def _jpeg_draft_size(full_size: tuple[int, int], requested: tuple[int, int]) -> tuple[int, int]:
    """The size Pillow's JPEG draft decodes at for a requested size: the coarsest of the 1/8, 1/4, 1/2 and 1/1 DCT
    scales still at least that large (as JpegImageFile.draft picks it)."""
    width, height = full_size
    ratio = min(width // max(1, requested[0]), height // max(1, requested[1]))
    scale = next(s for s in (8, 4, 2, 1) if ratio >= s)
    return -(-width // scale), -(-height // scale)


def _jpeg_request(img: Image.Image, fmt: str, full_size: tuple[int, int], region: Region | None, data: bytes,
                  max_bytes: int, max_ms: float) -> tuple[int, int]:
    """The size to ask JPEG's draft for: the whole picture's long side at REDUCE_TO_LONG_SIDE; with a region (of the
    stored pixels), large enough that the region's long side is (as far as the file has the pixels), unless that
    decode would be over the budget where the whole picture's is not."""
    width, height = full_size
    whole = _reduced_size(width, height, REDUCE_TO_LONG_SIDE)
    if region is None:
        return whole
    _, _, w, h = region
    scale = min(1.0, REDUCE_TO_LONG_SIDE / max(w * width, h * height, 1.0))
    wanted = (max(whole[0], math.ceil(width * scale)), max(whole[1], math.ceil(height * scale)))
    cost = _estimate(img, fmt, full_size, data, decoded_size=_jpeg_draft_size(full_size, wanted))
    return wanted if cost.bytes <= max_bytes and cost.ms <= max_ms else whole


# Defaults of IMGSIM_MAX_DECODE_MB / IMGSIM_MAX_DECODE_MS: every accepted image decodes within
# ~384 MB above the process baseline and, with the ~2 ms embedding, within 2 s on one core.
DEFAULT_MAX_DECODE_BYTES = 320 * 1024 * 1024
DEFAULT_MAX_DECODE_MS = 1500.0


def _estimate(img: Image.Image, fmt: str, full_size: tuple[int, int], data: bytes,
              decoded_size: tuple[int, int] | None = None) -> decode_cost.DecodeCost:
    """``decoded_size``: the size JPEG's draft would decode at (default: the image's size now)."""
    progressive = bool(img.info.get("progressive") or img.info.get("progression"))
    scans = decode_cost.jpeg_scans(data) if progressive and fmt in ("JPEG", "MPO") else 0
    return decode_cost.estimate(fmt, img.mode, full_size, decoded_size or img.size, progressive=progressive,
                                scans=scans, file_bytes=len(data))


def _check_cost(img: Image.Image, fmt: str, full_size: tuple[int, int], max_bytes: int, max_ms: float,
                data: bytes) -> None:
    cost = _estimate(img, fmt, full_size, data)
    width, height = full_size
    if cost.scans > decode_cost.MAX_JPEG_SCANS:
        raise DecodeTooCostly(
            f"this {width}x{height} progressive JPEG has {cost.scans} scans, more than the limit of "
            f"{decode_cost.MAX_JPEG_SCANS} (each scan is another pass over the whole image); send a baseline JPEG"
        )
    if cost.bytes > max_bytes or cost.ms > max_ms:
        scans = f", {cost.scans} scans" if cost.scans else ""
        raise DecodeTooCostly(
            f"decoding this {width}x{height} {fmt} ({img.mode}{scans}) would take about {cost.bytes / 2**20:.0f} MB "
            f"and {cost.ms:.0f} ms; the limits are {max_bytes / 2**20:.0f} MB and {max_ms:.0f} ms "
            "(IMGSIM_MAX_DECODE_MB, IMGSIM_MAX_DECODE_MS); send a smaller image"
        )


def _read_header(data: bytes) -> tuple[Image.Image, str, tuple[int, int]] | None:
    """Open ``data`` (possibly only a file's first bytes) for its header: the image (JPEG already
    set to its DCT-scaled size), format and full size; None when the header is not all there."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = _open(data)
            fmt = img.format or "unknown"
            width, height = img.size
            if fmt in ("JPEG", "MPO") and max(width, height) > REDUCE_TO_LONG_SIDE:
                img.draft("RGB", _reduced_size(width, height, REDUCE_TO_LONG_SIDE))
            return img, fmt, (width, height)
    except Exception:  # noqa: BLE001 - a partial or odd header: nothing to judge, the full decode decides
        return None


def probe_cost(data: bytes) -> decode_cost.DecodeCost | None:
    """The estimated cost of decoding ``data`` from its header (None: no readable header)."""
    header = _read_header(data)
    if header is None:
        return None
    img, fmt, full_size = header
    return _estimate(img, fmt, full_size, data)


def check_header(data: bytes, *, max_pixels: int, max_decode_bytes: int, max_decode_ms: float) -> None:
    """Refuse from the first bytes of a file alone, when they already show the decode is over a
    limit (``TooManyPixels`` / ``DecodeTooCostly``); silent when they show nothing conclusive."""
    header = _read_header(data)
    if header is None:
        return
    img, fmt, (width, height) = header
    if width * height > max_pixels:
        raise TooManyPixels(f"image is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}")
    _check_cost(img, fmt, (width, height), max_decode_bytes, max_decode_ms, data)


def decode_image(
    data: bytes, *, max_bytes: int, max_pixels: int,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES, max_decode_ms: float = DEFAULT_MAX_DECODE_MS,
    region: Region | None = None,
) -> DecodedImage:
    """Decode ``data`` to upright RGB pixels or raise one ``ImageError`` subclass.

    Before decoding, the cost is estimated from the header (``decode_cost``) and an image
    over either budget is refused with ``DecodeTooCostly`` naming the figures. ``region``: only
    that part of the picture (fractions of the upright picture, already checked to lie within it),
    as a file cropped to it would decode; the guard rails are the whole file's."""
    if not data:
        raise EmptyImage("empty file: 0 bytes")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"image is {len(data)} bytes, more than the limit of {max_bytes} bytes")
    fmt = "image"
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is checked below; Pillow's bomb warning is noise here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Damaged EXIF in an otherwise readable file: the image still decodes, or
            # fails below with CorruptImage; the warning would only be log noise.
            warnings.filterwarnings("ignore", "Corrupt EXIF data", UserWarning)
            # Likewise one warning per bogus EXIF/TIFF tag (an EXIF bomb: thousands per file).
            warnings.filterwarnings("ignore", category=UserWarning, module="PIL.TiffImagePlugin")
            img: Image.Image = _open(data)
            fmt = img.format or "unknown"
            if fmt not in SUPPORTED_FORMATS:
                raise NotAnImage(f"unsupported image format {fmt}; supported: {', '.join(sorted(SUPPORTED_FORMATS))}")
            width, height = img.size
            # Before anything else touches the image: PNG's getexif() decodes the whole
            # image when the EXIF chunk comes after the pixels, bomb included.
            if width * height > max_pixels:
                raise TooManyPixels(f"image is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}")
            # The budget, before anything decodes pixels (PNG's getexif() below may decode the
            # whole image). JPEG is checked once DCT scaling has set its decoded size (its EXIF
            # sits in the header, so getexif() decodes nothing).
            is_jpeg = fmt in ("JPEG", "MPO")
            luminance = (getattr(img, "quantization", None) or {}).get(0) if is_jpeg else None
            if not is_jpeg:
                _check_cost(img, fmt, (width, height), max_decode_bytes, max_decode_ms, data)
            # EXIF orientations 5-8 rotate by 90 degrees: the upright picture is height x width.
            orientation = img.getexif().get(0x0112, 1)
            upright_w, upright_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
            stored = None
            if region is not None:
                stored = _stored_region(region, orientation)
                upright_w, upright_h = max(1, round(region[2] * upright_w)), max(1, round(region[3] * upright_h))
            if max(width, height) > REDUCE_TO_LONG_SIDE and is_jpeg:
                # DCT scaling: decode at the smallest 1/2^k scale still >= the reduction target.
                img.draft("RGB", _jpeg_request(img, fmt, (width, height), stored, data, max_decode_bytes,
                                               max_decode_ms))
            if is_jpeg:
                _check_cost(img, fmt, (width, height), max_decode_bytes, max_decode_ms, data)
            img.load()
            wide_scale = None
            if stored is not None:
                # Wide greyscale is scaled by the whole picture's range, not the region's own.
                wide_scale = wide_gray_scale(img) if img.mode in WIDE_GRAY_MODES else None
                img = img.crop(_pixel_box(stored, img.size))
            factor = reduce_factor(*img.size)
            if factor > 1:
                # Large: reduce first, so conversion, alpha compositing and the upright turn
                # work on the small image, never on a second full-size copy.
                img = _reduce_to_rgb(img, factor, wide_scale)
                if orientation in _ORIENTATION_TRANSPOSE:
                    img = img.transpose(_ORIENTATION_TRANSPOSE[orientation])
            elif stored is not None:
                # A region: turned upright by the orientation read above (the crop is no longer the file).
                if orientation in _ORIENTATION_TRANSPOSE:
                    img = img.transpose(_ORIENTATION_TRANSPOSE[orientation])
                img = _to_rgb(img, wide_scale)
            else:
                img = ImageOps.exif_transpose(img)
                img = _to_rgb(img)
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(f"decompression bomb refused: {exc}") from exc
    except UnidentifiedImageError as exc:
        known = _sniff_format(data)
        if known:
            # Pillow cannot tell "cut off inside the header" from "not an image".
            raise CorruptImage(f"truncated or damaged {known} file: its header cannot be read") from exc
        raise NotAnImage(
            f"not an image, or a format imgsim does not decode (supported: {', '.join(sorted(SUPPORTED_FORMATS))})"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct_error) as exc:
        what = f"{fmt} image" if fmt != "image" else "image"
        raise CorruptImage(f"cannot decode {what}, truncated or damaged: {exc}") from exc

    if max(img.size) > REDUCE_TO_LONG_SIDE:
        img = img.resize(
            _reduced_size(*img.size, REDUCE_TO_LONG_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
    pixels = np.asarray(img, dtype=np.uint8)
    return DecodedImage(pixels=pixels, width=upright_w, height=upright_h, format=fmt,
                        jpeg_table=tuple(luminance) if luminance else None)

