"""A model switch without downtime (imgsim.deployment, `imgsim reindex`), on both store backends.

Two manifest entries point at the same model file under two names (``model_a``, ``model_b``): the
mechanics (collections per model behind the alias, dual writes, the rebuild, the switch) are what
is tested; every point records the model it was embedded with, which tells the collections apart.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from imgsim import runtime
from imgsim.models import REPO_MODEL_DIR
from imgsim.pipeline import RebuildingPipeline, build
from imgsim.store import open_catalog
from imgsim_tools.commands import reindex
from imgsim_tools.events import s3_notification, s3_record
from imgsim_tools.session import RuntimeSession
from support import INDEX_APP_PATH, load_module_from_path

BUCKET = "imgsim-images"


def pipeline_from_runtime():
    """The pipeline as the IndexFunction builds it on the runtime (functions/index/app.py)."""
    return load_module_from_path("index_app", INDEX_APP_PATH).pipeline_from_runtime()


def two_model_dir(root: Path) -> Path:
    """The repository's manifest with its default entry twice, as model_a (default) and model_b."""
    manifest = json.loads((REPO_MODEL_DIR / "models.json").read_text())
    entry = manifest["models"][manifest["default"]]
    root.mkdir(parents=True)
    (root / entry["file"]).symlink_to((REPO_MODEL_DIR / entry["file"]).resolve())
    (root / "models.json").write_text(json.dumps({"default": "model_a", "models": {"model_a": entry, "model_b": entry}}))
    return root


@pytest.fixture
def deployment(tmp_path, monkeypatch, runtime_on_backend, moto_s3):
    """moto S3 with the bucket, both models, the runtime on the store of ``backend``."""
    monkeypatch.setenv("IMGSIM_MODEL_DIR", str(two_model_dir(tmp_path / "models")))
    monkeypatch.setenv("IMGSIM_MODEL", "model_a")
    monkeypatch.setenv("IMAGES_BUCKET", BUCKET)
    # Running functions re-read the alias at every refresh (the settings are read once per process).
    monkeypatch.setenv("IMGSIM_ALIAS_TTL", "0")
    runtime.reset()
    return moto_s3


def s3_put_event(bucket: str, key: str, s3, removed: bool = False) -> dict:
    """The notification S3 sends for ``key`` (created with its size and ETag, or removed)."""
    if removed:
        return s3_notification(s3_record(bucket, key, event_name="ObjectRemoved:Delete"))
    head = s3.head_object(Bucket=bucket, Key=key)
    return s3_notification(s3_record(bucket, key, size=head["ContentLength"], etag=head["ETag"]))


def put(s3, photos, keys: list[str], offset: int = 0) -> None:
    for i, key in enumerate(keys):
        s3.put_object(Bucket=BUCKET, Key=key, Body=photos[(offset + i) * 37].read_bytes())


def index(keys: list[str], s3, action: str = "put") -> None:
    """The indexer as IndexFunction builds it, on S3 notifications for ``keys``."""
    messages = [(f"m{i}", json.dumps(s3_put_event(BUCKET, key, s3, removed=action == "delete")), 1)
                for i, key in enumerate(keys)]
    report = pipeline_from_runtime().process_messages(messages)
    assert report.failed_message_ids == [], report.outcomes


def indexed_with_model_a_then_configured_b(s3, photos, keys: list[str], monkeypatch) -> None:
    """``keys`` uploaded and indexed while model_a is configured; then the deployment is configured for model_b."""
    put(s3, photos, keys)
    index(keys, s3)
    runtime.reset()
    monkeypatch.setenv("IMGSIM_MODEL", "model_b")


def models_in(collection: str) -> dict[str, str]:
    """key -> model of every point in ``collection`` (through the runtime's catalog)."""
    store = runtime.get_catalog().open_store(collection, dim=runtime.get_embedder("model_a").dim)
    records, _ = store.scroll(limit=1000, fields=["key", "model"])
    return {r.payload["key"]: r.payload["model"] for r in records}


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    reindex.add_arguments(parser)
    return parser.parse_args(["--quiet", *argv])


def run(parsed: argparse.Namespace) -> int:
    """The command on the runtime's objects, as inside `imgsim serve` (and the ones this test inspects)."""
    return reindex.run(parsed, RuntimeSession())


def test_switching_models_without_downtime(deployment, photos, capsys, monkeypatch):
    s3 = deployment
    first = [f"photos/{i}.jpg" for i in range(6)]
    put(s3, photos, first)
    index(first, s3)
    layout = runtime.get_layout()
    assert layout.serving.collection == "images__model_a" and layout.building is None
    assert runtime.get_catalog().alias_target("images") == "images__model_a"

    # Deployed with Model=model_b: model_a's collection is still served, model_b's is being built.
    runtime.reset()
    monkeypatch.setenv("IMGSIM_MODEL", "model_b")
    layout = runtime.get_layout()
    assert (layout.serving.collection, layout.serving.model) == ("images__model_a", "model_a")
    assert layout.building is not None and layout.building.collection == "images__model_b"
    assert isinstance(pipeline_from_runtime(), RebuildingPipeline)
    assert runtime.get_embedder().model_name == "model_a"  # queries are embedded with the served model

    # Uploads and deletes during the rebuild land in both collections.
    put(s3, photos, ["photos/new.jpg"], offset=20)
    index(["photos/new.jpg"], s3)
    s3.delete_object(Bucket=BUCKET, Key=first[0])
    index([first[0]], s3, action="delete")
    assert set(models_in("images__model_a")) == {*first[1:], "photos/new.jpg"}
    assert models_in("images__model_b") == {"photos/new.jpg": "model_b"}

    # The rebuild: searches keep using model_a's collection until the switch.
    assert run(args("--model", "model_b")) == 0
    out = capsys.readouterr().out
    # Two listings of 6 objects: the fill indexes 5 (new.jpg is there already), the catch-up finds all 6 done.
    assert "12 objects listed" in out and "indexed   5" in out and "unchanged 7" in out
    assert "images__model_a -> images__model_b" in out
    assert runtime.get_catalog().alias_target("images") == "images__model_b"
    built = models_in("images__model_b")
    assert set(built) == {*first[1:], "photos/new.jpg"} and set(built.values()) == {"model_b"}

    # Running functions follow the alias at their next refresh; then only one collection is written.
    runtime.refresh()
    assert runtime.get_layout().serving.collection == "images__model_b" and runtime.get_layout().building is None
    assert runtime.get_store().collection == "images__model_b"
    assert runtime.get_embedder().model_name == "model_b"


def test_a_rebuild_resumes_and_switches_only_when_nothing_failed(deployment, photos, capsys, monkeypatch):
    s3 = deployment
    keys = [f"p/{i}.jpg" for i in range(8)]
    indexed_with_model_a_then_configured_b(s3, photos, keys, monkeypatch)

    client = runtime.get_boto3_client("s3")
    real = client.get_object

    def throttled(**kwargs):
        if kwargs["Key"] in ("p/3.jpg", "p/6.jpg"):
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "slow down"}}, "GetObject")
        return real(**kwargs)

    monkeypatch.setattr(client, "get_object", throttled)
    assert run(args("--model", "model_b", "--batch-size", "3")) == 1
    out = capsys.readouterr().out
    assert "indexed   6" in out and "failed 4" in out  # each failing object counted in both passes
    assert "run again" in out and runtime.get_catalog().alias_target("images") == "images__model_a"
    assert len(models_in("images__model_b")) == 6

    monkeypatch.setattr(client, "get_object", real)
    assert run(args("--model", "model_b")) == 0  # resumes: only the two missing are downloaded
    out = capsys.readouterr().out
    assert "indexed   2" in out and "unchanged 14" in out  # both passes skip the 6, then the 8
    assert runtime.get_catalog().alias_target("images") == "images__model_b"


def test_catch_up_removes_points_of_objects_deleted_meanwhile(deployment, photos, capsys, monkeypatch):
    s3 = deployment
    keys = [f"q/{i}.jpg" for i in range(4)]
    indexed_with_model_a_then_configured_b(s3, photos, keys, monkeypatch)
    # Built without the switch; then an object goes while the functions are not writing to model_b yet.
    assert run(args("--model", "model_b", "--no-switch")) == 0
    assert runtime.get_catalog().alias_target("images") == "images__model_a"
    s3.delete_object(Bucket=BUCKET, Key=keys[1])
    assert run(args("--model", "model_b")) == 0
    assert "removed 1" in capsys.readouterr().out
    assert set(models_in("images__model_b")) == {keys[0], keys[2], keys[3]}


def test_a_collection_from_before_per_model_names_is_replaced_by_the_alias(deployment, photos, monkeypatch):
    s3 = deployment
    keys = ["old/0.jpg", "old/1.jpg"]
    put(s3, photos, keys)
    legacy = runtime.get_catalog().open_store("images", dim=runtime.get_embedder("model_a").dim)
    report = build(store=legacy, embedder=runtime.get_embedder("model_a"), s3=runtime.get_boto3_client("s3"),
                   options=runtime.get_app_settings().index).process_messages(
        [(f"m{i}", json.dumps(s3_put_event(BUCKET, key, s3)), 1) for i, key in enumerate(keys)])
    assert report.failed_message_ids == []
    runtime.reset()
    layout = runtime.get_layout()
    assert (layout.serving.collection, layout.serving.model, layout.building) == ("images", "model_a", None)
    monkeypatch.setenv("IMGSIM_MODEL", "model_b")
    assert run(args("--model", "model_b")) == 0
    catalog = runtime.get_catalog()
    assert catalog.alias_target("images") == "images__model_b" and not catalog.exists("images")


def test_reindex_with_an_unknown_model_fails_cleanly(deployment):
    from imgsim.errors import ConfigError

    with pytest.raises(ConfigError, match="model_c"):
        run(args("--model", "model_c"))


def test_edge_aliases_survive_a_reopen(tmp_path):
    from imgsim.settings import Settings

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
    from imgsim.settings import Settings
    from imgsim_tools import cli

    monkeypatch.setenv("QDRANT_PATH", str(tmp_path / "q"))
    monkeypatch.delenv("QDRANT_URL", raising=False)
    monkeypatch.setenv("IMAGES_BUCKET", BUCKET)
    holder = open_catalog(Settings(qdrant_path=str(tmp_path / "q")))
    try:
        assert cli.main(["reindex", "--model", runtime.configured_model(), "--quiet"]) == 1
    finally:
        holder.close()
        runtime.reset()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is in use by" in err and "--stack http://127.0.0.1:3000" in err


def test_the_command_lines_own_session_writes_both_collections_during_a_switch(deployment, photos, capsys,
                                                                              monkeypatch):
    """`imgsim backfill` on the CLI's session (settings read once, its own catalog, closed at the end) sees the
    deployment as the functions do: while model_a is served and model_b configured, objects land in both."""
    from imgsim_tools import cli, session

    # The CLI opens its catalog as the runtime does (the server stand-in is shared by every catalog).
    monkeypatch.setattr(session, "open_catalog", runtime.open_catalog)
    s3 = deployment
    indexed_with_model_a_then_configured_b(s3, photos, ["s/0.jpg"], monkeypatch)
    put(s3, photos, ["s/1.jpg", "s/2.jpg"], offset=3)
    runtime.reset()  # the command opens the store itself
    assert cli.main(["backfill", f"s3://{BUCKET}/s/", "--quiet"]) == 0
    keys = {"s/0.jpg", "s/1.jpg", "s/2.jpg"}
    assert set(models_in("images__model_a")) == keys
    assert models_in("images__model_b") == dict.fromkeys(keys, "model_b")
    runtime.reset()
    assert cli.main(["reindex", "--model", "model_b", "--quiet"]) == 0
    assert "unchanged 6" in capsys.readouterr().out  # both listings: all there already
    assert runtime.get_catalog().alias_target("images") == "images__model_b"
