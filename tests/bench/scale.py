#!/usr/bin/env python3
"""`make bench-scale`: the vector store at real scale (default 100k points; `--points 1000000` for 1M).

Corpus: augmented variants of the 1,692 shared photos (random crop 55-100 % of the area,
mirror, brightness/contrast/saturation +-25 %, grey 10 %, rescale 0.5-1.5x, JPEG re-encode
at quality 40-95), each embedded by the real model; the folder of each point ("cats/",
"dogs/", "monkeys/", "squirrels/") follows the shared set's blocks, so a folder filter keeps
about a quarter. Cached in .bench/scale/ (first build ~4 min per 100k on 2 cores). Beyond
``--real-cap`` points (default 200k) further points are the real vectors plus small noise,
re-normalized, so a 1M run does not embed 1M images. Queries are other augmented variants,
never in the corpus. Recall@10 is against exact float32 search (numpy) over the same vectors.

For each ``IMGSIM_QUANTIZATION`` setting, in fresh processes (so peak RSS is the engine's):
build (upserts, then the HNSW/quantization build), open, store-only search p50/p99, folder-
filtered search, recall@10, peak RSS while serving; end-to-end search of a ~300 px JPEG
(decode + embed + search) for the default setting. Baseline in the same run: qdrant-client's
local mode (the old embedded default) at ``--local-points`` (default 20k, the largest size
it bears here in reasonable time), beside Qdrant Edge at the same size. Then: one-shot
``imgsim search`` at 20k points against one-shot ``imgsim compare``, and ``imgsim serve``
ready time with the full store.

    python tests/bench/scale.py                    # 100k, all settings
    python tests/bench/scale.py --points 1000000   # the documented 1M run (~1 h, ~10 GB disk)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
PHOTOS_DIR = (REPO_ROOT.parent / "shared" / "datasets" / "photos").resolve()
WORK = REPO_ROOT / ".bench" / "scale"
FOLDERS = ("cats/", "dogs/", "monkeys/", "squirrels/")
SETTINGS = ("none", "int8", "binary", "binary/4")
DEFAULT_SETTING = "int8"
K = 10


# -- corpus ---------------------------------------------------------------------------------------------------------


def photo_paths() -> list[Path]:
    paths = sorted(PHOTOS_DIR.glob("*.jpg"))
    if not paths:
        raise SystemExit(f"no photos in {PHOTOS_DIR}: the benchmark needs ../shared/datasets/photos")
    return paths


def augment(data: bytes, seed: int) -> bytes:
    from PIL import Image, ImageEnhance, ImageOps

    rng = random.Random(seed)
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    area = rng.uniform(0.55, 1.0)
    aspect = rng.uniform(0.8, 1.25)
    cw, ch = min(w, int(w * (area * aspect) ** 0.5)), min(h, int(h * (area / aspect) ** 0.5))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    image = image.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(0.75, 1.25))
    if rng.random() < 0.1:
        image = ImageOps.grayscale(image).convert("RGB")
    scale = rng.uniform(0.5, 1.5)
    image = image.resize((max(16, int(image.width * scale)), max(16, int(image.height * scale))))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=rng.randint(40, 95))
    return out.getvalue()


_worker_embedder = None


def _embed_range(args: tuple[int, int, int]) -> np.ndarray:
    start, stop, seed_base = args
    global _worker_embedder
    if _worker_embedder is None:
        from imgsim import Embedder

        _worker_embedder = Embedder()
    paths = photo_paths()
    raw = {}
    vectors = np.empty((stop - start, _worker_embedder.dim), dtype=np.float32)
    for row, i in enumerate(range(start, stop)):
        index = i % len(paths)
        if index not in raw:
            raw[index] = paths[index].read_bytes()
        vectors[row] = _worker_embedder.embed(augment(raw[index], seed_base + i))
    return vectors


def embed_variants(count: int, seed_base: int, label: str) -> np.ndarray:
    chunk = 500
    jobs = [(s, min(count, s + chunk), seed_base) for s in range(0, count, chunk)]
    out = []
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for done, block in enumerate(pool.map(_embed_range, jobs), start=1):
            out.append(block)
            if done % 20 == 0 or done == len(jobs):
                rate = sum(len(b) for b in out) / (time.perf_counter() - started)
                print(f"  {label}: {sum(len(b) for b in out):,}/{count:,} embedded ({rate:.0f}/s)", flush=True)
    return np.concatenate(out) if out else np.empty((0, 1024), dtype=np.float32)


def model_tag() -> str:
    manifest = json.loads((REPO_ROOT / "model" / "models.json").read_text())
    spec = manifest["models"][manifest["default"]]
    return str(spec.get("sha256", "x"))[:12]


def corpus(points: int, real_cap: int, queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors [points, d] unit float32, folder index per point, query vectors [queries, d])."""
    WORK.mkdir(parents=True, exist_ok=True)
    real = min(points, real_cap)
    path = WORK / f"corpus-{real}-{model_tag()}.npy"
    if path.exists():
        base = np.load(path)
    else:
        print(f"corpus: embedding {real:,} augmented variants of {len(photo_paths()):,} photos (cached in {path})")
        base = embed_variants(real, 0, "corpus")
        np.save(path, base)
    qpath = WORK / f"queries-{queries}-{model_tag()}.npy"
    if qpath.exists():
        query_vectors = np.load(qpath)
    else:
        query_vectors = embed_variants(queries, 10_000_000, "queries")
        np.save(qpath, query_vectors)
    vectors = base
    if points > real:
        rng = np.random.default_rng(1)
        extra = []
        for start in range(real, points, real):
            n = min(real, points - start)
            noisy = base[:n] + rng.normal(scale=0.02, size=(n, base.shape[1])).astype(np.float32)
            extra.append(noisy)
        vectors = np.concatenate([base, *extra])
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    n_photos = len(photo_paths())
    folders = ((np.arange(points) % n_photos) * len(FOLDERS) // n_photos).astype(np.int8)
    query_vectors = query_vectors / np.linalg.norm(query_vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), folders, query_vectors.astype(np.float32)


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 64):
        scores = queries[start:start + 64] @ vectors.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        out[start:start + 64] = np.take_along_axis(top, order, axis=1)
    return out


# -- phases run in child processes -----------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux keeps that across execve, so a child
    of the (large) parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def point_id(i: int) -> str:
    import uuid

    return str(uuid.UUID(int=i + 1))


def payload(i: int, folders: np.ndarray) -> dict:
    folder = FOLDERS[int(folders[i])]
    key = f"{folder}{i:07}.jpg"
    return {"key": key, "dirs": [folder], "bucket": "bench"}


def open_edge(directory: str, setting: str, dim: int):
    """``setting``: a quantization, optionally with an oversampling factor (``binary/4``)."""
    from imgsim.store import StorageOptions
    from imgsim.store.edge import EdgeStore

    quantization, _, oversampling = setting.partition("/")
    options = StorageOptions(quantization=quantization, oversampling=float(oversampling or 2.0))
    return EdgeStore(directory, "images", dim=dim, options=options)


def phase_edge_build(args: argparse.Namespace) -> dict:
    from imgsim.store import StoredPoint

    vectors = np.load(args.vectors, mmap_mode="r")
    folders = np.load(args.folders)
    n = args.limit or len(vectors)
    store = open_edge(args.dir, args.setting, vectors.shape[1])
    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        block = np.asarray(vectors[start:min(n, start + 1000)])
        store.upsert([StoredPoint(point_id(start + j), row.tolist(), payload(start + j, folders))
                      for j, row in enumerate(block)])
    upsert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.optimize()
    optimize_s = time.perf_counter() - t0
    store.close()
    return {"upsert_s": upsert_s, "optimize_s": optimize_s, "build_s": upsert_s + optimize_s,
            "build_peak_rss_mb": peak_rss_mb()}


def _latencies(fn, queries: np.ndarray) -> list[float]:
    """Steady state: 50 warm-up searches first (the first searches after an open fault in the
    memory-mapped data; that cost is reported on its own as ``first_search_ms``)."""
    for q in queries[:50]:
        fn(q)
    out = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _recall(found: list[list[int]], truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (len(truth) * truth.shape[1])


def phase_edge_serve(args: argparse.Namespace) -> dict:
    from imgsim.store import FieldIn, Where

    queries = np.load(args.queries)
    truth = np.load(args.truth)
    t0 = time.perf_counter()
    store = open_edge(args.dir, args.setting, queries.shape[1])
    count = store.count()
    open_s = time.perf_counter() - t0
    qlist = [q.tolist() for q in queries]
    found: list[list[int]] = []
    t0 = time.perf_counter()
    store.search(qlist[-1], limit=K)
    first_ms = (time.perf_counter() - t0) * 1000

    def search(q):
        return store.search(q, limit=K)

    lat = _latencies(search, queries.tolist())
    for q in qlist:
        found.append([int(h.id.replace("-", ""), 16) - 1 for h in store.search(q, limit=K)])
    folder = Where(must=(FieldIn("dirs", ("dogs/",)),))
    flat = _latencies(lambda q: store.search(q, limit=K, where=folder), queries.tolist())
    result = {
        "points": count, "open_s": open_s, "first_search_ms": first_ms,
        "p50_ms": statistics.median(lat), "p99_ms": float(np.percentile(lat, 99)),
        "filtered_p50_ms": statistics.median(flat), "filtered_p99_ms": float(np.percentile(flat, 99)),
        f"recall@{K}": _recall(found, truth), "serve_peak_rss_mb": peak_rss_mb(),
        "unindexed": store.unindexed_count(),
    }
    if args.e2e:
        from imgsim import Embedder

        embedder = Embedder()
        photo = photo_paths()[7].read_bytes()  # ~300 px JPEG
        embed = _latencies(lambda _q: embedder.embed(photo), queries[:200])
        e2e = _latencies(lambda _q: store.search(embedder.embed(photo), limit=K), queries[:200])
        result.update({"embed_p50_ms": statistics.median(embed), "e2e_p50_ms": statistics.median(e2e),
                       "e2e_p99_ms": float(np.percentile(e2e, 99))})
    store.close()
    return result


def phase_edge_background(args: argparse.Namespace) -> dict:
    """`imgsim serve`'s background HNSW build on a copy of the built store plus 20k new points:
    how long searches and writes stall while it runs (they must not wait for the build)."""
    import threading

    from imgsim.store import StoredPoint

    vectors = np.load(args.vectors, mmap_mode="r")
    folders = np.load(args.folders)
    work = Path(args.dir).parent / "background"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(args.dir, work)
    store = open_edge(str(work), args.setting, vectors.shape[1])
    rng = np.random.default_rng(5)
    base = len(vectors)
    extra = 20_000
    for start in range(0, extra, 1000):
        block = np.asarray(vectors[start:start + 1000]) + rng.normal(scale=0.02, size=(1000, vectors.shape[1]))
        store.upsert([StoredPoint(point_id(base + start + j), (row / np.linalg.norm(row)).tolist(),
                                  payload(start + j, folders)) for j, row in enumerate(block)])
    unindexed_before = store.unindexed_count()
    done = threading.Event()
    outcome: list[tuple[bool, str]] = []
    t0 = time.perf_counter()
    store.build_index_in_background(lambda ok, msg: (outcome.append((ok, msg)), done.set()))
    searches: list[float] = []
    writes: list[float] = []
    n = 0
    while not done.is_set():
        q = np.asarray(vectors[n % base]).tolist()
        t = time.perf_counter()
        store.search(q, limit=K)
        searches.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        store.upsert([StoredPoint(point_id(base + extra + n), q, payload(n % base, folders))])
        writes.append((time.perf_counter() - t) * 1000)
        n += 1
        time.sleep(0.005)
    build_s = time.perf_counter() - t0
    result = {"build_s": build_s, "ok": outcome == [(True, "index built")], "unindexed_before": unindexed_before,
              "unindexed_after": store.unindexed_count(), "points": store.count(), "searches": len(searches),
              "search_p50_ms": statistics.median(searches), "search_max_ms": max(searches),
              "write_p50_ms": statistics.median(writes), "write_max_ms": max(writes), "steps": store.last_build}
    store.close()
    shutil.rmtree(work, ignore_errors=True)
    return result


def phase_local_mode(args: argparse.Namespace) -> dict:
    """The old embedded default: qdrant-client's local mode (Python, brute force, SQLite)."""
    from qdrant_client import QdrantClient, models

    vectors = np.load(args.vectors, mmap_mode="r")
    folders = np.load(args.folders)
    queries = np.load(args.queries)
    truth = np.load(args.truth)
    n = args.limit
    client = QdrantClient(path=args.dir)
    client.create_collection("images", vectors_config=models.VectorParams(size=vectors.shape[1],
                                                                           distance=models.Distance.COSINE))
    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        block = np.asarray(vectors[start:min(n, start + 1000)])
        client.upsert("images", points=[models.PointStruct(id=point_id(start + j), vector=row.tolist(),
                                                           payload=payload(start + j, folders))
                                        for j, row in enumerate(block)])
    build_s = time.perf_counter() - t0
    client.close()
    del client
    t0 = time.perf_counter()
    client = QdrantClient(path=args.dir)
    client.count("images")
    open_s = time.perf_counter() - t0
    sample = queries[:100]

    def search(q, flt=None):
        return client.query_points("images", query=q, limit=K, query_filter=flt).points

    lat = _latencies(lambda q: search(q), sample.tolist())
    folder = models.Filter(must=[models.FieldCondition(key="dirs", match=models.MatchAny(any=["dogs/"]))])
    flat = _latencies(lambda q: search(q, folder), sample[:50].tolist())
    found = [[int(str(p.id).replace("-", ""), 16) - 1 for p in search(q)] for q in sample.tolist()]
    return {"points": n, "build_s": build_s, "open_s": open_s, "p50_ms": statistics.median(lat),
            "p99_ms": float(np.percentile(lat, 99)), "filtered_p50_ms": statistics.median(flat),
            "filtered_p99_ms": float(np.percentile(flat, 99)), f"recall@{K}": _recall(found, truth[:100]),
            "serve_peak_rss_mb": peak_rss_mb()}


PHASES = {"edge-build": phase_edge_build, "edge-serve": phase_edge_serve, "local-mode": phase_local_mode,
          "edge-background": phase_edge_background}


def run_phase(phase: str, **kwargs) -> dict:
    argv = [sys.executable, __file__, "--phase", phase]
    for name, value in kwargs.items():
        if value is True:
            argv.append(f"--{name.replace('_', '-')}")
        elif value not in (None, False):
            argv += [f"--{name.replace('_', '-')}", str(value)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- CLI and serve ----------------------------------------------------------------------------------------------------


def one_shot_ratio(store_dir: str, runs: int = 5) -> dict:
    imgsim = str(REPO_ROOT / ".venv" / "bin" / "imgsim")
    photos = photo_paths()
    env = {**os.environ, "QDRANT_PATH": store_dir, "IMGSIM_QUANTIZATION": DEFAULT_SETTING}
    env.pop("QDRANT_URL", None)

    def timed(argv: list[str]) -> float:
        t0 = time.perf_counter()
        done = subprocess.run([imgsim, *argv], capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"imgsim {' '.join(argv)} failed: {done.stderr[-2000:]}")
        return time.perf_counter() - t0

    search, compare = [], []
    for i in range(runs + 1):
        s = timed(["search", str(photos[i]), "--limit", "10"])
        c = timed(["compare", str(photos[i]), str(photos[i + 1])])
        if i:  # the first pair warms the page cache
            search.append(s)
            compare.append(c)
    return {"search_s": statistics.median(search), "compare_s": statistics.median(compare),
            "ratio": statistics.median(search) / statistics.median(compare)}


def serve_ready(store_dir: str) -> dict:
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from serve_support import Serve

    data = Path(store_dir).parent / "serve-data"
    shutil.rmtree(data, ignore_errors=True)
    serve = Serve(data, env={"QDRANT_PATH": store_dir, "IMGSIM_QUANTIZATION": DEFAULT_SETTING})
    try:
        serve.wait_ready(timeout=120)
        _, body = serve.json_request("GET", "/health", None)
        return {"ready_s": serve.ready_seconds, "health_points": body.get("points") if isinstance(body, dict) else None}
    finally:
        serve.stop()


# -- main ----------------------------------------------------------------------------------------------------------------


def fmt(value, digits=1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=int(os.environ.get("SCALE_POINTS") or 100_000))
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--real-cap", type=int, default=200_000)
    parser.add_argument("--local-points", type=int, default=20_000)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--skip-serve", action="store_true")
    # child-process phases
    parser.add_argument("--phase", choices=sorted(PHASES))
    for name in ("dir", "setting", "vectors", "folders", "queries-file", "truth"):
        parser.add_argument(f"--{name}")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--e2e", action="store_true")
    args = parser.parse_args()
    if args.phase:
        args.queries = args.queries_file
        print(json.dumps(PHASES[args.phase](args)))
        return 0

    n = args.points
    vectors, folders, queries = corpus(n, args.real_cap, args.queries)
    run_dir = WORK / f"run-{n}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    files = {"vectors": run_dir / "vectors.npy", "folders": run_dir / "folders.npy",
             "queries_file": run_dir / "queries.npy", "truth": run_dir / "truth.npy"}
    np.save(files["vectors"], vectors)
    np.save(files["folders"], folders)
    np.save(files["queries_file"], queries)
    t0 = time.perf_counter()
    np.save(files["truth"], exact_top_k(vectors, queries))
    exact_ms = (time.perf_counter() - t0) * 1000 / len(queries)
    m = min(args.local_points, n)
    truth_m = run_dir / "truth-local.npy"
    np.save(truth_m, exact_top_k(vectors[:m], queries))
    common = {k: str(v) for k, v in files.items()}
    del vectors

    rows: dict[str, dict] = {}
    for setting in [s for s in args.settings.split(",") if s]:
        quantization = setting.partition("/")[0]
        directory = str(run_dir / f"edge-{quantization}")
        if not Path(directory).exists():  # "binary/4" searches the "binary" store with more oversampling
            print(f"Qdrant Edge, {quantization}: building {n:,} points ...", flush=True)
            built = run_phase("edge-build", dir=directory, setting=setting, vectors=common["vectors"],
                              folders=common["folders"])
        else:
            built = {k: v for k, v in rows[f"edge {quantization} @ {n:,}"].items() if k.startswith(("upsert", "optimize", "build"))}
        served = run_phase("edge-serve", dir=directory, setting=setting, queries_file=common["queries_file"],
                           truth=common["truth"], e2e=setting == DEFAULT_SETTING)
        rows[f"edge {setting} @ {n:,}"] = {**built, **served}
    print(f"baselines at {m:,} points: qdrant-client local mode and Qdrant Edge ({DEFAULT_SETTING}) ...", flush=True)
    local_dir = str(run_dir / "local-mode")
    rows[f"local mode @ {m:,}"] = run_phase("local-mode", dir=local_dir, limit=m, vectors=common["vectors"],
                                            folders=common["folders"], queries_file=common["queries_file"],
                                            truth=str(truth_m))
    small_dir = str(run_dir / f"edge-{DEFAULT_SETTING}-{m}")
    built = run_phase("edge-build", dir=small_dir, setting=DEFAULT_SETTING, vectors=common["vectors"],
                      folders=common["folders"], limit=m)
    served = run_phase("edge-serve", dir=small_dir, setting=DEFAULT_SETTING, queries_file=common["queries_file"],
                       truth=str(truth_m))
    rows[f"edge {DEFAULT_SETTING} @ {m:,}"] = {**built, **served}

    extra: dict[str, dict] = {}
    full = run_dir / f"edge-{DEFAULT_SETTING}"
    if full.exists():
        print("background index build while searching and writing ...", flush=True)
        extra["background"] = run_phase("edge-background", dir=str(full), setting=DEFAULT_SETTING,
                                        vectors=common["vectors"], folders=common["folders"])
    if not args.skip_serve:
        print("one-shot imgsim search vs imgsim compare, and imgsim serve start-up ...", flush=True)
        extra["one_shot"] = one_shot_ratio(small_dir)
        if full.exists():
            extra["serve"] = serve_ready(str(full))

    print(f"\nVector store at scale: {n:,} points of {queries.shape[1]} float32 (augmented real photos), "
          f"top {K}, {len(queries)} queries; exact numpy search {exact_ms:.1f} ms/query")
    header = (f"{'engine / setting':<26} {'build s':>8} {'open s':>7} {'1st ms':>7} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'filt p50':>8} {'recall@10':>9} {'RSS MB':>7}")
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        print(f"{name:<26} {fmt(r.get('build_s'))!s:>8} {fmt(r['open_s'], 2):>7} {fmt(r.get('first_search_ms'), 1):>7} "
              f"{fmt(r['p50_ms'], 2):>7} "
              f"{fmt(r['p99_ms'], 2):>7} {fmt(r['filtered_p50_ms'], 2):>8} {r[f'recall@{K}']:>9.4f} "
              f"{fmt(r['serve_peak_rss_mb'], 0):>7}")
    base = rows[f"local mode @ {m:,}"]
    same = rows[f"edge {DEFAULT_SETTING} @ {m:,}"]
    print(f"\nratios at {m:,} points, Edge {DEFAULT_SETTING} / local mode: open {same['open_s'] / base['open_s']:.3f}x, "
          f"search p50 {same['p50_ms'] / base['p50_ms']:.4f}x, filtered {same['filtered_p50_ms'] / base['filtered_p50_ms']:.4f}x, "
          f"peak RSS {same['serve_peak_rss_mb'] / base['serve_peak_rss_mb']:.2f}x")
    default = rows.get(f"edge {DEFAULT_SETTING} @ {n:,}")
    if default and "e2e_p50_ms" in default:
        print(f"end to end ({DEFAULT_SETTING}, {n:,} points, ~300 px JPEG): p50 {default['e2e_p50_ms']:.2f} ms "
              f"(embedding alone {default['embed_p50_ms']:.2f} ms: {default['e2e_p50_ms'] / default['embed_p50_ms']:.2f}x)")
    if "background" in extra:
        b = extra["background"]
        print(f"background build ({DEFAULT_SETTING}, {b['unindexed_before']:,} new points on {n:,}): {b['build_s']:.1f} s, "
              f"{'ok' if b['ok'] else 'FAILED'}; meanwhile {b['searches']} searches p50 {b['search_p50_ms']:.2f} ms, "
              f"max {b['search_max_ms']:.0f} ms; writes p50 {b['write_p50_ms']:.2f} ms, max {b['write_max_ms']:.0f} ms; "
              f"unindexed after {b['unindexed_after']:,}; steps {json.dumps({k: round(v, 2) for k, v in b['steps'].items()})}")
    if "one_shot" in extra:
        o = extra["one_shot"]
        print(f"one-shot CLI at {m:,} points: imgsim search {o['search_s']:.2f} s, imgsim compare {o['compare_s']:.2f} s "
              f"-> {o['ratio']:.2f}x")
    if "serve" in extra:
        print(f"imgsim serve with {n:,} points: ready in {extra['serve']['ready_s']:.2f} s "
              f"(/health reports {extra['serve']['health_points']} points)")
    (WORK / f"results-{n}.json").write_text(json.dumps({"rows": rows, "extra": extra, "exact_ms": exact_ms}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
