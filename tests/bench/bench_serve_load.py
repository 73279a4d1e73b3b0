#!/usr/bin/env python3
"""`imgsim serve` under load: 7 clients searching while an 8th posts the issue's heavy PNG.

Issue 9 measured it on the old stack (http.server, full decode of an 8000x8000 16-bit grey PNG of 124 KB at
1.7 GB): the 7 other clients fell to 5 req/s, p50 1.35 s. Here, in one run: the 7 clients alone (baseline),
then with the heavy poster; throughput and latency of the 7, as ratios to the baseline, and what the heavy
requests got. The local stack runs one invocation at a time (one process plays every Lambda environment,
whose TFLite interpreter is not thread-safe), so a heavy request delays the others by its own duration;
on Lambda each would get its own environment.
"""

from __future__ import annotations

import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from serve_support import Serve

PHOTOS = REPO_ROOT.parent / "shared" / "datasets" / "photos"
DURATION_S = 15.0


def heavy_png() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros((8000, 8000), dtype=np.uint16)).save(out, "PNG")
    return out.getvalue()


def small_jpegs(count: int) -> list[bytes]:
    """Query images: ~300 px thumbnails of distinct photos (the service caches nothing per image anyway)."""
    bodies = []
    for path in sorted(PHOTOS.glob("*.jpg"))[500:500 + count]:
        img = Image.open(path).convert("RGB")
        img.thumbnail((300, 300))
        out = io.BytesIO()
        img.save(out, "JPEG", quality=85)
        bodies.append(out.getvalue())
    return bodies


def load(serve: Serve, clients: int, bodies: list[bytes], heavy: bytes | None) -> tuple[list[float], list[tuple[int, float]]]:
    stop = time.monotonic() + DURATION_S
    latencies: list[float] = []
    heavy_results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        while time.monotonic() < stop:
            n += 1
            body = bodies[n % len(bodies)]
            began = time.perf_counter()
            status, _ = serve.request("POST", "/search?limit=5", body, content_type="image/jpeg", timeout=60)
            with lock:
                latencies.append(time.perf_counter() - began if status == 200 else float("inf"))

    def poster() -> None:
        assert heavy is not None
        while time.monotonic() < stop:
            began = time.perf_counter()
            status, _ = serve.request("POST", "/search?limit=5", heavy, content_type="image/png", timeout=60)
            heavy_results.append((status, time.perf_counter() - began))

    threads = [threading.Thread(target=client, args=(n * 7,)) for n in range(clients)]
    if heavy is not None:
        threads.append(threading.Thread(target=poster))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, heavy_results


def main() -> int:
    bodies, heavy = small_jpegs(50), heavy_png()
    with tempfile.TemporaryDirectory(prefix="imgsim-load-") as tmp:
        serve = Serve(Path(tmp) / "data").wait_ready()
        try:
            # Something to find: 200 photos indexed through the normal path (S3 -> queue -> IndexFunction).
            s3 = serve.s3()
            for path in sorted(PHOTOS.glob("*.jpg"))[:200]:
                s3.put_object(Bucket="imgsim-images", Key=f"photos/{path.name}", Body=path.read_bytes())
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                _status, _body = serve.request("GET", "/health")
                _, found = serve.request("POST", "/search?limit=100", bodies[0], content_type="image/jpeg")
                if isinstance(found, dict) and len(found.get("results", [])) >= 100:
                    break
                time.sleep(1)
            print(f"indexed: at least {len(found.get('results', []))} of 200 photos (search limit 100)")
            base, _ = load(serve, 7, bodies, None)
            loaded, heavy_results = load(serve, 7, bodies, heavy)
        finally:
            serve.stop()
    def describe(latencies: list[float]) -> tuple[float, float, float]:
        ok = [x for x in latencies if x != float("inf")]
        return len(ok) / DURATION_S, statistics.median(ok), sorted(ok)[int(len(ok) * 0.99) - 1]
    b_rps, b_p50, b_p99 = describe(base)
    l_rps, l_p50, l_p99 = describe(loaded)
    print(f"heavy PNG: {len(heavy) / 1024:.0f} KB, 8000x8000 16-bit grey")
    print(f"7 clients alone:            {b_rps:5.1f} req/s, p50 {b_p50 * 1000:5.0f} ms, p99 {b_p99 * 1000:5.0f} ms")
    print(f"7 clients + heavy poster:   {l_rps:5.1f} req/s (x{l_rps / b_rps:.2f}), p50 {l_p50 * 1000:5.0f} ms "
          f"(x{l_p50 / b_p50:.2f}), p99 {l_p99 * 1000:5.0f} ms")
    statuses = sorted({status for status, _ in heavy_results})
    print(f"heavy requests: {len(heavy_results)} answered {statuses}, median {statistics.median(s for _, s in heavy_results):.2f} s")
    print(f"errors among the 7: {sum(x == float('inf') for x in base + loaded)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
