"""The pipeline's two variants, with its interface (``IndexingPipeline``): a model switch in progress, and a
store that could not even be located."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from .core import Message, Pipeline
from .events import ObjectEvent
from .report import FAILED, BatchReport, EventOutcome


class RebuildingPipeline:
    """While a model switch is in progress (imgsim.deployment): every batch is indexed into the served
    collection and into the one being built, each with its own model, so uploads and deletes made
    during ``imgsim reindex`` land in both.

    Two independent passes of the same machinery (each fetches the object: double S3 GETs during a
    rebuild only). The served collection's report is the one returned, with the building pass's
    transient failures added, so SQS redelivers a message until both collections have it (both
    passes are idempotent: the redelivered copy is skipped where it is already indexed).
    """

    def __init__(self, serving: Pipeline, building: Pipeline) -> None:
        self.serving = serving
        self.building = building

    def _merge(self, report: BatchReport, extra: BatchReport) -> BatchReport:
        for outcome in extra.outcomes:
            if outcome.status == FAILED:
                report.add(EventOutcome(outcome.message_id, FAILED, f"building collection: {outcome.reason}",
                                        bucket=outcome.bucket, key=outcome.key, error=outcome.error))
        for stage, ms in extra.timings_ms.items():
            report.timings_ms[f"rebuild_{stage}"] = report.timings_ms.get(f"rebuild_{stage}", 0.0) + ms
        return report

    def process_messages(
        self, messages: Iterable[Message], *, remaining_ms: Callable[[], int] | None = None
    ) -> BatchReport:
        batch = list(messages)
        report = self.serving.process_messages(batch, remaining_ms=remaining_ms)
        return self._merge(report, self.building.process_messages(batch, remaining_ms=remaining_ms))

    def process_events(self, events: Sequence[ObjectEvent], report: BatchReport | None = None) -> BatchReport:
        report = self.serving.process_events(events, report)
        return self._merge(report, self.building.process_events(events))

    def stream(self, batches: Iterable[Sequence[ObjectEvent]]) -> Iterator[BatchReport]:
        for events in batches:
            yield self.process_events(list(events))


class UnavailablePipeline:
    """The store could not even be located (Qdrant unreachable at a cold start): every message fails
    for redelivery, as when Qdrant goes down mid-batch, and nothing is acknowledged."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def process_messages(
        self, messages: Iterable[Message], *, remaining_ms: Callable[[], int] | None = None
    ) -> BatchReport:
        report = BatchReport()
        for message_id, *_ in messages:
            report.message_ids.append(message_id)
            report.add(EventOutcome(message_id, FAILED, f"store_unavailable: {self.reason}"))
        return report

    def process_events(self, events: Sequence[ObjectEvent], report: BatchReport | None = None) -> BatchReport:
        report = report if report is not None else BatchReport()
        for event in events:
            report.message_ids.append(event.message_id)
            report.add(event.outcome(FAILED, f"store_unavailable: {self.reason}"))
        return report

    def stream(self, batches: Iterable[Sequence[ObjectEvent]]) -> Iterator[BatchReport]:
        for events in batches:
            yield self.process_events(list(events))


__all__ = ["RebuildingPipeline", "UnavailablePipeline"]
