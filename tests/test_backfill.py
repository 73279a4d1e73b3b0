"""`imgsim backfill`: listing with pagination, direct indexing, re-runs, --force, --via-queue (moto)."""

from __future__ import annotations

import argparse

import pytest
from imgsim.errors import ConfigError
from imgsim.ids import point_id_for_object
from imgsim.pipeline import INDEXED, SKIPPED
from imgsim_tools import listing
from imgsim_tools.commands import backfill
from imgsim_tools.session import Session
from roots import make_root

BUCKET = "imgsim-images"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="imgsim backfill")
    backfill.add_arguments(parser)
    return parser.parse_args(list(argv))


def run(root, args: argparse.Namespace) -> int:
    """The command on ``root``'s objects: the ones this test inspects (and whose S3 client it watches)."""
    return backfill.run(args, Session.on_root(root))


@pytest.fixture
def s3():
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def root(s3, tmp_path):
    """A composition root on a fresh embedded store under tmp_path (its S3 client: moto's)."""
    built = make_root(tmp_path)
    yield built
    built.close()


@pytest.fixture
def get_object_calls(root, monkeypatch):
    """Keys the indexer downloads (the root's S3 client, the one backfill uses)."""
    client = root.s3()
    real = client.get_object
    calls: list[str] = []

    def counting(**kwargs):
        calls.append(kwargs["Key"])
        return real(**kwargs)

    monkeypatch.setattr(client, "get_object", counting)
    return calls


def test_backfill_indexes_a_prefix_and_is_safe_to_rerun(s3, root, photos, get_object_calls, capsys):
    keys = [f"photos/2024/p {i}.jpg" for i in range(8)]
    for i, key in enumerate(keys):
        s3.put_object(Bucket=BUCKET, Key=key, Body=photos[i * 200].read_bytes())
    s3.put_object(Bucket=BUCKET, Key="photos/readme.txt", Body=b"not a photo")
    s3.put_object(Bucket=BUCKET, Key="photos/empty-folder/", Body=b"")  # console folder marker
    s3.put_object(Bucket=BUCKET, Key="elsewhere/x.jpg", Body=photos[1].read_bytes())

    assert run(root, parse(f"s3://{BUCKET}/photos/", "--quiet", "--batch-size", "3")) == 0
    out = capsys.readouterr().out
    store = root.store()
    assert store.count() == 8
    assert all(store.get(point_id_for_object(BUCKET, k)) is not None for k in keys)
    assert "9 objects listed" in out and "indexed   8" in out and "not_an_image" in out
    assert sorted(get_object_calls) == sorted(keys + ["photos/readme.txt"])

    # Re-run: nothing downloaded again, nothing duplicated.
    get_object_calls.clear()
    assert run(root, parse(f"s3://{BUCKET}/photos/", "--quiet")) == 0
    out = capsys.readouterr().out
    assert "indexed   0" in out and "unchanged 8" in out
    assert get_object_calls == ["photos/readme.txt"]  # poison is not remembered: re-checked
    assert store.count() == 8

    # One object replaced: only that one is indexed again, with the new content.
    s3.put_object(Bucket=BUCKET, Key=keys[0], Body=photos[1500].read_bytes())
    get_object_calls.clear()
    assert run(root, parse(f"s3://{BUCKET}/photos/", "--quiet")) == 0
    assert "indexed   1" in capsys.readouterr().out
    assert keys[0] in get_object_calls
    new_etag = s3.head_object(Bucket=BUCKET, Key=keys[0])["ETag"].strip('"')
    assert store.get(point_id_for_object(BUCKET, keys[0])).payload["etag"] == new_etag

    # --force re-indexes everything, still without duplicates.
    assert run(root, parse(f"s3://{BUCKET}/photos", "--quiet", "--force")) == 0
    assert "indexed   8" in capsys.readouterr().out
    assert store.count() == 8


def test_backfill_keeps_a_stored_sequencer(s3, root, photos, capsys):
    """Backfill events have no sequencer: the one from the last notification stays for ordering."""
    from imgsim.pipeline import PUT, ObjectEvent

    s3.put_object(Bucket=BUCKET, Key="photos/a.jpg", Body=photos[0].read_bytes())
    root.pipeline().process_events([ObjectEvent("m", PUT, BUCKET, "photos/a.jpg", sequencer="00AB")])
    s3.put_object(Bucket=BUCKET, Key="photos/a.jpg", Body=photos[700].read_bytes())  # event not yet delivered
    assert run(root, parse(f"s3://{BUCKET}/photos/", "--quiet")) == 0
    payload = root.store().get(point_id_for_object(BUCKET, "photos/a.jpg")).payload
    assert payload["sequencer"] == "00AB"
    assert payload["etag"] == s3.head_object(Bucket=BUCKET, Key="photos/a.jpg")["ETag"].strip('"')


def test_listing_follows_every_page(s3):
    for i in range(7):
        s3.put_object(Bucket=BUCKET, Key=f"p/{i}.jpg", Body=b"x")
    pages = []
    s3.meta.events.register("after-call.s3.ListObjectsV2", lambda parsed, **_: pages.append(parsed["KeyCount"]))
    listed = [o["Key"] for o in listing.list_objects(s3, BUCKET, "p/", page_size=3)]
    assert listed == [f"p/{i}.jpg" for i in range(7)]
    assert pages == [3, 3, 1]


def test_via_queue_enqueues_events_the_indexer_accepts(s3, root, photos, capsys):
    import boto3

    sqs = boto3.client("sqs", region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName="imgsim-index")["QueueUrl"]
    keys = [f"photos/q {i}+.jpg" for i in range(12)]
    for i, key in enumerate(keys):
        s3.put_object(Bucket=BUCKET, Key=key, Body=photos[i * 100].read_bytes())

    def drain() -> list:
        outcomes = []
        while True:
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return outcomes
            report = root.pipeline().process_messages((m["MessageId"], m["Body"]) for m in messages)
            outcomes += report.outcomes
            for m in messages:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])

    assert run(root, parse(f"s3://{BUCKET}/photos/", "--via-queue", queue_url, "--quiet")) == 0
    assert "12 objects listed, 12 enqueued" in capsys.readouterr().out
    first = drain()
    assert [o.status for o in first] == [INDEXED] * 12
    assert sorted(o.key for o in first) == sorted(keys)
    assert root.store().count() == 12

    assert run(root, parse(f"s3://{BUCKET}/photos/", "--via-queue", queue_url, "--quiet")) == 0
    again = drain()
    assert {(o.status, o.reason) for o in again} == {(SKIPPED, "unchanged")}
    forced = backfill.backfill_record(BUCKET, {"Key": "a b.jpg", "Size": 3, "ETag": '"e"'}, force=True)
    assert forced["s3"]["object"] == {"key": "a+b.jpg", "size": 3, "eTag": "e"}
    assert "imgsimBackfill" not in forced and "sequencer" not in forced["s3"]["object"]


def test_bad_uri_is_a_config_error():
    with pytest.raises(ConfigError):
        listing.parse_s3_uri("https://example.com/photos")
    assert listing.parse_s3_uri("s3://b/some/prefix") == ("b", "some/prefix")
    assert listing.parse_s3_uri("s3://b") == ("b", "")


def test_the_command_line_backfills_where_its_options_say(s3, root, photos, tmp_path, capsys, monkeypatch):
    """`imgsim --qdrant-path DIR backfill ...`: the global option reaches the command's session (no variable is
    set for it), and the session's store is closed when the command ends."""
    from imgsim.deployment import open_model_store
    from imgsim.settings import Settings
    from imgsim_tools import cli

    for i in range(2):
        s3.put_object(Bucket=BUCKET, Key=f"cli/{i}.jpg", Body=photos[i * 300].read_bytes())
    other = tmp_path / "elsewhere"
    # The command line's environment names the root's store (QDRANT_PATH); the option wins over it.
    monkeypatch.setenv("QDRANT_PATH", str(tmp_path / "qdrant"))
    assert cli.main(["--qdrant-path", str(other), "backfill", f"s3://{BUCKET}/cli/", "--quiet"]) == 0
    assert "indexed   2" in capsys.readouterr().out
    embedder = root.embedder()
    store = open_model_store(Settings(qdrant_path=str(other)), dim=embedder.dim, model=embedder.model_name)
    try:
        assert store.count() == 2
    finally:
        store.close()
    assert root.store().count() == 0  # QDRANT_PATH's store: untouched
