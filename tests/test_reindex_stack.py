"""A model switch on the local stack (`imgsim serve`), end to end: searches and uploads keep working while
`imgsim reindex --model model_b --stack URL` rebuilds the index, and the upload made meanwhile lands in both
models' collections. Two manifest entries share the model file (tests/test_reindex.py builds the folder)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
from imgsim.ids import point_id_for_object
from serve_support import API_KEY, BUCKET, IMGSIM, Serve
from test_reindex import two_model_dir

pytestmark = pytest.mark.slow


def put_photo(serve: Serve, path: Path, key: str) -> str:
    serve.s3().put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes(), ContentType="image/jpeg")
    return point_id_for_object(BUCKET, key)


def keys_by_collection(data_dir: Path) -> dict[str, set[str]]:
    """key sets of both model collections, read from the stopped stack's embedded store."""
    from imgsim.settings import Settings
    from imgsim.store import open_catalog

    catalog = open_catalog(Settings(qdrant_path=str(data_dir / "qdrant")))
    try:
        found = {}
        for collection in ("images__model_a", "images__model_b"):
            records, _ = catalog.open_store(collection, dim=1024).scroll(limit=1000, fields=["key", "model"])
            found[collection] = {r.payload["key"] for r in records}
            assert {r.payload["model"] for r in records} == {collection.split("__")[1]}
        return found
    finally:
        catalog.close()


def test_switching_models_on_the_local_stack(tmp_path, photos):
    models = two_model_dir(tmp_path / "models")
    data = tmp_path / "data"
    env = {"IMGSIM_MODEL_DIR": str(models), "IMGSIM_MODEL": "model_a", "IMGSIM_ALIAS_TTL": "0"}
    serve = Serve(data, env=env).wait_ready()
    try:
        keys = [f"photos/{i}.jpg" for i in range(10)]
        for i, key in enumerate(keys):
            put_photo(serve, photos[i * 150], key)
        for key in keys:
            serve.wait_indexed(point_id_for_object(BUCKET, key))
        status, health = serve.request("GET", "/health", key=None)
        assert health["serving"] == "images__model_a" and "building" not in health
    finally:
        assert serve.stop() == 0

    # Deployed again with Model=model_b: model_a's collection still answers; model_b's is being built.
    serve = Serve(data, port=serve.port, s3_port=serve.s3_port, env={**env, "IMGSIM_MODEL": "model_b"}).wait_ready()
    try:
        status, health = serve.request("GET", "/health", key=None)
        assert health["serving"] == "images__model_a" and health["model"] == "model_a"
        assert health["building"] == {"collection": "images__model_b", "model": "model_b"}

        searches: list[int] = []
        stop = threading.Event()

        def search_meanwhile() -> None:
            query = photos[0].read_bytes()
            while not stop.is_set():
                searches.append(serve.request("POST", "/search?limit=3", query, content_type="image/jpeg")[0])

        def reindex(*extra: str) -> subprocess.Popen:
            return subprocess.Popen(
                [str(IMGSIM), "reindex", "--model", "model_b", "--stack", serve.api_url, "--quiet", *extra],
                env={**os.environ, "IMGSIM_API_KEY": API_KEY}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)

        searcher = threading.Thread(target=search_meanwhile)
        searcher.start()
        # The build first (no switch yet), with an upload indexed meanwhile: it must land in both collections.
        building = reindex("--no-switch")
        new_id = put_photo(serve, photos[1600], "photos/during.jpg")
        serve.wait_indexed(new_id)
        out, err = building.communicate(timeout=300)
        assert building.returncode == 0, out + err
        assert "alias switched" not in out
        # Then the switch (the rebuild tops up what is missing, if anything).
        switching = reindex()
        out, err = switching.communicate(timeout=300)
        stop.set()
        searcher.join()
        assert switching.returncode == 0, out + err
        assert "alias switched: images__model_a -> images__model_b" in out
        assert searches and set(searches) == {200}, sorted(set(searches))  # never an error during the switch

        status, health = serve.request("GET", "/health", key=None)
        assert health["serving"] == "images__model_b" and health["model"] == "model_b" and "building" not in health
        assert serve.request("GET", "/me")[1]["images"] == len(keys) + 1
        status, again = serve.request("GET", "/_local/reindex")
        assert status == 200 and again["phase"] == "done" and again["switched"] is True
        assert serve.request("GET", "/_local/reindex", key=None)[0] == 401
    finally:
        assert serve.stop() == 0

    found = keys_by_collection(data)
    assert found["images__model_b"] == {*keys, "photos/during.jpg"}
    assert "photos/during.jpg" in found["images__model_a"]  # written to both while model_a was served
    assert json.loads((data / "qdrant" / "aliases.json").read_text()) == {"images": "images__model_b"}
