"""The composed pipeline (imgsim.pipeline.build) with fakes: an SQS batch end to end, the report stage, streaming
with Ctrl-C, local files recording duplicates as uploads do, and the two variants."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path

import pytest
from fakes import FakeEmbedder, FakeS3, RecordingReporter, encode, memory_store, picture
from imgsim.duplicates import DuplicateGraph, DuplicateGroups
from imgsim.errors import StoreUnavailable
from imgsim.ids import point_id_for_file, point_id_for_object
from imgsim.pipeline import (
    DELETED,
    FAILED,
    INDEXED,
    SKIPPED,
    BatchReport,
    EventOutcome,
    LogReporter,
    Pipeline,
    RebuildingPipeline,
    UnavailablePipeline,
    build,
    file_events,
)
from imgsim.pipeline.sqs import parse_message
from imgsim.settings import IndexSettings
from imgsim.store import StoredPoint
from imgsim.trash import RESTORED_AT_FIELD
from PIL import ImageOps

BUCKET = "pics"


def body(key: str, action: str = "put", sequencer: str | None = None, size: int | None = None) -> str:
    obj: dict = {"key": key.replace(" ", "+")}
    if size is not None:
        obj["size"] = size
    if sequencer:
        obj["sequencer"] = sequencer
    name = "ObjectCreated:Put" if action == "put" else "ObjectRemoved:Delete"
    return json.dumps({"Records": [{"eventName": name, "s3": {"bucket": {"name": BUCKET}, "object": obj}}]})


@pytest.fixture
def store():
    with memory_store() as store:
        yield store


@pytest.fixture
def s3():
    return FakeS3()


@pytest.fixture
def reporter():
    return RecordingReporter()


@pytest.fixture
def pipeline(store, s3, reporter) -> Pipeline:
    return build(store=store, embedder=FakeEmbedder(), s3=s3, reporter=reporter,
                 options=IndexSettings(ignore_prefixes=("thumbs/",)))


def statuses(report: BatchReport) -> dict[str, tuple[str, str]]:
    return {o.message_id: (o.status, o.reason.split(":")[0]) for o in report.outcomes}


def test_an_sqs_batch_end_to_end(pipeline, store, s3, reporter):
    for key, seed in (("a.jpg", 1), ("my photo.jpg", 2)):
        s3.put(BUCKET, key, encode(picture(seed)))
    s3.put(BUCKET, "notes.jpg", b"my notes")
    s3.put(BUCKET, "thumbs/a.jpg", encode(picture(1)))
    s3.put(BUCKET, "mirror.jpg", encode(ImageOps.mirror(picture(1))))
    messages = [("a", body("a.jpg", sequencer="01")), ("space", body("my photo.jpg")), ("poison", body("notes.jpg")),
                ("thumb", body("thumbs/a.jpg")), ("gone", body("gone.jpg")), ("del", body("old.jpg", "delete")),
                ("junk", "{"), ("mirror", body("mirror.jpg"), 2)]
    report = pipeline.process_messages(messages, remaining_ms=lambda: 60_000)
    assert statuses(report) == {
        "a": (INDEXED, ""), "space": (INDEXED, ""), "poison": (SKIPPED, "not_an_image"),
        "thumb": (SKIPPED, "ignored_prefix"), "gone": (SKIPPED, "object_missing"), "del": (DELETED, ""),
        "junk": (SKIPPED, "not_an_s3_event"), "mirror": (INDEXED, ""),
    }
    assert report.message_ids == [m[0] for m in messages] and report.failed_message_ids == []
    assert report.duplicates == 1
    assert {"state", "fetch", "decode", "embed", "dedupe", "upsert", "delete", "total"} <= set(report.timings_ms)
    assert store.get(point_id_for_object(BUCKET, "my photo.jpg")).payload["key"] == "my photo.jpg"
    group = DuplicateGraph(store, 0.74).group_of(point_id_for_object(BUCKET, "mirror.jpg"))
    assert group is not None and set(group.ids) == {point_id_for_object(BUCKET, k) for k in ("a.jpg", "mirror.jpg")}
    assert store.count() == 3
    assert reporter.outcomes == report.outcomes  # the report stage heard each outcome once, in order

    again = pipeline.process_messages([("a", body("a.jpg", sequencer="01"))])
    assert statuses(again) == {"a": (SKIPPED, "stale_event")}


def test_an_image_replaced_by_poison_leaves_the_index(pipeline, store, s3):
    s3.put(BUCKET, "k.jpg", encode(picture(3)))
    pipeline.process_messages([("m1", body("k.jpg", sequencer="30"))])
    s3.put(BUCKET, "k.jpg", b"now a text file")
    assert statuses(pipeline.process_messages([("m2", body("k.jpg", sequencer="31"))])) == {
        "m2": (SKIPPED, "not_an_image")}
    assert store.count() == 0 and pipeline.tombstones.get(point_id_for_object(BUCKET, "k.jpg")) is not None


def test_a_store_that_cannot_be_read_fails_every_event_for_redelivery(pipeline, store, monkeypatch):
    def down(*args, **kwargs):
        raise StoreUnavailable("Qdrant unreachable")

    monkeypatch.setattr(store, "retrieve", down)
    report = pipeline.process_messages([("m1", body("a.jpg")), ("m2", body("b.jpg", "delete"))])
    assert report.failed_message_ids == ["m1", "m2"] and report.failure_reason("m1") == "store_unavailable: Qdrant unreachable"
    assert all(isinstance(o.error, StoreUnavailable) for o in report.outcomes)


def test_process_events_reports_only_what_it_added(pipeline, reporter, s3):
    s3.put(BUCKET, "x.jpg", encode(picture(4)))
    earlier = EventOutcome("before", SKIPPED, "test_event")
    report = BatchReport(message_ids=["before"], outcomes=[earlier])
    events, _ = parse_message("m", body("x.jpg"))
    pipeline.process_events(events, report)
    assert [o.message_id for o in report.outcomes] == ["before", "m"]
    assert [o.message_id for o in reporter.outcomes] == ["m"]


def test_local_files_record_duplicates_as_uploads_do(store, s3, tmp_path):
    pictures = {"original.jpg": picture(5), "mirror.jpg": ImageOps.mirror(picture(5)),
                "grey.jpg": picture(5).convert("L"), "other.jpg": picture(6)}
    for name, img in pictures.items():
        (tmp_path / name).write_bytes(encode(img))
        s3.put(BUCKET, f"up/{name}", encode(img))
    embedder = FakeEmbedder()
    with memory_store() as uploads:
        files = build(store=store, embedder=embedder)  # no S3 client: local files only
        objects = build(store=uploads, embedder=embedder, s3=s3)
        file_report = files.process_events(file_events(sorted(tmp_path.iterdir())))
        object_report = objects.process_messages([(name, body(f"up/{name}")) for name in sorted(pictures)])

        def groups(target) -> list[set[str]]:
            return [{Path(r.payload["key"]).name for r, _ in g.members} for g in DuplicateGroups(target).all(threshold=0.74)]

        assert file_report.duplicates == object_report.duplicates == 3  # three pairs among three copies
        assert groups(store) == groups(uploads) == [{"original.jpg", "mirror.jpg", "grey.jpg"}]
    record = store.get(point_id_for_file(tmp_path / "original.jpg")).payload
    assert record["source"] == "file" and "bucket" not in record and record["key"] == str(tmp_path / "original.jpg")


def test_stream_overlaps_batches_and_yields_their_reports_in_order(store, tmp_path):
    paths = []
    for i in range(7):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(encode(picture(20 + i)))
    (tmp_path / "bad.jpg").write_bytes(b"no")
    reporter = RecordingReporter()
    pipeline = build(store=store, embedder=FakeEmbedder(), reporter=reporter, options=IndexSettings(dedupe=False))
    batches = [file_events(paths[0:3]), file_events(paths[3:6]), file_events([paths[6], tmp_path / "bad.jpg"])]
    reports = list(pipeline.stream(batches))
    assert [[o.status for o in r.outcomes] for r in reports] == [[INDEXED] * 3, [INDEXED] * 3, [SKIPPED, INDEXED]]
    assert [o.message_id for o in reporter.outcomes] == [o.message_id for r in reports for o in r.outcomes]
    assert store.count() == 7
    assert list(pipeline.stream([])) == []


class InterruptingEmbedder(FakeEmbedder):
    """Ctrl-C during the second batch: raised by its embedding (``where="embedder"``), or SIGINT sent to the main
    thread, as a terminal does, while its duplicate check runs (``where="store"``: the batch is being stored)."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where, self.embeds, self.signatures = where, 0, 0

    def embed_decoded(self, images):
        self.embeds += 1
        if self.where == "embedder" and self.embeds == 2:
            raise KeyboardInterrupt
        return super().embed_decoded(images)

    def embed_tensors(self, tensors):
        self.signatures += 1
        if self.where == "store" and self.signatures == 2:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        return super().embed_tensors(tensors)


@pytest.fixture
def sigint_raises():
    """Python's own SIGINT handler (a suite started in the background inherits SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(("where", "counted"), [("embedder", [2]), ("store", [2, 2]), ("caller", [2])])
def test_ctrl_c_during_a_stream_keeps_the_count_exact(store, tmp_path, where, counted, sigint_raises):
    """Raised by the second batch's embedding, that batch is never stored; arriving while it is being stored,
    it is finished and reported first; arriving in the caller between two reports, the next batch (prepared and
    embedded meanwhile) is never stored. Either way the caller counted exactly what the store holds."""
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(encode(picture(40 + i)))
    pipeline = build(store=store, embedder=InterruptingEmbedder(where), reporter=RecordingReporter())
    seen = []
    with pytest.raises(KeyboardInterrupt):
        for report in pipeline.stream([file_events(paths[i:i + 2]) for i in range(0, 6, 2)]):
            seen.append(report.count(INDEXED))
            if where == "caller":
                raise KeyboardInterrupt
    assert seen == counted
    assert store.count() == sum(seen)


def test_a_rebuild_writes_both_collections_and_redelivers_what_the_new_one_missed(store, s3):
    s3.put(BUCKET, "a.jpg", encode(picture(7)))
    s3.put(BUCKET, "b.jpg", encode(picture(8)))
    with memory_store() as building:
        rebuilding = build(store=store, embedder=FakeEmbedder("old"), s3=s3, options=IndexSettings(dedupe=False),
                           building=(building, FakeEmbedder("new")))
        assert isinstance(rebuilding, RebuildingPipeline)
        report = rebuilding.process_messages([("a", body("a.jpg"))])
        assert statuses(report) == {"a": (INDEXED, "")} and any(k.startswith("rebuild_") for k in report.timings_ms)
        assert building.get(point_id_for_object(BUCKET, "a.jpg")).payload["model"] == "new"
        assert store.get(point_id_for_object(BUCKET, "a.jpg")).payload["model"] == "old"

        def down(*args, **kwargs):
            raise StoreUnavailable("building store down")

        building.retrieve = down  # type: ignore[method-assign]
        report = rebuilding.process_messages([("b", body("b.jpg"))])
        assert [(o.status, o.reason) for o in report.outcomes] == [
            (INDEXED, ""), (FAILED, "building collection: store_unavailable: building store down")]
        assert report.failed_message_ids == ["b"]
        assert [r.count(INDEXED) for r in rebuilding.stream([[]])] == [0]


def test_an_unavailable_store_fails_everything():
    pipeline = UnavailablePipeline("no alias")
    report = pipeline.process_messages([("m1", "{}"), ("m2", "{}", 3)])
    assert report.failed_message_ids == ["m1", "m2"] and report.failure_reason("m2") == "store_unavailable: no alias"
    events = file_events(["/a.jpg"])
    assert [o.status for o in pipeline.process_events(events).outcomes] == [FAILED]
    assert [r.count(FAILED) for r in pipeline.stream([events, events])] == [1, 1]


def test_the_log_reporter_warns_about_failures_and_bad_input_only(caplog):
    log = LogReporter(logging.getLogger("test.pipeline"))
    outcomes = [EventOutcome("1", INDEXED, bucket="b", key="k"), EventOutcome("2", SKIPPED, "stale_event"),
                EventOutcome("3", SKIPPED, "not_an_image: text"), EventOutcome("4", FAILED, "s3_error: SlowDown")]
    with caplog.at_level(logging.INFO, logger="test.pipeline"):
        for outcome in outcomes:
            log.outcome(outcome)
        log.warning("duplicate check skipped for this batch: down")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "object indexed"), ("INFO", "object event skipped"), ("WARNING", "object event skipped"),
        ("WARNING", "object event failed, SQS will redeliver it"),
        ("WARNING", "duplicate check skipped for this batch: down")]
    assert (caplog.records[0].s3_bucket, caplog.records[0].s3_key, caplog.records[3].reason) == (
        "b", "k", "s3_error: SlowDown")


def test_the_batch_report_counts():
    report = BatchReport(message_ids=["a", "b", "c"], outcomes=[
        EventOutcome("a", INDEXED), EventOutcome("b", SKIPPED, "x"), EventOutcome("b", SKIPPED, "x"),
        EventOutcome("c", FAILED, "one"), EventOutcome("c", FAILED, "two")])
    assert (report.count(INDEXED), report.count(SKIPPED), report.count(FAILED)) == (1, 2, 2)
    assert report.skipped_by_reason() == {"x": 2}
    assert report.failed_message_ids == ["c"] and report.message_failed("c") and not report.message_failed("a")
    assert report.failure_reason("c") == "one; two"


def test_objects_under_tenants_are_indexed_into_their_tenant_and_strays_are_skipped(pipeline, store, s3, reporter):
    for key, seed in (("tenants/acme/a.jpg", 1), ("tenants/b.jpg", 2), ("tenants/Not_Valid/c.jpg", 3),
                      ("tenants/acme/", 4), ("tenants//d.jpg", 5), ("shared/e.jpg", 6)):
        s3.put(BUCKET, key, encode(picture(seed)))
    messages = [(key, body(key)) for key in ("tenants/acme/a.jpg", "tenants/b.jpg", "tenants/Not_Valid/c.jpg",
                                             "tenants/acme/", "tenants//d.jpg", "shared/e.jpg")]
    report = pipeline.process_messages(messages)
    assert statuses(report) == {
        "tenants/acme/a.jpg": (INDEXED, ""), "shared/e.jpg": (INDEXED, ""),
        "tenants/b.jpg": (SKIPPED, "not_in_a_tenant"), "tenants/acme/": (SKIPPED, "not_in_a_tenant"),
        "tenants//d.jpg": (SKIPPED, "not_in_a_tenant"), "tenants/Not_Valid/c.jpg": (SKIPPED, "invalid_tenant")}
    assert report.skipped_by_reason() == {"not_in_a_tenant": 3, "invalid_tenant": 1}
    assert store.get(point_id_for_object(BUCKET, "tenants/acme/a.jpg")).payload["tenant"] == "acme"
    assert "tenant" not in store.get(point_id_for_object(BUCKET, "shared/e.jpg")).payload
    assert store.count() == 2
    # A delete under tenants/ is never refused: a point indexed there before tenants existed can still leave.
    stray = point_id_for_object(BUCKET, "tenants/b.jpg")
    store.upsert([StoredPoint(stray, [1.0] + [0.0] * (store.dim - 1), {"key": "tenants/b.jpg"})])
    assert store.count() == 3
    s3.delete(BUCKET, "tenants/b.jpg")  # a delete event comes once the object is gone
    report = pipeline.process_messages([("del", body("tenants/b.jpg", "delete", sequencer="09"))])
    assert statuses(report) == {"del": (DELETED, "")} and store.count() == 2


def test_a_late_delete_leaves_a_restored_point_while_its_object_is_there(pipeline, store, s3):
    """Restored from the trash while the delete event of its move to the trash was queued: the point the restore
    wrote stays; the restored object's put event follows and wins (a delete would hide the image until then). Other
    deletes ask S3 nothing (the sequencers decide)."""
    s3.put(BUCKET, "photos/a.jpg", encode(picture(1)))
    pipeline.process_messages([("put", body("photos/a.jpg", sequencer="01"))])
    image = point_id_for_object(BUCKET, "photos/a.jpg")
    record = store.get(image, with_vector=True)
    # What TrashService.restore writes back: the point as it was, marked restored.
    store.upsert([StoredPoint(image, record.vector, {**record.payload, RESTORED_AT_FIELD: "2026-12-03T08:00:00Z"})])
    calls_before = len(s3.calls)
    report = pipeline.process_messages([("del", body("photos/a.jpg", "delete", sequencer="02"))])
    assert statuses(report) == {"del": (SKIPPED, "recreated")} and store.get(image) is not None
    assert s3.calls[calls_before:] == [("photos/a.jpg", "HEAD")]
    s3.delete(BUCKET, "photos/a.jpg")  # now really gone: the same (redelivered) event deletes
    report = pipeline.process_messages([("del", body("photos/a.jpg", "delete", sequencer="02"))])
    assert statuses(report) == {"del": (DELETED, "")} and store.get(image) is None


def test_deletes_of_points_no_restore_wrote_ask_s3_nothing(pipeline, store, s3):
    s3.put(BUCKET, "photos/b.jpg", encode(picture(2)))
    pipeline.process_messages([("put", body("photos/b.jpg", sequencer="01"))])
    calls_before = len(s3.calls)
    report = pipeline.process_messages([("del", body("photos/b.jpg", "delete", sequencer="02"))])
    assert statuses(report) == {"del": (DELETED, "")} and s3.calls[calls_before:] == []


def test_the_put_event_of_a_restored_object_leaves_its_point_as_the_restore_wrote_it(pipeline, store, s3):
    """Same bytes (ETag), same model: the restore already wrote the point, links included; indexing it again would
    drop its links until the duplicate check wrote them back (a listing of the groups would miss it meanwhile)."""
    etag = s3.put(BUCKET, "photos/c.jpg", encode(picture(3)))
    pipeline.process_messages([("put", body("photos/c.jpg", sequencer="01"))])
    image = point_id_for_object(BUCKET, "photos/c.jpg")
    record = store.get(image, with_vector=True)
    restored = {**record.payload, RESTORED_AT_FIELD: "2026-12-03T08:00:00Z", "duplicate_of": "kept-as-written"}
    store.upsert([StoredPoint(image, record.vector, restored)])
    put = json.loads(body("photos/c.jpg", sequencer="03"))
    put["Records"][0]["s3"]["object"]["eTag"] = etag
    report = pipeline.process_messages([("put", json.dumps(put))])
    assert statuses(report) == {"put": (SKIPPED, "unchanged")}
    assert store.get(image).payload == restored
    s3.put(BUCKET, "photos/c.jpg", encode(picture(4)))  # new bytes: indexed as any put
    put["Records"][0]["s3"]["object"].update(eTag=s3.etag(BUCKET, "photos/c.jpg"), sequencer="04")
    report = pipeline.process_messages([("put", json.dumps(put))])
    assert statuses(report) == {"put": (INDEXED, "")} and RESTORED_AT_FIELD not in store.get(image).payload
