"""The Qdrant REST stand-in (tests/qdrant_standin.py) behaves as its docstring says, in process and over HTTP.

Every behaviour runs through both entries: ``QdrantStandin.send`` and a real socket (``running``) with
urllib3. qdrant-client's own REST layer (generated from Qdrant's OpenAPI document, what real servers are
driven with) doing imgsim's calls against it checks the stand-in accepts what a server accepts and answers
what a server's clients can read.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import urllib3
from qdrant_client import QdrantClient, models
from qdrant_standin import Dropped, LoggedRequest, QdrantStandin, running, standin_url

Answer = tuple[int, dict[str, str], bytes]
Call = Callable[..., Answer]
TRANSPORTS = ("send", "http")
UUID_A = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
UUID_B = "6ba7b811-9dad-11d1-80b4-00c04fd430c8"
COLLECTION = {"vectors": {"size": 3, "distance": "Cosine"}}


@contextmanager
def transport(kind: str, standin: QdrantStandin) -> Iterator[Call]:
    """``call(method, path, body=None, headers=None) -> (status, headers, raw body)``; a dict body is sent as
    JSON with its Content-Type, bytes as they are."""

    def encode(body: Any, headers: dict[str, str] | None) -> tuple[bytes | None, dict[str, str]]:
        if body is None or isinstance(body, bytes):
            return body, dict(headers or {})
        return json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}

    if kind == "send":
        def send(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
            data, sent = encode(body, headers)
            return standin.send(method, path, data, sent)

        yield send
        return
    with running(standin) as base:
        pool = urllib3.PoolManager(retries=False)

        def over_http(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
            data, sent = encode(body, headers)
            response = pool.request(method, base + path, body=data, headers=sent)
            return response.status, dict(response.headers), response.data

        yield over_http
        pool.clear()


@pytest.fixture
def standin() -> Iterator[QdrantStandin]:
    server = QdrantStandin()
    yield server
    server.close()


@pytest.fixture(params=TRANSPORTS)
def call(request: pytest.FixtureRequest, standin: QdrantStandin) -> Iterator[Call]:
    with transport(request.param, standin) as do:
        yield do


def ok(answer: Answer) -> Any:
    """The result of a 200 answer, after checking Qdrant's success envelope."""
    status, headers, raw = answer
    assert status == 200, raw
    assert headers["Content-Type"] == "application/json"
    doc = json.loads(raw)
    assert set(doc) == {"result", "status", "time"} and doc["status"] == "ok" and isinstance(doc["time"], float)
    return doc["result"]


def error(answer: Answer, status: int) -> str:
    """The message of an error answer, after checking Qdrant's error envelope."""
    got, _, raw = answer
    assert got == status, raw
    doc = json.loads(raw)
    assert set(doc) == {"status", "time"} and isinstance(doc["time"], float)
    assert set(doc["status"]) == {"error"}
    message: str = doc["status"]["error"]
    return message


def test_every_endpoint_imgsim_uses_answers_like_qdrant(call: Call) -> None:
    assert ok(call("PUT", "/collections/images", {**COLLECTION, "replication_factor": 2, "quantization_config": {
        "scalar": {"type": "int8", "always_ram": True}}})) is True
    assert ok(call("GET", "/collections")) == {"collections": [{"name": "images"}]}
    assert ok(call("GET", "/collections/images/exists")) == {"exists": True}
    assert ok(call("GET", "/collections/other/exists")) == {"exists": False}
    assert ok(call("PUT", "/collections/images/index?wait=true",
                   {"field_name": "bucket", "field_schema": "keyword"}))["status"] == "completed"

    points = [{"id": UUID_A, "vector": [1, 0, 0], "payload": {"bucket": "b", "n": 1}},
              {"id": UUID_B, "vector": [0, 1, 0], "payload": {"bucket": "c", "n": 2}}]
    assert ok(call("PUT", "/collections/images/points?wait=true&ordering=strong", {"points": points})) == {
        "operation_id": 2, "status": "completed"}
    # update_filter: an existing point that does not match it keeps its state
    ok(call("PUT", "/collections/images/points?wait=true", {
        "points": [{"id": UUID_A, "vector": [1, 0, 0], "payload": {"bucket": "b", "n": 99}}],
        "update_filter": {"must": [{"key": "n", "match": {"value": 5}}]}}))

    info = ok(call("GET", "/collections/images"))
    assert info["points_count"] == 2
    params = info["config"]["params"]
    assert params["vectors"] == {"size": 3, "distance": "Cosine"}
    assert (params["shard_number"], params["replication_factor"], params["write_consistency_factor"],
            params["on_disk_payload"]) == (1, 2, 1, True)
    assert info["config"]["quantization_config"] == {"scalar": {"type": "int8", "always_ram": True}}
    assert info["payload_schema"] == {"bucket": {"data_type": "keyword", "points": 2}}

    # Qdrant's defaults: retrieve and scroll return payloads, query does not
    assert ok(call("POST", "/collections/images/points?consistency=majority", {"ids": [UUID_A]})) == [
        {"id": UUID_A, "payload": {"bucket": "b", "n": 1}}]
    page = ok(call("POST", "/collections/images/points/scroll?consistency=2", {"limit": 1, "with_vector": True}))
    assert page["next_page_offset"] == UUID_B and page["points"][0]["vector"] == pytest.approx([1, 0, 0])
    assert ok(call("POST", "/collections/images/points/count",
                   {"filter": {"must": [{"key": "bucket", "match": {"value": "c"}}]}, "exact": True})) == {"count": 1}
    found = ok(call("POST", "/collections/images/points/query", {"query": [0, 1, 0], "limit": 1}))
    assert found == {"points": [{"id": UUID_B, "version": 0, "score": pytest.approx(1.0)}]}
    batch = ok(call("POST", "/collections/images/points/query/batch", {"searches": [
        {"query": [1, 0, 0], "limit": 1, "with_payload": ["n"]},
        {"query": [0, 1, 0], "filter": {"must": [{"key": "bucket", "match": {"value": "b"}}]}, "score_threshold": -1}]}))
    assert [[(p["id"], p.get("payload")) for p in r["points"]] for r in batch] == [
        [(UUID_A, {"n": 1})], [(UUID_A, None)]]

    assert ok(call("POST", "/collections/images/points/payload?wait=true", {
        "payload": {"trashed": True}, "filter": {"must": [{"has_id": [UUID_B]}]}}))["status"] == "completed"
    assert ok(call("POST", "/collections/images/points", {"ids": [UUID_B]}))[0]["payload"]["trashed"] is True
    assert ok(call("POST", "/collections/images/points/delete?wait=false", {"points": [UUID_B]}))["status"] == (
        "acknowledged")
    assert ok(call("POST", "/collections/images/points/count", {})) == {"count": 1}

    assert ok(call("POST", "/collections/aliases", {"actions": [
        {"create_alias": {"collection_name": "images", "alias_name": "live"}}]})) is True
    assert ok(call("GET", "/aliases")) == {"aliases": [{"alias_name": "live", "collection_name": "images"}]}
    assert ok(call("GET", "/collections/live"))["payload_schema"]["bucket"]["data_type"] == "keyword"
    assert ok(call("DELETE", "/collections/images")) is True
    assert ok(call("DELETE", "/collections/images")) is False
    assert ok(call("GET", "/aliases")) == {"aliases": []}


@pytest.mark.parametrize(("path", "body", "expected"), [
    ("/collections/c/points/query", {"vector": [1, 0, 0]}, "vector: Extra inputs are not permitted"),
    ("/collections/c/points/query", {"query": [1, 0, 0], "limit": "many"}, "limit: Input should be a valid integer"),
    ("/collections/c/points/count", {"filter": {"must": [{"key": "k", "macth": {"value": 1}}]}}, "macth"),
    ("/collections/c/points/scroll", b"{not json", "Invalid JSON"),
    ("/collections/c/points/scroll", b"", "Invalid JSON"),
])
def test_a_body_that_does_not_parse_is_a_400_with_the_reason(call: Call, path: str, body: Any, expected: str) -> None:
    ok(call("PUT", "/collections/c", COLLECTION))
    headers = {"Content-Type": "application/json"} if isinstance(body, bytes) else None
    message = error(call("POST", path, body, headers), 400)
    assert message.startswith("Format error in JSON body: ") and expected in message


def test_set_payload_needs_points_or_a_filter(call: Call) -> None:
    ok(call("PUT", "/collections/c", COLLECTION))
    assert error(call("POST", "/collections/c/points/payload", {"payload": {"a": 1}}), 400) == (
        "Format error in JSON body: Either list of point ids or filter must be provided")


def test_a_body_must_be_declared_json(call: Call) -> None:
    ok(call("PUT", "/collections/c", COLLECTION))
    assert error(call("POST", "/collections/c/points/count", b"{}"), 400) == "Content type error"
    assert error(call("POST", "/collections/c/points/count", b"{}", {"Content-Type": "text/plain"}), 400) == (
        "Content type error")
    assert ok(call("POST", "/collections/c/points/count", b"{}",
                   {"Content-Type": "application/json; charset=utf-8"})) == {"count": 0}


@pytest.mark.parametrize(("query", "expected"), [
    ("wait=yes", "wait: Input should be 'true' or 'false'"),
    ("ordering=fast", "ordering: Input should be 'weak', 'medium' or 'strong'"),
    ("timeout=0", "timeout: Input should be greater than or equal to 1"),
    ("wiat=true", "wiat: Extra inputs are not permitted"),
    ("wait=true&wait=false", "duplicate field `wait`"),
])
def test_query_parameters_are_checked(call: Call, query: str, expected: str) -> None:
    ok(call("PUT", "/collections/c", COLLECTION))
    message = error(call("PUT", f"/collections/c/points?{query}", {"points": []}), 400)
    assert message.startswith("Deserialize error in query parameters: ") and expected in message


def test_read_consistency_takes_a_factor_or_a_level(call: Call) -> None:
    ok(call("PUT", "/collections/c", COLLECTION))
    for value in ("2", "majority", "quorum", "all"):
        assert ok(call("POST", f"/collections/c/points/count?consistency={value}", {})) == {"count": 0}
    assert "consistency" in error(call("POST", "/collections/c/points/count?consistency=most", {}), 400)
    assert "Extra inputs" in error(call("GET", "/collections/c?wait=true"), 400)


def test_an_unknown_collection_is_a_404_and_a_second_create_a_409(call: Call) -> None:
    assert error(call("GET", "/collections/nope"), 404) == "Not found: Collection `nope` doesn't exist!"
    assert error(call("POST", "/collections/nope/points/query", {"query": [1, 0, 0]}), 404) == (
        "Not found: Collection `nope` doesn't exist!")
    assert error(call("PUT", "/collections/nope/points?wait=true", {"points": []}), 404) == (
        "Not found: Collection `nope` doesn't exist!")
    assert error(call("POST", "/collections/aliases", {"actions": [
        {"create_alias": {"collection_name": "nope", "alias_name": "a"}}]}), 404) == (
        "Not found: Collection `nope` doesn't exist!")
    ok(call("PUT", "/collections/c", COLLECTION))
    assert error(call("PUT", "/collections/c", COLLECTION), 409) == "Wrong input: Collection `c` already exists!"


def test_the_in_memory_modes_refusals_are_400s(call: Call) -> None:
    ok(call("PUT", "/collections/c", COLLECTION))
    message = error(call("PUT", "/collections/c/points", {"points": [{"id": 1, "vector": [1, 0]}]}), 400)
    assert message == "Wrong input: Vector dimension error: expected dim: 3, got 2 for vector ''"
    assert error(call("PUT", "/collections/c/points", {"points": [{"id": "x", "vector": [1, 0, 0]}]}), 400) == (
        "Wrong input: Point id x is not a valid UUID")


def test_an_unknown_route_or_a_wrong_method_is_an_empty_404(call: Call) -> None:
    ok(call("PUT", "/collections/c", COLLECTION))
    for method, path in [("GET", "/nowhere"), ("POST", "/collections/c/points/search/matrix"),
                         ("POST", "/collections"), ("GET", "/collections/c/points/scroll"), ("PATCH", "/collections/c")]:
        status, _, raw = call(method, path, {})
        assert (status, raw) == (404, b""), (method, path)


def test_collection_names_are_percent_decoded(call: Call) -> None:
    ok(call("PUT", "/collections/my%20photos", COLLECTION))
    assert ok(call("GET", "/collections")) == {"collections": [{"name": "my photos"}]}
    assert ok(call("GET", "/collections/my%20photos/exists")) == {"exists": True}


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_the_api_key_is_required_when_set(kind: str) -> None:
    with transport(kind, QdrantStandin(api_key="s3cret")) as call:
        status, headers, raw = call("GET", "/collections")
        assert (status, raw) == (401, b"Must provide an API key or an Authorization bearer token")
        assert headers["Content-Type"].startswith("text/plain")
        status, _, raw = call("GET", "/collections", headers={"api-key": "wrong"})
        assert (status, raw) == (401, b"Invalid API key or JWT")
        assert ok(call("GET", "/collections", headers={"api-key": "s3cret"})) == {"collections": []}
        assert ok(call("GET", "/collections", headers={"Authorization": "Bearer s3cret"})) == {"collections": []}
        # checked before routing, as Qdrant's middleware does
        assert call("GET", "/nowhere")[0] == 401


def test_instances_are_independent_over_http(standin: QdrantStandin) -> None:
    pool = urllib3.PoolManager(retries=False)
    with running(standin) as base:
        first, second = standin_url(base, "first"), standin_url(base)
        assert first == f"{base}/i/first" and second.startswith(f"{base}/i/") and second != first
        for url in (first, second):
            assert pool.request("PUT", f"{url}/collections/c", json=COLLECTION).status == 200
        pool.request("PUT", f"{first}/collections/c/points?wait=true",
                     json={"points": [{"id": 1, "vector": [1, 0, 0]}]})
        counts = [json.loads(pool.request("POST", f"{url}/collections/c/points/count", json={}).data)["result"]
                  for url in (first, second)]
        assert counts == [{"count": 1}, {"count": 0}]
        assert json.loads(pool.request("GET", f"{base}/collections").data)["result"] == {"collections": []}
    with standin.client("first") as client:
        assert client.count("c").count == 1
    assert [(r.instance, r.method, r.target) for r in standin.requests][:2] == [
        ("first", "PUT", "/collections/c"), (second.rsplit("/", 1)[1], "PUT", "/collections/c")]
    standin.drop_instance("first")
    with standin.client("first") as client:
        assert client.get_collections().collections == []


def test_injected_failures_answer_first_then_the_stand_in_does(call: Call, standin: QdrantStandin) -> None:
    standin.fail_next(status=503, headers={"Retry-After": "1"}, times=2)
    for _ in range(2):
        status, headers, raw = call("GET", "/collections")
        assert (status, headers["Retry-After"]) == (503, "1")
        assert json.loads(raw) == {"status": {"error": "Injected failure (503)"}, "time": 0.0}
    assert ok(call("GET", "/collections")) == {"collections": []}

    standin.fail_next(status=502, headers={"Content-Type": "text/html"}, body="<h1>Bad Gateway</h1>")
    status, headers, raw = call("GET", "/collections")
    assert (status, headers["Content-Type"], raw) == (502, "text/html", b"<h1>Bad Gateway</h1>")

    standin.fail_next(status=429, instance="other")
    assert call("GET", "/collections")[0] == 200
    assert call("GET", "/i/other/collections")[0] == 429
    assert [r.target for r in standin.requests[-2:]] == ["/collections", "/collections"]
    standin.fail_next(status=500, times=3)
    standin.clear_faults()
    assert call("GET", "/collections")[0] == 200


def test_a_dropped_connection_is_a_protocol_error_in_process(standin: QdrantStandin) -> None:
    standin.drop_next()
    with pytest.raises(Dropped) as raised:
        standin.send("GET", "/collections", None, {})
    assert isinstance(raised.value, urllib3.exceptions.ProtocolError)
    assert standin.send("GET", "/collections", None, {})[0] == 200


def test_a_dropped_connection_over_http_is_closed_without_an_answer(standin: QdrantStandin) -> None:
    pool = urllib3.PoolManager(retries=False)
    with running(standin) as base:
        assert pool.request("GET", f"{base}/collections").status == 200  # a kept-alive connection to drop
        standin.drop_next()
        with pytest.raises(urllib3.exceptions.ProtocolError, match="Remote end closed connection without response"):
            pool.request("GET", f"{base}/collections")
        assert pool.request("GET", f"{base}/collections").status == 200


def test_a_delayed_answer_runs_into_the_clients_read_timeout(standin: QdrantStandin) -> None:
    pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=0.1))
    with running(standin) as base:
        standin.delay_next(30.0)
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):
            pool.request("GET", f"{base}/collections")
        # answered while the delayed request still waits: the delay does not hold the request lock
        assert pool.request("GET", f"{base}/collections", timeout=10.0).status == 200


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_concurrent_writes_from_threads_all_land(kind: str, standin: QdrantStandin) -> None:
    threads, each = 8, 20
    with transport(kind, standin) as call:
        ok(call("PUT", "/collections/c", COLLECTION))
        failures: list[BaseException] = []
        start = threading.Barrier(threads)

        def write(worker: int) -> None:
            start.wait()
            try:
                for n in range(each):
                    body = {"points": [{"id": worker * each + n, "vector": [1, worker, n], "payload": {"w": worker}}]}
                    ok(call("PUT", "/collections/c/points?wait=true", body))
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        workers = [threading.Thread(target=write, args=(w,)) for w in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert failures == []
        assert ok(call("POST", "/collections/c/points/count", {})) == {"count": threads * each}


def test_qdrant_clients_rest_layer_drives_it_as_imgsim_does(standin: QdrantStandin) -> None:
    """qdrant-client's REST transport (what real servers are driven with) making imgsim's calls."""
    with running(standin) as base:
        client = QdrantClient(url=standin_url(base), check_compatibility=False, timeout=5)
        client.create_collection("images", vectors_config=models.VectorParams(size=3, distance=models.Distance.COSINE),
                                 quantization_config=models.BinaryQuantization(
                                     binary=models.BinaryQuantizationConfig(always_ram=True)),
                                 shard_number=2, write_consistency_factor=1, on_disk_payload=False)
        client.create_payload_index("images", "key", field_schema=models.PayloadSchemaType.KEYWORD)
        info = client.get_collection("images")
        assert isinstance(info.config.params.vectors, models.VectorParams) and info.config.params.vectors.size == 3
        assert (info.config.params.shard_number, info.config.params.on_disk_payload) == (2, False)
        assert isinstance(info.config.quantization_config, models.BinaryQuantization)
        assert info.payload_schema["key"].data_type == models.PayloadSchemaType.KEYWORD

        client.upsert("images", points=[models.PointStruct(id=UUID_A, vector=[1.0, 0.0, 0.0], payload={"key": "a"}),
                                        models.PointStruct(id=UUID_B, vector=[0.0, 1.0, 0.0], payload={"key": "b"})],
                      wait=True, ordering=models.WriteOrdering.MEDIUM,
                      update_filter=models.Filter(must=[models.FieldCondition(
                          key="key", match=models.MatchValue(value="a"))]))
        consistency = models.ReadConsistencyType.MAJORITY
        assert [p.payload for p in client.retrieve("images", ids=[UUID_A], consistency=consistency)] == [{"key": "a"}]
        points, offset = client.scroll("images", limit=1, with_payload=["key"], consistency=consistency)
        assert (len(points), offset) == (1, UUID_B)
        assert client.count("images", exact=True).count == 2
        hits = client.query_points("images", query=[0.0, 1.0, 0.0], limit=1, with_payload=True,
                                   search_params=models.SearchParams(hnsw_ef=64)).points
        assert [(h.id, h.payload) for h in hits] == [(UUID_B, {"key": "b"})]
        batch = client.query_batch_points("images", requests=[
            models.QueryRequest(query=[1.0, 0.0, 0.0], limit=2, with_payload=True),
            models.QueryRequest(query=[1.0, 0.0, 0.0], limit=1, filter=models.Filter(must=[models.FieldCondition(
                key="key", match=models.MatchAny(any=["b"]))]))])
        assert [[h.id for h in r.points] for r in batch] == [[UUID_A, UUID_B], [UUID_B]]
        client.set_payload("images", payload={"trashed": True}, points=models.FilterSelector(
            filter=models.Filter(must=[models.HasIdCondition(has_id=[UUID_A])])), wait=True)
        assert client.retrieve("images", ids=[UUID_A])[0].payload == {"key": "a", "trashed": True}
        client.delete("images", points_selector=models.PointIdsList(points=[UUID_A]), wait=True)
        assert client.count("images").count == 1

        client.update_collection_aliases(change_aliases_operations=[models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name="images", alias_name="live"))])
        assert [(a.alias_name, a.collection_name) for a in client.get_aliases().aliases] == [("live", "images")]
        assert client.collection_exists("live")
        assert [c.name for c in client.get_collections().collections] == ["images"]
        assert client.delete_collection("images")
        client.close()
    sent: list[LoggedRequest] = standin.requests
    upsert = next(r for r in sent if r.method == "PUT" and r.target.startswith("/collections/images/points"))
    assert upsert.target == "/collections/images/points?wait=true&ordering=medium"
    assert upsert.json()["update_filter"] == {"must": [{"key": "key", "match": {"value": "a"}}]}
