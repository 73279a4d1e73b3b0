"""The local stack's durable S3 (imgsim_tools.local.durable_s3): what moto acknowledges is committed with the
notification it owes, a restart lists every object without reading one, and only unhandled events come back."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from imgsim_tools.local.durable_s3 import DELETE, PUT, DurableBucket, WriteThrough
from moto.s3.models import s3_backends

BUCKET = "imgsim-images"
ACCOUNT = "123456789012"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def s3(moto_s3):
    return moto_s3


def pending(durable: DurableBucket) -> list[tuple[str, str, str | None]]:
    return [(p.key, p.action, p.etag) for p in durable.pending()]


def test_pending_rows_clear_only_for_the_write_they_belong_to(tmp_path):
    durable = DurableBucket(tmp_path, BUCKET)
    durable.write("a.jpg", b"one", md5(b"one"), "image/jpeg", time.time())
    durable.write("a.jpg", b"two", md5(b"two"), "image/jpeg", time.time())  # overwritten before indexing
    durable.write("b.jpg", b"bee", md5(b"bee"), "image/jpeg", time.time())
    assert pending(durable) == [("a.jpg", PUT, md5(b"two")), ("b.jpg", PUT, md5(b"bee"))]
    durable.settle("a.jpg", PUT, md5(b"one"))  # the first write's event: the second is still owed
    assert pending(durable)[0] == ("a.jpg", PUT, md5(b"two"))
    durable.settle("a.jpg", PUT, f'"{md5(b"two")}"')
    durable.remove("b.jpg")
    durable.settle("b.jpg", PUT, md5(b"bee"))  # a put's event does not clear the later delete
    assert pending(durable) == [("b.jpg", DELETE, None)]
    durable.settle("b.jpg", DELETE, None)
    assert pending(durable) == [] and durable.count() == 1
    # One file per object: the overwritten version's file and the deleted object's are gone.
    assert [p.name for p in (tmp_path / "objects").iterdir()] == [f"{hashlib.sha256(b'a.jpg').hexdigest()[:40]}-{md5(b'two')}.bin"]
    durable.close()


def test_acknowledged_writes_are_committed_and_a_restart_restores_them_lazily(tmp_path, s3):
    durable = DurableBucket(tmp_path, BUCKET)
    through = WriteThrough(durable)
    through.install()
    try:
        s3.put_object(Bucket=BUCKET, Key="photos/cat.jpg", Body=b"cat bytes", ContentType="image/jpeg")
        s3.put_object(Bucket=BUCKET, Key="photos/gone.jpg", Body=b"gone")
        s3.copy_object(Bucket=BUCKET, Key="photos/copy.jpg", CopySource={"Bucket": BUCKET, "Key": "photos/cat.jpg"})
        s3.delete_object(Bucket=BUCKET, Key="photos/gone.jpg")
        s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "photos/never-existed.jpg"}]})
    finally:
        through.uninstall()
    assert pending(durable) == [("photos/cat.jpg", PUT, md5(b"cat bytes")), ("photos/copy.jpg", PUT, md5(b"cat bytes")),
                                ("photos/gone.jpg", DELETE, None)]
    listed = {o["Key"]: o for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    durable.close()

    # A new process: moto's memory is gone, the data dir is not.
    s3_backends[ACCOUNT]["aws"].reset()
    s3.create_bucket(Bucket=BUCKET)
    durable = DurableBucket(tmp_path, BUCKET)
    assert durable.restore_into(s3_backends[ACCOUNT]["aws"], ACCOUNT, "us-east-1") == 2
    store = s3_backends[ACCOUNT]["aws"].get_bucket(BUCKET).keys
    assert dict.__len__(store) == 0  # a restart makes no key until one is asked for
    key = store["photos/cat.jpg"]
    assert dict.__len__(store) == 1 and "_buffer" not in key.__dict__  # made, not read
    relisted = {o["Key"]: o for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert {k: (o["ETag"], o["Size"], o["LastModified"]) for k, o in relisted.items()} == {
        k: (o["ETag"], o["Size"], o["LastModified"]) for k, o in listed.items()}
    head = s3.head_object(Bucket=BUCKET, Key="photos/cat.jpg")
    assert head["ContentType"] == "image/jpeg" and head["ContentLength"] == 9
    assert s3.get_object(Bucket=BUCKET, Key="photos/cat.jpg")["Body"].read() == b"cat bytes"
    assert s3.get_object(Bucket=BUCKET, Key="photos/copy.jpg", Range="bytes=0-2")["Body"].read() == b"cat"
    # Restored keys behave as moto's own: copied, overwritten, deleted.
    s3.copy_object(Bucket=BUCKET, Key="photos/copy2.jpg", CopySource={"Bucket": BUCKET, "Key": "photos/copy.jpg"})
    assert s3.get_object(Bucket=BUCKET, Key="photos/copy2.jpg")["Body"].read() == b"cat bytes"
    s3.put_object(Bucket=BUCKET, Key="photos/cat.jpg", Body=b"new cat")
    assert s3.get_object(Bucket=BUCKET, Key="photos/cat.jpg")["Body"].read() == b"new cat"
    s3.delete_object(Bucket=BUCKET, Key="photos/copy.jpg")
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]) == ["photos/cat.jpg", "photos/copy2.jpg"]
    durable.close()


def test_a_data_dir_of_the_previous_layout_is_imported_once(tmp_path):
    stem = hashlib.sha256(b"photos/old.jpg").hexdigest()
    (tmp_path / f"{stem}.bin").write_bytes(b"old bytes")
    (tmp_path / f"{stem}.json").write_text(json.dumps({"key": "photos/old.jpg", "etag": md5(b"old bytes"),
                                                       "content_type": "image/png"}))
    durable = DurableBucket(tmp_path, BUCKET)
    assert durable.count() == 1 and pending(durable) == [("photos/old.jpg", PUT, md5(b"old bytes"))]
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.bin"))
    durable.close()
    assert DurableBucket(tmp_path, BUCKET).count() == 1


def test_lookups_racing_deletes_never_bring_a_deleted_key_back(tmp_path, s3):
    """Readers of a restored bucket (GET, HEAD, listings) race writers deleting and rewriting its keys: a key
    deleted is gone from every later listing and from the durable one, a key rewritten has its new bytes."""
    import threading

    durable = DurableBucket(tmp_path, BUCKET)
    for i in range(120):
        durable.write(f"k/{i:03d}", f"v{i}".encode(), md5(f"v{i}".encode()), "text/plain", time.time())
    s3_backends[ACCOUNT]["aws"].reset()
    s3.create_bucket(Bucket=BUCKET)
    durable.restore_into(s3_backends[ACCOUNT]["aws"], ACCOUNT, "us-east-1")
    through = WriteThrough(durable)
    through.install()
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader(seed: int) -> None:
        import random

        rng = random.Random(seed)
        while not stop.is_set():
            key = f"k/{rng.randrange(120):03d}"
            try:
                s3.head_object(Bucket=BUCKET, Key=key)
            except s3.exceptions.ClientError:
                pass
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    readers = [threading.Thread(target=reader, args=(n,)) for n in range(2)]
    for thread in readers:
        thread.start()
    try:
        for i in range(0, 120, 2):
            s3.delete_object(Bucket=BUCKET, Key=f"k/{i:03d}")
        for i in range(1, 120, 6):
            s3.put_object(Bucket=BUCKET, Key=f"k/{i:03d}", Body=b"new")
        listed = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                  for o in page.get("Contents", [])}
    finally:
        stop.set()
        for thread in readers:
            thread.join()
        through.uninstall()
    assert errors == []
    assert listed == {f"k/{i:03d}" for i in range(1, 120, 2)} == {s.name for s in durable.stored_keys()}
    assert s3.get_object(Bucket=BUCKET, Key="k/001")["Body"].read() == b"new"
    assert s3.get_object(Bucket=BUCKET, Key="k/003")["Body"].read() == b"v3"
    durable.close()
