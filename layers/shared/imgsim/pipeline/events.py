"""What flows through the pipeline: object events in, one ``Item`` per put while it is worked on.

An ``ObjectEvent`` says "this key was written (PUT) or removed (DELETE)" wherever it came from: an S3
notification delivered by SQS (``imgsim.pipeline.sqs``), a listing (``imgsim backfill``) or a local file named
on the command line (``imgsim.pipeline.files``). Its ``origin`` decides the point id (``imgsim.ids``: the S3 URI,
or the file's absolute path), how the bytes are fetched and the payload's ``source``; everything after the fetch
is the same for every origin, so a laptop's index records what the deployed one records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from ..decode import DecodedImage
from ..ids import point_id_for_file, point_id_for_object
from ..tenants import tenant_of
from .report import FAILED, SKIPPED, EventOutcome

PUT = "put"
DELETE = "delete"

# Where an event's object lives (and the payload's ``source``).
S3 = "s3"
FILE = "file"

# Work not started with this much of the invocation left fails for redelivery (the upsert
# and the response still need a moment).
DEADLINE_MARGIN_S = 5.0


@dataclass
class ObjectEvent:
    """One object event, key already URL-decoded (S3), or a local file (``origin=FILE``, key = absolute path)."""

    message_id: str
    action: str  # PUT or DELETE
    bucket: str | None
    key: str
    sequencer: str | None = None
    etag: str | None = None
    size: int | None = None
    event_name: str = ""
    # Backfill: skip the object when the stored point has this etag and model already.
    only_if_changed: bool = False
    # SQS's ApproximateReceiveCount of the message: >= 2 means a delivery before this one failed.
    receive_count: int = 1
    origin: str = S3

    @cached_property
    def point_id(self) -> str:
        if self.origin == FILE:
            return point_id_for_file(self.key)
        return point_id_for_object(self.bucket or "", self.key)

    @cached_property
    def tenant(self) -> str | None:
        """Whose image this is (``imgsim.tenants``): an S3 object's tenant folder; a local file is no tenant's."""
        return tenant_of(self.key) if self.origin == S3 else None

    def outcome(self, status: str, reason: str = "", error: BaseException | None = None) -> EventOutcome:
        return EventOutcome(self.message_id, status, reason, bucket=self.bucket, key=self.key, error=error)


@dataclass
class Item:
    """One put on its way through fetch, decode, embed and write. ``outcome`` set: it ends before embedding."""

    event: ObjectEvent
    data: bytes | None = None
    size: int = 0
    etag: str | None = None
    image: DecodedImage | None = None
    outcome: EventOutcome | None = None
    poison: bool = False  # the object is there but is no image imgsim can embed

    def skip(self, reason: str, *, poison: bool = False, error: BaseException | None = None) -> None:
        self.outcome = self.event.outcome(SKIPPED, reason, error)
        self.poison = poison

    def fail(self, reason: str, error: BaseException | None = None) -> None:
        self.outcome = self.event.outcome(FAILED, reason, error)

    @property
    def pending(self) -> bool:
        return self.outcome is None


class Deadline:
    """The end of the invocation minus ``DEADLINE_MARGIN_S``; ``Deadline.none()`` never passes (CLI, backfill)."""

    OUT_OF_TIME = "deadline: not enough time left in this invocation"

    def __init__(self, at: float | None) -> None:
        self.at = at

    @classmethod
    def none(cls) -> Deadline:
        return cls(None)

    @classmethod
    def from_remaining(cls, remaining_ms: Callable[[], int] | None) -> Deadline:
        """From the Lambda context's ``get_remaining_time_in_millis``."""
        if remaining_ms is None:
            return cls(None)
        return cls(time.monotonic() + remaining_ms() / 1000.0 - DEADLINE_MARGIN_S)

    def passed(self) -> bool:
        return self.at is not None and time.monotonic() > self.at

    def left(self, at_most: float) -> float:
        """Seconds to allow a step: ``at_most``, less when the deadline is closer (never under 1 s)."""
        if self.at is None:
            return at_most
        return max(1.0, min(at_most, self.at - time.monotonic()))


__all__ = ["DEADLINE_MARGIN_S", "DELETE", "FILE", "PUT", "S3", "Deadline", "Item", "ObjectEvent"]
