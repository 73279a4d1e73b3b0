"""Run `imgsim serve` in a subprocess for the local-stack and web-page tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
IMGSIM = REPO_ROOT / ".venv" / "bin" / "imgsim"
BUCKET = "imgsim-images"
API_KEY = "test-key-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, *, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Serve:
    """One `imgsim serve` process: its ports, logs and a tiny HTTP client for its API."""

    def __init__(self, data_dir: Path, *, port: int | None = None, s3_port: int | None = None,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.s3_port = s3_port or free_port()
        self.api_url = f"http://127.0.0.1:{self.port}"
        self.s3_url = f"http://127.0.0.1:{self.s3_port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = data_dir / f"serve-{self.port}.out"
        self.stderr_path = data_dir / f"serve-{self.port}.err"
        full_env = {k: v for k, v in os.environ.items() if k not in ("QDRANT_PATH", "QDRANT_URL", "AWS_ENDPOINT_URL")}
        full_env.update({"IMGSIM_API_KEY": API_KEY, "PYTHONUNBUFFERED": "1"})
        full_env.update(env or {})
        cmd = [str(IMGSIM), "serve", "--port", str(self.port), "--s3-port", str(self.s3_port),
               "--data-dir", str(data_dir), *(extra_args or [])]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=err, env=full_env, cwd=str(data_dir))
        self.started_at = time.monotonic()
        self.ready_seconds: float | None = None

    # -- logs -------------------------------------------------------------------
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> Serve:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"imgsim serve exited with {self.process.returncode}\nstdout:\n{self.stdout()[-3000:]}\n"
                    f"stderr:\n{self.stderr()[-3000:]}"
                )
            try:
                status, _ = self.request("GET", "/health", timeout=2)
            except OSError:
                return False
            return status == 200

        wait_until(ready, timeout=timeout, interval=0.2, what="imgsim serve to answer /health")
        self.ready_seconds = time.monotonic() - self.started_at
        return self

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"imgsim serve did not stop within {timeout} s of {signal.Signals(sig).name}")
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    # -- HTTP -------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None, *, content_type: str | None = None,
                key: str | None = API_KEY, timeout: float = 30) -> tuple[int, Any]:
        headers = {}
        if key is not None:
            headers["x-api-key"] = key
        if content_type:
            headers["content-type"] = content_type
        req = urllib.request.Request(self.api_url + path, method=method, data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                status, raw, ctype = response.status, response.read(), response.headers.get("content-type", "")
        except urllib.error.HTTPError as exc:
            status, raw, ctype = exc.code, exc.read(), exc.headers.get("content-type", "")
        return status, (json.loads(raw) if "json" in ctype and raw else raw)

    def json_request(self, method: str, path: str, payload: Any, **kwargs: Any) -> tuple[int, Any]:
        return self.request(method, path, json.dumps(payload).encode(), content_type="application/json", **kwargs)

    def s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_url, region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local")

    def sqs(self):
        import boto3

        return boto3.client("sqs", endpoint_url=self.s3_url, region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local")

    def wait_indexed(self, point_id: str, timeout: float = 60) -> dict:
        def indexed():
            status, body = self.request("GET", f"/images/{point_id}")
            if status not in (200, 404):
                raise AssertionError(f"GET /images/{point_id} -> {status} {body!r}")
            return body if status == 200 else None

        return wait_until(indexed, timeout=timeout, what=f"image {point_id} to be indexed")

    def wait_gone(self, point_id: str, timeout: float = 60) -> None:
        wait_until(lambda: self.request("GET", f"/images/{point_id}")[0] == 404, timeout=timeout,
                   what=f"image {point_id} to leave the index")


@contextmanager
def running(data_dir: Path) -> Iterator[Serve]:
    """`imgsim serve` on ``data_dir``, ready, stopped (and killed if it lingers) afterwards: a test module's stack."""
    serve = Serve(data_dir)
    try:
        yield serve.wait_ready()
    finally:
        serve.stop()
        serve.kill()
