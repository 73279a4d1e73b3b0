"""`imgsim duplicates`: groups from the indexer's links (text, JSON, CSV), from the stored vectors on a collection
indexed before the links existed, resolving with a dry run by default (to the trash); `imgsim delete` and
`imgsim trash list | restore | empty`; `imgsim get`. The same commands against the API: tests/test_api_cli.py."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from imgsim.ids import point_id_for_object
from imgsim.pipeline import build
from imgsim.settings import IndexSettings
from imgsim_tools import cli
from PIL import Image, ImageOps
from roots import make_root
from test_indexing import s3_body

BUCKET = "imgsim-images"
PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "photos"


def jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture
def s3(tmp_path, monkeypatch):
    import boto3
    from moto import mock_aws

    # The CLI reads its settings from the shell's environment once per command (`imgsim duplicates` runs with
    # --qdrant-path, see run): the images bucket as a user sets it, and nothing else from the developer's shell.
    monkeypatch.setenv("IMAGES_BUCKET", BUCKET)
    for name in ("QDRANT_URL", "QDRANT_PATH", "IMGSIM_DEDUPE", "IMGSIM_DUPLICATE_THRESHOLD", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def qdrant(tmp_path) -> Path:
    """The embedded store the images are indexed into and `imgsim duplicates` reads."""
    return tmp_path / "qdrant"


def index(s3, qdrant: Path, *, record: bool) -> dict[str, str]:
    root = make_root(qdrant.parent, {"IMAGES_BUCKET": BUCKET})
    indexer = build(store=root.store(), embedder=root.embedder(), s3=s3,
                    options=IndexSettings(dedupe=record, duplicate_threshold=0.74))
    img = Image.open(PHOTOS / "photo_00700.jpg").convert("RGB")
    w, h = img.size
    objects = {"dogs/original.jpg": jpeg(img), "dogs/mirror.jpg": jpeg(ImageOps.mirror(img).resize((w * 4 // 5, h * 4 // 5))),
               "dogs/grey.jpg": jpeg(img.convert("L").resize((w * 7 // 10, h * 7 // 10))),
               "cats/other.jpg": (PHOTOS / "photo_00020.jpg").read_bytes()}
    for key, data in objects.items():
        etag = s3.put_object(Bucket=BUCKET, Key=key, Body=data)["ETag"].strip('"')
        indexer.process_messages([(key, s3_body(key, size=len(data), etag=etag))])
    root.close()  # the CLI opens the store itself
    return {key: point_id_for_object(BUCKET, key) for key in objects}


def run(capsys, qdrant: Path, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["--qdrant-path", str(qdrant), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_groups_from_the_records_as_text_json_and_csv(s3, qdrant, capsys):
    ids = index(s3, qdrant, record=True)
    code, out, _ = run(capsys, qdrant, "duplicates", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["threshold"] == 0.74 and len(doc["groups"]) == 1
    group = doc["groups"][0]
    assert group["keep"] == ids["dogs/original.jpg"]
    assert {m["key"] for m in group["members"]} == {"dogs/original.jpg", "dogs/mirror.jpg", "dogs/grey.jpg"}
    code, out, _ = run(capsys, qdrant, "duplicates", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 3 and [r["keep"] for r in rows].count("yes") == 1
    code, out, _ = run(capsys, qdrant, "duplicates")
    assert code == 0 and "group 1: 3 images" in out and "keep" in out and "dogs/grey.jpg" in out
    code, out, _ = run(capsys, qdrant, "duplicates", "--threshold", "1")
    assert code == 0 and out.startswith("no duplicate groups")
    assert run(capsys, qdrant, "duplicates", "--threshold", "3")[0] == 2


def test_a_collection_indexed_before_the_records_is_grouped_from_its_vectors(s3, qdrant, capsys):
    ids = index(s3, qdrant, record=False)
    code, out, err = run(capsys, qdrant, "duplicates", "--json", "--threshold", "0.6")
    assert code == 0 and "grouping by the stored vectors" in err
    groups = json.loads(out)["groups"]
    assert len(groups) == 1 and groups[0]["keep"] == ids["dogs/original.jpg"]
    assert ids["dogs/mirror.jpg"] in {m["id"] for m in groups[0]["members"]}
    assert ids["cats/other.jpg"] not in {m["id"] for m in groups[0]["members"]}


def test_resolve_is_a_dry_run_until_yes(s3, qdrant, capsys):
    ids = index(s3, qdrant, record=True)
    keep, grey, mirror = ids["dogs/original.jpg"], ids["dogs/grey.jpg"], ids["dogs/mirror.jpg"]
    code, out, err = run(capsys, qdrant, "duplicates", "--resolve", "--keep", keep, "--remove", grey)
    assert code == 0 and f"would move to the trash: dogs/grey.jpg ({grey})" in out and "dry run" in err
    assert s3.head_object(Bucket=BUCKET, Key="dogs/grey.jpg")
    code, out, err = run(capsys, qdrant, "duplicates", "--resolve", "--keep", keep, "--remove", ids["cats/other.jpg"],
                         "--yes")
    assert code == 1 and "not a duplicate of" in err  # the server's check: only duplicates of the keep go
    code, out, _ = run(capsys, qdrant, "duplicates", "--resolve", "--keep", keep, "--remove", grey, "--yes",
                       "--not-duplicates", mirror)
    assert code == 0 and "moved to the trash: dogs/grey.jpg" in out and f"not a duplicate of {keep}: {mirror}" in out
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket=BUCKET, Key="dogs/grey.jpg")
    code, out, _ = run(capsys, qdrant, "duplicates", "--json", "--threshold", "0")
    assert all(not {keep, mirror} <= {m["id"] for m in g["members"]} for g in json.loads(out)["groups"])
    assert run(capsys, qdrant, "duplicates", "--resolve", "--keep", keep)[0] == 2


def test_delete_and_the_trash_from_the_command_line(s3, qdrant, capsys):
    ids = index(s3, qdrant, record=True)
    code, out, _ = run(capsys, qdrant, "delete", "dogs/mirror.jpg", ids["cats/other.jpg"])
    assert code == 0 and out.count("moved to the trash") == 2
    assert run(capsys, qdrant, "delete", "dogs/nothing.jpg")[0] == 1
    code, out, _ = run(capsys, qdrant, "trash", "list", "--json")
    listed = json.loads(out)
    assert code == 0 and listed["trash_days"] == 30
    assert {i["key"] for i in listed["items"]} == {"dogs/mirror.jpg", "cats/other.jpg"}
    mirror_entry = next(i["id"] for i in listed["items"] if i["key"] == "dogs/mirror.jpg")
    code, out, _ = run(capsys, qdrant, "trash", "restore", mirror_entry)
    assert code == 0 and f"restored dogs/mirror.jpg ({ids['dogs/mirror.jpg']})" in out
    assert s3.head_object(Bucket=BUCKET, Key="dogs/mirror.jpg")
    code, out, _ = run(capsys, qdrant, "duplicates", "--json")
    assert ids["dogs/mirror.jpg"] in {m["id"] for g in json.loads(out)["groups"] for m in g["members"]}
    code, out, _ = run(capsys, qdrant, "trash", "list")
    assert code == 0 and "cats/other.jpg" in out and "1 in the trash" in out
    assert run(capsys, qdrant, "trash", "empty")[0] == 2  # --yes is required
    code, out, _ = run(capsys, qdrant, "trash", "empty", "--yes")
    assert code == 0 and "deleted 1 trash entries" in out
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=".trash/")["KeyCount"] == 0
    code, out, _ = run(capsys, qdrant, "trash", "list")
    assert out.startswith("the trash is empty")


def test_get_shows_an_image_by_key_or_id_with_its_group(s3, qdrant, capsys):
    ids = index(s3, qdrant, record=True)
    code, out, _ = run(capsys, qdrant, "get", "dogs/mirror.jpg", "--json")
    image = json.loads(out)
    assert code == 0 and image["id"] == ids["dogs/mirror.jpg"] and image["key"] == "dogs/mirror.jpg"
    assert image["duplicate_of"] == ids["dogs/original.jpg"] and image["duplicate_key"] == "dogs/original.jpg"
    assert "dogs/mirror.jpg" in image["url"] and "X-Amz-Signature" in image["url"]
    assert not {"sig", "dirs"} & image.keys()  # the API's document: no bookkeeping fields
    code, out, _ = run(capsys, qdrant, "get", ids["dogs/original.jpg"])
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert code == 0 and fields["key"] == "dogs/original.jpg" and fields["duplicates"] == "2"
    code, out, err = run(capsys, qdrant, "get", "dogs/nothing.jpg")
    assert code == 1 and out == "" and err == "imgsim get: dogs/nothing.jpg: no indexed image with id or key 'dogs/nothing.jpg'\n"
