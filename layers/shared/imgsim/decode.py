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
import warnings
from struct import error as struct_error  # Pillow leaks struct.error on some corrupt files
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import CorruptImage, EmptyImage, ImageTooLarge, NotAnImage, TooManyPixels

# Pillow format names we accept. MPO is what many cameras write for JPEG.
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "TIFF", "BMP"})

# Twice the model's 224 px input: large enough that the final (reference) bilinear
# resize sees what it would see on an ordinary web photo.
REDUCE_TO_LONG_SIDE = 448

# Transparent pixels are composited onto white, as an image viewer shows them.
ALPHA_BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # uint8, (height, width, 3), RGB, upright, possibly reduced
    width: int  # of the upright original, before any reduction
    height: int
    format: str  # Pillow's format name: JPEG, PNG, ...

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
}


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
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    return None


def _reduced_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit grayscale: Pillow's convert("L") clips at 255 instead of scaling.
        wide = np.asarray(img, dtype=np.uint32 if img.mode == "I" else np.uint16).astype(np.float64)
        peak = 65535.0 if img.mode != "I" or wide.max() > 255 else 255.0
        gray = np.clip(np.round(wide * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if img.mode == "F":
        gray = np.asarray(img, dtype=np.float64)
        scale = 255.0 if gray.max() <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.round(gray * scale), 0, 255).astype(np.uint8), "L").convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    ) or (img.mode in ("L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Decode ``data`` to upright RGB pixels or raise one ``ImageError`` subclass."""
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
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            if fmt not in SUPPORTED_FORMATS:
                raise NotAnImage(f"unsupported image format {fmt}; supported: {', '.join(sorted(SUPPORTED_FORMATS))}")
            width, height = img.size
            # Before anything else touches the image: PNG's getexif() decodes the whole
            # image when the EXIF chunk comes after the pixels, bomb included.
            if width * height > max_pixels:
                raise TooManyPixels(f"image is {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}")
            # EXIF orientations 5-8 rotate by 90 degrees: the upright picture is height x width.
            orientation = img.getexif().get(0x0112, 1)
            upright_w, upright_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
            if max(width, height) > REDUCE_TO_LONG_SIDE and fmt in ("JPEG", "MPO"):
                # DCT scaling: decode at the smallest 1/2^k scale still >= the reduction target.
                img.draft("RGB", _reduced_size(width, height, REDUCE_TO_LONG_SIDE))
            img.load()
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
    return DecodedImage(pixels=pixels, width=upright_w, height=upright_h, format=fmt)

