"""Progress bars of the commands (``imgsim index``, ``migrate``, ``backfill``, ``reindex``, ``upload``): one tqdm setup.

A bar is drawn on stderr, so stdout keeps only the command's result (a summary, JSON). It is left out, and every
call on it does nothing, when the user asked for quiet, when ``terminal_only`` and stderr is a pipe or a file,
or when tqdm is not installed (the ``cli`` extra brings it): callers never check.
"""

from __future__ import annotations

import sys
import threading
from typing import Any


class Bar:
    """One tqdm bar, or nothing. Safe to update from the thread a callback runs on (reindex's progress)."""

    def __init__(
        self, *, total: int | None = None, unit: str = "img", desc: str | None = None, quiet: bool = False,
        terminal_only: bool = False, leave: bool = True, unit_scale: bool = False,
    ) -> None:
        self._bar: Any = None
        self._lock = threading.Lock()
        if quiet or (terminal_only and not sys.stderr.isatty()):
            return
        try:
            from tqdm import tqdm
        except ImportError:  # the summary alone
            return
        # unit_scale: counts in k, M, G (bytes: unit="B")
        self._bar = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=leave,
                         unit_scale=unit_scale)

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            with self._lock:
                self._bar.update(n)

    def show(self, count: int | None = None, *, desc: str | None = None, **counts: Any) -> None:
        """Set the position (``count``), the description and the counts after the bar, then redraw."""
        if self._bar is None:
            return
        with self._lock:
            if desc is not None:
                self._bar.set_description(desc, refresh=False)
            if count is not None:
                self._bar.n = count
            if counts:
                self._bar.set_postfix(refresh=False, **counts)
            self._bar.refresh()

    def write(self, message: str, file: Any = None) -> None:
        """A line above the bar (or on ``file``, default stderr, without one)."""
        out = file or sys.stderr
        if self._bar is not None:
            self._bar.write(message, file=out)
        else:
            print(message, file=out)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
