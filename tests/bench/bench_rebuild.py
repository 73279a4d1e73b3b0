#!/usr/bin/env python3
"""Rebuilding the index from the bucket (`imgsim backfill`): images per second per indexer and per download
concurrency, the figures behind README "Recovery runbook".

moto's S3 in-process with a simulated 30 ms per GetObject (real S3's first-byte latency; moto answers in
well under a millisecond), real shared photos, a fresh embedded store per run, the duplicate check on
(the default) and off. Ratios are to one download at a time, measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PHOTOS = sorted((REPO_ROOT.parent / "shared" / "datasets" / "photos").glob("photo_*.jpg"))
BUCKET = "imgsim-images"
COUNT = int(os.environ.get("REBUILD_IMAGES", "320"))
S3_LATENCY_S = 0.030

os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1"})
sys.path.insert(0, str(REPO_ROOT / "tests"))  # roots.py


def run(concurrency: int, dedupe: bool, scratch: Path) -> float:
    from imgsim_tools.commands import backfill
    from imgsim_tools.session import Session
    from roots import make_root

    # A fresh embedded store per run; the model is shared by every root of the process (tests/roots.py).
    root = make_root(scratch / f"q-{concurrency}-{dedupe}", {"IMGSIM_DEDUPE": "on" if dedupe else "off"})
    client = root.s3()
    real = client.get_object

    def slow_get(**kwargs):
        time.sleep(S3_LATENCY_S)
        return real(**kwargs)

    client.get_object = slow_get
    parser = argparse.ArgumentParser()
    backfill.add_arguments(parser)
    args = parser.parse_args([f"s3://{BUCKET}", "--quiet", "--concurrency", str(concurrency), "--batch-size", "32"])
    root.embedder()  # the model is loaded once per process on Lambda too: not part of the rate
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        assert backfill.run(args, Session.on_root(root)) == 0
    seconds = time.perf_counter() - started
    assert root.store().count() == COUNT
    root.close()
    return COUNT / seconds


def main() -> int:
    import boto3
    from moto import mock_aws

    with mock_aws(), tempfile.TemporaryDirectory() as scratch:
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        for i in range(COUNT):
            s3.put_object(Bucket=BUCKET, Key=f"photos/{i:05d}.jpg", Body=PHOTOS[i % len(PHOTOS)].read_bytes())
        print(f"rebuild of {COUNT} photos from the bucket (`imgsim backfill`), one process, {os.cpu_count()} cores, "
              f"S3 GetObject + {S3_LATENCY_S * 1000:.0f} ms")
        baseline = None
        for dedupe in (True, False):
            for concurrency in (1, 4, 8, 16):
                rate = run(concurrency, dedupe, Path(scratch))
                baseline = baseline or rate
                print(f"  duplicate check {'on ' if dedupe else 'off'}  downloads in parallel {concurrency:2d}: "
                      f"{rate:6.1f} images/s  (x{rate / baseline:4.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
