"""The last stage: what happened to each event, and who hears about it.

Outcomes, and why:
- indexed / deleted: done.
- skipped: acknowledged on purpose and never retried — S3 test events, keys under an ignored prefix, poison
  objects (not an image, truncated, bomb, empty, too large), an object deleted since the put (its delete event
  follows), and events older than what the store already reflects (``sequencer``).
- failed: a transient fault (Qdrant unavailable, S3 throttling / 5xx / connection errors, or any unexpected S3
  error; a local file that cannot be read). SQS redelivers the message and, after maxReceiveCount, moves it to
  the DLQ: nothing is lost.

A ``BatchReport`` holds one outcome per event and the stage timings; the IndexFunction turns its failed messages
into ``batchItemFailures``, ``imgsim index`` and ``imgsim backfill`` into their summaries. A ``Reporter`` hears
every outcome once the batch is done (the Lambda's structured log; ``imgsim index`` prints a warning per file it
could not index instead) and the stages' own warnings (a duplicate check that could not run).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

# Outcome kinds (strings, so they log and serialize as themselves).
INDEXED = "indexed"
DELETED = "deleted"
SKIPPED = "skipped"
FAILED = "failed"

# Skips that are part of normal operation (everything else is bad input).
ROUTINE_SKIPS = frozenset(
    {"test_event", "ignored_prefix", "superseded_in_batch", "stale_event", "unchanged", "object_missing",
     "unhandled_event"}
)


@dataclass
class EventOutcome:
    message_id: str
    status: str  # INDEXED, DELETED, SKIPPED, FAILED
    reason: str = ""
    bucket: str | None = None
    key: str | None = None
    # What caused a skip or failure, when it was an exception (the CLI describes it; a store error stops it).
    error: BaseException | None = field(default=None, repr=False, compare=False)


@dataclass
class BatchReport:
    """What happened to a batch: per-message status, per-event outcomes, stage timings."""

    message_ids: list[str] = field(default_factory=list)
    outcomes: list[EventOutcome] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0  # indexed images recorded as a duplicate of one already indexed

    def add(self, outcome: EventOutcome) -> None:
        self.outcomes.append(outcome)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def skipped_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.outcomes:
            if o.status == SKIPPED:
                counts[o.reason] = counts.get(o.reason, 0) + 1
        return counts

    @property
    def failed_message_ids(self) -> list[str]:
        """Messages to report in ``batchItemFailures``: any of their events failed."""
        failed = {o.message_id for o in self.outcomes if o.status == FAILED}
        return [m for m in self.message_ids if m in failed]

    def message_failed(self, message_id: str) -> bool:
        return any(o.message_id == message_id and o.status == FAILED for o in self.outcomes)

    def failure_reason(self, message_id: str) -> str:
        reasons = [o.reason for o in self.outcomes if o.message_id == message_id and o.status == FAILED]
        return "; ".join(reasons)


class Reporter(Protocol):
    """Hears each outcome when its batch is done, in order, and the stages' warnings as they happen."""

    def outcome(self, outcome: EventOutcome) -> None: ...

    def warning(self, message: str) -> None: ...


class LogReporter:
    """One log record per outcome, with the S3 bucket, key, message id, outcome and reason as structured fields
    (powertools' Logger puts them in the Lambda's JSON log line): failures and bad input at WARNING, the rest at
    INFO."""

    def __init__(self, logger: logging.Logger | Any | None = None) -> None:
        self.log = logger or logging.getLogger("imgsim.pipeline")

    def outcome(self, outcome: EventOutcome) -> None:
        extra = {"s3_bucket": outcome.bucket, "s3_key": outcome.key, "message_id": outcome.message_id,
                 "outcome": outcome.status, "reason": outcome.reason}
        if outcome.status == FAILED:
            self.log.warning("object event failed, SQS will redeliver it", extra=extra)
        elif outcome.status == SKIPPED and outcome.reason not in ROUTINE_SKIPS:
            # Poison input or a foreign message: acknowledged, but worth a look.
            self.log.warning("object event skipped", extra=extra)
        elif outcome.status == SKIPPED:
            self.log.info("object event skipped", extra=extra)
        else:
            self.log.info(f"object {outcome.status}", extra=extra)

    def warning(self, message: str) -> None:
        self.log.warning(message)


__all__ = [
    "DELETED", "FAILED", "INDEXED", "ROUTINE_SKIPS", "SKIPPED", "BatchReport", "EventOutcome", "LogReporter",
    "Reporter",
]
