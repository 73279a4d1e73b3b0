#!/usr/bin/env python3
"""`make bench-scale` (after scale.py): duplicates at 100,000 images on the embedded store.

Corpus: scale.py's cached embeddings of augmented variants of the shared photos (``.bench/scale``). Each image
is stored as the indexer stores it: its search vector and, in its payload, a duplicate signature
(``imgsim.signature``, 347 B; random codes here: the grey embeddings need the pixels) and for one image in ten a
link to an earlier image (``imgsim.dedupe``), so ~10,000 groups. Measured, after the HNSW index is built:

- the ingest-time check per image, in batches of 10 as the indexer gets them: the candidate search
  (``DuplicateLinks.find``: one batched search by the search vectors, the signatures decoded from the hits and
  scored) and writing the links (``set_fields``), against the image's own upsert (what indexing does anyway) in
  the same run; the signature's two 96x96 embeddings are bench_signature's figure (~0.4-0.6 of one embedding);
- ``imgsim duplicates --json`` listing every group, end to end in a fresh process (goal <= 60 s);
- bytes per image the duplicate check adds to the payload.

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
from imgsim import signature
from imgsim.dedupe import SIG_FIELD, DuplicateLinks, Link, Subject, link_fields
from imgsim.store import StorageOptions, StoredPoint, field_unchanged
from imgsim.store.edge import EdgeStore


def synthetic_signature(rng: np.random.Generator) -> signature.Signature:
    return signature.Signature(rng.integers(-127, 128, size=(signature.ROWS, signature.DIM), dtype=np.int8))


def build(directory: str, vectors: np.ndarray) -> int:
    rng = np.random.default_rng(3)
    n = len(vectors)
    store = EdgeStore(directory, "images", dim=vectors.shape[1], options=StorageOptions())
    linked = 0
    began = time.perf_counter()
    for start in range(0, n, 1000):
        points = []
        for i in range(start, min(n, start + 1000)):
            payload = {**scale.payload(i, np.zeros(n, dtype=np.int8)), "width": 300 + i % 7, "height": 200,
                       "size": 20000 + i, "indexed_at": "2026-11-26T00:00:00.000Z", "etag": f"e{i}",
                       SIG_FIELD: signature.encode(synthetic_signature(rng))}
            if i % 10 == 9:  # a duplicate of an image indexed before it
                target = int(rng.integers(0, i))
                payload.update(link_fields([Link(scale.point_id(target), 0.9, f"e{target}")]))
                linked += 1
            points.append(StoredPoint(scale.point_id(i), vectors[i].tolist(), payload))
        store.upsert(points)
    print(f"built {n:,} images, {linked:,} linked to an earlier one, in {time.perf_counter() - began:.0f} s; "
          f"building the HNSW index ...", flush=True)
    began = time.perf_counter()
    store.optimize()
    print(f"index built in {time.perf_counter() - began:.0f} s", flush=True)
    store.close()
    return linked


def ingest_check(directory: str, vectors: np.ndarray, queries: np.ndarray) -> None:
    """Per image, in batches of 10: the candidate search and scoring (first on a store just opened, then in the
    steady state of a running process: quantized vectors and graph read in by 3,000 earlier checks), writing
    links, and the image's own upsert for comparison."""
    rng = np.random.default_rng(5)
    store = EdgeStore(directory, "images", dim=vectors.shape[1], options=StorageOptions())
    links = DuplicateLinks(store, signature.DEFAULT_DUPLICATE_THRESHOLD)

    def subjects(sample: np.ndarray, base: int) -> list[Subject]:
        return [Subject(f"00000000-0000-0000-0002-{base + n:012d}", v.tolist(), synthetic_signature(rng), "q")
                for n, v in enumerate(sample)]

    def checks(sample: np.ndarray, base: int) -> list[float]:
        times = []
        for start in range(0, len(sample), 10):
            batch = subjects(sample[start:start + 10], base + start)
            began = time.perf_counter()
            links.find(batch)
            times.append((time.perf_counter() - began) * 1000 / len(batch))
        return times

    cold = checks(queries[:100], 0)
    noisy = vectors[rng.choice(len(vectors), 3000, replace=False)]
    checks(noisy + rng.normal(scale=0.02, size=noisy.shape).astype(np.float32), 1000)
    warm = checks(queries[100:300], 10_000)
    writes, upserts = [], []
    for start in range(0, 200, 10):
        batch = subjects(queries[start:start + 10], 20_000 + start)
        began = time.perf_counter()
        store.upsert([StoredPoint(s.point_id, list(s.vector), {"key": f"bench/{s.point_id}.jpg", "dirs": ["bench/"],
                                                               "etag": "q", SIG_FIELD: signature.encode(s.sig)})
                      for s in batch])
        upserts.append((time.perf_counter() - began) * 1000 / len(batch))
        began = time.perf_counter()
        for s in batch:  # what the indexer writes for an image that found a duplicate
            store.set_fields(field_unchanged("etag", {s.point_id: "q"}),
                             link_fields([Link(scale.point_id(start), 0.9, f"e{start}")]))
        writes.append((time.perf_counter() - began) * 1000 / len(batch))
    store.close()

    def p(values: list[float], q: float) -> float:
        return sorted(values)[int(len(values) * q)]

    write, upsert = statistics.median(writes), statistics.median(upserts)
    print(f"ingest-time check at {len(vectors):,} images, per image (batches of 10): candidate search + scoring median "
          f"{statistics.median(warm):.2f} ms (p90 {p(warm, 0.9):.2f}) warm, {statistics.median(cold):.2f} ms "
          f"(p90 {p(cold, 0.9):.2f}) on a store just opened; writing links {write:.2f} ms (only images that found a "
          f"duplicate); the image's own upsert {upsert:.2f} ms; plus the signature's two 96x96 embeddings "
          f"(bench_signature: ~0.4-0.6 of one search embedding)", flush=True)


def cli_listing(directory: str, linked: int) -> None:
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
    grouped = [m["id"] for g in groups for m in g["members"]]
    assert len(grouped) == len(set(grouped)), "an image in two groups"
    print(f"imgsim duplicates --json: {len(groups):,} groups ({members:,} images, from {linked:,} links) in "
          f"{took:.1f} s (goal <= 60 s: {'met' if took <= 60 else 'NOT met'})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--points", type=int, default=100_000)
    args = parser.parse_args()
    vectors, _, queries = scale.corpus(args.points, 200_000, 300)
    sample = signature.encode(synthetic_signature(np.random.default_rng(0)))
    print(f"payload per image for the duplicate check: the signature {len(sample)} B; an image with a duplicate "
          f"adds its links (~{len(json.dumps(link_fields([Link(scale.point_id(1), 0.9, 'e1')])))} B per link)")
    with tempfile.TemporaryDirectory(prefix="imgsim-dedupe-scale-", dir=scale.WORK) as directory:
        linked = build(directory, vectors)
        ingest_check(directory, vectors, queries)
        cli_listing(directory, linked)
    return 0


if __name__ == "__main__":
    sys.exit(main())
