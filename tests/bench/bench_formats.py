#!/usr/bin/env python3
"""What each format costs to decode: a 12 MP photo (4000x3000, a shared photo upscaled with sensor-like
noise) saved as every supported format, decoded by ``imgsim.decode.decode_image`` in a fresh process
each: wall time and peak memory above the process baseline (VmHWM), as ratios to the baseline JPEG of
this run, beside the header estimate (``imgsim.decode_cost``, which must stay above the measurement).
Also 24 and 48 MP HEIC, the sizes recent phones write, as they write them (a grid of 512x512 HEVC tiles), against
the default budgets. (libde265 1.1, in pi-heif 1.4, refuses a single HEVC picture above ~25 MP: such a file is a
CorruptImage, measured: 24.5 MP decodes, 26.2 MP does not; phones' tiled files decode.)
Figures: README "Supported formats".

The decodes run in Lambda's runtime by default: CPython 3.13 (``make lambda-python``) with the built layer's
imgsim, Pillow, pi-heif and numpy only (``python3.13 -I -S -B``, as the invoke runner lays it out; built here
if ``.aws-sam/build`` is missing). ``--developer`` measures this environment's Python and packages instead.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pillow_heif
from imgsim.decode import DEFAULT_MAX_DECODE_BYTES, DEFAULT_MAX_DECODE_MS, probe_cost
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
PHOTOS = REPO_ROOT.parent / "shared" / "datasets" / "photos"

BUILD = REPO_ROOT / ".aws-sam" / "build"

MEASURE = """
import json, os, sys, time
from imgsim import decode as d
from imgsim.decode import decode_image
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
d._register_heif()  # the HEIF decoder loaded before the baseline, like a warm function's
data = open(sys.argv[1], "rb").read()
base = hwm()
t = time.perf_counter()
decode_image(data, max_bytes=1 << 30, max_pixels=1 << 30, max_decode_bytes=1 << 40, max_decode_ms=1e9)
print(json.dumps({"ms": (time.perf_counter() - t) * 1000, "mb": (hwm() - base) / 2**20}))
"""


def photo(size: tuple[int, int]) -> Image.Image:
    source = Image.open(sorted(PHOTOS.glob("photo_*.jpg"))[10]).convert("RGB").resize(size, Image.Resampling.BICUBIC)
    noise = np.random.default_rng(1).normal(0, 2, (size[1], size[0], 3)).astype(np.int16)
    return Image.fromarray(np.clip(np.asarray(source).astype(np.int16) + noise, 0, 255).astype(np.uint8))


def encodings(img: Image.Image) -> dict[str, bytes]:
    out: dict[str, bytes] = {}

    def save(name: str, fmt: str, image: Image.Image | None = None, **kwargs: object) -> None:
        buffer = io.BytesIO()
        (image or img).save(buffer, fmt, **kwargs)
        out[name] = buffer.getvalue()

    save("JPEG (baseline)", "JPEG", quality=90)
    save("JPEG (progressive)", "JPEG", quality=90, progressive=True)
    save("PNG", "PNG", compress_level=6)
    save("WebP", "WEBP", quality=90)
    save("AVIF", "AVIF", quality=80, speed=8)
    heic = io.BytesIO()
    pillow_heif.from_pillow(img).save(heic, quality=80)
    out["HEIC"] = heic.getvalue()
    save("TIFF", "TIFF")
    save("BMP", "BMP")
    save("GIF", "GIF", image=img.convert("P"))
    return out


VERSIONS = """
import sys, numpy, PIL, pi_heif
print(sys.version.split()[0], "numpy", numpy.__version__, "Pillow", PIL.__version__, "pi-heif", pi_heif.__version__)
"""


def runtime(developer: bool) -> tuple[list[str], str]:
    """(interpreter command, code prelude): this environment's Python, or Lambda's Python 3.13 with nothing on its
    path but the built layer."""
    if developer:
        return [sys.executable], ""
    from imgsim_tools.invoke import lambda_python

    if not (BUILD / "template.yaml").is_file():
        subprocess.run(["make", "build"], cwd=REPO_ROOT, check=True)
    return [lambda_python(), "-I", "-S", "-B"], f"import sys; sys.path[:0] = [{str(BUILD / 'SharedLayer' / 'python')!r}]\n"


def measure(command: list[str], data: bytes, runs: int = 2) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".img") as fh:
        fh.write(data)
        fh.flush()
        samples = [json.loads(subprocess.run([*command, fh.name], capture_output=True,
                                             text=True, check=True).stdout) for _ in range(runs)]
    return {"ms": min(s["ms"] for s in samples), "mb": max(s["mb"] for s in samples)}


def main() -> int:
    developer = "--developer" in sys.argv[1:]
    interpreter, prelude = runtime(developer)
    command = [*interpreter, "-c", prelude + MEASURE]
    version = subprocess.run([*interpreter, "-c", prelude + VERSIONS], capture_output=True, text=True,
                             check=True).stdout.strip()
    failures = 0
    print(f"decode_image of a 12 MP photo (4000x3000), fresh process per run (best of 2), {os.cpu_count()} cores")
    print(f"{'developer environment' if developer else 'Lambda runtime, built layer'}: Python {version}")
    print(f"{'format':20} {'file KB':>8} {'ms':>7} {'x JPEG':>7} {'peak MB':>8} {'x JPEG':>7} {'est ms':>7} {'est MB':>7}")
    baseline: dict[str, float] | None = None
    for name, data in encodings(photo((4000, 3000))).items():
        got = measure(command, data)
        baseline = baseline or got
        cost = probe_cost(data)
        assert cost is not None, name
        bound = cost.ms >= got["ms"] and cost.bytes / 2**20 >= got["mb"]
        failures += not bound
        print(f"{name:20} {len(data) / 1024:8.0f} {got['ms']:7.0f} {got['ms'] / baseline['ms']:6.1f}x "
              f"{got['mb']:8.0f} {got['mb'] / max(baseline['mb'], 1.0):6.1f}x {cost.ms:7.0f} {cost.bytes / 2**20:7.0f}"
              f"{'' if bound else '  ESTIMATE BELOW MEASURED'}", flush=True)
    print(f"\nphone HEIC sizes against the default budgets ({DEFAULT_MAX_DECODE_BYTES // 2**20} MB, "
          f"{DEFAULT_MAX_DECODE_MS:.0f} ms; IMGSIM_MAX_DECODE_MB / IMGSIM_MAX_DECODE_MS):")
    for megapixels, size in ((12, (4000, 3000)), (24, (5712, 4284)), (48, (8064, 6048))):
        buffer = io.BytesIO()
        pillow_heif.from_pillow(photo(size)).save(buffer, quality=80, tile_size=512)
        data = buffer.getvalue()
        got, cost = measure(command, data, runs=1), probe_cost(data)
        assert cost is not None
        fits = cost.ms <= DEFAULT_MAX_DECODE_MS and cost.bytes <= DEFAULT_MAX_DECODE_BYTES
        failures += not (cost.ms >= got["ms"] and cost.bytes / 2**20 >= got["mb"])
        print(f"  {megapixels} MP HEIC (512x512 tiles), {len(data) / 2**20:4.1f} MB: {got['ms']:5.0f} ms, {got['mb']:4.0f} MB "
              f"(estimate {cost.ms:5.0f} ms, {cost.bytes / 2**20:4.0f} MB): "
              f"{'accepted' if fits else 'refused by default'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
