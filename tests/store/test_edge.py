"""What only the embedded Qdrant Edge backend has: one process per folder, crash safety,
the background HNSW build that never stops readers or writers, and thread safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from imgsim import StoredPoint, point_id_for_file
from imgsim.errors import StoreLocked
from imgsim.store import StorageOptions
from imgsim.store.edge import READY_MARK, EdgeStore

DIM = 32


def vec(rng: np.random.Generator) -> list[float]:
    v = rng.normal(size=DIM)
    return list(v / np.linalg.norm(v))


def points(rng: np.random.Generator, start: int, count: int) -> list[StoredPoint]:
    return [StoredPoint(point_id_for_file(f"/p/{i}"), vec(rng), {"key": f"/p/{i}", "dirs": ["/p/"]})
            for i in range(start, start + count)]


def child(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_second_process_gets_one_line_naming_the_path_and_holder(tmp_path):
    holder = child("""
        import sys, time
        from imgsim.store.edge import EdgeStore
        store = EdgeStore(sys.argv[1], "images", dim=4)
        store.count()
        print("open", flush=True)
        time.sleep(60)
    """, str(tmp_path / "q"))
    try:
        assert holder.stdout.readline().strip() == "open"
        store = EdgeStore(str(tmp_path / "q"), "images", dim=4)
        pytest.fail(f"opened a locked store: {store}")
    except StoreLocked as exc:
        message = str(exc)
        assert "\n" not in message and str(tmp_path / "q") in message
        assert f"process {holder.pid}" in message
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's lock: the folder opens again at once.
    store = EdgeStore(str(tmp_path / "q"), "images", dim=4)
    assert store.count() == 0
    store.close()


def test_kill_9_during_upserts_keeps_every_acknowledged_write(tmp_path):
    """A writer prints each id after ``upsert`` returned; SIGKILL mid-stream; every printed id is there."""
    writer = child("""
        import sys, uuid
        import numpy as np
        from imgsim.store.edge import EdgeStore
        from imgsim.store import StoredPoint
        store = EdgeStore(sys.argv[1], "images", dim=8)
        rng = np.random.default_rng(0)
        i = 0
        while True:
            batch = [StoredPoint(str(uuid.uuid4()), list(rng.normal(size=8)), {"key": f"k{i}-{j}"}) for j in range(5)]
            store.upsert(batch)
            print(" ".join(p.id for p in batch), flush=True)
            i += 1
    """, str(tmp_path / "q"))
    acked: list[str] = []
    deadline = time.monotonic() + 20
    while len(acked) < 500 and time.monotonic() < deadline:
        line = writer.stdout.readline()
        if not line:
            break
        acked.extend(line.split())
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert len(acked) >= 500, writer.stderr.read()[-2000:]
    store = EdgeStore(str(tmp_path / "q"), "images", dim=8)
    found = {r.id for start in range(0, len(acked), 256) for r in store.retrieve(acked[start:start + 256])}
    assert set(acked) <= found
    store.close()


def test_background_build_indexes_without_blocking_readers_or_writers(tmp_path):
    rng = np.random.default_rng(1)
    store = EdgeStore(str(tmp_path / "q"), "images", dim=DIM, options=StorageOptions(quantization="int8"),
                      indexing_threshold_kb=100)  # 6,000 x 32 floats is 750 KB: index it
    for start in range(0, 6000, 500):
        store.upsert(points(rng, start, 500))
    assert store.unindexed_count() == 6000
    done = threading.Event()
    outcome: list[tuple[bool, str]] = []
    thread = store.build_index_in_background(lambda ok, msg: (outcome.append((ok, msg)), done.set()))
    assert thread is not None
    assert store.build_index_in_background() is None  # one build at a time
    # Meanwhile: searches and writes keep going (writes made during the build are journaled).
    written = 0
    slowest = 0.0
    while not done.is_set():
        t0 = time.perf_counter()
        store.search(vec(rng), limit=5)
        store.upsert(points(rng, 10_000 + written, 1))
        slowest = max(slowest, time.perf_counter() - t0)
        written += 1
    thread.join()
    assert outcome == [(True, "index built")]
    assert written > 0
    assert store.count() == 6000 + written  # nothing written during the build was lost
    # Every point that existed when the build began is in the HNSW index now; the ones written
    # during the build (journaled, replayed) wait for the next build.
    assert store.count() - store.unindexed_count() >= 6000
    target = points(np.random.default_rng(1), 0, 1)[0]
    assert store.search(target.vector, limit=1)[0].id == target.id
    assert not (tmp_path / "q" / "images.building").exists() and not (tmp_path / "q" / "images.old").exists()
    store.close()


@pytest.mark.parametrize("crash_point", ["after_first_rename", "before_swap"])
def test_a_build_interrupted_by_a_crash_is_finished_or_undone_on_open(tmp_path, crash_point):
    rng = np.random.default_rng(2)
    folder = tmp_path / "q"
    store = EdgeStore(str(folder), "images", dim=DIM)
    store.upsert(points(rng, 0, 50))
    store.close()
    live, building, old = folder / "images", folder / "images.building", folder / "images.old"
    import shutil

    shutil.copytree(live, building)
    if crash_point == "after_first_rename":  # the built copy was complete and marked, live moved aside
        (building / READY_MARK).touch()
        live.rename(old)
    reopened = EdgeStore(str(folder), "images", dim=DIM)
    assert reopened.count() == 50
    assert live.exists() and not building.exists() and not old.exists()
    reopened.close()


def test_readers_and_writers_on_threads(tmp_path):
    """The local stack runs the indexer and the API on threads against one store."""
    store = EdgeStore(str(tmp_path / "q"), "images", dim=DIM)
    stop = threading.Event()
    errors: list[BaseException] = []
    searches = [0]

    def reader() -> None:
        rng = np.random.default_rng(threading.get_ident() % 1000)
        while not stop.is_set():
            try:
                store.search(vec(rng), limit=5)
                store.count()
                searches[0] += 1
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    rng = np.random.default_rng(3)
    for start in range(0, 400, 4):
        store.upsert(points(rng, start, 4))
    stop.set()
    for t in threads:
        t.join()
    assert errors == [] and searches[0] > 0 and store.count() == 400
    store.close()
