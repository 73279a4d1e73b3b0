"""Stage: fetched bytes to upright RGB pixels, in parallel within a memory budget, and isolated when needed.

Pillow releases the GIL while decoding, so a batch decodes on one thread per CPU, but only while the estimated
peaks in flight (``imgsim.decode.probe_cost``, an upper bound of the measured peak for every format and mode,
tests/test_decode_budget.py) fit ``IMGSIM_MAX_DECODE_MB`` together: with a batch of 10 a function holds at most
~320 MB of decoding on top of the ~175 MB it uses, within 1024 MB (docs/performance.md "Function memory and timeouts").

Records SQS has delivered before (``isolate_after``, default 2: a previous attempt may have died on this batch)
are decoded each in a forked child (``imgsim.isolation``): the one that kills or hangs its decoder fails alone
and reaches the DLQ, the other nine are indexed. Work not started before the invocation's deadline fails for
redelivery instead of the function being killed mid-batch (which would redeliver every message).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from ..decode import DecodedImage, probe_cost
from ..errors import ImageError
from ..isolation import IsolatedDecodeFailed, decode_in_child
from .events import Deadline, Item


class BudgetGate:
    """Decodes start only while the estimated peaks in flight fit ``budget`` bytes together (one
    over budget on its own still runs, alone). Hand-written: a weighted semaphore is 20 lines and
    no library in the layer has one."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._used = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, cost: int) -> Iterator[None]:
        cost = min(max(0, cost), self.budget)
        with self._cond:
            while self._used and self._used + cost > self.budget:
                self._cond.wait()
            self._used += cost
        try:
            yield
        finally:
            with self._cond:
                self._used -= cost
                self._cond.notify_all()


Isolate = Callable[[Callable[[bytes], DecodedImage], bytes, float], DecodedImage]


def isolated(decode: Callable[[bytes], DecodedImage], data: bytes, timeout_s: float) -> DecodedImage:
    return decode_in_child(decode, data, timeout_s=timeout_s)


class Decode:
    """The stage: ``decode`` (the embedder's, with its guard rails) over the pending items."""

    def __init__(
        self, decode: Callable[[bytes], DecodedImage], *, budget_bytes: int, isolate_after: int = 2,
        isolated_timeout_s: float = 30.0, workers: int | None = None, isolate: Isolate = isolated,
    ) -> None:
        """``isolate``: how a redelivered record is decoded (a forked child; the unit tests pass a stand-in)."""
        self.decode = decode
        self.budget_bytes = budget_bytes
        self.isolate_after = max(1, isolate_after)
        self.isolated_timeout_s = isolated_timeout_s
        self.workers = workers or os.cpu_count() or 1
        self.isolate = isolate

    def run(self, items: Sequence[Item], deadline: Deadline) -> None:
        pending = [i for i in items if i.pending]
        gate = BudgetGate(self.budget_bytes)
        with ThreadPoolExecutor(max_workers=max(1, min(len(pending), self.workers))) as pool:
            list(pool.map(lambda item: self._one(item, gate, deadline), pending))

    def _one(self, item: Item, gate: BudgetGate, deadline: Deadline) -> None:
        data = item.data or b""
        try:
            if deadline.passed():
                item.fail(Deadline.OUT_OF_TIME)
                return
            cost = probe_cost(data)
            with gate.hold(cost.bytes if cost else 0):
                if item.event.receive_count >= self.isolate_after:
                    # Delivered before: a previous attempt may have died on this batch.
                    item.image = self.isolate(self.decode, data, deadline.left(self.isolated_timeout_s))
                else:
                    item.image = self.decode(data)
        except ImageError as exc:
            item.skip(f"{exc.code}: {exc}", poison=True, error=exc)
        except IsolatedDecodeFailed as exc:
            # Fails alone; after maxReceiveCount deliveries SQS moves it to the DLQ for a look.
            item.fail(f"isolated_decode_failed: {exc}", exc)
        finally:
            item.data = None  # the encoded bytes are not needed any more


__all__ = ["BudgetGate", "Decode", "Isolate", "isolated"]
