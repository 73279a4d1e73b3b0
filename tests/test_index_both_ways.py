"""One pipeline, two entry points: a labelled set of photos indexed as local files (`imgsim index`) and as S3
objects through the IndexFunction (moto S3 -> SQS -> handler) gives the same `imgsim duplicates` groups.

The set (tests/data/duplicate_labels.json): nine labelled duplicate groups (seven pairs, a group of three, one of
five: 22 photos), eight look-alike pairs (different photos of the same kind of animal: 16 more) and three unrelated
photos: 41 images.
Both ways record the duplicates at indexing (no fallback to raw cosine), with the real model; the file way in one
batch, the upload way in five, so the groups do not depend on how the images were batched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from imgsim_tools import cli
from roots import make_root
from support import notifying_bucket
from test_index_handler import BUCKET, QUEUE, REGION, drain, load_handler_module

LABELS = json.loads((Path(__file__).resolve().parent / "data" / "duplicate_labels.json").read_text())
PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "photos"

GROUPS = [g for g in LABELS["duplicate_groups"] if len(g) > 2] + [g for g in LABELS["duplicate_groups"] if len(g) == 2][:7]
_GROUPED = {name for group in GROUPS for name in group}
_OTHER = {name for key in ("unsure", "shoot_frames", "composite_pairs") for pair in LABELS[key] for name in pair}


def _disjoint_lookalikes(count: int) -> list[list[str]]:
    """The first look-alike pairs that share no photo with the groups, the other classes or each other."""
    taken, chosen = _GROUPED | _OTHER, []
    for pair in LABELS["lookalike_pairs"]:
        if len(chosen) < count and not set(pair) & taken:
            chosen.append(pair)
            taken |= set(pair)
    return chosen


LOOKALIKES = _disjoint_lookalikes(8)
_USED = _GROUPED | _OTHER | {name for pair in LOOKALIKES for name in pair}
UNRELATED = [name for name in ("photo_00050.jpg", "photo_00650.jpg", "photo_01600.jpg") if name not in _USED]
SUBSET = sorted(_GROUPED | {name for pair in LOOKALIKES for name in pair} | set(UNRELATED))


@pytest.fixture
def settings(monkeypatch):
    """The CLI reads the shell's environment: nothing from the developer's shell changes how it indexes."""
    for name in ("QDRANT_URL", "QDRANT_COLLECTION", "IMGSIM_DEDUPE", "IMGSIM_DUPLICATE_THRESHOLD",
                 "IMGSIM_IGNORE_PREFIXES", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def duplicate_groups(capsys, store: Path) -> set[frozenset[str]]:
    """`imgsim duplicates --json` on ``store``, each group as the set of its file names."""
    capsys.readouterr()
    code = cli.main(["--qdrant-path", str(store), "duplicates", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "no duplicates recorded" not in err  # the indexer's records, not the raw-cosine fallback
    return {frozenset(Path(member["key"]).name for member in group["members"]) for group in json.loads(out)["groups"]}


def test_files_and_uploads_give_the_same_duplicate_groups(settings, capsys, tmp_path):
    assert (len(SUBSET), len(GROUPS), len(LOOKALIKES), len(UNRELATED)) == (41, 9, 8, 3)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in SUBSET:
        shutil.copy(PHOTOS / name, folder / name)

    # As local files: `imgsim index` (one batch of 40).
    files_store = tmp_path / "files-store"
    assert cli.main(["--qdrant-path", str(files_store), "index", str(folder)]) == 0
    from_files = duplicate_groups(capsys, files_store)

    # As uploads: S3 notifications through the IndexFunction, in batches of 10.
    import boto3
    from moto import mock_aws

    s3_store = tmp_path / "s3-store"
    root = make_root(tmp_path, {"QDRANT_PATH": str(s3_store)})
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url, queue_arn = notifying_bucket(s3, sqs, BUCKET, QUEUE)
        app = load_handler_module(root)
        drain(app, sqs, queue_url, queue_arn)  # the s3:TestEvent
        for name in SUBSET:
            s3.put_object(Bucket=BUCKET, Key=f"photos/{name}", Body=(folder / name).read_bytes())
        responses = drain(app, sqs, queue_url, queue_arn)
        assert len(responses) == 5 and all(r == {"batchItemFailures": []} for r in responses)
        assert root.store().count() == len(SUBSET)
        root.close()  # the CLI opens the store itself
        from_uploads = duplicate_groups(capsys, s3_store)

    assert from_files == from_uploads
    # What they found: the labelled pairs and the group of three whole (the group of five, crops and a rotation of
    # one picture, may split: the rotated copy scores below the threshold); none of the unrelated photos.
    assert {frozenset(group) for group in GROUPS if len(group) <= 3} <= from_files
    assert not any(name in group for group in from_files for name in UNRELATED)
