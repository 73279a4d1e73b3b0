"""``imgsim migrate``: the embedded store to a Qdrant server and back; idempotent and resumable.

The server side is the Qdrant REST stand-in behind ``imgsim.store.server.connect`` (in process; the stand-in
for a server's API, as in the store contract suite)."""

from __future__ import annotations

from unittest import mock

import imgsim.store.server
import numpy as np
import pytest
from imgsim import StoredPoint, point_id_for_file
from imgsim.deployment import open_model_store
from imgsim.errors import StoreUnavailable
from imgsim.ordering import OrderedStore, Removal
from imgsim.settings import Settings
from imgsim.store import key_dirs
from imgsim.store.edge import EdgeStore
from imgsim.store.scoped import scoped
from imgsim.store.server import ServerCatalog, ServerStore
from imgsim_tools import cli
from roots import make_root

DIM = 1024  # the default model's: the CLI opens both stores with the embedder's dimension
URL = "http://qdrant.example:6333"


@pytest.fixture
def server(monkeypatch):
    """One in-memory 'server' for the test; the stores' close() leaves it up, as a real server stays up."""
    from store_backends import in_process_server

    client = in_process_server()  # its close() only drops sockets: the "server" stays up
    connected: list[tuple] = []

    def connect(url, api_key, timeout):
        connected.append((url, api_key))
        return client

    monkeypatch.setattr(imgsim.store.server, "connect", connect)
    client.connected = connected
    return client


@pytest.fixture
def local(tmp_path, monkeypatch):
    path = tmp_path / "qdrant"
    monkeypatch.setenv("QDRANT_PATH", str(path))
    monkeypatch.delenv("QDRANT_URL", raising=False)
    rng = np.random.default_rng(7)
    store = EdgeStore(str(path), "images", dim=DIM)
    keys = [f"/photos/{i}.jpg" for i in range(600)]
    store.upsert([StoredPoint(point_id_for_file(k), list(rng.normal(size=DIM)),
                              {"key": k, "dirs": key_dirs(k), **({"tenant": "acme"} if i % 3 == 0 else {})})
                  for i, k in enumerate(keys)])
    ordered = OrderedStore(store)
    gone = point_id_for_file("/photos/gone.jpg")
    ordered.remove([Removal(gone, "0F", "b", "/photos/gone.jpg")], ordered.read_state([gone]))
    store.close()
    return path


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def remote(server) -> ServerStore:
    """The server's "images", through its alias: migrate creates the model's collection behind it."""
    physical = ServerCatalog(server).alias_target("images")
    assert physical is not None and physical.startswith("images__")
    return ServerStore(server, physical, dim=DIM, owns_client=False)


def test_migrate_to_a_server_copies_points_and_tombstones_and_is_idempotent(capsys, server, local, monkeypatch):
    monkeypatch.setenv("MY_QDRANT_KEY", "secret-key")
    code, out, err = run(capsys, "migrate", "--to", URL, "--api-key-env", "MY_QDRANT_KEY")
    assert code == 0, err
    assert out.strip() == f"migrated to {URL}: copied 600 points and 1 tombstones; source has 600, target has 600"
    assert server.connected[0] == (URL, "secret-key")
    target = remote(server)
    assert target.count() == 600
    assert target.companion("_tombstones", dim=1).get(point_id_for_file("/photos/gone.jpg")).payload["sequencer"] == "0F"
    record = target.find_by_key("/photos/5.jpg", with_vector=True)
    assert record is not None and len(record.vector) == DIM
    # Tenants are carried (the payload is copied) and the target has the tenant index.
    assert scoped(target, "acme").count() == 200 and scoped(target, None).count() == 400
    assert target.payload_indexes()["tenant"].is_tenant
    # Again: the same ids are rewritten, nothing is duplicated.
    code, out, _ = run(capsys, "migrate", "--to", URL)
    assert code == 0 and target.count() == 600


def test_an_interrupted_migration_resumes_where_it_stopped(capsys, server, local, monkeypatch):
    real = ServerStore._upsert
    calls = {"n": 0}

    def flaky(self, points, only_if):
        calls["n"] += 1
        if calls["n"] == 2:
            raise StoreUnavailable("Qdrant upsert failed after 4 attempt(s): HTTP 503")
        return real(self, points, only_if)

    with mock.patch.object(ServerStore, "_upsert", flaky):
        code, _, err = run(capsys, "migrate", "--to", URL)
    assert code == 1 and "HTTP 503" in err and err.count("\n") == 1
    assert remote(server).count() == 256  # the first page landed
    assert list((local / ".migrate").glob("migrate-*.json"))  # and was checkpointed
    code, out, _ = run(capsys, "migrate", "--to", URL)
    assert code == 0 and "resumed at" in out and "copied 344 points" in out
    assert remote(server).count() == 600
    assert not list((local / ".migrate").glob("migrate-*.json"))  # done: checkpoint gone


def test_migrate_from_a_server_into_an_empty_embedded_store(capsys, server, tmp_path, monkeypatch, local):
    assert run(capsys, "migrate", "--to", URL)[0] == 0
    fresh = tmp_path / "fresh"
    code, out, err = run(capsys, "--qdrant-path", str(fresh), "migrate", "--from", URL)
    assert code == 0, err
    assert out.startswith(f"migrated from {URL}: copied 600 points and 1 tombstones")
    root = make_root(tmp_path)  # on the embedded store migrated from (QDRANT_PATH)
    try:
        model = root.embedder().model_name
    finally:
        root.close()
    store = open_model_store(Settings(qdrant_path=str(fresh)), dim=DIM, model=model)  # through the alias
    assert store.collection.startswith("images__") and store.count() == 600
    store.close()


def test_migrate_needs_a_direction_and_an_existing_key_variable(capsys, server, local):
    assert run(capsys, "migrate")[0] == 2
    code, _, err = run(capsys, "migrate", "--to", URL, "--api-key-env", "NO_SUCH_VARIABLE_HERE")
    assert code == 2 and "NO_SUCH_VARIABLE_HERE" in err
