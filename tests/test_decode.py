"""Decoding: every supported format and variant, EXIF orientation, and each bad input's typed error.

Test images are made here with Pillow from real photos (skimage's chelsea and a
photo from ../shared), so no binary fixtures live in the repo.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import skimage.data
from imgsim import (
    CorruptImage,
    EmptyImage,
    ImageError,
    ImageTooLarge,
    NotAnImage,
    TooManyPixels,
    decode_image,
)
from imgsim.decode import REDUCE_TO_LONG_SIDE
from PIL import Image

LIMITS = {"max_bytes": 25 * 1024 * 1024, "max_pixels": 64_000_000}


def decode(data: bytes, **overrides):
    return decode_image(data, **{**LIMITS, **overrides})


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_by_hand(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG written from raw scanlines: Pillow cannot write 16-bit RGB, and bombs need a lying header."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    """A real photo (a cat), uint8 RGB, cropped to 400x288: under the reduction size, and
    multiples of 16 like camera sizes so a rotated JPEG has the same block grid."""
    return np.ascontiguousarray(skimage.data.chelsea()[6:294, 25:425])


@pytest.fixture(scope="module")
def chelsea_png_vector(embedder, chelsea) -> np.ndarray:
    """The reference: the same picture as a plain 8-bit RGB PNG."""
    return embedder.embed(encode(Image.fromarray(chelsea), "PNG"))


# -- formats and variants ------------------------------------------------------------------------

# Lossy encodings change pixels a little; these bounds are the visible-quality level (mean error
# of a few grey levels) and the embedding agreement such a change should keep.
LOSSY_MEAN_DIFF = 4.0
LOSSY_COSINE = 0.98


def lossless_variants(rgb: np.ndarray) -> dict[str, bytes]:
    img = Image.fromarray(rgb)
    height, width = rgb.shape[:2]
    opaque = np.dstack([rgb, np.full((height, width), 255, np.uint8)])
    return {
        "png_rgb8": encode(img, "PNG"),
        "png_rgba_opaque": encode(Image.fromarray(opaque, "RGBA"), "PNG"),
        "png_rgb16": png_by_hand(
            width, height, 16, 2,
            b"".join(b"\x00" + (row.astype(">u2") * 257).tobytes() for row in rgb),
        ),
        "webp_lossless": encode(img, "WEBP", lossless=True),
        "tiff_raw": encode(img, "TIFF"),
        "tiff_lzw": encode(img, "TIFF", compression="tiff_lzw"),
        "bmp": encode(img, "BMP"),
    }


@pytest.mark.parametrize(
    "variant", ["png_rgb8", "png_rgba_opaque", "png_rgb16", "webp_lossless", "tiff_raw", "tiff_lzw", "bmp"]
)
def test_lossless_formats_decode_to_the_exact_pixels(variant, chelsea, embedder, chelsea_png_vector):
    decoded = decode(lossless_variants(chelsea)[variant])
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.shape == chelsea.shape
    np.testing.assert_array_equal(decoded.pixels, chelsea)
    assert (decoded.width, decoded.height) == (chelsea.shape[1], chelsea.shape[0])
    assert cosine(embedder.embed_decoded([decoded])[0], chelsea_png_vector) >= 0.9999


def test_format_names_and_content_types(chelsea):
    img = Image.fromarray(chelsea)
    expected = {
        "JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif",
        "WEBP": "image/webp", "TIFF": "image/tiff", "BMP": "image/bmp",
    }
    for fmt, content_type in expected.items():
        decoded = decode(encode(img, fmt))
        assert (decoded.format, decoded.content_type) == (fmt, content_type)


@pytest.mark.parametrize(
    "variant",
    ["jpeg_baseline", "jpeg_progressive", "jpeg_cmyk_adobe", "jpeg_q75_subsampled", "webp_lossy", "mpo"],
)
def test_lossy_formats_decode_close_and_embed_like_the_png(variant, chelsea, embedder, chelsea_png_vector):
    img = Image.fromarray(chelsea)
    data = {
        "jpeg_baseline": lambda: encode(img, "JPEG", quality=95),
        "jpeg_progressive": lambda: encode(img, "JPEG", quality=95, progressive=True),
        # Pillow writes CMYK JPEGs with an Adobe APP14 marker and inverted ink values, as
        # Photoshop does; decoding must undo the inversion or the picture comes out negative.
        "jpeg_cmyk_adobe": lambda: encode(img.convert("CMYK"), "JPEG", quality=95),
        "jpeg_q75_subsampled": lambda: encode(img, "JPEG", quality=75, subsampling=2),
        "webp_lossy": lambda: encode(img, "WEBP", quality=90),
        # Multi-picture JPEG as stereo cameras write it; the first picture is the photo.
        "mpo": lambda: encode(img, "MPO", save_all=True, append_images=[img.transpose(Image.Transpose.ROTATE_180)]),
    }[variant]()
    if variant == "jpeg_cmyk_adobe":
        assert b"Adobe" in data[:2000]
    decoded = decode(data)
    assert decoded.pixels.shape == chelsea.shape
    assert mean_abs_diff(decoded.pixels, chelsea) <= LOSSY_MEAN_DIFF
    assert cosine(embedder.embed_decoded([decoded])[0], chelsea_png_vector) >= LOSSY_COSINE
    if variant == "mpo":
        assert decoded.format == "MPO" and decoded.content_type == "image/jpeg"


def test_grayscale_jpeg_becomes_three_equal_channels(chelsea):
    gray = Image.fromarray(chelsea).convert("L")
    decoded = decode(encode(gray, "JPEG", quality=95))
    assert decoded.pixels.shape == chelsea.shape
    np.testing.assert_array_equal(decoded.pixels[..., 0], decoded.pixels[..., 2])
    assert mean_abs_diff(decoded.pixels[..., 0], np.asarray(gray)) <= LOSSY_MEAN_DIFF


def test_16_bit_grayscale_png_is_scaled_not_clipped(chelsea, embedder):
    gray8 = np.asarray(Image.fromarray(chelsea).convert("L"))
    gray16 = gray8.astype(np.uint16) * 257  # full 16-bit range: 255 -> 65535
    data = encode(Image.fromarray(gray16), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really a 16-bit file
    decoded = decode(data)
    # Clipping (Pillow's plain convert) would make nearly every pixel 255.
    np.testing.assert_array_equal(decoded.pixels, np.dstack([gray8] * 3))
    gray_png_vector = embedder.embed(encode(Image.fromarray(gray8).convert("RGB"), "PNG"))
    assert cosine(embedder.embed_decoded([decoded])[0], gray_png_vector) >= 0.9999


def test_16_bit_rgb_png_keeps_the_high_byte(chelsea):
    # Low bytes that differ from the high bytes, so a decoder using the wrong byte is caught. Big-endian, as PNG
    # stores samples, said explicitly: numpy 2 gives arithmetic on a ">u2" array a native (little-endian) result.
    wide = (chelsea.astype(np.uint16) * 256 + 77).astype(">u2")
    height, width = chelsea.shape[:2]
    data = png_by_hand(width, height, 16, 2, b"".join(b"\x00" + row.tobytes() for row in wide))
    np.testing.assert_array_equal(decode(data).pixels, chelsea)


def test_palette_png_decodes_to_its_palette_colours(chelsea, embedder):
    # 256 colours (dithered) is another picture than the photo (cosine ~0.95 to it), so the
    # embedding is compared with the same palette picture stored as a plain RGB PNG.
    palette_img = Image.fromarray(chelsea).quantize(256)
    decoded = decode(encode(palette_img, "PNG"))
    as_rgb = palette_img.convert("RGB")
    np.testing.assert_array_equal(decoded.pixels, np.asarray(as_rgb))
    assert cosine(embedder.embed_decoded([decoded])[0], embedder.embed(encode(as_rgb, "PNG"))) >= 0.9999


def test_palette_png_transparent_index_becomes_white(chelsea):
    palette_img = Image.fromarray(chelsea).quantize(64)
    indices = np.asarray(palette_img)
    transparent = int(indices[0, 0])
    palette_img.info["transparency"] = transparent
    decoded = decode(encode(palette_img, "PNG", transparency=transparent))
    expected = np.asarray(palette_img.convert("RGB")).copy()
    expected[indices == transparent] = 255
    assert (indices == transparent).sum() > 100  # the check below really covers transparent pixels
    np.testing.assert_array_equal(decoded.pixels, expected)


def test_rgba_png_is_composited_on_white(chelsea):
    height, width = chelsea.shape[:2]
    alpha = np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))  # clear -> opaque
    decoded = decode(encode(Image.fromarray(np.dstack([chelsea, alpha]), "RGBA"), "PNG"))
    a = alpha[..., None] / 255.0
    expected = chelsea * a + 255.0 * (1 - a)
    assert np.abs(decoded.pixels - expected).max() <= 1.0  # integer rounding only
    np.testing.assert_array_equal(decoded.pixels[:, 0], 255)  # fully transparent column: white
    np.testing.assert_array_equal(decoded.pixels[:, -1], chelsea[:, -1])  # opaque column: unchanged


def test_gray_alpha_png_is_composited_on_white(chelsea):
    gray = np.asarray(Image.fromarray(chelsea).convert("L"))
    alpha = np.zeros_like(gray)
    alpha[:, gray.shape[1] // 2 :] = 255  # left half transparent, right half opaque
    decoded = decode(encode(Image.fromarray(np.dstack([gray, alpha]), "LA"), "PNG"))
    half = gray.shape[1] // 2
    np.testing.assert_array_equal(decoded.pixels[:, :half], 255)
    np.testing.assert_array_equal(decoded.pixels[:, half:], np.dstack([gray[:, half:]] * 3))


def test_animated_gif_uses_the_first_frame(chelsea, embedder, photos):
    first = Image.fromarray(chelsea)
    other = Image.open(photos[900]).convert("RGB").resize(first.size)
    data = encode(first, "GIF", save_all=True, append_images=[other], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    decoded = decode(data)
    assert decoded.format == "GIF"
    expected_first = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(decoded.pixels, expected_first)
    # GIF holds a 256-colour version of the frame; compare with that picture as a plain RGB PNG.
    vector = embedder.embed_decoded([decoded])[0]
    assert cosine(vector, embedder.embed(encode(Image.fromarray(expected_first), "PNG"))) >= 0.9999
    # ... and it is the first frame's picture, not the second's.
    first_vector = embedder.embed(encode(first, "PNG"))
    other_vector = embedder.embed(encode(other, "PNG"))
    assert cosine(vector, first_vector) > cosine(vector, other_vector) + 0.1


def test_animated_webp_uses_the_first_frame(chelsea, photos):
    first = Image.fromarray(chelsea)
    other = Image.open(photos[900]).convert("RGB").resize(first.size)
    data = encode(first, "WEBP", save_all=True, append_images=[other], lossless=True, duration=100)
    np.testing.assert_array_equal(decode(data).pixels, chelsea)


def test_large_jpeg_is_reduced_while_decoding(chelsea):
    big = Image.fromarray(chelsea).resize((2400, 1600), Image.Resampling.BICUBIC)
    decoded = decode(encode(big, "JPEG", quality=90))
    assert max(decoded.pixels.shape[:2]) == REDUCE_TO_LONG_SIDE
    assert (decoded.width, decoded.height) == (2400, 1600)  # the original's size, not the reduced one
    assert decoded.pixels.shape == (299, 448, 3)  # aspect ratio kept
    small = np.asarray(big.resize((448, 299), Image.Resampling.BOX))
    assert mean_abs_diff(decoded.pixels, small) <= LOSSY_MEAN_DIFF


def test_large_png_is_reduced_too(chelsea):
    big = Image.fromarray(chelsea).resize((1353, 900), Image.Resampling.BICUBIC)
    decoded = decode(encode(big, "PNG"))
    assert decoded.pixels.shape == (298, 448, 3)
    assert (decoded.width, decoded.height) == (1353, 900)


# -- EXIF orientation ----------------------------------------------------------------------------

# What a camera stores for each EXIF orientation, given the upright picture, written
# with numpy from the EXIF spec's meaning (not with Pillow's exif_transpose, which
# decode uses, so the test is not circular). np.rot90(k=1) turns counter-clockwise.
STORED_FOR_ORIENTATION = {
    2: lambda a: a[:, ::-1],  # mirrored
    3: lambda a: np.rot90(a, 2),  # upside down
    4: lambda a: a[::-1],  # mirrored vertically
    5: lambda a: a.transpose(1, 0, 2),  # mirrored + rotated
    6: lambda a: np.rot90(a, 1),  # phone held upright: display needs 90 deg clockwise
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, -1),  # display needs 90 deg counter-clockwise
}


def with_orientation(upright: np.ndarray, orientation: int, fmt: str, **params) -> bytes:
    stored = Image.fromarray(np.ascontiguousarray(STORED_FOR_ORIENTATION[orientation](upright)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, fmt, exif=exif.tobytes(), **params)


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_png_is_applied_exactly(orientation, chelsea):
    decoded = decode(with_orientation(chelsea, orientation, "PNG"))
    np.testing.assert_array_equal(decoded.pixels, chelsea)
    assert (decoded.width, decoded.height) == (chelsea.shape[1], chelsea.shape[0])


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_jpeg_is_applied_to_the_decoded_pixels(orientation, chelsea):
    data = with_orientation(chelsea, orientation, "JPEG", quality=90)
    as_stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # ignoring the tag
    decoded = decode(data)
    assert (decoded.width, decoded.height) == (chelsea.shape[1], chelsea.shape[0])
    # Turning the upright result back the way the camera stored it gives the stored pixels.
    np.testing.assert_array_equal(STORED_FOR_ORIENTATION[orientation](decoded.pixels), as_stored)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_rotated_phone_photo_embeds_like_the_upright_one(orientation, chelsea, embedder):
    # High-quality JPEG (4:4:4, as cameras' fine mode): the JPEG loss alone costs ~0.0007 of cosine.
    decoded = decode(with_orientation(chelsea, orientation, "JPEG", quality=95, subsampling=0))
    assert (decoded.width, decoded.height) == (chelsea.shape[1], chelsea.shape[0])
    assert decoded.pixels.shape == chelsea.shape
    upright_vector = embedder.embed_pixels([chelsea])[0]
    assert cosine(embedder.embed_decoded([decoded])[0], upright_vector) >= 0.999


@pytest.mark.parametrize("orientation", [6, 8])
def test_rotated_large_phone_photo_reports_upright_size(orientation, chelsea, embedder):
    upright = np.asarray(Image.fromarray(chelsea).resize((1800, 1200), Image.Resampling.BICUBIC))
    decoded = decode(with_orientation(upright, orientation, "JPEG", quality=95, subsampling=0))
    assert (decoded.width, decoded.height) == (1800, 1200)
    assert decoded.pixels.shape == (299, 448, 3)
    # Same encoding upright, so both go through the same DCT-scaled decode and reduction.
    upright_vector = embedder.embed(encode(Image.fromarray(upright), "JPEG", quality=95, subsampling=0))
    assert cosine(embedder.embed_decoded([decoded])[0], upright_vector) >= 0.999


# -- bad input -----------------------------------------------------------------------------------


def test_zero_bytes_is_empty_image():
    with pytest.raises(EmptyImage, match="0 bytes"):
        decode(b"")


def test_too_many_bytes_is_image_too_large(chelsea):
    data = encode(Image.fromarray(chelsea), "PNG")
    with pytest.raises(ImageTooLarge, match=f"{len(data)} bytes.*limit of 1000 bytes"):
        decode(data, max_bytes=1000)
    assert decode(data, max_bytes=len(data)).pixels.shape == chelsea.shape  # the limit is inclusive


@pytest.mark.parametrize(
    "width,height",
    [
        (50_000, 50_000),  # beyond Pillow's own bomb limit: refused while opening
        (10_000, 10_000),  # under Pillow's limit but over IMGSIM_MAX_PIXELS: refused by our check
    ],
)
def test_decompression_bomb_is_too_many_pixels(width, height):
    # A few hundred bytes whose header declares billions of pixels.
    data = png_by_hand(width, height, 8, 2, b"\x00" * 100)
    assert len(data) < 300
    with pytest.raises(TooManyPixels, match="pixels"):
        decode(data)


def test_pixel_limit_is_configurable(chelsea):
    data = encode(Image.fromarray(chelsea), "PNG")
    with pytest.raises(TooManyPixels, match="400x288 = 115200 pixels, more than the limit of 100000"):
        decode(data, max_pixels=100_000)


def test_bomb_with_exif_after_the_pixels_is_refused_before_decoding():
    # PNG's EXIF lookup decodes the pixels when the eXIf chunk follows them: the pixel limit must come first.
    big = Image.new("RGB", (4000, 4000), "gray")
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(big, "PNG", exif=exif.tobytes())
    with pytest.raises(TooManyPixels, match="4000x4000"):
        decode(data, max_pixels=1_000_000)


def truncations(data: bytes) -> list[bytes]:
    """Cuts inside the header, early, in the middle and late in the pixel data."""
    return [data[:n] for n in (16, 40, len(data) // 10, len(data) // 2, len(data) * 9 // 10)]


@pytest.mark.parametrize(
    "fmt,params",
    [
        ("JPEG", {"quality": 90}),
        ("JPEG", {"quality": 90, "progressive": True}),
        ("PNG", {}),
        ("GIF", {}),
        ("WEBP", {"quality": 90}),
        ("TIFF", {"compression": "tiff_lzw"}),
    ],
    ids=["jpeg", "jpeg_progressive", "png", "gif", "webp", "tiff"],
)
def test_truncated_file_is_corrupt_image(fmt, params, chelsea):
    data = encode(Image.fromarray(chelsea), fmt, **params)
    for cut in truncations(data):
        with pytest.raises(CorruptImage, match="truncated|damaged"):
            decode(cut)


def test_damaged_png_data_is_corrupt_image(chelsea):
    data = bytearray(encode(Image.fromarray(chelsea), "PNG"))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # zeroed compressed data: CRC and zlib both break
    with pytest.raises(CorruptImage, match="PNG"):
        decode(bytes(data))


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(7).bytes(4096),
        b"just some text, not a picture\n" * 20,
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
        b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>",
        b"PK\x03\x04" + bytes(100),  # a zip file
    ],
    ids=["random", "text", "pdf", "svg", "zip"],
)
def test_non_image_is_not_an_image(data):
    with pytest.raises(NotAnImage, match="not an image.*supported: AVIF, BMP, GIF, HEIF, JPEG"):
        decode(data)


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "TGA"])
def test_image_format_outside_the_supported_list_is_not_an_image(fmt, chelsea):
    with pytest.raises(NotAnImage, match=f"unsupported image format {fmt}"):
        decode(encode(Image.fromarray(chelsea).resize((64, 64)), fmt))


def test_every_image_error_has_a_code_and_is_an_image_error():
    codes = {cls.code for cls in (EmptyImage, ImageTooLarge, TooManyPixels, NotAnImage, CorruptImage)}
    assert codes == {"empty_image", "image_too_large", "too_many_pixels", "not_an_image", "corrupt_image"}
    assert all(issubclass(cls, ImageError) for cls in (EmptyImage, ImageTooLarge, TooManyPixels, NotAnImage, CorruptImage))


def test_embedder_raises_the_same_typed_errors(embedder):
    with pytest.raises(EmptyImage):
        embedder.embed(b"")
    with pytest.raises(NotAnImage):
        embedder.embed_many([b"not an image"])
