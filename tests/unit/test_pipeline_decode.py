"""The decode stage: parallel within the memory budget, poison skipped, redelivered records isolated, the deadline."""

from __future__ import annotations

import threading
import time

from fakes import FakeEmbedder, encode, picture
from imgsim.errors import NotAnImage
from imgsim.isolation import IsolatedDecodeFailed
from imgsim.pipeline import (
    FAILED,
    SKIPPED,
    BudgetGate,
    Deadline,
    Decode,
    Item,
    ObjectEvent,
)


def item(data: bytes, receive_count: int = 1, key: str = "k.jpg") -> Item:
    return Item(ObjectEvent(key, "put", "b", key, receive_count=receive_count), data=data, size=len(data))


def test_images_are_decoded_and_poison_is_skipped_with_its_error():
    embedder = FakeEmbedder()
    good, bad = item(encode(picture(1))), item(b"these are my notes", key="notes.jpg")
    Decode(embedder.decode, budget_bytes=2**30).run([good, bad], Deadline.none())
    assert good.pending and good.image is not None and good.image.pixels.shape == (72, 96, 3)
    assert bad.outcome is not None and bad.outcome.status == SKIPPED and bad.poison
    assert bad.outcome.reason.startswith("not_an_image: ") and isinstance(bad.outcome.error, NotAnImage)
    assert good.data is None and bad.data is None  # the encoded bytes are dropped once decoded


def test_redelivered_records_are_decoded_in_isolation_within_the_deadline():
    embedder = FakeEmbedder()
    isolated: list[tuple[bytes, float]] = []

    def isolate(decode, data, timeout_s):  # stands in for the forked child (imgsim.isolation)
        isolated.append((data, timeout_s))
        if data == b"kills its decoder":
            raise IsolatedDecodeFailed("decoder died (exit -9)")
        return decode(data)

    first, again, killer = (item(encode(picture(2))), item(encode(picture(3)), receive_count=2),
                            item(b"kills its decoder", receive_count=5))
    stage = Decode(embedder.decode, budget_bytes=2**30, isolate_after=2, isolated_timeout_s=30.0, isolate=isolate)
    stage.run([first, again, killer], Deadline.none())
    assert first.pending and again.pending and again.image is not None
    assert [timeout for _, timeout in isolated] == [30.0, 30.0]  # only the redelivered two
    assert killer.outcome is not None and (killer.outcome.status, killer.outcome.reason) == (
        FAILED, "isolated_decode_failed: decoder died (exit -9)")

    soon = Deadline(time.monotonic() + 600.0)
    isolated.clear()
    stage.run([item(encode(picture(4)), receive_count=2)], soon)
    assert 1.0 <= isolated[0][1] <= 30.0  # never past the invocation's deadline
    stage.isolated_timeout_s = 10_000.0
    stage.run([item(encode(picture(4)), receive_count=2)], soon)
    assert isolated[1][1] <= 600.0


def test_nothing_is_started_after_the_deadline():
    late = item(encode(picture(5)))
    Decode(FakeEmbedder().decode, budget_bytes=2**30).run([late], Deadline(0.0))
    assert late.outcome is not None and (late.outcome.status, late.outcome.reason) == (FAILED, Deadline.OUT_OF_TIME)


def test_the_budget_gate_lets_decodes_overlap_only_within_the_budget():
    gate = BudgetGate(100)
    inside: list[int] = []
    lock = threading.Lock()
    entered = threading.Semaphore(0)
    release = threading.Event()

    def decode(cost: int) -> None:
        with gate.hold(cost):
            with lock:
                inside.append(cost)
            entered.release()
            release.wait()
            with lock:
                inside.remove(cost)

    threads = [threading.Thread(target=decode, args=(c,)) for c in (60, 30)]
    for t in threads:
        t.start()
    entered.acquire()
    entered.acquire()  # 60 + 30 fit together
    third = threading.Thread(target=decode, args=(60,))
    third.start()
    assert not entered.acquire(timeout=0.2)  # 150 would not: the second 60 waits
    with lock:
        assert sorted(inside) == [30, 60]
    release.set()
    for t in (*threads, third):
        t.join()
    assert entered.acquire(timeout=5) and inside == []
    with BudgetGate(100).hold(500):  # over the budget on its own: runs, alone
        pass
