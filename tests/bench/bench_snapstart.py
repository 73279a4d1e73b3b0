"""The first request with and without SnapStart's hooks (imgsim.composition), each in fresh processes.

A process imports functions/search/app.py (Lambda's init), then either serves POST /search at once (a cold start
without SnapStart) or first runs the hooks as the runtime does (``before_snapshot``, then ``after_restore``, as a
restored environment would) and then serves it. Printed: the import, the warm-up (part of the Init phase Lambda runs
once per published version), ``after_restore`` (billed in each restore), the first and the second request; medians
of ``RUNS`` processes. moto's S3 and SSM (the keys are SecureStrings, read as deployed) and qdrant-client's in-memory
server stand-in, all in process: qdrant-client is imported by the stand-in before the timing, so the first request
without the hooks here lacks its import (~0.5 s on Lambda's Python, README "Cold start"), which the snapshot holds.
This machine's CPython, not Lambda's: the restore itself (Lambda's "Restore Duration") is not in these figures.

    python tests/bench/run.py snapstart
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

RUNS = 5
HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))  # tests/, for conftest.py (the AWS environment), support.py, roots.py


def child(mode: str) -> dict[str, float]:
    import boto3
    import conftest  # noqa: F401  # the tests' AWS environment: moto, never real AWS
    from moto import mock_aws

    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="imgsim-images")
        ssm = boto3.client("ssm", region_name="us-east-1")
        ssm.put_parameter(Name="/imgsim/qdrant-api-key", Value="q", Type="SecureString")
        ssm.put_parameter(Name="/imgsim/api-key", Value="k", Type="SecureString")
        boto3.DEFAULT_SESSION = None
        from imgsim.composition import Root
        from imgsim.settings import load
        from imgsim_tools.events import http_api_event
        from roots import server_catalogs
        from support import SEARCH_APP_PATH, handler_on_root, lambda_context

        photo = sorted((HERE.parents[3] / "shared" / "datasets" / "photos").glob("*.jpg"))[5].read_bytes()
        registered: dict[str, list] = {"before": [], "after": []}
        hooks = types.ModuleType("snapshot_restore_py")
        hooks.register_before_snapshot = lambda f, *a, **k: registered["before"].append(f)  # type: ignore[attr-defined]
        hooks.register_after_restore = lambda f, *a, **k: registered["after"].append(f)  # type: ignore[attr-defined]
        sys.modules["snapshot_restore_py"] = hooks
        root = Root(load({"QDRANT_URL": "http://qdrant.bench:6333", "QDRANT_API_KEY_PARAM": "/imgsim/qdrant-api-key",
                          "IMGSIM_API_KEY_PARAM": "/imgsim/api-key", "IMAGES_BUCKET": "imgsim-images",
                          "QDRANT_COLLECTION": "images"}), catalogs=server_catalogs())
        marks = [time.perf_counter()]
        app = handler_on_root("search_app", SEARCH_APP_PATH, root)
        marks.append(time.perf_counter())
        if mode == "hooks":
            for hook in reversed(registered["before"]):
                hook()
        marks.append(time.perf_counter())
        if mode == "hooks":
            for hook in registered["after"]:
                hook()
        marks.append(time.perf_counter())
        event = http_api_event("POST", "/search", body=photo, headers={"content-type": "image/jpeg", "x-api-key": "k"})
        for _ in range(2):
            response = app.handler(event, lambda_context("SearchFunction", timeout_s=15))
            assert response["statusCode"] == 200, response
            marks.append(time.perf_counter())
    names = ("import", "warm-up", "after_restore", "first request", "second request")
    return {name: (end - start) * 1000 for name, start, end in zip(names, marks[:-1], marks[1:], strict=True)}


def main() -> int:
    results = {}
    for mode in ("plain", "hooks"):
        samples = []
        for _ in range(RUNS):
            out = subprocess.run([sys.executable, str(HERE), mode], check=True, capture_output=True, text=True).stdout
            samples.append(json.loads(out.strip().splitlines()[-1]))
        results[mode] = {name: statistics.median(s[name] for s in samples) for name in samples[0]}
    print(f"median of {RUNS} fresh processes (ms)")
    print(f"{'':16}" + "".join(f"{name:>16}" for name in results["plain"]))
    for mode, label in (("plain", "no hooks"), ("hooks", "hooks")):
        print(f"{label:16}" + "".join(f"{value:16.1f}" for value in results[mode].values()))
    return 0


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1])))
