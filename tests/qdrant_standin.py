"""A stand-in for a Qdrant server's REST API, for the tests (not collected by pytest).

Why: the server backend speaks Qdrant's REST API as JSON over urllib3, and there is no Qdrant binary here
(no Docker, no network). The stand-in answers that API from qdrant-client's in-memory mode
(``QdrantClient(location=":memory:")``), so the REST client's own encoding, decoding and error handling run
against the same requests and answers a server would give, with or without a socket:

- ``QdrantStandin.send(method, target, body, headers) -> (status, headers, body)``: the in-process entry.
- ``QdrantStandin.wsgi``: the same handler as a WSGI app; ``with running(standin) as base:`` serves it on
  127.0.0.1 (werkzeug, threaded, port 0; ``StandinServer.start``/``stop`` for fixtures) and yields the base URL.

What it checks. Request bodies are parsed with qdrant-client's REST models, generated from Qdrant's OpenAPI
document with ``extra="forbid"``: a field Qdrant does not define, a wrong type or a bad enum value is a 400,
so a passing test means the client sends what Qdrant's API describes. Paths, methods and query parameters
follow qdrant-client's own REST layer (``qdrant_client/http/api/*_api.py``). Answers are the client's result
models dumped to JSON in Qdrant's envelope ``{"result", "status": "ok", "time"}``; errors are
``{"status": {"error": message}, "time"}`` with Qdrant's statuses and messages (qdrant/qdrant
``src/actix/helpers.rs``, ``src/actix/auth.rs``, ``src/actix/mod.rs``): 400 body or query parameters that do
not parse ("Format error in JSON body: ...", "Deserialize error in query parameters: ...") or "Wrong input";
404 "Not found: Collection `x` doesn't exist!"; 409 "Wrong input: Collection `x` already exists!" (409 since
Qdrant 1.8); 401 as plain text for a missing ("Must provide an API key or an Authorization bearer token") or
wrong ("Invalid API key or JWT") ``api-key`` header (``Authorization: Bearer <key>`` works too); an unknown
route or a known path with the wrong method is a 404 with an empty body, as actix-web's route macros answer.

Endpoints (what imgsim uses): GET /collections, GET /collections/{c}, PUT /collections/{c},
DELETE /collections/{c}, GET /collections/{c}/exists, PUT /collections/{c}/index, GET /aliases,
POST /collections/aliases, PUT /collections/{c}/points, POST /collections/{c}/points (retrieve),
POST /collections/{c}/points/{delete,payload,scroll,count,query,query/batch}.

Instances: ``/i/<name>/...`` addresses an independent in-memory Qdrant (created on first use), no prefix
the instance "default"; ``standin_url(base, name)`` gives a client its own. Every request runs under one
lock, as a server applies each request whole; the in-memory mode is not thread-safe (two threads inserting
new points at once fail with an IndexError inside it).

Faults, for the REST client's error tests: ``fail_next`` (the next requests answer a given status, headers
and body), ``drop_next`` (the connection closes without an answer: over HTTP the client sees
"Remote end closed connection without response"; ``send`` raises ``Dropped``, a urllib3 ``ProtocolError``,
what urllib3 raises for it), ``delay_next`` (answer after a pause, for timeouts). ``requests`` logs every
request as (instance, method, target, body). Faults come first, before the key check and routing (a proxy or a
load balancer in front of Qdrant answers those too).

Cost (measured here, 2 shared cores, 500-2,000 requests): a count through ``send`` ~30 us, over HTTP ~1.1 ms
(keep-alive, loopback); a new instance ~7 ms; starting and stopping the server ~50 ms (it polls for shutdown
every 50 ms).

Deliberate differences from a server:
- Stricter: Qdrant ignores unknown JSON fields and unknown query parameters; the stand-in rejects both (400),
  so a misspelt field or parameter fails a test instead of being silently ignored. A ``set_payload`` with
  both ``points`` and ``filter`` is rejected too (imgsim sends one of them).
- Answers omit null fields (``exclude_none``); Qdrant sends some as null (a Record's ``payload``/``vector``)
  and omits others (``shard_key``), so a client that reads optional keys with ``.get`` works on both.
- Local mode: exact search only (search params and payload indexes have no effect), one shard, no WAL:
  ``wait=false`` answers ``acknowledged`` but the write is already applied; ``ordering``, ``consistency`` and
  ``timeout`` are validated and otherwise ignored. ``GET /collections/{c}`` reports the shard, replication,
  write-consistency, on-disk-payload and quantization settings the collection was created with (server
  defaults 1, 1, 1, true, none) and the payload indexes created through ``PUT .../index``, which the
  in-memory mode itself does not keep.
- Constraint violations the server reports as 422 (e.g. ``limit: 0``) come back as 400 "Wrong input" from
  the in-memory mode; numeric point ids are not checked to be unsigned.
"""

from __future__ import annotations

import contextlib
import hmac
import http.client
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote

import urllib3.exceptions
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python
from qdrant_client import QdrantClient
from qdrant_client.http import models
from werkzeug.serving import WSGIRequestHandler, make_server

Response = tuple[int, dict[str, str], bytes]
"""(status, headers, body) of one answer."""

JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain; charset=utf-8"}
DEFAULT_INSTANCE = "default"


class Dropped(urllib3.exceptions.ProtocolError):
    """``send``'s answer to a dropped connection: the error urllib3 raises when a server closes the
    connection without answering (with ``retries=False``; a Retry policy wraps it in MaxRetryError)."""


@dataclass
class Fault:
    """One scheduled misbehaviour; ``status`` None with a delay means "answer normally, late"."""

    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    drop: bool = False
    delay_s: float = 0.0
    instance: str | None = None  # None: whichever instance the next request is for
    times: int = 1


@dataclass(frozen=True)
class LoggedRequest:
    instance: str
    method: str
    target: str  # path without the instance prefix, with the query
    body: bytes | None = None

    def json(self) -> Any:
        """The request's JSON body (None without one)."""
        return json.loads(self.body) if self.body else None


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Instance:
    """One in-memory Qdrant, plus what the in-memory mode forgets and a server reports back."""

    client: QdrantClient
    created: dict[str, models.CreateCollection] = field(default_factory=dict)
    indexes: dict[str, dict[str, models.PayloadFieldSchema]] = field(default_factory=dict)
    operations: int = 0


# -- query parameters (qdrant_client/http/api/*_api.py: which endpoint takes which) ---------------------------

class _NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _TimeoutParams(_NoParams):
    timeout: int | None = Field(default=None, ge=1)


class _WriteParams(_TimeoutParams):
    # serde's bool takes exactly "true"/"false" (pydantic's bool would also take "yes", "1", ...)
    wait: Literal["true", "false"] | None = None
    ordering: models.WriteOrdering | None = None


class _ReadParams(_TimeoutParams):
    consistency: int | models.ReadConsistencyType | None = None


@dataclass
class _Call:
    """What a route handler gets: the instance, the path's collection, the parsed body and parameters."""

    instance: _Instance
    name: str
    body: Any
    params: Any

    @property
    def client(self) -> QdrantClient:
        return self.instance.client

    def resolved(self) -> str:
        """The collection an alias leads to (records are kept under collection names)."""
        aliases = {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}
        return aliases.get(self.name, self.name)

    def update_result(self) -> models.UpdateResult:
        self.instance.operations += 1
        done = self.params.wait == "true"
        return models.UpdateResult(
            operation_id=self.instance.operations,
            status=models.UpdateStatus.COMPLETED if done else models.UpdateStatus.ACKNOWLEDGED,
        )


# -- handlers -------------------------------------------------------------------------------------------------

def _list_collections(call: _Call) -> Any:
    return call.client.get_collections()


def _collection_exists(call: _Call) -> Any:
    return models.CollectionExistence(exists=call.client.collection_exists(call.name))


def _get_collection(call: _Call) -> Any:
    info = call.client.get_collection(call.name)
    name = call.resolved()
    created = call.instance.created.get(name) or models.CreateCollection()
    params = info.config.params.model_copy(update={
        "shard_number": created.shard_number or 1,
        "replication_factor": created.replication_factor or 1,
        "write_consistency_factor": created.write_consistency_factor or 1,
        "on_disk_payload": True if created.on_disk_payload is None else created.on_disk_payload,
    })
    config = info.config.model_copy(update={"params": params, "quantization_config": created.quantization_config})
    schema = {
        field_name: _index_info(call.client, name, field_name, field_schema)
        for field_name, field_schema in call.instance.indexes.get(name, {}).items()
    }
    return info.model_copy(update={"config": config, "payload_schema": schema})


def _index_info(client: QdrantClient, collection: str, key: str, schema: Any) -> models.PayloadIndexInfo:
    has_value = models.Filter(must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=key))])
    if isinstance(schema, models.PayloadSchemaType):
        data_type, params = schema, None
    else:
        data_type, params = models.PayloadSchemaType(schema.type.value), schema
    return models.PayloadIndexInfo(data_type=data_type, params=params,
                                   points=client.count(collection, count_filter=has_value).count)


def _create_collection(call: _Call) -> Any:
    body: models.CreateCollection = call.body
    # The in-memory mode keeps vectors, sparse vectors and metadata; the rest is recorded for GET.
    call.client.create_collection(call.name, vectors_config=body.vectors, sparse_vectors_config=body.sparse_vectors,
                                  metadata=body.metadata)
    call.instance.created[call.name] = body
    call.instance.indexes[call.name] = {}
    return True


def _delete_collection(call: _Call) -> Any:
    existed = call.client.delete_collection(call.name)
    if existed:
        call.instance.created.pop(call.name, None)
        call.instance.indexes.pop(call.name, None)
    return existed


def _create_index(call: _Call) -> Any:
    body: models.CreateFieldIndex = call.body
    call.client.create_payload_index(call.name, body.field_name, field_schema=body.field_schema)
    if body.field_schema is not None:
        call.instance.indexes.setdefault(call.resolved(), {})[body.field_name] = body.field_schema
    return call.update_result()


def _get_aliases(call: _Call) -> Any:
    return call.client.get_aliases()


def _update_aliases(call: _Call) -> Any:
    body: models.ChangeAliasesOperation = call.body
    return call.client.update_collection_aliases(change_aliases_operations=body.actions)


def _upsert(call: _Call) -> Any:
    body: models.PointsList | models.PointsBatch = call.body
    points = body.points if isinstance(body, models.PointsList) else body.batch
    call.client.upsert(call.name, points=points, update_filter=body.update_filter, update_mode=body.update_mode)
    return call.update_result()


def _delete_points(call: _Call) -> Any:
    call.client.delete(call.name, points_selector=call.body)
    return call.update_result()


def _set_payload(call: _Call) -> Any:
    body: models.SetPayload = call.body
    selector: models.PointIdsList | models.FilterSelector
    if body.points is not None and body.filter is not None:
        raise _HttpError(400, "Format error in JSON body: give either points or filter, not both (stand-in)")
    if body.points is not None:
        selector = models.PointIdsList(points=body.points)
    elif body.filter is not None:
        selector = models.FilterSelector(filter=body.filter)
    else:  # Qdrant's own message (SetPayloadShadow)
        raise _HttpError(400, "Format error in JSON body: Either list of point ids or filter must be provided")
    call.client.set_payload(call.name, payload=body.payload, points=selector, key=body.key)
    return call.update_result()


def _retrieve(call: _Call) -> Any:
    body: models.PointRequest = call.body
    return call.client.retrieve(
        call.name, ids=body.ids, with_payload=True if body.with_payload is None else body.with_payload,
        with_vectors=False if body.with_vector is None else body.with_vector,
    )


def _scroll(call: _Call) -> Any:
    body: models.ScrollRequest = call.body
    points, next_offset = call.client.scroll(
        call.name, scroll_filter=body.filter, limit=10 if body.limit is None else body.limit, order_by=body.order_by,
        offset=body.offset, with_payload=True if body.with_payload is None else body.with_payload,
        with_vectors=False if body.with_vector is None else body.with_vector,
    )
    return models.ScrollResult(points=points, next_page_offset=next_offset)


def _count(call: _Call) -> Any:
    body: models.CountRequest = call.body
    return call.client.count(call.name, count_filter=body.filter, exact=True if body.exact is None else body.exact)


def _query_one(client: QdrantClient, name: str, request: models.QueryRequest) -> models.QueryResponse:
    # Qdrant's defaults for what the request leaves out (the client's keyword defaults differ: payload True)
    return client.query_points(
        name, query=request.query, using=request.using, prefetch=request.prefetch, query_filter=request.filter,
        search_params=request.params, limit=10 if request.limit is None else request.limit, offset=request.offset,
        with_payload=False if request.with_payload is None else request.with_payload,
        with_vectors=False if request.with_vector is None else request.with_vector,
        score_threshold=request.score_threshold, lookup_from=request.lookup_from,
    )


def _query(call: _Call) -> Any:
    return _query_one(call.client, call.name, call.body)


def _query_batch(call: _Call) -> Any:
    body: models.QueryRequestBatch = call.body
    return [_query_one(call.client, call.name, request) for request in body.searches]


@dataclass(frozen=True)
class _Route:
    method: str
    path: tuple[str, ...]  # segments; "{c}" is the collection name
    handler: Callable[[_Call], Any]
    params: type[BaseModel] = _NoParams
    body: TypeAdapter[Any] | None = None


def _route(method: str, path: str, handler: Callable[[_Call], Any], params: type[BaseModel] = _NoParams,
           body: Any = None) -> _Route:
    return _Route(method, tuple(path.strip("/").split("/")), handler, params,
                  TypeAdapter(body) if body is not None else None)


ROUTES = (
    _route("GET", "/collections", _list_collections),
    _route("GET", "/collections/{c}", _get_collection),
    _route("PUT", "/collections/{c}", _create_collection, _TimeoutParams, models.CreateCollection),
    _route("DELETE", "/collections/{c}", _delete_collection, _TimeoutParams),
    _route("GET", "/collections/{c}/exists", _collection_exists),
    _route("PUT", "/collections/{c}/index", _create_index, _WriteParams, models.CreateFieldIndex),
    _route("GET", "/aliases", _get_aliases),
    _route("POST", "/collections/aliases", _update_aliases, _TimeoutParams, models.ChangeAliasesOperation),
    _route("PUT", "/collections/{c}/points", _upsert, _WriteParams, models.PointInsertOperations),
    _route("POST", "/collections/{c}/points/delete", _delete_points, _WriteParams, models.PointsSelector),
    _route("POST", "/collections/{c}/points/payload", _set_payload, _WriteParams, models.SetPayload),
    _route("POST", "/collections/{c}/points", _retrieve, _ReadParams, models.PointRequest),
    _route("POST", "/collections/{c}/points/scroll", _scroll, _ReadParams, models.ScrollRequest),
    _route("POST", "/collections/{c}/points/count", _count, _ReadParams, models.CountRequest),
    _route("POST", "/collections/{c}/points/query", _query, _ReadParams, models.QueryRequest),
    _route("POST", "/collections/{c}/points/query/batch", _query_batch, _ReadParams, models.QueryRequestBatch),
)


def _match(method: str, segments: list[str]) -> tuple[_Route, str] | None:
    """The route and collection name for a path; a path that matches only with another method is no match
    (actix-web's route macros guard each resource by method, so Qdrant answers 404, not 405)."""
    for route in ROUTES:
        if route.method != method or len(route.path) != len(segments):
            continue
        name = ""
        for pattern, segment in zip(route.path, segments, strict=True):
            if pattern == "{c}":
                name = segment
            elif pattern != segment:
                break
        else:
            return route, name
    return None


# -- errors ---------------------------------------------------------------------------------------------------

_NOT_FOUND = re.compile(r"Collection (.+) not found")
_EXISTS = re.compile(r"(Collection|Alias) (.+) already exists")
_NO_ALIAS = re.compile(r"Alias (.+) does not exist")


def _from_value_error(error: ValueError) -> _HttpError:
    """The in-memory mode's ValueErrors as the statuses and messages a server gives for the same cases."""
    message = str(error)
    if found := _NOT_FOUND.fullmatch(message):
        return _HttpError(404, f"Not found: Collection `{found[1]}` doesn't exist!")
    if found := _EXISTS.fullmatch(message):
        return _HttpError(409, f"Wrong input: {found[1]} `{found[2]}` already exists!")
    if found := _NO_ALIAS.fullmatch(message):
        return _HttpError(404, f"Not found: Alias `{found[1]}` doesn't exist!")
    return _HttpError(400, message if message.startswith("Wrong input: ") else f"Wrong input: {message}")


def _validation_message(prefix: str, error: ValidationError) -> str:
    details = error.errors(include_url=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in details[:10]]
    more = f"; ... ({len(details) - 10} more)" if len(details) > 10 else ""
    return f"{prefix}: " + "; ".join(parts) + more


def _envelope(status: int, payload: dict[str, Any]) -> Response:
    return status, dict(JSON), json.dumps(payload, separators=(",", ":")).encode()


def _error(status: int, message: str, elapsed: float = 0.0) -> Response:
    return _envelope(status, {"status": {"error": message}, "time": elapsed})


def _is_json(content_type: str | None) -> bool:
    """actix-web's Json extractor: the media type's subtype is json, or its suffix is (+json)."""
    mime = (content_type or "").split(";")[0].strip().lower()
    subtype = mime.partition("/")[2]
    return subtype == "json" or subtype.endswith("+json")


class QdrantStandin:
    """Several independent in-memory Qdrants behind one REST handler (see the module docstring)."""

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.requests: list[LoggedRequest] = []
        self._instances: dict[str, _Instance] = {}
        self._faults: list[Fault] = []
        self._lock = threading.Lock()  # one request at a time, all instances
        self._meta = threading.Lock()  # faults and the request log (never held while a request runs)

    # -- fault injection --------------------------------------------------------------------------------------

    def fail_next(self, status: int = 503, headers: Mapping[str, str] | None = None, body: bytes | str | None = None,
                  times: int = 1, instance: str | None = None) -> None:
        """The next ``times`` requests (for ``instance``, or any) answer ``status`` with these headers and body;
        no body: Qdrant's error envelope. A Content-Type header, if given, replaces application/json."""
        if body is None:
            body = json.dumps({"status": {"error": f"Injected failure ({status})"}, "time": 0.0}).encode()
        data = body.encode() if isinstance(body, str) else body
        self._schedule(Fault(status=status, headers=dict(headers or {}), body=data, instance=instance, times=times))

    def drop_next(self, times: int = 1, instance: str | None = None) -> None:
        """The next ``times`` requests get no answer: the connection closes (``send`` raises ``Dropped``)."""
        self._schedule(Fault(drop=True, instance=instance, times=times))

    def delay_next(self, seconds: float, times: int = 1, instance: str | None = None) -> None:
        """The next ``times`` requests are answered normally after ``seconds`` (the lock is not held meanwhile)."""
        self._schedule(Fault(delay_s=seconds, instance=instance, times=times))

    def clear_faults(self) -> None:
        with self._meta:
            self._faults.clear()

    def _schedule(self, fault: Fault) -> None:
        if fault.times < 1:
            raise ValueError("times must be at least 1")
        with self._meta:
            self._faults.append(fault)

    def _take_fault(self, instance: str) -> Fault | None:
        with self._meta:
            for fault in self._faults:
                if fault.instance in (None, instance):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- instances --------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def client(self, instance: str = DEFAULT_INSTANCE) -> Iterator[QdrantClient]:
        """The in-memory client behind an instance, under the request lock: to look at what requests did."""
        with self._lock:
            yield self._instance(instance).client

    def drop_instance(self, instance: str) -> None:
        """Forget an instance (its memory); the next request for it starts an empty one."""
        with self._lock:
            gone = self._instances.pop(instance, None)
            if gone is not None:
                gone.client.close()

    def close(self) -> None:
        with self._lock:
            for state in self._instances.values():
                state.client.close()
            self._instances.clear()

    def _instance(self, name: str) -> _Instance:
        state = self._instances.get(name)
        if state is None:
            state = self._instances[name] = _Instance(QdrantClient(location=":memory:"))
        return state

    # -- the handler ------------------------------------------------------------------------------------------

    def send(self, method: str, target: str, body: bytes | None, headers: Mapping[str, str]) -> Response:
        """Answer one request: ``target`` is the path with an optional "?query"; returns (status, headers, body).
        Raises ``Dropped`` when a dropped connection was scheduled (``drop_next``)."""
        started = time.perf_counter()
        path, _, query = target.partition("?")
        segments = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
        instance = DEFAULT_INSTANCE
        if len(segments) >= 2 and segments[0] == "i":
            instance, segments = segments[1], segments[2:]
        method = method.upper()
        with self._meta:
            logged = "/" + "/".join(segments) + (f"?{query}" if query else "")
            self.requests.append(LoggedRequest(instance, method, logged, body))

        fault = self._take_fault(instance)
        if fault is not None:
            if fault.delay_s:
                time.sleep(fault.delay_s)
            if fault.drop:
                raise Dropped("Connection aborted.",
                              http.client.RemoteDisconnected("Remote end closed connection without response"))
            if fault.status is not None:
                given = {k.lower() for k in fault.headers}
                fault_headers = {**({} if "content-type" in given else JSON), **fault.headers}
                return fault.status, fault_headers, fault.body

        lowered = {k.lower(): v for k, v in headers.items()}
        denied = self._check_key(lowered)
        if denied is not None:
            return 401, dict(TEXT), denied.encode()

        matched = _match(method, segments)
        if matched is None:
            return 404, {}, b""
        route, name = matched
        try:
            params = self._parse_params(route, query)
            parsed = self._parse_body(route, body, lowered.get("content-type"))
        except _HttpError as error:
            return _error(error.status, error.message)

        with self._lock:
            call = _Call(self._instance(instance), name, parsed, params)
            try:
                result = route.handler(call)
            except _HttpError as error:
                return _error(error.status, error.message, time.perf_counter() - started)
            except ValueError as error:
                mapped = _from_value_error(error)
                return _error(mapped.status, mapped.message, time.perf_counter() - started)
            except Exception as error:  # noqa: BLE001 - a stand-in bug or a local-mode limit: a 500, as a server
                return _error(500, f"Service internal error: {type(error).__name__}: {error}",
                              time.perf_counter() - started)
            encoded = to_jsonable_python(result, by_alias=True, exclude_none=True)
        return _envelope(200, {"result": encoded, "status": "ok", "time": time.perf_counter() - started})

    def _check_key(self, headers: Mapping[str, str]) -> str | None:
        if self.api_key is None:
            return None
        authorization = headers.get("authorization", "")
        key = headers.get("api-key") or (authorization[7:] if authorization.startswith("Bearer ") else None)
        if key is None:
            return "Must provide an API key or an Authorization bearer token"
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            return "Invalid API key or JWT"
        return None

    @staticmethod
    def _parse_params(route: _Route, query: str) -> Any:
        values: dict[str, str] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key in values:
                raise _HttpError(400, f"Deserialize error in query parameters: duplicate field `{key}`")
            values[key] = value
        try:
            return route.params.model_validate(values)
        except ValidationError as error:
            raise _HttpError(400, _validation_message("Deserialize error in query parameters", error)) from None

    @staticmethod
    def _parse_body(route: _Route, body: bytes | None, content_type: str | None) -> Any:
        if route.body is None:
            return None
        if not _is_json(content_type):
            raise _HttpError(400, "Content type error")
        try:
            return route.body.validate_json(body or b"")
        except ValidationError as error:
            raise _HttpError(400, _validation_message("Format error in JSON body", error)) from None

    # -- WSGI -------------------------------------------------------------------------------------------------

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The handler as a WSGI app (for ``running``); the raw request target keeps %-escapes as sent."""
        target = environ.get("REQUEST_URI") or environ.get("RAW_URI")
        if not target:
            query = environ.get("QUERY_STRING", "")
            target = quote(environ.get("PATH_INFO", "")) + (f"?{query}" if query else "")
        if environ.get("CONTENT_LENGTH"):
            body: bytes | None = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        elif environ.get("wsgi.input_terminated"):
            body = environ["wsgi.input"].read()
        else:
            body = None
        headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items()
                   if key.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        try:
            status, answer_headers, data = self.send(environ["REQUEST_METHOD"], target, body, headers)
        except Dropped:
            connection = environ.get("werkzeug.socket")
            if connection is None:
                raise
            connection.shutdown(socket.SHUT_RDWR)
            # werkzeug treats a ConnectionError from the app as a dropped connection: no 500, no log
            raise ConnectionAbortedError("dropped by QdrantStandin.drop_next") from None
        answer_headers["Content-Length"] = str(len(data))
        start_response(f"{status} {http.client.responses.get(status, 'Unknown')}", list(answer_headers.items()))
        return [data]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per request on stderr otherwise


class StandinServer:
    """A stand-in served over HTTP on 127.0.0.1 (a free port, HTTP/1.1 keep-alive, a thread per connection).

    ``start()`` returns the base URL ``http://127.0.0.1:<port>``, ``stop()`` shuts the server down; as a
    context manager (``with running(standin) as base:``) it does both. A class, not a generator: a server
    left running (a session fixture never closed) must not be stopped by the garbage collector at
    interpreter exit, when its daemon thread no longer runs and ``shutdown()`` would wait forever.
    """

    POLL_S = 0.05  # serve_forever's shutdown check (socketserver's default 0.5 s would slow every stop)

    def __init__(self, standin: QdrantStandin) -> None:
        self.standin = standin
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        if self._server is None:
            self._server = make_server("127.0.0.1", 0, self.standin.wsgi, threaded=True,
                                       request_handler=_QuietHandler)
            self._thread = threading.Thread(target=self._server.serve_forever, args=(self.POLL_S,),
                                            name="qdrant-standin", daemon=True)
            self._thread.start()
            self.url = f"http://127.0.0.1:{self._server.port}"
        return self.url

    def stop(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None and thread is not None:
            server.shutdown()
            server.server_close()
            thread.join()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def running(standin: QdrantStandin) -> StandinServer:
    """``with running(standin) as base:`` serves the stand-in on 127.0.0.1 and yields its base URL."""
    return StandinServer(standin)


def standin_url(base: str, instance: str | None = None) -> str:
    """The URL of one instance under a running stand-in's base URL; no name: a fresh, unused instance."""
    return f"{base.rstrip('/')}/i/{quote(instance or uuid.uuid4().hex, safe='')}"
