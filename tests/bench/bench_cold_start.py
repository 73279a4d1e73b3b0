"""Cold start as Lambda runs the code: the built artifacts, read-only, in fresh interpreters.

Each figure is the median of ``RUNS`` fresh ``python3.13 -I -S -B`` processes of Lambda's Python (Debian 13's
CPython 3.13, ``make lambda-python``; no bytecode written, only what the artifacts ship is used; the path is
task dir, layer, then the runtime's AWS SDK, as the invoke runner lays it out), printed as a ratio to the
floor measured in the same run:

* **floor**: import numpy, Pillow, the TFLite interpreter and boto3, and load the model;
* **import**: importing the handler module (what Lambda reports as Init Duration);
* **first request**: import + the first invocation, which reaches the store: SearchFunction answers
  events/health.json (alias, collection check, count), IndexFunction events/index_delete.json (S3 asked
  whether the object is gone, then the point deleted). The store is a Qdrant server's REST API (the stand-in
  of tests/qdrant_standin.py, on a local socket: ~1 ms a call), S3 a moto server, both in this process;
  their collection and bucket exist before the timed runs, as in a deployed stack.

Rows: the build as shipped (bytecode, tracing off), the same with X-Ray tracing on, and the same
layer with every .pyc removed (what a layer without bytecode costs). Needs ``make build`` (run
here if ``.aws-sam/build`` is missing).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
BUILD = ROOT / ".aws-sam" / "build"
RUNS = int(os.environ.get("COLD_START_RUNS", "7"))
IMPORT_GOAL = 2.5  # issue 11: each handler's import <= 2.5x the floor
FIRST_REQUEST_GOAL = 2.0  # issue 21: the first request that reaches the store <= 2x the floor
EVENTS = {"SearchFunction": "health.json", "IndexFunction": "index_delete.json"}

FLOOR = """
import time, glob, sys
t = time.perf_counter()
import numpy, PIL.Image, boto3
try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:
    from tflite_runtime.interpreter import Interpreter
model = glob.glob(sys.argv[1] + "/model/*.tflite")[0]
Interpreter(model_path=model, num_threads=1).allocate_tensors()
print("TIMES", (time.perf_counter() - t) * 1000)
"""

# The context object comes from the one Lambda emulation (standard library only), loaded before the clock starts.
FIRST_REQUEST = """
import time, importlib, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("lambda_emulation", sys.argv[3])
emulation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(emulation)
context = emulation.LambdaContext(sys.argv[2], timeout_s=60, memory_mb=1024)
event = json.loads(open(sys.argv[1]).read())
t = time.perf_counter()
app = importlib.import_module("app")
imported = (time.perf_counter() - t) * 1000
answer = app.handler(event, context)
first = (time.perf_counter() - t) * 1000
ok = answer.get("statusCode") == 200 or answer.get("batchItemFailures") == []
if not ok:
    sys.exit("first request failed: " + json.dumps(answer)[:500])
print("TIMES", imported, first)
"""


def lambda_env(task: Path, tracing: bool, **extra: str) -> dict[str, str]:
    env = {
        "PATH": "/usr/bin:/bin", "LANG": "en_US.UTF-8", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "LAMBDA_TASK_ROOT": str(task), "POWERTOOLS_SERVICE_NAME": "imgsim", "IMAGES_BUCKET": "imgsim-images",
        "IMGSIM_NUM_THREADS": "1", "POWERTOOLS_TRACE_DISABLED": "false" if tracing else "true",
        "TF_CPP_MIN_LOG_LEVEL": "3", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "QDRANT_API_KEY_PARAM": "", "IMGSIM_API_KEY_PARAM": "", "IMGSIM_API_KEY": "bench-key",
        "POWERTOOLS_METRICS_NAMESPACE": "imgsim-bench",
    }
    env.update(extra)
    return env


def run(code: str, path: list[str], cwd: Path, env: dict[str, str], *args: str) -> list[float]:
    from imgsim_tools.invoke import lambda_python

    prelude = f"import sys; sys.path[:0] = {path!r}\n"
    out = subprocess.run([lambda_python(), "-I", "-S", "-B", "-c", prelude + code, *args], check=False,
                         cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"a measured process failed ({out.returncode}):\n{out.stderr[-3000:]}")
    # The handlers log to stdout (powertools' JSON lines): the figures are the line marked TIMES.
    (line,) = [line for line in out.stdout.splitlines() if line.startswith("TIMES ")]
    return [float(x) for x in line.split()[1:]]


def median_of(code: str, path: list[str], cwd: Path, env: dict[str, str], *args: str) -> list[float]:
    samples = [run(code, path, cwd, env, *args) for _ in range(RUNS)]
    return [statistics.median(column) for column in zip(*samples)]


def without_bytecode(build: Path, into: Path) -> Path:
    shutil.copytree(build, into, symlinks=True)
    for cache in into.rglob("__pycache__"):
        shutil.rmtree(cache)
    return into


@contextlib.contextmanager
def services() -> Iterator[tuple[str, str]]:
    """A Qdrant REST stand-in and a moto S3 server holding the events' bucket: (Qdrant URL, S3 endpoint)."""
    import boto3
    from moto.server import ThreadedMotoServer
    from qdrant_standin import QdrantStandin, running
    from serve_support import free_port

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    moto.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket="imgsim-images")
        with running(QdrantStandin(api_key="bench-qdrant-key")) as url:
            yield url, endpoint
    finally:
        moto.stop()


def main() -> int:
    if not (BUILD / "template.yaml").is_file():
        subprocess.run(["make", "build"], cwd=ROOT, check=True)
    from imgsim_tools.invoke import _runtime_sdk_path

    sdk = _runtime_sdk_path()
    layer = BUILD / "SharedLayer"
    floor_env = lambda_env(BUILD, tracing=False)
    (floor,) = median_of(FLOOR, [str(layer / "python"), sdk], ROOT, floor_env, str(layer))
    print(f"runs per figure: {RUNS} fresh processes (median); this machine, {os.cpu_count()} cores")
    print(f"floor (numpy + Pillow + TFLite + boto3 imported, model loaded): {floor:.0f} ms = x1.00")
    print(f"{'function':15} {'build':32} {'import ms':>10} {'ratio':>7} {'first request ms':>17} {'ratio':>7}")
    emulation = str(ROOT / "infra" / "imgsim_tools" / "lambda_emulation.py")
    worst_import = worst_first = 0.0
    with tempfile.TemporaryDirectory() as scratch, services() as (qdrant_url, s3_endpoint):
        sources_only = without_bytecode(BUILD, Path(scratch) / "build")
        rows = [("shipped (bytecode, tracing off)", BUILD, False), ("shipped, Tracing=Active", BUILD, True),
                ("no bytecode in the layer", sources_only, False)]
        for function, event_name in EVENTS.items():
            event = str(ROOT / "events" / event_name)
            for label, build, tracing in rows:
                task = build / function
                path = [str(task), str(build / "SharedLayer" / "python"), sdk]
                env = lambda_env(task, tracing, QDRANT_URL=f"{qdrant_url}/i/{function}",
                                 QDRANT_API_KEY="bench-qdrant-key", AWS_ENDPOINT_URL=s3_endpoint)
                run(FIRST_REQUEST, path, task, env, event, function, emulation)  # the collection, as deployed
                imported, first = median_of(FIRST_REQUEST, path, task, env, event, function, emulation)
                print(f"{function:15} {label:32} {imported:10.0f} {imported / floor:6.2f}x {first:17.0f} "
                      f"{first / floor:6.2f}x")
                if build is BUILD and not tracing:
                    worst_import = max(worst_import, imported / floor)
                    worst_first = max(worst_first, first / floor)
    for what, worst, goal in (("handler import", worst_import, IMPORT_GOAL),
                              ("first request reaching the store", worst_first, FIRST_REQUEST_GOAL)):
        verdict = "within" if worst <= goal else "ABOVE"
        print(f"goal: {what} <= {goal}x floor as shipped: worst x{worst:.2f} ({verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
