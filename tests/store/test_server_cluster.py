"""Cluster settings at the REST request level: what a multi-node Qdrant receives.

A recording stand-in for the Qdrant REST API on 127.0.0.1 answers the few routes these calls use
and keeps every request (method, path, query, JSON body); ``ServerStore`` talks to it through the
same ``connect(url, ...)`` client the functions use.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from imgsim.errors import CollectionMismatch, ConfigError
from imgsim.settings import Settings
from imgsim.store import ClusterOptions, StoredPoint, cluster_options
from imgsim.store.server import ServerStore, connect
from imgsim.store.types import IdIn
from qdrant_client import QdrantClient, models

UPDATE = {"operation_id": 1, "status": "completed"}


def collection_info(params: dict) -> dict:
    """A real CollectionInfo document (from qdrant-client's local mode) with the given params."""
    local = QdrantClient(location=":memory:")
    local.create_collection("c", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    info = json.loads(local.get_collection("c").model_dump_json())
    info["config"]["params"].update(params)
    return info


class FakeQdrant:
    def __init__(self, existing: dict | None = None) -> None:
        self.requests: list[dict] = []
        self.existing = existing  # None: no collection yet
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                url = urlsplit(self.path)
                fake.requests.append({"method": self.command, "path": url.path, "query": parse_qs(url.query),
                                      "body": body})
                result = fake.answer(self.command, url.path)
                data = json.dumps({"result": result, "status": "ok", "time": 0.0}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = handle_any

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, method: str, path: str) -> object:
        if path.endswith("/exists"):
            return {"exists": self.existing is not None}
        if method == "GET" and path.count("/") == 2:
            return self.existing
        if path.endswith("/points/scroll"):
            return {"points": [], "next_page_offset": None}
        if method == "POST" and path.endswith("/points"):
            return []  # retrieve
        if method == "PUT" and path.count("/") == 2:
            return True  # create collection
        return UPDATE  # upserts, deletes, payload indexes

    def sent(self, method: str, suffix: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"].endswith(suffix)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeQdrant]:
    server = FakeQdrant()
    yield server
    server.close()


PRODUCTION = ClusterOptions(shard_number=6, replication_factor=2, write_consistency_factor=1, on_disk_payload=True)


def store_on(fake: FakeQdrant, cluster: ClusterOptions = PRODUCTION, name: str = "images") -> ServerStore:
    return ServerStore(connect(fake.url, None, 2.0), name, dim=4, retries=0, cluster=cluster)


def test_creation_carries_the_shard_replica_and_consistency_settings(fake):
    store = store_on(fake)
    store.ensure_collection()
    store.companion("_tombstones", dim=1).ensure_collection()
    creations = [r for r in fake.sent("PUT", "/images") + fake.sent("PUT", "/images_tombstones")]
    assert len(creations) == 2
    for request in creations:  # the companion is replicated like its collection
        body = request["body"]
        assert (body["shard_number"], body["replication_factor"], body["write_consistency_factor"],
                body["on_disk_payload"]) == (6, 2, 1, True)
    assert fake.sent("PUT", "/images")[0]["body"]["vectors"] == {"size": 4, "distance": "Cosine", "on_disk": True}


def test_unset_settings_leave_the_servers_defaults(fake):
    store_on(fake, ClusterOptions()).ensure_collection()
    body = fake.sent("PUT", "/images")[0]["body"]
    assert not {"shard_number", "replication_factor", "write_consistency_factor", "on_disk_payload"} & {
        k for k, v in body.items() if v is not None}


def test_writes_carry_the_ordering_and_read_backs_the_consistency(fake):
    store = store_on(fake, ClusterOptions(write_ordering="medium", read_consistency="majority"))
    store._ready = True
    point = StoredPoint("00000000-0000-0000-0000-000000000001", [1.0, 0.0, 0.0, 0.0], {"key": "k"})
    store.upsert([point])
    store.delete([point.id])
    store.retrieve([point.id])
    store.scroll(limit=5)
    store._delete(IdIn((point.id,)))
    (upsert,) = fake.sent("PUT", "/images/points")
    assert upsert["query"]["ordering"] == ["medium"] and upsert["query"]["wait"] == ["true"]
    for delete in fake.sent("POST", "/images/points/delete"):
        assert delete["query"]["ordering"] == ["medium"]
    (retrieve,) = fake.sent("POST", "/images/points")
    (scroll,) = fake.sent("POST", "/images/points/scroll")
    assert retrieve["query"]["consistency"] == ["majority"] and scroll["query"]["consistency"] == ["majority"]
    strong = store_on(fake, ClusterOptions(write_ordering="strong", read_consistency="all"))
    strong._ready = True
    strong.upsert([point])
    strong.retrieve([point.id])
    assert fake.sent("PUT", "/images/points")[-1]["query"]["ordering"] == ["strong"]
    assert fake.sent("POST", "/images/points")[-1]["query"]["consistency"] == ["all"]


def test_an_existing_collection_is_checked_against_the_settings(caplog):
    single = FakeQdrant(existing=collection_info({"shard_number": 1, "replication_factor": 1,
                                                  "write_consistency_factor": 1}))
    try:
        # Differences that only change capacity or availability: warnings naming the way to change them.
        with caplog.at_level(logging.WARNING, logger="imgsim.store.server"):
            store_on(single, ClusterOptions(shard_number=6, replication_factor=2)).ensure_collection()
        warnings = "\n".join(r.getMessage() for r in caplog.records)
        assert "shard_number=1 but the configuration asks for 6" in warnings
        assert "replication_factor=1 but the configuration asks for 2" in warnings and "update_collection" in warnings
        # A write consistency its replicas cannot meet: no write would ever be acknowledged.
        with pytest.raises(CollectionMismatch, match="no write could be acknowledged"):
            store_on(single, ClusterOptions(replication_factor=2, write_consistency_factor=2),
                     name="images").ensure_collection()
    finally:
        single.close()


def test_settings_come_from_the_environment_and_are_checked(monkeypatch):
    for name, value in {"QDRANT_SHARDS": "12", "QDRANT_REPLICATION_FACTOR": "2", "QDRANT_WRITE_CONSISTENCY_FACTOR": "1",
                        "QDRANT_ON_DISK_PAYLOAD": "true", "QDRANT_WRITE_ORDERING": "strong",
                        "QDRANT_READ_CONSISTENCY": "quorum"}.items():
        monkeypatch.setenv(name, value)
    assert cluster_options(Settings.from_env()) == ClusterOptions(12, 2, 1, True, "strong", "quorum")
    monkeypatch.setenv("QDRANT_WRITE_CONSISTENCY_FACTOR", "3")
    with pytest.raises(ConfigError, match="no write could ever be acknowledged"):
        cluster_options(Settings.from_env())
    monkeypatch.setenv("QDRANT_WRITE_ORDERING", "eventually")
    with pytest.raises(ConfigError, match="QDRANT_WRITE_ORDERING"):
        Settings.from_env()
    for name in ("QDRANT_SHARDS", "QDRANT_REPLICATION_FACTOR", "QDRANT_WRITE_CONSISTENCY_FACTOR",
                 "QDRANT_ON_DISK_PAYLOAD", "QDRANT_WRITE_ORDERING", "QDRANT_READ_CONSISTENCY"):
        monkeypatch.delenv(name)
    assert cluster_options(Settings.from_env()) == ClusterOptions(None, None, None, None, "medium", "majority")
