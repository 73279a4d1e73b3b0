"""Duplicates at upload (imgsim.dedupe through the pipeline), on both store backends: an indexed image records
its best existing match above the threshold; the record follows deletes and replacements of that match."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from imgsim import dedupe
from imgsim.ids import point_id_for_object
from imgsim.pipeline import build
from imgsim.settings import IndexSettings
from PIL import Image, ImageOps
from test_indexing import BUCKET, s3_body

LABELS = json.loads((Path(__file__).resolve().parent / "data" / "duplicate_labels.json").read_text())
PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "photos"


@pytest.fixture
def indexer(backend_store, embedder, moto_s3):
    return build(store=backend_store, embedder=embedder, s3=moto_s3,
                 options=IndexSettings(fetch_concurrency=4, duplicate_threshold=dedupe.DEFAULT_DUPLICATE_THRESHOLD))


def jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def put(moto_s3, indexer, *objects: tuple[str, bytes]):
    messages = []
    for n, (key, data) in enumerate(objects):
        etag = moto_s3.put_object(Bucket=BUCKET, Key=key, Body=data)["ETag"].strip('"')
        messages.append((f"m{n}-{key}", s3_body(key, size=len(data), etag=etag)))
    return indexer.process_messages(messages)


def record(backend_store, key: str) -> dict:
    found = backend_store.get(point_id_for_object(BUCKET, key))
    assert found is not None, key
    return found.payload


def test_copies_mirrors_grey_and_crops_are_recorded_as_duplicates_look_alikes_are_not(backend_store, indexer, moto_s3):
    original = Image.open(PHOTOS / "photo_00100.jpg").convert("RGB")
    w, h = original.size
    report = put(moto_s3, indexer, ("photos/original.jpg", jpeg(original)))
    assert report.duplicates == 0 and "duplicate_of" not in record(backend_store, "photos/original.jpg")
    variants = {
        "photos/mirror.jpg": ImageOps.mirror(original),
        "photos/grey.jpg": original.convert("L"),
        "photos/crop.jpg": original.crop((0, 0, int(w * 0.8), int(h * 0.8))),
    }
    report = put(moto_s3, indexer, *((key, jpeg(img)) for key, img in variants.items()))
    assert report.duplicates == 3
    original_id = point_id_for_object(BUCKET, "photos/original.jpg")
    for key in variants:
        payload = record(backend_store, key)
        # The first duplicate names the original; the later ones name the original or an earlier copy of it.
        assert payload["duplicate_of"] in {original_id, *(point_id_for_object(BUCKET, k) for k in variants)}
        assert dedupe.DEFAULT_DUPLICATE_THRESHOLD <= payload["duplicate_score"] <= 1.0
    a, b = LABELS["lookalike_pairs"][0]
    report = put(moto_s3, indexer, ("photos/look-a.jpg", (PHOTOS / a).read_bytes()),
                 ("photos/look-b.jpg", (PHOTOS / b).read_bytes()))
    assert "duplicate_of" not in record(backend_store, "photos/look-b.jpg")
    assert "duplicate_of" not in record(backend_store, "photos/look-a.jpg")


def test_the_record_follows_deletes_and_replacements_of_the_match(backend_store, indexer, moto_s3):
    original = Image.open(PHOTOS / "photo_00300.jpg").convert("RGB")
    put(moto_s3, indexer, ("photos/a.jpg", jpeg(original)))
    put(moto_s3, indexer, ("photos/b.jpg", jpeg(ImageOps.mirror(original))))
    a_id = point_id_for_object(BUCKET, "photos/a.jpg")
    assert record(backend_store, "photos/b.jpg")["duplicate_of"] == a_id

    # a.jpg now holds another picture: b.jpg is no longer anybody's duplicate.
    put(moto_s3, indexer, ("photos/a.jpg", (PHOTOS / "photo_01400.jpg").read_bytes()))
    assert "duplicate_of" not in record(backend_store, "photos/b.jpg")

    # c.jpg is b's copy; deleting b removes c's record (no other match), and b's signature with it.
    put(moto_s3, indexer, ("photos/c.jpg", jpeg(ImageOps.mirror(original))))
    assert record(backend_store, "photos/c.jpg")["duplicate_of"] == point_id_for_object(BUCKET, "photos/b.jpg")
    moto_s3.delete_object(Bucket=BUCKET, Key="photos/b.jpg")
    indexer.process_messages([("d1", s3_body("photos/b.jpg", "delete"))])
    assert "duplicate_of" not in record(backend_store, "photos/c.jpg")
    companion = backend_store.companion(dedupe.DEDUPE_SUFFIX, dim=backend_store.dim)
    b_id = point_id_for_object(BUCKET, "photos/b.jpg")
    assert companion.retrieve(dedupe.companion_ids([b_id])) == []
    assert len(companion.retrieve(dedupe.companion_ids([point_id_for_object(BUCKET, "photos/c.jpg")]))) == 6


def test_signature_shapes_and_symmetric_score(embedder):
    pixels = np.asarray(Image.open(PHOTOS / "photo_00010.jpg").convert("RGB"))
    mirrored = np.ascontiguousarray(pixels[:, ::-1])
    a, b = dedupe.signatures(embedder, [pixels, mirrored])
    assert a.full.shape == (embedder.dim,) and a.crops.shape == (5, embedder.dim)
    assert dedupe.pair_score(a, b) == dedupe.pair_score(b, a) > 0.99
    tensors = dedupe.signature_tensors(pixels, embedder.spec.input_size, embedder.spec.input_range)
    assert len(tensors) == 7 and all(t.shape == (*embedder.spec.input_size, 3) for t in tensors)
    assert all((t[..., 0] == t[..., 2]).all() and 0 <= t.min() <= t.max() <= 1 for t in tensors)  # grey, in range
    np.testing.assert_array_equal(tensors[1], tensors[0][:, ::-1])  # the mirror
    boxes = dedupe.crop_boxes(100, 200)
    assert len(boxes) == 5 and all(0 <= t < b <= 100 and 0 <= lo < r <= 200 for t, b, lo, r in boxes)


def test_groups_keep_rule_pages_and_not_duplicates_decisions(backend_store, indexer, moto_s3):
    from imgsim.duplicates import DuplicateGroups, record_not_duplicates

    groups_api = DuplicateGroups(backend_store, indexer.duplicates.index)
    originals = {name: Image.open(PHOTOS / name).convert("RGB") for name in ("photo_00100.jpg", "photo_00700.jpg",
                                                                              "photo_01300.jpg")}
    for n, (name, img) in enumerate(originals.items()):
        w, h = img.size
        put(moto_s3, indexer, (f"g{n}/original.jpg", jpeg(img)))
        put(moto_s3, indexer, (f"g{n}/small-mirror.jpg", jpeg(ImageOps.mirror(img).resize((w * 4 // 5, h * 4 // 5)))),
            (f"g{n}/small-grey.jpg", jpeg(img.convert("L").resize((w * 7 // 10, h * 7 // 10)))))
    first, cursor = groups_api.page(threshold=dedupe.DEFAULT_DUPLICATE_THRESHOLD, limit=2)
    assert len(first) == 2 and cursor is not None
    rest, end = groups_api.page(threshold=dedupe.DEFAULT_DUPLICATE_THRESHOLD, limit=2, cursor=cursor)
    assert len(rest) == 1 and end is None
    groups = first + rest
    assert len({g.keep.id for g in groups}) == 3
    for group in groups:
        doc = group.as_json()
        folder = doc["members"][0]["key"].split("/")[0]
        # The kept one: the most pixels (the original); members score against it, in [0, 1].
        assert doc["members"][0] == {**doc["members"][0], "key": f"{folder}/original.jpg", "score": 1.0}
        assert sorted(m["key"] for m in doc["members"][1:]) == [f"{folder}/small-grey.jpg", f"{folder}/small-mirror.jpg"]
        assert all(dedupe.DEFAULT_DUPLICATE_THRESHOLD <= m["score"] <= 1.0 for m in doc["members"])
        assert set(doc["members"][0]) == {"id", "key", "score", "width", "height", "size", "indexed_at"}
    # A prefix keeps one folder's group; a threshold above every score keeps none.
    only, _ = groups_api.page(threshold=dedupe.DEFAULT_DUPLICATE_THRESHOLD, prefix="g1/")
    assert [g.members[0][0].payload["key"] for g in only] == ["g1/original.jpg"]
    assert groups_api.page(threshold=1.01)[0] == []

    # "Not duplicates": the pair leaves the group, and re-indexing the same picture does not bring it back.
    keep = point_id_for_object(BUCKET, "g0/original.jpg")
    mirror_id = point_id_for_object(BUCKET, "g0/small-mirror.jpg")
    record_not_duplicates(backend_store, keep, [mirror_id])
    group = next(g for g in groups_api.all(threshold=0.0) if g.keep.id == keep)
    assert mirror_id not in {r.id for r, _ in group.members}
    etag = record(backend_store, "g0/small-mirror.jpg")["etag"]
    indexer.process_messages([("again", s3_body("g0/small-mirror.jpg", size=10, etag=etag))])
    assert record(backend_store, "g0/small-mirror.jpg").get("duplicate_of") != keep
    group = next(g for g in groups_api.all(threshold=0.0) if g.keep.id == keep)
    assert mirror_id not in {r.id for r, _ in group.members}


def test_many_at_once_equals_one_by_one(embedder):
    pixels = [np.asarray(Image.open(PHOTOS / f"photo_{i:05d}.jpg").convert("RGB")) for i in (10, 11, 700, 1300)]
    sigs = dedupe.signatures(embedder, pixels)
    many = dedupe.one_way_many(sigs[0], sigs[1:])
    one = [dedupe.one_way(sigs[0], s.full, s.crops) for s in sigs[1:]]
    np.testing.assert_allclose(many, one, atol=1e-5)
    assert dedupe.one_way_many(sigs[0], []).shape == (0,)
