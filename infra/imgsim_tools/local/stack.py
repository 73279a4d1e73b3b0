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

The handlers run unchanged, on one composition root the stack builds from the variables of the contract (the
template's, this shell's, the command line's) and hands to each execution environment (``use_root``); its boto3
clients, and so the presigned URLs, point at the local S3.

The parts talk to each other through small interfaces, not through this object: the event source and the HTTP
front end get the function to call (``invoke``) and the stop signal (a ``threading.Event``); the event source
tells the durable bucket what was handled through a callback (``settle``).

Persistence: Qdrant persists by itself (its write-ahead log). moto keeps S3 in memory, so every write and delete
it acknowledges is first committed under ``<data-dir>/s3/`` with the notification it owes the event source
(``durable_s3``). On start the bucket's listing goes back into moto (bytes read on first access) *before* the
bucket notifications are configured, so restoring re-indexes nothing, and the event source gets again only the
notifications that were never handled (moto's queue lived in memory too): no scan of the bucket or the index.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from imgsim.composition import Root, boto3_client_factory
from imgsim.errors import ConfigError, ImgsimError
from imgsim.settings import (
    API_KEY,
    API_KEY_PARAM,
    API_KEYS_PARAM,
    IMAGES_BUCKET,
    QDRANT_PATH,
    QDRANT_URL,
    VARIABLES,
    load,
)

from .. import lambda_emulation
from ..commands.keys import LOCAL_RING
from ..events import s3_notification, s3_record
from ..reindex_stack import StackReindex
from ..session import Session
from .common import (
    ACCOUNT_ID,
    BUCKET,
    DLQ,
    INDEX_CHECK_SECONDS,
    INDEX_HANDLER,
    LOCAL_VARIABLES,
    QUEUE,
    SEARCH_HANDLER,
    SETTINGS,
    TEMPLATE,
    TRASH_CHECK_SECONDS,
    StackError,
    StackStopping,
    log,
)
from .durable_s3 import PUT, DurableBucket, WriteThrough
from .environments import EnvironmentPool, PoolClosed
from .event_source import SqsPoller, s3_changes
from .http_front import ApiServer
from .post_policy import PostPolicy, moto_cors
from .tokens import TokenVerifier

# powertools' own variables, for a laptop: no X-Ray daemon, no CloudWatch (EMF lines kept off the console).
POWERTOOLS_DEFAULTS = {
    "POWERTOOLS_SERVICE_NAME": "imgsim-local", "POWERTOOLS_METRICS_NAMESPACE": "imgsim",
    "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true",
}

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
        index_handler: Path = INDEX_HANDLER, search_handler: Path = SEARCH_HANDLER, search_concurrency: int = 4,
        variables: Mapping[str, str] | None = None, tokens: TokenVerifier | None = None,
    ) -> None:
        """``variables``: settings the command line chose (imgsim's global options, e.g. QDRANT_PATH); they win
        over this shell's and the template's. ``tokens``: bearer tokens are validated as the token API's JWT
        authorizer does (``imgsim serve --jwks``), beside the keys."""
        self.tokens = tokens
        self.host = host
        self.variables = dict(variables or {})
        self.port = port
        self.s3_port = s3_port
        self.data_dir = data_dir.resolve()
        self.index_handler_path = index_handler
        self.search_handler_path = search_handler
        self.search_concurrency = search_concurrency
        self.pools: dict[str, EnvironmentPool] = {}
        self.started = False
        self.start_seconds = 0.0
        self.api_key = ""
        self.api_key_generated = False
        self.durable: DurableBucket | None = None
        self.memory_mb = {"IndexFunction": 1024, "SearchFunction": 1024}  # the template's MemorySize, once read
        self.restored = 0
        self._stopping = threading.Event()
        self._closed = False  # the runtime is closed: no more invocations
        self._threads: list[threading.Thread] = []
        self._moto_server: Any = None
        self._moto_socket: socket.socket | None = None
        self._http_server: ApiServer | None = None
        self.root: Root | None = None  # both functions' composition root (their environments share it)
        self.region = "us-east-1"
        self.queue_url = ""
        self.queue_arn = ""
        self.dlq_url = ""
        self.poller: SqsPoller | None = None
        self._write_through: WriteThrough | None = None
        # `imgsim reindex --stack`: runs here, on the functions' own root
        self.reindex = StackReindex(lambda: Session.on_root(self._require_root()))

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
            self._configure()
            self._open_root()  # first: a data dir in use by another process fails before anything starts
            self._start_moto()
            self._create_resources()
            # The event source runs one batch at a time (one environment); the API scales out on demand.
            self.pools = {
                "IndexFunction": EnvironmentPool(self.index_handler_path, "imgsim_local_index_app", 1,
                                                 self._load_handler),
                "SearchFunction": EnvironmentPool(self.search_handler_path, "imgsim_local_search_app",
                                                  self.search_concurrency, self._load_handler),
            }
            self.poller = SqsPoller(self._sqs, self.queue_url, self.queue_arn, invoke=self.invoke,
                                    stopping=self._stopping, settle=self.settle,
                                    region=self.region, dlq_url=self.dlq_url)
            self._catch_up()
            self._start_poller()
            self._spawn("index-builder", self._index_builder)
            self._spawn("trash-expiry", self._trash_expiry)
        except BaseException:
            api_socket.close()
            raise
        self._http_server = ApiServer(api_socket, self.invoke, api_key=self.api_key, reindex=self.reindex,
                                      tokens=self.tokens)
        self._spawn("api-server", self._http_server.serve_forever)
        self.started = True
        self.start_seconds = time.perf_counter() - began

    def banner(self) -> str:
        key_note = "generated; set IMGSIM_API_KEY to choose it" if self.api_key_generated else "from IMGSIM_API_KEY"
        settings = self._require_root().engine
        qdrant = settings.qdrant_url or f"embedded at {settings.qdrant_path}"
        return "\n".join([
            f"imgsim local stack ready in {self.start_seconds:.1f} s",
            f"  Web page     {self.api_url}/",
            f"  API          {self.api_url}  (header x-api-key)",
            f"  API key      {self.api_key}  ({key_note}; every scope)",
            f"  Key ring     {self.data_dir / LOCAL_RING}  (imgsim keys create --name N --scopes ...)",
            *([f"  Tokens       Authorization: Bearer, issuer {self.tokens.issuer}, audience {self.tokens.audience}"]
              if self.tokens is not None else []),
            f"  S3 endpoint  {self.s3_url}  (bucket {BUCKET})",
            f"               aws --endpoint-url {self.s3_url} s3 cp photo.jpg s3://{BUCKET}/photos/",
            f"  Qdrant       {qdrant}, collection {settings.collection}",
            f"  Stored images in {self.data_dir / 's3'} ({self.restored} restored)",
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
        if self.durable is not None:
            self.durable.close()
            self.durable = None
        if self._moto_socket is not None:
            self._moto_socket.close()
            self._moto_socket = None
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self.root is not None:
            # After any in-flight invocation: closes the embedded Qdrant (flush + file lock).
            for pool in self.pools.values():
                pool.close()
            self.root.close()
            self._closed = True

    # -- start-up steps ----------------------------------------------------------------------------------------------

    def _function_environment(self) -> dict[str, str]:
        """The two functions' variables as the template (the built one after `make build`) declares them,
        resolved by the reader the invoke runner uses. One process plays both functions, so where they
        differ (service name, Qdrant timeouts) SearchFunction's interactive values win. Variables that
        point at AWS (the bucket, SSM parameter names, a Qdrant server) are the stack's to set."""
        from ..template_functions import TemplateError, read_function

        merged: dict[str, str] = {}
        for function in ("IndexFunction", "SearchFunction"):
            try:
                config = read_function(function, TEMPLATE, region=self.region, quiet=True)
            except TemplateError as exc:
                raise StackError(str(exc)) from exc
            merged.update(config.variables)
            self.memory_mb[function] = config.memory_mb
        for name in LOCAL_VARIABLES:
            merged.pop(name, None)
        return merged

    def _configure(self) -> None:
        """The functions' settings, as one ``AppSettings`` handed to their composition root (nothing of imgsim's is
        written to ``os.environ``): the template's variables, then this shell's, then the command line's, then what
        the stack itself provides (the bucket, the data dir, a generated API key). Every AWS call of the functions
        and the stack goes to the emulator with dummy credentials, so a developer's real credentials or profile are
        never used."""
        shell = os.environ
        self.region = shell.get("AWS_REGION") or shell.get("AWS_DEFAULT_REGION") or "us-east-1"
        variables = self._function_environment()
        variables.update({name: value for name, value in shell.items() if name in VARIABLES})
        variables.update(self.variables)
        if QDRANT_PATH in self.variables and QDRANT_URL not in self.variables:
            variables.pop(QDRANT_URL, None)  # an explicit local folder wins over a server in the environment
        variables[IMAGES_BUCKET] = BUCKET
        variables.setdefault(QDRANT_PATH, str(self.data_dir / "qdrant"))
        variables.pop(API_KEY_PARAM, None)  # the deployed stack reads keys from SSM; locally they come from the shell
        # The key ring `imgsim keys` writes in the data dir (read on every request: a change applies at once), and
        # IMGSIM_API_KEYS from the shell; the ring named by the template is an SSM parameter on AWS.
        variables[API_KEYS_PARAM] = f"file:{(self.data_dir / LOCAL_RING).resolve()}"
        self.api_key = variables.get(API_KEY, "")
        if not self.api_key:
            self.api_key = secrets.token_urlsafe(24)
            self.api_key_generated = True
            variables[API_KEY] = self.api_key
        try:
            settings = load(variables)
        except ConfigError as exc:
            raise StackError(str(exc), 2) from exc
        self.root = Root(settings, clients=boto3_client_factory(
            endpoint_url=self.s3_url, region=self.region, access_key="imgsim-local", secret_key="imgsim-local"))
        # powertools reads its own variables (as Lambda's configuration of the functions sets them) when the
        # handler modules build their Logger and Metrics: defaults for a laptop, a shell's choice kept.
        for name, value in POWERTOOLS_DEFAULTS.items():
            shell.setdefault(name, value)

    def _require_root(self) -> Root:
        if self.root is None:
            raise StackError("the stack is not started")
        return self.root

    def _start_moto(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        # What ThreadedMotoServer does, but on the socket bound above (its thread would die on a busy port).
        assert self._moto_socket is not None
        # S3's POST policy (the uploads' size, key and type), which moto does not check: see post_policy.
        app = PostPolicy(DomainDispatcherApplication(create_backend_app), cors_origin=moto_cors(ACCOUNT_ID))
        self._moto_server = make_server(
            self.host, self.s3_port, app, threaded=True, request_handler=MotoRequestHandler,
            fd=self._moto_socket.fileno(),
        )
        # A short poll interval: shutdown() waits up to one interval (the default 0.5 s is a quarter of the stop budget).
        self._spawn("moto-server", lambda: self._moto_server.serve_forever(poll_interval=0.05))

    def _create_resources(self) -> None:
        region = self.region
        s3 = self._require_root().client("s3")
        sqs = self._require_root().client("sqs")
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
        origins = sorted({self._require_root().settings.api.cors_origin, self.api_url})
        s3.put_bucket_cors(
            Bucket=BUCKET,
            CORSConfiguration={"CORSRules": [{
                "AllowedOrigins": ["*"] if "*" in origins else origins,
                "AllowedMethods": ["GET", "POST", "HEAD"],  # POST: the uploads (a presigned POST)
                "AllowedHeaders": ["*"],
                "ExposeHeaders": ["ETag"],
                "MaxAgeSeconds": 3000,
            }]},
        )
        # Restore the stored images while the bucket has no notifications yet: they are indexed already.
        from moto.s3.models import s3_backends

        self.durable = DurableBucket(self.data_dir / "s3" / BUCKET, BUCKET)
        self.restored = self.durable.restore_into(s3_backends[ACCOUNT_ID]["aws"], ACCOUNT_ID, region)
        # From here on every acknowledged write is on disk before moto answers it (see WriteThrough).
        self._write_through = WriteThrough(self.durable)
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

    def _open_root(self) -> None:
        root = self._require_root()
        try:
            # Open the store and the model now, so a locked data dir or a missing model is a start-up error,
            # not the first request's.
            root.embedder()
            root.store().count()
        except ImgsimError as exc:
            raise StackError(str(exc)) from exc
        except RuntimeError as exc:  # qdrant-client: "Storage folder ... is already accessed by another instance"
            raise StackError(f"cannot open the index: {exc} (stop the other imgsim process using it, "
                             "or choose another --data-dir)") from exc

    def _load_handler(self, path: Path, module_name: str) -> Callable[[dict, Any], Any]:
        """A function's handler in a new execution environment (its module loaded again, its cold start), running
        on the stack's root: the environments share the model and the stores, as ``use_root`` documents."""
        emulation = lambda_emulation
        try:
            handler = emulation.load_handler(path, module_name)
        except emulation.HandlerLoadError as exc:
            raise StackError(str(exc)) from exc
        sys.modules[module_name].use_root(self._require_root())
        return handler

    def _catch_up(self) -> None:
        """Send again the notifications that were owed when the stack last stopped or crashed.

        moto's queue lives in memory: an event not yet handled by IndexFunction is lost with the process.
        Each acknowledged write or delete is recorded as pending with its object (``DurableBucket``) and
        cleared once its event is handled (``settle``), so only those go to the event source again: the
        start-up cost does not grow with the bucket. Re-sent writes carry the backfill flag, so one that
        was indexed after all is skipped by its unchanged ETag instead of embedded again.
        """
        assert self.poller is not None and self.durable is not None
        pending = self.durable.pending()
        region = self.region
        bodies = []
        for item in pending:
            created = item.action == PUT
            record = s3_record(
                BUCKET, item.key, event_name="ObjectCreated:Put" if created else "ObjectRemoved:Delete",
                size=item.size, etag=item.etag, only_if_changed=created, region=region,
                configuration_id="index-created" if created else "index-removed", principal_id="imgsim-local",
            )
            bodies.append(json.dumps(s3_notification(record)))
        self.poller.enqueue(bodies)
        if self.restored or pending:
            log.info("restored %d stored images from %s; %d events owed to the indexer sent again",
                     self.restored, self.durable.root, len(pending))

    def settle(self, bodies: list[str]) -> None:
        """IndexFunction handled (or dead-lettered) these messages: their writes are no longer owed."""
        if self.durable is None:
            return
        for key, action, etag in s3_changes(bodies):
            self.durable.settle(key, action, etag)

    def _start_poller(self) -> None:
        assert self.poller is not None
        self._spawn("queue-drain", self.poller.drain)
        self._spawn("index-poller", self.poller.run)

    def _index_builder(self) -> None:
        """Embedded store: build the HNSW index in the background whenever IMGSIM_INDEX_THRESHOLD points
        are not in it yet (searches scan those one by one). The build runs in a child process on a copy,
        so the API and the indexer keep working meanwhile (see imgsim.store.edge)."""
        store = self._require_root().store()
        if store.backend != "edge":
            return  # a server indexes on its own
        threshold = self._require_root().engine.index_threshold

        def done(ok: bool, message: str) -> None:
            (log.info if ok else log.warning)("search index: %s", message)

        while not self._stopping.is_set():
            try:
                pending = store.unindexed_count()
                if pending >= threshold and store.build_index_in_background(done) is not None:
                    log.info("search index of %s: building for %d new points in the background",
                             store.collection, pending)
            except ImgsimError as exc:
                log.warning("search index check failed: %s", exc)
            self._stopping.wait(INDEX_CHECK_SECONDS)

    def _trash_expiry(self) -> None:
        """What the bucket's lifecycle rule does on AWS (template.yaml): trash entries past IMGSIM_TRASH_DAYS go, their
        objects too. Checked at start and then hourly (the period is counted in days)."""
        from imgsim.objects import S3Objects
        from imgsim.services import TrashService

        root = self._require_root()
        trash = TrashService(root.settings.api, store=root.store, objects=lambda: S3Objects(root.s3))
        while not self._stopping.is_set():
            try:
                gone = trash.purge_expired()
                if gone:
                    log.info("trash: %d entries past %d days deleted for good", gone, root.settings.api.trash_days)
            except ImgsimError as exc:
                log.warning("trash expiry failed: %s", exc)
            self._stopping.wait(TRASH_CHECK_SECONDS)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- invocations -------------------------------------------------------------------------------------------------

    def invoke(self, function: str, event: dict, timeout_s: int) -> Any:
        """One invocation in a free environment of ``function`` (a new one starts when all are busy)."""
        if self._closed or (self._stopping.is_set() and function == "IndexFunction"):
            raise StackStopping()
        try:
            with self.pools[function].environment() as handler:
                context = lambda_context(function, self.region, timeout_s,
                                         self.memory_mb[function])
                return handler(event, context)
        except PoolClosed as exc:
            raise StackStopping() from exc


def lambda_context(function: str, region: str, timeout_s: int, memory_mb: int = 1024) -> Any:
    return lambda_emulation.LambdaContext(f"imgsim-local-{function}", timeout_s=timeout_s, memory_mb=memory_mb,
                                             region=region, account_id=ACCOUNT_ID)

