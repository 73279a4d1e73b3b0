"""Lambda's execution environments for one function of the local stack.

Each environment runs one invocation at a time, as on Lambda; when every one is busy and the function may
scale further, a new environment starts: its handler module loaded again under a new name (its cold start,
with its own powertools resolver, logger context and caches). Environments of one process share
the stack's composition root (``imgsim.composition.Root``): the TFLite interpreter serializes its own calls (``Embedder``) and both
stores are thread-safe, so a slow request no longer holds up every other one. Measured with 7 clients
searching while an 8th posts an 8000x8000 16-bit PNG (tests/bench/bench_serve_load.py, README
"Reliability"): one environment for everything gave the 7 clients x0.03 of their throughput alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Handler = Callable[[dict, Any], Any]


class EnvironmentPool:
    def __init__(self, path: Path, module_name: str, limit: int,
                 loader: Callable[[Path, str], Handler]) -> None:
        if limit < 1:
            raise ValueError("a function needs at least one environment")
        self.path = path
        self.module_name = module_name
        self.limit = limit
        self._load = loader
        self._idle: list[Handler] = [loader(path, module_name)]  # the first one at start: import errors show then
        self._started = 1
        self._busy = 0
        self._closed = False
        self._cond = threading.Condition()

    @property
    def started(self) -> int:
        return self._started

    @contextmanager
    def environment(self) -> Iterator[Handler]:
        handler = self._acquire()
        try:
            yield handler
        finally:
            with self._cond:
                self._idle.append(handler)
                self._busy -= 1
                self._cond.notify_all()

    def _acquire(self) -> Handler:
        with self._cond:
            while not self._idle and self._started >= self.limit and not self._closed:
                self._cond.wait()
            if self._closed:
                raise PoolClosed()
            self._busy += 1
            if self._idle:
                return self._idle.pop()
            self._started += 1
            number = self._started
        try:
            return self._load(self.path, f"{self.module_name}_{number}")
        except BaseException:
            with self._cond:
                self._started -= 1
                self._busy -= 1
                self._cond.notify_all()
            raise

    def close(self) -> None:
        """No new invocations; returns when the ones in flight have finished."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            while self._busy:
                self._cond.wait()


class PoolClosed(Exception):
    """The function's environments are shut down (the stack is stopping)."""
