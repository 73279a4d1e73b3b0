#!/usr/bin/env python3
"""`make bench-restart` (also part of `make bench-scale`): `imgsim serve` start and stop against the bucket size.

Issue 9 asks for a restart ready in <= 3 s at any bucket size and one Ctrl-C stopping in <= 2 s. This starts
`imgsim serve` on an empty data dir (the baseline, same run) and on one holding ``--objects`` stored images
(default 100,000: the 1,692 shared photos, hard-linked under the durable bucket's layout so the corpus costs
no disk), then on the same data dir with ``--pending`` writes whose events were never handled (what a
``kill -9`` leaves). For each: seconds to answer /health (wall, process start included), the stack's own
"ready in" figure, GETs of restored objects, the first listing page (which brings every key into memory,
once), and seconds from one SIGINT to exit. Ratios are against the
empty start.

    python tests/bench/restart.py [--objects 100000] [--pending 200]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from imgsim_tools.local.durable_s3 import DurableBucket
from serve_support import BUCKET, Serve

PHOTOS = REPO_ROOT.parent / "shared" / "datasets" / "photos"


def build_bucket(root: Path, count: int, pending: int) -> list[tuple[str, Path]]:
    """``count`` objects in the durable bucket's layout (rows + one file each, hard links to shared photos)."""
    photos = sorted(PHOTOS.glob("*.jpg"))
    digests = {p: hashlib.md5(p.read_bytes()).hexdigest() for p in photos}
    durable = DurableBucket(root, BUCKET)
    durable.close()
    objects = root / "objects"
    rows, sample = [], []
    now = time.time()
    for i in range(count):
        photo = photos[i % len(photos)]
        key = f"photos/{i // 1000:03d}/{i:07d}.jpg"
        name = f"{hashlib.sha256(key.encode()).hexdigest()[:40]}-{digests[photo]}.bin"
        os.link(photo, objects / name)
        rows.append((key, name, digests[photo], photo.stat().st_size, "image/jpeg", now))
        if i % 9973 == 0:
            sample.append((key, photo))
    db = sqlite3.connect(root / "bucket.sqlite")
    with db:
        db.executemany("INSERT INTO objects VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO pending VALUES (?, 'put', ?, ?)",
                       [(key, etag, size) for key, _, etag, size, _, _ in random.Random(7).sample(rows, pending)])
    db.close()
    return sample


def measure(label: str, data_dir: Path, sample: list[tuple[str, Path]], baseline: dict | None) -> dict:
    serve = Serve(data_dir, env={"IMGSIM_INDEX_THRESHOLD": "100000000"})
    try:
        serve.wait_ready(timeout=600)
        assert serve.ready_seconds is not None
        banner = re.search(r"ready in ([0-9.]+) s", serve.stdout())
        restored = re.search(r"\((\d+) restored\)", serve.stdout())
        got = []
        for key, photo in sample[:3]:
            body = serve.s3().get_object(Bucket=BUCKET, Key=key)["Body"].read()
            got.append(body == photo.read_bytes())
        began = time.monotonic()
        page = serve.s3().list_objects_v2(Bucket=BUCKET, MaxKeys=1000)
        first_list_s = time.monotonic() - began
        assert page["KeyCount"] == min(1000, int(restored.group(1)) if restored else 0)
        began = time.monotonic()
        code = serve.stop(signal.SIGINT, timeout=120)
        stop_s = time.monotonic() - began
    finally:
        serve.kill()
    result = {"label": label, "wall": serve.ready_seconds, "ready": float(banner.group(1)) if banner else float("nan"),
              "stop": stop_s, "first_list": first_list_s, "restored": int(restored.group(1)) if restored else -1, "gets_ok": all(got), "exit": code}
    ratio = f"  x{result['wall'] / baseline['wall']:.2f} of empty" if baseline else ""
    print(f"{label:<34} /health after {result['wall']:5.2f} s (stack 'ready in' {result['ready']:4.1f} s){ratio}; "
          f"restored {result['restored']:>7}; GETs {'ok' if result['gets_ok'] else 'WRONG'}; "
          f"first listing page {first_list_s:5.2f} s; one SIGINT -> exit {result['exit']} in {stop_s:4.2f} s",
          flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--pending", type=int, default=200)
    args = parser.parse_args()
    if not PHOTOS.is_dir():
        print(f"needs the shared photos at {PHOTOS}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="imgsim-restart-", dir=REPO_ROOT / ".bench" if (REPO_ROOT / ".bench").is_dir() else None))
    try:
        baseline = measure("empty data dir (baseline)", work / "empty", [], None)
        began = time.monotonic()
        full = work / "full"
        sample = build_bucket(full / "s3" / BUCKET, args.objects, 0)
        print(f"(built {args.objects:,} stored objects in {time.monotonic() - began:.1f} s)", flush=True)
        measure(f"{args.objects:,} objects", full, sample, baseline)
        measure(f"{args.objects:,} objects, restart again", full, sample, baseline)
        owed = work / "owed"
        sample = build_bucket(owed / "s3" / BUCKET, args.objects, args.pending)
        result = measure(f"{args.objects:,} objects, {args.pending} owed", owed, sample, baseline)
        print(f"goal: ready <= 3 s at any bucket size, one Ctrl-C <= 2 s; worst here: ready {result['wall']:.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
