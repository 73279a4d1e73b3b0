"""Decode one object in a forked child process: a record that crashes or hangs its decoder fails alone.

Used by the indexer for records SQS has delivered before (``ApproximateReceiveCount`` >= 2):
the first delivery of a batch that died (out of memory, a native crash, the function's
timeout) comes back whole, and decoding each of its objects in a child turns "the whole
batch dies again, five times, into the DLQ" into "nine are indexed, the one that kills its
child fails alone and reaches the DLQ". Why a fork and no library: Lambda has no /dev/shm,
so multiprocessing's pools and queues do not work there; a fork with a pipe does, and the
child inherits the decoder already imported (nothing to load). The child only decodes; the
parent embeds (the model is never used across a fork).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from typing import Any

from .decode import DecodedImage
from .errors import ImageError


class IsolatedDecodeFailed(Exception):
    """The child decoding an object died or ran out of time (the message says which)."""


def _child(conn: Any, decode: Callable[[bytes], DecodedImage], data: bytes) -> None:
    try:
        image = decode(data)
        conn.send(("ok", image.pixels, image.width, image.height, image.format, image.jpeg_table))
    except ImageError as exc:
        conn.send(("image_error", type(exc).__name__, exc.code, str(exc)))
    finally:
        conn.close()


def decode_in_child(decode: Callable[[bytes], DecodedImage], data: bytes, *, timeout_s: float) -> DecodedImage:
    """``decode(data)`` in a forked child. Image errors come back as themselves (same class
    and message); a dead or overdue child raises ``IsolatedDecodeFailed``."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(sender, decode, data), daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(max(0.1, timeout_s)):
            reason = "died" if not child.is_alive() else f"took longer than {timeout_s:.0f} s"
            code = child.exitcode
            raise IsolatedDecodeFailed(f"decoder {reason}" + (f" (exit {code})" if code is not None else ""))
        try:
            message = receiver.recv()
        except EOFError:
            child.join(1)
            raise IsolatedDecodeFailed(f"decoder died (exit {child.exitcode})") from None
    finally:
        receiver.close()
        if child.is_alive():
            os.kill(child.pid or 0, signal.SIGKILL)
        child.join(5)
    if message[0] == "ok":
        _, pixels, width, height, fmt, jpeg_table = message
        return DecodedImage(pixels=pixels, width=width, height=height, format=fmt, jpeg_table=jpeg_table)
    _, class_name, _code, text = message
    from . import errors

    error_class = getattr(errors, class_name, ImageError)
    raise error_class(text)
