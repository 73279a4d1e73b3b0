"""What duplicate detection costs: indexing time and store size, dedupe on against IMGSIM_DEDUPE=off (issue 19's goal:
at most +50 % indexing time and +25 % store size and memory on the same corpus).

Both through the IndexFunction handler (moto S3 + SQS, embedded Qdrant on disk), batches of 10, no simulated S3
latency (the issue's measurement: S3's tens of milliseconds would hide the check's cost), the same photos for both,
the two settings alternated so that machine load hits both alike; the median of ``REPEATS`` runs. Then each setting
indexes ``SIZE_PHOTOS`` photos into a fresh store: the collection's bytes on disk (after the HNSW and quantized copies
are built) and what the duplicate check adds to each point's payload (the signature and the links).

RAM: a Qdrant server keeps the int8 vectors and the HNSW graph in RAM, and with ``QDRANT_ON_DISK_PAYLOAD=true``
(the template's default) payloads on disk: the signature lives in the payload, so what dedupe adds to RAM is the
keyword index on ``dup_links`` (only images with duplicates have entries). Printed as bytes per image from the
collection's own figures, not measured RSS (the embedded engine maps files; RSS says little per collection).

Run: ``make bench`` or ``.venv/bin/python tests/bench/bench_dedupe_cost.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PHOTOS_DIR = (REPO_ROOT.parent / "shared" / "datasets" / "photos").resolve()
BATCH = 10
REPEATS = 15
SIZE_PHOTOS = 400
TIME_GOAL, SIZE_GOAL = 1.50, 1.25

sys.path.insert(0, str(REPO_ROOT / "tests" / "bench"))
# bench_index sets the benchmarks' AWS and powertools environment and the import paths when imported.
from bench_index import BUCKET, REGION, bench_variables, lambda_event, stage_metrics
from support import INDEX_APP_PATH, handler_on_root, lambda_context, notifying_bucket


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> int:
    photos = sorted(PHOTOS_DIR.glob("*.jpg"))
    if len(photos) < SIZE_PHOTOS:
        print(f"bench_dedupe_cost: need {SIZE_PHOTOS} photos in {PHOTOS_DIR}", file=sys.stderr)
        return 1
    import boto3
    from moto import mock_aws
    from roots import make_root

    tmp = Path(tempfile.mkdtemp(prefix="imgsim-bench-dedupe-"))
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url, queue_arn = notifying_bucket(s3, sqs, BUCKET, "imgsim-index")
        roots, apps = {}, {}
        for mode in ("on", "off"):
            variables = bench_variables(str(tmp / f"qdrant-{mode}"))
            variables["IMGSIM_DEDUPE"] = mode
            roots[mode] = make_root(tmp / mode, variables)
            apps[mode] = handler_on_root(f"index_app_{mode}", INDEX_APP_PATH, roots[mode])
        run_id = [0]

        def index(mode: str, batch: list[Path]) -> tuple[float, dict[str, float]]:
            run_id[0] += 1
            for i, path in enumerate(batch):
                s3.put_object(Bucket=BUCKET, Key=f"{mode}/{run_id[0]}/{i}.jpg", Body=path.read_bytes())
            event = lambda_event(sqs, queue_url, queue_arn, len(batch))
            out = io.StringIO()
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(out):
                response = apps[mode].handler(event, lambda_context("IndexFunction", timeout_s=60))
            seconds = time.perf_counter() - t0
            if response["batchItemFailures"]:
                raise RuntimeError(f"handler failed records: {response}")
            return seconds, stage_metrics(out.getvalue())

        # Time: batches of 10, alternating on/off on the same photos.
        for mode in ("on", "off"):
            index(mode, photos[:BATCH])  # warm: model, collection, clients
        per_image: dict[str, list[float]] = {"on": [], "off": []}
        dedupe_ms: list[float] = []
        for r in range(REPEATS):
            batch = photos[BATCH * (r + 1):BATCH * (r + 2)]
            for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
                seconds, metrics = index(mode, batch)
                per_image[mode].append(seconds * 1000 / len(batch))
                if mode == "on":
                    dedupe_ms.append(metrics.get("DedupeMs", 0.0) / len(batch))
        on, off = statistics.median(per_image["on"]), statistics.median(per_image["off"])
        print(f"indexing through the handler, batches of {BATCH}, no S3 latency, median of {REPEATS}:")
        print(f"  dedupe off {off:6.2f} ms/image ({1000 / off:5.1f} images/s)")
        print(f"  dedupe on  {on:6.2f} ms/image ({1000 / on:5.1f} images/s); the check itself "
              f"{statistics.median(dedupe_ms):5.2f} ms/image")
        time_ratio = on / off
        print(f"  time ratio on/off {time_ratio:.2f}x (goal <= {TIME_GOAL:.2f}x)")

        # Size: the same photos into two fresh stores.
        sizes = {}
        for mode in ("on", "off"):
            roots[mode].close()
            variables = bench_variables(str(tmp / f"size-{mode}"))
            variables["IMGSIM_DEDUPE"] = mode
            roots[mode] = make_root(tmp / f"size-{mode}", variables)
            apps[mode].use_root(roots[mode])
            for start in range(0, SIZE_PHOTOS, 50):
                index(mode, photos[start:start + 50])
            store = roots[mode].store()
            store.optimize()
            records, payload_bytes, extra = [], 0, 0
            offset = None
            while True:
                page, offset = store.scroll(limit=500, offset=offset)
                records.extend(page)
                if offset is None:
                    break
            for record in records:
                payload_bytes += len(json.dumps(record.payload))
                extra += sum(len(json.dumps(record.payload[f])) for f in ("sig", "dup_links", "dup_scores",
                                                                        "dup_etags") if f in record.payload)
            sizes[mode] = (folder_bytes(tmp / f"size-{mode}"), payload_bytes / len(records), extra / len(records))
        # A small collection's folder is mostly preallocated segment files: the point's own bytes are the figure.
        dim = roots["off"].embedder().dim
        point = 4 * dim + dim + 2 * 16 * 4  # float32 original + int8 copy + HNSW links at m=16 (level 0)
        per_point = {mode: point + sizes[mode][1] for mode in sizes}
        disk_ratio = per_point["on"] / per_point["off"]
        print(f"store after {SIZE_PHOTOS} photos (embedded Qdrant, on disk, optimized):")
        for mode in ("off", "on"):
            total, payload, extra = sizes[mode]
            print(f"  dedupe {mode:>3}: {per_point[mode]:7.0f} B per image = vectors and graph {point} B + payload "
                  f"{payload:6.0f} B (the duplicate check's {extra:5.0f} B); folder {total / 2**20:6.1f} MiB")
        print(f"  size ratio on/off {disk_ratio:.2f}x (goal <= {SIZE_GOAL:.2f}x); RAM: the signature is payload "
              f"(on disk with QDRANT_ON_DISK_PAYLOAD=true), only the dup_links keyword index is in memory")
        for mode in ("on", "off"):
            roots[mode].close()
        ok = time_ratio <= TIME_GOAL and disk_ratio <= SIZE_GOAL
        print("goal met" if ok else "GOAL NOT MET")
    return 0


if __name__ == "__main__":
    sys.exit(main())
