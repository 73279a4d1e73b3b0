"""The local stack's execution environments (imgsim_tools.local.environments): one invocation per
environment, a new environment (its own module) only when all are busy, up to the limit; stop waits."""

from __future__ import annotations

import threading
import time

import pytest
from imgsim_tools.local.environments import EnvironmentPool, PoolClosed


def test_environments_start_on_demand_up_to_the_limit_and_close_waits(tmp_path):
    loaded: list[str] = []
    release = threading.Event()
    running: list[str] = []
    lock = threading.Lock()

    def loader(path, module_name):
        loaded.append(module_name)

        def handler(event, context):
            with lock:
                running.append(module_name)
            release.wait(10)
            return module_name

        return handler

    pool = EnvironmentPool(tmp_path / "app.py", "fn", 2, loader)
    assert loaded == ["fn"]  # the first environment at start
    with pool.environment():  # idle: reused, nothing new loaded
        pass
    assert loaded == ["fn"]

    results: list[str] = []

    def call():
        with pool.environment() as handler:
            results.append(handler({}, None))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(running) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(loaded) == ["fn", "fn_2"] and len(running) == 2  # the third waits: limit 2
    release.set()
    for thread in threads:
        thread.join(10)
    assert sorted(set(results)) == ["fn", "fn_2"] and len(results) == 3

    # close() waits for the invocation in flight, then refuses new ones.
    release.clear()
    running.clear()
    worker = threading.Thread(target=call)
    worker.start()
    while not running and time.monotonic() < deadline + 10:
        time.sleep(0.01)
    closer = threading.Thread(target=pool.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # still waiting for the invocation
    release.set()
    worker.join(10)
    closer.join(10)
    assert not closer.is_alive() and len(results) == 4
    with pytest.raises(PoolClosed), pool.environment():
        pass


def test_a_failed_cold_start_frees_its_slot(tmp_path):
    calls = {"n": 0}

    def loader(path, module_name):
        calls["n"] += 1
        if module_name == "fn_2" and calls["n"] == 2:
            raise RuntimeError("import failed")
        return lambda event, context: module_name

    pool = EnvironmentPool(tmp_path / "app.py", "fn", 2, loader)
    busy = pool.environment()
    busy.__enter__()  # the only environment is busy: the next call starts another
    with pytest.raises(RuntimeError, match="import failed"), pool.environment():
        pass
    with pool.environment() as handler:  # the slot was freed: a second try starts it
        assert handler({}, None) == "fn_2"
    busy.__exit__(None, None, None)
    assert pool.started == 2
