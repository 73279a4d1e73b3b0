"""Cold start as Lambda runs the code: the built artifacts, read-only, in fresh interpreters.

Each figure is the median of ``RUNS`` fresh ``python3.13 -I -S -B`` processes of Lambda's Python (Debian 13's
CPython 3.13, ``make lambda-python``; no bytecode written, only what the artifacts ship is used; the path is
task dir, layer, then the runtime's AWS SDK, as the invoke runner lays it out), printed as a ratio to the
floor measured in the same run:

* **floor**: import numpy, Pillow, the TFLite interpreter and boto3, and load the model;
* **import**: importing the handler module (what Lambda reports as Init Duration);
* **ready**: import + what the first request adds before any I/O (the model loaded, the Qdrant
  server path imported): the part of a cold start the code controls.

Rows: the build as shipped (bytecode, tracing off), the same with X-Ray tracing on, and the same
layer with every .pyc removed (what a layer without bytecode costs). Needs ``make build`` (run
here if ``.aws-sam/build`` is missing).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / ".aws-sam" / "build"
RUNS = int(os.environ.get("COLD_START_RUNS", "7"))
GOAL_RATIO = 2.5  # issue 11: each handler's cold start <= 2.5x the floor

QDRANT = """
import time
import pydantic, numpy  # loaded by the handler import already
t = time.perf_counter()
import grpc
g = time.perf_counter()
import qdrant_client
print((g - t) * 1000, (time.perf_counter() - g) * 1000)
"""

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
print((time.perf_counter() - t) * 1000)
"""

HANDLER = """
import time, importlib, sys
t = time.perf_counter()
app = importlib.import_module("app")
imported = (time.perf_counter() - t) * 1000
root = app.root()  # the function's composition root, from its environment (as on Lambda)
root.embedder(root.configured_model())  # the model, without reaching a store
import imgsim.store.server  # the Qdrant Cloud path (qdrant-client) both deployed functions open
print(imported, (time.perf_counter() - t) * 1000)
"""


def lambda_env(task: Path, tracing: bool) -> dict[str, str]:
    env = {
        "PATH": "/usr/bin:/bin", "LANG": "en_US.UTF-8", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "LAMBDA_TASK_ROOT": str(task), "POWERTOOLS_SERVICE_NAME": "imgsim", "IMAGES_BUCKET": "imgsim-images",
        "QDRANT_PATH": tempfile.mkdtemp(prefix="cold-q-"), "IMGSIM_NUM_THREADS": "1",
        "POWERTOOLS_TRACE_DISABLED": "false" if tracing else "true", "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    return env


def run(code: str, path: list[str], cwd: Path, env: dict[str, str], *args: str) -> list[float]:
    from imgsim_tools.invoke import lambda_python

    prelude = f"import sys; sys.path[:0] = {path!r}\n"
    out = subprocess.run([lambda_python(), "-I", "-S", "-B", "-c", prelude + code, *args], cwd=cwd, env=env,
                         capture_output=True, text=True, check=True)
    return [float(x) for x in out.stdout.split()]


def median_of(code: str, path: list[str], cwd: Path, env: dict[str, str], *args: str) -> list[float]:
    samples = [run(code, path, cwd, env, *args) for _ in range(RUNS)]
    return [statistics.median(column) for column in zip(*samples)]


def without_bytecode(build: Path, into: Path) -> Path:
    shutil.copytree(build, into, symlinks=True)
    for cache in into.rglob("__pycache__"):
        shutil.rmtree(cache)
    return into


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
    print(f"{'function':15} {'build':30} {'import ms':>10} {'ratio':>7} {'ready ms':>9} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as scratch:
        sources_only = without_bytecode(BUILD, Path(scratch) / "build")
        rows = [("shipped (bytecode, tracing off)", BUILD, False), ("shipped, Tracing=Active", BUILD, True),
                ("no bytecode in the layer", sources_only, False)]
        worst = 0.0
        for function in ("SearchFunction", "IndexFunction"):
            for label, build, tracing in rows:
                task = build / function
                path = [str(task), str(build / "SharedLayer" / "python"), sdk]
                imported, ready = median_of(HANDLER, path, task, lambda_env(task, tracing), str(task), function)
                print(f"{function:15} {label:30} {imported:10.0f} {imported / floor:6.2f}x {ready:9.0f} "
                      f"{ready / floor:6.2f}x")
                if build is BUILD and not tracing:
                    worst = max(worst, imported / floor)
    grpc_ms, client_ms = median_of(QDRANT, [str(layer / "python"), sdk], ROOT, floor_env)
    print(f"of 'ready': qdrant-client's import {grpc_ms + client_ms:.0f} ms, of which grpc {grpc_ms:.0f} ms "
          "(a REST-only client path saves only that: the rest is its pydantic REST models)")
    verdict = "within" if worst <= GOAL_RATIO else "ABOVE"
    print(f"goal: handler import <= {GOAL_RATIO}x floor as shipped: worst x{worst:.2f} ({verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
