#!/usr/bin/env python3
"""`make bench-scale` (after scale.py): duplicates at 100,000 images on the embedded store.

Corpus: scale.py's cached embeddings of augmented variants of the shared photos (``.bench/scale``). Each image
gets a signature in ``images_dedupe`` as the indexer stores it (whole + five crops; here the image's vector
and five noisy copies of it, cosine ~0.96, standing in for the grey embeddings, which need the pixels), and
one in ten is recorded as a duplicate of another image (``duplicate_of``, ``has_duplicates``), so ~10,000
groups. Measured, after both HNSW indexes are built:

- the ingest-time check per image: ``DuplicateIndex.best_match`` (seven searches) + storing six vectors,
  against one upsert of the image itself (what indexing does anyway) in the same run; plus the signature's
  seven embeddings, measured by bench_duplicates.py (~6.8 ms);
- ``imgsim duplicates --json`` listing every group, end to end in a fresh process (goal <= 60 s).

    python tests/bench/dedupe_scale.py [--points 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale
from imgsim import dedupe
from imgsim.duplicates import HAS_DUPLICATES, HAS_DUPLICATES_FIELD
from imgsim.points import DUPLICATE_OF_FIELD, DUPLICATE_SCORE_FIELD
from imgsim.store import StorageOptions, StoredPoint
from imgsim.store.edge import EdgeStore


def signature(vector: np.ndarray, rng: np.random.Generator) -> dedupe.Signature:
    crops = vector[None] + rng.normal(scale=0.009, size=(5, vector.shape[0])).astype(np.float32)
    crops /= np.linalg.norm(crops, axis=1, keepdims=True)
    return dedupe.Signature(vector, vector, crops)


def build(directory: str, vectors: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    n = len(vectors)
    store = EdgeStore(directory, "images", dim=vectors.shape[1], options=StorageOptions())
    index = dedupe.DuplicateIndex(store, vectors.shape[1])
    targets = set()
    began = time.perf_counter()
    for start in range(0, n, 1000):
        points, signatures = [], []
        for i in range(start, min(n, start + 1000)):
            payload = {**scale.payload(i, np.zeros(n, dtype=np.int8)), "width": 300 + i % 7, "height": 200,
                       "size": 20000 + i, "indexed_at": "2026-11-26T00:00:00.000Z", "etag": f"e{i}"}
            if i % 10 == 9:  # a duplicate of an image indexed before it
                target = int(rng.integers(0, i))
                payload.update({DUPLICATE_OF_FIELD: scale.point_id(target), DUPLICATE_SCORE_FIELD: 0.9})
                targets.add(target)
            points.append(StoredPoint(scale.point_id(i), vectors[i].tolist(), payload))
            signatures.append((scale.point_id(i), signature(vectors[i], rng)))
        store.upsert(points)
        index.add(signatures)
    for start in range(0, len(targets), 500):
        chunk = sorted(targets)[start:start + 500]
        records = store.retrieve([scale.point_id(t) for t in chunk], with_vectors=True)
        store.upsert([StoredPoint(r.id, r.vector, {**r.payload, HAS_DUPLICATES_FIELD: HAS_DUPLICATES}) for r in records])
    print(f"built {n:,} images, {len(targets):,} groups, {n * 6:,} signature vectors in "
          f"{time.perf_counter() - began:.0f} s; building both HNSW indexes ...", flush=True)
    began = time.perf_counter()
    store.optimize()
    index.store.optimize()
    print(f"indexes built in {time.perf_counter() - began:.0f} s", flush=True)
    store.close()


def ingest_check(directory: str, vectors: np.ndarray, queries: np.ndarray) -> None:
    """Per image, in batches of 10 as the indexer gets them: the seven searches (first on a store just opened,
    then in the steady state of a running process: the quantized vectors and graph read in by 3,000 earlier
    checks), storing the signature, and the image's own upsert for comparison."""
    rng = np.random.default_rng(5)
    store = EdgeStore(directory, "images", dim=vectors.shape[1], options=StorageOptions())
    index = dedupe.DuplicateIndex(store, vectors.shape[1])

    def checks(sample: np.ndarray) -> list[float]:
        times = []
        for vector in sample:
            sig = signature(vector, rng)
            began = time.perf_counter()
            index.best_match("00000000-0000-0000-0002-000000000000", sig)
            times.append((time.perf_counter() - began) * 1000)
        return times

    cold = checks(queries[:100])
    noisy = vectors[rng.choice(len(vectors), 3000, replace=False)]
    checks(noisy + rng.normal(scale=0.02, size=noisy.shape).astype(np.float32))
    warm = checks(queries[100:300])
    adds, upserts = [], []
    for start in range(0, 200, 10):
        batch = [(f"00000000-0000-0000-0001-{q:012d}", signature(queries[q], rng)) for q in range(start, start + 10)]
        began = time.perf_counter()
        index.add(batch)
        adds.append((time.perf_counter() - began) * 1000 / len(batch))
        began = time.perf_counter()
        store.upsert([StoredPoint(pid, queries[int(pid[-12:])].tolist(), {"key": f"bench/{pid}.jpg", "dirs": ["bench/"]})
                      for pid, _ in batch])
        upserts.append((time.perf_counter() - began) * 1000 / len(batch))
    store.close()

    def p(values: list[float], q: float) -> float:
        return sorted(values)[int(len(values) * q)]

    add, upsert = statistics.median(adds), statistics.median(upserts)
    print(f"ingest-time check at {len(vectors):,} images, per image: searches median {statistics.median(warm):.1f} ms "
          f"(p90 {p(warm, 0.9):.1f}) warm, {statistics.median(cold):.1f} ms (p90 {p(cold, 0.9):.1f}) on a store just "
          f"opened; storing the signature {add:.2f} ms; the image's own upsert {upsert:.2f} ms; plus the signature's "
          f"embeddings (bench_duplicates: ~6.8 ms)", flush=True)


def cli_listing(directory: str) -> None:
    env = {**os.environ, "QDRANT_PATH": directory, "QDRANT_COLLECTION": "images"}
    env.pop("QDRANT_URL", None)
    began = time.perf_counter()
    done = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "imgsim"), "duplicates", "--json"], env=env,
                          capture_output=True, text=True, check=False)
    took = time.perf_counter() - began
    if done.returncode:
        print(done.stderr[-2000:])
        raise SystemExit("imgsim duplicates failed")
    groups = json.loads(done.stdout)["groups"]
    members = sum(len(g["members"]) for g in groups)
    print(f"imgsim duplicates --json: {len(groups):,} groups ({members:,} images) in {took:.1f} s "
          f"(goal <= 60 s: {'met' if took <= 60 else 'NOT met'})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--points", type=int, default=100_000)
    args = parser.parse_args()
    vectors, _, queries = scale.corpus(args.points, 200_000, 300)
    with tempfile.TemporaryDirectory(prefix="imgsim-dedupe-scale-", dir=scale.WORK) as directory:
        build(directory, vectors)
        ingest_check(directory, vectors, queries)
        cli_listing(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
