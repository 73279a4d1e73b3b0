#!/usr/bin/env python3
"""Decoding at the limits: time of ``decode_image`` against the header estimate (imgsim.decode_cost).

Progressive JPEGs with extra scans (a flat image whose last refinement scan is repeated: a few bytes each,
another pass over every block each): decode time and the estimate, as ratios to the same image with its
usual 10 scans measured in this run. The estimate must stay above the measurement (an upper bound), and
everything the default budget accepts must decode within it.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from imgsim import decode_cost
from imgsim.decode import DEFAULT_MAX_DECODE_MS, _read_header, decode_image
from imgsim.errors import DecodeTooCostly
from PIL import Image
from test_decode_budget import progressive_with_extra_scans

BIG = 10**9


def timed_decode(data: bytes) -> float:
    began = time.perf_counter()
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (img.width // 8, img.height // 8))
    img.load()
    return (time.perf_counter() - began) * 1000


def main() -> int:
    failures = 0
    for side in (2000, 4000, 8000):
        baseline = None
        for extra in (0, 20, 100, 300):
            data = progressive_with_extra_scans(side, extra)
            header = _read_header(data)
            assert header is not None
            img, fmt, full = header
            estimate = decode_cost.estimate(fmt, img.mode, full, img.size, progressive=True,
                                            scans=decode_cost.jpeg_scans(data))
            measured = min(timed_decode(data) for _ in range(2))
            baseline = baseline or measured
            try:
                decode_image(data, max_bytes=BIG, max_pixels=BIG)
                verdict = "accepted"
            except DecodeTooCostly:
                verdict = "refused"
            bound = estimate.ms >= measured
            within = verdict == "refused" or measured <= DEFAULT_MAX_DECODE_MS
            failures += (not bound) + (not within)
            print(f"{side}x{side} {estimate.scans:>4} scans, {len(data) / 1024:6.0f} KB: decode {measured:7.0f} ms "
                  f"(x{measured / baseline:5.1f} of 10 scans), estimate {estimate.ms:7.0f} ms "
                  f"{'>=' if bound else '< !!'} measured; {verdict}{'' if within else ' BUT OVER BUDGET'}", flush=True)
    data = progressive_with_extra_scans(1000, 3000)
    began = time.perf_counter()
    try:
        decode_image(data, max_bytes=BIG, max_pixels=BIG)
        print("3010 scans: accepted (!)")
        failures += 1
    except DecodeTooCostly as exc:
        print(f"1000x1000, 3010 scans, {len(data) / 1024:.0f} KB: refused in {(time.perf_counter() - began) * 1000:.1f} ms: {exc}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
