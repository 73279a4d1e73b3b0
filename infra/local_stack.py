"""`imgsim serve`: the whole stack on one machine, no cloud account.

One process runs what AWS runs in several services:

- S3 + SQS: moto's server (the WSGI app behind ``moto.server.ThreadedMotoServer``) on ``--s3-port``, with the
  bucket, the indexing queue, its DLQ (redrive policy) and the bucket notifications set up as in template.yaml.
- Lambda's SQS event source mapping: a thread long-polls the queue (up to 10 messages), builds the SQS event
  exactly as Lambda does, calls IndexFunction's ``handler`` with a Lambda-like context and deletes the messages
  that are not reported in ``batchItemFailures`` (the others become visible again and are redelivered, then go to
  the DLQ after ``maxReceiveCount`` receives, as on AWS).
- API Gateway HTTP API: an HTTP server on ``--port`` turning each request into a payload-format-2.0 event for
  SearchFunction's ``handler`` and its response back into HTTP.
- Qdrant: embedded, under the data dir (``QDRANT_PATH``, default ``<data-dir>/qdrant``), or the server named by
  ``QDRANT_URL`` if set.

The handlers run unchanged: they are configured only through the environment variables of the contract
(``AWS_ENDPOINT_URL`` points their boto3 clients, and so their presigned URLs, at the local S3).

Persistence: Qdrant persists by itself (its write-ahead log). moto keeps S3 in memory, so every write and delete
it acknowledges is first fsynced into ``<data-dir>/s3/`` (``WriteThrough``; the whole bucket is reconciled once
more on shutdown). On start the objects are put back through moto's backend *before* the bucket notifications are
configured, so restoring them re-indexes nothing; for objects the index lacks (uploaded just before a crash, their
queue message lost with moto's memory) and points whose object is gone, the event source gets the notification
S3 would have sent, so the normal path brings the index in line.

Kept to the standard library, ``imgsim`` and libraries in the venv: the CLI loads this file by path.
"""

from __future__ import annotations

import argparse
import base64
import errno
import hashlib
import asyncio
import importlib.util
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote_plus, urlsplit

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

REPO_ROOT = Path(__file__).resolve().parents[1]
INDEX_HANDLER = REPO_ROOT / "functions" / "index" / "app.py"
SEARCH_HANDLER = REPO_ROOT / "functions" / "search" / "app.py"

BUCKET = "imgsim-images"
QUEUE = "imgsim-index-queue"
DLQ = "imgsim-index-dlq"
ACCOUNT_ID = "123456789012"  # moto's default account
TEMPLATE = REPO_ROOT / "template.yaml"


@dataclass(frozen=True)
class TemplateSettings:
    """What the stack emulates, read from template.yaml rather than copied (a change there shows here)."""

    index_timeout_s: int
    search_timeout_s: int
    index_batch_size: int
    visibility_timeout_s: int
    max_receive_count: int
    queue_retention_s: int
    dlq_retention_s: int

    @classmethod
    def read(cls, path: Path = TEMPLATE) -> TemplateSettings:
        import yaml

        class TemplateLoader(yaml.SafeLoader):
            """CloudFormation's short intrinsics (!Ref, !Sub, ...) read as None: only literal values are used."""

        TemplateLoader.add_multi_constructor("!", lambda loader, suffix, node: None)
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=TemplateLoader)  # noqa: S506 - SafeLoader subclass
        resources = doc["Resources"]
        defaults = (doc.get("Globals") or {}).get("Function") or {}

        def function(name: str, key: str) -> Any:
            return resources[name]["Properties"].get(key, defaults.get(key))

        sqs_events = [e["Properties"] for e in (function("IndexFunction", "Events") or {}).values() if e.get("Type") == "SQS"]
        queue = resources["IndexQueue"]["Properties"]
        return cls(
            index_timeout_s=int(function("IndexFunction", "Timeout")),
            search_timeout_s=int(function("SearchFunction", "Timeout")),
            index_batch_size=int(sqs_events[0].get("BatchSize", 10)),
            visibility_timeout_s=int(queue["VisibilityTimeout"]),
            max_receive_count=int(queue["RedrivePolicy"]["maxReceiveCount"]),
            queue_retention_s=int(queue["MessageRetentionPeriod"]),
            dlq_retention_s=int(resources["IndexDeadLetterQueue"]["Properties"]["MessageRetentionPeriod"]),
        )


SETTINGS = TemplateSettings.read()
INDEX_TIMEOUT_S = SETTINGS.index_timeout_s
SEARCH_TIMEOUT_S = SETTINGS.search_timeout_s
INDEX_BATCH_SIZE = SETTINGS.index_batch_size
# Lambda rejects invocation payloads over 6 MB; HTTP APIs reject request bodies over 10 MB.
LAMBDA_PAYLOAD_LIMIT = 6 * 1024 * 1024
HTTP_API_BODY_LIMIT = 10 * 1024 * 1024
RECEIVE_WAIT_S = 1  # short long-poll so Ctrl-C is quick; Lambda's poller waits up to 20 s

log = logging.getLogger("imgsim.serve")
# How often `imgsim serve` checks whether the embedded index needs a background build.
INDEX_CHECK_SECONDS = 10


class StackError(Exception):
    """A start-up problem worth one line on stderr (exit 2: usage, 1: anything else)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- command line ---------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=3000, help="HTTP port of the page and the API (default 3000)")
    parser.add_argument("--s3-port", type=int, default=4566, help="port of the S3 + SQS emulator (default 4566)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--data-dir", default="./.data",
        help="where the index (qdrant/, unless QDRANT_PATH is set) and the stored images (s3/) persist "
        "(default ./.data)",
    )
    # Hidden: run the stack around other handlers (the stack's own tests use tiny stand-ins).
    parser.add_argument("--index-handler", default=str(INDEX_HANDLER), help=argparse.SUPPRESS)
    parser.add_argument("--search-handler", default=str(SEARCH_HANDLER), help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    _configure_logging()
    stack = LocalStack(
        host=args.host, port=args.port, s3_port=args.s3_port, data_dir=Path(args.data_dir),
        index_handler=Path(args.index_handler), search_handler=Path(args.search_handler),
    )
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        if stop.is_set():
            # A second Ctrl-C while stopping: give up waiting (embedded Qdrant is consistent after every write).
            print("imgsim serve: forced stop", file=sys.stderr, flush=True)
            os._exit(130)
        print(f"\n{signal.Signals(signum).name}: stopping ...", flush=True)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            stack.start()
        except StackError as exc:
            print(f"imgsim serve: {exc}", file=sys.stderr)
            return exc.exit_code
        print(stack.banner(), flush=True)
        while not stop.wait(0.5):
            pass
        return 0
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if stack.started:
            print("imgsim serve: stopped", flush=True)


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    # Metrics are off locally (no CloudWatch), so powertools' "no metrics to publish" warning is noise here.
    warnings.filterwarnings("ignore", "No application metrics to publish", UserWarning)
    # moto's WSGI server logs every S3/SQS request (the poller makes one a second): keep only problems.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


# -- the stack --------------------------------------------------------------------------------------------------------


def _listening_socket(host: str, port: int, what: str, option: str) -> socket.socket:
    """Bind now, in this thread, so a busy port is one clear error instead of a server thread's crash."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart right after a stop (TIME_WAIT)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StackError(f"{what} port {port} on {host} is already in use; choose another with {option}", 2)
        raise StackError(f"cannot listen on {host}:{port} for {what}: {exc.strerror or exc}", 2) from exc
    return sock


class LocalStack:
    def __init__(
        self, *, host: str, port: int, s3_port: int, data_dir: Path,
        index_handler: Path = INDEX_HANDLER, search_handler: Path = SEARCH_HANDLER,
    ) -> None:
        self.host = host
        self.port = port
        self.s3_port = s3_port
        self.data_dir = data_dir.resolve()
        self.index_handler_path = index_handler
        self.search_handler_path = search_handler
        self.started = False
        self.start_seconds = 0.0
        self.api_key = ""
        self.api_key_generated = False
        self.mirror: ObjectMirror | None = None
        self.restored: list[str] = []
        # One process plays two execution environments that share imgsim.runtime's singletons (the embedded
        # Qdrant client and the TFLite interpreter), and neither is thread-safe. Lambda runs one invocation per
        # environment at a time anyway, so invocations are serialized here.
        self.invoke_lock = threading.Lock()
        self._stopping = threading.Event()
        self._closed = False  # the runtime is closed: no more invocations
        self._threads: list[threading.Thread] = []
        self._moto_server: Any = None
        self._moto_socket: socket.socket | None = None
        self._http_server: ApiServer | None = None
        self._runtime: Any = None
        self.queue_url = ""
        self.queue_arn = ""
        self.dlq_url = ""
        self.poller: SqsPoller | None = None
        self._write_through: WriteThrough | None = None

    # public URLs (a wildcard listen address is reached through loopback)
    @property
    def public_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def api_url(self) -> str:
        return f"http://{self.public_host}:{self.port}"

    @property
    def s3_url(self) -> str:
        return f"http://{self.public_host}:{self.s3_port}"

    def start(self) -> None:
        began = time.perf_counter()
        for path in (self.index_handler_path, self.search_handler_path):
            if not path.is_file():
                raise StackError(f"handler not found: {path}")
        # Both ports first: a busy port fails before anything else happens.
        self._moto_socket = _listening_socket(self.host, self.s3_port, "S3 emulator", "--s3-port")
        try:
            api_socket = _listening_socket(self.host, self.port, "API", "--port")
        except StackError:
            self._moto_socket.close()
            self._moto_socket = None
            raise
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._configure_environment()
            self._open_runtime()  # first: a data dir in use by another process fails before anything starts
            self._start_moto()
            self._create_resources()
            self.index_handler = load_handler(self.index_handler_path, "imgsim_local_index_app")
            self.search_handler = load_handler(self.search_handler_path, "imgsim_local_search_app")
            self.poller = SqsPoller(self._sqs, self.queue_url, self.queue_arn, self, dlq_url=self.dlq_url)
            self._catch_up()
            self._start_poller()
            self._spawn("index-builder", self._index_builder)
        except BaseException:
            api_socket.close()
            raise
        self._http_server = ApiServer(api_socket, self)
        self._spawn("api-server", self._http_server.serve_forever)
        self.started = True
        self.start_seconds = time.perf_counter() - began

    def banner(self) -> str:
        key_note = "generated; set IMGSIM_API_KEY to choose it" if self.api_key_generated else "from IMGSIM_API_KEY"
        settings = self._runtime.get_settings()
        qdrant = settings.qdrant_url or f"embedded at {settings.qdrant_path}"
        return "\n".join([
            f"imgsim local stack ready in {self.start_seconds:.1f} s",
            f"  Web page     {self.api_url}/",
            f"  API          {self.api_url}  (header x-api-key)",
            f"  API key      {self.api_key}  ({key_note})",
            f"  S3 endpoint  {self.s3_url}  (bucket {BUCKET})",
            f"               aws --endpoint-url {self.s3_url} s3 cp photo.jpg s3://{BUCKET}/photos/",
            f"  Qdrant       {qdrant}, collection {settings.collection}",
            f"  Stored images mirrored in {self.data_dir / 's3'}",
            "Press Ctrl-C to stop.",
        ])

    def stop(self) -> None:
        self._stopping.set()
        if self.poller is not None:
            self.poller.wake()
        if self._http_server is not None:
            self._http_server.shutdown()
        for thread in self._threads:
            if thread.name != "moto-server":
                thread.join()
        if self.mirror is not None and self._moto_server is not None:
            try:
                self.mirror.reconcile()
            except Exception as exc:  # noqa: BLE001 - never lose the shutdown over the mirror
                log.warning("could not save the bucket to %s: %s", self.mirror.root, exc)
        if self._http_server is not None:
            self._http_server.server_close()
            self._http_server = None
        if self._moto_server is not None:
            self._moto_server.shutdown()
            self._moto_server.server_close()
            self._moto_server = None
        if self._write_through is not None:
            self._write_through.uninstall()
            self._write_through = None
        if self._moto_socket is not None:
            self._moto_socket.close()
            self._moto_socket = None
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self._runtime is not None:
            # After any in-flight invocation: closes the embedded Qdrant (flush + file lock).
            with self.invoke_lock:
                self._runtime.reset()
                self._closed = True

    # -- start-up steps ----------------------------------------------------------------------------------------------

    def _configure_environment(self) -> None:
        env = os.environ
        # Every AWS call of this process (and of the handlers) goes to the emulator, signed with dummy
        # credentials, so a developer's real credentials or profile are never used.
        env["AWS_ENDPOINT_URL"] = self.s3_url
        env["AWS_ACCESS_KEY_ID"] = "imgsim-local"
        env["AWS_SECRET_ACCESS_KEY"] = "imgsim-local"
        for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
            env.pop(name, None)
        env["AWS_DEFAULT_REGION"] = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"]
        env["IMAGES_BUCKET"] = BUCKET
        env.setdefault("QDRANT_PATH", str(self.data_dir / "qdrant"))
        env.setdefault("POWERTOOLS_SERVICE_NAME", "imgsim-local")
        env.setdefault("POWERTOOLS_METRICS_NAMESPACE", "imgsim")
        env.setdefault("POWERTOOLS_TRACE_DISABLED", "true")  # no X-Ray daemon on a laptop
        env.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # no CloudWatch: keep EMF lines off the console
        # The deployed stack reads keys from SSM; locally they come from the environment.
        env.pop("IMGSIM_API_KEY_PARAM", None)
        self.api_key = env.get("IMGSIM_API_KEY", "")
        if not self.api_key:
            self.api_key = secrets.token_urlsafe(24)
            self.api_key_generated = True
            env["IMGSIM_API_KEY"] = self.api_key

    def _start_moto(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        # What ThreadedMotoServer does, but on the socket bound above (its thread would die on a busy port).
        assert self._moto_socket is not None
        app = DomainDispatcherApplication(create_backend_app)
        self._moto_server = make_server(
            self.host, self.s3_port, app, threaded=True, request_handler=MotoRequestHandler,
            fd=self._moto_socket.fileno(),
        )
        # A short poll interval: shutdown() waits up to one interval (the default 0.5 s is a quarter of the stop budget).
        self._spawn("moto-server", lambda: self._moto_server.serve_forever(poll_interval=0.05))

    def _create_resources(self) -> None:
        import boto3

        region = os.environ["AWS_DEFAULT_REGION"]
        s3 = boto3.client("s3")
        sqs = boto3.client("sqs")
        dlq_url = sqs.create_queue(QueueName=DLQ, Attributes={"MessageRetentionPeriod": str(SETTINGS.dlq_retention_s)})[
            "QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.dlq_url = dlq_url
        self.queue_url = sqs.create_queue(
            QueueName=QUEUE,
            Attributes={
                # AWS's advice for an SQS event source: visibility timeout = 6 x the function timeout.
                "VisibilityTimeout": str(SETTINGS.visibility_timeout_s),
                "MessageRetentionPeriod": str(SETTINGS.queue_retention_s),
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                             "maxReceiveCount": SETTINGS.max_receive_count}),
            },
        )["QueueUrl"]
        self.queue_arn = f"arn:aws:sqs:{region}:{ACCOUNT_ID}:{QUEUE}"
        if region == "us-east-1":
            s3.create_bucket(Bucket=BUCKET)
        else:
            s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": region})
        origins = sorted({os.environ.get("IMGSIM_CORS_ORIGIN") or "*", self.api_url})
        s3.put_bucket_cors(
            Bucket=BUCKET,
            CORSConfiguration={"CORSRules": [{
                "AllowedOrigins": ["*"] if "*" in origins else origins,
                "AllowedMethods": ["GET", "PUT", "POST", "HEAD"],
                "AllowedHeaders": ["*"],
                "ExposeHeaders": ["ETag"],
                "MaxAgeSeconds": 3000,
            }]},
        )
        # Restore the stored images while the bucket has no notifications yet: they are indexed already.
        self.mirror = ObjectMirror(self.data_dir / "s3" / BUCKET, s3, BUCKET)
        self.restored = self.mirror.restore()
        # From here on every acknowledged write is on disk before moto answers it (see WriteThrough).
        self._write_through = WriteThrough(self.mirror, BUCKET)
        self._write_through.install()
        s3.put_bucket_notification_configuration(
            Bucket=BUCKET,
            NotificationConfiguration={"QueueConfigurations": [
                {"Id": "index-created", "QueueArn": self.queue_arn, "Events": ["s3:ObjectCreated:*"]},
                {"Id": "index-removed", "QueueArn": self.queue_arn, "Events": ["s3:ObjectRemoved:*"]},
            ]},
        )
        self._sqs = sqs
        self._s3 = s3

    def _open_runtime(self) -> None:
        from imgsim import runtime
        from imgsim.errors import ImgsimError

        self._runtime = runtime
        runtime.reset()  # the environment changed: rebuild settings and boto3 clients from it
        try:
            # Open the store and the model now, so a locked data dir or a missing model is a start-up error,
            # not the first request's.
            runtime.get_embedder()
            runtime.get_store().count()
        except ImgsimError as exc:
            raise StackError(str(exc)) from exc
        except RuntimeError as exc:  # qdrant-client: "Storage folder ... is already accessed by another instance"
            raise StackError(f"cannot open the index: {exc} (stop the other imgsim process using it, "
                             "or choose another --data-dir)") from exc

    def _catch_up(self) -> None:
        """Make the index agree with the restored bucket through the normal event path.

        moto's queue lives in memory too: events not yet handled when the stack last stopped (or crashed) are
        gone. Restored objects missing from the index are put again (S3 then notifies ObjectCreated), and
        points of this bucket whose object is gone get the ObjectRemoved event S3 would have sent. Only for
        the embedded index: a Qdrant server (QDRANT_URL) may be shared, and is never cleaned from here.
        """
        from imgsim.ids import point_id_for_object

        store = self._runtime.get_store()
        by_id = {point_id_for_object(BUCKET, key): key for key in self.restored}
        ids = list(by_id)
        known: set[str] = set()
        for start in range(0, len(ids), 256):
            known.update(str(record.id) for record in store.retrieve(ids[start:start + 256]))
        missing = [by_id[i] for i in ids if i not in known]
        region = os.environ["AWS_DEFAULT_REGION"]
        assert self.poller is not None
        # The notifications S3 would have sent, straight to the event source (re-putting each object
        # only to provoke one cost ~5 ms an object: 1,692 objects took 13.7 s to restart).
        self.poller.enqueue([json.dumps(s3_object_event(key, region, created=True, **self.mirror.describe(key)))
                             for key in missing])
        gone: list[str] = []
        if not self._runtime.get_settings().qdrant_url:
            present = set(self.restored)
            gone = [key for key in indexed_keys(store, BUCKET) if key not in present]
            self.poller.enqueue([json.dumps(s3_object_event(key, region, created=False)) for key in gone])
        if self.restored or gone:
            log.info("restored %d stored images from %s; %d queued for indexing, %d for removal from the index",
                     len(self.restored), self.mirror.root, len(missing), len(gone))

    def _start_poller(self) -> None:
        assert self.poller is not None
        self._spawn("queue-drain", self.poller.drain)
        self._spawn("index-poller", self.poller.run)

    def _index_builder(self) -> None:
        """Embedded store: build the HNSW index in the background whenever IMGSIM_INDEX_THRESHOLD points
        are not in it yet (searches scan those one by one). The build runs in a child process on a copy,
        so the API and the indexer keep working meanwhile (see imgsim.store.edge)."""
        from imgsim.errors import ImgsimError

        store = self._runtime.get_store()
        if store.backend != "edge":
            return  # a server indexes on its own
        threshold = self._runtime.get_settings().index_threshold

        def done(ok: bool, message: str) -> None:
            (log.info if ok else log.warning)("search index: %s", message)

        while not self._stopping.is_set():
            try:
                pending = store.unindexed_count()
                if pending >= threshold and store.build_index_in_background(done) is not None:
                    log.info("search index: building for %d new points in the background", pending)
            except ImgsimError as exc:
                log.warning("search index check failed: %s", exc)
            self._stopping.wait(INDEX_CHECK_SECONDS)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- invocations -------------------------------------------------------------------------------------------------

    def invoke(self, handler: Callable[[dict, Any], Any], event: dict, function: str, timeout_s: int) -> Any:
        context = lambda_context(function, os.environ["AWS_DEFAULT_REGION"], timeout_s)
        with self.invoke_lock:
            if self._closed or (self._stopping.is_set() and function == "IndexFunction"):
                raise StackStopping()
            return handler(event, context)


class StackStopping(Exception):
    pass


def indexed_keys(store: Any, bucket: str) -> list[str]:
    """Keys of every point of ``bucket`` (a scroll over payloads only)."""
    from imgsim.store import in_bucket

    keys: list[str] = []
    offset = None
    while True:
        points, offset = store.scroll(where=in_bucket(bucket), limit=1000, offset=offset, fields=["key"])
        keys.extend(str((point.payload or {}).get("key")) for point in points)
        if offset is None:
            return keys


def s3_object_event(key: str, region: str, *, created: bool, size: int | None = None, etag: str | None = None) -> dict:
    """The notification S3 sends to the queue for a created or deleted object (keys URL-encoded, as S3 does)."""
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    obj: dict[str, Any] = {"key": quote_plus(key)}
    if created:
        obj.update({k: v for k, v in (("size", size), ("eTag", etag)) if v is not None})
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": region, "eventTime": now,
        "eventName": "ObjectCreated:Put" if created else "ObjectRemoved:Delete",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "index-created" if created else "index-removed",
               "bucket": {"name": BUCKET, "arn": f"arn:aws:s3:::{BUCKET}"}, "object": obj},
    }]}


# -- Lambda emulation ---------------------------------------------------------------------------------------------------


def _lambda_emulation() -> Any:
    """``infra/lambda_emulation.py``: the context and handler loading shared with the invoke runner and
    the tests (this file is itself loaded by path, so its directory is not necessarily importable)."""
    name = "imgsim_lambda_emulation"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / "lambda_emulation.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def load_handler(path: Path, module_name: str) -> Callable[[dict, Any], Any]:
    emulation = _lambda_emulation()
    try:
        return emulation.load_handler(path, module_name)
    except emulation.HandlerLoadError as exc:
        raise StackError(str(exc)) from exc


def lambda_context(function: str, region: str, timeout_s: int) -> Any:
    return _lambda_emulation().LambdaContext(f"imgsim-local-{function}", timeout_s=timeout_s, memory_mb=1024,
                                             region=region, account_id=ACCOUNT_ID)


def sqs_event(messages: list[dict], queue_arn: str, region: str) -> dict:
    """The event Lambda's SQS event source mapping passes for messages from ``receive_message``."""
    records = []
    for message in messages:
        attributes = message.get("Attributes", {})
        records.append({
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": {
                name: attributes[name]
                for name in ("ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp",
                             "AWSTraceHeader", "SequenceNumber", "MessageGroupId", "MessageDeduplicationId")
                if name in attributes
            },
            "messageAttributes": {
                name: _lambda_message_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        })
    return {"Records": records}


def _lambda_message_attribute(value: dict) -> dict:
    binary = value.get("BinaryValue")
    converted: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [base64.b64encode(v).decode() for v in value.get("BinaryListValues", [])],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        converted["stringValue"] = value["StringValue"]
    if binary is not None:
        converted["binaryValue"] = base64.b64encode(binary).decode()
    return converted


def failed_message_ids(response: Any, message_ids: list[str]) -> set[str]:
    """Lambda's reading of a ReportBatchItemFailures response: anything malformed fails the whole batch."""
    if response is None:
        return set()
    if not isinstance(response, dict):
        return set(message_ids)
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return set(message_ids)
    failed: set[str] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not identifier or identifier not in message_ids:
            return set(message_ids)
        failed.add(identifier)
    return failed


class SqsPoller:
    """Lambda's SQS event source mapping with ReportBatchItemFailures, for one concurrent invocation.

    moto's ReceiveMessage scans every message in the queue for each call (measured: ~220 ms per
    call with 600 queued, ~40 messages/s at best), so a burst of uploads made the local indexer
    fall ever further behind (36 images/s end to end against 157/s inside the handler). A drain
    thread therefore moves notifications out of moto as they arrive (receive + delete, keeping
    its queue short and cheap), and the poller feeds the handler from this in-process buffer,
    as the event source mapping would: batches of up to INDEX_BATCH_SIZE, each message's
    ApproximateReceiveCount, messages in ``batchItemFailures`` redelivered after the queue's
    visibility timeout (``redelivery_delay_s``), and after ``max_receive_count`` receives moved
    to the DLQ (a real message in moto's DLQ, inspectable with the AWS CLI). Objects reach the
    data dir when they are written (``WriteThrough``), not from here.
    """

    def __init__(self, sqs: Any, queue_url: str, queue_arn: str, stack: LocalStack, *, dlq_url: str = "",
                 redelivery_delay_s: float = SETTINGS.visibility_timeout_s,
                 max_receive_count: int = SETTINGS.max_receive_count) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.dlq_url = dlq_url
        self.stack = stack
        self.region = os.environ["AWS_DEFAULT_REGION"]
        self.redelivery_delay_s = redelivery_delay_s
        self.max_receive_count = max_receive_count
        self._ready: list[dict] = []  # messages to deliver, oldest first
        self._waiting: list[tuple[float, dict]] = []  # (visible again at, message) after a failure
        self._cond = threading.Condition()
        self.invocations = 0

    # -- ingress: moto's queue -> the buffer ---------------------------------------------------------------------

    def drain(self) -> None:
        while not self.stack._stopping.is_set():
            try:
                if not self.drain_once():
                    # Short polls with a pause rather than a 1 s long poll: a stop is noticed in 0.1 s.
                    self.stack._stopping.wait(0.1)
            except Exception as exc:  # noqa: BLE001 - the drain must survive a hiccup of the emulator
                if self.stack._stopping.is_set():
                    return
                log.warning("queue drain failed: %s", exc)
                self.stack._stopping.wait(1)

    def drain_once(self) -> int:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=INDEX_BATCH_SIZE, WaitTimeSeconds=0,
            AttributeNames=["All"], MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        for message in messages:
            message.setdefault("Attributes", {})["ApproximateReceiveCount"] = "0"
        with self._cond:
            self._ready.extend(messages)
            self._cond.notify_all()
        self.sqs.delete_message_batch(
            QueueUrl=self.queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
        )
        return len(messages)

    def enqueue(self, bodies: list[str]) -> None:
        """Messages for the function as if they had arrived on the queue (the start-up catch-up's)."""
        if not bodies:
            return
        now_ms = str(int(time.time() * 1000))
        messages = [{
            "MessageId": str(uuid.uuid4()), "ReceiptHandle": uuid.uuid4().hex, "Body": body,
            "MD5OfBody": hashlib.md5(body.encode()).hexdigest(), "MessageAttributes": {},  # noqa: S324 - SQS's checksum
            "Attributes": {"ApproximateReceiveCount": "0", "SentTimestamp": now_ms, "SenderId": "AIDAJHIPRHEMV73VRJEBU"},
        } for body in bodies]
        with self._cond:
            self._ready.extend(messages)
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._ready) + len(self._waiting)

    # -- delivery: the buffer -> IndexFunction ---------------------------------------------------------------------

    def run(self) -> None:
        while not self.stack._stopping.is_set():
            try:
                self.poll_once()
            except StackStopping:
                return
            except Exception as exc:  # noqa: BLE001 - the poller must survive a hiccup of the emulator
                if self.stack._stopping.is_set():
                    return
                log.warning("queue poll failed: %s", exc)
                self.stack._stopping.wait(1)

    def _take(self, wait_s: float) -> list[dict]:
        with self._cond:
            deadline = time.monotonic() + wait_s
            while True:
                now = time.monotonic()
                due = [m for at, m in self._waiting if at <= now]
                if due:
                    self._waiting = [(at, m) for at, m in self._waiting if at > now]
                    self._ready.extend(due)
                if self._ready or now >= deadline or self.stack._stopping.is_set():
                    batch, self._ready = self._ready[:INDEX_BATCH_SIZE], self._ready[INDEX_BATCH_SIZE:]
                    return batch
                next_due = min((at for at, _ in self._waiting), default=deadline)
                self._cond.wait(max(0.01, min(deadline, next_due) - now))

    def poll_once(self, wait_s: float = RECEIVE_WAIT_S) -> int:
        messages = self._take(wait_s)
        if not messages:
            return 0
        now_ms = str(int(time.time() * 1000))
        for message in messages:
            attributes = message["Attributes"]
            attributes["ApproximateReceiveCount"] = str(int(attributes["ApproximateReceiveCount"]) + 1)
            attributes.setdefault("ApproximateFirstReceiveTimestamp", now_ms)
        event = sqs_event(messages, self.queue_arn, self.region)
        ids = [m["MessageId"] for m in messages]
        began = time.perf_counter()
        try:
            result = self.stack.invoke(self.stack.index_handler, event, "IndexFunction", INDEX_TIMEOUT_S)
            failed = failed_message_ids(result, ids)
            log.info("IndexFunction: batch of %d in %.1f ms", len(ids), (time.perf_counter() - began) * 1000)
        except StackStopping:
            with self._cond:  # not delivered after all: back to the front
                self._ready[:0] = messages
            raise
        except Exception:  # noqa: BLE001 - as Lambda: an error fails the whole batch, logged
            log.error("IndexFunction failed; the batch of %d will be redelivered\n%s", len(ids), traceback.format_exc())
            failed = set(ids)
        self.invocations += 1
        if failed:
            self._redeliver_or_dead_letter([m for m in messages if m["MessageId"] in failed], len(ids))
        return len(messages)

    def _redeliver_or_dead_letter(self, failed: list[dict], batch_size: int) -> None:
        dead = [m for m in failed if int(m["Attributes"]["ApproximateReceiveCount"]) >= self.max_receive_count]
        retry = [m for m in failed if m not in dead]
        if retry:
            log.warning("IndexFunction reported %d of %d messages failed; they will be redelivered in %.0f s",
                        len(retry), batch_size, self.redelivery_delay_s)
            with self._cond:
                self._waiting.extend((time.monotonic() + self.redelivery_delay_s, m) for m in retry)
                self._cond.notify_all()
        for message in dead:
            log.warning("message %s failed %s times: moved to the DLQ", message["MessageId"],
                        message["Attributes"]["ApproximateReceiveCount"])
            if self.dlq_url:
                self.sqs.send_message(QueueUrl=self.dlq_url, MessageBody=message["Body"])


# -- API Gateway HTTP API emulation ---------------------------------------------------------------------------------

def request_event(method: str, target: str, headers: Any, body: bytes, source_ip: str, port: int) -> dict:
    """The HTTP API event for one request (imgsim.http_events knows the shape; the tests use it too)."""
    from imgsim.http_events import http_api_event

    split = urlsplit(target)
    joined: dict[str, str] = {}
    for name, value in headers:  # repeated headers: one comma-joined value, as API Gateway does
        lname = name.lower()
        joined[lname] = f"{joined[lname]},{value}" if lname in joined else value
    joined.setdefault("x-forwarded-proto", "http")
    joined.setdefault("x-forwarded-port", str(port))
    return http_api_event(method, split.path or "/", query=split.query, headers=joined, body=body,
                          source_ip=source_ip, api_id="local")


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def http_response(result: Any) -> HttpResponse:
    """API Gateway's reading of a format-2.0 Lambda response (including its inference when statusCode is absent)."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # No statusCode: API Gateway treats the whole return value as a JSON body with status 200.
        body = result if isinstance(result, str) else json.dumps(result)
        return HttpResponse(200, [("content-type", "application/json")], body.encode())
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()
               if str(k).lower() not in ("content-length", "transfer-encoding", "connection")]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(v)) for v in values)
    headers.extend(("set-cookie", str(c)) for c in result.get("cookies") or [])
    raw = result.get("body")
    if raw is None:
        body = b""
    elif result.get("isBase64Encoded"):
        body = base64.b64decode(raw)
    else:
        body = str(raw).encode()
    return HttpResponse(int(result["statusCode"]), headers, body)


def _json_error(status: int, code: str, message: str) -> HttpResponse:
    """Errors of the front end itself, in the API's documented shape."""
    return HttpResponse(status, [("content-type", "application/json")],
                        json.dumps({"error": {"code": code, "message": message}}).encode())


# Header block limit: API Gateway HTTP APIs take 10,240 bytes of request line and headers.
MAX_HEADER_BYTES = 10 * 1024


class JsonErrorsH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11), answering malformed requests in the API's JSON error shape.

    uvicorn writes its own plain-text 400 for every request h11 rejects (a bad request line, an
    invalid or negative Content-Length, a body cut short, headers over the limit). h11's error
    carries the right status (431 for oversized headers); this keeps it and sends JSON instead.
    """

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._protocol_error: h11.RemoteProtocolError | None = None
        next_event = self.conn.next_event

        def recording_next_event() -> Any:
            try:
                return next_event()
            except h11.RemoteProtocolError as exc:
                self._protocol_error = exc
                raise

        self.conn.next_event = recording_next_event  # type: ignore[method-assign]

    def eof_received(self) -> bool | None:
        """The client half-closed. A body still short of its Content-Length can never complete:
        answer 400 and never run it (http.server ran it truncated). A complete request in flight
        keeps the connection open for its response; an idle one closes."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return None
        if cycle.more_body:
            self._protocol_error = h11.RemoteProtocolError("the body ended before its Content-Length", 400)
            cycle.disconnected = True
            cycle.message_event.set()
            self.send_400_response("")
            return None
        return True

    def send_400_response(self, msg: str) -> None:
        error = self._protocol_error
        status = getattr(error, "error_status_hint", 400) or 400
        code = "request_header_too_large" if status == 431 else "bad_request"
        detail = f"malformed HTTP request: {error}" if error else msg
        body = json.dumps({"error": {"code": code, "message": detail}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        try:
            # One write: the response, its body and the end together, then close.
            self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers))
                                 + (self.conn.send(h11.Data(data=body)) or b"")
                                 + (self.conn.send(h11.EndOfMessage()) or b""))
        except h11.LocalProtocolError:  # a response had already begun: nothing more to say
            pass
        log.info("rejected a malformed request (%d): %s", status, detail)
        self.transport.close()


class ApiApp:
    """ASGI app: each HTTP request -> an API Gateway HTTP API event -> SearchFunction's handler."""

    def __init__(self, stack: LocalStack, port: int) -> None:
        self.stack = stack
        self.port = port

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        began = time.perf_counter()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        lowered = {k.lower(): v for k, v in headers}
        response: HttpResponse | None = None
        header_bytes = len(scope["method"]) + len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        header_bytes += sum(len(k) + len(v) + 4 for k, v in scope["headers"])
        if header_bytes > MAX_HEADER_BYTES:
            # h11 bounds only a header block still arriving; one read can bring a larger complete one.
            response = _json_error(431, "request_header_too_large", f"request line and headers over {MAX_HEADER_BYTES} bytes")
        elif "chunked" in lowered.get("transfer-encoding", "").lower():
            response = _json_error(411, "length_required", "send a Content-Length (API Gateway takes no chunked bodies)")
        elif int(lowered.get("content-length") or 0) > HTTP_API_BODY_LIMIT:
            response = _json_error(413, "body_too_large", f"request body over {HTTP_API_BODY_LIMIT} bytes")
        request_id = "-"
        if response is None:
            body = b""
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client went away, or the body was cut short (answered by the protocol)
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            target = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            client = scope.get("client") or ("127.0.0.1", 0)
            event = request_event(scope["method"], target, headers, body, client[0], self.port)
            request_id = event["requestContext"]["requestId"]
            if len(json.dumps(event)) > LAMBDA_PAYLOAD_LIMIT:
                response = _json_error(413, "body_too_large", "request over Lambda's 6 MB payload limit")
            else:
                response = await asyncio.to_thread(self._invoke, event, scope["method"], scope["path"])
        out_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        out_headers += [(b"apigw-requestid", request_id.encode()), (b"content-length", str(len(response.body)).encode())]
        await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
        # HEAD: the headers a GET would have, no body (API Gateway does the same).
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else response.body})
        log.info("%s %s -> %d (%.0f ms)", scope["method"], scope["path"], response.status,
                 (time.perf_counter() - began) * 1000)

    def _invoke(self, event: dict, method: str, path: str) -> HttpResponse:
        try:
            result = self.stack.invoke(self.stack.search_handler, event, "SearchFunction", SEARCH_TIMEOUT_S)
            return http_response(result)
        except StackStopping:
            return _json_error(503, "stopping", "imgsim serve is stopping")
        except Exception:  # noqa: BLE001 - as API Gateway: a failed invocation is a bare 500
            log.error("SearchFunction failed on %s %s\n%s", method, path, traceback.format_exc())
            return _json_error(500, "internal_error", "Internal Server Error")


class ApiServer:
    """uvicorn serving ``ApiApp`` on an already-bound socket, on its own thread (no signal handlers:
    the stack handles Ctrl-C). No ``Server`` banner; keep-alive for the page's many small requests."""

    def __init__(self, sock: socket.socket, stack: LocalStack) -> None:
        import uvicorn

        self.sock = sock
        config = uvicorn.Config(
            ApiApp(stack, sock.getsockname()[1]), http=JsonErrorsH11Protocol, lifespan="off", access_log=False,
            log_config=None, server_header=False, timeout_keep_alive=60,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        )
        self.server = uvicorn.Server(config)

    def serve_forever(self) -> None:
        self.server.run(sockets=[self.sock])

    def shutdown(self) -> None:
        self.server.should_exit = True

    def server_close(self) -> None:
        self.sock.close()


# -- persistence of stored images

def _durable_write(path: Path, content: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WriteThrough:
    """Every S3 write or delete that moto acknowledges is on disk first.

    moto keeps S3 in memory, and mirroring objects after the fact lost acknowledged uploads to
    ``kill -9`` (447 of 500 one second after they were acknowledged). moto funnels every write
    through ``S3Backend.put_object`` (PUT, copy, multipart completion) and every removal through
    ``S3Backend.delete_object`` (DELETE, DeleteObjects), and sets a new key's Content-Type with
    ``FakeKey.set_metadata``, all inside the request, before the response: wrapping those three
    makes the acknowledgement come after the fsync. Hand-written because moto has no persistence;
    the wrapped methods are moto's, pinned by tests/test_local_stack.py's kill -9 test.
    """

    def __init__(self, mirror: ObjectMirror, bucket: str) -> None:
        self.mirror = mirror
        self.bucket = bucket
        self._saved: list[tuple[Any, str, Any]] = []

    def install(self) -> None:
        from moto.s3.models import FakeKey, S3Backend

        mirror, bucket = self.mirror, self.bucket
        real_put, real_delete, real_meta = S3Backend.put_object, S3Backend.delete_object, FakeKey.set_metadata

        def put_object(backend: Any, bucket_name: str, key_name: str, value: bytes, *args: Any, **kwargs: Any) -> Any:
            key = real_put(backend, bucket_name, key_name, value, *args, **kwargs)
            if bucket_name == bucket:
                mirror.write(key_name, key.value, key.etag, key.metadata.get("Content-Type"))
            return key

        def delete_object(backend: Any, bucket_name: str, key_name: str, *args: Any, **kwargs: Any) -> Any:
            result = real_delete(backend, bucket_name, key_name, *args, **kwargs)
            if bucket_name == bucket and result and result[0]:
                mirror.remove(key_name)
            return result

        def set_metadata(key: Any, metadata: Any, *args: Any, **kwargs: Any) -> None:
            real_meta(key, metadata, *args, **kwargs)
            if getattr(key, "bucket_name", None) == bucket and "Content-Type" in key.metadata:
                mirror.set_content_type(key.name, key.metadata.get("Content-Type"))

        self._saved = [(S3Backend, "put_object", real_put), (S3Backend, "delete_object", real_delete),
                       (FakeKey, "set_metadata", real_meta)]
        S3Backend.put_object = put_object  # type: ignore[method-assign]
        S3Backend.delete_object = delete_object  # type: ignore[method-assign]
        FakeKey.set_metadata = set_metadata  # type: ignore[method-assign]

    def uninstall(self) -> None:
        for owner, name, original in self._saved:
            setattr(owner, name, original)
        self._saved = []


class ObjectMirror:
    """Keeps the bucket's objects in ``root`` (moto's S3 lives in memory): ``<sha256(key)>.bin`` + ``.json``.

    Hashed names because keys may hold any character, ``..`` or exceed file name limits.
    """

    def __init__(self, root: Path, s3: Any, bucket: str) -> None:
        self.root = root
        self.s3 = s3
        self.bucket = bucket
        self.root.mkdir(parents=True, exist_ok=True)
        self._locks = [threading.Lock() for _ in range(64)]

    def _paths(self, key: str) -> tuple[Path, Path]:
        stem = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.root / f"{stem}.bin", self.root / f"{stem}.json"

    def _meta(self) -> list[dict]:
        entries = []
        for path in self.root.glob("*.json"):
            try:
                entries.append(json.loads(path.read_text("utf-8")))
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable %s: %s", path, exc)
        return entries

    def restore(self) -> list[str]:
        """Put the stored objects back into moto (before notifications are configured: they are indexed).

        Through moto's backend in this process rather than its HTTP endpoint: measured at 480 objects,
        restart 4.8 s -> see README "Reliability". Still one pass over the stored objects."""
        from moto.s3.models import s3_backends

        backend = s3_backends[ACCOUNT_ID]["aws"]
        keys = []
        for meta in self._meta():
            data_path, _ = self._paths(meta["key"])
            try:
                data = data_path.read_bytes()
            except OSError:
                continue
            key = backend.put_object(self.bucket, meta["key"], data)
            key.set_metadata({"Content-Type": meta.get("content_type") or "binary/octet-stream"})
            keys.append(meta["key"])
        return keys

    def describe(self, key: str) -> dict[str, Any]:
        """Size and ETag of a stored object, for the notification S3 would send about it."""
        data_path, meta_path = self._paths(key)
        try:
            return {"size": data_path.stat().st_size, "etag": json.loads(meta_path.read_text("utf-8")).get("etag")}
        except (OSError, ValueError):
            return {}

    def write(self, key: str, data: bytes, etag: str, content_type: str | None = None) -> None:
        """Store one object durably: data and metadata written, fsynced and renamed into place, then the
        folder fsynced, so a power cut or ``kill -9`` after this returns cannot lose it."""
        data_path, meta_path = self._paths(key)
        meta = {"key": key, "etag": etag.strip('"'), "content_type": content_type}
        with self._locks[hash(key) % len(self._locks)]:
            for path, content in ((data_path, data), (meta_path, json.dumps(meta).encode())):
                _durable_write(path, content)
            _fsync_dir(self.root)

    def set_content_type(self, key: str, content_type: str | None) -> None:
        _, meta_path = self._paths(key)
        with self._locks[hash(key) % len(self._locks)]:
            try:
                meta = json.loads(meta_path.read_text("utf-8"))
            except (OSError, ValueError):
                return
            if meta.get("content_type") != content_type:
                meta["content_type"] = content_type
                _durable_write(meta_path, json.dumps(meta).encode())

    def remove(self, key: str) -> None:
        with self._locks[hash(key) % len(self._locks)]:
            for path in self._paths(key):
                path.unlink(missing_ok=True)
            _fsync_dir(self.root)

    def sync_key(self, key: str) -> None:
        """Make the mirror match the bucket for one key (idempotent, so event order does not matter)."""
        data_path, meta_path = self._paths(key)
        with self._locks[hash(key) % len(self._locks)]:  # one key at a time; different keys in parallel
            try:
                obj = self.s3.get_object(Bucket=self.bucket, Key=key)
            except self.s3.exceptions.NoSuchKey:
                data_path.unlink(missing_ok=True)
                meta_path.unlink(missing_ok=True)
                return
            data = obj["Body"].read()
            meta = {"key": key, "etag": obj.get("ETag", "").strip('"'), "content_type": obj.get("ContentType")}
            for path, content in ((data_path, data), (meta_path, json.dumps(meta).encode())):
                tmp = path.with_suffix(path.suffix + ".tmp")
                tmp.write_bytes(content)
                os.replace(tmp, path)

    def reconcile(self) -> None:
        """Mirror the whole bucket (shutdown): write what is new or changed, remove what is gone."""
        listed: dict[str, str] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for obj in page.get("Contents", []):
                listed[obj["Key"]] = obj.get("ETag", "").strip('"')
        stored = {meta["key"]: meta.get("etag") for meta in self._meta()}
        stale = [key for key, etag in listed.items() if stored.get(key) != etag or not self._paths(key)[0].exists()]
        # S3 round trips dominate: 8 at a time (measured at stop with 350 unmirrored objects: 1.5 s -> see README).
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(self.sync_key, stale))
        for key in set(stored) - set(listed):
            for path in self._paths(key):
                path.unlink(missing_ok=True)


if __name__ == "__main__":  # `python infra/local_stack.py`, same as `imgsim serve`
    _parser = argparse.ArgumentParser(prog="imgsim serve", description=__doc__.split("\n", 1)[0])
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
