"""A model switch without downtime (imgsim.deployment, `imgsim reindex`), on both store backends.

Two manifest entries point at the same model file under two names (``model_a``, ``model_b``): the
mechanics (collections per model behind the alias, dual writes, the rebuild, the switch) are what
is tested; every point records the model it was embedded with, which tells the collections apart.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from imgsim.composition import Root
from imgsim.embedder import Embedder
from imgsim.models import REPO_MODEL_DIR
from imgsim.pipeline import RebuildingPipeline, build
from imgsim.settings import Settings
from imgsim.store import open_catalog
from imgsim_tools.commands import reindex
from imgsim_tools.events import s3_notification, s3_record
from imgsim_tools.session import Session
from roots import make_root, server_catalogs

BUCKET = "imgsim-images"


def two_model_dir(root: Path) -> Path:
    """The repository's manifest with its default entry twice, as model_a (default) and model_b."""
    manifest = json.loads((REPO_MODEL_DIR / "models.json").read_text())
    entry = manifest["models"][manifest["default"]]
    root.mkdir(parents=True)
    (root / entry["file"]).symlink_to((REPO_MODEL_DIR / entry["file"]).resolve())
    (root / "models.json").write_text(json.dumps({"default": "model_a", "models": {"model_a": entry, "model_b": entry}}))
    return root


class Deployment:
    """The functions' process on the deployment's store: a composition root built from the stack's variables.
    ``redeploy`` is the stack deployed again with other variables: a new root on the same store (the embedded
    folder's lock released first; on the server stand-in, the same server)."""

    def __init__(self, tmp_path: Path, backend: str, s3) -> None:
        self.tmp_path, self.backend, self.s3 = tmp_path, backend, s3
        self.catalogs = server_catalogs() if backend == "server" else None
        self.variables = {
            "IMGSIM_MODEL_DIR": str(two_model_dir(tmp_path / "models")),
            "IMGSIM_MODEL": "model_a",
            "IMAGES_BUCKET": BUCKET,
            # Running functions re-read the alias at every refresh (the settings are read once per process).
            "IMGSIM_ALIAS_TTL": "0",
        }
        self._embedders: dict[str, Embedder] = {}
        self.root = self._build()

    def _embedder(self, model: str, settings: Settings) -> Embedder:
        """Each model loaded once per test (every root here decodes with the same settings)."""
        if model not in self._embedders:
            self._embedders[model] = Embedder(model, settings=settings)
        return self._embedders[model]

    def _build(self) -> Root:
        return make_root(self.tmp_path, self.variables, backend=self.backend, catalogs=self.catalogs,
                         embedders=self._embedder)

    def redeploy(self, **variables: str) -> Root:
        """The functions' new process, configured with ``variables`` on top of the current ones."""
        self.root.close()
        self.variables.update(variables)
        self.root = self._build()
        return self.root

    def environment(self) -> dict[str, str]:
        """The variables the stack is deployed with, for a command line run against it (its environment)."""
        return {"QDRANT_PATH": str(self.tmp_path / "qdrant"), **self.variables}

    def close(self) -> None:
        self.root.close()


@pytest.fixture
def deployment(tmp_path, backend, moto_s3):
    """moto S3 with the bucket, both models, the functions' root on the store of ``backend``."""
    deployed = Deployment(tmp_path, backend, moto_s3)
    yield deployed
    deployed.close()


def s3_put_event(bucket: str, key: str, s3, removed: bool = False) -> dict:
    """The notification S3 sends for ``key`` (created with its size and ETag, or removed)."""
    if removed:
        return s3_notification(s3_record(bucket, key, event_name="ObjectRemoved:Delete"))
    head = s3.head_object(Bucket=bucket, Key=key)
    return s3_notification(s3_record(bucket, key, size=head["ContentLength"], etag=head["ETag"]))


def put(s3, photos, keys: list[str], offset: int = 0) -> None:
    for i, key in enumerate(keys):
        s3.put_object(Bucket=BUCKET, Key=key, Body=photos[(offset + i) * 37].read_bytes())


def index(root: Root, keys: list[str], s3, action: str = "put") -> None:
    """The indexer as IndexFunction builds it on its root (functions/index/app.py), on S3 notifications for
    ``keys``."""
    messages = [(f"m{i}", json.dumps(s3_put_event(BUCKET, key, s3, removed=action == "delete")), 1)
                for i, key in enumerate(keys)]
    report = root.pipeline().process_messages(messages)
    assert report.failed_message_ids == [], report.outcomes


def indexed_with_model_a_then_configured_b(deployment: Deployment, photos, keys: list[str]) -> Root:
    """``keys`` uploaded and indexed while model_a is configured; then the deployment is configured for model_b
    (its new root is returned)."""
    put(deployment.s3, photos, keys)
    index(deployment.root, keys, deployment.s3)
    return deployment.redeploy(IMGSIM_MODEL="model_b")


def models_in(root: Root, collection: str) -> dict[str, str]:
    """key -> model of every point in ``collection`` (through the root's catalog)."""
    store = root.catalog().open_store(collection, dim=root.embedder("model_a").dim)
    records, _ = store.scroll(limit=1000, fields=["key", "model"])
    return {r.payload["key"]: r.payload["model"] for r in records}


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    reindex.add_arguments(parser)
    return parser.parse_args(["--quiet", *argv])


def run(root: Root, parsed: argparse.Namespace) -> int:
    """The command on the functions' root, as inside `imgsim serve` (and the objects this test inspects)."""
    return reindex.run(parsed, Session.on_root(root))


def test_switching_models_without_downtime(deployment, photos, capsys):
    s3 = deployment.s3
    root = deployment.root
    first = [f"photos/{i}.jpg" for i in range(6)]
    put(s3, photos, first)
    index(root, first, s3)
    layout = root.layout()
    assert layout.serving.collection == "images__model_a" and layout.building is None
    assert root.catalog().alias_target("images") == "images__model_a"

    # Deployed with Model=model_b: model_a's collection is still served, model_b's is being built.
    root = deployment.redeploy(IMGSIM_MODEL="model_b")
    layout = root.layout()
    assert (layout.serving.collection, layout.serving.model) == ("images__model_a", "model_a")
    assert layout.building is not None and layout.building.collection == "images__model_b"
    assert isinstance(root.pipeline(), RebuildingPipeline)
    assert root.embedder().model_name == "model_a"  # queries are embedded with the served model

    # Uploads and deletes during the rebuild land in both collections.
    put(s3, photos, ["photos/new.jpg"], offset=20)
    index(root, ["photos/new.jpg"], s3)
    s3.delete_object(Bucket=BUCKET, Key=first[0])
    index(root, [first[0]], s3, action="delete")
    assert set(models_in(root, "images__model_a")) == {*first[1:], "photos/new.jpg"}
    assert models_in(root, "images__model_b") == {"photos/new.jpg": "model_b"}

    # The rebuild: searches keep using model_a's collection until the switch.
    assert run(root, args("--model", "model_b")) == 0
    out = capsys.readouterr().out
    # Two listings of 6 objects: the fill indexes 5 (new.jpg is there already), the catch-up finds all 6 done.
    assert "12 objects listed" in out and "indexed   5" in out and "unchanged 7" in out
    assert "images__model_a -> images__model_b" in out
    assert root.catalog().alias_target("images") == "images__model_b"
    built = models_in(root, "images__model_b")
    assert set(built) == {*first[1:], "photos/new.jpg"} and set(built.values()) == {"model_b"}

    # Running functions follow the alias at their next refresh; then only one collection is written.
    root.refresh()
    assert root.layout().serving.collection == "images__model_b" and root.layout().building is None
    assert root.store().collection == "images__model_b"
    assert root.embedder().model_name == "model_b"


def test_a_rebuild_resumes_and_switches_only_when_nothing_failed(deployment, photos, capsys, monkeypatch):
    keys = [f"p/{i}.jpg" for i in range(8)]
    root = indexed_with_model_a_then_configured_b(deployment, photos, keys)

    client = root.s3()
    real = client.get_object

    def throttled(**kwargs):
        if kwargs["Key"] in ("p/3.jpg", "p/6.jpg"):
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "slow down"}}, "GetObject")
        return real(**kwargs)

    monkeypatch.setattr(client, "get_object", throttled)
    assert run(root, args("--model", "model_b", "--batch-size", "3")) == 1
    out = capsys.readouterr().out
    assert "indexed   6" in out and "failed 4" in out  # each failing object counted in both passes
    assert "run again" in out and root.catalog().alias_target("images") == "images__model_a"
    assert len(models_in(root, "images__model_b")) == 6

    monkeypatch.setattr(client, "get_object", real)
    assert run(root, args("--model", "model_b")) == 0  # resumes: only the two missing are downloaded
    out = capsys.readouterr().out
    assert "indexed   2" in out and "unchanged 14" in out  # both passes skip the 6, then the 8
    assert root.catalog().alias_target("images") == "images__model_b"


def test_catch_up_removes_points_of_objects_deleted_meanwhile(deployment, photos, capsys):
    s3 = deployment.s3
    keys = [f"q/{i}.jpg" for i in range(4)]
    root = indexed_with_model_a_then_configured_b(deployment, photos, keys)
    # Built without the switch; then an object goes while the functions are not writing to model_b yet.
    assert run(root, args("--model", "model_b", "--no-switch")) == 0
    assert root.catalog().alias_target("images") == "images__model_a"
    s3.delete_object(Bucket=BUCKET, Key=keys[1])
    assert run(root, args("--model", "model_b")) == 0
    assert "removed 1" in capsys.readouterr().out
    assert set(models_in(root, "images__model_b")) == {keys[0], keys[2], keys[3]}


def test_a_collection_from_before_per_model_names_is_replaced_by_the_alias(deployment, photos):
    s3 = deployment.s3
    root = deployment.root
    keys = ["old/0.jpg", "old/1.jpg"]
    put(s3, photos, keys)
    legacy = root.catalog().open_store("images", dim=root.embedder("model_a").dim)
    report = build(store=legacy, embedder=root.embedder("model_a"), s3=root.s3(),
                   options=root.settings.index).process_messages(
        [(f"m{i}", json.dumps(s3_put_event(BUCKET, key, s3)), 1) for i, key in enumerate(keys)])
    assert report.failed_message_ids == []
    root = deployment.redeploy()
    layout = root.layout()
    assert (layout.serving.collection, layout.serving.model, layout.building) == ("images", "model_a", None)
    root = deployment.redeploy(IMGSIM_MODEL="model_b")
    assert run(root, args("--model", "model_b")) == 0
    catalog = root.catalog()
    assert catalog.alias_target("images") == "images__model_b" and not catalog.exists("images")


def test_reindex_with_an_unknown_model_fails_cleanly(deployment):
    from imgsim.errors import ConfigError

    with pytest.raises(ConfigError, match="model_c"):
        run(deployment.root, args("--model", "model_c"))


def test_edge_aliases_survive_a_reopen(tmp_path):
    catalog = open_catalog(Settings(qdrant_path=str(tmp_path / "q")))
    catalog.open_store("images__x", dim=4).ensure_collection()
    catalog.switch_alias("images", "images__x")
    catalog.close()
    reopened = open_catalog(Settings(qdrant_path=str(tmp_path / "q")))
    try:
        assert reopened.alias_target("images") == "images__x"
    finally:
        reopened.close()


def test_reindex_against_a_running_local_stack_names_the_way_in(tmp_path, monkeypatch, capsys):
    """The embedded store is locked by the process that has it open (here: this test, as `imgsim serve` would)."""
    from imgsim_tools import cli

    # The command line's environment (it reads it once, when it starts).
    monkeypatch.setenv("QDRANT_PATH", str(tmp_path / "q"))
    monkeypatch.delenv("QDRANT_URL", raising=False)
    monkeypatch.setenv("IMAGES_BUCKET", BUCKET)
    holder = open_catalog(Settings(qdrant_path=str(tmp_path / "q")))
    try:
        assert cli.main(["reindex", "--model", Root().configured_model(), "--quiet"]) == 1
    finally:
        holder.close()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is in use by" in err and "--stack http://127.0.0.1:3000" in err


def test_the_command_lines_own_session_writes_both_collections_during_a_switch(deployment, photos, capsys,
                                                                              monkeypatch):
    """`imgsim backfill` on the CLI's session (settings read once, its own catalog, closed at the end) sees the
    deployment as the functions do: while model_a is served and model_b configured, objects land in both."""
    from imgsim_tools import cli, session

    # The CLI's root opens the deployment's store (the server stand-in is shared by every catalog).
    monkeypatch.setattr(session, "Root", functools.partial(Root, catalogs=deployment.catalogs))
    s3 = deployment.s3
    indexed_with_model_a_then_configured_b(deployment, photos, ["s/0.jpg"])
    put(s3, photos, ["s/1.jpg", "s/2.jpg"], offset=3)
    for name, value in deployment.environment().items():  # the command line's environment: the deployment's
        monkeypatch.setenv(name, value)
    deployment.root.close()  # the command opens the store itself
    assert cli.main(["backfill", f"s3://{BUCKET}/s/", "--quiet"]) == 0
    keys = {"s/0.jpg", "s/1.jpg", "s/2.jpg"}
    root = deployment.redeploy()
    assert set(models_in(root, "images__model_a")) == keys
    assert models_in(root, "images__model_b") == dict.fromkeys(keys, "model_b")
    root.close()
    assert cli.main(["reindex", "--model", "model_b", "--quiet"]) == 0
    assert "unchanged 6" in capsys.readouterr().out  # both listings: all there already
    assert deployment.redeploy().catalog().alias_target("images") == "images__model_b"
