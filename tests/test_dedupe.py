"""Duplicates through the pipeline with the real model, on both store backends: copies, mirrors, grey and crops
group with their original and look-alikes do not; groups follow deletes and replacements; the keep rule, paging,
"not duplicates" decisions; and the groups of a labelled set are the same partition whatever the order, batching
and concurrency it was indexed in, and after images are deleted and come back (a property-based test)."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imgsim import signature
from imgsim.dedupe import DEFAULT_DUPLICATE_THRESHOLD, LINKS_FIELD, SIG_FIELD
from imgsim.duplicates import DuplicateGraph, DuplicateGroups, record_not_duplicates
from imgsim.ids import point_id_for_object
from imgsim.pipeline import DELETE, build, file_event
from imgsim.settings import IndexSettings
from PIL import Image, ImageOps
from store_backends import make_store
from test_indexing import BUCKET, s3_body

LABELS = json.loads((Path(__file__).resolve().parent / "data" / "duplicate_labels.json").read_text())
PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "photos"
OPTIONS = IndexSettings(fetch_concurrency=4, duplicate_threshold=DEFAULT_DUPLICATE_THRESHOLD)


@pytest.fixture
def indexer(backend_store, embedder, moto_s3):
    return build(store=backend_store, embedder=embedder, s3=moto_s3, options=OPTIONS)


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def put(moto_s3, indexer, *objects: tuple[str, bytes]):
    messages = []
    for n, (key, data) in enumerate(objects):
        etag = moto_s3.put_object(Bucket=BUCKET, Key=key, Body=data)["ETag"].strip('"')
        messages.append((f"m{n}-{key}", s3_body(key, size=len(data), etag=etag)))
    return indexer.process_messages(messages)


def groups_by_key(store) -> set[frozenset[str]]:
    return {frozenset(r.payload["key"] for r, _ in g.members)
            for g in DuplicateGroups(store).all(threshold=DEFAULT_DUPLICATE_THRESHOLD)}


def test_copies_mirrors_grey_and_crops_group_with_their_original_look_alikes_do_not(backend_store, indexer, moto_s3):
    original = Image.open(PHOTOS / "photo_00100.jpg").convert("RGB")
    w, h = original.size
    report = put(moto_s3, indexer, ("photos/original.jpg", jpeg(original)))
    assert report.duplicates == 0 and groups_by_key(backend_store) == set()
    assert signature.decode(backend_store.get(point_id_for_object(BUCKET, "photos/original.jpg")).payload[SIG_FIELD])
    big = np.asarray(original.resize((w * 8, h * 8), Image.Resampling.BICUBIC)).astype(np.float32)
    big += np.random.default_rng(1).standard_normal(big.shape).astype(np.float32) * 8
    variants = {
        "photos/mirror.jpg": ImageOps.mirror(original),
        "photos/grey.jpg": original.convert("L"),
        "photos/crop.jpg": original.crop((0, 0, int(w * 0.8), int(h * 0.8))),
        "photos/upscaled-noisy.jpg": Image.fromarray(np.clip(big.round(), 0, 255).astype(np.uint8)),
    }
    objects = [(key, jpeg(img)) for key, img in variants.items()]
    report = put(moto_s3, indexer, *objects[::-1])  # derivatives first: the keep is still the original
    assert report.duplicates >= len(variants)  # each found the original (and maybe each other)
    assert groups_by_key(backend_store) == {frozenset({"photos/original.jpg", *variants})}
    (group,) = DuplicateGroups(backend_store).all(threshold=DEFAULT_DUPLICATE_THRESHOLD)
    # The best copy: not the 8x noisy upscale (most pixels), the grey or the crop (tests/test_keep_rank.py: also
    # half size at q20, which at 137x91 px no longer scores as a duplicate of this 275x183 photo); the mirror
    # ties with it and the original was indexed first.
    assert group.keep.payload["key"] == "photos/original.jpg"
    assert all(DEFAULT_DUPLICATE_THRESHOLD <= score <= 1.0 for _, score in group.members)
    a, b = LABELS["lookalike_pairs"][0]
    put(moto_s3, indexer, ("photos/look-a.jpg", (PHOTOS / a).read_bytes()),
        ("photos/look-b.jpg", (PHOTOS / b).read_bytes()))
    assert groups_by_key(backend_store) == {frozenset({"photos/original.jpg", *variants})}


def test_groups_follow_deletes_and_replacements(backend_store, indexer, moto_s3):
    original = Image.open(PHOTOS / "photo_00300.jpg").convert("RGB")
    put(moto_s3, indexer, ("photos/a.jpg", jpeg(original)))
    put(moto_s3, indexer, ("photos/b.jpg", jpeg(ImageOps.mirror(original))))
    assert groups_by_key(backend_store) == {frozenset({"photos/a.jpg", "photos/b.jpg"})}

    # a.jpg now holds another picture: the pair is gone (b's link named a's old content).
    put(moto_s3, indexer, ("photos/a.jpg", (PHOTOS / "photo_01400.jpg").read_bytes()))
    assert groups_by_key(backend_store) == set()

    # c.jpg is b's copy; deleting b leaves c alone; b coming back (the same object) regroups them.
    put(moto_s3, indexer, ("photos/c.jpg", jpeg(original)))
    assert groups_by_key(backend_store) == {frozenset({"photos/b.jpg", "photos/c.jpg"})}
    b_bytes = jpeg(ImageOps.mirror(original))
    moto_s3.delete_object(Bucket=BUCKET, Key="photos/b.jpg")
    indexer.process_messages([("d1", s3_body("photos/b.jpg", "delete", sequencer="FF"))])
    assert groups_by_key(backend_store) == set()
    assert LINKS_FIELD not in backend_store.get(point_id_for_object(BUCKET, "photos/a.jpg")).payload
    moto_s3.put_object(Bucket=BUCKET, Key="photos/b.jpg", Body=b_bytes)
    indexer.process_messages([("p2", s3_body("photos/b.jpg", size=len(b_bytes), sequencer="FFF"))])
    assert groups_by_key(backend_store) == {frozenset({"photos/b.jpg", "photos/c.jpg"})}


def test_the_pair_score_is_symmetric_and_survives_the_payload(embedder):
    """With the real model: a grey copy scores as a duplicate by its grey signature (its colour cosine is low),
    every score is the same both ways, and a signature read back from the payload scores exactly the same."""
    pixels = [np.asarray(Image.open(PHOTOS / f"photo_{i:05d}.jpg").convert("RGB")) for i in (10, 11, 700)]
    grey = np.ascontiguousarray(np.repeat(np.asarray(Image.fromarray(pixels[0]).convert("L"))[:, :, None], 3, axis=2))
    images = [pixels[0], grey, pixels[1], pixels[2]]
    vectors = embedder.embed_pixels(images)
    sigs = signature.compute(embedder, images)
    cos = vectors @ vectors.T
    assert cos[0, 1] < DEFAULT_DUPLICATE_THRESHOLD <= signature.score(sigs[0], sigs[1], float(cos[0, 1]))
    for i in range(4):
        for j in range(4):
            assert signature.score(sigs[i], sigs[j], float(cos[i, j])) == signature.score(sigs[j], sigs[i], float(cos[j, i]))
    assert signature.score(sigs[0], sigs[2], float(cos[0, 2])) < DEFAULT_DUPLICATE_THRESHOLD  # another photo
    back = [signature.decode(signature.encode(s)) for s in sigs]
    assert all(b is not None for b in back)
    assert signature.score(back[0], back[1], 0.0) == signature.score(sigs[0], sigs[1], 0.0)


def test_groups_keep_rule_pages_and_not_duplicates_decisions(backend_store, indexer, moto_s3):
    groups_api = DuplicateGroups(backend_store)
    originals = {name: Image.open(PHOTOS / name).convert("RGB") for name in ("photo_00100.jpg", "photo_00700.jpg",
                                                                              "photo_01300.jpg")}
    for n, (name, img) in enumerate(originals.items()):
        w, h = img.size
        put(moto_s3, indexer, (f"g{n}/original.jpg", jpeg(img)))
        put(moto_s3, indexer, (f"g{n}/small-mirror.jpg", jpeg(ImageOps.mirror(img).resize((w * 4 // 5, h * 4 // 5)))),
            (f"g{n}/small-grey.jpg", jpeg(img.convert("L").resize((w * 7 // 10, h * 7 // 10)))))
    first, cursor = groups_api.page(threshold=DEFAULT_DUPLICATE_THRESHOLD, limit=2)
    assert len(first) == 2 and cursor is not None
    rest, end = groups_api.page(threshold=DEFAULT_DUPLICATE_THRESHOLD, limit=2, cursor=cursor)
    assert len(rest) == 1 and end is None
    groups = first + rest
    assert len({g.keep.id for g in groups}) == 3  # each group once over the pages
    for group in groups:
        doc = group.as_json()
        folder = doc["members"][0]["key"].split("/")[0]
        # The kept one: the best copy (the original); members score against it, in [0, 1].
        assert doc["members"][0] == {**doc["members"][0], "key": f"{folder}/original.jpg", "score": 1.0}
        assert sorted(m["key"] for m in doc["members"][1:]) == [f"{folder}/small-grey.jpg", f"{folder}/small-mirror.jpg"]
        assert all(DEFAULT_DUPLICATE_THRESHOLD <= m["score"] <= 1.0 for m in doc["members"])
        assert set(doc["members"][0]) == {"id", "key", "score", "width", "height", "size", "indexed_at"}
    # A prefix keeps one folder's group; a threshold above every score keeps none.
    only, _ = groups_api.page(threshold=DEFAULT_DUPLICATE_THRESHOLD, prefix="g1/")
    assert [g.members[0][0].payload["key"] for g in only] == ["g1/original.jpg"]
    assert groups_api.page(threshold=1.01)[0] == []

    # "Not duplicates": the pair leaves the group, and re-indexing the same picture does not bring it back.
    keep = point_id_for_object(BUCKET, "g0/original.jpg")
    mirror_id = point_id_for_object(BUCKET, "g0/small-mirror.jpg")
    grey_id = point_id_for_object(BUCKET, "g0/small-grey.jpg")
    record_not_duplicates(backend_store, keep, [mirror_id])
    group = DuplicateGraph(backend_store, DEFAULT_DUPLICATE_THRESHOLD).group_of(keep)
    assert group is not None and mirror_id not in group.ids and grey_id in group.ids
    etag = backend_store.get(mirror_id).payload["etag"]
    indexer.process_messages([("again", s3_body("g0/small-mirror.jpg", size=10, etag=etag))])
    group = DuplicateGraph(backend_store, DEFAULT_DUPLICATE_THRESHOLD).group_of(keep)
    assert group is not None and mirror_id not in group.ids


# -- groups are a partition, independent of arrival ------------------------------------------------------------------

_GROUPS = [g for g in LABELS["duplicate_groups"] if len(g) > 2][:2] + [g for g in LABELS["duplicate_groups"]
                                                                         if len(g) == 2][:4]
_USED = {name for group in _GROUPS for name in group}
_LOOKALIKES = [p for p in LABELS["lookalike_pairs"] if not set(p) & _USED][:4]
PROPERTY_SET = sorted(_USED | {name for pair in _LOOKALIKES for name in pair} | {"photo_00050.jpg"})


def index_in(store, embedder, folder: Path, batches: list[list[str]], *, concurrent: bool) -> None:
    """Index ``batches`` of the photos in ``folder`` as local files: one after the other, or (``concurrent``) the
    batches split between two pipelines running at once (two invocations)."""
    pipelines = [build(store=store, embedder=embedder, options=OPTIONS) for _ in range(2 if concurrent else 1)]

    def run(pipeline, mine: list[list[str]]) -> None:
        for batch in mine:
            report = pipeline.process_events([file_event(folder / name) for name in batch])
            assert not report.failed_message_ids

    if not concurrent:
        run(pipelines[0], batches)
        return
    threads = [threading.Thread(target=run, args=(p, batches[n::2])) for n, p in enumerate(pipelines)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def partition(store) -> set[frozenset[str]]:
    return {frozenset(Path(r.payload["key"]).name for r, _ in g.members)
            for g in DuplicateGroups(store).all(threshold=DEFAULT_DUPLICATE_THRESHOLD)}


@pytest.fixture(scope="module")
def property_photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labelled")
    for name in PROPERTY_SET:
        (folder / name).write_bytes((PHOTOS / name).read_bytes())
    return folder


@pytest.fixture(scope="module")
def reference(embedder, property_photos, tmp_path_factory):
    """The groups of the set indexed in name order, one batch, on each backend."""
    found = {}
    for backend in ("edge", "server"):
        store = make_store(backend, tmp_path_factory.mktemp(f"reference-{backend}"), embedder.dim)
        index_in(store, embedder, property_photos, [PROPERTY_SET], concurrent=False)
        found[backend] = partition(store)
        store.close()
    assert found["edge"] == found["server"]
    return found["edge"]


def test_the_reference_partition_holds_the_labelled_groups(reference):
    grouped = [name for group in reference for name in group]
    assert len(grouped) == len(set(grouped))  # a partition: every image in at most one group
    assert len(reference) >= 4 and {frozenset(g) for g in _GROUPS if len(g) == 2} & reference
    assert "photo_00050.jpg" not in set(grouped)
    # (How many look-alike pairs pass, 1 in 40 at the default threshold, is bench_duplicates' figure: these four,
    # among the hardest, are here to make chains and near misses, whatever their verdict.)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(PROPERTY_SET), cuts=st.lists(st.integers(1, 7), min_size=1, max_size=8),
       concurrent=st.booleans(), leaving=st.sets(st.sampled_from(PROPERTY_SET), max_size=5))
def test_groups_are_the_same_partition_in_any_order_batching_and_concurrency(
        backend, embedder, property_photos, reference, tmp_path_factory, order, cuts, concurrent, leaving):
    batches: list[list[str]] = []
    rest = list(order)
    for n in range(10**6):
        if not rest:
            break
        size = cuts[n % len(cuts)]
        batches.append(rest[:size])
        rest = rest[size:]
    store = make_store(backend, tmp_path_factory.mktemp("order"), embedder.dim)
    try:
        index_in(store, embedder, property_photos, batches, concurrent=concurrent)
        assert partition(store) == reference
        # Some images are deleted (their groups change at once) and come back: the same groups again.
        if leaving:
            pipeline = build(store=store, embedder=embedder, options=OPTIONS)
            deletes = [dataclasses.replace(file_event(property_photos / name), action=DELETE,
                                           event_name="ObjectRemoved:File") for name in sorted(leaving)]
            pipeline.process_events(deletes)
            assert not {name for group in partition(store) for name in group} & leaving
            index_in(store, embedder, property_photos, [sorted(leaving)], concurrent=False)
            assert partition(store) == reference
    finally:
        store.close()
