"""IndexFunction: SQS batch of S3 notifications -> Qdrant (thin; the work is in imgsim.pipeline).

The whole batch is indexed at once (concurrent fetch, one embed batch, one
upsert), then powertools' BatchProcessor reports each SQS message from the
batch's outcome: messages with a transient failure go into
``batchItemFailures`` and are redelivered; everything else is acknowledged.
Messages delivered before (ApproximateReceiveCount >= 2) are decoded each in a child
process, and the context's remaining time bounds the work (see imgsim.pipeline).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes import SQSEvent
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from imgsim.composition import RootHolder
from imgsim.pipeline import BatchReport
from imgsim.tracing import make_tracer

logger = Logger()
metrics = Metrics()
tracer = make_tracer()  # powertools Tracer only when tracing is on (imgsim.tracing)
# Qdrant down fails every record; report them all instead of raising, so the
# response still says exactly which messages to redeliver.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


# This execution environment's composition root (imgsim.composition): the store, the model and the S3 client are
# built once and kept across invocations.
_root = RootHolder()
root = _root.get
use_root = _root.use  # the local stack's root, shared by its environments; a test's
_root.register_snapshot_hooks()  # SnapStart: warm the model before the snapshot, renew clients after a restore


class RecordNotIndexed(Exception):
    """A transient failure for this message: SQS redelivers it (then the DLQ)."""


def emit_metrics(report: BatchReport) -> None:
    for name, status in (("ImagesIndexed", "indexed"), ("ImagesDeleted", "deleted"),
                         ("ImagesSkipped", "skipped"), ("ImagesFailed", "failed")):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=report.count(status))
    stale = sum(n for reason, n in report.skipped_by_reason().items()
                if reason in ("stale_event", "superseded_in_batch"))
    metrics.add_metric(name="EventsStale", unit=MetricUnit.Count, value=stale)
    # Images recorded at upload as a duplicate of one already indexed (imgsim.dedupe).
    metrics.add_metric(name="DuplicatesFound", unit=MetricUnit.Count, value=report.duplicates)
    for stage, name in (("fetch", "FetchMs"), ("decode", "DecodeMs"), ("embed", "EmbedMs"), ("dedupe", "DedupeMs"),
                        ("upsert", "UpsertMs")):
        if stage in report.timings_ms:
            metrics.add_metric(name=name, unit=MetricUnit.Milliseconds, value=report.timings_ms[stage])


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    current = root()
    current.refresh()  # follow a model switch (imgsim.deployment) within IMGSIM_ALIAS_TTL
    sqs_event = SQSEvent(event)
    report = current.pipeline(logger=logger).process_messages(
        ((record.message_id, record.body, record.attributes.approximate_receive_count) for record in sqs_event.records),
        remaining_ms=context.get_remaining_time_in_millis,
    )
    emit_metrics(report)
    tracer.put_annotation("failed_messages", len(report.failed_message_ids))
    counts = {status: report.count(status) for status in ("indexed", "deleted", "skipped", "failed")}
    logger.info("batch done", extra={"counts": counts, "timings_ms": report.timings_ms})

    def record_handler(record: SQSRecord) -> None:
        if report.message_failed(record.message_id):
            raise RecordNotIndexed(report.failure_reason(record.message_id))

    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
