"""HEIC/HEIF and AVIF: what phones and modern browsers write, decoded like every other format.

Test files are made from the shared photos with the encoders the packages ship: pillow-heif's HEVC
encoder (a developer dependency; the layer decodes with the decode-only pi-heif), Pillow's own AVIF
encoder, and `avifenc` (Debian's libavif-bin, installed by `make test`) for 10-bit AVIF.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import numpy as np
import pillow_heif
import pytest
from imgsim.decode import (
    FORMAT_CONTENT_TYPES,
    SUPPORTED_FORMATS,
    check_header,
    decode_image,
)
from imgsim.errors import CorruptImage, DecodeTooCostly, ImageError, TooManyPixels
from PIL import Image

LIMITS = {"max_bytes": 25 * 2**20, "max_pixels": 64_000_000}
EXIF_ORIENTATION = 0x0112


def photo(photos, index: int) -> Image.Image:
    return Image.open(photos[index]).convert("RGB")


def heic(img: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    pillow_heif.from_pillow(img).save(out, quality=kwargs.pop("quality", 90), **kwargs)
    return out.getvalue()


def avif(img: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, "AVIF", quality=kwargs.pop("quality", 90), **kwargs)
    return out.getvalue()


def jpeg(img: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=95, **kwargs)
    return out.getvalue()


def decode(data: bytes, **limits):
    return decode_image(data, **{**LIMITS, **limits})


def test_formats_and_content_types_are_declared():
    assert {"HEIF", "AVIF"} <= SUPPORTED_FORMATS
    assert FORMAT_CONTENT_TYPES["HEIF"] == "image/heic" and FORMAT_CONTENT_TYPES["AVIF"] == "image/avif"


def test_a_photo_embeds_the_same_as_jpeg_heic_and_avif(photos, embedder):
    """Parity: good-quality encodings of one photo embed to cosine >= 0.99 across the three."""
    worst = 1.0
    for index in (3, 250, 600, 900, 1100, 1400):
        img = photo(photos, index)
        decoded = {name: decode(data) for name, data in (("jpeg", jpeg(img)), ("heic", heic(img)), ("avif", avif(img)))}
        assert (decoded["heic"].format, decoded["avif"].format) == ("HEIF", "AVIF")
        assert decoded["heic"].content_type == "image/heic" and decoded["avif"].content_type == "image/avif"
        vectors = {name: embedder.embed_decoded([d])[0] for name, d in decoded.items()}
        for a, b in (("jpeg", "heic"), ("jpeg", "avif"), ("heic", "avif")):
            worst = min(worst, float(np.dot(vectors[a], vectors[b])))
    assert worst >= 0.99, worst


@pytest.mark.parametrize("encode", [heic, avif], ids=["heic", "avif"])
def test_exif_orientation_makes_the_picture_upright(photos, encode):
    img = photo(photos, 10)  # landscape
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored sideways: turn 90 degrees clockwise to view
    rotated = decode(encode(img, exif=exif.tobytes()))
    upright = decode(jpeg(img.transpose(Image.Transpose.ROTATE_270)))
    assert (rotated.width, rotated.height) == (img.height, img.width) == (upright.width, upright.height)
    assert rotated.pixels.shape == upright.pixels.shape
    assert np.abs(rotated.pixels.astype(int) - upright.pixels.astype(int)).mean() < 6


def test_10_bit_heic_decodes(photos, embedder):
    img = photo(photos, 20)
    wide = (np.asarray(img).astype(np.uint16) * 257).tobytes()  # 16-bit samples; saved as 10-bit
    out = io.BytesIO()
    pillow_heif.from_bytes(mode="RGB;16", size=img.size, data=wide).save(out, quality=90)
    assert pillow_heif.open_heif(io.BytesIO(out.getvalue())).info["bit_depth"] == 10
    decoded = decode(out.getvalue())
    assert decoded.format == "HEIF" and decoded.pixels.dtype == np.uint8
    assert float(np.dot(*embedder.embed_decoded([decoded, decode(jpeg(img))]))) >= 0.99


def test_10_bit_avif_decodes(photos, embedder, tmp_path):
    avifenc = shutil.which("avifenc")
    assert avifenc, "avifenc missing: `make test` installs Debian's libavif-bin"
    img = photo(photos, 30)
    source = tmp_path / "color.png"
    img.save(source)
    target = tmp_path / "ten.avif"
    result = subprocess.run([avifenc, "--depth", "10", "--min", "0", "--max", "12", "--speed", "8", str(source),
                             str(target)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    data = target.read_bytes()
    assert b"ftypavif" in data[:32] and b"pixi\x00\x00\x00\x00\x03\x0a\x0a\x0a" in data  # 3 channels of 10 bits
    decoded = decode(data)
    assert decoded.format == "AVIF" and decoded.pixels.dtype == np.uint8
    assert float(np.dot(*embedder.embed_decoded([decoded, decode(jpeg(img))]))) >= 0.99


@pytest.mark.parametrize("encode", [heic, avif], ids=["heic", "avif"])
def test_transparent_pixels_are_composited_onto_white(photos, encode):
    rgba = np.asarray(photo(photos, 40).convert("RGBA")).copy()
    rgba[:, : rgba.shape[1] // 2, 3] = 0  # left half fully transparent
    decoded = decode(encode(Image.fromarray(rgba, "RGBA")))
    left = decoded.pixels[:, : decoded.pixels.shape[1] // 2 - 4]
    assert left.mean() > 250  # white, as an image viewer shows it


def test_a_multi_image_heif_decodes_its_primary_image(photos):
    """Bursts and Live Photo stills: several images in one container; viewers show the primary one."""
    first, second = photo(photos, 50), photo(photos, 51).resize(photo(photos, 50).size)
    container = pillow_heif.from_pillow(first)
    container.add_from_pillow(second)
    for primary, expected in ((0, first), (1, second)):
        out = io.BytesIO()
        container.save(out, quality=90, primary_index=primary)
        decoded = decode(out.getvalue())
        reference = decode(jpeg(expected))
        assert np.abs(decoded.pixels.astype(int) - reference.pixels.astype(int)).mean() < 6


@pytest.mark.parametrize("encode", [heic, avif], ids=["heic", "avif"])
def test_truncated_and_bogus_files_are_typed_errors(photos, encode):
    data = encode(photo(photos, 60))
    for broken in (data[: len(data) // 2], data[:200], data[:40], data[:24] + b"\x00" * 5000,
                   data[:12] + bytes(range(256)) * 40):
        with pytest.raises(CorruptImage):
            decode(broken)
    with pytest.raises(ImageError):  # any bytes: a typed error, never another exception
        decode(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\xff" * 100)


@pytest.mark.parametrize("encode", [heic, avif], ids=["heic", "avif"])
def test_decode_budgets_apply_before_any_pixel_is_decoded(photos, encode):
    big = photo(photos, 70).resize((2000, 1500))
    data = encode(big, quality=70)
    with pytest.raises(TooManyPixels):
        decode(data, max_pixels=1_000_000)
    with pytest.raises(DecodeTooCostly, match="IMGSIM_MAX_DECODE_MB"):
        decode(data, max_decode_bytes=10 * 2**20)  # 3 MP at >= 8.5 bytes/pixel is over 10 MB
    with pytest.raises(DecodeTooCostly):
        decode(data, max_decode_ms=5)
    # The indexer's pre-check refuses from the header alone: HEIF from the object's first bytes; libavif
    # parses only a whole file, so an AVIF's first bytes are inconclusive (silent) and the full decode judges.
    head = data[:16384] if encode is heic else data
    with pytest.raises(DecodeTooCostly):
        check_header(head, max_pixels=64_000_000, max_decode_bytes=10 * 2**20, max_decode_ms=1500)
    if encode is avif:
        check_header(data[:16384], max_pixels=64_000_000, max_decode_bytes=10 * 2**20, max_decode_ms=1500)
    assert decode(data).width == 2000  # within the default budgets


def test_the_indexer_indexes_heic_and_avif_objects(photos, embedder, moto_s3, tmp_path):
    """An iPhone library synced to S3 is indexed, not skipped as "not an image"."""
    from imgsim.pipeline import INDEXED, PUT, ObjectEvent, build
    from imgsim.settings import IndexSettings
    from imgsim.store.edge import EdgeStore

    objects = {"library/IMG_0001.HEIC": heic(photo(photos, 80)), "library/IMG_0002.avif": avif(photo(photos, 81))}
    for key, data in objects.items():
        moto_s3.put_object(Bucket="imgsim-images", Key=key, Body=data)
    store = EdgeStore(str(tmp_path / "q"), "images", dim=embedder.dim)
    try:
        report = build(store=store, embedder=embedder, s3=moto_s3, options=IndexSettings(dedupe=False)).process_events(
            [ObjectEvent(message_id=key, action=PUT, bucket="imgsim-images", key=key) for key in objects])
        assert [o.status for o in report.outcomes] == [INDEXED, INDEXED], report.outcomes
        stored = {r.payload["key"]: r.payload for r in store.scroll(limit=10)[0]}
        assert stored["library/IMG_0001.HEIC"]["content_type"] == "image/heic"
        assert stored["library/IMG_0002.avif"]["format"] == "AVIF"
    finally:
        store.close()


def test_the_page_offers_heic_and_avif_files():
    """The file pickers list .heic/.heif/.avif (browsers that do not map them to image/*), and uploads
    declare their content types."""
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "functions" / "search" / "static" / "index.html").read_text()
    accepts = [set(accept.split(",")) for accept in re.findall(r'accept="([^"]*)"', page)]
    assert len(accepts) == page.count('type="file"') == 4
    assert all({"image/*", ".heic", ".heif", ".avif"} <= accept for accept in accepts), accepts
    assert 'heic: "image/heic"' in page and 'heif: "image/heif"' in page and 'avif: "image/avif"' in page
