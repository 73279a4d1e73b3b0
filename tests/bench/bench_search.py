"""Warm search latency of the search API at 1k and 10k indexed points (embedded Qdrant).

Each request is a real HTTP API v2 event through ``functions/search/app.handler``
(moto S3 for the presigned URLs). Per request the handler reports its phases
in ``Server-Timing``: the share spent embedding, in Qdrant, and the rest
(event parsing, validation, auth, presigning, JSON, metrics) is printed, as
ratios against baselines measured in the same run: ``embedder.embed`` alone
and ``store.search`` alone on the same vectors.

10k points are synthesized cheaply: the vectors of real photos plus small
noise, re-normalized (neighbourhoods stay realistic, no 10k embeddings needed).

Run: ``.venv/bin/python tests/bench/bench_search.py`` (or ``make bench``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for support.py and roots.py
from support import SEARCH_APP_PATH as APP_PATH
from support import handler_on_root, lambda_context

REPO_ROOT = Path(__file__).resolve().parents[2]
PHOTOS_DIR = (REPO_ROOT.parent / "shared" / "datasets" / "photos").resolve()
BUCKET = "imgsim-images"
API_KEY = "bench-key"
SIZES = (1_000, 10_000)
BASE_PHOTOS = 200  # real vectors the synthetic points are drawn around
QUERIES = 60
WARMUP = 5
NOISE = 0.015


def LambdaContext():
    return lambda_context("imgsim-search", timeout_s=60)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def server_timing(header: str) -> dict[str, float]:
    return {name: float(ms) for name, ms in re.findall(r"(\w+);dur=([\d.]+)", header)}


def timed_search(app, event: dict, sink: io.StringIO) -> tuple[float, dict[str, float]]:
    """One warm invocation: wall ms and the handler's Server-Timing phases (EMF output to ``sink``)."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(sink):
        response = app.handler(event, LambdaContext())
    total = (time.perf_counter() - start) * 1000
    assert response["statusCode"] == 200, response["body"]
    return total, server_timing(response["headers"]["Server-Timing"])


def load_app(root):
    """The search function's module, running on ``root``."""
    return handler_on_root("imgsim_search_app_bench", APP_PATH, root)


def fill_store(store, base_vectors: np.ndarray, base_keys: list[str], count: int, rng) -> None:
    from imgsim.ids import point_id_for_object
    from imgsim.store import StoredPoint, key_dirs

    existing = store.count()
    batch: list = []
    for n in range(existing, count):
        source = n % len(base_vectors)
        vector = base_vectors[source] + rng.normal(0, NOISE, base_vectors.shape[1]).astype(np.float32)
        vector /= np.linalg.norm(vector)
        key = f"synthetic/{n // 1000:02d}/{n:05d}-{base_keys[source].rsplit('/', 1)[-1]}"
        payload = {"source": "s3", "bucket": BUCKET, "key": key, "dirs": key_dirs(key), "size": 20000,
                   "content_type": "image/jpeg", "format": "JPEG", "width": 300, "height": 225,
                   "model": "bench", "indexed_at": "2026-01-01T00:00:00.000Z"}
        batch.append(StoredPoint(point_id_for_object(BUCKET, key), vector, payload))
        if len(batch) == 500:
            store.upsert(batch)
            batch = []
    store.upsert(batch)


def measure(app, root, queries: list[bytes], query_vectors: np.ndarray) -> dict[str, list[float]]:
    from imgsim_tools.events import http_api_event

    embedder, store = root.embedder(), root.store()
    out: dict[str, list[float]] = {k: [] for k in ("total", "embed", "qdrant", "rest", "embed_alone",
                                                   "search_alone", "by_id_total", "by_id_rest", "presign")}
    events = [http_api_event("POST", "/search", headers={"x-api-key": API_KEY, "content-type": "image/jpeg"},
                             body=data) for data in queries]
    sink = io.StringIO()  # the metrics line each invocation prints (CloudWatch EMF)
    for i in range(WARMUP):
        with contextlib.redirect_stdout(sink):
            app.handler(events[i], LambdaContext())
    for event, data, vector in zip(events, queries, query_vectors):
        total, phases = timed_search(app, json.loads(json.dumps(event)), sink)
        out["total"].append(total)
        out["embed"].append(phases["embed"])
        out["qdrant"].append(phases["qdrant"])
        out["presign"].append(phases["presign"])
        out["rest"].append(total - phases["embed"] - phases["qdrant"])
        start = time.perf_counter()
        embedder.embed(data)
        out["embed_alone"].append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        store.search(vector, limit=10)
        out["search_alone"].append((time.perf_counter() - start) * 1000)
    # Search by an indexed image's id: no embedding, one extra lookup.
    ids = [hit.id for hit in store.search(query_vectors[0], limit=len(queries))]
    for point_id in ids:
        event = http_api_event("POST", "/search", headers={"x-api-key": API_KEY, "content-type": "application/json"},
                               body=json.dumps({"id": point_id}))
        total, phases = timed_search(app, event, sink)
        out["by_id_total"].append(total)
        out["by_id_rest"].append(total - phases["lookup"] - phases["qdrant"])
    return out


def main() -> int:
    from moto import mock_aws

    photos = sorted(PHOTOS_DIR.glob("*.jpg"))
    if not photos:
        print(f"bench_search: no photos in {PHOTOS_DIR}", file=sys.stderr)
        return 1
    rng = np.random.default_rng(7)
    picks = rng.choice(len(photos), BASE_PHOTOS + QUERIES, replace=False)
    base_paths = [photos[i] for i in picks[:BASE_PHOTOS]]
    query_paths = [photos[i] for i in picks[BASE_PHOTOS:]]

    with tempfile.TemporaryDirectory(prefix="imgsim-bench-search-") as tmp, mock_aws():
        # AWS and powertools read their own variables; imgsim's come in the root's mapping below.
        os.environ.update({
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
            "POWERTOOLS_SERVICE_NAME": "imgsim-search", "POWERTOOLS_METRICS_NAMESPACE": "imgsim",
            "POWERTOOLS_TRACE_DISABLED": "true",
        })
        os.environ.pop("AWS_ENDPOINT_URL", None)
        import warnings

        from roots import make_root

        warnings.filterwarnings("ignore", "No application metrics to publish")
        root = make_root(Path(tmp), {"IMAGES_BUCKET": BUCKET, "IMGSIM_API_KEY": API_KEY, "QDRANT_COLLECTION": "bench"})
        app = load_app(root)
        embedder, store = root.embedder(), root.store()
        base_vectors = embedder.embed_many([p.read_bytes() for p in base_paths])
        queries = [p.read_bytes() for p in query_paths]
        query_vectors = embedder.embed_many(queries)
        base_keys = [f"photos/{p.name}" for p in base_paths]

        print(f"search API, warm, {QUERIES} image queries (raw image/jpeg body) per size; ms")
        print(f"{'points':>7} {'p50':>7} {'p99':>7} | {'embed':>6} {'qdrant':>7} {'rest':>6} (p50) | "
              f"{'embed%':>6} {'qdrant%':>7} {'rest%':>6} | {'x(embed+search alone)':>21} | "
              f"{'by id p50':>9} {'by id rest':>10}")
        for size in SIZES:
            fill_store(store, base_vectors, base_keys, size, rng)
            assert store.count() == size
            r = measure(app, root, queries, query_vectors)
            p50 = percentile(r["total"], 50)
            shares = {k: 100 * sum(r[k]) / sum(r["total"]) for k in ("embed", "qdrant", "rest")}
            baseline = percentile(r["embed_alone"], 50) + percentile(r["search_alone"], 50)
            print(f"{size:>7} {p50:7.2f} {percentile(r['total'], 99):7.2f} | "
                  f"{percentile(r['embed'], 50):6.2f} {percentile(r['qdrant'], 50):7.2f} "
                  f"{percentile(r['rest'], 50):6.2f}       | "
                  f"{shares['embed']:5.1f}% {shares['qdrant']:6.1f}% {shares['rest']:5.1f}% | "
                  f"{p50 / baseline:20.2f}x | "
                  f"{percentile(r['by_id_total'], 50):9.2f} {percentile(r['by_id_rest'], 50):10.2f}")
            print(f"{'':>7} baselines: embed alone p50 {percentile(r['embed_alone'], 50):.2f} ms, "
                  f"store.search alone p50 {percentile(r['search_alone'], 50):.2f} ms; "
                  f"rest p99 {percentile(r['rest'], 99):.2f} ms; presigning 10 URLs p50 "
                  f"{percentile(r['presign'], 50):.2f} ms of the rest")
        root.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
