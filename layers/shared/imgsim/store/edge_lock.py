"""One process at a time per embedded store folder, and a one-line error naming the holder.

Qdrant Edge itself refuses a second opener with ``Can't init WAL: Kind(WouldBlock)``,
which names neither the folder nor the process. imgsim takes an ``flock`` on
``<folder>/.imgsim.lock`` first and writes its pid and command line into it, so the
second ``imgsim serve`` (or ``imgsim index``) is told which process to stop. The
kernel drops the lock when the holder dies, ``kill -9`` included: no stale lock files.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from ..errors import StoreLocked

LOCK_NAME = ".imgsim.lock"


class FolderLock:
    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        folder.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            os.close(self._fd)
            raise StoreLocked(
                f"the index at {folder} is in use by {holder}; stop that process or use another QDRANT_PATH"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()} {' '.join(sys.argv)[:300]}\n".encode(), 0)

    def _holder(self) -> str:
        try:
            text = os.pread(self._fd, 400, 0).decode("utf-8", "replace").strip()
        except OSError:
            text = ""
        pid, _, command = text.partition(" ")
        return f"process {pid} ({command})" if pid.isdigit() else "another process"

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1
