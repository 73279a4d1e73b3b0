"""Indexing throughput through the IndexFunction handler (moto S3 + SQS, embedded Qdrant).

For batches of 10 and 100 real photos: images/s through ``functions/index/app.py``
and the per-stage wall time (fetch, decode, embed, the duplicate check, upsert, from the handler's
own metrics). The baseline, measured in the same run on other copies of the
same photos, is the naive loop: GET one object, decode and embed it, upsert one
point, next. The ratio handler/baseline is the figure to watch.

moto answers a GET in well under a millisecond while real S3 takes tens, which
hides what the concurrent fetch is for; each case therefore also runs with a
simulated S3 latency (``S3_LATENCY_MS``, a sleep per GetObject) applied to both
the handler and the baseline.

Run: ``make bench`` or ``.venv/bin/python tests/bench/bench_index.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PHOTOS_DIR = (REPO_ROOT.parent / "shared" / "datasets" / "photos").resolve()
BUCKET = "imgsim-images"
REGION = "us-east-1"
BATCH_SIZES = (10, 100)
REPEATS = 3
S3_LATENCY_MS = 30

for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
    "POWERTOOLS_SERVICE_NAME": "imgsim-bench", "POWERTOOLS_METRICS_NAMESPACE": "imgsim",
    "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING",
}.items():
    os.environ.setdefault(_name, _value)
sys.path.insert(0, str(REPO_ROOT / "layers" / "shared"))
sys.path.insert(0, str(REPO_ROOT / "tests"))
from support import INDEX_APP_PATH, handler_on_root, lambda_context, notifying_bucket


def FakeLambdaContext():
    return lambda_context("IndexFunction", timeout_s=60)


def bench_variables(qdrant_path: str) -> dict[str, str]:
    """The shell's imgsim variables (IMGSIM_FETCH_CONCURRENCY, IMGSIM_NUM_THREADS, ...), on the embedded Qdrant
    at ``qdrant_path`` whatever the shell names."""
    from imgsim.settings import (
        QDRANT_API_KEY,
        QDRANT_API_KEY_PARAM,
        QDRANT_URL,
        VARIABLES,
    )

    variables = {name: os.environ[name] for name in VARIABLES if name in os.environ}
    for name in (QDRANT_URL, QDRANT_API_KEY, QDRANT_API_KEY_PARAM):
        variables.pop(name, None)
    return {**variables, "QDRANT_PATH": qdrant_path}


def lambda_event(sqs, queue_url: str, queue_arn: str, count: int) -> dict:
    from imgsim_tools.events import sqs_event

    received = []
    while len(received) < count:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                       AttributeNames=["All"]).get("Messages", [])
        if not messages:
            break
        for m in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
            if '"s3:TestEvent"' not in m["Body"]:
                received.append(m)
    if len(received) != count:
        raise RuntimeError(f"expected {count} notifications, got {len(received)}")
    return sqs_event(received, queue_arn, REGION)


def stage_metrics(emf_output: str) -> dict[str, float]:
    import json

    totals: dict[str, float] = {}
    for line in emf_output.splitlines():
        if '"_aws"' not in line:
            continue
        doc = json.loads(line)
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = doc[metric["Name"]]
                value = sum(value) if isinstance(value, list) else value
                totals[metric["Name"]] = totals.get(metric["Name"], 0.0) + value
    return totals


def main() -> int:
    photos = sorted(PHOTOS_DIR.glob("*.jpg"))
    if len(photos) < 2 * max(BATCH_SIZES):
        print(f"bench_index: need {2 * max(BATCH_SIZES)} photos in {PHOTOS_DIR}", file=sys.stderr)
        return 1
    import boto3
    from moto import mock_aws

    tmp = tempfile.TemporaryDirectory(prefix="imgsim-bench-index-")
    from imgsim.ids import point_id_for_object
    from imgsim.points import image_payload
    from imgsim.store import StoredPoint
    from roots import make_root

    latency = {"ms": 0}

    def slow_get(**_):
        if latency["ms"]:
            time.sleep(latency["ms"] / 1000.0)

    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url, queue_arn = notifying_bucket(s3, sqs, BUCKET, "imgsim-index")
        root = make_root(Path(tmp.name), bench_variables(str(Path(tmp.name) / "qdrant")))
        app = handler_on_root("index_app", INDEX_APP_PATH, root)
        run_id = [0]

        def through_handler(batch: list[Path]) -> tuple[float, dict[str, float]]:
            run_id[0] += 1
            for i, path in enumerate(batch):
                s3.put_object(Bucket=BUCKET, Key=f"handler/{run_id[0]}/{i}.jpg", Body=path.read_bytes())
            event = lambda_event(sqs, queue_url, queue_arn, len(batch))
            out = io.StringIO()
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(out):
                response = app.handler(event, FakeLambdaContext())
            seconds = time.perf_counter() - t0
            if response["batchItemFailures"]:
                raise RuntimeError(f"handler failed records: {response}")
            return seconds, stage_metrics(out.getvalue())

        def one_at_a_time(batch: list[Path]) -> float:
            store, embedder, s3_runtime = root.store(), root.embedder(), root.s3()
            run_id[0] += 1
            keys = []
            for i, path in enumerate(batch):
                keys.append(f"naive/{run_id[0]}/{i}.jpg")
                s3.put_object(Bucket=BUCKET, Key=keys[-1], Body=path.read_bytes())
            lambda_event(sqs, queue_url, queue_arn, len(batch))  # drop these notifications
            t0 = time.perf_counter()
            for key in keys:
                data = s3_runtime.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                image = embedder.decode(data)
                vector = embedder.embed_decoded([image])[0]
                payload = image_payload(key=key, image=image, size=len(data), model=embedder.model_name,
                                        bucket=BUCKET)
                store.upsert([StoredPoint(point_id_for_object(BUCKET, key), vector, payload)])
            return time.perf_counter() - t0

        print(f"indexing through the handler (moto S3 + SQS, embedded Qdrant, "
              f"IMGSIM_FETCH_CONCURRENCY={root.settings.index.fetch_concurrency}, "
              f"IMGSIM_NUM_THREADS={root.settings.engine.num_threads}); median of {REPEATS}")
        print(f"{'qdrant':>6} {'S3 lat.':>7} {'batch':>5} | {'images/s':>8} {'baseline':>8} {'ratio':>6} | "
              f"{'fetch':>7} {'decode':>7} {'embed':>7} {'dedupe':>7} {'upsert':>7}  ms per batch")
        # Embedded Qdrant on disk (what `imgsim serve` uses) and in memory: on disk, local
        # mode writes each point to SQLite, so its upsert cost is not what a server charges.
        for qdrant, path, latencies in (("disk", str(Path(tmp.name) / "qdrant"), (0, S3_LATENCY_MS)),
                                        ("memory", ":memory:", (S3_LATENCY_MS,))):
            root.close()
            root = make_root(Path(tmp.name), bench_variables(path))
            app.use_root(root)
            root.s3().meta.events.register("before-call.s3.GetObject", slow_get)
            latency["ms"] = 0
            through_handler(photos[:10])  # warm: model, collection, clients
            one_at_a_time(photos[10:20])
            for ms in latencies:
                latency["ms"] = ms
                for size in BATCH_SIZES:
                    handler_runs, baseline_runs, stages = [], [], []
                    for r in range(REPEATS):
                        start = (r * size) % (len(photos) - size)
                        batch = photos[start:start + size]
                        seconds, metrics = through_handler(batch)
                        handler_runs.append(size / seconds)
                        stages.append(metrics)
                        baseline_runs.append(size / one_at_a_time(batch))
                    rate, base = statistics.median(handler_runs), statistics.median(baseline_runs)
                    stage = {k: statistics.median(s.get(k, 0.0) for s in stages)
                             for k in ("FetchMs", "DecodeMs", "EmbedMs", "DedupeMs", "UpsertMs")}
                    print(f"{qdrant:>6} {ms:>5}ms {size:>5} | {rate:8.1f} {base:8.1f} {rate / base:5.2f}x | "
                          f"{stage['FetchMs']:7.1f} {stage['DecodeMs']:7.1f} {stage['EmbedMs']:7.1f} "
                          f"{stage['DedupeMs']:7.1f} {stage['UpsertMs']:7.1f}")
        print("baseline: the same photos, one at a time: GET, decode + embed, upsert one point (no duplicate "
              "check); dedupe: the handler's duplicate check at upload (signatures, their searches and storage)")
        root.close()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
