#!/usr/bin/env python3
"""`make bench-chaos`: issue 9's fault runs against `imgsim serve`, at their full size.

1. 500 uploads (8 in parallel), then 20 deletes and 20 overwrites, all acknowledged; ``kill -9`` one second
   later; restart on the same data dir. Counted: acknowledged uploads gone, deletes back, overwrites
   reverted (in S3 and in the index, once the restart's catch-up is done), and the restart's ready time.
2. Uploads under way, then two SIGINTs 0.5 s apart (the "forced stop"); restart; acknowledged uploads lost.
3. One SIGINT while indexing is in flight: seconds to exit.

The bounded version of (1) runs in `make test` (tests/test_local_stack.py::test_kill_9_...).
"""

from __future__ import annotations

import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from imgsim.ids import point_id_for_object
from serve_support import BUCKET, Serve, wait_until

PHOTOS = sorted((REPO_ROOT.parent / "shared" / "datasets" / "photos").glob("*.jpg"))


def verify(serve: Serve, expected: dict[str, str | None], sizes: dict[str, int]) -> dict[str, int]:
    """Counts of keys whose S3 state or index state differs from what was acknowledged."""
    from botocore.exceptions import ClientError

    s3 = serve.s3()
    wrong_s3 = 0
    for key, etag in expected.items():
        try:
            got = s3.head_object(Bucket=BUCKET, Key=key)["ETag"]
        except ClientError:
            got = None
        wrong_s3 += got != etag
    live = {k for k, e in expected.items() if e is not None}

    def index_agrees() -> bool:
        return serve.json_request("GET", "/health", None)[1].get("points") == len(live)

    wait_until(index_agrees, timeout=600, interval=1, what="the index to hold exactly the acknowledged objects")
    wrong_index = 0
    for key, etag in expected.items():
        status, body = serve.request("GET", f"/images/{point_id_for_object(BUCKET, key)}")
        if etag is None:
            wrong_index += status != 404
        else:
            wrong_index += status != 200 or body.get("size") != sizes[key]
    return {"s3": wrong_s3, "index": wrong_index}


def kill_9_run(work: Path) -> None:
    data = work / "kill9"
    first = Serve(data).wait_ready()
    s3 = first.s3()
    keys = [f"photos/chaos/{i:04d}.jpg" for i in range(500)]
    bodies = {key: PHOTOS[i % len(PHOTOS)].read_bytes() for i, key in enumerate(keys)}
    with ThreadPoolExecutor(8) as pool:
        etags: dict[str, str | None] = dict(zip(keys, pool.map(
            lambda k: s3.put_object(Bucket=BUCKET, Key=k, Body=bodies[k])["ETag"], keys)))
    for key in keys[::25]:
        s3.delete_object(Bucket=BUCKET, Key=key)
        etags[key] = None
    sizes = {key: len(body) for key, body in bodies.items()}
    for i, key in enumerate(keys[1::25]):
        body = PHOTOS[(i + 900) % len(PHOTOS)].read_bytes()
        etags[key] = s3.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"]
        sizes[key] = len(body)
    time.sleep(1)
    first.kill()
    second = Serve(data).wait_ready()
    try:
        began = time.monotonic()
        wrong = verify(second, etags, sizes)
        print(f"kill -9 after 500 uploads + 20 deletes + 20 overwrites: restart ready in {second.ready_seconds:.1f} s, "
              f"index agreed {time.monotonic() - began:.1f} s later; keys wrong in S3: {wrong['s3']}, "
              f"in the index: {wrong['index']} (of {len(etags)})", flush=True)
    finally:
        second.stop()


def double_ctrl_c_run(work: Path) -> None:
    data = work / "ctrlc"
    first = Serve(data).wait_ready()
    s3 = first.s3()
    acknowledged: dict[str, str | None] = {}
    sizes: dict[str, int] = {}
    stop = threading.Event()

    def upload(n: int) -> None:
        while not stop.is_set():
            key = f"photos/ctrlc/{n:02d}-{len(acknowledged):05d}.jpg"
            body = PHOTOS[len(acknowledged) % len(PHOTOS)].read_bytes()
            try:
                etag = s3.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"]
            except Exception:  # noqa: BLE001 - the server is going away: unacknowledged
                return
            acknowledged[key], sizes[key] = etag, len(body)

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(4)
    began = time.monotonic()
    first.process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    first.process.send_signal(signal.SIGINT)
    code = first.process.wait(60)
    exit_s = time.monotonic() - began
    stop.set()
    for thread in threads:
        thread.join()
    second = Serve(data).wait_ready()
    try:
        wrong = verify(second, acknowledged, sizes)
        print(f"two SIGINTs 0.5 s apart during {len(acknowledged)} acknowledged uploads: exit {code} after {exit_s:.2f} s; "
              f"acknowledged uploads lost: {wrong['s3']} in S3, {wrong['index']} in the index", flush=True)
        s3 = second.s3()
        for i in range(200):
            s3.put_object(Bucket=BUCKET, Key=f"photos/busy/{i:03d}.jpg", Body=PHOTOS[i].read_bytes())
        began = time.monotonic()
        code = second.stop(signal.SIGINT)
        print(f"one SIGINT with 200 uploads being indexed: exit {code} after {time.monotonic() - began:.2f} s", flush=True)
    finally:
        second.kill()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="imgsim-chaos-") as tmp:
        kill_9_run(Path(tmp))
        double_ctrl_c_run(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
